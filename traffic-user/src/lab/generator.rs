//! `traffic gen`: sends an exact number of frames from a set of source
//! prefixes.
//!
//! Frames leave through an `AF_PACKET` socket with `PACKET_QDISC_BYPASS`, in
//! batches of up to [`BATCH`] per `sendmmsg` call. When the device pushes back
//! (`EAGAIN`/`ENOBUFS`, as veth does when its peer falls behind) the sender
//! waits and retries the frames not yet sent, so the count is exact; retries
//! are counted in [`GenReport::backpressure_waits`].

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use super::{
    frame::{FrameSpec, L4},
    zipf::Zipf,
};
use crate::{
    kernel::{Tool, ToolProgram, error_chain, netlink},
    rules::Cidr,
};

/// Frames per `sendmmsg` call.
pub const BATCH: usize = 64;

/// The transport protocol of generated frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// UDP datagrams.
    Udp,
    /// TCP SYN segments.
    TcpSyn,
}

/// How frames are put on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mechanism {
    /// AF_PACKET, sendmmsg, qdisc bypass, retried on back-pressure: exact.
    #[default]
    AfPacket,
    /// BPF_PROG_RUN live frames with an XDP_TX program: the kernel sends
    /// without retrying, so frames the device cannot take are lost (count
    /// them at the receiver). One frame per source prefix, repeated.
    LiveFrames,
}

/// What to send.
#[derive(Clone, Debug)]
pub struct GenOptions {
    /// The interface to send from.
    pub iface: String,
    /// How many frames in all.
    pub count: u64,
    /// Source prefixes, used in turn; frame `i` comes from prefix `i % n`,
    /// address `i / n` within it.
    pub sources: Vec<Cidr>,
    /// IPv4 destination.
    pub dst4: Ipv4Addr,
    /// IPv6 destination.
    pub dst6: Ipv6Addr,
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Frames per second, or as fast as possible.
    pub rate: Option<u64>,
    /// UDP or TCP SYN.
    pub proto: Proto,
    /// Payload bytes after the transport header.
    pub payload_len: usize,
    /// How frames pick their sources.
    pub mix: Mix,
}

/// How the generator's frames pick their source addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Mix {
    /// Frame `i` from prefix `i % n`, address `i / n` within it.
    #[default]
    RoundRobin,
    /// Zipf-distributed over `sources` addresses of the prefixes: the
    /// source of rank `r` (0 the heaviest) is [`ranked`]`(prefixes, r)`,
    /// ranks drawn with exponent `s` from `seed`.
    Zipf {
        /// The exponent (1.1 is typical of real senders).
        s: f64,
        /// Distinct ranks.
        sources: u64,
        /// The random stream's seed.
        seed: u64,
    },
}

/// The source of Zipf rank `rank` over `prefixes`: prefix `rank % n`, its
/// address `rank / n` (wrapping around the prefix's size).
pub fn ranked(prefixes: &[Cidr], rank: u64) -> IpAddr {
    let k = prefixes.len() as u64;
    prefixes[(rank % k) as usize].nth(u128::from(rank / k))
}

/// The sources of a stream, frame by frame.
pub struct Picker<'a> {
    prefixes: &'a [Cidr],
    zipf: Option<Zipf>,
}

impl<'a> Picker<'a> {
    /// The sources `opts` asks for.
    pub fn new(opts: &'a GenOptions) -> Self {
        let zipf = match opts.mix {
            Mix::RoundRobin => None,
            Mix::Zipf { s, sources, seed } => Some(Zipf::new(sources, s, seed)),
        };
        Self {
            prefixes: &opts.sources,
            zipf,
        }
    }

    /// The source of frame `i` (frames are asked for in order).
    pub fn source(&mut self, i: u64) -> IpAddr {
        match &mut self.zipf {
            Some(z) => ranked(self.prefixes, z.next_rank()),
            None => {
                let k = self.prefixes.len() as u64;
                self.prefixes[(i % k) as usize].nth(u128::from(i / k))
            }
        }
    }
}

/// What was sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GenReport {
    /// Frames the kernel accepted.
    pub sent: u64,
    /// Bytes of those frames.
    pub bytes: u64,
    /// How often the device pushed back and the sender waited.
    pub backpressure_waits: u64,
    /// Wall time, in nanoseconds.
    pub elapsed_ns: u64,
}

/// Sends `opts.count` frames.
///
/// # Errors
///
/// When the interface does not exist, the socket cannot be opened (needs
/// CAP_NET_RAW) or a send fails with anything but backpressure.
pub fn run(opts: &GenOptions) -> io::Result<GenReport> {
    run_with(opts, Mechanism::AfPacket)
}

/// Sends `opts.count` frames by `mechanism`.
///
/// # Errors
///
/// As [`run`]; for live frames, when the program cannot be loaded or run.
pub fn run_with(opts: &GenOptions, mechanism: Mechanism) -> io::Result<GenReport> {
    send(opts, mechanism, None)
}

/// Sends as [`run`] until `opts.count` frames are sent or `stop` is set
/// (checked between batches, so within a tenth of a millisecond when
/// paced): one stream at one pace, where rounds of [`run`] would each open
/// a socket and lose a little time between them.
///
/// # Errors
///
/// As [`run`].
pub fn run_until(opts: &GenOptions, stop: &AtomicBool) -> io::Result<GenReport> {
    send(opts, Mechanism::AfPacket, Some(stop))
}

fn send(
    opts: &GenOptions,
    mechanism: Mechanism,
    stop: Option<&AtomicBool>,
) -> io::Result<GenReport> {
    if opts.sources.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no source prefixes given",
        ));
    }
    let ifindex = netlink::ifindex(&opts.iface).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no interface named `{}` in this network namespace",
                opts.iface
            ),
        )
    })?;
    let sock = PacketSocket::open(ifindex)?;
    let src_mac = sock.mac().unwrap_or([0x02, 0, 0, 0, 0, 0x01]);
    if mechanism == Mechanism::LiveFrames {
        return live_frames(opts, ifindex, src_mac);
    }

    let started = Instant::now();
    let mut report = GenReport::default();
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    let mut next = 0u64;
    let mut picker = Picker::new(opts);
    // Paced, a batch holds about 0.1 ms of frames (one frame at 10,000/s),
    // so a rate is a steady stream and not a burst of BATCH frames now and
    // then; as fast as possible, full batches.
    let batch = opts
        .rate
        .filter(|&r| r > 0)
        .map_or(BATCH as u64, |r| (r / 10_000).clamp(1, BATCH as u64));
    while next < opts.count && !stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
        frames.clear();
        let n = (opts.count - next).min(batch);
        for i in next..next + n {
            frames.push(frame_from(opts, src_mac, picker.source(i), i));
        }
        if let Some(rate) = opts.rate.filter(|&r| r > 0) {
            // Pace by batch: the batch starting at frame `next` is due at
            // next / rate seconds after the start.
            let due = Duration::from_secs_f64(next as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let mut done = 0;
        while done < frames.len() {
            match sock.send_batch(&frames[done..]) {
                Ok(sent) => {
                    report.bytes += frames[done..done + sent]
                        .iter()
                        .map(|f| f.len() as u64)
                        .sum::<u64>();
                    done += sent;
                }
                Err(err) if is_backpressure(&err) => {
                    report.backpressure_waits += 1;
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        report.sent += n;
        next += n;
    }
    report.elapsed_ns = started.elapsed().as_nanos() as u64;
    Ok(report)
}

/// Sends with BPF_PROG_RUN live frames: each source prefix's first frame,
/// repeated, in equal shares of the count.
fn live_frames(opts: &GenOptions, ifindex: u32, src_mac: [u8; 6]) -> io::Result<GenReport> {
    if opts.rate.is_some() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--rate is not supported with --mechanism live-frames (the kernel sends as fast as it can)",
        ));
    }
    if opts.mix != Mix::RoundRobin {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--zipf is not supported with --mechanism live-frames (it repeats one frame per prefix); use af-packet",
        ));
    }
    let sender =
        ToolProgram::load(Tool::Transmit).map_err(|e| io::Error::other(error_chain(&e)))?;
    let started = Instant::now();
    let mut report = GenReport::default();
    let k = opts.sources.len() as u64;
    for (i, _) in opts.sources.iter().enumerate() {
        let share = opts.count / k + u64::from((i as u64) < opts.count % k);
        let frame = frame(opts, src_mac, i as u64);
        let mut left = share;
        while left > 0 {
            let n = left.min(u64::from(u32::MAX)) as u32;
            sender
                .send_live_frames(&frame, ifindex, n, 64)
                .map_err(|e| io::Error::other(error_chain(&e)))?;
            left -= u64::from(n);
        }
        report.sent += share;
        report.bytes += share * frame.len() as u64;
    }
    report.elapsed_ns = started.elapsed().as_nanos() as u64;
    Ok(report)
}

fn is_backpressure(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS))
}

/// Frame number `i` of the stream described by `opts`, its sources taken
/// in turn ([`Mix::RoundRobin`]).
pub fn frame(opts: &GenOptions, src_mac: [u8; 6], i: u64) -> Vec<u8> {
    let k = opts.sources.len() as u64;
    let prefix = opts.sources[(i % k) as usize];
    frame_from(opts, src_mac, prefix.nth(u128::from(i / k)), i)
}

/// Frame number `i` of the stream described by `opts`, from `src`.
pub fn frame_from(opts: &GenOptions, src_mac: [u8; 6], src: IpAddr, i: u64) -> Vec<u8> {
    let dst = match src {
        IpAddr::V4(_) => IpAddr::V4(opts.dst4),
        IpAddr::V6(_) => IpAddr::V6(opts.dst6),
    };
    // Vary the source port so RSS spreads the stream over receive queues.
    let sport = 1024 + (i % 60000) as u16;
    let l4 = match opts.proto {
        Proto::Udp => L4::Udp { sport, dport: 9 },
        Proto::TcpSyn => L4::TcpSyn { sport, dport: 80 },
    };
    let mut spec = FrameSpec::udp(src, dst);
    spec.l4 = l4;
    spec.src_mac = src_mac;
    spec.dst_mac = opts.dst_mac;
    spec.payload_len = opts.payload_len;
    spec.build()
}

/// An `AF_PACKET` socket bound to one interface, for sending only.
struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSocket {
    fn open(ifindex: u32) -> io::Result<Self> {
        // Protocol 0: the socket receives nothing, so it costs nothing on the
        // receive path of the interface it sends on.
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is new and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sock = Self { fd, ifindex };
        // Skip the qdisc layer: the device's own queue is the only one.
        let one: libc::c_int = 1;
        // SAFETY: valid socket and option buffer.
        unsafe {
            libc::setsockopt(
                sock.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let addr = sock.addr();
        // SAFETY: `addr` is a valid sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }

    fn addr(&self) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex as i32;
        addr.sll_halen = 6;
        addr
    }

    /// The interface's MAC address.
    fn mac(&self) -> Option<[u8; 6]> {
        // SAFETY: ifreq is plain data.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        // SAFETY: `req` has room for the name; if_indextoname writes at most IFNAMSIZ bytes.
        let name = unsafe { libc::if_indextoname(self.ifindex, req.ifr_name.as_mut_ptr()) };
        if name.is_null() {
            return None;
        }
        // SAFETY: valid socket and ifreq.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
            return None;
        }
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
        let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
        Some(std::array::from_fn(|i| data[i] as u8))
    }

    /// Sends as many of `frames` as the device takes; at least one, or an error.
    fn send_batch(&self, frames: &[Vec<u8>]) -> io::Result<usize> {
        let mut iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr().cast_mut().cast(),
                iov_len: f.len(),
            })
            .collect();
        let mut addr = self.addr();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: msghdr is plain data; all-zero is valid.
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_name = (&raw mut addr).cast();
                hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                hdr.msg_iov = iov;
                hdr.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: hdr,
                    msg_len: 0,
                }
            })
            .collect();
        // SAFETY: every message points at a live frame buffer and at `addr`,
        // all of which outlive the call.
        let n = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *m = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_used_in_turn() {
        let opts = GenOptions {
            iface: "x".into(),
            count: 4,
            sources: vec![
                "192.0.2.0/30".parse().unwrap(),
                "2001:db8::/64".parse().unwrap(),
            ],
            dst4: "198.51.100.1".parse().unwrap(),
            dst6: "2001:db8::ffff".parse().unwrap(),
            dst_mac: [2, 0, 0, 0, 0, 2],
            rate: None,
            proto: Proto::Udp,
            payload_len: 0,
            mix: Mix::RoundRobin,
        };
        let f0 = frame(&opts, [2, 0, 0, 0, 0, 1], 0);
        let f1 = frame(&opts, [2, 0, 0, 0, 0, 1], 1);
        let f2 = frame(&opts, [2, 0, 0, 0, 0, 1], 2);
        assert_eq!(&f0[26..30], &[192, 0, 2, 0]);
        assert_eq!(&f1[12..14], &[0x86, 0xdd]);
        assert_eq!(&f2[26..30], &[192, 0, 2, 1]);
    }

    #[test]
    fn macs_parse() {
        assert_eq!(parse_mac("02:00:0a:ff:00:01"), Some([2, 0, 10, 255, 0, 1]));
        assert_eq!(parse_mac("02:00:0a:ff:00"), None);
        assert_eq!(parse_mac("02:00:0a:ff:00:100"), None);
    }
}
