//! The classifier at scale: the drop path with sources spread over rule
//! sets of 1 to 1,048,576 prefixes, traffic's table beside the kernel's LPM
//! trie with the same rules; start-up time and memory with a million rules
//! from a file; and a reload of a million rules while frames flow.
//!
//! Every figure is the program's own time per packet from the kernel's BPF
//! statistics (`BPF_ENABLE_STATS`), so it is the same measure whether the
//! packets came from test_run or from a veth lab:
//!
//! - *spread test_run*: 4,096 distinct frames, one per source prefix, each
//!   run once per pass, so consecutive runs hit distant parts of the table
//!   (test_run's repeat on one frame keeps one path hot, which says nothing
//!   of real traffic);
//! - *live*: the generator sends frames whose sources take turns among the
//!   4,096 prefixes, through the veth lab's driver.
//!
//! Rule sets cover the whole of 240.0.0.0/8 (reserved, never routed, only
//! ever a source inside the lab) or of 2001:db8::/32 with equal prefixes:
//! one /8, 1,024 /18s, 131,072 /25s, 1,048,576 /28s; one /32 and 1,048,576
//! /52s for IPv6. Every frame is dropped, and the sources are 4,096 /20s
//! (/44s) that between them cover the block.

use std::{
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    EbpfLoader,
    maps::lpm_trie::{Key, LpmTrie},
    programs::{TestRun as _, TestRunOptions, Xdp},
    sys::Stats,
};
use serde::{Deserialize, Serialize};

use super::live::{LiveError, Spawned, io_step};
use crate::{
    kernel::{Engine, EngineError, ModeChoice, Settings, Tool, ToolProgram, object},
    lab::{
        Lab,
        frame::FrameSpec,
        generator::{self, GenOptions, Proto},
        in_netns,
    },
    rules::{Action, Cidr, Origin, Rule, RuleSet},
};

/// Distinct source prefixes (and test_run frames).
pub const SOURCES: u32 = 4096;

/// One rule set of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// IPv6 or IPv4.
    pub v6: bool,
    /// Prefixes in the set.
    pub rules: u32,
}

impl Case {
    /// The cases of a full run.
    pub fn all(quick: bool) -> Vec<Case> {
        let v4 = |rules| Case { v6: false, rules };
        let v6 = |rules| Case { v6: true, rules };
        if quick {
            vec![v4(1), v4(1 << 20), v6(1), v6(1 << 20)]
        } else {
            vec![
                v4(1),
                v4(1 << 10),
                v4(1 << 17),
                v4(1 << 20),
                v6(1),
                v6(1 << 20),
            ]
        }
    }

    fn family(self) -> &'static str {
        if self.v6 { "ipv6" } else { "ipv4" }
    }

    /// The block every set covers, and its length.
    fn block(self) -> (u128, u32) {
        if self.v6 {
            (0x2001_0db8u128 << 96, 32)
        } else {
            (0xf0u128 << 120, 8)
        }
    }

    /// The prefix length of the set's rules.
    fn rule_len(self) -> u32 {
        self.block().1 + self.rules.trailing_zeros()
    }

    /// The `i`-th rule's prefix.
    fn rule(self, i: u32) -> Cidr {
        let (base, len) = self.block();
        let rlen = self.rule_len();
        let bits = base | (u128::from(i) << (128 - rlen));
        cidr(self.v6, bits, rlen, len)
    }

    /// The `i`-th source prefix: 4,096 covering the block.
    fn source(self, i: u32) -> Cidr {
        let (base, len) = self.block();
        let slen = len + SOURCES.trailing_zeros();
        cidr(self.v6, base | (u128::from(i) << (128 - slen)), slen, len)
    }

    /// The rule set: every prefix drops, the default passes.
    pub fn rule_set(self) -> RuleSet {
        let mut set = RuleSet::new(Action::Pass);
        for i in 0..self.rules {
            set.add(Rule {
                cidr: self.rule(i),
                action: Action::Drop,
                origin: Origin::Flag("bench"),
            });
        }
        assert!(set.seal().is_empty(), "distinct prefixes");
        set
    }
}

fn cidr(v6: bool, bits: u128, len: u32, _block: u32) -> Cidr {
    let addr = if v6 {
        IpAddr::V6(Ipv6Addr::from_bits(bits))
    } else {
        IpAddr::V4(Ipv4Addr::from_bits((bits >> 96) as u32))
    };
    Cidr::new(addr, len as u8).expect("an aligned prefix")
}

/// One figure of the classifier at scale.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScaleRow {
    /// [`TRAFFIC_RULE_COUNTS`], [`TRAFFIC_NO_RULE_COUNTS`], `lpm-trie` or
    /// `floor` (drops everything, no lookup).
    pub program: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Prefixes loaded.
    pub rules: u32,
    /// Their length.
    pub prefix_len: u32,
    /// Program time per packet over 4,096 distinct frames by test_run
    /// (the median round).
    pub test_run_ns: f64,
    /// Every round's figure.
    pub test_run_rounds: Vec<f64>,
    /// Program time per packet in the veth lab, sources spread (the median
    /// round).
    pub live_ns: Option<f64>,
    /// Every round's figure.
    pub live_rounds: Vec<f64>,
    /// Frames sent in the lab.
    pub live_frames: u64,
    /// Seconds from the sealed rule set to the program loaded with it.
    pub load_s: f64,
}

/// A million rules from a file: start-up, memory, a reload under load.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MillionRules {
    /// Rules in the file.
    pub rules: u32,
    /// Seconds from the start of the process to the program attached
    /// (its `start` line).
    pub startup_s: f64,
    /// Resident memory after start-up (VmRSS), MiB.
    pub rss_mib: f64,
    /// Peak resident memory during start-up (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// Frames per second offered during the reload.
    pub reload_rate: u64,
    /// Frames sent in all.
    pub sent: u64,
    /// Packets traffic counted.
    pub counted: u64,
    /// Counted dropped (old set) and passed (new set).
    pub dropped: u64,
    /// Counted passed.
    pub passed: u64,
    /// Milliseconds from SIGHUP to the new set in force, as traffic reported.
    pub reload_ms: f64,
    /// Peak resident memory by the end, after the reload (VmHWM), MiB.
    pub peak_rss_after_reload_mib: f64,
}

/// The reference classifier on the kernel's LPM tries.
struct LpmProgram {
    ebpf: aya::Ebpf,
    link: Option<aya::programs::xdp::XdpLinkId>,
}

impl LpmProgram {
    fn load(rules: &RuleSet) -> Result<Self, EngineError> {
        let (v4, v6) = rules.counts();
        let size = |n: usize| u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        let mut ebpf = object::load(
            object::LPM,
            EbpfLoader::new()
                .map_max_entries("LPM_V4", size(v4))
                .map_max_entries("LPM_V6", size(v6)),
        )?;
        object::load_program(&mut ebpf, "traffic_lpm")?;
        fill(&mut ebpf, "LPM_V4", rules, |ip| match ip {
            IpAddr::V4(a) => Some(a.octets()),
            IpAddr::V6(_) => None,
        })?;
        fill(&mut ebpf, "LPM_V6", rules, |ip| match ip {
            IpAddr::V6(a) => Some(a.octets()),
            IpAddr::V4(_) => None,
        })?;
        Ok(Self { ebpf, link: None })
    }

    fn program(&mut self) -> &mut Xdp {
        object::xdp_mut(&mut self.ebpf, "traffic_lpm")
    }

    fn detach(&mut self) {
        if let Some(link) = self.link.take() {
            crate::kernel::attach::detach(self.program(), link);
        }
    }
}

/// Puts the rules whose address `key` takes into the LPM trie `name`.
fn fill<K: aya::Pod>(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
    rules: &RuleSet,
    key: impl Fn(IpAddr) -> Option<K>,
) -> Result<(), EngineError> {
    let map_err = |source| EngineError::Map {
        name,
        source: Some(source),
    };
    let map = ebpf
        .map_mut(name)
        .ok_or(EngineError::Map { name, source: None })?;
    let mut trie: LpmTrie<_, K, u32> = LpmTrie::try_from(map).map_err(map_err)?;
    for r in rules.iter() {
        if let Some(k) = key(r.cidr.addr()) {
            let prefix = Key::new(u32::from(r.cidr.len()), k);
            trie.insert(&prefix, r.action.to_kernel(), 0)
                .map_err(map_err)?;
        }
    }
    Ok(())
}

/// traffic with per-rule counters, as it runs by default up to
/// [`crate::kernel::engine::RULE_COUNTS_BY_DEFAULT`] rules (and above with
/// `--by-rule`).
pub const TRAFFIC_RULE_COUNTS: &str = "traffic, per-rule counters";

/// traffic without them, as it runs by default above that many rules (and
/// with `--no-rule-counts`): the classifier and the action counters. With
/// many rules and spread sources, a rule's counter is a cache miss of its
/// own.
pub const TRAFFIC_NO_RULE_COUNTS: &str = "traffic, no per-rule counters";

/// A program under measurement.
enum Measured {
    Traffic(Box<Engine>),
    Lpm(LpmProgram),
    Floor(ToolProgram),
}

impl Measured {
    fn name(&self) -> &'static str {
        match self {
            Measured::Traffic(_) => "traffic",
            Measured::Lpm(_) => "lpm-trie",
            Measured::Floor(_) => "floor",
        }
    }

    fn program(&mut self) -> &Xdp {
        match self {
            Measured::Traffic(e) => e.program(),
            Measured::Lpm(l) => l.program(),
            Measured::Floor(f) => f.program(),
        }
    }

    /// (run time, runs) of the program so far, from the kernel's statistics.
    fn stats(&mut self) -> Result<(Duration, u64), ScaleError> {
        let info = self
            .program()
            .info()
            .map_err(|e| ScaleError::Program(e.to_string()))?;
        Ok((info.run_time(), info.run_count()))
    }

    fn attach(&mut self, iface: &str) -> Result<(), ScaleError> {
        let r = match self {
            Measured::Traffic(e) => e.attach(iface, ModeChoice::Native, false).map(|_| ()),
            Measured::Lpm(l) => {
                crate::kernel::attach::attach(l.program(), iface, ModeChoice::Native, false).map(
                    |(_, link)| {
                        l.link = Some(link);
                    },
                )
            }
            Measured::Floor(f) => f.attach(iface, ModeChoice::Native).map(|_| ()),
        };
        r.map_err(|e| ScaleError::Program(crate::kernel::error_chain(&e)))
    }

    fn detach(&mut self) {
        match self {
            Measured::Traffic(e) => e.detach(),
            Measured::Lpm(l) => l.detach(),
            Measured::Floor(f) => f.detach(),
        }
    }
}

/// Why the measurements at scale failed.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// Loading or running a program failed.
    #[error("measuring a classifier failed: {0}")]
    Program(String),
    /// The program did not drop a frame it should have.
    #[error("{program} returned {got} for a frame from {src}, where every frame should be dropped")]
    Verdict {
        /// The program.
        program: &'static str,
        /// Its verdict.
        got: u32,
        /// The frame's source.
        src: IpAddr,
    },
    /// The lab or a process in it failed.
    #[error(transparent)]
    Live(#[from] LiveError),
}

/// The test_run frames: one per source prefix, from an address inside it
/// that differs from prefix to prefix.
fn frames(case: Case) -> Vec<(IpAddr, Vec<u8>)> {
    (0..SOURCES)
        .map(|i| {
            let src = case
                .source(i)
                .nth(u128::from(i.wrapping_mul(2_654_435_761)));
            let dst: IpAddr = if case.v6 {
                "2001:db8::1".parse().expect("valid")
            } else {
                "198.51.100.1".parse().expect("valid")
            };
            let mut spec = FrameSpec::udp(src, dst);
            spec.payload_len = if case.v6 { 2 } else { 22 };
            (src, spec.build())
        })
        .collect()
}

/// Program time per packet over a case's distinct `frames`, each run once
/// per pass; the first pass warms up and is not counted. Every frame must
/// be dropped, as every case's rules drop every source.
fn spread_test_run(
    m: &mut Measured,
    frames: &[(IpAddr, Vec<u8>)],
    passes: u32,
) -> Result<f64, ScaleError> {
    const XDP_DROP: u32 = 1;
    let mut before = (Duration::ZERO, 0);
    for pass in 0..=passes {
        if pass == 1 {
            before = m.stats()?;
        }
        for (src, frame) in frames {
            let r = m
                .program()
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    repeat: 1,
                    ..TestRunOptions::default()
                })
                .map_err(|e| ScaleError::Program(e.to_string()))?;
            if r.return_value != XDP_DROP {
                return Err(ScaleError::Verdict {
                    program: m.name(),
                    got: r.return_value,
                    src: *src,
                });
            }
        }
    }
    let after = m.stats()?;
    Ok(per_run(before, after))
}

/// The median of `xs` (the upper one of an even count).
pub(super) fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median of the per-round differences `diff(x, b)` between a series
/// and the base it was measured beside, round by round (so that a slow
/// spell of the machine falls on both); `None` without a pair.
pub(super) fn median_of_differences(
    xs: &[f64],
    base: &[f64],
    diff: impl Fn(f64, f64) -> f64,
) -> Option<f64> {
    let d: Vec<f64> = xs.iter().zip(base).map(|(&x, &b)| diff(x, b)).collect();
    (!d.is_empty()).then(|| median(&d))
}

/// Nanoseconds per run between two (run time, runs) readings.
pub(super) fn per_run(before: (Duration, u64), after: (Duration, u64)) -> f64 {
    let runs = after.1.saturating_sub(before.1).max(1);
    (after.0.saturating_sub(before.0)).as_nanos() as f64 / runs as f64
}

/// `count` 64-byte frames into the lab whose sources take turns among the
/// case's 4,096 source prefixes, at `rate` or as fast as veth takes them.
fn spread(lab: &Lab, case: Case, count: u64, rate: Option<u64>) -> GenOptions {
    GenOptions {
        iface: lab.tx_if.clone(),
        count,
        sources: (0..SOURCES).map(|i| case.source(i)).collect(),
        dst4: "198.51.100.1".parse().expect("valid"),
        dst6: "2001:db8::1".parse().expect("valid"),
        dst_mac: crate::lab::netns::RX_MAC,
        rate,
        proto: Proto::Udp,
        payload_len: 22,
        mix: generator::Mix::RoundRobin,
    }
}

/// Program time per packet in the lab: `count` frames whose sources take
/// turns among the case's prefixes.
fn live(m: &mut Measured, lab: &Lab, case: Case, count: u64) -> Result<f64, ScaleError> {
    let before = m.stats()?;
    let opts = spread(lab, case, count, None);
    in_netns(&lab.tx_ns, move || generator::run(&opts))
        .map_err(io_step("entering the lab's sending namespace"))?
        .map_err(io_step("sending"))?;
    let after = m.stats()?;
    if after.1 - before.1 < count {
        return Err(ScaleError::Program(format!(
            "the program ran {} times for {count} frames sent",
            after.1 - before.1
        )));
    }
    Ok(per_run(before, after))
}

/// A program of the family being measured, and its rounds so far.
struct Slot {
    /// Index of its case in the family's cases (and frames).
    case: usize,
    which: &'static str,
    /// Taken out while it is attached in the lab.
    m: Option<Measured>,
    load_s: f64,
    test_runs: Vec<f64>,
    lives: Vec<f64>,
}

/// Loads `which` with `set`.
fn load_measured(which: &str, set: &RuleSet) -> Result<Measured, ScaleError> {
    let loaded = match which {
        "floor" => ToolProgram::load(Tool::FloorDrop).map(Measured::Floor),
        TRAFFIC_RULE_COUNTS => Engine::load(set).map(|e| Measured::Traffic(Box::new(e))),
        TRAFFIC_NO_RULE_COUNTS => Engine::load_with(
            set,
            &Settings {
                rule_counts: false,
                ..Settings::default()
            },
        )
        .map(|e| Measured::Traffic(Box::new(e))),
        _ => LpmProgram::load(set).map(Measured::Lpm),
    };
    loaded.map_err(|e| ScaleError::Program(crate::kernel::error_chain(&e)))
}

/// Measures every case with traffic, the LPM trie and the floor, one
/// family at a time, printing its rows when it is done.
///
/// Every program of a family is loaded at once and measured in turn,
/// round after round (each round starting with the next), by test_run and
/// then live: a slow spell of the machine then falls on all of them, so
/// that a round's figures can be compared with each other (the table's
/// ratios to one rule are medians of per-round ratios). Measured one
/// program after the other, the one-rule figure that every ratio divides
/// by moved by a third from run to run (IPv6: 125 to 173 ns by test_run).
///
/// # Errors
///
/// [`ScaleError`].
pub fn rows(quick: bool, out: &mut impl std::io::Write) -> Result<Vec<ScaleRow>, ScaleError> {
    // The kernel keeps run-time statistics while this is open.
    let _stats = aya::sys::enable_stats(Stats::RunTime)
        .map_err(|e| ScaleError::Program(format!("enabling BPF statistics: {e}")))?;
    let count = if quick { 200_000 } else { 1_000_000 };
    let passes = if quick { 3 } else { 5 };
    let rounds = if quick { 3 } else { 7 };
    let _ = writeln!(
        out,
        "# drop path with sources spread over the rules (program ns/packet from BPF stats, median of {rounds} rounds, programs in turn; test_run over {SOURCES} distinct frames, live over {count} frames)\n{:<30} {:<6} {:>9} {:>5} {:>12} {:>9} {:>8}",
        "program", "family", "rules", "len", "test_run ns", "live ns", "load s"
    );
    let mut rows = Vec::new();
    let all = Case::all(quick);
    for v6 in [false, true] {
        let cases: Vec<Case> = all.iter().copied().filter(|c| c.v6 == v6).collect();
        if cases.is_empty() {
            continue;
        }
        let lab = Lab::create("scale", 1).map_err(io_step("creating the lab"))?;
        let frames: Vec<_> = cases.iter().map(|&c| frames(c)).collect();
        let mut slots = Vec::new();
        for (i, &case) in cases.iter().enumerate() {
            let set = case.rule_set();
            for which in [
                "floor",
                TRAFFIC_RULE_COUNTS,
                TRAFFIC_NO_RULE_COUNTS,
                "lpm-trie",
            ] {
                if which == "floor" && case.rules != 1 {
                    continue;
                }
                let started = Instant::now();
                let m = load_measured(which, &set)?;
                slots.push(Slot {
                    case: i,
                    which,
                    m: Some(m),
                    load_s: started.elapsed().as_secs_f64(),
                    test_runs: Vec::with_capacity(rounds),
                    lives: Vec::with_capacity(rounds),
                });
            }
        }
        let k = slots.len();
        for round in 0..rounds {
            for i in (0..k).map(|i| (i + round) % k) {
                let slot = &mut slots[i];
                let m = slot.m.as_mut().expect("every program is put back");
                let ns = spread_test_run(m, &frames[slot.case], passes)?;
                slot.test_runs.push(ns);
            }
        }
        for round in 0..rounds {
            for i in (0..k).map(|i| (i + round) % k) {
                let slot = &mut slots[i];
                let mut m = slot.m.take().expect("every program is put back");
                let iface = lab.rx_if.clone();
                let mut m = in_netns(&lab.rx_ns, move || m.attach(&iface).map(|()| m))
                    .map_err(io_step("entering the lab's receiving namespace"))??;
                let ns = live(&mut m, &lab, cases[slot.case], count / rounds as u64);
                m.detach();
                slot.m = Some(m);
                slot.lives.push(ns?);
            }
        }
        for slot in slots {
            let case = cases[slot.case];
            let row = ScaleRow {
                program: slot.which.to_owned(),
                family: case.family().to_owned(),
                rules: case.rules,
                prefix_len: case.rule_len(),
                test_run_ns: median(&slot.test_runs),
                test_run_rounds: slot.test_runs,
                live_ns: Some(median(&slot.lives)),
                live_rounds: slot.lives,
                live_frames: count,
                load_s: slot.load_s,
            };
            let _ = writeln!(
                out,
                "{:<30} {:<6} {:>9} {:>5} {:>12.1} {:>9.1} {:>8.2}",
                row.program,
                row.family,
                row.rules,
                row.prefix_len,
                row.test_run_ns,
                row.live_ns.unwrap_or_default(),
                row.load_s
            );
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Writes a rules file of `case`'s prefixes, every one with `action`.
fn write_rules(path: &Path, case: Case, action: Action) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        w,
        "# {} {} prefixes of the benchmark",
        case.rules,
        case.family()
    )?;
    for i in 0..case.rules {
        writeln!(w, "{action} {}", case.rule(i))?;
    }
    w.flush()
}

/// VmRSS and VmHWM of `pid`, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Starts `traffic` on a million IPv4 rules from a file in the lab, then
/// replaces the file with the same prefixes passing and sends SIGHUP while
/// `rate` frames per second flow; checks every frame is counted once.
///
/// # Errors
///
/// [`ScaleError`].
pub fn million_rules(bin: &str, quick: bool, dir: &Path) -> Result<MillionRules, ScaleError> {
    let case = Case {
        v6: false,
        rules: 1 << 20,
    };
    std::fs::create_dir_all(dir).map_err(io_step("creating the bench's work directory"))?;
    let file = dir.join("million.rules");
    write_rules(&file, case, Action::Drop).map_err(io_step("writing the rules file"))?;
    let lab = Lab::create("million", 1).map_err(io_step("creating the lab"))?;
    let mut cmd = Lab::command_in(&lab.rx_ns, bin);
    cmd.args([
        "--iface",
        &lab.rx_if,
        "--json",
        "--interval",
        "1",
        "--rules",
    ])
    .arg(&file);
    let started = Instant::now();
    let mut traffic = Spawned::traffic(cmd, Duration::from_secs(60))?;
    let startup_s = started.elapsed().as_secs_f64();
    let pid = traffic.child.id();
    let (rss_mib, peak_rss_mib) = memory(pid);

    let rate: u64 = 200_000;
    let seconds = if quick { 3 } else { 5 };
    let count = rate * seconds;
    let opts = spread(&lab, case, count, Some(rate));
    let tx_ns = lab.tx_ns.clone();
    let sender = std::thread::spawn(move || in_netns(&tx_ns, move || generator::run(&opts)));
    std::thread::sleep(Duration::from_secs(1));
    let tmp = dir.join("million.rules.new");
    write_rules(&tmp, case, Action::Pass).map_err(io_step("writing the new rules file"))?;
    std::fs::rename(&tmp, &file).map_err(io_step("replacing the rules file"))?;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    let line = traffic.wait_for(
        "traffic",
        "\"type\":\"reload\"",
        false,
        Duration::from_secs(60),
    )?;
    let reload: crate::sink::json::Line = serde_json::from_str(&line)
        .map_err(|e| ScaleError::Program(format!("a reload line that does not parse: {e}")))?;
    let crate::sink::json::Line::Reload(reload) = reload else {
        return Err(ScaleError::Program("no reload line".into()));
    };
    if !reload.ok {
        return Err(ScaleError::Program(format!(
            "the reload was refused: {:?}",
            reload.errors
        )));
    }
    let sent = sender
        .join()
        .map_err(|_| ScaleError::Program("the sender panicked".into()))?
        .map_err(io_step("entering the lab's sending namespace"))?
        .map_err(io_step("sending"))?
        .sent;
    std::thread::sleep(Duration::from_millis(300));
    let (_, peak_after) = memory(pid);
    traffic.interrupt();
    let summary = super::live::last_summary(&traffic)
        .ok_or_else(|| ScaleError::Program("traffic printed no summary".into()))?;
    let _ = std::fs::remove_file(&file);
    Ok(MillionRules {
        rules: case.rules,
        startup_s,
        rss_mib,
        peak_rss_mib,
        reload_rate: rate,
        sent,
        counted: summary.counts.packets,
        dropped: summary.counts.drop,
        passed: summary.counts.pass,
        reload_ms: reload.took_ms,
        peak_rss_after_reload_mib: peak_after,
    })
}
