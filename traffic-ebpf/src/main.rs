//! The XDP program of `traffic`.
//!
//! For every frame it walks Ethernet, up to two VLAN tags and the IPv4 or IPv6
//! header with one bounds-checked cursor, looks the source address up in the
//! rule table (a multibit trie, see [`traffic_common::table`]), and returns
//! the rule's verdict. Every frame ends in [`record`], which counts it
//! exactly once. A frame the parser cannot make sense of is counted as
//! malformed and passed unless a rule matched its (readable) source
//! address: the program never aborts on packet content.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

use core::mem::size_of;

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, xdp_action},
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_xdp_adjust_meta, bpf_xdp_load_bytes},
    },
    macros::{map, xdp},
    maps::{Array, PerCpuArray, RingBuf, XskMap},
    programs::XdpContext,
};
use aya_log_ebpf::info;
use traffic_common::{
    Config, Count, CpuState, EventHeader, MAX_SNAPLEN, NO_RULE, TopKey, XskMeta, action,
    event_flags, rule_slot, table, top, why,
};

/// The rule tables: [`table`] entries, sixteen to an array element (array
/// values take at least 8 bytes each; a block of 16 wastes none and is one
/// cache line). Two tables of equal size, one after the other: the one in
/// force, which [`TABLE_BASE`] points at, and the one the loader writes the
/// next rule set into. The loader sets the size and fills it through a
/// memory mapping.
#[map(name = "TABLE")]
static TABLE: Array<[u32; table::BLOCK as usize]> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The first block of the table in force. The loader swaps rule sets by
/// writing it, after the new table is complete; a packet reads it once, so
/// it is classified by one table, whole.
#[map(name = "TABLE_BASE")]
static TABLE_BASE: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "STATS")]
static STATS: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

/// Frames this CPU explained (`--explain`); only its copy of the program
/// touches it.
#[map(name = "EXPLAINED")]
static EXPLAINED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Capture events. The loader sets the size (`--ring-size`).
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// The reader's wake-up request (see [`wake_reader_if_asked`]). Mapped into
/// the reader's memory, so asking costs it no system call.
#[map(name = "WAKE")]
static WAKE: Array<u32> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// AF_XDP sockets by receive queue (`--afxdp`). The loader sizes it to the
/// interface's queues.
#[map(name = "XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(64, 0);

/// Packets and bytes per rule, per CPU: see [`rule_slot`]; a part of
/// [`rule_slot::total`] slots per CPU, CPU 0's first. Each CPU writes only
/// its own part. One array rather than a per-CPU one: a per-CPU array's
/// lookup first reads the element's per-CPU pointer from an array of them
/// (a megabyte for 65,536 rules a table), a second dependent
/// load that missed the cache live; and userspace maps this one
/// (BPF_F_MMAPABLE) and reads it without a system call. The loader sets the
/// size from [`Config::rule_slots`] and the possible CPUs.
#[map(name = "RULE_COUNTS")]
static RULE_COUNTS: Array<Count> = Array::with_max_entries(1, aya_ebpf::bindings::BPF_F_MMAPABLE);

/// The per-CPU logs of the sources of IP frames (`--top`, `--ipfix`):
/// [`traffic_common::top::LOG_UNITS`] units per CPU, CPU 0's first. Each
/// CPU writes only its own part; userspace maps the array (BPF_F_MMAPABLE)
/// and reads it without a system call. The loader sets the size.
#[map(name = "TOP_LOG")]
static TOP_LOG: Array<u64> = Array::with_max_entries(
    traffic_common::top::LOG_UNITS,
    aya_ebpf::bindings::BPF_F_MMAPABLE,
);

/// Each CPU's log head (written here) and tail (written by the loader):
/// [`traffic_common::top::POS_WORDS`] words per CPU. The loader sets the
/// size.
#[map(name = "TOP_POS")]
static TOP_POS: Array<u64> = Array::with_max_entries(
    traffic_common::top::POS_WORDS,
    aya_ebpf::bindings::BPF_F_MMAPABLE,
);

/// Written by the loader before the program is loaded; read with a volatile
/// load so the compiler cannot fold the initial value into the code.
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    default_action: action::PASS,
    snaplen: traffic_common::DEFAULT_SNAPLEN,
    sample_every: 0,
    afxdp: 0,
    explain: 0,
    rule_slots: 0,
    top: 0,
    top_mask_v4: u32::MAX,
    top_mask_v6: [u32::MAX; 4],
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
/// Bounds the cursor so the verifier can prove every packet access safe.
/// Four extension headers of the largest size (2,048 bytes each) end
/// before it, so in practice the walk is bounded by the header count.
const MAX_L3_OFFSET: usize = 16 * 1024 - 1;

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
    rule_id: u32,
    /// 4, 6, or 0 when no IP header was classified.
    version: u8,
    later_fragment: bool,
    /// Why the frame is malformed or not IP ([`why`]).
    why: u8,
    /// Its source is in no top-talker count: the map had no room.
    untracked: bool,
    /// The rule table that classified it (0 or 1).
    half: u32,
}

impl Verdict {
    /// A frame with no source address to classify: passed, whatever the rules.
    const fn unclassified(outcome: Outcome, why: u8) -> Self {
        Self {
            why,
            outcome,
            action: action::PASS,
            rule_id: NO_RULE,
            version: 0,
            later_fragment: false,
            untracked: false,
            half: 0,
        }
    }

    /// This frame, classified by its source, counted as malformed.
    const fn malformed(mut self, why: u8) -> Self {
        self.outcome = Outcome::Malformed;
        self.why = why;
        self
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
    // Addresses as 16-bit words: every header offset is even, so LLVM may
    // load them two bytes at a time instead of calling memcpy byte by byte.
    src: [u16; 2],
    dst: [u16; 2],
}

#[repr(C)]
struct Ipv6Hdr {
    version_tc_flow: [u8; 4],
    payload_len: [u8; 2],
    next_hdr: u8,
    hop_limit: u8,
    src: [u16; 8],
    dst: [u16; 8],
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
// Inlined into the entry point the macro wraps it in: LLVM otherwise left
// it a BPF-to-BPF call once --top's code joined it (a call and a stack
// frame per packet, about 10 ns).
#[inline(always)]
pub fn traffic(ctx: XdpContext) -> u32 {
    // Two copies of the program, one with --explain's code and one without:
    // `explain` is a constant to the verifier (frozen read-only config), so
    // it keeps one and drops the other. The copy without is the program as
    // it was before --explain existed, but for 11 instructions over all its
    // paths (xlated 10,224 bytes against 10,136; JIT 6,189 against 6,169);
    // with a single copy and a branch on `explain`, LLVM laid the hot path
    // out worse and the drop path measured slower.
    let result = if config().explain != 0 {
        try_traffic::<true>(&ctx)
    } else {
        try_traffic::<false>(&ctx)
    };
    match result {
        Ok(ret) => ret,
        Err(()) => xdp_action::XDP_ABORTED,
    }
}

#[inline(always)]
fn try_traffic<const EXPLAIN: bool>(ctx: &XdpContext) -> Result<u32, ()> {
    let len = (ctx.data_end() - ctx.data()) as u64;
    // Read once: the packet is classified by one table, whole, and counted
    // in that table's rule slots.
    let base = TABLE_BASE.get(0).copied().unwrap_or(0);
    let mut verdict = classify(ctx, base * table::BLOCK);
    verdict.half = u32::from(base != 0);
    let state = STATS.get_ptr_mut(0).ok_or(())?;
    // SAFETY: the pointer is this CPU's entry of a per-CPU array; XDP programs
    // run with migration disabled, so no other program writes it concurrently.
    let state = unsafe { &mut *state };
    let ret = record(state, &verdict, len);
    let cfg = config();
    if cfg.rule_slots != 0 {
        count_rule(&verdict, cfg.rule_slots, len);
    }
    if EXPLAIN
        && !matches!(verdict.outcome, Outcome::Ipv4 | Outcome::Ipv6)
        && let Some(explained) = EXPLAINED.get_ptr_mut(0)
    {
        // SAFETY: this CPU's entry of a per-CPU array, as for STATS.
        let explained = unsafe { &mut *explained };
        if *explained < u64::from(cfg.explain) {
            *explained += 1;
            explain(ctx, &verdict, len);
        }
    }
    let mut flags = 0;
    let mut deliver = verdict.action == action::CAPTURE;
    if cfg.sample_every != 0 {
        if state.sample_left == 0 {
            state.sample_left = u64::from(cfg.sample_every - 1);
            if !deliver {
                deliver = true;
                flags |= event_flags::SAMPLED;
                state.stats.sampled += 1;
            }
        } else {
            state.sample_left -= 1;
        }
    }
    if cfg.afxdp != 0 && verdict.action == action::CAPTURE {
        return Ok(redirect_to_socket(ctx, state, &verdict));
    }
    if deliver {
        emit_event(ctx, state, &verdict, flags, &cfg);
    }
    Ok(ret)
}

/// Logs why a frame is malformed or not IP, through aya-log. The reason goes
/// as its [`why`] code, which userspace turns into words: a lookup of the
/// words here would make the verifier track every path's code apart.
/// Inlined: as a call of its own, its frame on top of the classifier's
/// would pass the 512-byte stack limit.
#[inline(always)]
fn explain(ctx: &XdpContext, v: &Verdict, len: u64) {
    let kind = if matches!(v.outcome, Outcome::NonIp) {
        "non-IP"
    } else {
        "malformed"
    };
    let act = match v.action {
        action::DROP => "dropped",
        action::CAPTURE => "captured",
        _ => "passed",
    };
    info!(
        ctx,
        "{} frame of {} bytes on queue {}: reason {}; {}",
        kind,
        len,
        ctx.rx_queue_index(),
        v.why,
        act
    );
}

/// Sends a frame to capture, whole, to the AF_XDP socket of its receive
/// queue, with an [`XskMeta`] (the hook's timestamp, the rule that matched,
/// the parser's flags) in the metadata area in front of it. Without a socket
/// on that queue the frame is passed and counted.
#[inline(always)]
fn redirect_to_socket(ctx: &XdpContext, state: &mut CpuState, v: &Verdict) -> u32 {
    // SAFETY: helper calls with the program's own context.
    let now = unsafe { bpf_ktime_get_ns() };
    let meta_len = traffic_common::AFXDP_META_LEN as i32;
    // SAFETY: as above. Moving data_meta invalidates earlier packet
    // pointers; none is used after this.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -meta_len) } == 0 {
        let meta = ctx.metadata();
        if meta + traffic_common::AFXDP_META_LEN <= ctx.data() {
            let value = XskMeta {
                ts_ns: now,
                rule_id: v.rule_id,
                flags: u32::from(parse_flags(v)),
            };
            // SAFETY: the metadata lies between data_meta and data, checked
            // just above as the verifier requires.
            unsafe { core::ptr::write_unaligned(meta as *mut XskMeta, value) };
        }
    }
    match XSKS.redirect(ctx.rx_queue_index(), u64::from(xdp_action::XDP_PASS)) {
        Ok(ret) => {
            state.stats.xsk_redirected += 1;
            ret
        }
        Err(ret) => {
            state.stats.xsk_unbound += 1;
            ret
        }
    }
}

/// Adds the frame to its rule's counters ([`rule_slot`]).
#[inline(always)]
fn count_rule(v: &Verdict, slots: u32, len: u64) {
    let slot = if v.rule_id != NO_RULE {
        rule_slot::of(v.half, slots, v.rule_id)
    } else if v.version != 0 {
        rule_slot::DEFAULT
    } else {
        rule_slot::UNCLASSIFIED
    };
    // SAFETY: a helper without arguments.
    let cpu = unsafe { aya_ebpf::helpers::bpf_get_smp_processor_id() };
    if let Some(count) = RULE_COUNTS.get_ptr_mut(cpu * rule_slot::total(slots) + slot) {
        // SAFETY: in this CPU's part, which no other CPU writes; XDP runs
        // with migration disabled.
        let count = unsafe { &mut *count };
        count.packets += 1;
        count.bytes += len;
    }
}

/// Logs an IPv4 source (masked to `--top-prefix`) and a frame of `len`
/// bytes for the loader to count; `false` when the log has no room.
#[inline(always)]
fn track_v4(addr: u32, len: u64) -> bool {
    let Some((cpu, head, at)) = log_room(1) else {
        return false;
    };
    if !log_put(cpu, at, top::v4_unit(addr, len)) {
        return false;
    }
    publish(head, at + 1);
    true
}

/// Logs an IPv6 source (masked to `--top-prefix6`), as [`track_v4`].
#[inline(always)]
fn track_v6(key: &TopKey, len: u64) -> bool {
    let Some((cpu, head, at)) = log_room(3) else {
        return false;
    };
    let w = key.words;
    if !(log_put(cpu, at, top::v6_unit(len))
        && log_put(cpu, at + 1, (u64::from(w[0]) << 32) | u64::from(w[1]))
        && log_put(cpu, at + 2, (u64::from(w[2]) << 32) | u64::from(w[3])))
    {
        return false;
    }
    publish(head, at + 3);
    true
}

/// This CPU, its log's head and the head's value, when the log has room for
/// `units` more units.
#[inline(always)]
fn log_room(units: u64) -> Option<(u32, *mut u64, u64)> {
    // SAFETY: a helper without arguments.
    let cpu = unsafe { aya_ebpf::helpers::bpf_get_smp_processor_id() };
    let head = TOP_POS.get_ptr_mut(cpu * top::POS_WORDS + top::HEAD)?;
    let tail = TOP_POS.get_ptr(cpu * top::POS_WORDS + top::TAIL)?;
    // SAFETY: valid map values; only this CPU writes its head (XDP runs
    // with migration disabled), the loader writes the tail, hence volatile.
    let (at, tail) = unsafe { (*head, core::ptr::read_volatile(tail)) };
    if at.wrapping_sub(tail) + units > u64::from(top::LOG_UNITS) {
        return None;
    }
    Some((cpu, head, at))
}

/// Writes `unit` at position `at` of `cpu`'s log.
#[inline(always)]
fn log_put(cpu: u32, at: u64, unit: u64) -> bool {
    let i = cpu * top::LOG_UNITS + (at as u32 & (top::LOG_UNITS - 1));
    let Some(slot) = TOP_LOG.get_ptr_mut(i) else {
        return false;
    };
    // SAFETY: a valid map value in this CPU's part, between the tail and
    // the head the loader has not yet seen, so it does not read it.
    // Volatile, so that it is written before the head that publishes it.
    unsafe { core::ptr::write_volatile(slot, unit) };
    true
}

/// Publishes the units before `at` to the loader. The stores before it are
/// volatile, so they stay before it, and x86 keeps stores in order.
#[inline(always)]
fn publish(head: *mut u64, at: u64) {
    // SAFETY: this CPU's head, as in `log_room`.
    unsafe { core::ptr::write_volatile(head, at) };
}

/// Counts the frame exactly once and turns its action into an XDP verdict.
#[inline(always)]
fn record(state: &mut CpuState, verdict: &Verdict, len: u64) -> u32 {
    let stats = &mut state.stats;
    stats.packets += 1;
    stats.bytes += len;
    match verdict.outcome {
        Outcome::NonIp => stats.non_ip += 1,
        Outcome::Malformed => stats.malformed += 1,
        Outcome::Ipv4 => {
            stats.ipv4 += 1;
            stats.ipv4_bytes += len;
        }
        Outcome::Ipv6 => {
            stats.ipv6 += 1;
            stats.ipv6_bytes += len;
        }
    }
    if verdict.untracked {
        stats.untracked += 1;
        stats.untracked_bytes += len;
    }
    match verdict.action {
        action::DROP => {
            stats.drop += 1;
            stats.drop_bytes += len;
            xdp_action::XDP_DROP
        }
        action::CAPTURE => {
            stats.capture += 1;
            stats.capture_bytes += len;
            xdp_action::XDP_PASS
        }
        _ => {
            stats.pass += 1;
            stats.pass_bytes += len;
            xdp_action::XDP_PASS
        }
    }
}

/// One capture event as reserved in the ring: the header, then room for
/// `N` bytes of the frame, of which the header's `cap_len` are used.
#[repr(C)]
struct Record<const N: usize> {
    header: EventHeader,
    data: [u8; N],
}

/// Writes a capture event, or counts it lost when the ring is full.
///
/// A reservation must have a size the verifier knows, so records come in
/// classes of 64, 128, 256 ... 4,096 data bytes and an event takes the
/// smallest that holds its captured bytes: a 60-byte frame takes 96 bytes
/// of the ring (with the ring's own 8-byte header), where a reservation
/// sized for the default snaplen took 224. `cfg.snaplen` is a constant to
/// the verifier, which prunes the classes above it.
///
/// Reserving and filling the record in place measured about 50 ns cheaper
/// per event than `bpf_ringbuf_output` of an exact length from a per-CPU
/// scratch buffer (226 against 278 ns by test_run), whose copy and extra
/// checks cost more than the bytes a class leaves unused.
///
/// Where the rest of an event's cost goes, by test_run on a 64-byte frame
/// (about 155 ns against 52 for a drop): `bpf_ktime_get_ns` 38 ns (the
/// benchmark's `floor+clock` row), the ring's reservation and commit (a
/// spin lock, an atomic exchange) about 20 to 30, the frame's bytes about
/// 5 ([`copy_linear`]).
///
/// The reader is not woken here unless it asked to be ([`WAKE`]): it reads
/// on its own schedule while events flow, and nothing in this path touches
/// the consumer's cache lines (no ring query).
#[inline(always)]
fn emit_event(ctx: &XdpContext, state: &mut CpuState, v: &Verdict, flags: u8, cfg: &Config) {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // The program is loaded without BPF_F_XDP_HAS_FRAGS, so the kernel
    // never runs it on a multi-buffer frame: the linear data is the whole
    // frame, and `bpf_xdp_get_buff_len` (a helper call, about 7 ns by
    // test_run here) would say the same.
    let wire_len = (ctx.data_end() - ctx.data()) as u32;
    let mut cap = if wire_len < cfg.snaplen {
        wire_len
    } else {
        cfg.snaplen
    };
    if cap > MAX_SNAPLEN {
        cap = MAX_SNAPLEN;
    }
    let header = EventHeader {
        ts_ns: now,
        wire_len,
        rule_id: v.rule_id,
        cap_len: cap as u16,
        rx_queue: ctx.rx_queue_index() as u16,
        action: v.action as u8,
        flags: flags | parse_flags(v),
        _pad: 0,
    };
    let written = match cap {
        0..=64 => emit::<64>(ctx, header, cap),
        65..=128 => emit::<128>(ctx, header, cap),
        129..=256 => emit::<256>(ctx, header, cap),
        257..=512 => emit::<512>(ctx, header, cap),
        513..=1024 => emit::<1024>(ctx, header, cap),
        1025..=2048 => emit::<2048>(ctx, header, cap),
        _ => emit::<4096>(ctx, header, cap),
    };
    if !written {
        state.stats.events_lost += 1;
        return;
    }
    state.stats.events += 1;
    wake_reader_if_asked();
}

/// Reserves a record of class `N`, copies `cap` bytes of the frame and the
/// header into it and commits it. `false` when the ring is full.
#[inline(always)]
fn emit<const N: usize>(ctx: &XdpContext, mut header: EventHeader, cap: u32) -> bool {
    let Some(mut entry) = EVENTS.reserve::<Record<N>>(0) else {
        return false;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at the reserved record.
    let data = unsafe { (*rec).data.as_mut_ptr() };
    let copied = if N <= DIRECT_COPY_MAX && copy_linear::<N>(ctx, data, cap as usize) {
        cap
    } else {
        load_frame::<N>(ctx, data, cap)
    };
    header.cap_len = copied as u16;
    // SAFETY: `rec` points at the reserved record.
    unsafe { (*rec).header = header };
    entry.submit(BPF_RB_NO_WAKEUP as u64);
    true
}

/// The largest record class whose bytes [`copy_linear`] copies: 32 words,
/// unrolled. Longer captures go through `bpf_xdp_load_bytes`, whose cost
/// per call matters less beside the bytes it copies.
const DIRECT_COPY_MAX: usize = 256;

/// Copies the first `cap` bytes of the frame into `dst` (`N` bytes) by
/// direct packet access, eight at a time; `false`, having copied any part
/// or none, when they are not all in the frame's linear data or `cap` is
/// below 8 or above `N`.
///
/// `bpf_xdp_load_bytes` cost about 80 ns of the 320 an event took by
/// test_run on a 64-byte frame; this copy, about 5. A `cap` that is not a
/// multiple of 8 ends with the word that ends at `cap`, which overlaps the
/// one before it rather than reading past the captured bytes.
#[inline(always)]
fn copy_linear<const N: usize>(ctx: &XdpContext, dst: *mut u8, cap: usize) -> bool {
    let data = ctx.data();
    let end = ctx.data_end();
    if cap < 8 || cap > N {
        return false;
    }
    // The verifier checks each word's packet bounds by its constant offset;
    // a check of `data + cap` first would let LLVM drop them as implied.
    let mut off = 0;
    while off + 8 <= N {
        if off + 8 > cap {
            break;
        }
        let at = data + off;
        if at + 8 > end {
            return false;
        }
        // SAFETY: `off + 8 <= N`, inside the record; the word is inside
        // the frame.
        unsafe { store_u64(dst.add(off), load_u64(at)) };
        off += 8;
    }
    if cap % 8 != 0 {
        // Opaque to LLVM, so that the bound below stays on the register
        // that offsets `dst`, where the verifier needs it.
        let last = core::hint::black_box(cap - 8);
        if last > N - 8 {
            return false;
        }
        let at = data + last;
        if at + 8 > end {
            return false;
        }
        // SAFETY: as above, at `last <= N - 8`.
        unsafe { store_u64(dst.add(last), load_u64(at)) };
    }
    true
}

/// Copies `cap` bytes of the frame, from any of its buffers, into `dst`
/// (`N` bytes) with `bpf_xdp_load_bytes`; the bytes copied, 0 if it fails.
#[inline(always)]
fn load_frame<const N: usize>(ctx: &XdpContext, dst: *mut u8, cap: u32) -> u32 {
    // Opaque to LLVM, so that it keeps both checks below on the register it
    // passes to the helper: knowing `cap` is in the class's range, it drops
    // them and checks a copy, which the verifier cannot tie to the length.
    let cap = core::hint::black_box(cap);
    let cap = if cap as usize > N { N as u32 } else { cap };
    if cap == 0 {
        return 0;
    }
    // SAFETY: `dst` holds N bytes and `cap <= N`.
    let rc = unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, dst.cast(), cap) };
    if rc == 0 { cap } else { 0 }
}

/// The eight bytes at `at`, whatever its alignment.
///
/// An unaligned load is defined in BPF (the verifier allows it on packet
/// data where the CPU does, and x86 does), but not for a Rust pointer,
/// and `read_unaligned` compiles to eight byte loads and the shifts to
/// join them; hence the one instruction, written out.
///
/// # Safety
///
/// `at..at + 8` must be inside the frame, checked against its end where
/// the verifier sees it.
#[inline(always)]
unsafe fn load_u64(at: usize) -> u64 {
    let v: u64;
    // SAFETY: the caller's promise.
    unsafe {
        core::arch::asm!(
            "{v} = *(u64 *)({p} + 0)",
            p = in(reg) at,
            v = lateout(reg) v,
            options(nostack, readonly, preserves_flags),
        );
    }
    v
}

/// Stores `v` at `dst`, whatever its alignment (see [`load_u64`]).
///
/// # Safety
///
/// `dst..dst + 8` must be inside memory the program may write.
#[inline(always)]
unsafe fn store_u64(dst: *mut u8, v: u64) {
    // SAFETY: the caller's promise.
    unsafe {
        core::arch::asm!(
            "*(u64 *)({p} + 0) = {v}",
            p = in(reg) dst,
            v = in(reg) v,
            options(nostack, preserves_flags),
        );
    }
}

/// Wakes the reader if it asked to be woken by the next event.
///
/// At low rates the reader sleeps with [`WAKE`] set and each event wakes it
/// at once; at high rates it leaves [`WAKE`] clear and reads on a timer it
/// paces by the rate, so events cost no wake-up at all (a wake-up raises an
/// IPI, a VM exit under virtualisation). The request is read after the event
/// is committed (the commit is a full barrier) and the reader sets it before
/// its last look at the ring, so either the reader sees this event or this
/// sees the request. The wake-up itself goes out with an empty record,
/// discarded at once, which the reader skips.
#[inline(always)]
fn wake_reader_if_asked() {
    let Some(wake) = WAKE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a valid map value; volatile because the reader writes it.
    if unsafe { core::ptr::read_volatile(wake) } == 0 {
        return;
    }
    // SAFETY: as above. Two CPUs may both see the request and both wake the
    // reader, which is harmless.
    unsafe { core::ptr::write_volatile(wake, 0) };
    if let Some(entry) = EVENTS.reserve::<u64>(0) {
        entry.discard(BPF_RB_FORCE_WAKEUP as u64);
    }
}

/// The [`event_flags`] that describe what the parser found.
#[inline(always)]
fn parse_flags(v: &Verdict) -> u8 {
    let mut flags = 0;
    if matches!(v.outcome, Outcome::Malformed) {
        flags |= event_flags::MALFORMED;
    }
    if v.later_fragment {
        flags |= event_flags::LATER_FRAGMENT;
    }
    match v.version {
        4 => flags |= event_flags::IPV4,
        6 => flags |= event_flags::IPV6,
        _ => {}
    }
    if v.half != 0 {
        flags |= event_flags::TABLE_1;
    }
    flags
}

#[inline(always)]
fn be16(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

#[inline(always)]
fn classify(ctx: &XdpContext, rules: u32) -> Verdict {
    let mut cur = Cursor::new(ctx);
    let Some(eth) = cur.take::<EthHdr>() else {
        return Verdict::unclassified(Outcome::Malformed, why::ETH_SHORT);
    };
    // SAFETY: `take` checked that the header lies inside the frame.
    let mut proto = be16(unsafe { (*eth).proto });
    // Up to two tags: 802.1Q, or 802.1ad outer with 802.1Q inner (QinQ).
    for _ in 0..2 {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        let Some(vlan) = cur.take::<VlanHdr>() else {
            return Verdict::unclassified(Outcome::Malformed, why::VLAN_SHORT);
        };
        // SAFETY: bounds checked by `take`.
        proto = be16(unsafe { (*vlan).proto });
    }
    match proto {
        ETH_P_IP => classify_ipv4(&mut cur, rules),
        ETH_P_IPV6 => classify_ipv6(&mut cur, rules),
        ETH_P_8021Q | ETH_P_8021AD => Verdict::unclassified(Outcome::NonIp, why::THIRD_VLAN),
        _ => Verdict::unclassified(Outcome::NonIp, why::NOT_IP),
    }
}

#[inline(always)]
fn config() -> Config {
    // SAFETY: CONFIG is a plain static; the volatile read stops the compiler
    // from assuming the value it was initialised with.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

/// The action and rule id of a table leaf, or the default action.
#[inline(always)]
fn leaf_verdict(entry: u32) -> (u32, u32) {
    match table::rule_of(entry) {
        Some(rule) => rule,
        None => (config().default_action, NO_RULE),
    }
}

/// The longest-prefix rule for an IPv4 source (host order): the first
/// level by the top 16 bits, then one block per level, each indexed by as
/// many bits as its parent entry says, until a leaf. `rules` is the entry
/// index of the table's first block.
#[inline(always)]
fn lookup_v4(rules: u32, addr: u32) -> (u32, u32) {
    let mut entry = entry_at(rules, table::V4_ROOT + (addr >> table::ROOT_BITS));
    // Bits of the address below those consumed.
    let mut left = 32 - table::ROOT_BITS;
    for _ in 0..table::V4_LEVELS {
        if entry & table::CHILD == 0 {
            break;
        }
        let stride = table::stride_of(entry);
        if stride > left {
            return leaf_verdict(0);
        }
        left -= stride;
        let slot = (addr >> left) & ((1 << stride) - 1);
        entry = entry_at(rules, table::index_of(entry) + slot);
    }
    leaf_verdict(entry)
}

/// The longest-prefix rule for an IPv6 source given as its two 64-bit
/// halves in host order; as [`lookup_v4`]. No level straddles the halves
/// (the loader keeps strides within them).
#[inline(always)]
fn lookup_v6(rules: u32, hi: u64, lo: u64) -> (u32, u32) {
    let mut entry = entry_at(
        rules,
        table::V6_ROOT + (hi >> (64 - table::ROOT_BITS)) as u32,
    );
    let mut at = table::ROOT_BITS;
    for _ in 0..table::V6_LEVELS {
        if entry & table::CHILD == 0 {
            break;
        }
        let stride = table::stride_of(entry);
        let (word, end) = if at < 64 { (hi, 64) } else { (lo, 128) };
        if at + stride > end {
            return leaf_verdict(0);
        }
        at += stride;
        let slot = (word >> (end - at)) as u32 & ((1 << stride) - 1);
        entry = entry_at(rules, table::index_of(entry) + slot);
    }
    leaf_verdict(entry)
}

/// The entry at `index` of the table starting at entry `base`; an index
/// past the end (which a table the loader built never holds) reads as the
/// empty leaf.
#[inline(always)]
fn entry_at(base: u32, index: u32) -> u32 {
    let index = base + index;
    match TABLE.get(index / table::BLOCK) {
        Some(block) => block[(index % table::BLOCK) as usize],
        None => 0,
    }
}

/// An address word out of the packet, in host order. The packet holds it as
/// two 16-bit words (every header offset is even); a plain 32-bit load
/// could be misaligned, which BPF splits into byte loads.
#[inline(always)]
fn word(words: &[u16], i: usize) -> u32 {
    // SAFETY: `words` is a valid reference into the checked packet; volatile
    // keeps LLVM from merging the loads into a byte-by-byte memcpy.
    let (hi, lo) = unsafe {
        (
            core::ptr::read_volatile(&words[2 * i]),
            core::ptr::read_volatile(&words[2 * i + 1]),
        )
    };
    (u32::from(u16::from_be(hi)) << 16) | u32::from(u16::from_be(lo))
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

/// Checks a TCP header's data offset at `l4` against the `room` the
/// datagram leaves for it.
#[inline(always)]
fn tcp_header_fits(cur: &Cursor, l4: usize, room: usize) -> bool {
    let Some(tcp) = cur.at::<[u8; 13]>(l4) else {
        return false;
    };
    // SAFETY: bounds checked by `at`.
    let doff = (unsafe { (*tcp)[12] } >> 4) as usize * 4;
    doff >= 20 && doff <= room
}

#[inline(always)]
fn classify_ipv4(cur: &mut Cursor, rules: u32) -> Verdict {
    let l3 = cur.pos;
    let Some(ip) = cur.take::<Ipv4Hdr>() else {
        return Verdict::unclassified(Outcome::Malformed, why::IPV4_SHORT);
    };
    // SAFETY: bounds checked by `take`.
    let ip = unsafe { &*ip };
    // A version that contradicts the EtherType: not an IPv4 header at all.
    if ip.version_ihl >> 4 != 4 {
        return Verdict::unclassified(Outcome::Malformed, why::IPV4_VERSION);
    }
    let src = word(&ip.src, 0);
    let (action, rule_id) = lookup_v4(rules, src);
    let frag_offset = be16(ip.frag_off) & 0x1fff;
    let cfg = config();
    let untracked = cfg.top != 0 && !track_v4(src & cfg.top_mask_v4, cur.remaining_from(0) as u64);
    let verdict = Verdict {
        outcome: Outcome::Ipv4,
        action,
        rule_id,
        version: 4,
        later_fragment: frag_offset != 0,
        why: why::NONE,
        untracked,
        half: 0,
    };
    // An IHL below 5 is malformed, but the fixed header and its source
    // address are there: the source's rule applies, so that setting the
    // IHL to 4 cannot slip a packet past a drop or capture rule.
    let ihl = (ip.version_ihl & 0x0f) as usize * 4;
    if ihl < IPV4_HLEN {
        return verdict.malformed(why::IPV4_IHL);
    }

    // The frame may carry Ethernet padding after the datagram, never less.
    let total = be16(ip.tot_len) as usize;
    if total < ihl || total > cur.remaining_from(l3) {
        return verdict.malformed(why::IPV4_TOTAL);
    }
    // Only the first fragment (offset 0) carries the transport header.
    if frag_offset != 0 {
        return verdict;
    }
    let l4 = l3 + (ihl & 0x3c);
    let room = total - ihl;
    if room < min_l4_len(ip.proto) {
        return verdict.malformed(why::L4_SHORT);
    }
    if ip.proto == IPPROTO_TCP && !tcp_header_fits(cur, l4, room) {
        return verdict.malformed(why::TCP_OFFSET);
    }
    verdict
}

#[inline(always)]
fn classify_ipv6(cur: &mut Cursor, rules: u32) -> Verdict {
    let l3 = cur.pos;
    let Some(ip) = cur.take::<Ipv6Hdr>() else {
        return Verdict::unclassified(Outcome::Malformed, why::IPV6_SHORT);
    };
    // SAFETY: bounds checked by `take`.
    let ip = unsafe { &*ip };
    if ip.version_tc_flow[0] >> 4 != 6 {
        return Verdict::unclassified(Outcome::Malformed, why::IPV6_VERSION);
    }
    let half =
        |i: usize| (u64::from(word(&ip.src, 2 * i)) << 32) | u64::from(word(&ip.src, 2 * i + 1));
    let (action, rule_id) = lookup_v6(rules, half(0), half(1));
    let cfg = config();
    let untracked = cfg.top != 0 && {
        let m = cfg.top_mask_v6;
        let key = TopKey {
            words: [
                word(&ip.src, 0) & m[0],
                word(&ip.src, 1) & m[1],
                word(&ip.src, 2) & m[2],
                word(&ip.src, 3) & m[3],
            ],
        };
        !track_v6(&key, cur.remaining_from(0) as u64)
    };
    let mut verdict = Verdict {
        outcome: Outcome::Ipv6,
        action,
        rule_id,
        version: 6,
        later_fragment: false,
        why: why::NONE,
        untracked,
        half: 0,
    };

    let payload = be16(ip.payload_len) as usize;
    if payload > cur.remaining_from(l3 + IPV6_HLEN) {
        return verdict.malformed(why::IPV6_PAYLOAD);
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
                    // Too deep to follow: classified, transport unknown.
                    return verdict;
                }
                let Some(ext) = cur.at::<Ipv6ExtHdr>(pos) else {
                    return verdict.malformed(why::EXT_SHORT);
                };
                // SAFETY: bounds checked by `at`.
                let ext = unsafe { &*ext };
                let len = match next {
                    IPPROTO_FRAGMENT => {
                        let Some(frag) = cur.at::<[u8; 8]>(pos) else {
                            return verdict.malformed(why::EXT_SHORT);
                        };
                        // SAFETY: bounds checked by `at`.
                        let frag = unsafe { &*frag };
                        if be16([frag[2], frag[3]]) & 0xfff8 != 0 {
                            // A later fragment: no transport header here.
                            verdict.later_fragment = true;
                            if pos + 8 > end {
                                return verdict.malformed(why::EXT_BEYOND);
                            }
                            return verdict;
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
            return verdict.malformed(why::EXT_BEYOND);
        }
    }
    let room = end - pos.min(end);
    if room < min_l4_len(next) {
        return verdict.malformed(why::L4_SHORT);
    }
    if next == IPPROTO_TCP && !tcp_header_fits(cur, pos, room) {
        return verdict.malformed(why::TCP_OFFSET);
    }
    verdict
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
