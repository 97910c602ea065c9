//! The types and constants the XDP program and the loader must agree on.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of hidden padding (flags
//! are `u32`, never `bool`), so one definition serves both sides of the
//! kernel boundary. Kernel-only helpers live in `traffic-ebpf`.
#![no_std]

use bytemuck::{Pod, Zeroable};

/// Names of the programs, maps and globals in the object files.
pub mod names {
    /// The classifier: parses, looks up, counts and acts on every packet.
    pub const PROGRAM: &str = "traffic";
    /// In the tools object: a program that passes every packet and does
    /// nothing else, the cost floor that benchmarks compare against.
    pub const FLOOR_PROGRAM: &str = "traffic_floor";
    /// In the tools object: the floor with one clock read
    /// (`bpf_ktime_get_ns`), the timestamp every capture event takes.
    pub const FLOOR_CLOCK_PROGRAM: &str = "traffic_floor_clock";
    /// In the tools object: a program that sends every frame back out
    /// (XDP_TX); with BPF_PROG_RUN's live frames, a traffic generator.
    pub const TX_PROGRAM: &str = "traffic_tx";
    /// In the tools object: a program that drops every packet and does
    /// nothing else, the floor for the drop path in live benchmarks.
    pub const FLOOR_DROP_PROGRAM: &str = "traffic_floor_drop";
    /// The rule tables: an mmapable `Array<[u32; 16]>` holding two
    /// [`table`](super::table)s of equal size, 16 entries per element: the
    /// one in force and the one the next rule set is written into.
    pub const TABLE: &str = "TABLE";
    /// The first block of the table in force: an `Array<u32>` of one entry.
    /// Writing it swaps the whole rule set, IPv4 and IPv6, in one step.
    pub const TABLE_BASE: &str = "TABLE_BASE";
    /// Per-CPU counters and state: `PerCpuArray<CpuState>` with one entry.
    pub const STATS: &str = "STATS";
    /// Frames each CPU has explained (`--explain`): `PerCpuArray<u64>`,
    /// apart from [`STATS`] so the hot path's entry keeps its layout.
    pub const EXPLAINED: &str = "EXPLAINED";
    /// Capture events: a `RingBuf` of [`EventHeader`](super::EventHeader)
    /// records, each followed by the captured bytes.
    pub const EVENTS: &str = "EVENTS";
    /// The reader's wake-up request: an mmapable `Array<u32>` of one entry,
    /// [`WAKE_ME`](super::WAKE_ME) while the reader sleeps until the next
    /// event, 0 while it reads on its own schedule.
    pub const WAKE: &str = "WAKE";
    /// AF_XDP sockets by receive queue: an `XskMap` (with `--afxdp`).
    pub const XSKS: &str = "XSKS";
    /// The read-only global holding [`Config`](super::Config).
    pub const CONFIG: &str = "CONFIG";
    /// Packets and bytes per rule: an mmapable `Array<Count>` of
    /// [`rule_slot::total`](super::rule_slot::total) per CPU.
    pub const RULE_COUNTS: &str = "RULE_COUNTS";
    /// The per-CPU logs of sources ([`top`](super::top)): an mmapable
    /// `Array<u64>` of [`LOG_UNITS`](super::top::LOG_UNITS) per CPU.
    pub const TOP_LOG: &str = "TOP_LOG";
    /// The logs' heads and tails: an mmapable `Array<u64>` of
    /// [`POS_WORDS`](super::top::POS_WORDS) per CPU.
    pub const TOP_POS: &str = "TOP_POS";
}

/// What the program does with a packet, as stored in a rule table leaf and
/// [`Config::default_action`].
pub mod action {
    /// Hand the packet to the network stack.
    pub const PASS: u32 = 0;
    /// Drop the packet in the driver.
    pub const DROP: u32 = 1;
    /// Hand the packet to the network stack and to the capture path.
    pub const CAPTURE: u32 = 2;
}

/// The rule id reported for a packet that matched no rule and got the
/// default action. A rule's id is its position in the loader's sealed rule
/// set (IPv4 before IPv6, by length, then address).
pub const NO_RULE: u32 = u32::MAX;

/// The layout of the rule table: a multibit trie in one flat array of
/// `u32` entries, with the longest-prefix answer pushed into every slot (as
/// DPDK's `rte_lpm` does), so a lookup walks down until it reads a leaf and
/// never backtracks.
///
/// The first level is indexed by the top [`ROOT_BITS`] bits of the address:
/// IPv4's at [`V4_ROOT`], IPv6's at [`V6_ROOT`]. Below, each node is a
/// block of `2^stride` entries (at least [`BLOCK`]) indexed by the next
/// `stride` bits, where the stride (4 to 24 bits, less only for an
/// address's last bits) is chosen per node by how densely prefixes fill
/// it: dense parts of the rule set take few, wide levels (a million /28s
/// covering a /8: the first level, then one 4,096-entry block per /16),
/// sparse parts narrow ones that cost little memory. A lookup stops at the
/// first leaf: a /8 rule costs one read, whatever the number of rules.
///
/// An entry is either a child (bit [`CHILD`] set, the child's stride minus
/// one in bits 26-30, the index of its first entry in bits 0-25, counted in
/// [`BLOCK`]s) or a leaf: 0 for no rule, or the rule's action in bits 28-29
/// and its id plus one in bits 0-27.
pub mod table {
    /// Address bits that index the first level.
    pub const ROOT_BITS: u32 = 16;
    /// The narrowest stride below the first level.
    pub const STRIDE: u32 = 4;
    /// The widest stride.
    pub const MAX_STRIDE: u32 = 24;
    /// Entries in a block of the narrowest stride; every block's size is a
    /// multiple, and every block starts at a multiple.
    pub const BLOCK: u32 = 1 << STRIDE;
    /// Index of IPv4's first level.
    pub const V4_ROOT: u32 = 0;
    /// Index of IPv6's first level.
    pub const V6_ROOT: u32 = 1 << ROOT_BITS;
    /// Index of the first block below the first levels.
    pub const FIRST_BLOCK: u32 = 2 << ROOT_BITS;
    /// Levels below the first an IPv4 lookup may descend.
    pub const V4_LEVELS: u32 = (32 - ROOT_BITS) / STRIDE;
    /// Levels below the first an IPv6 lookup may descend.
    pub const V6_LEVELS: u32 = (128 - ROOT_BITS) / STRIDE;
    /// The bit of a child entry.
    pub const CHILD: u32 = 1 << 31;
    /// Where a child entry's stride starts.
    pub const STRIDE_SHIFT: u32 = 26;
    /// The bits of a child entry's index (in blocks).
    pub const INDEX_MASK: u32 = (1 << STRIDE_SHIFT) - 1;
    /// The most entries a table can index.
    pub const MAX_ENTRIES: u64 = (INDEX_MASK as u64 + 1) * BLOCK as u64;
    /// The bits of a leaf's rule id plus one.
    pub const ID_MASK: u32 = (1 << 28) - 1;
    /// Where a leaf's action starts.
    pub const ACTION_SHIFT: u32 = 28;
    /// The most rules a table can name.
    pub const MAX_RULES: u32 = ID_MASK - 1;

    /// The leaf for rule `id` with `action`.
    pub const fn leaf(action: u32, id: u32) -> u32 {
        (action << ACTION_SHIFT) | (id + 1)
    }

    /// The child entry for a block at entry `index` (a multiple of
    /// [`BLOCK`]) of `stride` bits.
    pub const fn child(index: u32, stride: u32) -> u32 {
        CHILD | ((stride - 1) << STRIDE_SHIFT) | (index / BLOCK)
    }

    /// The stride of a child entry's block.
    pub const fn stride_of(entry: u32) -> u32 {
        ((entry >> STRIDE_SHIFT) & 31) + 1
    }

    /// The index of the first entry of a child entry's block.
    pub const fn index_of(entry: u32) -> u32 {
        (entry & INDEX_MASK) * BLOCK
    }

    /// The action and rule id of a leaf, or `None` for the empty leaf.
    pub const fn rule_of(entry: u32) -> Option<(u32, u32)> {
        let id = entry & ID_MASK;
        if id == 0 {
            return None;
        }
        Some(((entry >> ACTION_SHIFT) & 3, id - 1))
    }
}

/// Settings fixed at load time, written into the object before it is loaded.
///
/// The object lives in a frozen read-only map, so the verifier treats its
/// fields as constants and prunes the branches they rule out.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Config {
    /// The [`action`] for IP packets whose source matches no rule.
    pub default_action: u32,
    /// Bytes of each captured frame to copy into its event, at most
    /// [`MAX_SNAPLEN`].
    pub snaplen: u32,
    /// Send 1 in this many packets (of any action) to the capture path as a
    /// sample; 0 for none.
    pub sample_every: u32,
    /// Nonzero: redirect packets whose action is capture, whole, to the
    /// AF_XDP socket of their receive queue instead of writing events.
    pub afxdp: u32,
    /// `--explain N`: log why for the first N frames per CPU counted as
    /// malformed or non-IP; 0 turns the logging code off (the verifier
    /// prunes it).
    pub explain: u32,
    /// Counters per rule: the number of rules each of the two tables may
    /// hold ([`rule_slot`]); 0 for no counts per rule.
    pub rule_slots: u32,
    /// Nonzero: log each IP packet's source address (or prefix) and length
    /// for the loader to count ([`top`]).
    pub top: u32,
    /// The mask applied to IPv4 sources before they are counted (`--top-prefix`).
    pub top_mask_v4: u32,
    /// The mask applied to IPv6 sources, as four words from the top.
    pub top_mask_v6: [u32; 4],
}

/// Packets and bytes: one rule's or one source's counts on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

impl Count {
    pub fn add(&mut self, other: &Count) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// Per-rule counter slots ([`names::RULE_COUNTS`]): one for frames with no
/// source to classify (not IP, or unreadable), one for IP frames no rule
/// matched (the default action), then the rules of table 0, then those of
/// table 1. A rule keeps the slot of its table and its index in it; the
/// loader reads a table's slots when it takes the table out of force, and
/// zeroes them before it puts a new table there.
pub mod rule_slot {
    pub const UNCLASSIFIED: u32 = 0;
    pub const DEFAULT: u32 = 1;
    pub const FIRST: u32 = 2;

    /// The slot of rule `id` of table `half` (0 or 1), with `slots` rules a table.
    pub const fn of(half: u32, slots: u32, id: u32) -> u32 {
        FIRST + half * slots + id
    }

    /// How many slots the counters need for `slots` rules a table.
    pub const fn total(slots: u32) -> u32 {
        FIRST + 2 * slots
    }
}

/// The sources the program counted (`--top`, `--ipfix`): per CPU, a log
/// of the frames' sources and lengths that the loader reads and sums.
///
/// Counting a source in the kernel means finding its counter, and with
/// sources spread over thousands of addresses that counter is a cache (and
/// TLB) miss per packet: a table of counters added 46-380 ns a packet live
/// with a thousand sources, where the rest of the drop path costs about 150. The log is written in
/// order, so the program touches one cache line at a time, the same one for
/// eight IPv4 sources in a row; the loader, which reads it every few tens of
/// milliseconds, pays for the lookups, once per frame, in its own memory.
///
/// Each CPU's part is a single-producer, single-consumer ring of
/// [`LOG_UNITS`] 64-bit units: the program appends at its head and then
/// publishes the head ([`HEAD`]); the loader reads from its tail ([`TAIL`])
/// up to the head it read and then publishes the tail. The head and the
/// tail are on cache lines of their own ([`POS_WORDS`] words per CPU), so
/// the program only reads a line the loader writes once per reading. A frame
/// that finds too little room is not logged and is counted untracked.
///
/// An IPv4 source takes one unit (address, length, [`TAG_V4`]); an IPv6
/// source three (length and [`TAG_V6`], then the address's high and low
/// halves).
pub mod top {
    /// Units of each CPU's log: 2^18, 2 MiB. Read every
    /// [`GATHER_EVERY_MS`], it holds 5 million IPv4 frames a second per CPU.
    pub const LOG_UNITS: u32 = 1 << 18;
    /// How often the loader reads the logs while packets flow.
    pub const GATHER_EVERY_MS: u64 = 50;
    /// Words of the position array per CPU: the head, then the tail a cache
    /// line further.
    pub const POS_WORDS: u32 = 16;
    /// Where in a CPU's words the program's head is.
    pub const HEAD: u32 = 0;
    /// Where in a CPU's words the loader's tail is.
    pub const TAIL: u32 = 8;
    /// The low byte of an IPv4 unit.
    pub const TAG_V4: u64 = 4;
    /// The low byte of the first of an IPv6 source's three units.
    pub const TAG_V6: u64 = 6;
    /// The largest length a unit holds (24 bits); longer frames count as
    /// this many bytes, which no XDP frame reaches.
    pub const MAX_LEN: u64 = (1 << 24) - 1;

    /// The unit of an IPv4 source `addr` (host order) and a frame of `len`
    /// bytes.
    #[inline(always)]
    pub const fn v4_unit(addr: u32, len: u64) -> u64 {
        let len = if len > MAX_LEN { MAX_LEN } else { len };
        ((addr as u64) << 32) | (len << 8) | TAG_V4
    }

    /// The first unit of an IPv6 source and a frame of `len` bytes.
    #[inline(always)]
    pub const fn v6_unit(len: u64) -> u64 {
        let len = if len > MAX_LEN { MAX_LEN } else { len };
        (len << 8) | TAG_V6
    }

    /// The length a unit holds.
    #[inline(always)]
    pub const fn unit_len(unit: u64) -> u64 {
        (unit >> 8) & MAX_LEN
    }
}

/// A top-talker key: a source address, masked to `--top-prefix`, as four
/// 32-bit words from the top in host order; IPv4 as `::ffff:a.b.c.d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct TopKey {
    pub words: [u32; 4],
}

impl TopKey {
    /// The address the key holds (the prefix's first address with
    /// `--top-prefix`).
    pub fn addr(&self) -> core::net::IpAddr {
        match self.as_v4() {
            Some(a) => core::net::IpAddr::V4(core::net::Ipv4Addr::from(a)),
            None => {
                let w = self.words;
                let bits = (u128::from(w[0]) << 96)
                    | (u128::from(w[1]) << 64)
                    | (u128::from(w[2]) << 32)
                    | u128::from(w[3]);
                core::net::IpAddr::V6(core::net::Ipv6Addr::from(bits))
            }
        }
    }

    pub const fn v4(addr: u32) -> Self {
        Self {
            words: [0, 0, 0xffff, addr],
        }
    }

    /// The IPv4 address, when this is one.
    pub const fn as_v4(&self) -> Option<u32> {
        match self.words {
            [0, 0, 0xffff, a] => Some(a),
            _ => None,
        }
    }
}

/// The XDP metadata in front of a frame redirected to AF_XDP: what the
/// program knows of the frame that its bytes do not say.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct XskMeta {
    /// `CLOCK_MONOTONIC` nanoseconds at the XDP hook.
    pub ts_ns: u64,
    /// The id of the rule that matched, or [`NO_RULE`].
    pub rule_id: u32,
    /// [`event_flags`] of the parse (all but `SAMPLED`).
    pub flags: u32,
}

/// Bytes of XDP metadata in front of a frame redirected to AF_XDP: one
/// [`XskMeta`] (a multiple of 4, as `bpf_xdp_adjust_meta` requires).
pub const AFXDP_META_LEN: usize = size_of::<XskMeta>();

impl Default for Config {
    fn default() -> Self {
        Self {
            default_action: action::PASS,
            snaplen: DEFAULT_SNAPLEN,
            sample_every: 0,
            afxdp: 0,
            explain: 0,
            rule_slots: 0,
            top: 0,
            top_mask_v4: u32::MAX,
            top_mask_v6: [u32::MAX; 4],
        }
    }
}

/// [`names::WAKE`]'s value while the reader waits to be woken by the next
/// event; the program sets it back to 0 when it wakes the reader.
pub const WAKE_ME: u32 = 1;

/// The default `snaplen`.
pub const DEFAULT_SNAPLEN: u32 = 128;
/// The largest `snaplen`.
pub const MAX_SNAPLEN: u32 = 4096;

/// The head of every capture event in the ring buffer; `cap_len` bytes of the
/// frame follow it.
///
/// 24 bytes: what the program knows that the captured bytes do not say.
/// Addresses, ports and VLAN tags are in the bytes, and userspace's parser
/// (which agrees with the program's) reads them there when a sink asks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EventHeader {
    /// `CLOCK_MONOTONIC` nanoseconds at the XDP hook.
    pub ts_ns: u64,
    /// The frame's length on the wire (without FCS), all buffers included.
    pub wire_len: u32,
    /// The id of the rule that matched, or [`NO_RULE`].
    pub rule_id: u32,
    /// Bytes of the frame that follow this header.
    pub cap_len: u16,
    /// The receive queue the frame arrived on.
    pub rx_queue: u16,
    /// The [`action`] applied to the frame.
    pub action: u8,
    /// [`event_flags`].
    pub flags: u8,
    /// Zero.
    pub _pad: u16,
}

/// Bytes of [`EventHeader`].
pub const EVENT_HEADER_LEN: usize = size_of::<EventHeader>();

/// Bits of [`EventHeader::flags`] and [`XskMeta::flags`].
pub mod event_flags {
    /// The frame was chosen by `--sample`, not by a capture rule.
    pub const SAMPLED: u8 = 1 << 0;
    /// The frame was counted as malformed.
    pub const MALFORMED: u8 = 1 << 1;
    /// An IP fragment other than the first.
    pub const LATER_FRAGMENT: u8 = 1 << 2;
    /// The frame had an IPv4 source address to classify.
    pub const IPV4: u8 = 1 << 3;
    /// The frame had an IPv6 source address to classify.
    pub const IPV6: u8 = 1 << 4;
    /// Classified by rule table 1 (clear: table 0): the rule id is an index
    /// into the set that table held.
    pub const TABLE_1: u8 = 1 << 5;
}

/// Per-CPU packet counters, one entry per CPU.
///
/// Every packet the program sees is counted exactly once in `packets`, once in
/// exactly one of `pass`/`drop`/`capture` and once in exactly one of
/// `non_ip`/`malformed`/`ipv4`/`ipv6`, so both groups sum to `packets`.
///
/// Userspace reports these fields under the same names (the `user` feature
/// derives `serde::Serialize`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct Stats {
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen (the frame's length at the XDP hook, without the FCS).
    pub bytes: u64,
    /// Packets passed to the stack without capture.
    pub pass: u64,
    /// Packets dropped.
    pub drop: u64,
    /// Packets passed and marked for capture.
    pub capture: u64,
    /// Bytes of passed packets.
    pub pass_bytes: u64,
    /// Bytes of dropped packets.
    pub drop_bytes: u64,
    /// Bytes of captured packets.
    pub capture_bytes: u64,
    /// Frames whose (innermost) EtherType is neither IPv4 nor IPv6.
    pub non_ip: u64,
    /// Frames too short for their headers or with inconsistent lengths.
    pub malformed: u64,
    /// Well-formed IPv4 packets.
    pub ipv4: u64,
    /// Well-formed IPv6 packets.
    pub ipv6: u64,
    /// Packets chosen by `--sample` that no capture rule had chosen already.
    pub sampled: u64,
    /// Capture events written to the ring buffer.
    pub events: u64,
    /// Capture events lost because the ring buffer was full.
    pub events_lost: u64,
    /// Packets redirected to an AF_XDP socket (`--afxdp`).
    pub xsk_redirected: u64,
    /// Packets to capture whose receive queue had no AF_XDP socket: passed
    /// to the stack instead.
    pub xsk_unbound: u64,
    /// IP packets whose source could not be counted (`--top`): the log was
    /// full, or (added by the loader) the sources of the interval were as
    /// many as it keeps. In the totals, in no source's count.
    pub untracked: u64,
    pub untracked_bytes: u64,
    /// Bytes of well-formed IPv4 packets.
    pub ipv4_bytes: u64,
    /// Bytes of well-formed IPv6 packets.
    pub ipv6_bytes: u64,
}

/// The per-CPU map entry: counters, plus state the program keeps per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CpuState {
    /// The counters userspace reports.
    pub stats: Stats,
    /// Packets to skip before the next sample.
    pub sample_left: u64,
}

/// Why a frame is malformed or not IP: the codes of `--explain`.
pub mod why {
    /// Nothing wrong.
    pub const NONE: u8 = 0;
    /// Shorter than an Ethernet header.
    pub const ETH_SHORT: u8 = 1;
    /// A VLAN tag cut short.
    pub const VLAN_SHORT: u8 = 2;
    /// More than two VLAN tags.
    pub const THIRD_VLAN: u8 = 3;
    /// An EtherType that is neither IPv4 nor IPv6.
    pub const NOT_IP: u8 = 4;
    /// Fewer than the 20 bytes of an IPv4 header.
    pub const IPV4_SHORT: u8 = 5;
    /// EtherType IPv4 but another IP version.
    pub const IPV4_VERSION: u8 = 6;
    /// An IPv4 header length (IHL) below 5.
    pub const IPV4_IHL: u8 = 7;
    /// An IPv4 total length beyond the frame or below the header.
    pub const IPV4_TOTAL: u8 = 8;
    /// A transport header shorter than its protocol's minimum.
    pub const L4_SHORT: u8 = 9;
    /// A TCP data offset below 5, or beyond the datagram.
    pub const TCP_OFFSET: u8 = 10;
    /// Fewer than the 40 bytes of an IPv6 header.
    pub const IPV6_SHORT: u8 = 11;
    /// EtherType IPv6 but another IP version.
    pub const IPV6_VERSION: u8 = 12;
    /// An IPv6 payload length beyond the frame.
    pub const IPV6_PAYLOAD: u8 = 13;
    /// An IPv6 extension header cut short by the frame.
    pub const EXT_SHORT: u8 = 14;
    /// An IPv6 extension header that runs past the payload length.
    pub const EXT_BEYOND: u8 = 15;

    /// The words for a code.
    pub const fn text(code: u8) -> &'static str {
        match code {
            ETH_SHORT => "shorter than an Ethernet header",
            VLAN_SHORT => "a VLAN tag is cut short",
            THIRD_VLAN => "more than two VLAN tags",
            NOT_IP => "the EtherType is neither IPv4 nor IPv6",
            IPV4_SHORT => "fewer than the 20 bytes of an IPv4 header",
            IPV4_VERSION => "EtherType IPv4, but the IP version is not 4",
            IPV4_IHL => "IPv4 header length (IHL) below 5",
            IPV4_TOTAL => "IPv4 total length beyond the frame or below the header",
            L4_SHORT => "transport header shorter than its protocol's minimum",
            TCP_OFFSET => "TCP data offset below 5 or beyond the datagram",
            IPV6_SHORT => "fewer than the 40 bytes of an IPv6 header",
            IPV6_VERSION => "EtherType IPv6, but the IP version is not 6",
            IPV6_PAYLOAD => "IPv6 payload length beyond the frame",
            EXT_SHORT => "an IPv6 extension header is cut short",
            EXT_BEYOND => "an IPv6 extension header runs past the payload",
            _ => "nothing wrong",
        }
    }
}

impl Stats {
    /// Adds `other` field by field, as when summing the entries of all CPUs.
    pub fn accumulate(&mut self, other: &Stats) {
        let Stats {
            packets,
            bytes,
            pass,
            drop,
            capture,
            pass_bytes,
            drop_bytes,
            capture_bytes,
            non_ip,
            malformed,
            ipv4,
            ipv6,
            sampled,
            events,
            events_lost,
            xsk_redirected,
            xsk_unbound,
            untracked,
            untracked_bytes,
            ipv4_bytes,
            ipv6_bytes,
        } = other;
        self.packets += packets;
        self.bytes += bytes;
        self.pass += pass;
        self.drop += drop;
        self.capture += capture;
        self.pass_bytes += pass_bytes;
        self.drop_bytes += drop_bytes;
        self.capture_bytes += capture_bytes;
        self.non_ip += non_ip;
        self.malformed += malformed;
        self.ipv4 += ipv4;
        self.ipv6 += ipv6;
        self.sampled += sampled;
        self.events += events;
        self.events_lost += events_lost;
        self.xsk_redirected += xsk_redirected;
        self.xsk_unbound += xsk_unbound;
        self.untracked += untracked;
        self.untracked_bytes += untracked_bytes;
        self.ipv4_bytes += ipv4_bytes;
        self.ipv6_bytes += ipv6_bytes;
    }

    /// The counts accrued since `earlier`, a previous reading of the same
    /// counters. Counters only grow; wrapping arithmetic keeps a reading taken
    /// across a wrap (after 2^64 packets) correct.
    pub fn since(&self, earlier: &Stats) -> Stats {
        let d = |now: u64, then: u64| now.wrapping_sub(then);
        Stats {
            packets: d(self.packets, earlier.packets),
            bytes: d(self.bytes, earlier.bytes),
            pass: d(self.pass, earlier.pass),
            drop: d(self.drop, earlier.drop),
            capture: d(self.capture, earlier.capture),
            pass_bytes: d(self.pass_bytes, earlier.pass_bytes),
            drop_bytes: d(self.drop_bytes, earlier.drop_bytes),
            capture_bytes: d(self.capture_bytes, earlier.capture_bytes),
            non_ip: d(self.non_ip, earlier.non_ip),
            malformed: d(self.malformed, earlier.malformed),
            ipv4: d(self.ipv4, earlier.ipv4),
            ipv6: d(self.ipv6, earlier.ipv6),
            sampled: d(self.sampled, earlier.sampled),
            events: d(self.events, earlier.events),
            events_lost: d(self.events_lost, earlier.events_lost),
            xsk_redirected: d(self.xsk_redirected, earlier.xsk_redirected),
            xsk_unbound: d(self.xsk_unbound, earlier.xsk_unbound),
            untracked: d(self.untracked, earlier.untracked),
            untracked_bytes: d(self.untracked_bytes, earlier.untracked_bytes),
            ipv4_bytes: d(self.ipv4_bytes, earlier.ipv4_bytes),
            ipv6_bytes: d(self.ipv6_bytes, earlier.ipv6_bytes),
        }
    }
}

#[cfg(feature = "user")]
mod user {
    use super::{Config, Count, CpuState, EventHeader, Stats, TopKey, XskMeta};

    // SAFETY: each type is `#[repr(C)]`, made only of integers, and has no
    // padding (bytemuck's `Pod` derive checks this at compile time).
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Stats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CpuState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for XskMeta {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Count {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TopKey {}
}
