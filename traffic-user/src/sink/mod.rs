//! Sinks: where a run's packets and counts go.
//!
//! Every output is a [`Sink`], driven by the session the way a search
//! tool's searcher drives its sink: [`Sink::start`] once the program is
//! attached, [`Sink::packet`] for each captured packet, [`Sink::flush`] after
//! each batch, [`Sink::interval`] every report interval and
//! [`Sink::finish`] at the end, however the run ended.
//!
//! - [`report`]: the interval table or JSON lines, and the summary;
//!   [`json`] holds the JSON lines' types.
//! - [`latency`]: delivery-latency histograms.
//! - [`pcap`]: a pcap file of the captured packets.
//! - [`print`](mod@print): one line (or JSON object) per packet.
//! - [`plot`]: an SVG of the run.
//! - [`metrics`]: Prometheus metrics over HTTP (`--metrics`).
//! - [`ipfix`]: IPFIX flow records to a collector (`--ipfix`).

pub mod direct;
pub mod file;
pub mod ipfix;
pub mod json;
pub mod latency;
pub mod metrics;
pub mod pcap;
pub mod plot;
pub mod print;
pub mod report;

use std::{io, sync::Arc, time::Duration};

use hdrhistogram::Histogram;
use traffic_common::{Count, TopKey};

use crate::{rules::RuleSet, source::Captured};

pub use crate::source::QueueReport;
pub use json::{ReloadReport, Start};
pub use latency::{Latency, Percentiles};

/// The counters of a report: the kernel's counters, named as in the JSON
/// output, except that `events` is what userspace received (ring-buffer
/// events and AF_XDP frames) and `events_lost` also counts what AF_XDP
/// could not deliver and what was never read.
pub type Counts = traffic_common::Stats;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A table for people.
    Table,
    /// One JSON object per line.
    Json,
}

/// Why a sink could not take what it was given.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing an output failed.
    #[error("writing {what} failed")]
    Write {
        /// The output: `stdout`, `the plot run.svg`...
        what: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing the pcap file failed.
    #[error(transparent)]
    Pcap(#[from] pcap::PcapError),
}

impl SinkError {
    /// Whether the output was standard output and its reader went away
    /// (EPIPE), as when traffic is piped into `head`: not a failure, as
    /// for other command-line tools. A named FIFO whose reader leaves is one.
    pub fn is_closed_stdout(&self) -> bool {
        let (stdout, source) = match self {
            SinkError::Write { what, source } => (what == "stdout", source),
            SinkError::Pcap(pcap::PcapError::Io { path, source }) => {
                (path.as_os_str() == "-", source)
            }
            SinkError::Pcap(_) => return false,
        };
        stdout && source.kind() == io::ErrorKind::BrokenPipe
    }

    /// A [`SinkError::Write`] for `what`.
    pub fn write(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |source| SinkError::Write { what, source }
    }
}

/// One report interval.
#[derive(Clone, Copy, Debug)]
pub struct Interval<'a> {
    /// The counts of the interval (deltas).
    pub counts: &'a Counts,
    /// Delivery latency of the packets delivered in the interval.
    pub latency: &'a Percentiles,
    /// How long the interval was.
    pub length: Duration,
    /// When it ended, since the start of the run.
    pub at: Duration,
    /// When it ended, as Unix time: the clock's, or with `--read` the
    /// file's.
    pub ts: Duration,
    /// Packets and bytes per rule in the interval, busiest first; empty
    /// when rules are not counted.
    pub rules: &'a [json::RuleRow],
    /// The interval's top talkers (`--top`).
    pub top: Option<&'a json::TopReport>,
    /// Each interface's counts, when the run has more than one.
    pub ifaces: &'a [IfaceCounts],
    /// Every source counted in the interval, per interface (`--ipfix`):
    /// with the untracked packets of `counts` (or of each of `ifaces`),
    /// they add up to the IP packets of the interval.
    pub flows: Option<&'a [Flow]>,
    /// Delivery latency over the run so far, this interval included.
    pub latency_run: &'a Histogram<u64>,
    /// The sum of those latencies, in seconds.
    pub latency_sum_s: f64,
    /// AF_XDP per-queue counts since the start (`--afxdp`).
    pub queues: &'a [QueueReport],
}

/// One interface's counts, in a run on several (`ifaces` arrays).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IfaceCounts {
    /// The interface.
    pub iface: String,
    /// Its index.
    pub ifindex: u32,
    /// Its counts, as the run's.
    #[serde(flatten)]
    pub counts: Counts,
}

/// The packets and bytes of one source (or `--top-prefix` prefix) on one
/// interface in one interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The interface it arrived on.
    pub ifindex: u32,
    /// The source.
    pub key: TopKey,
    /// Its packets and bytes.
    pub count: Count,
}

/// The end of a run.
#[derive(Clone, Copy)]
pub struct Summary<'a> {
    /// What was attached where.
    pub start: &'a Start,
    /// The counts since the start; the intervals add up to them.
    pub counts: &'a Counts,
    /// Delivery latency over the whole run.
    pub latency: &'a Latency,
    /// How long the run was.
    pub duration: Duration,
    /// Per-queue counts, with AF_XDP.
    pub queues: Option<&'a [QueueReport]>,
    /// Outputs that failed during the run.
    pub failed: &'a [FailedOutput],
    /// Packets and bytes per rule over the run, busiest first.
    pub rules: &'a [json::RuleRow],
    /// The run's top talkers (`--top`).
    pub top: Option<&'a json::TopReport>,
    /// Each interface's counts, when the run has more than one.
    pub ifaces: &'a [IfaceCounts],
}

/// An output that failed during a run, as the summary reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailedOutput {
    /// What failed and why: `writing the pcap file out.pcap failed: No
    /// space left on device`.
    pub error: String,
    /// Packets it had taken before it failed.
    pub packets_written: u64,
    /// Packets it missed after.
    pub packets_not_written: u64,
}

/// An output of a run. Every method has a default that does nothing, so a
/// sink implements only what it uses.
pub trait Sink {
    /// The program is attached.
    ///
    /// # Errors
    ///
    /// When the sink cannot write.
    fn start(&mut self, start: &Start) -> Result<(), SinkError> {
        let _ = start;
        Ok(())
    }

    /// One captured packet.
    ///
    /// # Errors
    ///
    /// When the sink cannot write.
    fn packet(&mut self, packet: &Captured<'_>) -> Result<(), SinkError> {
        let _ = packet;
        Ok(())
    }

    /// Packets it has kept for good, when it can tell: after a failed write,
    /// a file holds fewer than it was given (those still in its buffers).
    /// `None`: every packet it was given until it failed.
    fn kept(&self) -> Option<u64> {
        None
    }

    /// Whether this sink looks at packets one by one: a run hands packets
    /// only to the sinks that do (a call per packet and sink adds up at a
    /// million packets a second). Say `false` when [`Sink::packet`] is not
    /// implemented.
    fn takes_packets(&self) -> bool {
        true
    }

    /// A batch of packets has been handed over: push out what a reader is
    /// waiting for.
    ///
    /// # Errors
    ///
    /// When the sink cannot write.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Write out everything held, so that the output is complete up to
    /// here; the run goes on (SIGUSR2, as tcpdump has it).
    ///
    /// # Errors
    ///
    /// When the sink cannot write.
    fn write_out(&mut self) -> Result<(), SinkError> {
        self.flush()
    }

    /// One report interval has ended.
    ///
    /// # Errors
    ///
    /// When the sink cannot write.
    fn interval(&mut self, interval: &Interval<'_>) -> Result<(), SinkError> {
        let _ = interval;
        Ok(())
    }

    /// The run has ended.
    ///
    /// # Errors
    ///
    /// When the sink cannot write.
    fn finish(&mut self, summary: &Summary<'_>) -> Result<(), SinkError> {
        let _ = summary;
        Ok(())
    }

    /// The rules were read again: `rules` is the set in force now (the old
    /// one when the reload was refused).
    ///
    /// # Errors
    ///
    /// When the sink cannot write.
    fn reload(&mut self, report: &ReloadReport, rules: &Arc<RuleSet>) -> Result<(), SinkError> {
        let _ = (report, rules);
        Ok(())
    }

    /// Whether this output has done its job and the run should stop, as
    /// after `-G` and `-W` files.
    fn wants_stop(&self) -> bool {
        false
    }

    /// Whether it writes where someone reads (a file, a terminal, a pipe,
    /// a collector): `false` for a measure the run keeps for the others.
    /// A run whose standard output's reader left, with no such sink still
    /// working, stops.
    fn is_output(&self) -> bool {
        true
    }
}
