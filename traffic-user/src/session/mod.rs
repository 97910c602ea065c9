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
//! # Reading without spinning
//!
//! The kernel wakes the reader as the XDP program decides (see `emit` in
//! the program): for every event at low rates, at most once per wake-up
//! interval per CPU at high rates, or as soon as a quarter of the ring is
//! full. After each batch the session arms a one-shot timer of the same
//! interval to pick up events whose wake-up was skipped; when the sources
//! are idle, nothing runs.

pub mod setup;

use std::{
    future::Future,
    io,
    task::Poll,
    time::{Duration, Instant},
};

use tokio::io::{Interest, unix::AsyncFd};
use traffic_common::Stats;

use crate::{
    kernel::{Engine, EngineError},
    sink::{Counts, Interval, Latency, Sink, SinkError, Start, Summary},
    source::{Captured, Drained, Halt, Source, SourceError, clock::TimerFd},
};

pub use setup::{SetupError, watch};

/// The kernel's packet counters, as a session reads them.
pub trait Counters {
    /// The counters now, summed over all CPUs.
    ///
    /// # Errors
    ///
    /// When they cannot be read.
    fn read(&mut self) -> Result<Stats, EngineError>;

    /// Stops the kernel from counting more packets (detaches the program).
    fn stop(&mut self);
}

impl Counters for Engine {
    fn read(&mut self) -> Result<Stats, EngineError> {
        self.stats()
    }

    fn stop(&mut self) {
        self.detach();
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
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

/// How a run ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The counts since the start, as in the summary.
    pub total: Counts,
    /// Records no source could decode (never expected).
    pub undecodable: u64,
    /// Packets handed to a source that were still unread when the run
    /// gave up waiting for them (included in `total.events_lost`).
    pub unread: u64,
}

impl Outcome {
    /// Capture events lost in any way: the kernel could not write them, a
    /// socket dropped them, they were never read, or could not be decoded.
    pub fn lost(&self) -> u64 {
        self.total.events_lost + self.undecodable
    }

    /// The exit status: 0, or 1 when capture events were lost.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.lost() > 0)
    }
}

/// How long the end of a run waits for packets the kernel handed over but
/// the sources have not yet read ([`Timing::exit_drain`]).
pub const EXIT_DRAIN: Duration = Duration::from_secs(2);

/// The one-shot timer that reads packets whose wake-up the program skipped.
struct Straggler {
    fd: AsyncFd<TimerFd>,
    armed: bool,
    interval: Duration,
}

impl Straggler {
    fn new(interval: Duration) -> Result<Self, SessionError> {
        let timer = TimerFd::new().map_err(SessionError::Timer)?;
        // SAFETY: the TimerFd owns its fd for as long as the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register_with_interest(timer, Interest::READABLE) }
            .map_err(|e| SessionError::Timer(io::Error::from(e)))?;
        Ok(Self {
            fd,
            armed: false,
            interval,
        })
    }

    /// After a batch of `n` packets: arm the timer unless it is armed
    /// already (arming is a syscall, and batches come as often as the kernel
    /// wakes us) or nothing came.
    fn after_batch(&mut self, n: u64) -> Result<(), SessionError> {
        if n > 0 && !self.armed && !self.interval.is_zero() {
            self.fd
                .get_ref()
                .arm(self.interval)
                .map_err(SessionError::Timer)?;
            self.armed = true;
        }
        Ok(())
    }

    async fn fired(&mut self) -> Result<(), SessionError> {
        let mut guard = self.fd.readable().await.map_err(SessionError::Timer)?;
        guard.get_inner().clear();
        guard.clear_ready();
        self.armed = false;
        Ok(())
    }
}

/// The settings of a run's loop.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Between reports.
    pub interval: Duration,
    /// The wake-up bound: after a batch, read again this soon (zero: the
    /// kernel wakes the reader for every packet, no timer is needed).
    pub wakeup: Duration,
    /// At the end, how long to wait for packets the kernel handed over but
    /// the sources have not yet read; what is still missing then is lost.
    pub exit_drain: Duration,
}

/// A run: counters and sources driven into sinks.
pub struct Session<'a> {
    start: Start,
    counters: Box<dyn Counters + 'a>,
    sources: Vec<Box<dyn Source + 'a>>,
    sinks: Vec<Box<dyn Sink + 'a>>,
    latency: Latency,
    timing: Timing,
    /// Delivered and undecodable, per source, since the start.
    drained: Vec<Drained>,
}

impl<'a> Session<'a> {
    /// A session that reports `start` and reads `counters` and `sources`
    /// into `sinks`.
    pub fn new(
        start: Start,
        counters: Box<dyn Counters + 'a>,
        sources: Vec<Box<dyn Source + 'a>>,
        sinks: Vec<Box<dyn Sink + 'a>>,
        timing: Timing,
    ) -> Self {
        let drained = vec![Drained::default(); sources.len()];
        Self {
            start,
            counters,
            sources,
            sinks,
            latency: Latency::new(),
            timing,
            drained,
        }
    }

    /// Reads source `i` into the sinks. Returns how many packets it read.
    fn drain_one(&mut self, i: usize, timed: bool) -> Result<u64, SessionError> {
        let Self {
            sources,
            sinks,
            latency,
            ..
        } = self;
        // A sink's error stops the read; the source only learns that.
        let mut failed = None;
        let mut deliver = |p: &Captured<'_>| -> Result<(), Halt> {
            let delivered = latency
                .packet(p)
                .and_then(|()| sinks.iter_mut().try_for_each(|sink| sink.packet(p)));
            delivered.map_err(|e| {
                failed = Some(e);
                Halt
            })
        };
        let drained = sources[i].drain(timed, &mut deliver);
        if let Some(e) = failed {
            return Err(e.into());
        }
        let d = drained?;
        self.drained[i] += d;
        if d.delivered > 0 {
            for sink in &mut self.sinks {
                sink.flush()?;
            }
        }
        Ok(d.delivered)
    }

    /// Reads every source. Returns how many packets they read.
    fn drain_all(&mut self, timed: bool) -> Result<u64, SessionError> {
        let mut n = 0;
        for i in 0..self.sources.len() {
            n += self.drain_one(i, timed)?;
        }
        Ok(n)
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
    pub async fn run(mut self, stop: impl Future<Output = ()>) -> Result<Outcome, SessionError> {
        for sink in &mut self.sinks {
            sink.start(&self.start)?;
        }
        let started = Instant::now();
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::from_std(started + self.timing.interval),
            self.timing.interval,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut straggler = Straggler::new(self.timing.wakeup)?;
        let mut last = Mark {
            stats: Stats::default(),
            at: started,
            delivered: 0,
            dropped: 0,
        };
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                ready = Self::ready(&mut self.sources) => {
                    let n = self.drain_one(ready?, false)?;
                    straggler.after_batch(n)?;
                }
                fired = straggler.fired() => {
                    fired?;
                    let n = self.drain_all(true)?;
                    straggler.after_batch(n)?;
                }
                _ = ticker.tick() => {
                    self.drain_all(true)?;
                    for source in &mut self.sources {
                        source.interval();
                    }
                    let now = self.mark()?;
                    self.report_interval(&last, &now, started, 0)?;
                    last = now;
                }
                () = &mut stop => break,
            }
        }
        self.finish(started, last).await
    }

    /// A reading of everything the intervals are differences of.
    fn mark(&mut self) -> Result<Mark, SessionError> {
        Ok(Mark {
            stats: self.counters.read().map_err(SessionError::Counters)?,
            at: Instant::now(),
            delivered: self.delivered(),
            dropped: self.dropped(),
        })
    }

    /// The counts between two marks, `unread` more of them lost.
    fn counts(&self, from: &Mark, to: &Mark, unread: u64) -> Counts {
        let mut counts = to.stats.since(&from.stats);
        counts.events = to.delivered - from.delivered;
        counts.events_lost += counts.xsk_unbound + (to.dropped - from.dropped) + unread;
        counts
    }

    fn report_interval(
        &mut self,
        from: &Mark,
        to: &Mark,
        started: Instant,
        unread: u64,
    ) -> Result<(), SessionError> {
        let counts = self.counts(from, to, unread);
        let latency = self.latency.take_interval();
        let interval = Interval {
            counts: &counts,
            latency: &latency,
            length: to.at - from.at,
            at: to.at - started,
        };
        for sink in &mut self.sinks {
            sink.interval(&interval)?;
        }
        Ok(())
    }

    /// Stops the kernel side, reads what it handed over, reports the last
    /// interval and the summary.
    async fn finish(mut self, started: Instant, last: Mark) -> Result<Outcome, SessionError> {
        // Stop before the last reading, so that no packet is counted after
        // it, then read every packet the kernel handed over.
        self.counters.stop();
        let end_stats = self.counters.read().map_err(SessionError::Counters)?;
        let deadline = Instant::now() + self.timing.exit_drain;
        let unread = loop {
            self.drain_all(true)?;
            let missing: u64 = self
                .sources
                .iter()
                .zip(&self.drained)
                .map(|(s, d)| {
                    s.handed_over(&end_stats)
                        .saturating_sub(d.delivered + d.undecodable)
                })
                .sum();
            if missing == 0 || Instant::now() > deadline {
                break missing;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let end = Mark {
            stats: end_stats,
            at: Instant::now(),
            delivered: self.delivered(),
            dropped: self.dropped(),
        };
        let tail = self.counts(&last, &end, unread);
        if tail != Counts::default() || end.at - last.at >= self.timing.interval / 2 {
            self.report_interval(&last, &end, started, unread)?;
        }
        let start = Mark {
            stats: Stats::default(),
            at: started,
            delivered: 0,
            dropped: 0,
        };
        let total = self.counts(&start, &end, unread);
        let queues: Vec<_> = self.sources.iter().flat_map(|s| s.queues()).collect();
        let summary = Summary {
            start: &self.start,
            counts: &total,
            latency: &self.latency,
            duration: end.at - started,
            queues: (!queues.is_empty()).then_some(queues.as_slice()),
        };
        for sink in &mut self.sinks {
            sink.finish(&summary)?;
        }
        Ok(Outcome {
            total,
            undecodable: self.drained.iter().map(|d| d.undecodable).sum(),
            unread,
        })
    }
}

/// A reading taken at an interval's edge.
#[derive(Clone, Copy, Debug)]
struct Mark {
    stats: Stats,
    at: Instant,
    delivered: u64,
    dropped: u64,
}

#[cfg(test)]
mod tests;
