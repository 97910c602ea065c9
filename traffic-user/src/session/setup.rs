//! Building a session from the command line's configuration: outputs
//! opened, program loaded, AF_XDP sockets bound, program attached.

use std::{io, sync::Arc, time::Duration};

use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use super::{
    Afxdp, Counters, Ifaces, Outcome, Requests, RunConfig, Session, SessionError, Stop, Timing,
    TopTally,
    reload::{Reloader, SignalOrChange},
    replay::Replayed,
};
use crate::{
    kernel::{
        AttachMode, Engine, EngineError,
        caps::CapsError,
        engine::TopSettings,
        netlink::{self, LinkWatch},
    },
    sink::{
        Format, Sink,
        file::{Kind, Output, OutputError},
        ipfix::IpfixSink,
        json::{AfxdpStart, IfaceStart, Refused, Start},
        metrics::MetricsSink,
        pcap::{Interfaces, PcapError, PcapFiles, PcapWriter},
        plot::PlotSink,
        print::Printer,
        report::Reporter,
    },
    source::{
        Source, SourceError,
        afxdp::{self, XskError, XskSource},
        explain::{ExplainLog, ExplainSource},
        pace::Mode,
        recorded::{Input, RecordError, Recorded},
        ringbuf::RingSource,
    },
};

/// Why a run could not start, or failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A signal came while `--read` waited for its input's first bytes.
    #[error(
        "{signal} came while waiting for the first bytes of {path}, whose writer has written nothing yet; nothing was read"
    )]
    Waiting {
        /// The signal.
        signal: &'static str,
        /// The input.
        path: std::path::PathBuf,
    },
    /// Installing a signal handler failed.
    #[error("installing the {signal} handler failed")]
    Signal {
        /// The signal.
        signal: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The pcap file could not be created.
    #[error(transparent)]
    Pcap(#[from] PcapError),
    /// The plot's file cannot be written.
    #[error("--plot: {0}")]
    Plot(#[source] OutputError),
    /// `--plot` names standard output.
    #[error(
        "--plot {path} is standard output, where the report goes: an SVG there would mix with it; give a file name"
    )]
    PlotOnStdout {
        /// The path given.
        path: std::path::PathBuf,
    },
    /// An output is one of the run's inputs.
    #[error(
        "refusing to write {flag} {path}: it is {input}, which this run reads; writing would truncate it first; choose another file"
    )]
    OutputIsInput {
        /// The output's flag.
        flag: &'static str,
        /// The output path given.
        path: std::path::PathBuf,
        /// The input it is, as given.
        input: std::path::PathBuf,
    },
    /// `--plot` names the file `-w` writes.
    #[error(
        "--plot {path} is the file -w writes: the plot would replace the capture; give each its own file"
    )]
    PlotOverPcap {
        /// The path given.
        path: std::path::PathBuf,
    },
    /// `-w` names standard output, and `--print` writes there too.
    #[error(
        "-w {path} is standard output, where --print writes its lines too; drop one, or write the pcap to another file"
    )]
    StdoutTwice {
        /// The path given.
        path: std::path::PathBuf,
    },
    /// The interface's receive queues could not be counted.
    #[error("asking how many receive queues {iface} has failed")]
    Queues {
        /// The interface.
        iface: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The XDP program could not be loaded.
    #[error("loading the XDP program failed")]
    Load(#[source] Box<EngineError>),
    /// AF_XDP sockets could not be opened.
    #[error("opening AF_XDP sockets on {iface} failed")]
    Afxdp {
        /// The interface.
        iface: String,
        /// Why.
        #[source]
        source: XskError,
    },
    /// A socket could not be put in the program's map.
    #[error("registering an AF_XDP socket failed")]
    RegisterXsk(#[source] Box<EngineError>),
    /// The program could not be attached.
    #[error("attaching to {iface} failed")]
    Attach {
        /// The interface.
        iface: String,
        /// Why.
        #[source]
        source: Box<EngineError>,
    },
    /// The interface does not exist.
    #[error(transparent)]
    NoSuchInterface(Box<EngineError>),
    /// A source could not be watched.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The run failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// `-Z`: the switch to the user failed.
    #[error(transparent)]
    User(#[from] CapsError),
    /// The link events cannot be watched.
    #[error("subscribing to the interface's link events failed")]
    LinkWatch(#[source] io::Error),
    /// `--watch-rules`: the files cannot be watched.
    #[error("--watch-rules: cannot watch the rules files")]
    WatchRules(#[source] io::Error),
    /// `--read`: the recorded capture cannot be read.
    #[error(transparent)]
    Record(#[from] crate::source::recorded::RecordError),
    /// `--metrics`: the address cannot be served.
    #[error(transparent)]
    Metrics(crate::sink::metrics::MetricsError),
    /// `--ipfix`: the collector cannot be reached.
    #[error(transparent)]
    Ipfix(crate::sink::ipfix::IpfixError),
    /// `--metrics` or `--ipfix` in the built-in lab: the namespace traffic
    /// was started in could not be entered to open them there.
    #[error("opening --metrics or --ipfix in the network namespace traffic was started in failed")]
    SocketsNetns(#[source] io::Error),
    /// The event ring buffer was taken already (a bug).
    #[error("the event ring buffer was already taken")]
    RingTaken,
}

/// Loads and attaches the program on each of `ifaces` as `cfg` says, and
/// runs the session until SIGINT, SIGTERM, `--duration` or an interface
/// goes away.
///
/// # Errors
///
/// [`SetupError`]: what could not be set up, or how the run failed.
pub async fn watch(cfg: &RunConfig, ifaces: &[String]) -> Result<Outcome, SetupError> {
    // Installed first, so that a signal during loading also ends the run
    // cleanly instead of killing it midway. SIGHUP re-reads the rules when
    // they come from files; otherwise it ends the run like SIGTERM (a
    // terminal closing), with the summary.
    let (mut ends, sighup) = signals()?;
    let requests = requests()?;
    print_notes(cfg);
    let mut session = open(cfg, ifaces)?.with_requests(requests);
    let mut hangup_stops = None;
    if cfg.rule_spec.files.is_empty() {
        hangup_stops = Some(sighup);
    } else {
        let files = cfg.watch_rules.then_some(cfg.rule_spec.files.as_slice());
        let requests = SignalOrChange::new(sighup, files).map_err(SetupError::WatchRules)?;
        session = session.with_reloader(Reloader::new(
            Box::new(requests),
            cfg.rule_spec.clone(),
            Arc::clone(&cfg.rules),
        ));
    }
    let links = session
        .start()
        .each()
        .into_iter()
        .map(|(name, ifindex)| Ok((name, watch_link(ifindex)?)))
        .collect::<Result<Vec<_>, SetupError>>()?;
    // Everything is open: give up root now, before the first packet.
    if let Some(user) = &cfg.user {
        user.switch()?;
        crate::say!(
            "traffic: running as {} (uid {}, gid {}) with no capabilities",
            user.name,
            user.uid,
            user.gid
        );
    }
    let duration = cfg.duration;
    let stop = async move {
        tokio::select! {
            signal = first_signal(&mut ends, hangup_stops.as_mut()) => Stop::Signal(signal),
            () = sleep_for(duration) => Stop::Duration,
            iface = any_link_gone(links) => Stop::InterfaceGone { iface },
        }
    };
    Ok(session.run(stop).await?)
}

/// Runs every frame of `--read`'s file through the program (not attached)
/// and reports as a live run does, until the file ends or a signal.
///
/// # Errors
///
/// [`SetupError`]: what could not be set up, or how the run failed. A bad
/// record within the file is not one: see [`Replayed::error`].
pub async fn read(cfg: &RunConfig, path: &std::path::Path) -> Result<Replayed, SetupError> {
    let (mut ends, mut sighup) = signals()?;
    let requests = requests()?;
    print_notes(cfg);
    // The file first: a file that is not a capture is refused before
    // anything is loaded or written. A FIFO or a pipe may have nothing to
    // read yet: the wait for its first bytes ends with a signal too.
    let input = Input::open(path)?;
    if let Some(fd) = input.wait_fd() {
        tokio::select! {
            biased;
            signal = first_signal(&mut ends, Some(&mut sighup)) => {
                return Err(SetupError::Waiting {
                    signal,
                    path: path.to_owned(),
                });
            }
            r = crate::os::readable(fd) => r.map_err(|source| RecordError::Open {
                path: path.to_owned(),
                source,
            })?,
        }
    }
    let mut file = Recorded::from_input(path, input)?;
    let outputs = open_outputs(cfg, &Interfaces(vec![(path.display().to_string(), 0)]))?;
    let mut engine =
        Engine::load_with(&cfg.rules, &cfg.settings).map_err(|e| SetupError::Load(Box::new(e)))?;
    let ring = engine.take_events().ok_or(SetupError::RingTaken)?;
    let sources: Vec<Box<dyn Source + '_>> = vec![Box::new(RingSource::new(ring, 0, cfg.read)?)];
    let (rules_v4, rules_v6) = cfg.rules.counts();
    let start = Start {
        iface: path.display().to_string(),
        ifindex: 0,
        mode: AttachMode::TestRun,
        refused: Vec::new(),
        replaced: None,
        rules_v4,
        rules_v6,
        default: cfg.rules.default_action(),
        afxdp: None,
        ifaces: Vec::new(),
    };
    let session = session(cfg, start, Box::new(engine), sources, outputs).with_requests(requests);
    let stop = async move { Stop::Signal(first_signal(&mut ends, Some(&mut sighup)).await) };
    Ok(session.replay(&mut file, stop).await?)
}

/// The name of the first signal to end the run: one of `ends` (as
/// [`signals`] makes them), or SIGHUP when `hangup` is given (a run that
/// reads its rules files again on SIGHUP gives none).
async fn first_signal(
    ends: &mut [tokio::signal::unix::Signal; 4],
    hangup: Option<&mut tokio::signal::unix::Signal>,
) -> &'static str {
    let [sigint, sigterm, sigquit, sigxcpu] = ends;
    tokio::select! {
        _ = sigint.recv() => "SIGINT",
        _ = sigterm.recv() => "SIGTERM",
        _ = sigquit.recv() => "SIGQUIT",
        _ = sigxcpu.recv() => "SIGXCPU",
        Some(()) = super::recv(hangup) => "SIGHUP",
    }
}

/// Handlers of the signals that end a run, SIGINT, SIGTERM, SIGQUIT (a
/// terminal's Ctrl-\\) and SIGXCPU (the soft CPU-time limit of `ulimit -t`
/// or systemd's `LimitCPU=`, before the hard limit's SIGKILL), in that
/// order, and of SIGHUP, which ends it too unless the run reads its rules
/// files again: without one, each would end the run without its summary.
fn signals() -> Result<
    (
        [tokio::signal::unix::Signal; 4],
        tokio::signal::unix::Signal,
    ),
    SetupError,
> {
    Ok((
        [
            handler(SignalKind::interrupt(), "SIGINT")?,
            handler(SignalKind::terminate(), "SIGTERM")?,
            handler(SignalKind::quit(), "SIGQUIT")?,
            handler(SignalKind::from_raw(libc::SIGXCPU), "SIGXCPU")?,
        ],
        handler(SignalKind::hangup(), "SIGHUP")?,
    ))
}

/// The handlers of SIGUSR1, which asks for the counts so far, and SIGUSR2,
/// which asks for the outputs written out (tcpdump's two); without a
/// handler, either would end the run with no summary.
fn requests() -> Result<Requests, SetupError> {
    Ok(Requests::new(
        handler(SignalKind::user_defined1(), "SIGUSR1")?,
        handler(SignalKind::user_defined2(), "SIGUSR2")?,
    ))
}

/// A handler of signal `kind`, called `name` in errors.
fn handler(
    kind: SignalKind,
    name: &'static str,
) -> Result<tokio::signal::unix::Signal, SetupError> {
    signal(kind).map_err(|source| SetupError::Signal {
        signal: name,
        source,
    })
}

/// The session of `engine` and `sources` into the outputs `cfg` asks for,
/// reporting top talkers when it asks.
fn session<'a>(
    cfg: &'a RunConfig,
    start: Start,
    counters: Box<dyn Counters + 'a>,
    sources: Vec<Box<dyn Source + 'a>>,
    outputs: Outputs,
) -> Session<'a> {
    let flows = outputs.ipfix.is_some();
    let mut session = Session::new(
        start,
        Arc::clone(&cfg.rules),
        counters,
        sources,
        sinks(cfg, outputs),
        Timing {
            interval: cfg.interval,
            exit_drain: super::EXIT_DRAIN,
        },
    );
    if flows {
        session = session.with_flows();
    }
    if let Some(count) = cfg.count {
        session = session.with_count(count);
    }
    match (cfg.top, cfg.settings.top) {
        (Some(n), Some(t)) => session.with_top(TopTally::new(
            n,
            t.capacity as usize,
            t.prefix_v4,
            t.prefix_v6,
        )),
        _ => session,
    }
}

async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Subscribes to the link events of `ifindex`, and checks once that it is
/// still there (it could have gone between the attach and now).
fn watch_link(ifindex: u32) -> Result<AsyncFd<LinkWatch>, SetupError> {
    let watch = LinkWatch::open(ifindex).map_err(SetupError::LinkWatch)?;
    // SAFETY: the LinkWatch owns its socket for as long as the AsyncFd owns it.
    unsafe { AsyncFd::register_with_interest(watch, Interest::READABLE) }
        .map_err(|e| SetupError::LinkWatch(io::Error::from(e)))
}

/// Completes with the name of the first of `links` to go away.
async fn any_link_gone(links: Vec<(String, AsyncFd<LinkWatch>)>) -> String {
    let mut set = tokio::task::JoinSet::new();
    for (name, watch) in links {
        set.spawn(async move {
            link_gone(&name, watch).await;
            name
        });
    }
    match set.join_next().await {
        Some(Ok(name)) => name,
        _ => std::future::pending().await,
    }
}

/// Completes when the watched interface `name` goes away, and notes on
/// the way when it goes down or comes up (the run goes on: the program sees
/// nothing while it is down). A failing watch stops watching (the run goes
/// on) and says so.
async fn link_gone(name: &str, watch: AsyncFd<LinkWatch>) {
    if !watch.get_ref().exists().unwrap_or(true) {
        return;
    }
    let mut up = watch.get_ref().is_up().ok();
    loop {
        let Ok(mut guard) = watch.readable().await else {
            break;
        };
        guard.clear_ready();
        match watch.get_ref().gone() {
            Ok(true) => return,
            Ok(false) => {
                let now = watch.get_ref().is_up().ok();
                match (up, now) {
                    (Some(true), Some(false)) => crate::say!(
                        "traffic: note: {name} went down: no packet reaches the program until it is up"
                    ),
                    (Some(false), Some(true)) => crate::say!("traffic: note: {name} is up"),
                    _ => {}
                }
                up = now.or(up);
            }
            Err(e) => {
                crate::say!(
                    "traffic: warning: no longer watching the interface's link events: {e}"
                );
                break;
            }
        }
    }
    std::future::pending().await
}

/// Opens the outputs, then on each of `ifaces` loads the program, binds
/// AF_XDP sockets and attaches.
///
/// # Errors
///
/// [`SetupError`]; nothing is left attached.
pub fn open<'a>(cfg: &'a RunConfig, ifaces: &[String]) -> Result<Session<'a>, SetupError> {
    // Every output is opened first: a path that cannot be written, or an
    // address that cannot be bound, is refused before anything is attached.
    let named = ifaces
        .iter()
        .map(|iface| {
            let ifindex = netlink::ifindex(iface).ok_or_else(|| no_such(iface))?;
            Ok((iface.clone(), ifindex))
        })
        .collect::<Result<Vec<_>, SetupError>>()?;
    let outputs = open_outputs(cfg, &Interfaces(named))?;
    // Every program is loaded before the first is attached, so that the
    // interfaces start counting within moments of each other.
    let mut loaded = Vec::new();
    for iface in ifaces {
        loaded.push(load_one(cfg, iface)?);
    }
    let mut engines = Vec::new();
    let mut sources: Vec<Box<dyn Source + 'a>> = Vec::new();
    let mut each = Vec::new();
    for (iface, one) in ifaces.iter().zip(loaded) {
        let (engine, opened, start) = attach_one(cfg, iface, one)?;
        engines.push(engine);
        sources.extend(opened);
        each.push(start);
    }
    let (rules_v4, rules_v6) = cfg.rules.counts();
    let first = each[0].clone();
    let start = Start {
        iface: first.iface,
        ifindex: first.ifindex,
        mode: first.mode,
        refused: first.refused,
        replaced: first.replaced,
        rules_v4,
        rules_v6,
        default: cfg.rules.default_action(),
        afxdp: first.afxdp,
        ifaces: if each.len() > 1 { each } else { Vec::new() },
    };
    let counters: Box<dyn Counters + 'a> = if engines.len() == 1 {
        Box::new(engines.remove(0))
    } else {
        Box::new(Ifaces::new(engines))
    };
    Ok(session(cfg, start, counters, sources, outputs))
}

fn no_such(iface: &str) -> SetupError {
    SetupError::NoSuchInterface(Box::new(EngineError::NoSuchInterface {
        iface: iface.to_owned(),
    }))
}

/// A program attached to one interface, its sources, and what the start
/// line says of it.
type AttachedOne<'a> = (Engine, Vec<Box<dyn Source + 'a>>, IfaceStart);

/// A program loaded for one interface, not yet attached.
struct Loaded<'a> {
    engine: Engine,
    sources: Vec<Box<dyn Source + 'a>>,
    ring: crate::kernel::EventRing,
    afxdp: Option<AfxdpStart>,
}

/// For `iface`: loads the program and binds AF_XDP sockets.
fn load_one<'a>(cfg: &RunConfig, iface: &str) -> Result<Loaded<'a>, SetupError> {
    let mut settings = cfg.settings.clone();
    let xsk_plan = cfg.afxdp.map(|x| plan_sockets(x, iface)).transpose()?;
    settings.afxdp_queues = xsk_plan.map_or(0, |p| p.queues);
    let mut engine =
        Engine::load_with(&cfg.rules, &settings).map_err(|e| SetupError::Load(Box::new(e)))?;
    let mut sources: Vec<Box<dyn Source + 'a>> = Vec::new();
    let mut afxdp = None;
    if let Some(plan) = xsk_plan {
        let (source, start) = open_sockets(&mut engine, plan, iface, cfg.read)?;
        sources.push(Box::new(source));
        afxdp = Some(start);
    }
    let ring = engine.take_events().ok_or(SetupError::RingTaken)?;
    if cfg.settings.explain > 0 {
        let log = engine
            .take_log(ExplainLog)
            .map_err(|e| SetupError::Load(Box::new(e)))?;
        sources.push(Box::new(ExplainSource::new(log)?));
    }
    Ok(Loaded {
        engine,
        sources,
        ring,
        afxdp,
    })
}

/// Attaches a loaded program to `iface`: the program, its sources and
/// what the start line says of it.
fn attach_one<'a>(
    cfg: &RunConfig,
    iface: &str,
    loaded: Loaded<'a>,
) -> Result<AttachedOne<'a>, SetupError> {
    let Loaded {
        mut engine,
        mut sources,
        ring,
        afxdp,
    } = loaded;
    let attached = engine
        .attach(iface, cfg.mode, cfg.force)
        .map_err(|source| SetupError::Attach {
            iface: iface.to_owned(),
            source: Box::new(source),
        })?
        .clone();
    if matches!(netlink::is_up(attached.ifindex), Ok(false)) {
        crate::say!(
            "traffic: note: {iface} is down: no packet reaches the program until it is up (ip link set {iface} up)"
        );
    }
    sources.push(Box::new(RingSource::new(ring, attached.ifindex, cfg.read)?));
    let start = IfaceStart {
        iface: attached.iface,
        ifindex: attached.ifindex,
        mode: attached.mode,
        refused: attached
            .refused
            .into_iter()
            .map(|(mode, error)| Refused { mode, error })
            .collect(),
        replaced: attached.replaced,
        afxdp,
    };
    Ok((engine, sources, start))
}

/// The outputs a run opens before it attaches.
struct Outputs {
    pcap: Option<PcapFiles>,
    /// Whether the pcap goes to standard output (`-w -`, or a path to it).
    pcap_on_stdout: bool,
    plot: Option<Output>,
    metrics: Option<MetricsSink>,
    ipfix: Option<IpfixSink>,
}

/// Opens `--write`'s first file (naming `ifaces`), `--plot`'s, binds
/// `--metrics`' address and starts serving it, and opens `--ipfix`'s socket.
fn open_outputs(cfg: &RunConfig, ifaces: &Interfaces) -> Result<Outputs, SetupError> {
    // AF_XDP delivers whole frames: the pcap's snaplen is then the frame size.
    let snaplen = cfg.afxdp.map_or(cfg.settings.snaplen, |x| x.sizes.frame);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let first = cfg
        .write
        .as_deref()
        .map(|w| cfg.rotation.file_name(w, 0, now));
    // Before anything is created or truncated.
    if let Some(first) = &first {
        not_an_input(cfg, "-w", first)?;
    }
    if let Some(plot) = &cfg.plot {
        not_an_input(cfg, "--plot", plot)?;
        if first.as_deref().is_some_and(|f| same_target(plot, f)) {
            return Err(SetupError::PlotOverPcap { path: plot.clone() });
        }
    }
    let mut pcap_on_stdout = false;
    let pcap = match (cfg.write.as_deref(), first) {
        (Some(base), Some(first)) => {
            let out = Output::create(&first).map_err(PcapError::from)?;
            pcap_on_stdout = out.kind == Kind::Stdout;
            if pcap_on_stdout && cfg.print {
                return Err(SetupError::StdoutTwice { path: first });
            }
            note(&out);
            let writer = PcapWriter::for_interfaces(out, snaplen, ifaces, cfg.direct_io)?;
            let files = PcapFiles::new(
                writer,
                base.to_owned(),
                cfg.rotation,
                snaplen,
                ifaces.clone(),
                now,
                cfg.direct_io,
            );
            Some(files)
        }
        _ => None,
    };
    let plot = match cfg.plot.as_deref() {
        Some(path) => {
            let out = Output::create(path).map_err(SetupError::Plot)?;
            if out.kind == Kind::Stdout {
                return Err(SetupError::PlotOnStdout {
                    path: path.to_owned(),
                });
            }
            note(&out);
            Some(out)
        }
        None => None,
    };
    let sockets = SocketsConfig::of(cfg);
    let (metrics, ipfix) = match &cfg.sockets_netns {
        None => open_network_outputs(&sockets)?,
        Some(ns) => crate::os::in_netns(Arc::clone(ns), move || open_network_outputs(&sockets))
            .map_err(SetupError::SocketsNetns)??,
    };
    Ok(Outputs {
        pcap,
        pcap_on_stdout,
        plot,
        metrics,
        ipfix,
    })
}

/// Refuses an output `path` (of `flag`) that is one of the run's inputs:
/// `--read`'s file or a `--rules` file. Opening it to write would truncate
/// the capture still to be read, or the rules a reload reads again.
fn not_an_input(
    cfg: &RunConfig,
    flag: &'static str,
    path: &std::path::Path,
) -> Result<(), SetupError> {
    let read = match &cfg.target {
        super::config::Target::File(p) if p.as_os_str() != "-" => Some(p),
        _ => None,
    };
    for input in read.into_iter().chain(&cfg.rule_spec.files) {
        if same_file(path, input) {
            return Err(SetupError::OutputIsInput {
                flag,
                path: path.to_owned(),
                input: input.clone(),
            });
        }
    }
    Ok(())
}

/// Whether the outputs `a` and `b` would be one regular file: the same
/// file by any name or link, or, neither there yet, the same name in the
/// same directory. A device or a FIFO may take both.
fn same_target(a: &std::path::Path, b: &std::path::Path) -> bool {
    let place = |p: &std::path::Path| {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = dir
            .unwrap_or(std::path::Path::new("."))
            .canonicalize()
            .ok()?;
        Some((dir, p.file_name()?.to_owned()))
    };
    match (a.try_exists(), b.try_exists()) {
        (Ok(true), Ok(true)) => same_file(a, b),
        (Ok(false), Ok(false)) => matches!((place(a), place(b)), (Some(x), Some(y)) if x == y),
        _ => false,
    }
}

/// Whether `a` and `b` name the same regular file (by any name or link).
/// A device or a FIFO is never truncated, and may be shared.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.is_file() && (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// What [`open_network_outputs`] reads of a run's configuration: what a thread in
/// another namespace can take.
struct SocketsConfig {
    metrics: Option<(std::net::SocketAddr, usize)>,
    ipfix: Option<crate::session::config::Ipfix>,
    rules: Arc<crate::rules::RuleSet>,
    top: Option<TopSettings>,
}

impl SocketsConfig {
    fn of(cfg: &RunConfig) -> Self {
        Self {
            metrics: cfg.metrics,
            ipfix: cfg.ipfix.clone(),
            rules: Arc::clone(&cfg.rules),
            top: cfg.settings.top,
        }
    }
}

/// Binds `--metrics`' address and starts serving it, and opens `--ipfix`'s
/// socket, in the calling thread's network namespace.
fn open_network_outputs(
    cfg: &SocketsConfig,
) -> Result<(Option<MetricsSink>, Option<IpfixSink>), SetupError> {
    let metrics = match cfg.metrics {
        Some((addr, rules)) => Some(MetricsSink::serve(addr, rules).map_err(SetupError::Metrics)?),
        None => None,
    };
    let ipfix = match &cfg.ipfix {
        Some(x) => {
            Some(IpfixSink::open(x, Arc::clone(&cfg.rules), cfg.top).map_err(SetupError::Ipfix)?)
        }
        None => None,
    };
    Ok((metrics, ipfix))
}

/// Says on stderr what a user should know about an output.
/// The configuration's notes ([`RunConfig::notes`]), on standard error.
fn print_notes(cfg: &RunConfig) {
    for note in &cfg.notes {
        crate::say!("traffic: note: {note}");
    }
}

fn note(out: &Output) {
    if let Some(note) = out.note() {
        crate::say!("traffic: note: {note}");
    }
}

/// Where AF_XDP sockets go.
#[derive(Clone, Copy)]
struct SocketPlan {
    afxdp: Afxdp,
    ifindex: u32,
    /// Sockets to open, on queues 0 to `queues - 1`.
    queues: u32,
}

/// How many sockets `--afxdp` opens on `iface`: one per receive queue, or
/// `--queues`.
fn plan_sockets(afxdp: Afxdp, iface: &str) -> Result<SocketPlan, SetupError> {
    let ifindex = netlink::ifindex(iface).ok_or_else(|| no_such(iface))?;
    let available = netlink::rx_queues(iface, ifindex).map_err(|source| SetupError::Queues {
        iface: iface.to_owned(),
        source,
    })?;
    if let Some(asked) = afxdp.queues.filter(|&q| q > available) {
        crate::say!(
            "traffic: note: --queues {asked}: {iface} has {available} receive queue{}; opening a socket on each",
            if available == 1 { "" } else { "s" }
        );
    }
    Ok(SocketPlan {
        afxdp,
        ifindex,
        queues: afxdp.queues.map_or(available, |q| q.min(available)),
    })
}

/// Binds the planned sockets and puts them in the program's map.
fn open_sockets(
    engine: &mut Engine,
    plan: SocketPlan,
    iface: &str,
    read: Mode,
) -> Result<(XskSource, AfxdpStart), SetupError> {
    let x = plan.afxdp;
    let afxdp::Opened {
        queues,
        mode,
        zerocopy_refused,
    } = afxdp::open(plan.ifindex, plan.queues, x.mode, x.sizes).map_err(|source| {
        SetupError::Afxdp {
            iface: iface.to_owned(),
            source,
        }
    })?;
    for q in &queues {
        engine
            .set_xsk(q.queue, std::os::fd::AsRawFd::as_raw_fd(q))
            .map_err(|e| SetupError::RegisterXsk(Box::new(e)))?;
    }
    let start = AfxdpStart {
        mode,
        queues: plan.queues,
        zerocopy_refused,
    };
    let source = XskSource::new(queues, plan.ifindex, x.sizes.ring, read)?;
    Ok((source, start))
}

/// The outputs `cfg` asks for: the report always, packet lines, the pcap
/// file and the plot when asked.
fn sinks<'a>(cfg: &'a RunConfig, outputs: Outputs) -> Vec<Box<dyn Sink + 'a>> {
    let Outputs {
        pcap,
        pcap_on_stdout,
        plot,
        metrics,
        ipfix,
    } = outputs;
    let mut sinks: Vec<Box<dyn Sink + 'a>> = Vec::new();
    // Packet lines own stdout in text mode, and so does a pcap written to
    // `-w -` (or to a path that is stdout); the report moves to stderr.
    if (cfg.print && cfg.format == Format::Table) || pcap_on_stdout {
        sinks.push(Box::new(
            Reporter::new(io::stderr(), cfg.format, "stderr").by_rule(cfg.by_rule),
        ));
    } else {
        let out = io::LineWriter::new(io::stdout());
        sinks.push(Box::new(
            Reporter::new(out, cfg.format, "stdout").by_rule(cfg.by_rule),
        ));
    }
    if cfg.print {
        sinks.push(Box::new(Printer::new(cfg.format, Arc::clone(&cfg.rules))));
    }
    if let Some(pcap) = pcap {
        sinks.push(Box::new(pcap));
    }
    if let Some(plot) = plot {
        sinks.push(Box::new(PlotSink::new(plot)));
    }
    if let Some(metrics) = metrics {
        sinks.push(Box::new(metrics));
    }
    if let Some(ipfix) = ipfix {
        sinks.push(Box::new(ipfix));
    }
    sinks
}
