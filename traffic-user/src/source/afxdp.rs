//! Whole-packet capture through AF_XDP sockets, one per receive queue.
//!
//! With `--afxdp` the XDP program redirects packets whose action is capture
//! to the socket bound to their receive queue (an `XSKMAP` entry), whole,
//! with an [`XskMeta`] in the XDP metadata in front of the frame: the hook's
//! timestamp, the rule that matched and the parser's flags. The frame's
//! other fields come from the userspace parser, [`crate::packet`]. Such packets do not reach the host's network stack: this mode is
//! for capture interfaces such as mirror ports.
//!
//! Each socket has its own UMEM (an anonymous, page-aligned mapping owned by
//! [`Region`]), fill ring and RX ring, set up with the xdpilone crate (pure
//! Rust, the AF_XDP library aya's own tests use). Frames go back to the fill
//! ring as soon as a batch is written out, so the kernel always has room.
//!
//! What cannot be delivered is counted: the kernel's per-socket statistics
//! (`XDP_STATISTICS`: RX ring full, no frame in the fill ring) and the
//! program's count of packets whose queue had no socket.

use std::{
    ffi::c_void,
    io,
    num::NonZeroU32,
    os::fd::{AsRawFd, RawFd},
    ptr::NonNull,
    task::{Context, Poll},
};

use tokio::io::unix::AsyncFd;
use traffic_common::{AFXDP_META_LEN, Stats, XskMeta, action};
use xdpilone::{DeviceQueue, IfInfo, RingRx, Socket, SocketConfig, Umem, UmemConfig};

use super::{
    Captured, Drained, QueueReport, Source, SourceError,
    clock::{WallClock, monotonic_ns},
    pace::{Mode, Next, Pacer},
    poll_readable, rule_index, watch,
};
use crate::rules::Action;

/// Which AF_XDP mode the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XskModeChoice {
    /// Zero-copy if the driver supports it, else copy.
    Auto,
    /// The driver writes frames straight into our memory.
    Zerocopy,
    /// The kernel copies each frame into our memory (works with any driver).
    Copy,
}

/// The mode a socket was bound in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XskMode {
    /// Zero-copy.
    Zerocopy,
    /// Copy.
    Copy,
}

impl std::fmt::Display for XskMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            XskMode::Zerocopy => "zerocopy",
            XskMode::Copy => "copy",
        })
    }
}

/// Ring and memory sizes.
#[derive(Clone, Copy, Debug)]
pub struct XskSizes {
    /// Entries in each fill ring (and RX ring); a power of two.
    pub ring: u32,
    /// Bytes per UMEM frame: 2048 or 4096 (whole frames up to that size).
    pub frame: u32,
}

/// The largest ring: each queue's UMEM holds twice as many frames, so at
/// 4,096 bytes a frame this is 512 MiB a queue.
pub const MAX_RING: u32 = 1 << 16;

impl XskSizes {
    /// What is wrong with these sizes, one sentence each naming the flag;
    /// empty when they can be used.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.ring.is_power_of_two() || self.ring < 64 || self.ring > MAX_RING {
            problems.push(format!(
                "--afxdp-ring {} must be a power of two from 64 to {MAX_RING} (each queue's memory is twice the ring times --afxdp-frame); lower it",
                self.ring
            ));
        }
        if self.frame != 2048 && self.frame != 4096 {
            problems.push(format!("--afxdp-frame {} must be 2048 or 4096", self.frame));
        }
        problems
    }
}

impl Default for XskSizes {
    fn default() -> Self {
        Self {
            ring: 4096,
            frame: 4096,
        }
    }
}

/// Why AF_XDP could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    // The OS error is part of each message rather than a `source`, so that
    // the hint on what to do comes last.
    /// A setup step failed.
    #[error("AF_XDP: {step} failed on queue {queue}: {error}{hint}")]
    Setup {
        /// What was being done.
        step: Step,
        /// The receive queue.
        queue: u32,
        /// The OS error.
        error: io::Error,
        /// What to try.
        hint: String,
    },
    /// Zero-copy was asked for and refused.
    #[error(
        "the driver refused AF_XDP zero-copy on queue {queue} ({error}); use --afxdp-mode copy (or auto)"
    )]
    ZerocopyRefused {
        /// The receive queue.
        queue: u32,
        /// The OS error.
        error: io::Error,
    },
    /// A size is out of range.
    #[error("{0}")]
    BadSize(String),
}

/// The steps of opening a socket, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Mapping the UMEM memory.
    MapUmem,
    /// Registering the UMEM with the kernel.
    RegisterUmem,
    /// Looking the interface up.
    FindInterface,
    /// Creating the socket.
    CreateSocket,
    /// Creating the fill and completion rings.
    CreateFillRing,
    /// Creating the RX ring.
    CreateRxRing,
    /// Mapping the RX ring.
    MapRxRing,
    /// Binding to the queue: where a driver refuses zero-copy.
    Bind,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::MapUmem => "mapping UMEM memory",
            Step::RegisterUmem => "registering UMEM",
            Step::FindInterface => "finding the interface",
            Step::CreateSocket => "creating the AF_XDP socket",
            Step::CreateFillRing => "creating the fill ring",
            Step::CreateRxRing => "creating the RX ring",
            Step::MapRxRing => "mapping the RX ring",
            Step::Bind => "binding",
        })
    }
}

fn errno(e: xdpilone::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.get_raw().abs())
}

/// An anonymous, page-aligned memory mapping, unmapped on drop.
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; sharing or sending
// it is as safe as for a Vec<u8>. The kernel writes into it only between a
// frame's fill-ring submission and its RX descriptor, which the ring
// protocol orders.
unsafe impl Send for Region {}

impl Region {
    /// Maps `len` bytes of zeroed memory.
    ///
    /// # Errors
    ///
    /// When mmap fails.
    pub fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping with no address hint.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
            len,
        })
    }

    fn as_slice_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }

    /// The bytes at `offset..offset + len`, if inside the mapping.
    fn bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: in bounds, checked above; the kernel no longer writes this
        // frame (its RX descriptor was consumed and it is not yet refilled).
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), len) })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}

/// One AF_XDP socket on one receive queue.
pub struct XskQueue {
    /// The receive queue.
    pub queue: u32,
    /// Frames delivered.
    pub delivered: u64,
    rx: RingRx,
    fq: DeviceQueue,
    free: Vec<u64>,
    frame: u32,
    /// The last counters the kernel gave, kept for when a reading fails:
    /// counters only grow, so they stand until the next good reading.
    last_drops: std::cell::Cell<XskDrops>,
    // Dropped after the rings and sockets above: the kernel stops using the
    // memory when the sockets close.
    _umem: Umem,
    region: Region,
}

/// Per-socket drop counters from the kernel.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct XskDrops {
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Frames dropped for want of a frame in the fill ring (or other
    /// reasons the kernel counts as `rx_dropped`).
    pub rx_dropped: u64,
    /// Times the kernel found the fill ring empty.
    pub fill_ring_empty: u64,
}

impl XskQueue {
    fn open(
        ifindex: u32,
        queue: u32,
        sizes: XskSizes,
        flags: u16,
    ) -> Result<Self, (io::Error, Step)> {
        let frames = sizes.ring * 2;
        let region =
            Region::new(frames as usize * sizes.frame as usize).map_err(|e| (e, Step::MapUmem))?;
        let config = UmemConfig {
            fill_size: sizes.ring,
            complete_size: sizes.ring,
            frame_size: sizes.frame,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: the area is a page-aligned mapping that `region` keeps alive
        // for as long as the Umem, which is dropped before it.
        let umem = unsafe { Umem::new(config, region.as_slice_ptr()) }
            .map_err(|e| (errno(e), Step::RegisterUmem))?;
        let mut info = IfInfo::invalid();
        info.from_ifindex(ifindex)
            .map_err(|e| (errno(e), Step::FindInterface))?;
        info.set_queue(queue);
        let sock = Socket::with_shared(&info, &umem).map_err(|e| (errno(e), Step::CreateSocket))?;
        let mut fq = umem
            .fq_cq(&sock)
            .map_err(|e| (errno(e), Step::CreateFillRing))?;
        let cfg = SocketConfig {
            rx_size: NonZeroU32::new(sizes.ring),
            tx_size: None,
            bind_flags: flags,
        };
        let user = umem
            .rx_tx(&sock, &cfg)
            .map_err(|e| (errno(e), Step::CreateRxRing))?;
        let rx = user.map_rx().map_err(|e| (errno(e), Step::MapRxRing))?;
        umem.bind(&user).map_err(|e| (errno(e), Step::Bind))?;
        // Half the frames wait in the fill ring, half in reserve for when
        // the RX ring holds the others.
        let mut free: Vec<u64> = (0..frames)
            .map(|i| u64::from(i) * u64::from(sizes.frame))
            .collect();
        let first: Vec<u64> = free.split_off(free.len() - sizes.ring as usize);
        let mut w = fq.fill(sizes.ring);
        w.insert(first.into_iter());
        w.commit();
        drop(w);
        Ok(Self {
            queue,
            delivered: 0,
            rx,
            fq,
            free,
            frame: sizes.frame,
            last_drops: std::cell::Cell::new(XskDrops::default()),
            _umem: umem,
            region,
        })
    }

    /// Whether frames wait in the RX ring.
    pub fn pending(&mut self) -> bool {
        self.rx.available() > 0
    }

    /// Reads every frame waiting, calls `each(bytes, metadata)` for it (the
    /// metadata is zero when the program could not write it), and gives the
    /// frames back to the kernel. A descriptor that points outside the UMEM
    /// (never expected) is counted as undecodable.
    pub fn drain(&mut self, mut each: impl FnMut(&[u8], XskMeta)) -> Drained {
        let mut drained = Drained::default();
        let available = self.rx.available();
        if available > 0 {
            let mut batch = self.rx.receive(available);
            while let Some(desc) = batch.read() {
                let meta_len = AFXDP_META_LEN as u64;
                let meta = desc
                    .addr
                    .checked_sub(meta_len)
                    .and_then(|at| self.region.bytes(at, AFXDP_META_LEN))
                    .map_or_else(XskMeta::default, bytemuck::pod_read_unaligned);
                match self.region.bytes(desc.addr, desc.len as usize) {
                    Some(bytes) => {
                        each(bytes, meta);
                        drained.delivered += 1;
                    }
                    None => drained.undecodable += 1,
                }
                // The frame's start: addresses are aligned to the frame size.
                self.free
                    .push(desc.addr - desc.addr % u64::from(self.frame));
            }
            batch.release();
        }
        self.delivered += drained.delivered;
        self.refill();
        drained
    }

    fn refill(&mut self) {
        if self.free.is_empty() {
            return;
        }
        let mut w = self.fq.fill(self.free.len() as u32);
        let room = w.capacity() as usize;
        let from = self.free.len() - room.min(self.free.len());
        w.insert(self.free.drain(from..));
        w.commit();
        drop(w);
        // With XDP_USE_NEED_WAKEUP the kernel asks to be woken when it ran
        // out of frames; otherwise it polls the fill ring by itself.
        if self.fq.needs_wakeup() {
            self.fq.wake();
        }
    }

    /// The kernel's drop counters for this socket; the last good reading
    /// when the kernel does not answer (whatever a failed reading hides is
    /// still counted: the session counts what never arrives as lost).
    pub fn drops(&self) -> XskDrops {
        let mut stats = xdpilone::xdp::XdpStatisticsV2::default();
        let mut len = size_of::<xdpilone::xdp::XdpStatisticsV2>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `stats`.
        let rc = unsafe {
            libc::getsockopt(
                self.rx.as_raw_fd(),
                SOL_XDP,
                XDP_STATISTICS,
                (&raw mut stats).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return self.last_drops.get();
        }
        let drops = XskDrops {
            rx_ring_full: stats.rx_ring_full,
            rx_dropped: stats.rx_dropped,
            fill_ring_empty: stats.rx_fill_ring_empty_descs,
        };
        self.last_drops.set(drops);
        drops
    }
}

const SOL_XDP: libc::c_int = 283;
const XDP_STATISTICS: libc::c_int = 7;

impl AsRawFd for XskQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }
}

/// What to do about a failed set-up step.
fn setup_hint(error: &io::Error, step: Step, sizes: XskSizes) -> String {
    let umem = u64::from(sizes.ring) * 2 * u64::from(sizes.frame);
    match error.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            "; AF_XDP sockets need CAP_NET_RAW (and CAP_BPF for the socket map): run as root or grant them".to_owned()
        }
        Some(libc::EBUSY) => {
            "; another AF_XDP socket is bound to this queue: stop that program".to_owned()
        }
        // The kernel charges UMEM to the locked-memory limit unless the
        // process has CAP_IPC_LOCK, and says ENOBUFS when it is over.
        Some(libc::ENOBUFS) if step == Step::RegisterUmem => format!(
            "; each queue's UMEM ({} MiB) is locked memory, over this process's limit (RLIMIT_MEMLOCK, {}): run as root, grant CAP_IPC_LOCK, raise the limit (`ulimit -l`, LimitMEMLOCK= in systemd), or lower --afxdp-ring",
            umem >> 20,
            memlock_text()
        ),
        Some(libc::ENOMEM) => "; lower --afxdp-ring".to_owned(),
        _ => String::new(),
    }
}

/// The locked-memory limit, for messages.
fn memlock_text() -> String {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return "unknown".to_owned();
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".to_owned()
    } else {
        format!("{} KiB", lim.rlim_cur / 1024)
    }
}

/// Sockets opened by [`open`].
pub struct Opened {
    /// One per receive queue, from queue 0.
    pub queues: Vec<XskQueue>,
    /// The mode they are bound in.
    pub mode: XskMode,
    /// Why zero-copy was refused, when auto fell back to copy.
    pub zerocopy_refused: Option<String>,
}

/// Opens a socket on each of `queues` of interface `ifindex`.
///
/// With [`XskModeChoice::Auto`], zero-copy is tried first and copy mode if
/// the driver refuses it.
///
/// # Errors
///
/// [`XskError::ZerocopyRefused`] when zero-copy was required and refused;
/// [`XskError::Setup`] otherwise.
pub fn open(
    ifindex: u32,
    queues: u32,
    choice: XskModeChoice,
    sizes: XskSizes,
) -> Result<Opened, XskError> {
    if let Some(problem) = sizes.problems().into_iter().next() {
        return Err(XskError::BadSize(problem));
    }
    let modes: &[XskMode] = match choice {
        XskModeChoice::Auto => &[XskMode::Zerocopy, XskMode::Copy],
        XskModeChoice::Zerocopy => &[XskMode::Zerocopy],
        XskModeChoice::Copy => &[XskMode::Copy],
    };
    let mut last = None;
    for &mode in modes {
        let flags = SocketConfig::XDP_BIND_NEED_WAKEUP
            | match mode {
                XskMode::Zerocopy => SocketConfig::XDP_BIND_ZEROCOPY,
                XskMode::Copy => SocketConfig::XDP_BIND_COPY,
            };
        let mut opened = Vec::new();
        let mut failed = None;
        for queue in 0..queues {
            match XskQueue::open(ifindex, queue, sizes, flags) {
                Ok(q) => opened.push(q),
                Err(e) => {
                    failed = Some((queue, e));
                    break;
                }
            }
        }
        match failed {
            None => {
                return Ok(Opened {
                    queues: opened,
                    mode,
                    zerocopy_refused: match &last {
                        Some(XskError::ZerocopyRefused { queue, error }) => {
                            Some(format!("{error} (queue {queue})"))
                        }
                        _ => None,
                    },
                });
            }
            Some((queue, (error, Step::Bind))) if mode == XskMode::Zerocopy => {
                last = Some(XskError::ZerocopyRefused { queue, error });
            }
            Some((queue, (error, step))) => {
                let hint = setup_hint(&error, step, sizes);
                return Err(XskError::Setup {
                    step,
                    queue,
                    error,
                    hint,
                });
            }
        }
    }
    Err(last.expect("every mode list is non-empty"))
}

/// A frame from a socket as sinks see it.
fn captured<'a>(
    frame: &'a [u8],
    meta: XskMeta,
    at: (u32, u32),
    clock: &WallClock,
    read_ns: u64,
) -> Captured<'a> {
    let known = meta.ts_ns != 0;
    let (ifindex, queue) = at;
    Captured {
        // The frame is whole, so the parser sees what the program saw; the
        // flags add nothing but are the program's word.
        flags: known.then_some(meta.flags as u8),
        data: frame,
        wire_len: u32::try_from(frame.len()).unwrap_or(u32::MAX),
        ts: clock.unix(if known { meta.ts_ns } else { read_ns }),
        latency_ns: known.then(|| read_ns.saturating_sub(meta.ts_ns)),
        ifindex,
        rx_queue: queue,
        // Only packets whose action is capture are redirected.
        action: Action::from_kernel(action::CAPTURE),
        rule: if known {
            rule_index(meta.rule_id)
        } else {
            None
        },
        sampled: false,
    }
}

/// One socket, either watched by the reactor or paused.
enum Watched {
    Live(AsyncFd<XskQueue>),
    Paused(XskQueue),
    /// Only while moving between the two.
    Moving,
}

impl Watched {
    fn queue(&self) -> &XskQueue {
        match self {
            Watched::Live(fd) => fd.get_ref(),
            Watched::Paused(q) => q,
            Watched::Moving => unreachable!("a socket is never left moving"),
        }
    }

    fn queue_mut(&mut self) -> &mut XskQueue {
        match self {
            Watched::Live(fd) => fd.get_mut(),
            Watched::Paused(q) => q,
            Watched::Moving => unreachable!("a socket is never left moving"),
        }
    }

    /// Watched by the reactor when `live`, else not.
    fn set_live(&mut self, live: bool) -> Result<(), SourceError> {
        let moved = std::mem::replace(self, Watched::Moving);
        *self = match moved {
            Watched::Live(fd) if !live => Watched::Paused(fd.into_inner()),
            Watched::Paused(q) if live => Watched::Live(register(q)?),
            other => other,
        };
        Ok(())
    }
}

fn register(q: XskQueue) -> Result<AsyncFd<XskQueue>, SourceError> {
    // SAFETY: the XskQueue owns its socket fd for as long as the AsyncFd
    // owns the XskQueue.
    unsafe { watch(q, "an AF_XDP socket") }
}

/// The AF_XDP sockets of a run, as one source.
///
/// Read at the pace of [`super::pace`]: a socket is readable at every
/// receive batch of the driver, so while frames flow fast the sockets are
/// taken out of epoll and read on a timer set by the rate (well before the
/// RX ring could fill), and put back when a timed read finds nothing or the
/// rate falls.
pub struct XskSource {
    sockets: Vec<Watched>,
    ifindex: u32,
    pacer: Pacer,
    next: Next,
    clock: WallClock,
}

impl XskSource {
    /// Watches `queues` of interface `ifindex`, each with an RX ring of
    /// `ring` entries, read in `mode`.
    ///
    /// # Errors
    ///
    /// When the reactor cannot poll a socket.
    pub fn new(
        queues: Vec<XskQueue>,
        ifindex: u32,
        ring: u32,
        mode: Mode,
    ) -> Result<Self, SourceError> {
        let sockets = queues
            .into_iter()
            .map(|q| register(q).map(Watched::Live))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            sockets,
            ifindex,
            // Half the RX ring: the pacer reads before a quarter of what it
            // is given fills, so here an eighth of the ring (512 frames by
            // default, 2 ms at 250,000 frames/s), leaving the rest for a
            // reader that is late (a VM's vCPU can be away for milliseconds).
            // Measured in the bench's loss loop (20 runs at the AF_PACKET
            // sender's full rate): reading at a quarter of a 2,048-entry
            // ring, 1 run lost 39 frames; at an eighth, 1 run lost 321 when
            // the reader stalled for 10 ms (8 ms of frames at 254k/s); so
            // the default ring is 4,096 entries, 16 ms at that rate.
            pacer: Pacer::new(mode, f64::from(ring) / 2.0),
            next: Next::Woken,
            clock: WallClock::new(),
        })
    }

    fn drops(&self) -> XskDrops {
        let mut total = XskDrops::default();
        for s in &self.sockets {
            let d = s.queue().drops();
            total.rx_ring_full += d.rx_ring_full;
            total.rx_dropped += d.rx_dropped;
            total.fill_ring_empty += d.fill_ring_empty;
        }
        total
    }
}

impl Source for XskSource {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SourceError>> {
        for s in &mut self.sockets {
            if let Watched::Live(fd) = s
                && let ready @ Poll::Ready(_) = poll_readable(fd, "an AF_XDP socket", cx)
            {
                return ready;
            }
        }
        Poll::Pending
    }

    fn drain(&mut self, deliver: &mut dyn FnMut(&Captured<'_>)) -> Result<Drained, SourceError> {
        let mut drained = Drained::default();
        let mut read_ns = monotonic_ns();
        for s in &mut self.sockets {
            let q = s.queue_mut();
            let at = (self.ifindex, q.queue);
            let clock = &self.clock;
            read_ns = monotonic_ns();
            drained += q.drain(|frame, meta| deliver(&captured(frame, meta, at, clock, read_ns)));
        }
        self.next = self
            .pacer
            .after_read(drained.delivered + drained.undecodable, read_ns);
        Ok(drained)
    }

    fn next_read(&mut self) -> Next {
        let live = self.next == Next::Woken;
        for s in &mut self.sockets {
            if s.set_live(live).is_err() {
                // Not watched: read on a timer instead.
                return Next::After(super::pace::MIN_WAIT);
            }
        }
        if live && self.sockets.iter_mut().any(|s| s.queue_mut().pending()) {
            return Next::Now;
        }
        self.next
    }

    fn handed_over(&self, stats: &Stats) -> u64 {
        stats.xsk_redirected.saturating_sub(self.dropped())
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn dropped(&self) -> u64 {
        let d = self.drops();
        d.rx_ring_full + d.rx_dropped
    }

    fn interval(&mut self) {
        self.clock.resync();
    }

    fn queues(&self) -> Vec<QueueReport> {
        self.sockets
            .iter()
            .map(|s| {
                let q = s.queue();
                let d = q.drops();
                QueueReport {
                    ifindex: self.ifindex,
                    queue: q.queue,
                    delivered: q.delivered,
                    rx_ring_full: d.rx_ring_full,
                    rx_dropped: d.rx_dropped,
                    fill_ring_empty: d.fill_ring_empty,
                }
            })
            .collect()
    }
}
