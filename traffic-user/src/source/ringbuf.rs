//! The ring-buffer source: capture events from the XDP program.
//!
//! # Ring buffer, not perf buffer
//!
//! A BPF ring buffer is one buffer shared by all CPUs, so events keep their
//! order across CPUs and memory is not reserved per CPU; a record is reserved,
//! filled in place and committed, with no copy through the stack. The perf
//! buffer it replaces needs one buffer per CPU and a copy per event.
//!
//! # Reading without spinning
//!
//! The reader waits on the ring's file descriptor with tokio's `AsyncFd`; the
//! kernel wakes it as the program decides (see `emit` in the XDP program):
//! for every event at low rates, at most once per wake-up interval per CPU at
//! high rates, or as soon as a quarter of the ring is full. After each batch
//! the reader arms a one-shot timer of the same interval to pick up events
//! whose wake-up was skipped; when the ring is idle, nothing runs.
//!
//! # Examples
//!
//! ```
//! use traffic::source::ringbuf::decode;
//! use traffic_common::EventHeader;
//!
//! let header = EventHeader { cap_len: 2, wire_len: 60, ..EventHeader::default() };
//! let mut record = bytemuck::bytes_of(&header).to_vec();
//! record.extend_from_slice(&[0xaa, 0xbb, 0, 0]); // the ring pads records
//! let event = decode(&record).unwrap();
//! assert_eq!(event.data, [0xaa, 0xbb]);
//! ```

use std::task::{Context, Poll};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use traffic_common::{EventHeader, Stats, event_flags};

use super::{
    Captured, Drained, Source, SourceError,
    clock::{WallClock, monotonic_ns},
    poll_readable, rule_index, watch,
};
use crate::{packet::Packet, rules::Action};

/// One capture event: the program's metadata and the captured bytes.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a> {
    /// What the program recorded.
    pub header: EventHeader,
    /// The first `header.cap_len` bytes of the frame.
    pub data: &'a [u8],
}

/// Reads an event out of a ring-buffer record, or `None` when the record is
/// too short for its header and the length it announces.
pub fn decode(record: &[u8]) -> Option<Event<'_>> {
    let size = size_of::<EventHeader>();
    let header: EventHeader = bytemuck::pod_read_unaligned(record.get(..size)?);
    let data = record.get(size..size + header.cap_len as usize)?;
    Some(Event { header, data })
}

impl<'a> Event<'a> {
    /// The event as sinks see it, read at `read_ns` (monotonic).
    pub fn captured(&self, clock: &WallClock, read_ns: u64) -> Captured<'a> {
        let h = &self.header;
        Captured {
            described: Some(Packet::from_event(h)),
            data: self.data,
            wire_len: h.wire_len,
            ts: clock.unix(h.ts_ns),
            latency_ns: Some(read_ns.saturating_sub(h.ts_ns)),
            ifindex: h.ifindex,
            rx_queue: h.rx_queue,
            action: Action::from_kernel(h.action),
            rule: rule_index(h.rule_id),
            sampled: h.flags & event_flags::SAMPLED != 0,
        }
    }
}

const WHAT: &str = "the event ring buffer";

/// The event ring buffer, watched by the reactor.
pub struct RingSource {
    ring: AsyncFd<RingBuf<MapData>>,
    clock: WallClock,
}

impl RingSource {
    /// Watches `ring`.
    ///
    /// # Errors
    ///
    /// When the reactor cannot poll it.
    pub fn new(ring: RingBuf<MapData>) -> Result<Self, SourceError> {
        // SAFETY: the ring buffer owns its map fd, which stays open and the
        // same for as long as the RingBuf lives, and the AsyncFd owns the
        // RingBuf.
        let ring = unsafe { watch(ring, WHAT) }?;
        Ok(Self {
            ring,
            clock: WallClock::new(),
        })
    }
}

impl Source for RingSource {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SourceError>> {
        poll_readable(&mut self.ring, WHAT, cx)
    }

    fn drain(
        &mut self,
        _timed: bool,
        deliver: &mut dyn FnMut(&Captured<'_>),
    ) -> Result<Drained, SourceError> {
        let mut drained = Drained::default();
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            let read_ns = monotonic_ns();
            let Some(ev) = decode(&item) else {
                drained.undecodable += 1;
                continue;
            };
            deliver(&ev.captured(&self.clock, read_ns));
            drained.delivered += 1;
        }
        Ok(drained)
    }

    fn handed_over(&self, stats: &Stats) -> u64 {
        stats.events
    }

    fn interval(&mut self) {
        self.clock.resync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_records_are_refused() {
        let header = EventHeader {
            cap_len: 10,
            ..EventHeader::default()
        };
        let mut record = bytemuck::bytes_of(&header).to_vec();
        record.extend_from_slice(&[0; 9]);
        assert!(decode(&record).is_none());
        assert!(decode(&record[..20]).is_none());
        record.push(0);
        assert_eq!(decode(&record).unwrap().data.len(), 10);
    }

    #[test]
    fn events_become_captured_packets() {
        let mut header = EventHeader {
            ip_version: 4,
            ts_ns: 1_000,
            rule_id: traffic_common::NO_RULE,
            action: traffic_common::action::CAPTURE,
            flags: event_flags::SAMPLED,
            ..EventHeader::default()
        };
        header.src[..4].copy_from_slice(&[192, 0, 2, 1]);
        let ev = Event { header, data: &[] };
        let c = ev.captured(&WallClock::new(), 1_500);
        assert_eq!(c.packet().src, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(c.packet().ports, None);
        assert_eq!((c.latency_ns, c.rule, c.sampled), (Some(500), None, true));
        assert_eq!(c.action, Some(Action::Capture));
    }
}
