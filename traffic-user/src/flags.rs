//! Command-line flags: parsed raw by clap ([`LowArgs`]), then validated into
//! what the program runs on ([`RunConfig`], [`GenConfig`]), reporting every
//! bad token at once.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use traffic::{
    engine::{ModeChoice, Settings},
    generator::{GenOptions, Proto, parse_mac},
    report::Format,
    rules::{Action, Origin, RuleSet},
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
#[command(name = "traffic", version, args_conflicts_with_subcommands = true)]
pub struct LowArgs {
    #[command(subcommand)]
    pub command: Option<Sub>,
    #[command(flatten)]
    pub run: RunArgs,
}

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
    /// Write the report here: summary.md, raw.json, kernel.svg, live.svg,
    /// README.SETUP (the machine).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The interface to attach to.
    #[arg(short, long, value_name = "IFACE")]
    pub iface: Option<String>,
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
    /// comment. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    /// The action for IP packets whose source matches no rule. Non-IP and
    /// unparseable frames are always passed.
    #[arg(long = "default", value_enum, default_value_t = Action::Pass)]
    pub default_action: Action,
    /// Seconds between reports.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub interval: f64,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Stop after SECS seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Print one line per captured packet (tcpdump-like; a `packet` object
    /// with --json). The interval table then goes to stderr.
    #[arg(long)]
    pub print: bool,
    /// Write captured packets to FILE as pcap (nanosecond timestamps), mode
    /// 0600; a symbolic link is refused.
    #[arg(short = 'w', long, value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// Capture whole packets through AF_XDP sockets, one per receive queue,
    /// instead of the ring buffer. Packets whose action is capture are then
    /// redirected to the sockets and do NOT reach the host's network stack:
    /// use this on capture interfaces (mirror ports), not on a host's uplink.
    #[arg(long)]
    pub afxdp: bool,
    /// AF_XDP mode: zerocopy (the driver must support it), copy (any
    /// driver), or auto (zerocopy, falling back to copy).
    #[arg(long, value_enum, default_value_t = traffic::afxdp::XskModeChoice::Auto, requires = "afxdp")]
    pub afxdp_mode: traffic::afxdp::XskModeChoice,
    /// Open sockets on the first N receive queues only (default: all).
    #[arg(long, value_name = "N", requires = "afxdp")]
    pub queues: Option<u32>,
    /// Entries in each AF_XDP fill and RX ring (a power of two).
    #[arg(long, value_name = "N", default_value_t = 2048, requires = "afxdp")]
    pub afxdp_ring: u32,
    /// Bytes per AF_XDP frame, 2048 or 4096: the largest packet captured whole.
    #[arg(long, value_name = "BYTES", default_value_t = 4096, requires = "afxdp")]
    pub afxdp_frame: u32,
    /// At the end, draw the run as SVG in FILE: packets per second over time
    /// per action, and the delivery-latency histogram.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Bytes of each captured packet to keep (1 to 4096).
    #[arg(long, value_name = "BYTES", default_value_t = traffic_common::DEFAULT_SNAPLEN)]
    pub snaplen: u32,
    /// Also capture 1 in N of all packets, whatever their action.
    #[arg(long, value_name = "N")]
    pub sample: Option<u32>,
    /// Size of the kernel's event ring buffer in bytes (a power of two).
    #[arg(long, value_name = "BYTES", default_value_t = traffic::engine::DEFAULT_RING_BYTES)]
    pub ring_size: u32,
    /// While events flow, wake the reader at most once per this many
    /// microseconds per CPU (0: for every event). Bounds delivery latency
    /// from above and wake-ups per second from above.
    #[arg(long, value_name = "US", default_value_t = traffic::engine::DEFAULT_WAKEUP_INTERVAL.as_micros() as u64)]
    pub wakeup_us: u64,
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
    #[arg(long, value_enum, default_value_t = traffic::generator::Mechanism::AfPacket)]
    pub mechanism: traffic::generator::Mechanism,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Where to attach.
#[derive(Debug, Clone)]
pub enum Target {
    /// A real interface.
    Iface(String),
    /// The built-in lab.
    Lab,
}

/// A validated capture/filter run.
#[derive(Debug)]
pub struct RunConfig {
    pub target: Target,
    pub mode: ModeChoice,
    pub force: bool,
    pub rules: RuleSet,
    /// Whether any rule was given (the lab adds demo rules when not).
    pub rules_given: bool,
    pub interval: Duration,
    pub format: Format,
    pub duration: Option<Duration>,
    pub settings: Settings,
    pub print: bool,
    pub write: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub afxdp: Option<Afxdp>,
}

/// The AF_XDP settings of a run.
#[derive(Debug, Clone, Copy)]
pub struct Afxdp {
    pub mode: traffic::afxdp::XskModeChoice,
    pub queues: Option<u32>,
    pub sizes: traffic::afxdp::XskSizes,
}

/// A validated generator run.
#[derive(Debug)]
pub struct GenConfig {
    pub options: GenOptions,
    pub mechanism: traffic::generator::Mechanism,
    pub json: bool,
}

fn seconds(flag: &str, value: f64, errors: &mut Vec<String>) -> Duration {
    if value.is_finite() && value > 0.0 && value < 1e9 {
        Duration::from_secs_f64(value)
    } else {
        errors.push(format!(
            "{flag} must be a positive number of seconds, not {value}"
        ));
        Duration::from_secs(1)
    }
}

impl RunConfig {
    /// Validates the flags, collecting every problem.
    pub fn from_args(args: RunArgs) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let target = match (args.iface, args.lab) {
            (Some(iface), _) => Target::Iface(iface),
            (None, true) => Target::Lab,
            (None, false) => {
                errors.push("say where to attach: --iface IFACE (see `ip link`), or --lab for the built-in lab".to_owned());
                Target::Lab
            }
        };
        let mut rules = RuleSet::new(args.default_action);
        for (flag, action, cidrs) in [
            ("--drop", Action::Drop, &args.drop),
            ("--pass", Action::Pass, &args.pass),
            ("--capture", Action::Capture, &args.capture),
        ] {
            for cidr in cidrs {
                if let Err(err) = rules.add_str(action, cidr, Origin::Flag(flag)) {
                    errors.push(err.to_string());
                }
            }
        }
        for path in &args.rules {
            errors.extend(rules.add_file(path).into_iter().map(|e| e.to_string()));
        }
        let rules_given = !rules.rules().is_empty();
        let interval = seconds("--interval", args.interval, &mut errors);
        let duration = args.duration.map(|d| seconds("--duration", d, &mut errors));
        if args.sample == Some(0) {
            errors.push("--sample 0 would sample nothing; give N >= 1 (1 captures every packet) or leave it out".to_owned());
        }
        let settings = Settings {
            snaplen: args.snaplen,
            sample_every: args.sample.unwrap_or(0),
            ring_bytes: args.ring_size,
            wakeup_interval: Duration::from_micros(args.wakeup_us),
            // Set when the interface's queues are known.
            afxdp_queues: 0,
        };
        errors.extend(settings.problems());
        if args.queues == Some(0) {
            errors.push("--queues 0 would open no socket; give N >= 1 or leave it out".to_owned());
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            target,
            mode: args.mode,
            force: args.force,
            rules,
            rules_given,
            interval,
            format: if args.json {
                Format::Json
            } else {
                Format::Table
            },
            duration,
            settings,
            print: args.print,
            write: args.write,
            plot: args.plot,
            afxdp: args.afxdp.then_some(Afxdp {
                mode: args.afxdp_mode,
                queues: args.queues,
                sizes: traffic::afxdp::XskSizes {
                    ring: args.afxdp_ring,
                    frame: args.afxdp_frame,
                },
            }),
        })
    }
}

impl GenConfig {
    /// Validates the flags, collecting every problem.
    pub fn from_args(args: GenArgs) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut sources = Vec::new();
        for s in &args.sources {
            match s.parse() {
                Ok(c) => sources.push(c),
                Err(e) => errors.push(format!("--src: bad prefix `{s}`: {e}")),
            }
        }
        let dst_mac = parse_mac(&args.dst_mac).unwrap_or_else(|| {
            errors.push(format!(
                "--dst-mac: `{}` is not a MAC address like 02:00:00:00:00:01",
                args.dst_mac
            ));
            [0xff; 6]
        });
        if args.payload > 9000 {
            errors.push(format!(
                "--payload {} is larger than any MTU; use at most 9000",
                args.payload
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            options: GenOptions {
                iface: args.iface,
                count: args.count,
                sources,
                dst4: args.dst4,
                dst6: args.dst6,
                dst_mac,
                rate: args.rate,
                proto: args.proto,
                payload_len: args.payload,
            },
            mechanism: args.mechanism,
            json: args.json,
        })
    }
}
