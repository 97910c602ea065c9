//! The little rtnetlink we need: which XDP program an interface has, and
//! removing one attached through netlink (for `--force`).
//!
//! aya attaches through bpf_link and keeps its own netlink code private, so
//! we speak rtnetlink directly. All socket calls go through one `Socket` type.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
/// `RTMGRP_LINK`: the multicast group of link changes.
const RTMGRP_LINK: u32 = 1;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | (1 << 14));
const IFLA_XDP: u16 = 43;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;

/// `XDP_FLAGS_SKB_MODE` from `linux/if_link.h`.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `XDP_FLAGS_HW_MODE`.
pub const XDP_FLAGS_HW_MODE: u32 = 1 << 3;

/// An XDP program found on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachedProgram {
    /// The kernel's program id.
    pub id: u32,
    /// The `XDP_FLAGS_*_MODE` it runs in.
    pub mode_flag: u32,
}

impl AttachedProgram {
    /// The mode as a word: `native`, `skb` or `offload`.
    pub fn mode_name(&self) -> &'static str {
        match self.mode_flag {
            XDP_FLAGS_SKB_MODE => "skb",
            XDP_FLAGS_HW_MODE => "offload",
            _ => "native",
        }
    }
}

/// A netlink route socket.
struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain syscall with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends one request and collects the messages of the reply until an ack,
    /// an error or `NLMSG_DONE`.
    fn request(&self, msg: &[u8]) -> io::Result<Vec<(u16, Vec<u8>)>> {
        // SAFETY: `msg` is a valid buffer of `msg.len()` bytes.
        let sent = unsafe { libc::send(self.0.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut replies = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
                if len < 16 || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let payload = &rest[16..len];
                match kind {
                    NLMSG_ERROR => {
                        let code = i32::from_ne_bytes(payload[0..4].try_into().unwrap());
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        return Ok(replies);
                    }
                    NLMSG_DONE => return Ok(replies),
                    _ => replies.push((kind, payload.to_vec())),
                }
                rest = &rest[align4(len).min(rest.len())..];
            }
        }
    }
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds a netlink message: header, `ifinfomsg`, then attributes.
fn link_message(kind: u16, flags: u16, ifindex: u32, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 16 + attrs.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    // struct ifinfomsg { family, pad, type, index, flags, change }
    msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    msg.extend_from_slice(&0u16.to_ne_bytes());
    msg.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(attrs);
    msg
}

fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity(align4(len));
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(align4(len), 0);
    out
}

/// Iterates `(type, value)` over a run of netlink attributes.
fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let value = &data[4..len];
        data = &data[align4(len).min(data.len())..];
        Some((kind, value))
    })
}

fn u32_of(value: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?))
}

/// What the kernel says of interface `ifindex` (`RTM_GETLINK`): each
/// `RTM_NEWLINK` payload, a 16-byte `ifinfomsg` and its attributes.
///
/// # Errors
///
/// When the netlink socket cannot be used or the interface does not exist
/// (`ENODEV`).
fn describe_link(ifindex: u32) -> io::Result<Vec<Vec<u8>>> {
    let sock = Socket::open()?;
    let replies = sock.request(&link_message(RTM_GETLINK, NLM_F_ACK, ifindex, &[]))?;
    Ok(replies
        .into_iter()
        .filter(|(kind, payload)| *kind == RTM_NEWLINK && payload.len() >= 16)
        .map(|(_, payload)| payload)
        .collect())
}

/// The XDP programs attached to interface `ifindex`, one per mode.
///
/// # Errors
///
/// When the netlink socket cannot be used or the interface does not exist
/// (`ENODEV`).
pub fn attached_programs(ifindex: u32) -> io::Result<Vec<AttachedProgram>> {
    let mut found = Vec::new();
    for payload in describe_link(ifindex)? {
        for (kind, value) in attrs(&payload[16..]) {
            if kind != IFLA_XDP {
                continue;
            }
            let mut single = None;
            let mut attached_mode = 0u8;
            for (kind, value) in attrs(value) {
                match kind {
                    IFLA_XDP_ATTACHED => attached_mode = value.first().copied().unwrap_or(0),
                    IFLA_XDP_PROG_ID => single = u32_of(value),
                    IFLA_XDP_DRV_PROG_ID | IFLA_XDP_SKB_PROG_ID | IFLA_XDP_HW_PROG_ID => {
                        let mode_flag = match kind {
                            IFLA_XDP_DRV_PROG_ID => XDP_FLAGS_DRV_MODE,
                            IFLA_XDP_SKB_PROG_ID => XDP_FLAGS_SKB_MODE,
                            _ => XDP_FLAGS_HW_MODE,
                        };
                        if let Some(id) = u32_of(value).filter(|&id| id != 0) {
                            found.push(AttachedProgram { id, mode_flag });
                        }
                    }
                    _ => {}
                }
            }
            // With one program attached the kernel reports IFLA_XDP_PROG_ID
            // and the mode in IFLA_XDP_ATTACHED (1 driver, 2 skb, 3 hw).
            if found.is_empty()
                && let Some(id) = single.filter(|&id| id != 0)
            {
                let mode_flag = match attached_mode {
                    2 => XDP_FLAGS_SKB_MODE,
                    3 => XDP_FLAGS_HW_MODE,
                    _ => XDP_FLAGS_DRV_MODE,
                };
                found.push(AttachedProgram { id, mode_flag });
            }
        }
    }
    Ok(found)
}

/// Attaches the program `prog_fd` to `ifindex` through netlink (the legacy
/// way, which outlives the process), in `mode_flag`'s mode; `-1` detaches.
///
/// traffic itself attaches through bpf_link; this exists to remove
/// netlink-attached programs for `--force`, and for tests that need one.
///
/// # Errors
///
/// `EBUSY` when a bpf_link holds the interface's XDP slot (only its owner
/// can remove it), `EEXIST` when a program runs in another mode, or any other
/// netlink error.
pub fn set_xdp_fd(ifindex: u32, prog_fd: i32, mode_flag: u32) -> io::Result<()> {
    let mut nested = attr(IFLA_XDP_FD, &prog_fd.to_ne_bytes());
    nested.extend(attr(IFLA_XDP_FLAGS, &mode_flag.to_ne_bytes()));
    let xdp = attr(IFLA_XDP | NLA_F_NESTED, &nested);
    let sock = Socket::open()?;
    sock.request(&link_message(RTM_SETLINK, NLM_F_ACK, ifindex, &xdp))
        .map(|_| ())
}

/// How many receive queues interface `name` (index `ifindex`) uses: the
/// driver's channel counts (`ethtool -l`), or where the driver has none, the
/// queues the kernel allocated.
///
/// # Errors
///
/// When neither query answers.
pub fn rx_queues(name: &str, ifindex: u32) -> io::Result<u32> {
    match ethtool_rx_channels(name) {
        Ok(n) if n > 0 => Ok(n),
        _ => allocated_rx_queues(ifindex),
    }
}

/// `ETHTOOL_GCHANNELS`: the receive and combined channels in use.
fn ethtool_rx_channels(name: &str) -> io::Result<u32> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    // struct ethtool_channels: cmd, max_rx, max_tx, max_other,
    // max_combined, rx_count, tx_count, other_count, combined_count.
    let mut channels = [0u32; 9];
    channels[0] = ETHTOOL_GCHANNELS;
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = channels.as_mut_ptr().cast();
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is new and owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `req` names the interface and points at `channels`, which
    // outlives the call and is as large as the kernel writes.
    if unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(channels[5] + channels[8])
}

/// The receive queues the kernel allocated (`IFLA_NUM_RX_QUEUES`).
fn allocated_rx_queues(ifindex: u32) -> io::Result<u32> {
    describe_link(ifindex)?
        .iter()
        .flat_map(|payload| {
            attrs(&payload[16..])
                .filter(|(k, _)| *k == IFLA_NUM_RX_QUEUES)
                .map(|(_, v)| u32_of(v))
                .collect::<Vec<_>>()
        })
        .flatten()
        .next()
        .ok_or_else(|| io::Error::other("the kernel did not report the number of receive queues"))
}

/// Whether interface `ifindex` is administratively up (`IFF_UP`, from its
/// `ifinfomsg`): an XDP program attaches to a down interface, and sees
/// nothing until it is up.
///
/// # Errors
///
/// When the kernel does not answer.
pub fn is_up(ifindex: u32) -> io::Result<bool> {
    describe_link(ifindex)?
        .first()
        // struct ifinfomsg: family, pad, type (2), index (4), flags (4).
        .map(|payload| u32::from_ne_bytes([payload[8], payload[9], payload[10], payload[11]]))
        .map(|flags| flags & libc::IFF_UP as u32 != 0)
        .ok_or_else(|| io::Error::other("the kernel did not describe the interface"))
}

/// Removes the XDP program attached through netlink in `mode_flag`'s mode.
///
/// # Errors
///
/// As [`set_xdp_fd`].
pub fn detach(ifindex: u32, mode_flag: u32) -> io::Result<()> {
    set_xdp_fd(ifindex, -1, mode_flag)
}

/// `if_nametoindex`, or `None` when there is no such interface.
pub fn ifindex(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

const _: () = assert!(size_of::<libc::nlmsghdr>() == 16);

/// A subscription to the kernel's link events, to learn when an interface
/// goes away (deleted, or moved to another namespace) while traffic runs.
pub struct LinkWatch {
    sock: Socket,
    ifindex: u32,
}

impl LinkWatch {
    /// Subscribes to link events about interface `ifindex`.
    ///
    /// # Errors
    ///
    /// When the netlink socket cannot be opened or bound.
    pub fn open(ifindex: u32) -> io::Result<Self> {
        let sock = Socket::open()?;
        let fd = sock.0.as_raw_fd();
        // SAFETY: an all-zero sockaddr_nl is valid; the fields are set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = RTMGRP_LINK;
        // SAFETY: `addr` is a valid sockaddr_nl of the length given.
        let rc = unsafe {
            libc::bind(
                fd,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fcntl on the descriptor `sock` owns.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { sock, ifindex })
    }

    /// Reads the events waiting; true when one says the interface is gone.
    /// An overflowed queue (`ENOBUFS`) is answered by asking the kernel
    /// whether the interface still exists.
    ///
    /// # Errors
    ///
    /// When the socket fails otherwise.
    pub fn gone(&self) -> io::Result<bool> {
        let mut buf = vec![0u8; 32 * 1024];
        let mut gone = false;
        loop {
            // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes.
            let n = unsafe {
                libc::recv(
                    self.sock.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(gone),
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        gone |= !self.exists()?;
                        continue;
                    }
                    _ => return Err(err),
                }
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 16 + 8 {
                let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
                if len < 16 || len > rest.len() {
                    break;
                }
                // struct ifinfomsg: family, pad, type, then the index.
                let index = i32::from_ne_bytes(rest[20..24].try_into().unwrap());
                if kind == RTM_DELLINK && u32::try_from(index) == Ok(self.ifindex) {
                    gone = true;
                }
                rest = &rest[align4(len).min(rest.len())..];
            }
        }
    }

    /// Whether the interface still exists in this namespace.
    ///
    /// # Errors
    ///
    /// When the query fails for another reason than the interface's absence.
    pub fn exists(&self) -> io::Result<bool> {
        match attached_programs(self.ifindex) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the watched interface is up ([`is_up`]).
    ///
    /// # Errors
    ///
    /// As [`is_up`].
    pub fn is_up(&self) -> io::Result<bool> {
        is_up(self.ifindex)
    }
}

impl std::os::fd::AsRawFd for LinkWatch {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.0.as_raw_fd()
    }
}
