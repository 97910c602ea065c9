//! The JSON lines of `--json`: one object per line, told apart by `type`.
//!
//! - `start`: [`Start`], where the program was attached.
//! - `interval`: [`IntervalReport`], the counts of one interval.
//! - `summary`: [`SummaryReport`], the counts of the whole run.
//! - `packet` (with `--print`): [`PacketLine`], one captured packet.
//!
//! [`Line`] writes and reads every one of them, so programs (and the tests)
//! read reports as types rather than by key.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Counts, FailedOutput, Percentiles};
use crate::{
    kernel::AttachMode,
    rules::Action,
    source::{QueueReport, afxdp::XskMode},
};

/// What was attached where, reported once at the start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Start {
    /// The interface.
    pub iface: String,
    /// Its index.
    pub ifindex: u32,
    /// The mode attached in.
    pub mode: AttachMode,
    /// Modes refused before, with the reason.
    pub refused: Vec<Refused>,
    /// The program `--force` removed.
    pub replaced: Option<String>,
    /// Number of IPv4 rules.
    pub rules_v4: usize,
    /// Number of IPv6 rules.
    pub rules_v6: usize,
    /// The default action.
    pub default: Action,
    /// AF_XDP sockets, with `--afxdp`.
    pub afxdp: Option<AfxdpStart>,
    /// Every interface of a run on more than one, the first being the one
    /// above; empty for one interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ifaces: Vec<IfaceStart>,
}

/// One interface of a run on several, in the start line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IfaceStart {
    /// The interface.
    pub iface: String,
    /// Its index.
    pub ifindex: u32,
    /// The mode attached in.
    pub mode: AttachMode,
    /// Modes refused before, with the reason.
    pub refused: Vec<Refused>,
    /// The program `--force` removed.
    pub replaced: Option<String>,
    /// AF_XDP sockets, with `--afxdp`.
    pub afxdp: Option<AfxdpStart>,
}

impl Start {
    /// The interfaces of the run: `ifaces`, or the one of the line.
    pub fn each(&self) -> Vec<(String, u32)> {
        if self.ifaces.is_empty() {
            vec![(self.iface.clone(), self.ifindex)]
        } else {
            self.ifaces
                .iter()
                .map(|i| (i.iface.clone(), i.ifindex))
                .collect()
        }
    }
}

/// How AF_XDP was set up, in the start line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AfxdpStart {
    /// `zerocopy` or `copy`.
    pub mode: XskMode,
    /// Sockets opened, one per receive queue from 0.
    pub queues: u32,
    /// Why zero-copy was refused, when auto fell back to copy.
    pub zerocopy_refused: Option<String>,
}

/// A mode the kernel refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    /// The mode.
    pub mode: AttachMode,
    /// The kernel's reason.
    pub error: String,
}

/// An `interval` line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntervalReport {
    /// Unix seconds at the end of the interval.
    pub ts: f64,
    /// The interval's length in seconds.
    pub interval_s: f64,
    /// The interval's counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// Packets per second.
    pub pps: f64,
    /// Bits per second.
    pub bps: f64,
    /// Delivery latency in the interval.
    pub latency_ns: Percentiles,
    /// Packets and bytes of each rule that matched in the interval, busiest
    /// first; they add up to the action totals.
    #[serde(default)]
    pub rules: Vec<RuleRow>,
    /// The sources with the most packets in the interval (`--top`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<TopReport>,
    /// Each interface's counts, in a run on more than one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ifaces: Vec<super::IfaceCounts>,
}

/// One rule's counts (`rules` arrays).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRow {
    /// The rule's prefix (`192.0.2.0/24`), `default` for IP packets no rule
    /// matched, or `unclassified` for frames with no source to look up (not
    /// IP, or unreadable), which are always passed.
    pub rule: String,
    /// Its action.
    pub action: Action,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// The busiest sources (`--top`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopReport {
    /// The top N, most packets first.
    pub sources: Vec<TopRow>,
    /// Distinct sources (or prefixes) counted.
    pub tracked: u64,
    /// IP packets whose source the kernel had no room to count (raise
    /// --top-capacity), and their bytes: in no source's count.
    pub untracked_packets: u64,
    /// Bytes of those.
    pub untracked_bytes: u64,
    /// Whether every count listed is exact: nothing untracked and, over
    /// the run, no source forgotten to make room for another.
    pub exact: bool,
}

/// One source (or prefix) of a [`TopReport`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopRow {
    /// The address, or the prefix with `--top-prefix`.
    pub source: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Its share of all packets counted in the interval (or run).
    pub share: f64,
    /// The rule its address matches now (`default` when none).
    pub rule: String,
    /// That rule's action.
    pub action: Action,
    /// At most this many of its packets may belong to sources forgotten
    /// before it was counted (0: exact).
    #[serde(default)]
    pub error: u64,
}

/// The `summary` line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryReport {
    /// The interface.
    pub iface: String,
    /// The mode attached in.
    pub mode: AttachMode,
    /// The run's length in seconds.
    pub duration_s: f64,
    /// The counts since the start.
    #[serde(flatten)]
    pub counts: Counts,
    /// Packets per second on average.
    pub pps: f64,
    /// Bits per second on average.
    pub bps: f64,
    /// Delivery latency over the run.
    pub latency_ns: Percentiles,
    /// Per-queue counts, with `--afxdp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub afxdp_queues: Option<Vec<QueueReport>>,
    /// Outputs that failed during the run (a full disk, a FIFO whose
    /// reader left), with what they missed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_outputs: Vec<FailedOutput>,
    /// Packets and bytes of every rule that matched during the run, busiest
    /// first, including rules a reload removed.
    #[serde(default)]
    pub rules: Vec<RuleRow>,
    /// The sources with the most packets over the run (`--top`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<TopReport>,
    /// Each interface's counts, in a run on more than one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ifaces: Vec<super::IfaceCounts>,
}

/// One line of `--json` output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Line {
    /// Where the program was attached.
    Start(Start),
    /// One report interval.
    Interval(IntervalReport),
    /// The whole run.
    Summary(SummaryReport),
    /// One captured packet (with `--print`).
    Packet(PacketLine),
    /// The rules were read again (SIGHUP, `--watch-rules`).
    Reload(ReloadReport),
}

/// The rules were read again (`"type": "reload"`): what changed, or why the
/// new rules were refused and the old ones stay in force.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// What asked for it: `SIGHUP`, or `file changed` (`--watch-rules`).
    pub trigger: String,
    /// Seconds since the start of the run.
    pub at_s: f64,
    /// Whether the new rules are in force.
    pub ok: bool,
    /// Milliseconds from the request to the new rules in force (or to the
    /// refusal).
    pub took_ms: f64,
    /// IPv4 rules in force now.
    pub rules_v4: usize,
    /// IPv6 rules in force now.
    pub rules_v6: usize,
    /// Prefixes added, removed, whose action changed, and kept.
    pub change: crate::rules::Change,
    /// Why the new rules were refused, one problem per entry (a file's line
    /// numbers included); empty when `ok`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The kernel table (0 or 1) the rules in force are in: packets
    /// captured before the swap name their rules from the other
    /// ([`traffic_common::event_flags::TABLE_1`]). Not in the JSON line.
    #[serde(skip)]
    pub table: Option<u32>,
}

/// A captured packet (`"type": "packet"`, with `--print --json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PacketLine {
    /// Unix seconds at the XDP hook.
    pub ts: f64,
    /// The interface the packet arrived on.
    pub ifindex: u32,
    /// Its name, in a run on several interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// Its receive queue.
    pub rx_queue: u32,
    /// The outer VLAN id.
    pub vlan: Option<u16>,
    /// The source address.
    pub src: Option<IpAddr>,
    /// The destination address.
    pub dst: Option<IpAddr>,
    /// The IP protocol.
    pub protocol: Option<u8>,
    /// The source port.
    pub sport: Option<u16>,
    /// The destination port.
    pub dport: Option<u16>,
    /// TCP flags as tcpdump writes them.
    pub tcp_flags: Option<String>,
    /// The frame's length on the wire.
    pub wire_len: u32,
    /// Bytes captured.
    pub cap_len: u32,
    /// The action the packet got.
    pub action: Option<Action>,
    /// The rule that chose it, as in [`super::print::rule_text`].
    pub rule: String,
    /// Whether `--sample` chose it.
    pub sampled: bool,
    /// Delivery latency in nanoseconds.
    pub latency_ns: Option<u64>,
}
