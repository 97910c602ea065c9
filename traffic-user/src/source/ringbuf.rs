//! The ring-buffer source: capture events from the XDP program.
//!
//! # Ring buffer, not perf buffer
//!
//! A BPF ring buffer is one buffer shared by all CPUs, so events keep their
//! order across CPUs and memory is not reserved per CPU. Each event takes
//! what it needs: a 24-byte header and the captured bytes.
//!
//! # Reading
//!
//! The reader reads in batches ([`EventRing`]) and paces itself by the rate
//! ([`super::pace`]): at low rates it asks the program to wake it with the
//! next event, at high rates it reads on a timer and the program wakes
//! nobody; `--busy-poll` spins. The time is read once per batch.
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

use tokio::io::unix::AsyncFd;
use traffic_common::{EVENT_HEADER_LEN, EventHeader, Stats, event_flags};

use super::{
    Captured, Drained, Source, SourceError,
    clock::{WallClock, monotonic_ns},
    pace::{Mode, Next, Pacer},
    poll_readable, rule_index, watch,
};
use crate::{kernel::EventRing, rules::Action};

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
    let header: EventHeader = bytemuck::pod_read_unaligned(record.get(..EVENT_HEADER_LEN)?);
    let data = record.get(EVENT_HEADER_LEN..EVENT_HEADER_LEN + usize::from(header.cap_len))?;
    Some(Event { header, data })
}

impl<'a> Event<'a> {
    /// The event as sinks see it, from interface `ifindex`, read at
    /// `read_ns` (monotonic).
    pub fn captured(&self, clock: &WallClock, ifindex: u32, read_ns: u64) -> Captured<'a> {
        let h = &self.header;
        Captured {
            flags: Some(h.flags),
            data: self.data,
            wire_len: h.wire_len,
            ts: clock.unix(h.ts_ns),
            latency_ns: Some(read_ns.saturating_sub(h.ts_ns)),
            ifindex,
            rx_queue: u32::from(h.rx_queue),
            action: Action::from_kernel(u32::from(h.action)),
            rule: rule_index(h.rule_id),
            sampled: h.flags & event_flags::SAMPLED != 0,
        }
    }
}

const WHAT: &str = "the event ring buffer";

/// The event ring buffer, watched by the reactor.
pub struct RingSource {
    ring: AsyncFd<EventRing>,
    clock: WallClock,
    ifindex: u32,
    pacer: Pacer,
    next: Next,
    /// Whether the program has been asked to wake the reader.
    asked: bool,
}

impl RingSource {
    /// Watches `ring`, the events of interface `ifindex`, read in `mode`.
    ///
    /// # Errors
    ///
    /// When the reactor cannot poll it.
    pub fn new(ring: EventRing, ifindex: u32, mode: Mode) -> Result<Self, SourceError> {
        // Until the first batch says otherwise, events of the smallest size.
        let capacity = ring.size() as f64 / (8 + EVENT_HEADER_LEN + 64) as f64;
        // SAFETY: the EventRing owns its map fd, which stays open and the
        // same for as long as it lives, and the AsyncFd owns it.
        let ring = unsafe { watch(ring, WHAT) }?;
        Ok(Self {
            ring,
            clock: WallClock::new(),
            ifindex,
            pacer: Pacer::new(mode, capacity),
            next: Next::Woken,
            asked: false,
        })
    }
}

impl Source for RingSource {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SourceError>> {
        poll_readable(&mut self.ring, WHAT, cx)
    }

    fn drain(&mut self, deliver: &mut dyn FnMut(&Captured<'_>)) -> Result<Drained, SourceError> {
        let mut drained = Drained::default();
        let (mut records, mut bytes) = (0, 0);
        let ring = self.ring.get_mut();
        let mut read_ns;
        loop {
            // The time once per batch, after the producers' position: every
            // event before it was stamped earlier.
            let produced = ring.produced();
            read_ns = monotonic_ns();
            let (clock, ifindex) = (&self.clock, self.ifindex);
            let batch = ring.read_to(produced, |record| match decode(record) {
                Some(ev) => {
                    deliver(&ev.captured(clock, ifindex, read_ns));
                    drained.delivered += 1;
                }
                None => drained.undecodable += 1,
            });
            records += batch.records;
            bytes += batch.bytes;
            if batch.records == 0 {
                break;
            }
        }
        if records > 0 {
            self.pacer
                .set_capacity(ring.size() as f64 * records as f64 / bytes as f64);
        }
        self.next = self.pacer.after_read(records, read_ns);
        Ok(drained)
    }

    fn next_read(&mut self) -> Next {
        let ring = self.ring.get_ref();
        match self.next {
            Next::Woken => {
                self.asked = ring.ask_wake();
                if self.asked { Next::Woken } else { Next::Now }
            }
            other => {
                if self.asked {
                    ring.cancel_wake();
                    self.asked = false;
                }
                other
            }
        }
    }

    fn handed_over(&self, stats: &Stats) -> u64 {
        stats.events
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
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
        let header = EventHeader {
            ts_ns: 1_000,
            rule_id: traffic_common::NO_RULE,
            action: traffic_common::action::CAPTURE as u8,
            flags: event_flags::SAMPLED | event_flags::IPV4,
            rx_queue: 3,
            ..EventHeader::default()
        };
        let frame = crate::lab::frame::FrameSpec::udp(
            "192.0.2.1".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
        )
        .build();
        let ev = Event {
            header,
            data: &frame,
        };
        let c = ev.captured(&WallClock::new(), 7, 1_500);
        assert_eq!(c.packet().src, Some("192.0.2.1".parse().unwrap()));
        assert!(c.packet().ports.is_some());
        assert_eq!((c.latency_ns, c.rule, c.sampled), (Some(500), None, true));
        assert_eq!((c.ifindex, c.rx_queue), (7, 3));
        assert_eq!(c.action, Some(Action::Capture));
    }
}
