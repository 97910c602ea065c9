//! The capture source: events from the XDP program's BPF ring buffer.
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
//! use traffic::capture::decode;
//! use traffic_common::EventHeader;
//!
//! let header = EventHeader { cap_len: 2, wire_len: 60, ..EventHeader::default() };
//! let mut record = bytemuck::bytes_of(&header).to_vec();
//! record.extend_from_slice(&[0xaa, 0xbb, 0, 0]); // the ring pads records
//! let event = decode(&record).unwrap();
//! assert_eq!(event.data, [0xaa, 0xbb]);
//! ```

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use traffic_common::{EventHeader, event_flags};

use crate::rules::Action;

/// One captured frame: the program's metadata and the captured bytes.
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

impl Event<'_> {
    /// The source address, if the frame had an IP header.
    pub fn src(&self) -> Option<IpAddr> {
        addr(self.header.ip_version, self.header.src)
    }

    /// The destination address, if the frame had an IP header.
    pub fn dst(&self) -> Option<IpAddr> {
        addr(self.header.ip_version, self.header.dst)
    }

    /// The ports, when the frame had a TCP or UDP header.
    pub fn ports(&self) -> Option<(u16, u16)> {
        (self.header.flags & event_flags::PORTS != 0)
            .then_some((self.header.sport, self.header.dport))
    }

    /// TCP flags, for TCP.
    pub fn tcp_flags(&self) -> Option<u8> {
        (self.header.flags & event_flags::TCP_FLAGS != 0).then_some(self.header.tcp_flags)
    }

    /// Whether `--sample` chose the frame rather than a capture rule.
    pub fn sampled(&self) -> bool {
        self.header.flags & event_flags::SAMPLED != 0
    }

    /// The action the frame got.
    pub fn action(&self) -> Option<Action> {
        Action::from_kernel(self.header.action)
    }
}

/// Describes a whole frame received through AF_XDP the way the XDP program
/// describes the frames it writes to the ring: VLAN, addresses, protocol,
/// ports and TCP flags. `rule_id` and `action` are left for the caller.
pub fn describe(frame: &[u8], ts_ns: u64, queue: u32) -> EventHeader {
    let mut h = EventHeader {
        ts_ns,
        rx_queue: queue,
        wire_len: frame.len() as u32,
        cap_len: frame.len() as u32,
        rule_id: traffic_common::NO_RULE,
        ..EventHeader::default()
    };
    let be16 = |at: usize| {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let Some(mut proto) = be16(12) else { return h };
    let mut at = 14;
    while (proto == 0x8100 || proto == 0x88a8) && h.vlan_depth < 2 {
        let Some(tci) = be16(at) else { return h };
        if h.vlan_depth == 0 {
            h.vlan_id = tci & 0x0fff;
        }
        h.vlan_depth += 1;
        let Some(next) = be16(at + 2) else { return h };
        proto = next;
        at += 4;
    }
    let l4 = match proto {
        0x0800 => {
            let Some(ip) = frame.get(at..at + 20) else {
                return h;
            };
            h.ip_version = 4;
            h.protocol = ip[9];
            h.src[..4].copy_from_slice(&ip[12..16]);
            h.dst[..4].copy_from_slice(&ip[16..20]);
            let later = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
            if later {
                h.flags |= event_flags::LATER_FRAGMENT;
                return h;
            }
            at + usize::from(ip[0] & 0x0f) * 4
        }
        0x86dd => {
            let Some(ip) = frame.get(at..at + 40) else {
                return h;
            };
            h.ip_version = 6;
            h.protocol = ip[6];
            h.src.copy_from_slice(&ip[8..24]);
            h.dst.copy_from_slice(&ip[24..40]);
            at + 40
        }
        _ => return h,
    };
    if (h.protocol == 6 || h.protocol == 17)
        && let (Some(sport), Some(dport)) = (be16(l4), be16(l4 + 2))
    {
        h.sport = sport;
        h.dport = dport;
        h.flags |= event_flags::PORTS;
        if h.protocol == 6
            && let Some(&flags) = frame.get(l4 + 13)
        {
            h.tcp_flags = flags;
            h.flags |= event_flags::TCP_FLAGS;
        }
    }
    h
}

fn addr(version: u8, bytes: [u8; 16]) -> Option<IpAddr> {
    match version {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
        _ => None,
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    // SAFETY: an all-zero timespec is valid and clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer; CLOCK_MONOTONIC and CLOCK_REALTIME always exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Now on `CLOCK_MONOTONIC`, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Converts the kernel's monotonic timestamps to wall-clock time.
///
/// The offset between the two clocks is measured when made and on each
/// [`WallClock::resync`], so that NTP adjustments are followed.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    offset_ns: i128,
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

impl WallClock {
    /// Measures the offset now.
    pub fn new() -> Self {
        // Read monotonic on both sides of realtime and take the middle.
        let before = monotonic_ns();
        let real = clock_ns(libc::CLOCK_REALTIME);
        let after = monotonic_ns();
        let mono = before / 2 + after / 2;
        Self {
            offset_ns: i128::from(real) - i128::from(mono),
        }
    }

    /// Measures the offset again.
    pub fn resync(&mut self) {
        *self = Self::new();
    }

    /// The Unix time of a monotonic timestamp.
    pub fn unix(&self, monotonic_ns: u64) -> Duration {
        let ns = (i128::from(monotonic_ns) + self.offset_ns).max(0);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// A one-shot timer with nanosecond resolution, as a file descriptor that
/// becomes readable when it fires; tokio's own timers tick in milliseconds,
/// too coarse for delivery latencies measured in microseconds.
pub struct TimerFd(std::os::fd::OwnedFd);

impl TimerFd {
    /// A disarmed timer on `CLOCK_MONOTONIC`.
    ///
    /// # Errors
    ///
    /// When the kernel refuses a timerfd.
    pub fn new() -> std::io::Result<Self> {
        use std::os::fd::FromRawFd as _;
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is new and owned by nothing else.
        Ok(Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    /// Fires once, `after` from now (re-arming replaces the previous time).
    ///
    /// # Errors
    ///
    /// When the kernel refuses the setting.
    pub fn arm(&self, after: Duration) -> std::io::Result<()> {
        use std::os::fd::AsRawFd as _;
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: valid fd and itimerspec.
        if unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Consumes the expiry so the descriptor stops being readable.
    pub fn clear(&self) {
        use std::os::fd::AsRawFd as _;
        let mut expirations = 0u64;
        // SAFETY: reads 8 bytes into a u64; EAGAIN (not expired) is fine.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&raw mut expirations).cast(), 8) };
    }
}

impl std::os::fd::AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
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
    fn wall_clock_is_close_to_now() {
        let clock = WallClock::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let converted = clock.unix(monotonic_ns());
        let diff = converted.abs_diff(now);
        assert!(diff < Duration::from_millis(50), "{diff:?}");
    }

    #[test]
    fn whole_frames_are_described_like_events() {
        let mut spec = crate::frame::FrameSpec::udp(
            "2001:db8::7".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        );
        spec.vlans = vec![(0x8100, 42)];
        spec.l4 = crate::frame::L4::TcpSyn {
            sport: 1234,
            dport: 80,
        };
        let frame = spec.build();
        let h = describe(&frame, 99, 3);
        assert_eq!(
            (h.ip_version, h.protocol, h.sport, h.dport, h.tcp_flags),
            (6, 6, 1234, 80, 2)
        );
        assert_eq!(
            (h.vlan_depth, h.vlan_id, h.rx_queue, h.ts_ns),
            (1, 42, 3, 99)
        );
        assert_eq!(h.wire_len as usize, frame.len());
        let ev = Event {
            header: h,
            data: &frame,
        };
        assert_eq!(ev.src(), Some("2001:db8::7".parse().unwrap()));
        // A truncated frame yields what it has, without panicking.
        for len in 0..frame.len() {
            let _ = describe(&frame[..len], 0, 0);
        }
    }

    #[test]
    fn addresses_decode_by_version() {
        let mut header = EventHeader {
            ip_version: 4,
            ..EventHeader::default()
        };
        header.src[..4].copy_from_slice(&[192, 0, 2, 1]);
        let ev = Event { header, data: &[] };
        assert_eq!(ev.src(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(ev.ports(), None);
        header.ip_version = 0;
        assert_eq!(Event { header, data: &[] }.src(), None);
    }
}
