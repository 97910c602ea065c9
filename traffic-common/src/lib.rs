//! The types and constants the XDP program and the loader must agree on.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of hidden padding (flags
//! are `u32`, never `bool`), so one definition serves both sides of the
//! kernel boundary. Kernel-only helpers live in `traffic-ebpf`.
#![no_std]

use bytemuck::{Pod, Zeroable};

/// Names of the programs, maps and globals in the object file.
pub mod names {
    /// The classifier: parses, looks up, counts and acts on every packet.
    pub const PROGRAM: &str = "traffic";
    /// A program that passes every packet and does nothing else: the cost floor
    /// that benchmarks compare against.
    pub const FLOOR_PROGRAM: &str = "traffic_floor";
    /// IPv4 source-prefix rules: `LpmTrie<[u8; 4], Rule>`.
    pub const RULES_V4: &str = "RULES_V4";
    /// IPv6 source-prefix rules: `LpmTrie<[u8; 16], Rule>`.
    pub const RULES_V6: &str = "RULES_V6";
    /// Per-CPU counters: `PerCpuArray<Stats>` with one entry.
    pub const STATS: &str = "STATS";
    /// The read-only global holding [`Config`](super::Config).
    pub const CONFIG: &str = "CONFIG";
}

/// What the program does with a packet, as stored in [`Rule::action`] and
/// [`Config::default_action`].
pub mod action {
    /// Hand the packet to the network stack.
    pub const PASS: u32 = 0;
    /// Drop the packet in the driver.
    pub const DROP: u32 = 1;
    /// Hand the packet to the network stack and to the capture path.
    pub const CAPTURE: u32 = 2;
}

/// The value of an LPM rule entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Rule {
    /// One of the [`action`] constants.
    pub action: u32,
    /// The rule's index in the loader's rule list, reported with captured
    /// packets so a user can tell which prefix matched.
    pub id: u32,
}

/// `Rule::id` of a packet that matched no rule and got the default action.
pub const NO_RULE: u32 = u32::MAX;

/// Settings fixed at load time, written into the object before it is loaded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Config {
    /// The [`action`] for IP packets whose source matches no rule.
    pub default_action: u32,
    /// Reserved; keeps the struct a multiple of 8 bytes. Must be zero.
    pub _reserved: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_action: action::PASS,
            _reserved: 0,
        }
    }
}

/// Per-CPU packet counters, one entry per CPU.
///
/// Every packet the program sees is counted exactly once in `packets`, once in
/// exactly one of `pass`/`drop`/`capture` and once in exactly one of
/// `non_ip`/`malformed`/`ipv4`/`ipv6`, so both groups sum to `packets`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
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
        }
    }
}

#[cfg(feature = "user")]
mod user {
    use super::{Config, Rule, Stats};

    // SAFETY: each type is `#[repr(C)]`, made only of integers, and has no
    // padding (bytemuck's `Pod` derive checks this at compile time).
    unsafe impl aya::Pod for Rule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Stats {}
}
