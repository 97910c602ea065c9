//! The `traffic` command.

mod benchcmd;
mod flags;

use std::{
    io::{self, Write as _},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow};
use std::os::fd::AsRawFd as _;

use aya::maps::{MapData, RingBuf};
use clap::Parser as _;
use flags::{GenConfig, LowArgs, RunConfig, Sub, Target};
use tokio::io::{Interest, unix::AsyncFd};
use tokio::signal::unix::{SignalKind, signal};
use traffic::afxdp::XskQueue;
use traffic::{
    caps,
    capture::{self, TimerFd, WallClock},
    engine::Engine,
    generator, lab,
    latency::Latency,
    pcap::PcapWriter,
    plot, print,
    report::{Counts, Format, Refused, Reporter, Start},
    rules::{Action, Origin, RuleSet},
};
use traffic_common::Stats;

fn main() -> ExitCode {
    // aya logs every map and program it creates at info level; keep warnings.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = LowArgs::parse();
    let result = match args.command {
        Some(Sub::Bench(bench_args)) => benchcmd::run(&bench_args),
        Some(Sub::Gen(gen_args)) => GenConfig::from_args(gen_args)
            .map_err(usage_error)
            .and_then(|cfg| run_gen(&cfg)),
        None => RunConfig::from_args(args.run)
            .map_err(usage_error)
            .and_then(run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) if err.is::<PartialLoss>() => ExitCode::from(1),
        Err(err) => {
            eprintln!("traffic: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn usage_error(errors: Vec<String>) -> anyhow::Error {
    let mut text = String::from("nothing was attached:");
    for e in &errors {
        text.push_str("\n  ");
        text.push_str(e);
    }
    anyhow!(text)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn run_gen(cfg: &GenConfig) -> Result<()> {
    let report = generator::run_with(&cfg.options, cfg.mechanism)
        .with_context(|| format!("sending on {}", cfg.options.iface))?;
    let mut out = io::stdout().lock();
    if cfg.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        let secs = report.elapsed_ns as f64 / 1e9;
        writeln!(
            out,
            "sent {} frames ({} bytes) in {secs:.3} s: {} frames/s; waited on backpressure {} times",
            report.sent,
            report.bytes,
            traffic::report::si(report.sent as f64 / secs.max(1e-9)),
            report.backpressure_waits
        )?;
    }
    Ok(())
}

fn run(cfg: RunConfig) -> Result<()> {
    caps::check()?;
    match cfg.target.clone() {
        Target::Iface(iface) => block_on(watch(&cfg, &iface)),
        Target::Lab => run_lab(cfg),
    }
    .and_then(|ended| {
        // Lost packets are not fatal, but they must not pass unnoticed: say
        // so and exit 1 (2 is for errors).
        if ended.events_lost > 0 || ended.undecodable > 0 {
            eprintln!(
                "traffic: {} capture events were lost because the ring buffer was full{}; \
                 raise --ring-size, lower --snaplen, or capture less",
                ended.events_lost,
                if ended.undecodable > 0 {
                    format!(" and {} were undecodable", ended.undecodable)
                } else {
                    String::new()
                }
            );
            return Err(anyhow!(PartialLoss));
        }
        Ok(())
    })
}

/// The run completed but lost capture events; exit status 1.
#[derive(Debug)]
struct PartialLoss;

impl std::fmt::Display for PartialLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("capture events were lost")
    }
}

impl std::error::Error for PartialLoss {}

fn block_on<T, F: Future<Output = Result<T>>>(f: F) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(f)
}

/// Sources of the lab's generator, and the demo rules applied to them.
const LAB_SOURCES: [&str; 6] = [
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "2001:db8:bad::/64",
    "2001:db8:1::/64",
    "2001:db8:c::/64",
];
const LAB_RULES: [(Action, &str); 4] = [
    (Action::Drop, "192.0.2.0/25"),
    (Action::Capture, "203.0.113.0/24"),
    (Action::Drop, "2001:db8:bad::/48"),
    (Action::Capture, "2001:db8:c::/48"),
];
/// Frames per second the lab's generator sends.
const LAB_RATE: u64 = 10_000;

fn run_lab(mut cfg: RunConfig) -> Result<Ended> {
    for name in lab::remove_stale() {
        eprintln!("traffic: removed namespace {name} left by a lab that was killed");
    }
    if !cfg.rules_given {
        let mut rules = RuleSet::new(cfg.rules.default_action());
        for (action, cidr) in LAB_RULES {
            rules.add_str(action, cidr, Origin::Flag("--lab"))?;
        }
        cfg.rules = rules;
    }
    let the_lab =
        lab::Lab::create("lab", 1).context("creating the lab (needs root, iproute2 and veth)")?;
    eprintln!(
        "traffic: lab: {} (namespace {}) sends {LAB_RATE} frames/s to {} (namespace {}) from {}",
        the_lab.tx_if,
        the_lab.tx_ns,
        the_lab.rx_if,
        the_lab.rx_ns,
        LAB_SOURCES.join(", ")
    );
    let stop = Arc::new(AtomicBool::new(false));
    let generator = {
        let stop = Arc::clone(&stop);
        let ns = the_lab.tx_ns.clone();
        let options = generator::GenOptions {
            iface: the_lab.tx_if.clone(),
            count: LAB_RATE / 10,
            sources: LAB_SOURCES
                .iter()
                .map(|s| s.parse().expect("valid lab prefix"))
                .collect(),
            dst4: "198.51.100.1".parse().expect("valid address"),
            dst6: "2001:db8::1".parse().expect("valid address"),
            dst_mac: lab::RX_MAC,
            rate: Some(LAB_RATE),
            proto: generator::Proto::Udp,
            payload_len: 64,
        };
        std::thread::spawn(move || -> Result<()> {
            lab::enter_netns(&ns).context("entering the lab's sending namespace")?;
            // Rounds of a tenth of a second, until told to stop.
            while !stop.load(Ordering::Relaxed) {
                generator::run(&options).context("the lab's generator failed")?;
            }
            Ok(())
        })
    };
    let result = lab::enter_netns(&the_lab.rx_ns)
        .context("entering the lab's receiving namespace")
        .and_then(|()| block_on(watch(&cfg, &the_lab.rx_if)));
    stop.store(true, Ordering::Relaxed);
    let gen_result = generator
        .join()
        .map_err(|_| anyhow!("the lab's generator panicked"))?;
    drop(the_lab);
    gen_result.and(result)
}

/// Where captured events go: latency histograms always, and the packet
/// printer and pcap file when asked for.
struct Sinks<'a> {
    rules: &'a RuleSet,
    clock: WallClock,
    latency: Latency,
    /// Text lines, or JSON objects with --json.
    print: Option<(io::BufWriter<io::Stdout>, Format)>,
    pcap: Option<PcapWriter>,
    /// Events read from the ring, in all and in this interval.
    delivered: u64,
    delivered_interval: u64,
    /// Records too short for what their header announces (never expected).
    undecodable: u64,
}

impl Sinks<'_> {
    /// Reads every event waiting in the ring. Returns how many.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<u64> {
        let mut n = 0;
        while let Some(item) = ring.next() {
            let read_ns = capture::monotonic_ns();
            let Some(ev) = capture::decode(&item) else {
                self.undecodable += 1;
                continue;
            };
            let latency = read_ns.saturating_sub(ev.header.ts_ns);
            self.latency.record(latency);
            let ts = self.clock.unix(ev.header.ts_ns);
            if let Some(pcap) = &mut self.pcap {
                pcap.write(ts, ev.header.wire_len, ev.data)?;
            }
            self.print_packet(&ev, ts, latency)?;
            n += 1;
        }
        if n > 0
            && let Some((out, _)) = &mut self.print
        {
            out.flush()?;
        }
        self.delivered += n;
        self.delivered_interval += n;
        Ok(n)
    }

    /// Writes the --print line (or JSON object) of one packet, if asked for.
    /// Flushed by the caller after a batch.
    fn print_packet(
        &mut self,
        ev: &capture::Event<'_>,
        ts: std::time::Duration,
        latency: u64,
    ) -> Result<()> {
        let Some((out, format)) = &mut self.print else {
            return Ok(());
        };
        match format {
            Format::Table => writeln!(out, "{}", print::line(ev, ts, self.rules))?,
            Format::Json => {
                serde_json::to_writer(
                    &mut *out,
                    &print::PacketLine::new(ev, ts, self.rules, latency),
                )?;
                writeln!(out)?;
            }
        }
        Ok(())
    }

    /// Reads every frame waiting on an AF_XDP socket. Returns how many.
    fn drain_xsk(&mut self, q: &mut XskQueue) -> Result<u64> {
        let queue = q.queue;
        let n = q.drain(|frame, ts| self.whole_frame(frame, ts, queue))?;
        if n > 0
            && let Some((out, _)) = &mut self.print
        {
            out.flush()?;
        }
        Ok(n)
    }

    /// Takes one whole frame from an AF_XDP socket.
    fn whole_frame(&mut self, frame: &[u8], hook_ns: u64, queue: u32) -> Result<()> {
        let read_ns = capture::monotonic_ns();
        let latency = read_ns.saturating_sub(hook_ns);
        if hook_ns != 0 {
            self.latency.record(latency);
        }
        let ts = self
            .clock
            .unix(if hook_ns != 0 { hook_ns } else { read_ns });
        if let Some(pcap) = &mut self.pcap {
            pcap.write(ts, frame.len() as u32, frame)?;
        }
        if self.print.is_some() {
            let mut header = capture::describe(frame, hook_ns, queue);
            header.action = traffic_common::action::CAPTURE;
            let src = (capture::Event {
                header,
                data: frame,
            })
            .src();
            if let Some((id, _)) = src.and_then(|src| self.rules.lookup(src)) {
                header.rule_id = id as u32;
            }
            let ev = capture::Event {
                header,
                data: frame,
            };
            self.print_packet(&ev, ts, latency)?;
        }
        self.delivered += 1;
        self.delivered_interval += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(pcap) = &mut self.pcap {
            pcap.flush()?;
        }
        Ok(())
    }
}

/// The one-shot timer that reads events whose wake-up the program skipped.
struct Straggler {
    fd: AsyncFd<TimerFd>,
    armed: bool,
    interval: std::time::Duration,
}

impl Straggler {
    fn new(interval: std::time::Duration) -> Result<Self> {
        let timer = TimerFd::new().context("creating a timerfd")?;
        // SAFETY: the TimerFd owns its fd for as long as the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register_with_interest(timer, Interest::READABLE) }
            .map_err(io::Error::from)
            .context("polling the timerfd")?;
        Ok(Self {
            fd,
            armed: false,
            interval,
        })
    }

    /// After a batch of `n` events: arm the timer unless it is armed already
    /// (arming is a syscall, and batches come as often as the kernel wakes
    /// us) or nothing came.
    fn after_batch(&mut self, n: u64) -> Result<()> {
        if n > 0 && !self.armed && !self.interval.is_zero() {
            self.fd
                .get_ref()
                .arm(self.interval)
                .context("arming the timerfd")?;
            self.armed = true;
        }
        Ok(())
    }
}

/// Per-interval rates, for --plot.
#[derive(Default)]
struct Timeline {
    seconds: Vec<f64>,
    pass: Vec<f64>,
    drop: Vec<f64>,
    capture: Vec<f64>,
}

impl Timeline {
    fn push(&mut self, at: std::time::Duration, c: &Counts, length: std::time::Duration) {
        let secs = length.as_secs_f64().max(1e-9);
        self.seconds.push(at.as_secs_f64());
        self.pass.push(c.pass as f64 / secs);
        self.drop.push(c.drop as f64 / secs);
        self.capture.push(c.capture as f64 / secs);
    }

    fn svg(&self, title: &str) -> String {
        plot::timeline(
            title,
            &self.seconds,
            &[
                ("pass", self.pass.clone()),
                ("drop", self.drop.clone()),
                ("capture", self.capture.clone()),
            ],
            "packets/s",
        )
    }
}

/// The AF_XDP sockets, each either watched by the reactor or paused.
///
/// AF_XDP makes its socket readable at every receive batch of the driver;
/// an epoll registration would wake this thread for each, even with no
/// task waiting. While frames keep coming the sockets are therefore taken
/// out of epoll and read on the wake-up timer instead, and put back when a
/// timed read finds nothing.
#[derive(Default)]
struct Sockets {
    live: Vec<AsyncFd<XskQueue>>,
    paused: Vec<XskQueue>,
}

impl Sockets {
    fn is_empty(&self) -> bool {
        self.live.is_empty() && self.paused.is_empty()
    }

    fn register(q: XskQueue) -> Result<AsyncFd<XskQueue>> {
        // SAFETY: the XskQueue owns its socket fd for as long as the
        // AsyncFd owns the XskQueue.
        unsafe { AsyncFd::register_with_interest(q, Interest::READABLE) }
            .map_err(io::Error::from)
            .context("polling an AF_XDP socket")
    }

    fn push(&mut self, q: XskQueue) -> Result<()> {
        self.live.push(Self::register(q)?);
        Ok(())
    }

    fn pause(&mut self) {
        self.paused
            .extend(self.live.drain(..).map(AsyncFd::into_inner));
    }

    fn resume(&mut self) -> Result<()> {
        for q in std::mem::take(&mut self.paused) {
            self.live.push(Self::register(q)?);
        }
        Ok(())
    }

    fn queues(&self) -> impl Iterator<Item = &XskQueue> {
        self.live
            .iter()
            .map(AsyncFd::get_ref)
            .chain(self.paused.iter())
    }

    /// Reads every socket; returns the frames read.
    fn drain_all(&mut self, sinks: &mut Sinks<'_>) -> Result<u64> {
        let mut n = 0;
        for q in self
            .live
            .iter_mut()
            .map(AsyncFd::get_mut)
            .chain(self.paused.iter_mut())
        {
            n += sinks.drain_xsk(q)?;
        }
        Ok(n)
    }

    /// The index of a live socket with frames waiting.
    async fn ready(&self) -> usize {
        std::future::poll_fn(|cx| {
            for (i, x) in self.live.iter().enumerate() {
                if x.poll_read_ready(cx).is_ready() {
                    return std::task::Poll::Ready(i);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// Frames the kernel dropped on all sockets.
    fn drops(&self) -> u64 {
        self.queues()
            .map(|q| {
                let d = q.drops();
                d.rx_ring_full + d.rx_dropped
            })
            .sum()
    }
}

/// How a run ended, for the exit status.
struct Ended {
    events_lost: u64,
    undecodable: u64,
}

/// Loads, attaches and reports until stopped.
async fn watch(cfg: &RunConfig, iface: &str) -> Result<Ended> {
    // Installed first, so that a signal during loading also ends the run
    // cleanly instead of killing it midway.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;

    // AF_XDP delivers whole frames: the pcap's snaplen is then the frame size.
    let snaplen = cfg.afxdp.map_or(cfg.settings.snaplen, |x| x.sizes.frame);
    let pcap = cfg
        .write
        .as_deref()
        .map(|path| PcapWriter::create(path, snaplen))
        .transpose()?;
    let mut settings = cfg.settings.clone();
    let xsk_plan = match cfg.afxdp {
        Some(x) => {
            let ifindex = traffic::netlink::ifindex(iface).ok_or_else(|| {
                traffic::engine::EngineError::NoSuchInterface {
                    iface: iface.to_owned(),
                }
            })?;
            let available = traffic::netlink::rx_queues(iface, ifindex)
                .with_context(|| format!("asking how many receive queues {iface} has"))?;
            let queues = x.queues.map_or(available, |q| q.min(available));
            settings.afxdp_queues = queues;
            Some((x, ifindex, queues))
        }
        None => None,
    };
    let mut engine = Engine::load_with(&cfg.rules, &settings).context("loading the XDP program")?;
    let mut xsks = Sockets::default();
    let mut afxdp_start = None;
    if let Some((x, ifindex, queues)) = xsk_plan {
        let traffic::afxdp::Opened {
            queues: opened,
            mode,
            zerocopy_refused,
        } = traffic::afxdp::open(ifindex, queues, x.mode, x.sizes)
            .with_context(|| format!("opening AF_XDP sockets on {iface}"))?;
        for q in opened {
            engine
                .set_xsk(q.queue, q.as_raw_fd())
                .context("registering an AF_XDP socket")?;
            xsks.push(q)?;
        }
        afxdp_start = Some(traffic::report::AfxdpStart {
            mode,
            queues,
            zerocopy_refused,
        });
    }
    let ring = engine
        .take_events()
        .context("the event ring buffer was already taken")?;
    // SAFETY: the ring buffer owns its map fd, which stays open and the same
    // for as long as the RingBuf lives, and the AsyncFd owns the RingBuf.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(io::Error::from)
        .context("polling the event ring buffer")?;
    let attached = engine
        .attach(iface, cfg.mode, cfg.force)
        .with_context(|| format!("attaching to {iface}"))?
        .clone();
    let (rules_v4, rules_v6) = cfg.rules.counts();
    // Packet lines own stdout in text mode; the table moves to stderr.
    let report_out: Box<dyn io::Write> = if cfg.print && cfg.format == Format::Table {
        Box::new(io::stderr())
    } else {
        Box::new(io::LineWriter::new(io::stdout()))
    };
    let mut reporter = Reporter::new(report_out, cfg.format);
    reporter.start(
        &Start {
            iface: attached.iface.clone(),
            ifindex: attached.ifindex,
            mode: attached.mode,
            refused: attached
                .refused
                .iter()
                .map(|(mode, error)| Refused {
                    mode: *mode,
                    error: error.clone(),
                })
                .collect(),
            replaced: attached.replaced.clone(),
            rules_v4,
            rules_v6,
            default: cfg.rules.default_action(),
            afxdp: afxdp_start,
        },
        &mut io::stderr(),
    )?;
    let mut sinks = Sinks {
        rules: &cfg.rules,
        clock: WallClock::new(),
        latency: Latency::new(),
        print: cfg.print.then(|| {
            (
                io::BufWriter::with_capacity(1 << 16, io::stdout()),
                cfg.format,
            )
        }),
        pcap,
        delivered: 0,
        delivered_interval: 0,
        undecodable: 0,
    };

    let started = Instant::now();
    let deadline = cfg
        .duration
        .map(|d| tokio::time::Instant::from_std(started + d));
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::from_std(started + cfg.interval),
        cfg.interval,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (Stats::default(), started);
    let mut last_xsk_drops = 0;
    let mut timeline = Timeline::default();
    // Armed after a batch: events whose wake-up the program skipped are read
    // when it fires (see the capture module's docs).
    let mut straggler = Straggler::new(cfg.settings.wakeup_interval)?;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("polling the event ring buffer")?;
                // Cleared before reading, so that an event arriving during
                // the read makes the ring readable again instead of waiting.
                guard.clear_ready();
                let n = sinks.drain(guard.get_inner_mut())?;
                straggler.after_batch(n)?;
            }
            guard = straggler.fd.readable() => {
                let mut guard = guard.context("polling the timerfd")?;
                guard.get_inner().clear();
                guard.clear_ready();
                straggler.armed = false;
                let mut n = sinks.drain(ring.get_mut())?;
                let from_sockets = xsks.drain_all(&mut sinks)?;
                n += from_sockets;
                if from_sockets == 0 {
                    xsks.resume()?;
                }
                straggler.after_batch(n)?;
            }
            i = xsks.ready(), if !xsks.live.is_empty() => {
                let mut guard = xsks.live[i].readable_mut().await.context("polling an AF_XDP socket")?;
                guard.clear_ready();
                let n = sinks.drain_xsk(guard.get_inner_mut())?;
                // Frames are flowing: read on the timer until they stop (see
                // `Sockets`).
                if n > 0 && !straggler.interval.is_zero() {
                    xsks.pause();
                    straggler.after_batch(n)?;
                }
            }
            _ = ticker.tick() => {
                sinks.drain(ring.get_mut())?;
                xsks.drain_all(&mut sinks)?;
                sinks.flush()?;
                sinks.clock.resync();
                let now = (engine.stats()?, Instant::now());
                let mut counts: Counts = now.0.since(&last.0);
                counts.events = std::mem::take(&mut sinks.delivered_interval);
                let drops = xsks.drops();
                counts.events_lost += counts.xsk_unbound + (drops - last_xsk_drops);
                last_xsk_drops = drops;
                reporter.interval(&counts, &sinks.latency.take_interval(), now.1 - last.1)?;
                timeline.push(now.1 - started, &counts, now.1 - last.1);
                last = now;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = sleep_until(deadline) => break,
        }
    }
    // Detach before the last reading, so that no packet is counted after it,
    // then read every event the program wrote.
    engine.detach();
    let end_stats = engine.stats()?;
    let drain_deadline = Instant::now() + std::time::Duration::from_secs(2);
    loop {
        sinks.drain(ring.get_mut())?;
        if sinks.delivered + sinks.undecodable >= end_stats.events
            || Instant::now() > drain_deadline
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    sinks.flush()?;
    let end = (end_stats, Instant::now());
    let mut tail: Counts = end.0.since(&last.0);
    tail.events = sinks.delivered_interval;
    let drops = xsks.drops();
    tail.events_lost += tail.xsk_unbound + (drops - last_xsk_drops);
    if tail.packets > 0 || tail.events > 0 || end.1 - last.1 >= cfg.interval / 2 {
        reporter.interval(&tail, &sinks.latency.take_interval(), end.1 - last.1)?;
        timeline.push(end.1 - started, &tail, end.1 - last.1);
    }
    if let Some(path) = &cfg.plot {
        let title = format!("traffic on {} ({} mode)", attached.iface, attached.mode);
        let svg = plot::run_report(
            &title,
            &timeline.svg(&title),
            &plot::histogram("delivery latency", sinks.latency.total_histogram()),
        );
        std::fs::write(path, svg)
            .with_context(|| format!("writing the plot {}", path.display()))?;
    }
    let mut total: Counts = end.0;
    total.events = sinks.delivered;
    total.events_lost += total.xsk_unbound + drops;
    let queue_reports: Vec<traffic::report::QueueReport> = xsks
        .queues()
        .map(|q| {
            let d = q.drops();
            traffic::report::QueueReport {
                queue: q.queue,
                delivered: q.delivered,
                rx_ring_full: d.rx_ring_full,
                rx_dropped: d.rx_dropped,
                fill_ring_empty: d.fill_ring_empty,
            }
        })
        .collect();
    reporter.summary(
        &attached.iface,
        attached.mode,
        &total,
        &sinks.latency.total(),
        end.1 - started,
        (!xsks.is_empty()).then_some(queue_reports.as_slice()),
    )?;
    Ok(Ended {
        events_lost: total.events_lost,
        undecodable: sinks.undecodable,
    })
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
