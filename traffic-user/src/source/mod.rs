//! Sources: where captured packets come from.
//!
//! - [`ringbuf`]: events from the XDP program's BPF ring buffer (metadata
//!   and the first `--snaplen` bytes).
//! - [`afxdp`]: whole frames from AF_XDP sockets, one per receive queue.
//! - [`recorded`]: frames out of pcap and pcapng files (`--read`), which a
//!   session runs through the program rather than reading as captured.
//! - [`explain`]: no packets, but the program's words on malformed and
//!   non-IP frames (`--explain`).
//!
//! A session waits on every source at once ([`Source::poll_ready`]), reads
//! what is waiting ([`Source::drain`]) and hands each packet, as a
//! [`Captured`], to its sinks. At exit it drains until each source has what
//! the kernel says it handed over ([`Source::handed_over`]); what never
//! arrives is counted as lost.

pub mod afxdp;
pub mod clock;
pub mod explain;
pub mod pace;
pub mod recorded;
pub mod ringbuf;

use std::{
    io,
    task::{Context, Poll},
    time::Duration,
};

use traffic_common::{NO_RULE, Stats};

use serde::{Deserialize, Serialize};

use crate::{packet::Packet, rules::Action};
use pace::Next;

/// One captured packet, as every sink sees it.
#[derive(Clone, Copy, Debug)]
pub struct Captured<'a> {
    /// The XDP program's verdict on the frame ([`traffic_common::event_flags`]),
    /// when it sent one. Addresses and ports are in `data`, which
    /// [`Captured::packet`] parses only when a sink asks, so that writing
    /// packets to pcap parses nothing.
    pub flags: Option<u8>,
    /// The captured bytes: the first snaplen bytes, or the whole frame.
    pub data: &'a [u8],
    /// The frame's length on the wire.
    pub wire_len: u32,
    /// Unix time at the XDP hook.
    pub ts: Duration,
    /// From the XDP hook to userspace's read, when the hook's time is known.
    pub latency_ns: Option<u64>,
    /// The interface the frame arrived on (0 when unknown).
    pub ifindex: u32,
    /// Its receive queue.
    pub rx_queue: u32,
    /// The action the frame got.
    pub action: Option<Action>,
    /// The index of the rule that matched, as the kernel reported it, or
    /// `None` for the default action.
    pub rule: Option<u32>,
    /// Whether `--sample` chose the frame rather than a capture rule.
    pub sampled: bool,
}

impl Captured<'_> {
    /// What is in the frame: the userspace parser's reading of the captured
    /// bytes (which agrees with the program's), with the program's verdict
    /// on the whole frame when it sent one.
    pub fn packet(&self) -> Packet {
        match self.flags {
            Some(flags) => Packet::from_capture(self.data, self.wire_len, flags),
            None => crate::packet::parse(self.data),
        }
    }
}

/// Registers `io` with the reactor for readability, as `what` in errors.
///
/// # Safety
///
/// `io` must own its file descriptor, open and the same, for as long as the
/// returned `AsyncFd` owns `io` (tokio's requirement).
unsafe fn watch<T: std::os::fd::AsRawFd>(
    io: T,
    what: &'static str,
) -> Result<tokio::io::unix::AsyncFd<T>, SourceError> {
    // SAFETY: the caller's guarantee.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(io, tokio::io::Interest::READABLE) }
        .map_err(|source| SourceError::Poll {
            what,
            source: io::Error::from(source),
        })
}

/// Whether `fd` is readable. Readiness is cleared before the read that
/// follows, so that data arriving during that read makes it readable again
/// instead of waiting.
fn poll_readable<T: std::os::fd::AsRawFd>(
    fd: &mut tokio::io::unix::AsyncFd<T>,
    what: &'static str,
    cx: &mut Context<'_>,
) -> Poll<Result<(), SourceError>> {
    match fd.poll_read_ready_mut(cx) {
        Poll::Ready(Ok(mut guard)) => {
            guard.clear_ready();
            Poll::Ready(Ok(()))
        }
        Poll::Ready(Err(source)) => Poll::Ready(Err(SourceError::Poll { what, source })),
        Poll::Pending => Poll::Pending,
    }
}

/// A rule id from the kernel as an index.
pub(crate) fn rule_index(id: u32) -> Option<u32> {
    (id != NO_RULE).then_some(id)
}

/// What one drain read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Packets handed to the sinks.
    pub delivered: u64,
    /// Records that could not be decoded (counted, never expected).
    pub undecodable: u64,
}

impl std::ops::AddAssign for Drained {
    fn add_assign(&mut self, other: Self) {
        self.delivered += other.delivered;
        self.undecodable += other.undecodable;
    }
}

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Waiting on a file descriptor failed.
    #[error("polling {what}")]
    Poll {
        /// What was polled.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// One AF_XDP socket's counts, in the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueReport {
    /// The interface of the queue.
    #[serde(default)]
    pub ifindex: u32,
    /// The receive queue.
    pub queue: u32,
    /// Frames delivered.
    pub delivered: u64,
    /// Frames the kernel dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Frames the kernel dropped for other reasons (no fill-ring frame).
    pub rx_dropped: u64,
    /// Times the kernel found the fill ring empty.
    pub fill_ring_empty: u64,
}

/// Where captured packets come from.
pub trait Source {
    /// Whether packets may be waiting. Readiness is consumed: a packet that
    /// arrives after this returned makes the source ready again.
    ///
    /// # Errors
    ///
    /// When the reactor cannot poll the source.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SourceError>>;

    /// Reads every packet waiting and hands each to `deliver`.
    ///
    /// # Errors
    ///
    /// A failure of the source itself.
    fn drain(&mut self, deliver: &mut dyn FnMut(&Captured<'_>)) -> Result<Drained, SourceError>;

    /// How many packets the kernel had handed to this source by the counter
    /// reading `stats`, whether or not they have been read yet.
    fn handed_over(&self, stats: &Stats) -> u64;

    /// Packets lost between the kernel and this source that the program's
    /// counters do not show (AF_XDP socket drops), so far.
    fn dropped(&self) -> u64 {
        0
    }

    /// After a drain: when to read this source next. A source that answers
    /// [`Next::Woken`] has arranged to become ready ([`Source::poll_ready`])
    /// when a packet arrives.
    fn next_read(&mut self) -> Next {
        Next::Woken
    }

    /// Called once per report interval: a time for upkeep such as following
    /// NTP adjustments of the wall clock.
    fn interval(&mut self) {}

    /// Per-queue counts, for sources that read receive queues.
    fn queues(&self) -> Vec<QueueReport> {
        Vec::new()
    }

    /// The interface whose program hands this source its packets (0 when
    /// none: the source counts against no interface).
    fn ifindex(&self) -> u32 {
        0
    }
}
