//! What a run runs on: the command line's flags once validated
//! ([`crate::cli::config`] makes it), or a caller's own.

use std::{path::PathBuf, time::Duration};

use crate::{
    kernel::{ModeChoice, Settings, caps::User},
    rules::{RuleSet, RuleSpec},
    sink::{Format, pcap::Rotation},
    source::{
        afxdp::{XskModeChoice, XskSizes},
        pace::Mode,
    },
};

/// Where to attach.
#[derive(Debug, Clone)]
pub enum Target {
    /// Real interfaces, one or more (`--iface a --iface b`).
    Ifaces(Vec<String>),
    /// The built-in lab.
    Lab,
    /// A recorded capture (`--read`), run through the program by
    /// BPF_PROG_RUN.
    File(PathBuf),
}

/// A validated capture/filter run.
#[derive(Debug)]
pub struct RunConfig {
    pub target: Target,
    pub mode: ModeChoice,
    pub force: bool,
    pub rules: std::sync::Arc<RuleSet>,
    /// What the rules are made of, to read them again on SIGHUP.
    pub rule_spec: RuleSpec,
    /// `--watch-rules`: also read them again when a rules file changes.
    pub watch_rules: bool,
    /// Whether any rule was given (the lab adds demo rules when not).
    pub rules_given: bool,
    pub interval: Duration,
    pub format: Format,
    pub duration: Option<Duration>,
    /// `-c COUNT`: stop once that many captured packets were kept.
    pub count: Option<u64>,
    pub settings: Settings,
    /// How the sources are read: `--busy-poll`, or paced by the rate below
    /// `--max-wait-us`.
    pub read: Mode,
    pub print: bool,
    pub write: Option<PathBuf>,
    /// Whether `-w` writes a regular file around the page cache where its
    /// file system allows (not `--page-cache`).
    pub direct_io: bool,
    pub plot: Option<PathBuf>,
    pub afxdp: Option<Afxdp>,
    /// Who to run as once everything is open (`-Z`).
    pub user: Option<User>,
    /// When to start a new pcap file (`-C`, `-G`, `-W`).
    pub rotation: Rotation,
    /// `--by-rule`: the per-rule table.
    pub by_rule: bool,
    /// What the user should know of how the flags were taken (printed as
    /// `traffic: note: ...` when the run starts).
    pub notes: Vec<String>,
    /// `--top N`: how many sources each report names.
    pub top: Option<usize>,
    /// `--metrics ADDR:PORT`: where to serve Prometheus metrics, and how
    /// many rules get series of their own (`--metrics-rules`).
    pub metrics: Option<(std::net::SocketAddr, usize)>,
    /// `--ipfix`: where and how to export flow records.
    pub ipfix: Option<Ipfix>,
    /// The network namespace `--metrics` listens in and `--ipfix` sends
    /// from, when it is not the one the run attaches in: the built-in lab
    /// attaches inside a namespace of its own, while its user's scraper and
    /// collector are where traffic was started. `None`: where the run is.
    pub sockets_netns: Option<std::sync::Arc<std::fs::File>>,
}

/// The IPFIX export of a run (`--ipfix`).
pub type Ipfix = crate::sink::ipfix::IpfixSettings;

/// The AF_XDP settings of a run.
#[derive(Debug, Clone, Copy)]
pub struct Afxdp {
    pub mode: XskModeChoice,
    pub queues: Option<u32>,
    pub sizes: XskSizes,
}
