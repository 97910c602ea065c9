//! The flags validated into what a run, or the generator, runs on; every
//! bad flag is reported at once.

use std::{fmt, path::PathBuf, time::Duration};

use super::args::{GenArgs, RunArgs};
use crate::{
    kernel::{
        Settings,
        caps::{CapsError, User},
        engine::{RULE_COUNTS_BY_DEFAULT, counts_rules_by_default, rule_counter_bytes},
    },
    lab::generator::{GenOptions, Mechanism, Mix, parse_mac},
    rules::{Action, CidrError, RuleError, RuleSet, RuleSpec},
    session::{Afxdp, Ipfix, RunConfig, Target},
    sink::{Format, pcap::Rotation},
    source::{afxdp::XskSizes, pace::Mode},
};

/// One problem with the flags.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither `--iface` nor `--lab`.
    #[error(
        "say where to attach: --iface IFACE (see `ip link`), --lab for the built-in lab, or --read FILE for a recorded capture"
    )]
    NoTarget,
    /// A bad rule, from a flag or a file.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// A duration that is not a positive number of seconds.
    #[error(
        "{flag} must be a positive number of seconds below 1000000000 (about 31 years), not {value}"
    )]
    Seconds {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: f64,
    },
    /// An `--interval` shorter than a report can be.
    #[error(
        "--interval {value} is below {MIN_INTERVAL_S} s: each interval reads the counters and writes a report, and shorter ones would be thousands of lines a second; give {MIN_INTERVAL_S} or more"
    )]
    IntervalTooShort {
        /// What was given.
        value: f64,
    },
    /// `--sample 0`.
    #[error(
        "--sample 0 would sample nothing; give N >= 1 (1 captures every packet) or leave it out"
    )]
    SampleZero,
    /// A capture setting out of range, naming its flag.
    #[error("{0}")]
    Setting(String),
    /// `--queues 0`.
    #[error("--queues 0 would open no socket; give N >= 1 or leave it out")]
    QueuesZero,
    /// `-c 0`.
    #[error("-c 0 would keep no packet; give COUNT >= 1 or leave it out")]
    CountZero,
    /// `-w -` and `--print` both want stdout.
    #[error(
        "-w - writes the pcap to stdout, where --print writes its lines too; drop one, or write the pcap to a file"
    )]
    StdoutTwice,
    /// `--plot -`.
    #[error("--plot needs a file name (an SVG on stdout would mix with the report)")]
    PlotToStdout,
    /// Bad `-C`, `-G` or `-W`.
    #[error("{0}")]
    Rotation(String),
    /// `-Z` names no user.
    #[error(transparent)]
    User(CapsError),
    /// `-Z` with `--lab`, whose generator needs root all along.
    #[error(
        "-Z/--user cannot be used with --lab: the lab's generator needs root for the whole run"
    )]
    UserInLab,
    /// A bad `--src` prefix.
    #[error("--src: bad prefix `{text}`: {source}")]
    Source {
        /// What was given.
        text: String,
        /// Why it is bad.
        source: CidrError,
    },
    /// A bad `--dst-mac`.
    #[error("--dst-mac: `{0}` is not a MAC address like 02:00:00:00:00:01")]
    Mac(String),
    /// A payload no MTU carries.
    #[error("--payload {0} is larger than any MTU; use at most 9000")]
    Payload(usize),
}

/// Every problem with the flags, and what was therefore not done.
#[derive(Debug)]
pub struct Invalid {
    /// What the command did not do: `attached` (a run), `sent` (`gen`).
    pub nothing_was: &'static str,
    /// Every problem found.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nothing was {}:", self.nothing_was)?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Invalid {}

/// `--ipfix` and its options.
fn ipfix(args: &RunArgs, errors: &mut Vec<ConfigError>) -> Option<Ipfix> {
    let collector = args.ipfix.clone()?;
    if collector
        .rsplit_once(':')
        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        errors.push(ConfigError::Setting(format!(
            "--ipfix {collector}: give the collector as HOST:PORT, for example 192.0.2.10:4739 or [2001:db8::10]:4739"
        )));
    }
    let template_every = seconds("--ipfix-templates", args.ipfix_templates, errors);
    Some(Ipfix {
        collector,
        tcp: args.ipfix_tcp,
        domain: args.ipfix_domain,
        template_every,
    })
}

/// Flags that need another, or a target that can serve them.
fn exporters_problems(args: &RunArgs, target: &Target, errors: &mut Vec<ConfigError>) {
    let counting = args.top.is_some() || args.ipfix.is_some();
    if !counting
        && (args.top_prefix != 32
            || args.top_prefix6 != 128
            || args.top_capacity != crate::kernel::engine::DEFAULT_TOP_CAPACITY)
    {
        errors.push(ConfigError::Setting(
            "--top-prefix, --top-prefix6 and --top-capacity shape the per-source counts of --top or --ipfix; give one of those".to_owned(),
        ));
    }
    if let Target::Ifaces(ifaces) = target {
        let mut seen = std::collections::HashSet::new();
        for i in ifaces {
            if !seen.insert(i) {
                errors.push(ConfigError::Setting(format!(
                    "--iface {i} is given twice; name each interface once"
                )));
            }
        }
    }
}

/// A validated generator run.
#[derive(Debug)]
pub struct GenConfig {
    pub options: GenOptions,
    pub mechanism: Mechanism,
    pub json: bool,
}

/// The shortest `--interval`, in seconds: a thousand reports a second.
pub const MIN_INTERVAL_S: f64 = 0.001;

fn seconds(flag: &'static str, value: f64, errors: &mut Vec<ConfigError>) -> Duration {
    if value.is_finite() && value > 0.0 && value < 1e9 {
        Duration::from_secs_f64(value)
    } else {
        errors.push(ConfigError::Seconds { flag, value });
        Duration::from_secs(1)
    }
}

/// The rules of `--drop`, `--pass`, `--capture` and `--rules`.
fn rule_set(args: &RunArgs, errors: &mut Vec<ConfigError>) -> (RuleSpec, RuleSet) {
    let mut flags = Vec::new();
    for (flag, action, cidrs) in [
        ("--drop", Action::Drop, &args.drop),
        ("--pass", Action::Pass, &args.pass),
        ("--capture", Action::Capture, &args.capture),
    ] {
        flags.extend(cidrs.iter().map(|c| (flag, action, c.clone())));
    }
    let spec = RuleSpec {
        default: args.default_action,
        flags,
        files: args.rules.clone(),
    };
    let rules = match spec.read() {
        Ok(rules) => rules,
        Err(e) => {
            errors.extend(e.into_iter().map(ConfigError::from));
            RuleSet::new(args.default_action)
        }
    };
    (spec, rules)
}

/// Whether the kernel counts per rule: unless `--no-rule-counts`, for rule
/// sets up to [`RULE_COUNTS_BY_DEFAULT`] rules, and for larger ones when
/// `--by-rule` or `--max-rules` asks (a note says when they are off).
fn rule_counts(args: &RunArgs, rules: usize, notes: &mut Vec<String>) -> bool {
    if args.no_rule_counts {
        return false;
    }
    if args.by_rule || args.max_rules.is_some() || counts_rules_by_default(rules) {
        return true;
    }
    notes.push(format!(
        "{rules} rules: per-rule counts are off above {RULE_COUNTS_BY_DEFAULT} rules (they would take {} MiB of kernel memory per CPU and a cache miss a packet); --by-rule or --max-rules N turns them on",
        rule_counter_bytes(rules).div_ceil(1 << 20)
    ));
    false
}

/// The capture path's settings and the AF_XDP sizes, checked.
fn capture_settings(
    args: &RunArgs,
    rules: usize,
    notes: &mut Vec<String>,
    errors: &mut Vec<ConfigError>,
) -> (Settings, XskSizes) {
    if args.sample == Some(0) {
        errors.push(ConfigError::SampleZero);
    }
    // tcpdump's -s 0: as much as can be kept.
    let snaplen = if args.snaplen == 0 {
        notes.push(format!(
            "--snaplen 0: keeping up to {} bytes of each packet, the most the ring buffer keeps (--afxdp captures whole frames)",
            traffic_common::MAX_SNAPLEN
        ));
        traffic_common::MAX_SNAPLEN
    } else {
        args.snaplen
    };
    let settings = Settings {
        snaplen,
        sample_every: args.sample.unwrap_or(0),
        ring_bytes: args.ring_size,
        explain: args.explain,
        // Set when the interface's queues are known.
        afxdp_queues: 0,
        rule_table_mib: args.rule_table_mib,
        rule_counts: rule_counts(args, rules, notes),
        max_rules: args.max_rules,
        top: (args.top.is_some() || args.ipfix.is_some()).then_some(
            crate::kernel::engine::TopSettings {
                capacity: args.top_capacity,
                prefix_v4: args.top_prefix,
                prefix_v6: args.top_prefix6,
            },
        ),
    };
    if args.top == Some(0) {
        errors.push(ConfigError::Setting(
            "--top 0 would name no source; give N >= 1 or leave it out".to_owned(),
        ));
    }
    errors.extend(settings.problems().into_iter().map(ConfigError::Setting));
    if args.queues == Some(0) {
        errors.push(ConfigError::QueuesZero);
    }
    let sizes = XskSizes {
        ring: args.afxdp_ring,
        frame: args.afxdp_frame,
    };
    if args.afxdp {
        errors.extend(sizes.problems().into_iter().map(ConfigError::Setting));
    }
    (settings, sizes)
}

/// What two outputs on stdout would garble.
fn outputs_problems(args: &RunArgs, errors: &mut Vec<ConfigError>) {
    let dash = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str() == "-");
    if dash(&args.write) && args.print {
        errors.push(ConfigError::StdoutTwice);
    }
    if dash(&args.plot) {
        errors.push(ConfigError::PlotToStdout);
    }
}

/// `-Z USER`, looked up.
fn user(args: &RunArgs, target: &Target, errors: &mut Vec<ConfigError>) -> Option<User> {
    let user = match args.user.as_deref().map(User::lookup) {
        Some(Ok(user)) => Some(user),
        Some(Err(e)) => {
            errors.push(ConfigError::User(e));
            None
        }
        None => None,
    };
    if user.is_some() && matches!(target, Target::Lab) {
        errors.push(ConfigError::UserInLab);
    }
    user
}

/// `-C SIZE`: millions of bytes, or KiB, MiB, GiB with a suffix.
fn file_size(text: &str) -> Option<u64> {
    let (digits, unit) = match text.char_indices().last()? {
        (i, 'k' | 'K') => (&text[..i], 1 << 10),
        (i, 'm' | 'M') => (&text[..i], 1 << 20),
        (i, 'g' | 'G') => (&text[..i], 1 << 30),
        _ => (text, 1_000_000),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(unit).filter(|&b| b > 0)
}

/// The rotation flags, checked against each other and `-w`.
fn rotation(args: &RunArgs, errors: &mut Vec<ConfigError>) -> Rotation {
    let size = args.file_size.as_deref().and_then(|text| {
        let size = file_size(text);
        if size.is_none() {
            errors.push(ConfigError::Rotation(format!(
                "-C {text} is not a size: give millions of bytes (1), or a number with k, m or g"
            )));
        }
        size
    });
    if args.rotate_seconds == Some(0) {
        errors.push(ConfigError::Rotation(
            "-G 0 would start a new file for every packet; give at least 1 second".into(),
        ));
    }
    if args.file_count == Some(0) {
        errors.push(ConfigError::Rotation(
            "-W 0 allows no file; give at least 1".into(),
        ));
    }
    let rotation = Rotation {
        size,
        seconds: args.rotate_seconds.filter(|&g| g > 0),
        count: args.file_count.filter(|&w| w > 0),
    };
    let named = args.write.as_ref().is_some_and(|p| p.as_os_str() != "-");
    if (args.file_size.is_some() || args.rotate_seconds.is_some()) && !named {
        errors.push(ConfigError::Rotation(
            "-C and -G rotate the file of -w FILE; give one (not -)".into(),
        ));
    }
    if args.file_count.is_some() && args.file_size.is_none() && args.rotate_seconds.is_none() {
        errors.push(ConfigError::Rotation(
            "-W counts the files of -C or -G; give one of them".into(),
        ));
    }
    rotation
}

impl RunConfig {
    /// Validates the flags, collecting every problem.
    ///
    /// # Errors
    ///
    /// [`Invalid`], with every problem found.
    pub fn from_args(args: RunArgs) -> Result<Self, Invalid> {
        let mut errors = Vec::new();
        let rotation = rotation(&args, &mut errors);
        let ifaces = args.iface.clone();
        let target = match (ifaces.is_empty(), args.lab, args.read.clone()) {
            (_, _, Some(file)) => Target::File(file),
            (false, _, _) => Target::Ifaces(ifaces),
            (true, true, _) => Target::Lab,
            (true, false, None) => {
                errors.push(ConfigError::NoTarget);
                Target::Lab
            }
        };
        let (rule_spec, rules) = rule_set(&args, &mut errors);
        let rules_given = !rules.is_empty();
        let mut interval = seconds("--interval", args.interval, &mut errors);
        if args.interval > 0.0 && args.interval < MIN_INTERVAL_S {
            errors.push(ConfigError::IntervalTooShort {
                value: args.interval,
            });
            interval = Duration::from_secs(1);
        }
        let duration = args.duration.map(|d| seconds("--duration", d, &mut errors));
        if args.count == Some(0) {
            errors.push(ConfigError::CountZero);
        }
        let mut notes = Vec::new();
        let (settings, sizes) = capture_settings(&args, rules.len(), &mut notes, &mut errors);
        outputs_problems(&args, &mut errors);
        let user = user(&args, &target, &mut errors);
        let ipfix = ipfix(&args, &mut errors);
        exporters_problems(&args, &target, &mut errors);
        if !errors.is_empty() {
            return Err(Invalid {
                nothing_was: "attached",
                errors,
            });
        }
        Ok(Self {
            user,
            rotation,
            target,
            mode: args.mode,
            force: args.force,
            rules: std::sync::Arc::new(rules),
            rule_spec,
            watch_rules: args.watch_rules,
            rules_given,
            interval,
            format: if args.json {
                Format::Json
            } else {
                Format::Table
            },
            duration,
            count: args.count,
            settings,
            read: if args.busy_poll {
                Mode::Busy
            } else {
                Mode::Adaptive {
                    max_wait: Duration::from_micros(args.max_wait_us),
                }
            },
            by_rule: args.by_rule,
            notes,
            top: args.top,
            metrics: args.metrics.map(|addr| (addr, args.metrics_rules)),
            ipfix,
            sockets_netns: None,
            print: args.print,
            write: args.write,
            direct_io: !args.page_cache,
            plot: args.plot,
            afxdp: args.afxdp.then_some(Afxdp {
                mode: args.afxdp_mode,
                queues: args.queues,
                sizes,
            }),
        })
    }
}

impl GenConfig {
    /// Validates the flags, collecting every problem.
    ///
    /// # Errors
    ///
    /// [`Invalid`], with every problem found.
    pub fn from_args(args: GenArgs) -> Result<Self, Invalid> {
        let mut errors = Vec::new();
        let mut sources = Vec::new();
        for s in &args.sources {
            match s.parse() {
                Ok(c) => sources.push(c),
                Err(source) => errors.push(ConfigError::Source {
                    text: s.clone(),
                    source,
                }),
            }
        }
        let dst_mac = parse_mac(&args.dst_mac).unwrap_or_else(|| {
            errors.push(ConfigError::Mac(args.dst_mac.clone()));
            [0xff; 6]
        });
        if args.payload > 9000 {
            errors.push(ConfigError::Payload(args.payload));
        }
        if let Some(z) = args.zipf
            && !(z.is_finite() && (0.0..=10.0).contains(&z))
        {
            errors.push(ConfigError::Setting(format!(
                "--zipf {z}: give an exponent from 0 (uniform) to 10; 1.1 is typical"
            )));
        }
        if args.zipf.is_some() && !(1..=1 << 32).contains(&args.zipf_sources) {
            errors.push(ConfigError::Setting(format!(
                "--zipf-sources {}: give 1 to 4294967296 sources",
                args.zipf_sources
            )));
        }
        if !errors.is_empty() {
            return Err(Invalid {
                nothing_was: "sent",
                errors,
            });
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
                mix: args.zipf.map_or(Mix::RoundRobin, |s| Mix::Zipf {
                    s,
                    sources: args.zipf_sources,
                    seed: args.seed,
                }),
            },
            mechanism: args.mechanism,
            json: args.json,
        })
    }
}
