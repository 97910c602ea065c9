//! The flags as clap parses them, before validation ([`super::config`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{
    kernel::{DEFAULT_RING_BYTES, ModeChoice},
    lab::generator::{Mechanism, Proto},
    rules::Action,
    source::afxdp::XskModeChoice,
    source::pace::DEFAULT_MAX_WAIT,
};

/// Filter and count packets by source address with XDP, at line rate.
///
/// traffic attaches an XDP program to an interface. The program looks up
/// every packet's source address in longest-prefix rule tables (IPv4 and
/// IPv6), applies the rule's action (pass, drop or capture) or the default,
/// and counts it in per-CPU counters that traffic reports every --interval.
/// The program is attached through a bpf_link: it goes away with the process,
/// however the process ends.
#[derive(Debug, Parser)]
#[command(
    name = "traffic",
    version,
    args_conflicts_with_subcommands = true,
    after_long_help = SIGNALS
)]
pub struct LowArgs {
    #[command(subcommand)]
    pub command: Option<Sub>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// What a run does on each signal, for `--help` and the man page.
const SIGNALS: &str = "\
Signals:
  SIGINT SIGTERM SIGQUIT  end the run; the summary is printed
  SIGXCPU                 as SIGTERM (the soft limit of ulimit -t)
  SIGHUP                  read the --rules files again and put them in
                          force; without --rules files, as SIGTERM
  SIGUSR1                 print the counts so far on stderr; go on
  SIGUSR2                 write out what the outputs hold, so that a
                          --write file is complete; go on";

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Send an exact number of UDP or TCP SYN frames from given source
    /// prefixes (AF_PACKET, sendmmsg, qdisc bypass; retries on backpressure).
    Gen(GenArgs),
    /// Measure the in-kernel cost per packet of the XDP program with
    /// BPF_PROG_TEST_RUN: the do-nothing floor, and traffic's drop and
    /// capture paths with growing rule tables, for IPv4 and IPv6.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Runs per test_run measurement (the kernel reports the mean).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub repeat: u32,
    /// Rule-table sizes for the in-kernel measurements, comma-separated
    /// (default 1,1000,100000,1000000; with --quick 1,1000).
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    pub rules: Vec<usize>,
    /// A short run: fewer rule sizes, fewer offered rates, fewer frames.
    #[arg(long)]
    pub quick: bool,
    /// Only the in-kernel (test_run) measurements; no live lab.
    #[arg(long)]
    pub kernel_only: bool,
    /// Only the classifier at scale: the drop path with sources spread over
    /// 1 to 1,048,576 prefixes beside the kernel's LPM trie, and a million
    /// rules from a file (start-up, memory, a reload under load).
    #[arg(long, conflicts_with = "kernel_only")]
    pub scale: bool,
    /// Only what counting costs and how well it counts: per-rule counters
    /// and --top on the drop path, top talkers on a Zipf mix, and --read
    /// beside tcpdump -r and tshark -r.
    #[arg(long, conflicts_with_all = ["kernel_only", "scale"])]
    pub counting: bool,
    /// Only what --metrics and --ipfix add to traffic's CPU at 200,000
    /// frames/s, with a real Prometheus scraping and a real nfcapd
    /// receiving.
    #[arg(long, conflicts_with_all = ["kernel_only", "scale", "counting"])]
    pub exporters: bool,
    /// Only the soak: a long capture at a steady rate, reporting memory,
    /// open descriptors and exact counts (soak.md, soak.json).
    #[arg(long)]
    pub soak: bool,
    /// Seconds of the soak.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub soak_seconds: u64,
    /// Frames per second of the soak.
    #[arg(long, value_name = "PPS", default_value_t = 20_000)]
    pub soak_rate: u64,
    /// Write the report here: summary.md, raw.json, kernel.svg, live.svg,
    /// README.SETUP (the machine).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The interface to attach to; give it again for more (`--iface a
    /// --iface b`): each gets its own program and counters, reported per
    /// interface, and `-w` then writes pcapng with one interface block each.
    #[arg(short, long, value_name = "IFACE")]
    pub iface: Vec<String>,
    /// Run on a built-in lab instead of a real interface: two network
    /// namespaces joined by a veth pair, with a generator sending a mix of
    /// IPv4 and IPv6 traffic from documentation prefixes. Everything it
    /// creates is removed at exit.
    #[arg(long, conflicts_with = "iface")]
    pub lab: bool,
    /// XDP mode: native (in the driver), skb (generic, works everywhere), or
    /// auto (native, falling back to skb).
    #[arg(long, value_enum, default_value_t = ModeChoice::Auto)]
    pub mode: ModeChoice,
    /// Replace an XDP program already attached to the interface (one
    /// attached through netlink; a program held by a bpf_link cannot be).
    #[arg(long)]
    pub force: bool,
    /// Drop packets from CIDR (IPv4 or IPv6; a bare address is a /32 or /128).
    /// Repeatable.
    #[arg(long, value_name = "CIDR")]
    pub drop: Vec<String>,
    /// Pass packets from CIDR. Repeatable.
    #[arg(long, value_name = "CIDR")]
    pub pass: Vec<String>,
    /// Pass packets from CIDR and mark them for capture. Repeatable.
    #[arg(long, value_name = "CIDR")]
    pub capture: Vec<String>,
    /// Read rules from FILE: one `ACTION CIDR` per line, `#` starts a
    /// comment. Repeatable. SIGHUP re-reads the files (and the rule flags)
    /// and swaps the new rule set in atomically; a bad file is refused and
    /// the rules in force stay.
    #[arg(long, value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    /// Also re-read the --rules files when one of them changes (written and
    /// closed, or replaced by a rename).
    #[arg(long, requires = "rules")]
    pub watch_rules: bool,
    /// MiB of each of the kernel's two rule tables (the one in force and
    /// the one a reload writes), default twice what the first rules need,
    /// at least 1. A reload needing more is refused: give more here when
    /// the rules files will grow.
    #[arg(long, value_name = "MIB")]
    pub rule_table_mib: Option<u32>,
    /// Rules each of the two rule tables may hold, as far as per-rule
    /// counters go (default: half again the first rule set, at least
    /// 4,096; at most 16,777,216, and at most what half the available
    /// memory holds, 32 bytes a rule per CPU). A reload with more rules is
    /// refused. Also turns per-rule counts on for a first set above 65,536
    /// rules.
    #[arg(long, value_name = "N")]
    pub max_rules: Option<u32>,
    /// Show packets and bytes per rule: a table under each interval's row
    /// and in the summary (JSON always carries them, as `rules`). Rules are
    /// counted by default for sets of up to 65,536 rules; above, only with
    /// this flag or --max-rules (48 bytes of kernel memory a rule per CPU,
    /// and a cache miss a packet).
    #[arg(long, conflicts_with = "no_rule_counts")]
    pub by_rule: bool,
    /// Do not count per rule in the kernel (the `rules` arrays stay empty):
    /// one per-CPU counter update less per packet.
    #[arg(long)]
    pub no_rule_counts: bool,
    /// Report the N sources with the most packets in each interval and over
    /// the run (address, packets, bytes, share, rule), per source address
    /// (or per --top-prefix): the kernel logs each packet's source, traffic
    /// counts them.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// With --top or --ipfix: count IPv4 sources by their first BITS bits
    /// (24 counts each /24 as one source).
    #[arg(long, value_name = "BITS", default_value_t = 32)]
    pub top_prefix: u8,
    /// With --top or --ipfix: count IPv6 sources by their first BITS bits
    /// (64 counts each /64 as one).
    #[arg(long, value_name = "BITS", default_value_t = 128)]
    pub top_prefix6: u8,
    /// With --top or --ipfix: distinct sources counted exactly per
    /// interval; more are counted as untracked, and the report says so.
    /// Over the run, traffic keeps this many sources in memory
    /// (Space-Saving), with an error bound for each.
    #[arg(long, value_name = "N", default_value_t = crate::kernel::engine::DEFAULT_TOP_CAPACITY)]
    pub top_capacity: u32,
    /// Serve Prometheus metrics over HTTP at ADDR:PORT/metrics (for example
    /// 127.0.0.1:9464): packets and bytes by interface, action and family,
    /// parse outcomes, capture events, per-rule counts, delivery latency,
    /// AF_XDP drops. Updated every --interval; nothing listens without it.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// With --metrics: the first N rules to match get series of their own;
    /// later ones count under rule="other" (per action), so that a million
    /// rules do not make a million series.
    #[arg(long, value_name = "N", default_value_t = 1000, requires = "metrics")]
    pub metrics_rules: usize,
    /// Export IPFIX (RFC 7011) flow records to a collector at HOST:PORT
    /// every --interval: packets and bytes per source address (or
    /// --top-prefix prefix) per interface, with the action as
    /// forwardingStatus; what could not be tracked goes as one aggregate
    /// record. UDP unless --ipfix-tcp.
    #[arg(long, value_name = "HOST:PORT")]
    pub ipfix: Option<String>,
    /// With --ipfix: send over TCP (one connection, templates once) instead
    /// of UDP.
    #[arg(long, requires = "ipfix")]
    pub ipfix_tcp: bool,
    /// With --ipfix: the observation domain ID of the messages.
    #[arg(long, value_name = "ID", default_value_t = 1, requires = "ipfix")]
    pub ipfix_domain: u32,
    /// With --ipfix over UDP: send the templates again every SECS seconds
    /// (RFC 7011, section 8.4), so a collector started later can decode.
    #[arg(long, value_name = "SECS", default_value_t = 60.0, requires = "ipfix")]
    pub ipfix_templates: f64,
    /// Print a man page (`man`) or a shell completion script (`bash`,
    /// `zsh`, `fish`, `elvish`, `powershell`) made from these flags, and exit.
    #[arg(long, value_name = "KIND", hide = true, exclusive = true)]
    pub generate: Option<String>,
    /// Read frames from a pcap or pcapng FILE instead of an interface, and
    /// run each through the same XDP program (BPF_PROG_RUN) with the same
    /// rules, counters and outputs; intervals follow the file's timestamps.
    #[arg(short = 'r', long, value_name = "FILE", conflicts_with_all = ["iface", "lab", "afxdp"])]
    pub read: Option<PathBuf>,
    /// The action for IP packets whose source matches no rule. Non-IP and
    /// unparseable frames are always passed.
    #[arg(long = "default", value_enum, default_value_t = Action::Pass)]
    pub default_action: Action,
    /// Seconds between reports.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub interval: f64,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Stop after SECS seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub duration: Option<f64>,
    /// Stop once COUNT captured packets have been kept (written, printed),
    /// as tcpdump's -c: exactly COUNT, in the order they arrived.
    #[arg(short = 'c', long = "count", value_name = "COUNT")]
    pub count: Option<u64>,
    /// Print one line per captured packet (tcpdump-like; a `packet` object
    /// with --json). The interval table then goes to stderr.
    #[arg(long)]
    pub print: bool,
    /// Write captured packets to FILE as pcap (nanosecond timestamps); `-`
    /// is stdout. A new file is created with mode 0600, an existing one is
    /// truncated and keeps its mode; a device or FIFO (with a reader) is
    /// written as it is; a symbolic link is followed only to a device or
    /// FIFO.
    #[arg(short = 'w', long, value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// With -w: write a regular file through the page cache, as tcpdump
    /// does. By default traffic writes it around the page cache (O_DIRECT)
    /// where its file system supports that, from a thread of its own: no
    /// copy into the cache, so an eighth to a quarter less CPU per captured
    /// frame; but a disk slower than the capture, or one that stalls, is
    /// not absorbed by the page cache, and the ring buffer fills meanwhile.
    #[arg(long, requires = "write")]
    pub page_cache: bool,
    /// With -w: start a new file before a packet once the current one is
    /// larger than SIZE millions of bytes (suffix k, m or g for KiB, MiB,
    /// GiB), named as tcpdump does: FILE, FILE1, FILE2...
    #[arg(short = 'C', value_name = "SIZE")]
    pub file_size: Option<String>,
    /// With -w: start a new file every SECS seconds; FILE may hold
    /// strftime(3) conversions (e.g. `cap-%H%M%S.pcap`).
    #[arg(short = 'G', value_name = "SECS")]
    pub rotate_seconds: Option<u64>,
    /// With -C: reuse COUNT file names in turn, FILE0 upward;
    /// with -G alone: stop after COUNT files.
    #[arg(short = 'W', value_name = "COUNT")]
    pub file_count: Option<u32>,
    /// Capture whole packets through AF_XDP sockets, one per receive queue,
    /// instead of the ring buffer. Packets whose action is capture are then
    /// redirected to the sockets and do NOT reach the host's network stack:
    /// use this on capture interfaces (mirror ports), not on a host's uplink.
    #[arg(long)]
    pub afxdp: bool,
    /// AF_XDP mode: zerocopy (the driver must support it), copy (any
    /// driver), or auto (zerocopy, falling back to copy).
    #[arg(long, value_enum, default_value_t = XskModeChoice::Auto, requires = "afxdp")]
    pub afxdp_mode: XskModeChoice,
    /// Open sockets on the first N receive queues only (default: all).
    #[arg(long, value_name = "N", requires = "afxdp")]
    pub queues: Option<u32>,
    /// Entries in each AF_XDP fill and RX ring (a power of two).
    #[arg(long, value_name = "N", default_value_t = 4096, requires = "afxdp")]
    pub afxdp_ring: u32,
    /// Bytes per AF_XDP frame, 2048 or 4096: the largest packet captured whole.
    #[arg(long, value_name = "BYTES", default_value_t = 4096, requires = "afxdp")]
    pub afxdp_frame: u32,
    /// At the end, draw the run as SVG in FILE: packets per second over time
    /// per action, and the delivery-latency histogram.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Bytes of each captured packet to keep (1 to 4096; 0 for 4096, the
    /// most the ring buffer keeps, as tcpdump's -s 0 keeps all it can).
    #[arg(short = 's', long, value_name = "BYTES", default_value_t = traffic_common::DEFAULT_SNAPLEN)]
    pub snaplen: u32,
    /// Also capture 1 in N of all packets, whatever their action.
    #[arg(long, value_name = "N")]
    pub sample: Option<u32>,
    /// Size of the kernel's event ring buffer in bytes (a power of two).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_RING_BYTES)]
    pub ring_size: u32,
    /// Say on stderr why, for the first N frames per CPU counted as
    /// malformed or non-IP (the XDP program logs it).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub explain: u32,
    /// After attaching and opening its sockets, maps and files, switch to
    /// USER (and its group) and drop every capability, as tcpdump does.
    #[arg(short = 'Z', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// While packets flow, read them at least every US microseconds. Below
    /// about 15,000 packets/s each packet wakes the reader at once; above,
    /// the reader reads in batches paced by the rate, and never waits
    /// longer than this (0: wake for every packet at any rate).
    #[arg(long, value_name = "US", default_value_t = DEFAULT_MAX_WAIT.as_micros() as u64)]
    pub max_wait_us: u64,
    /// Spin on the ring buffer (or AF_XDP sockets) instead of sleeping: the
    /// lowest delivery latency, for a whole CPU core. Pin traffic to a core
    /// of its own (e.g. `taskset -c 1`).
    #[arg(long)]
    pub busy_poll: bool,
}

#[derive(Debug, Args)]
pub struct GenArgs {
    /// The interface to send from.
    #[arg(short, long, value_name = "IFACE")]
    pub iface: String,
    /// How many frames to send.
    #[arg(long, value_name = "N")]
    pub count: u64,
    /// A source prefix; frames cycle through the prefixes given, and through
    /// the addresses of each. Repeatable.
    #[arg(long = "src", value_name = "CIDR", required = true)]
    pub sources: Vec<String>,
    /// IPv4 destination.
    #[arg(long, value_name = "ADDR", default_value = "198.51.100.1")]
    pub dst4: std::net::Ipv4Addr,
    /// IPv6 destination.
    #[arg(long, value_name = "ADDR", default_value = "2001:db8::1")]
    pub dst6: std::net::Ipv6Addr,
    /// Destination MAC address.
    #[arg(long, value_name = "MAC", default_value = "ff:ff:ff:ff:ff:ff")]
    pub dst_mac: String,
    /// Frames per second (default: as fast as the device takes them).
    #[arg(long, value_name = "PPS")]
    pub rate: Option<u64>,
    /// Transport protocol.
    #[arg(long, value_enum, default_value_t = Proto::Udp)]
    pub proto: Proto,
    /// Payload bytes after the transport header.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub payload: usize,
    /// How to send: af-packet (AF_PACKET with sendmmsg and qdisc bypass,
    /// retried on back-pressure, so the count is exact; the default, and the
    /// fastest exact one measured) or live-frames (BPF_PROG_RUN live frames:
    /// faster on veth, but the kernel drops what the device cannot take).
    #[arg(long, value_enum, default_value_t = Mechanism::AfPacket)]
    pub mechanism: Mechanism,
    /// Pick sources Zipf-distributed with exponent S (1.1 is typical of
    /// real senders) instead of in turn: rank r (0 the heaviest) is prefix
    /// r % n's address r / n, for --zipf-sources ranks.
    #[arg(long, value_name = "S")]
    pub zipf: Option<f64>,
    /// With --zipf: how many distinct sources (ranks).
    #[arg(long, value_name = "N", default_value_t = 100_000, requires = "zipf")]
    pub zipf_sources: u64,
    /// With --zipf: the seed of the random stream (the same seed sends the
    /// same sources).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "zipf")]
    pub seed: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}
