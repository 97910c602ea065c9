//! The XDP program of `traffic`.
//!
//! For every frame it walks Ethernet, up to two VLAN tags and the IPv4 or IPv6
//! header with one bounds-checked cursor, looks the source address up in a
//! longest-prefix-match trie, and returns the rule's verdict. Every frame ends
//! in [`record`], which counts it exactly once. A frame the parser cannot make
//! sense of is counted as malformed and passed unless a rule matched its
//! (readable) source address: the program never aborts on packet content.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use traffic_common::{Config, Rule, Stats, action};

#[map(name = "RULES_V4")]
static RULES_V4: LpmTrie<[u8; 4], Rule> = LpmTrie::with_max_entries(1, 0);

#[map(name = "RULES_V6")]
static RULES_V6: LpmTrie<[u8; 16], Rule> = LpmTrie::with_max_entries(1, 0);

#[map(name = "STATS")]
static STATS: PerCpuArray<Stats> = PerCpuArray::with_max_entries(1, 0);

/// Written by the loader before the program is loaded; read with a volatile
/// load so the compiler cannot fold the initial value into the code.
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    default_action: action::PASS,
    _reserved: 0,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;

/// How many IPv6 extension headers we walk before giving up on finding the
/// transport header. Real traffic rarely carries more than two.
const MAX_IPV6_EXT_HEADERS: usize = 4;
/// Bounds the cursor so the verifier can prove every packet access safe. An
/// IPv6 header chain that goes past it is not checked further.
const MAX_L3_OFFSET: usize = 1024;

/// How the parser classified a frame: exactly one per frame.
#[derive(Clone, Copy)]
enum Outcome {
    NonIp,
    Malformed,
    Ipv4,
    Ipv6,
}

/// The whole pass over the frame: what it was and what to do with it.
#[derive(Clone, Copy)]
struct Verdict {
    outcome: Outcome,
    action: u32,
}

impl Verdict {
    /// A frame with no source address to classify: passed, whatever the rules.
    const fn unclassified(outcome: Outcome) -> Self {
        Self {
            outcome,
            action: action::PASS,
        }
    }
}

#[repr(C)]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    proto: [u8; 2],
}

#[repr(C)]
struct VlanHdr {
    tci: [u8; 2],
    proto: [u8; 2],
}

#[repr(C)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    tot_len: [u8; 2],
    id: [u8; 2],
    frag_off: [u8; 2],
    ttl: u8,
    proto: u8,
    check: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

#[repr(C)]
struct Ipv6Hdr {
    version_tc_flow: [u8; 4],
    payload_len: [u8; 2],
    next_hdr: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

/// The first two bytes shared by every IPv6 extension header we skip.
#[repr(C)]
struct Ipv6ExtHdr {
    next_hdr: u8,
    len: u8,
}

/// A read position in the frame. All packet reads go through [`Cursor::at`],
/// the one place that checks bounds against `data_end`.
struct Cursor {
    data: usize,
    data_end: usize,
    pos: usize,
}

impl Cursor {
    #[inline(always)]
    fn new(ctx: &XdpContext) -> Self {
        Self {
            data: ctx.data(),
            data_end: ctx.data_end(),
            pos: 0,
        }
    }

    /// Bytes of the frame at and after `offset`.
    #[inline(always)]
    fn remaining_from(&self, offset: usize) -> usize {
        (self.data_end - self.data).saturating_sub(offset)
    }

    /// A pointer to a `T` at `offset` from the start of the frame, if the
    /// whole `T` lies inside it.
    #[inline(always)]
    fn at<T>(&self, offset: usize) -> Option<*const T> {
        let start = self.data + offset;
        if start + size_of::<T>() > self.data_end {
            return None;
        }
        Some(start as *const T)
    }

    /// A pointer to a `T` at the cursor, advancing past it.
    #[inline(always)]
    fn take<T>(&mut self) -> Option<*const T> {
        let ptr = self.at::<T>(self.pos)?;
        self.pos += size_of::<T>();
        Some(ptr)
    }
}

#[xdp]
pub fn traffic(ctx: XdpContext) -> u32 {
    match try_traffic(&ctx) {
        Ok(ret) => ret,
        Err(()) => xdp_action::XDP_ABORTED,
    }
}

/// The cost floor for benchmarks: an XDP program that passes everything.
#[xdp]
pub fn traffic_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn try_traffic(ctx: &XdpContext) -> Result<u32, ()> {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let verdict = classify(ctx);
    record(verdict, len)
}

/// Counts the frame exactly once and turns its action into an XDP verdict.
///
/// Only failure: the per-CPU counter entry cannot be found, which cannot
/// happen for index 0 of a one-entry array; the frame is then aborted so that
/// the loss is visible in the kernel's `xdp_exception` tracepoint.
#[inline(always)]
fn record(verdict: Verdict, len: u64) -> Result<u32, ()> {
    let stats = STATS.get_ptr_mut(0).ok_or(())?;
    // SAFETY: the pointer is this CPU's entry of a per-CPU array; XDP programs
    // run with migration disabled, so no other program writes it concurrently.
    let stats = unsafe { &mut *stats };
    stats.packets += 1;
    stats.bytes += len;
    match verdict.outcome {
        Outcome::NonIp => stats.non_ip += 1,
        Outcome::Malformed => stats.malformed += 1,
        Outcome::Ipv4 => stats.ipv4 += 1,
        Outcome::Ipv6 => stats.ipv6 += 1,
    }
    match verdict.action {
        action::DROP => {
            stats.drop += 1;
            stats.drop_bytes += len;
            Ok(xdp_action::XDP_DROP)
        }
        action::CAPTURE => {
            stats.capture += 1;
            stats.capture_bytes += len;
            Ok(xdp_action::XDP_PASS)
        }
        _ => {
            stats.pass += 1;
            stats.pass_bytes += len;
            Ok(xdp_action::XDP_PASS)
        }
    }
}

#[inline(always)]
fn be16(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> Verdict {
    let mut cur = Cursor::new(ctx);
    let Some(eth) = cur.take::<EthHdr>() else {
        return Verdict::unclassified(Outcome::Malformed);
    };
    // SAFETY: `take` checked that the header lies inside the frame.
    let mut proto = be16(unsafe { (*eth).proto });
    // Up to two tags: 802.1Q, or 802.1ad outer with 802.1Q inner (QinQ).
    for _ in 0..2 {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        let Some(vlan) = cur.take::<VlanHdr>() else {
            return Verdict::unclassified(Outcome::Malformed);
        };
        // SAFETY: bounds checked by `take`.
        proto = be16(unsafe { (*vlan).proto });
    }
    match proto {
        ETH_P_IP => classify_ipv4(&mut cur),
        ETH_P_IPV6 => classify_ipv6(&mut cur),
        _ => Verdict::unclassified(Outcome::NonIp),
    }
}

#[inline(always)]
fn config() -> Config {
    // SAFETY: CONFIG is a plain static; the volatile read stops the compiler
    // from assuming the value it was initialised with.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

#[inline(always)]
fn rule_action(rule: Option<&Rule>) -> u32 {
    match rule {
        Some(rule) => rule.action,
        None => config().default_action,
    }
}

/// The smallest transport header we expect for `proto`, or 0 for protocols
/// whose header we do not inspect.
#[inline(always)]
fn min_l4_len(proto: u8) -> usize {
    match proto {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => 8,
        _ => 0,
    }
}

#[inline(always)]
fn classify_ipv4(cur: &mut Cursor) -> Verdict {
    let l3 = cur.pos;
    let Some(ip) = cur.take::<Ipv4Hdr>() else {
        return Verdict::unclassified(Outcome::Malformed);
    };
    // SAFETY: bounds checked by `take`.
    let ip = unsafe { &*ip };
    let ihl = (ip.version_ihl & 0x0f) as usize * 4;
    if ip.version_ihl >> 4 != 4 || ihl < IPV4_HLEN {
        return Verdict::unclassified(Outcome::Malformed);
    }
    let key = Key::new(32, ip.src);
    let action = rule_action(RULES_V4.get(&key));
    let malformed = Verdict {
        outcome: Outcome::Malformed,
        action,
    };

    // The frame may carry Ethernet padding after the datagram, never less.
    let total = be16(ip.tot_len) as usize;
    if total < ihl || total > cur.remaining_from(l3) {
        return malformed;
    }
    // Only the first fragment (offset 0) carries the transport header.
    let frag_offset = be16(ip.frag_off) & 0x1fff;
    if frag_offset == 0 && total - ihl < min_l4_len(ip.proto) {
        return malformed;
    }
    if frag_offset == 0 && ip.proto == IPPROTO_TCP {
        // TCP's data offset must cover at least its fixed header.
        let Some(tcp) = cur.at::<[u8; 13]>(l3 + (ihl & 0x3c)) else {
            return malformed;
        };
        // SAFETY: bounds checked by `at`.
        let doff = (unsafe { (*tcp)[12] } >> 4) as usize * 4;
        if doff < 20 || doff > total - ihl {
            return malformed;
        }
    }
    Verdict {
        outcome: Outcome::Ipv4,
        action,
    }
}

#[inline(always)]
fn classify_ipv6(cur: &mut Cursor) -> Verdict {
    let l3 = cur.pos;
    let Some(ip) = cur.take::<Ipv6Hdr>() else {
        return Verdict::unclassified(Outcome::Malformed);
    };
    // SAFETY: bounds checked by `take`.
    let ip = unsafe { &*ip };
    if ip.version_tc_flow[0] >> 4 != 6 {
        return Verdict::unclassified(Outcome::Malformed);
    }
    let key = Key::new(128, ip.src);
    let action = rule_action(RULES_V6.get(&key));
    let malformed = Verdict {
        outcome: Outcome::Malformed,
        action,
    };
    let well_formed = Verdict {
        outcome: Outcome::Ipv6,
        action,
    };

    let payload = be16(ip.payload_len) as usize;
    if payload > cur.remaining_from(l3 + IPV6_HLEN) {
        return malformed;
    }
    // Walk the extension headers to find the transport header, so that a
    // truncated one is reported the same way as for IPv4.
    let end = l3 + IPV6_HLEN + payload;
    let mut next = ip.next_hdr;
    let mut pos = cur.pos;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let hdr_len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT | IPPROTO_AH => {
                if pos > MAX_L3_OFFSET {
                    return well_formed;
                }
                let Some(ext) = cur.at::<Ipv6ExtHdr>(pos) else {
                    return malformed;
                };
                // SAFETY: bounds checked by `at`.
                let ext = unsafe { &*ext };
                let len = match next {
                    IPPROTO_FRAGMENT => {
                        let Some(frag) = cur.at::<[u8; 8]>(pos) else {
                            return malformed;
                        };
                        // SAFETY: bounds checked by `at`.
                        let frag = unsafe { &*frag };
                        if be16([frag[2], frag[3]]) & 0xfff8 != 0 {
                            // A later fragment: no transport header here.
                            return if pos + 8 > end {
                                malformed
                            } else {
                                well_formed
                            };
                        }
                        8
                    }
                    IPPROTO_AH => (ext.len as usize + 2) * 4,
                    _ => (ext.len as usize + 1) * 8,
                };
                next = ext.next_hdr;
                len
            }
            _ => break,
        };
        pos += hdr_len;
        if pos > end {
            return malformed;
        }
    }
    if end - pos.min(end) < min_l4_len(next) {
        return malformed;
    }
    well_formed
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
