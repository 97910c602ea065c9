//! A run: the attached program's counters and sources, driven into sinks.
//!
//! A [`Session`] owns what a run reads from (the kernel's [`Counters`] and
//! the [`Source`]s of captured packets) and what it writes to (its
//! [`Sink`]s). [`Session::run`] waits on every source at once, hands each
//! packet to every sink, reports an interval every `interval`, and when told
//! to stop, stops the kernel side, reads what is left, and finishes every
//! sink with the summary. [`setup::watch`] builds one from the command
//! line's configuration and runs it until a signal or `--duration`.
//!
//! Accounting: the intervals add up to the summary, and every packet the
//! kernel handed to a source is either delivered to the sinks or counted in
//! `events_lost`.
//!
//! # When to read
//!
//! Each source paces itself by the rate it reads at ([`crate::source::pace`]):
//! after a read it says whether it waits to be woken by the next packet,
//! wants to be read again after a while, or at once (`--busy-poll`). The
//! session waits on the readiness of the sources that wait, and on one
//! nanosecond timer set for the soonest of the others; when the sources are
//! idle, nothing runs.

pub mod config;
pub mod ifaces;
pub mod reload;
pub mod replay;
pub mod setup;
pub mod tally;
pub mod top;

use std::{
    future::Future,
    io,
    sync::Arc,
    task::Poll,
    time::{Duration, Instant},
};

use tokio::io::{Interest, unix::AsyncFd};
use traffic_common::{Count, Stats, TopKey};

use crate::{
    kernel::{Engine, EngineError, table::Table},
    rules::RuleSet,
    sink::{
        Counts, FailedOutput, Flow, IfaceCounts, Interval, Latency, ReloadReport, Sink, SinkError,
        Start, Summary,
        json::{RuleRow, TopReport},
    },
    source::{Captured, Drained, Source, SourceError, clock::TimerFd, pace::Next},
};

pub use config::{Afxdp, Ipfix, RunConfig, Target};
pub use ifaces::Ifaces;
pub use reload::Reloader;
pub use setup::{SetupError, watch};
pub use tally::RuleTally;
pub use top::TopTally;

/// The kernel's packet counters, as a session reads them.
pub trait Counters {
    /// The counters now, summed over all CPUs.
    ///
    /// # Errors
    ///
    /// When they cannot be read.
    fn read(&mut self) -> Result<Stats, EngineError>;

    /// The counters now, summed, and of each interface with its index
    /// when there is more than one (empty for one).
    ///
    /// # Errors
    ///
    /// When they cannot be read.
    fn read_each(&mut self) -> Result<(Stats, Vec<Stats>), EngineError> {
        Ok((self.read()?, Vec::new()))
    }

    /// Stops the kernel from counting more packets (detaches the program).
    fn stop(&mut self);

    /// Puts the rules of `table` in force in place of the rules in force,
    /// atomically.
    ///
    /// # Errors
    ///
    /// When the kernel cannot take the table; the old rules stay.
    fn replace_rules(&mut self, table: &Table) -> Result<(), EngineError>;

    /// Rules each table may hold, as far as per-rule counters go; 0 when
    /// rules are not counted.
    fn rule_slots(&self) -> u32 {
        0
    }

    /// Per-rule counter slots `first .. first + n`, summed over the CPUs.
    ///
    /// # Errors
    ///
    /// When they cannot be read.
    fn read_slots(
        &mut self,
        first: u32,
        n: u32,
        each: &mut dyn FnMut(u32, Count),
    ) -> Result<(), EngineError> {
        let _ = (first, n, each);
        Ok(())
    }

    /// The table the next rule set goes into (0 or 1).
    fn free_half(&self) -> u32 {
        0
    }

    /// Waits until no packet can still be classified by the table out of
    /// force.
    fn settle(&mut self) {}

    /// Reads what the kernel logged of sources into the sums
    /// [`Counters::take_sources`] hands out, so that the logs keep room.
    fn gather_sources(&mut self) {}

    /// Hands each source counted since the last call to `each`, with the
    /// index of the interface it was counted on, and starts anew.
    fn take_sources(&mut self, each: &mut dyn FnMut(u32, &TopKey, Count)) {
        let _ = each;
    }

    /// How long a packet may still be classified or counted by what it
    /// read before a switch: zero when no program runs on its own.
    fn grace(&self) -> Duration {
        Duration::ZERO
    }

    /// Runs one recorded frame through the program (`--read`); `false`
    /// when the kernel refuses a frame of its size.
    ///
    /// # Errors
    ///
    /// When the run fails otherwise.
    fn run_frame(&mut self, frame: &[u8]) -> Result<bool, EngineError>;
}

/// Puts `table`, built from `rules`, in force, first taking the last counts
/// of the set whose table it takes; the rules now in force, and the table
/// (0 or 1) they are in.
fn swap(
    counters: &mut dyn Counters,
    tally: Option<&mut RuleTally>,
    table: Table,
    rules: RuleSet,
) -> Result<(Arc<RuleSet>, u32), EngineError> {
    let half = counters.free_half();
    let mut tally = tally;
    if let Some(t) = tally.as_deref_mut() {
        counters.settle();
        t.before_swap(counters)?;
    }
    counters.replace_rules(&table)?;
    let rules = Arc::new(rules);
    if let Some(t) = tally {
        t.swapped(Arc::clone(&rules), half);
    }
    Ok((rules, half))
}

impl Counters for Engine {
    fn read(&mut self) -> Result<Stats, EngineError> {
        self.stats()
    }

    fn replace_rules(&mut self, table: &Table) -> Result<(), EngineError> {
        Engine::replace_rules(self, table)
    }

    fn stop(&mut self) {
        self.detach();
    }

    fn rule_slots(&self) -> u32 {
        Engine::rule_slots(self)
    }

    fn read_slots(
        &mut self,
        first: u32,
        n: u32,
        each: &mut dyn FnMut(u32, Count),
    ) -> Result<(), EngineError> {
        Engine::read_slots(self, first, n, each)
    }

    fn free_half(&self) -> u32 {
        Engine::free_half(self)
    }

    fn settle(&mut self) {
        Engine::settle(self);
    }

    fn gather_sources(&mut self) {
        Engine::gather_sources(self);
    }

    fn take_sources(&mut self, each: &mut dyn FnMut(u32, &TopKey, Count)) {
        let ifindex = self.ifindex();
        Engine::take_sources(self, &mut |key, count| each(ifindex, key, count));
    }

    fn run_frame(&mut self, frame: &[u8]) -> Result<bool, EngineError> {
        Engine::run_frame(self, frame)
    }

    fn grace(&self) -> Duration {
        if self.ever_attached() {
            crate::kernel::table::GRACE
        } else {
            Duration::ZERO
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The counters could not be read.
    #[error("reading the packet counters failed")]
    Counters(#[source] EngineError),
    /// The wake-up timer failed.
    #[error("the wake-up timer failed")]
    Timer(#[source] io::Error),
}

impl From<SessionError> for io::Error {
    fn from(e: SessionError) -> Self {
        io::Error::other(e)
    }
}

/// Why a run stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Stop {
    /// A signal asked it to: `SIGINT`, `SIGTERM`, `SIGHUP`, `SIGQUIT` or
    /// `SIGXCPU`.
    Signal(&'static str),
    /// `--duration` passed.
    #[default]
    Duration,
    /// An output has done its job (`-G` with `-W`: that many files).
    OutputDone,
    /// `-c COUNT` captured packets were kept.
    Count,
    /// Standard output's reader left (`traffic --json | head -1`) and no
    /// other output was still working: the pipeline is over.
    ReaderGone,
    /// The interface went away (deleted, or moved to another namespace).
    InterfaceGone {
        /// Its name.
        iface: String,
    },
}

/// How a run ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Why it stopped.
    pub stopped: Stop,
    /// The counts since the start, as in the summary.
    pub total: Counts,
    /// Records no source could decode (never expected).
    pub undecodable: u64,
    /// Packets handed to a source that were still unread when the run
    /// gave up waiting for them (included in `total.events_lost`).
    pub unread: u64,
    /// Outputs that failed during the run, with what they missed.
    pub failed: Vec<Failed>,
    /// Frames the AF_XDP sockets dropped (RX ring full, no fill-ring
    /// frame); included in `total.events_lost`.
    pub socket_drops: u64,
}

/// An output that failed: the run went on without it.
#[derive(Debug)]
pub struct Failed {
    /// Why, naming the output.
    pub error: SinkError,
    /// Packets it kept before it failed (those it was given, less any its
    /// buffers held that never reached it).
    pub packets_before: u64,
    /// Packets it was given and did not keep, and those it was not given
    /// because it had failed.
    pub packets_missed: u64,
}

impl Failed {
    /// The report's description of the failure.
    pub fn report(&self) -> FailedOutput {
        FailedOutput {
            error: crate::kernel::error_chain(&self.error),
            packets_written: self.packets_before,
            packets_not_written: self.packets_missed,
        }
    }
}

impl Outcome {
    /// Capture events lost in any way: the kernel could not write them, a
    /// socket dropped them, they were never read, or could not be decoded.
    pub fn lost(&self) -> u64 {
        self.total.events_lost + self.undecodable
    }

    /// What was lost and where, and what to do about it: one sentence for
    /// stderr, or `None` when nothing was lost. Each path's loss names its
    /// own ring and flag.
    pub fn loss_message(&self) -> Option<String> {
        if self.lost() == 0 {
            return None;
        }
        let t = &self.total;
        let ring = t
            .events_lost
            .saturating_sub(t.xsk_unbound + self.socket_drops + self.unread);
        let mut parts = Vec::new();
        if ring > 0 {
            parts.push(format!(
                "{ring} capture events were lost because the event ring buffer was full (raise --ring-size, lower --snaplen, or capture less)"
            ));
        }
        if self.socket_drops > 0 {
            parts.push(format!(
                "{} frames were dropped by the AF_XDP sockets, their RX ring full or no frame in their fill ring (raise --afxdp-ring)",
                self.socket_drops
            ));
        }
        if t.xsk_unbound > 0 {
            parts.push(format!(
                "{} frames arrived on a receive queue with no AF_XDP socket and were passed to the stack uncaptured (leave out --queues to open one on every queue)",
                t.xsk_unbound
            ));
        }
        if self.unread > 0 {
            parts.push(format!(
                "{} were handed to traffic but still unread {} s after the end",
                self.unread,
                EXIT_DRAIN.as_secs()
            ));
        }
        if self.undecodable > 0 {
            parts.push(format!("{} were undecodable", self.undecodable));
        }
        Some(parts.join("; "))
    }

    /// The exit status: 2 when the interface went away, 1 when capture
    /// events were lost or an output failed (stdout closed by its reader, as
    /// when piped into `head`, is not a failure), else 0.
    pub fn exit_code(&self) -> u8 {
        if matches!(self.stopped, Stop::InterfaceGone { .. }) {
            return 2;
        }
        let failed = self.failed.iter().any(|f| !f.error.is_closed_stdout());
        u8::from(self.lost() > 0 || failed)
    }
}

/// How long the end of a run waits for packets the kernel handed over but
/// the sources have not yet read ([`Timing::exit_drain`]).
pub const EXIT_DRAIN: Duration = Duration::from_secs(2);

/// The timer for the sources that read on their own schedule.
struct Pace {
    fd: AsyncFd<TimerFd>,
    next: Next,
}

impl Pace {
    fn new() -> Result<Self, SessionError> {
        let timer = TimerFd::new().map_err(SessionError::Timer)?;
        // SAFETY: the TimerFd owns its fd for as long as the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register_with_interest(timer, Interest::READABLE) }
            .map_err(|e| SessionError::Timer(io::Error::from(e)))?;
        Ok(Self {
            fd,
            next: Next::Woken,
        })
    }

    /// Sets the next timed read. A timer left armed from before fires into
    /// a read that finds little, which is harmless; disarming it would cost
    /// a system call per read.
    fn set(&mut self, next: Next) -> Result<(), SessionError> {
        if let Next::After(d) = next {
            self.fd.get_ref().arm(d).map_err(SessionError::Timer)?;
        }
        self.next = next;
        Ok(())
    }

    /// Completes when the sources are to be read.
    async fn due(&mut self) -> Result<(), SessionError> {
        match self.next {
            Next::Woken => std::future::pending().await,
            Next::Now => {
                // Busy polling: let the runtime look at signals and timers
                // between reads.
                tokio::task::yield_now().await;
                Ok(())
            }
            Next::After(_) => {
                let mut guard = self.fd.readable().await.map_err(SessionError::Timer)?;
                guard.get_inner().clear();
                guard.clear_ready();
                Ok(())
            }
        }
    }
}

/// The settings of a run's loop.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Between reports.
    pub interval: Duration,
    /// At the end, how long to wait for packets the kernel handed over but
    /// the sources have not yet read; what is still missing then is lost.
    pub exit_drain: Duration,
}

/// A sink and, once it failed, what it missed.
struct Slot<'a> {
    sink: Box<dyn Sink + 'a>,
    /// [`Sink::takes_packets`], asked once.
    takes_packets: bool,
    /// Packets given to it.
    packets: u64,
    failed: Option<Failed>,
}

impl Slot<'_> {
    /// Runs `f` on the sink unless it failed; a failure is kept, not
    /// returned: the run goes on without this output.
    fn call(&mut self, f: impl FnOnce(&mut dyn Sink) -> Result<(), SinkError>) {
        if self.failed.is_none()
            && let Err(error) = f(self.sink.as_mut())
        {
            // A file's buffers that never reached it hold packets it was
            // given and did not keep: those are missed too.
            let kept = self.sink.kept().unwrap_or(self.packets).min(self.packets);
            self.failed = Some(Failed {
                error,
                packets_before: kept,
                packets_missed: self.packets - kept,
            });
        }
    }

    fn packet(&mut self, p: &Captured<'_>) {
        match &mut self.failed {
            Some(failed) => failed.packets_missed += 1,
            None => {
                self.call(|sink| sink.packet(p));
                match &mut self.failed {
                    // The packet it failed on is one it missed.
                    Some(failed) => failed.packets_missed += 1,
                    None => self.packets += 1,
                }
            }
        }
    }
}

/// A run: counters and sources driven into sinks.
pub struct Session<'a> {
    start: Start,
    counters: Box<dyn Counters + 'a>,
    sources: Vec<Box<dyn Source + 'a>>,
    sinks: Vec<Slot<'a>>,
    latency: Latency,
    timing: Timing,
    /// Delivered and undecodable, per source, since the start.
    drained: Vec<Drained>,
    /// Reading the rules again, when the run can.
    reloader: Option<Reloader<'a>>,
    /// The rules in force.
    rules: Arc<RuleSet>,
    /// Counts per rule, when the kernel keeps them.
    tally: Option<RuleTally>,
    /// Top talkers (`--top`).
    top: Option<TopTally>,
    /// Whether the sinks get every source's counts each interval
    /// (`--ipfix`).
    flows: bool,
    /// The interfaces of a run on more than one (empty for one).
    ifaces: Vec<(String, u32)>,
    /// The interface (index into `ifaces`) each source reads from.
    source_iface: Vec<Option<usize>>,
    /// What time it is.
    clock: Clock,
    /// Asks for the counts so far, or the outputs written out.
    requests: Option<Requests>,
    /// `-c COUNT`: the captured packets still to keep, and those read after
    /// the last was kept.
    keep: Option<Keep>,
}

/// What is left of `-c COUNT`.
#[derive(Clone, Copy, Debug)]
struct Keep {
    /// Captured packets still to hand to the sinks.
    left: u64,
    /// Captured packets read once none was left, not handed over.
    past: u64,
}

/// What a user may ask of a run that goes on, by signal, as of tcpdump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    /// The counts so far, on stderr (SIGUSR1).
    Status,
    /// Every output written out up to here (SIGUSR2).
    WriteOut,
}

/// The signals that ask for [`Request`]s: SIGUSR1 and SIGUSR2.
pub struct Requests {
    status: tokio::signal::unix::Signal,
    write_out: tokio::signal::unix::Signal,
}

impl Requests {
    /// `status` asks for the counts so far, `write_out` for the outputs
    /// written out.
    pub fn new(
        status: tokio::signal::unix::Signal,
        write_out: tokio::signal::unix::Signal,
    ) -> Self {
        Self { status, write_out }
    }

    async fn next(&mut self) -> Option<Request> {
        tokio::select! {
            Some(()) = self.status.recv() => Some(Request::Status),
            Some(()) = self.write_out.recv() => Some(Request::WriteOut),
            else => None,
        }
    }
}

/// The next of `requests`, or never.
async fn next_request(requests: Option<&mut Requests>) -> Option<Request> {
    match requests {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

/// The next signal of `signal`, or never.
async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// A run's time: the clock's for a live run, the frames' for a recorded
/// capture.
#[derive(Clone, Copy, Debug)]
enum Clock {
    /// Since `started`.
    Live {
        /// When the run started.
        started: Instant,
    },
    /// From the first frame's timestamp to the last one's.
    File {
        /// The first frame's (Unix time).
        first: Duration,
        /// The frame being run.
        now: Duration,
    },
}

impl Clock {
    /// Since the start of the run, and as Unix time.
    fn now(&self) -> (Duration, Duration) {
        match *self {
            Clock::Live { started } => (
                started.elapsed(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default(),
            ),
            Clock::File { first, now } => (now.saturating_sub(first), now),
        }
    }
}

impl<'a> Session<'a> {
    /// Where the program is attached.
    pub fn start(&self) -> &Start {
        &self.start
    }

    /// A session that reports `start` and reads `counters` and `sources`
    /// into `sinks`, classifying by `rules`.
    pub fn new(
        start: Start,
        rules: Arc<RuleSet>,
        counters: Box<dyn Counters + 'a>,
        sources: Vec<Box<dyn Source + 'a>>,
        sinks: Vec<Box<dyn Sink + 'a>>,
        timing: Timing,
    ) -> Self {
        let drained = vec![Drained::default(); sources.len()];
        let sinks = sinks
            .into_iter()
            .map(|sink| Slot {
                takes_packets: sink.takes_packets(),
                sink,
                packets: 0,
                failed: None,
            })
            .collect();
        let tally = RuleTally::new(Arc::clone(&rules), counters.rule_slots());
        let ifaces = if start.ifaces.is_empty() {
            Vec::new()
        } else {
            start.each()
        };
        let source_iface = sources
            .iter()
            .map(|s| ifaces.iter().position(|(_, i)| *i == s.ifindex()))
            .collect();
        Self {
            start,
            counters,
            sources,
            sinks,
            latency: Latency::new(),
            timing,
            drained,
            reloader: None,
            rules,
            tally,
            top: None,
            flows: false,
            ifaces,
            source_iface,
            clock: Clock::Live {
                started: Instant::now(),
            },
            requests: None,
            keep: None,
        }
    }

    /// The reading at the start of the run: nothing counted yet.
    fn first_mark(&self) -> Mark {
        let (at, ts) = self.clock.now();
        Mark {
            all: Part::default(),
            at: (Duration::ZERO, ts.saturating_sub(at)),
            each: vec![Part::default(); self.ifaces.len()],
        }
    }

    /// Hands the sinks every source's counts each interval, per interface
    /// ([`Interval::flows`]); the program must count them
    /// ([`crate::kernel::Settings::top`]).
    #[must_use]
    pub fn with_flows(mut self) -> Self {
        self.flows = true;
        self
    }

    /// Reports top talkers as `top` says (the program must count them:
    /// [`crate::kernel::Settings::top`]).
    #[must_use]
    pub fn with_top(mut self, top: TopTally) -> Self {
        self.top = Some(top);
        self
    }

    /// Reloads the rules as `reloader` asks.
    #[must_use]
    pub fn with_reloader(mut self, reloader: Reloader<'a>) -> Self {
        self.reloader = Some(reloader);
        self
    }

    /// Hands the sinks `count` captured packets, the first read, and then
    /// stops the run (`-c COUNT`).
    #[must_use]
    pub fn with_count(mut self, count: u64) -> Self {
        self.keep = Some(Keep {
            left: count,
            past: 0,
        });
        self
    }

    /// Why the run should stop now that it has read: an output is done, or
    /// `-c COUNT` packets were kept.
    fn done(&self) -> Option<Stop> {
        if self.keep.is_some_and(|k| k.left == 0) {
            Some(Stop::Count)
        } else if self.output_done() {
            Some(Stop::OutputDone)
        } else if self.reader_gone() {
            Some(Stop::ReaderGone)
        } else {
            None
        }
    }

    /// Whether standard output's reader left and no other output is still
    /// working. A full disk alone does not stop a run (it goes on counting
    /// and filtering); a reader that left ends the pipeline traffic wrote
    /// into, as it ends any command's.
    fn reader_gone(&self) -> bool {
        let mut closed = false;
        for slot in &self.sinks {
            match &slot.failed {
                Some(failed) => closed |= failed.error.is_closed_stdout(),
                None if slot.sink.is_output() => return false,
                None => {}
            }
        }
        closed
    }

    /// Answers `requests` as they come, and goes on.
    #[must_use]
    pub fn with_requests(mut self, requests: Requests) -> Self {
        self.requests = Some(requests);
        self
    }

    /// Answers a user's request.
    fn answer(&mut self, request: Request) -> Result<(), SessionError> {
        match request {
            Request::Status => self.say_status(),
            Request::WriteOut => {
                self.write_out();
                Ok(())
            }
        }
    }

    /// Has every output write out what it holds, so that its file is
    /// complete up to the last packet read; the run goes on. An output that
    /// fails is named now, and in the summary, as any failed output is.
    fn write_out(&mut self) {
        let mut failed = Vec::new();
        for slot in &mut self.sinks {
            let before = slot.failed.is_some();
            slot.call(|sink| sink.write_out());
            if let (false, Some(f)) = (before, &slot.failed) {
                failed.push(f.error.to_string());
            }
        }
        if failed.is_empty() {
            crate::say!(
                "traffic: SIGUSR2: the outputs hold every packet read so far; the run goes on"
            );
        }
        for error in failed {
            crate::say!("traffic: SIGUSR2: {error}; the run goes on without that output");
        }
    }

    /// The counts from the start to now, on stderr as the summary has them:
    /// a look at a run that goes on. The intervals do not change.
    fn say_status(&mut self) -> Result<(), SessionError> {
        let now = self.mark()?;
        let start = self.first_mark();
        let total = self.counts(&start, &now, 0);
        let total_each = self.counts_each(&start, &now, &[]);
        let queues: Vec<_> = self.sources.iter().flat_map(|s| s.queues()).collect();
        let summary = Summary {
            start: &self.start,
            counts: &total,
            latency: &self.latency,
            duration: now.at.0,
            queues: (!queues.is_empty()).then_some(queues.as_slice()),
            failed: &[],
            rules: &[],
            top: None,
            ifaces: &total_each,
        };
        crate::say!("traffic: SIGUSR1: the counts so far; the run goes on");
        let mut stderr =
            crate::sink::report::Reporter::new(io::stderr(), crate::sink::Format::Table, "stderr");
        // A status that cannot be written to stderr is not worth a failed run.
        let _ = stderr.finish(&summary);
        Ok(())
    }

    /// Ready when a reload has read its rules.
    async fn reload_read(reloader: &mut Option<Reloader<'a>>) -> reload::Read {
        match reloader {
            Some(r) => std::future::poll_fn(|cx| r.poll_read(cx)).await,
            None => std::future::pending().await,
        }
    }

    /// Puts the rules a reload read in force (or says why not) and tells
    /// every sink.
    fn reloaded(&mut self, read: reload::Read) {
        let Some(reloader) = &mut self.reloader else {
            return;
        };
        let (table, change, errors) = match read.result {
            Ok(new) => match swap(
                self.counters.as_mut(),
                self.tally.as_mut(),
                new.table,
                new.rules,
            ) {
                Ok((rules, half)) => {
                    reloader.rules = Arc::clone(&rules);
                    self.rules = rules;
                    (Some(half), new.change, Vec::new())
                }
                Err(e) => (
                    None,
                    Default::default(),
                    vec![crate::kernel::error_chain(&e)],
                ),
            },
            Err(errors) => (None, Default::default(), errors),
        };
        let (rules_v4, rules_v6) = reloader.rules.counts();
        let report = ReloadReport {
            trigger: read.trigger.to_owned(),
            at_s: self.clock.now().0.as_secs_f64(),
            ok: table.is_some(),
            took_ms: read.asked.elapsed().as_secs_f64() * 1e3,
            rules_v4,
            rules_v6,
            change,
            errors,
            table,
        };
        let rules = Arc::clone(&reloader.rules);
        for slot in &mut self.sinks {
            slot.call(|sink| sink.reload(&report, &rules));
        }
    }

    /// Reads source `i` into the sinks.
    fn drain_one(&mut self, i: usize) -> Result<(), SessionError> {
        let Self {
            sources,
            sinks,
            latency,
            clock,
            keep,
            ..
        } = self;
        let replayed = match *clock {
            Clock::File { now, .. } => Some(now),
            Clock::Live { .. } => None,
        };
        let mut deliver = |p: &Captured<'_>| {
            if let Some(k) = keep {
                if k.left == 0 {
                    k.past += 1;
                    return;
                }
                k.left -= 1;
            }
            // A recorded frame's packet happened at the frame's time, and
            // has no delivery latency to speak of.
            let mut at_frame;
            let p = match replayed {
                Some(ts) => {
                    at_frame = *p;
                    at_frame.ts = ts;
                    at_frame.latency_ns = None;
                    &at_frame
                }
                None => p,
            };
            latency.record_packet(p);
            for slot in sinks.iter_mut().filter(|s| s.takes_packets) {
                slot.packet(p);
            }
        };
        let d = sources[i].drain(&mut deliver)?;
        self.drained[i] += d;
        if d.delivered > 0 {
            for slot in &mut self.sinks {
                slot.call(|sink| sink.flush());
            }
        }
        Ok(())
    }

    /// Reads every source.
    fn drain_all(&mut self) -> Result<(), SessionError> {
        for i in 0..self.sources.len() {
            self.drain_one(i)?;
        }
        Ok(())
    }

    /// The index of a source with packets waiting.
    async fn ready(sources: &mut [Box<dyn Source + 'a>]) -> Result<usize, SessionError> {
        std::future::poll_fn(|cx| {
            for (i, s) in sources.iter_mut().enumerate() {
                match s.poll_ready(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Ok(i)),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(SessionError::from(e))),
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await
    }

    fn delivered(&self) -> u64 {
        self.drained.iter().map(|d| d.delivered).sum()
    }

    fn dropped(&self) -> u64 {
        self.sources.iter().map(|s| s.dropped()).sum()
    }

    /// Runs until `stop` completes, then stops the kernel side, reads what
    /// is left and finishes every sink.
    ///
    /// # Errors
    ///
    /// When a source, a sink, the counters or the timer fail. A run that
    /// lost packets is not an error: see [`Outcome::lost`].
    pub async fn run(mut self, stop: impl Future<Output = Stop>) -> Result<Outcome, SessionError> {
        let start = &self.start;
        for slot in &mut self.sinks {
            slot.call(|sink| sink.start(start));
        }
        let started = Instant::now();
        self.clock = Clock::Live { started };
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::from_std(started + self.timing.interval),
            self.timing.interval,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pace = Pace::new()?;
        let mut gather = self.counts_sources().then(|| {
            let every = Duration::from_millis(traffic_common::top::GATHER_EVERY_MS);
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        // The sources arrange to be woken (or timed) before the first read.
        pace.set(self.next_read())?;
        let mut last = self.first_mark();
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                ready = Self::ready(&mut self.sources) => {
                    self.drain_one(ready?)?;
                    pace.set(self.next_read())?;
                    if let Some(stop) = self.done() {
                        break self.finish(last, stop).await;
                    }
                }
                due = pace.due() => {
                    due?;
                    self.drain_all()?;
                    pace.set(self.next_read())?;
                    if let Some(stop) = self.done() {
                        break self.finish(last, stop).await;
                    }
                }
                _ = ticker.tick() => {
                    self.drain_all()?;
                    for source in &mut self.sources {
                        source.interval();
                    }
                    // The counters first, then the sources: every packet
                    // counted has its source logged by then (the program
                    // logs it first), and the interval's sources and
                    // counters cover the same packets but for those in
                    // flight.
                    let now = self.mark()?;
                    let top = self.collect_top();
                    self.report_interval(&last, &now, 0, top)?;
                    last = now;
                    if let Some(stop) = self.done() {
                        break self.finish(last, stop).await;
                    }
                }
                () = Self::gather_due(&mut gather) => self.counters.gather_sources(),
                read = Self::reload_read(&mut self.reloader) => self.reloaded(read),
                Some(r) = next_request(self.requests.as_mut()) => self.answer(r)?,
                stopped = &mut stop => break self.finish(last, stopped).await,
            }
        }
    }

    /// When to read next: the soonest any source asks for.
    fn next_read(&mut self) -> Next {
        self.sources
            .iter_mut()
            .fold(Next::Woken, |next, s| next.min(s.next_read()))
    }

    /// Whether a working output asks the run to stop.
    fn output_done(&self) -> bool {
        self.sinks
            .iter()
            .any(|s| s.failed.is_none() && s.sink.wants_stop())
    }

    /// A reading of everything the intervals are differences of.
    fn mark(&mut self) -> Result<Mark, SessionError> {
        let (stats, each) = self.counters.read_each().map_err(SessionError::Counters)?;
        Ok(self.mark_of(stats, &each))
    }

    /// The mark of counters `stats` (and `each` interface's), now.
    fn mark_of(&self, stats: Stats, each: &[Stats]) -> Mark {
        let mut parts: Vec<Part> = each
            .iter()
            .map(|&stats| Part {
                stats,
                ..Part::default()
            })
            .collect();
        for (i, source) in self.sources.iter().enumerate() {
            if let Some(part) = self.source_iface[i].and_then(|x| parts.get_mut(x)) {
                part.delivered += self.drained[i].delivered;
                part.dropped += source.dropped();
            }
        }
        Mark {
            all: Part {
                stats,
                delivered: self.delivered(),
                dropped: self.dropped(),
            },
            at: self.clock.now(),
            each: parts,
        }
    }

    /// The counts between two marks, `unread` more of them lost.
    fn counts(&self, from: &Mark, to: &Mark, unread: u64) -> Counts {
        counts_between(&from.all, &to.all, unread)
    }

    /// Each interface's counts between two marks, `unread[i]` more of
    /// interface i's lost; empty for a run on one interface.
    fn counts_each(&self, from: &Mark, to: &Mark, unread: &[u64]) -> Vec<IfaceCounts> {
        self.ifaces
            .iter()
            .enumerate()
            .filter_map(|(i, (iface, ifindex))| {
                let (a, b) = (from.each.get(i)?, to.each.get(i)?);
                Some(IfaceCounts {
                    iface: iface.clone(),
                    ifindex: *ifindex,
                    counts: counts_between(a, b, unread.get(i).copied().unwrap_or(0)),
                })
            })
            .collect()
    }

    /// Whether the kernel counts sources: for `--top` or `--ipfix`.
    fn counts_sources(&self) -> bool {
        self.top.is_some() || self.flows
    }

    /// Completes when the logs of sources are to be read (never when no
    /// source is counted).
    async fn gather_due(gather: &mut Option<tokio::time::Interval>) {
        match gather {
            Some(t) => {
                t.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// The sources counted since the last call (`--top`, `--ipfix`);
    /// `None` when sources are not counted.
    fn collect_top(&mut self) -> Option<Vec<Flow>> {
        if !self.counts_sources() {
            return None;
        }
        let mut sources = Vec::new();
        self.counters.take_sources(&mut |ifindex, key, count| {
            sources.push(Flow {
                ifindex,
                key: *key,
                count,
            });
        });
        Some(sources)
    }

    /// After the program stops: reads events while a packet may still be
    /// counted by a program run that began before ([`Counters::grace`]),
    /// then the sources.
    async fn collect_last_top(&mut self) -> Result<Option<Vec<Flow>>, SessionError> {
        if self.counts_sources() {
            let until = Instant::now() + self.counters.grace();
            while Instant::now() < until {
                self.drain_all()?;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(self.collect_top())
    }

    /// The per-rule counts since the last interval and the interval's top
    /// talkers (from `sources`), for `counts`.
    fn tallies(
        &mut self,
        counts: &Counts,
        flows: Option<&[Flow]>,
    ) -> Result<(Vec<RuleRow>, Option<TopReport>), SessionError> {
        let rules = match &mut self.tally {
            Some(t) => t
                .interval(self.counters.as_mut())
                .map_err(SessionError::Counters)?,
            None => Vec::new(),
        };
        let top = match (&mut self.top, flows) {
            (Some(top), Some(flows)) => {
                let sources = by_source(flows, !self.ifaces.is_empty());
                let untracked = Count {
                    packets: counts.untracked,
                    bytes: counts.untracked_bytes,
                };
                let total = sources.iter().map(|(_, c)| c.packets).sum::<u64>() + untracked.packets;
                Some(top.interval(sources, untracked, total, &self.rules))
            }
            _ => None,
        };
        Ok((rules, top))
    }

    fn report_interval(
        &mut self,
        from: &Mark,
        to: &Mark,
        unread: u64,
        flows: Option<Vec<Flow>>,
    ) -> Result<(), SessionError> {
        let counts = self.counts(from, to, unread);
        let ifaces = self.counts_each(from, to, &[]);
        let (rules, top) = self.tallies(&counts, flows.as_deref())?;
        self.emit_interval(
            from,
            to,
            &counts,
            &ifaces,
            &rules,
            top.as_ref(),
            flows.as_deref(),
        );
        Ok(())
    }

    /// Hands one interval to every sink.
    #[allow(clippy::too_many_arguments)]
    fn emit_interval(
        &mut self,
        from: &Mark,
        to: &Mark,
        counts: &Counts,
        ifaces: &[IfaceCounts],
        rules: &[RuleRow],
        top: Option<&TopReport>,
        flows: Option<&[Flow]>,
    ) {
        let latency = self.latency.take_interval();
        let queues: Vec<_> = self.sources.iter().flat_map(|s| s.queues()).collect();
        let interval = Interval {
            counts,
            latency: &latency,
            length: to.at.0.saturating_sub(from.at.0),
            at: to.at.0,
            ts: to.at.1,
            rules,
            top,
            ifaces,
            flows: flows.filter(|_| self.flows),
            latency_run: self.latency.run_histogram(),
            latency_sum_s: self.latency.sum_s(),
            queues: &queues,
        };
        for slot in &mut self.sinks {
            slot.call(|sink| sink.interval(&interval));
        }
    }

    /// Reads until each source has what the kernel had handed it by the
    /// reading `end` (`each` interface's), or [`Timing::exit_drain`]
    /// passes. Returns how many never arrived, in all and per interface.
    async fn drain_to_end(
        &mut self,
        end: &Stats,
        each: &[Stats],
    ) -> Result<(u64, Vec<u64>), SessionError> {
        let deadline = Instant::now() + self.timing.exit_drain;
        loop {
            self.drain_all()?;
            let mut per_iface = vec![0; self.ifaces.len()];
            let mut missing = 0;
            for (i, (s, d)) in self.sources.iter().zip(&self.drained).enumerate() {
                let iface = self.source_iface[i];
                let stats = iface.and_then(|x| each.get(x)).unwrap_or(end);
                let m = s
                    .handed_over(stats)
                    .saturating_sub(d.delivered + d.undecodable);
                missing += m;
                if let Some(x) = iface {
                    per_iface[x] += m;
                }
            }
            if missing == 0 || Instant::now() > deadline {
                return Ok((missing, per_iface));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Stops the kernel side, reads what it handed over, reports the last
    /// interval and the summary.
    async fn finish(mut self, last: Mark, stopped: Stop) -> Result<Outcome, SessionError> {
        // Stop before the last reading, so that no packet is counted after
        // it, then read every packet the kernel handed over.
        self.counters.stop();
        let flows = self.collect_last_top().await?;
        let (end_stats, end_each) = self.counters.read_each().map_err(SessionError::Counters)?;
        let (unread, unread_each) = self.drain_to_end(&end_stats, &end_each).await?;
        if let Some(k) = self.keep.filter(|k| k.left == 0 && k.past > 0) {
            crate::say!(
                "traffic: -c: {} more captured packets arrived before the program stopped, and were not kept",
                k.past
            );
        }
        let end = self.mark_of(end_stats, &end_each);
        let tail = self.counts(&last, &end, unread);
        let tail_each = self.counts_each(&last, &end, &unread_each);
        // Read whether or not the tail is reported: the summary's per-rule
        // and per-source counts include it.
        let (tail_rules, tail_top) = self.tallies(&tail, flows.as_deref())?;
        if tail != Counts::default() || end.at.0 - last.at.0 >= self.timing.interval / 2 {
            self.emit_interval(
                &last,
                &end,
                &tail,
                &tail_each,
                &tail_rules,
                tail_top.as_ref(),
                flows.as_deref(),
            );
        }
        let start = self.first_mark();
        let total = self.counts(&start, &end, unread);
        let total_each = self.counts_each(&start, &end, &unread_each);
        let queues: Vec<_> = self.sources.iter().flat_map(|s| s.queues()).collect();
        // Outputs that failed are reported by those still working; one that
        // fails while finishing is reported by the caller.
        let failed: Vec<FailedOutput> = self
            .sinks
            .iter()
            .filter_map(|slot| slot.failed.as_ref().map(Failed::report))
            .collect();
        let rules = self
            .tally
            .as_ref()
            .map(RuleTally::totals)
            .unwrap_or_default();
        let top = self.top.as_ref().map(|t| {
            let counted = t.counted();
            t.summary(counted, &self.rules)
        });
        let summary = Summary {
            start: &self.start,
            counts: &total,
            latency: &self.latency,
            duration: end.at.0,
            queues: (!queues.is_empty()).then_some(queues.as_slice()),
            failed: &failed,
            rules: &rules,
            top: top.as_ref(),
            ifaces: &total_each,
        };
        for slot in &mut self.sinks {
            slot.call(|sink| sink.finish(&summary));
        }
        Ok(Outcome {
            stopped,
            total,
            undecodable: self.drained.iter().map(|d| d.undecodable).sum(),
            unread,
            failed: self.sinks.into_iter().filter_map(|s| s.failed).collect(),
            socket_drops: end.all.dropped,
        })
    }
}

/// A reading taken at an interval's edge.
#[derive(Clone, Debug)]
struct Mark {
    /// What every program and source had counted.
    all: Part,
    /// When: since the start of the run, and as Unix time ([`Clock::now`]).
    at: (Duration, Duration),
    /// Each interface's part, in a run on more than one.
    each: Vec<Part>,
}

/// What the programs and sources of the run, or of one interface, had
/// counted at a mark.
#[derive(Clone, Copy, Debug, Default)]
struct Part {
    stats: Stats,
    /// Packets its sources delivered.
    delivered: u64,
    /// Packets its sources dropped (AF_XDP).
    dropped: u64,
}

/// The counts between two readings, `unread` more of them lost: the
/// kernel's, but `events` is what the sources delivered and `events_lost`
/// all they lost.
fn counts_between(from: &Part, to: &Part, unread: u64) -> Counts {
    let mut counts = to.stats.since(&from.stats);
    counts.events = to.delivered - from.delivered;
    counts.events_lost += counts.xsk_unbound + (to.dropped - from.dropped) + unread;
    counts
}

/// The packets and bytes of each source in `flows`, summed over the
/// interfaces when `merge` (a run on more than one).
fn by_source(flows: &[Flow], merge: bool) -> Vec<(TopKey, Count)> {
    if !merge {
        return flows.iter().map(|f| (f.key, f.count)).collect();
    }
    let mut sum: std::collections::HashMap<TopKey, Count> =
        std::collections::HashMap::with_capacity(flows.len());
    for f in flows {
        sum.entry(f.key).or_default().add(&f.count);
    }
    sum.into_iter().collect()
}

#[cfg(test)]
mod tests;
