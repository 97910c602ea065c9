//! `traffic bench`: in-kernel cost per packet (test_run) and live rates on
//! the lab, compared with the floor programs, xdp-filter and tcpdump in one
//! run, printed and written as a report.

use std::{
    fmt::Write as _,
    io::{self, Write as _},
    path::Path,
    process::Command,
};

use serde::{Deserialize, Serialize};

use crate::{
    cli::BenchArgs,
    kernel::caps::{self, CapsError},
    lab::generator::Mechanism,
    sink::{plot, report::si_u64},
};

pub mod counting;
pub mod exporters;
pub mod kernel;
pub mod live;
pub mod scale;
pub mod soak;

use kernel::{Cost, CostError};
use live::{LiveError, LiveResult, Receiver};

/// Why the benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The process lacks a capability.
    #[error(transparent)]
    Caps(#[from] CapsError),
    /// A size given is zero.
    #[error("--repeat, every --rules size, --soak-seconds and --soak-rate must be at least 1")]
    Zero,
    /// The soak's counts are not exact.
    #[error("the soak's counts are not exact: {0}")]
    Inexact(String),
    /// An in-kernel measurement failed.
    #[error("measuring with BPF_PROG_TEST_RUN failed")]
    Kernel(#[from] CostError),
    /// A live scenario failed.
    #[error("{scenario} failed")]
    Live {
        /// The scenario.
        scenario: &'static str,
        /// Why.
        #[source]
        source: LiveError,
    },
    /// The classifier at scale could not be measured.
    #[error("the classifier at scale")]
    Scale(#[from] scale::ScaleError),
    /// `--out` cannot hold the report; said before anything is measured.
    #[error(
        "--out {dir}: cannot hold the report ({source}); give a directory that exists or can be made"
    )]
    Out {
        /// As given.
        dir: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing the tables or the report failed.
    #[error("writing {what} failed")]
    Write {
        /// What was written.
        what: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

fn write_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Write { what, source }
}

/// `raw.json`: every figure of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// What it was measured on.
    pub machine: Machine,
    /// test_run repetitions per figure.
    pub repeat: u32,
    /// In-kernel costs.
    pub kernel: Vec<KernelRow>,
    /// Live scenarios.
    pub live: Vec<LiveRow>,
    /// The AF_XDP loss loop: the same scenario, run after run.
    #[serde(default)]
    pub afxdp_runs: Vec<LiveResult>,
    /// The drop path with sources spread over growing rule sets.
    #[serde(default)]
    pub scale: Vec<scale::ScaleRow>,
    /// A million rules from a file: start-up, memory, reload under load.
    #[serde(default)]
    pub million: Option<scale::MillionRules>,
    /// What per-rule counters and top talkers cost on the drop path.
    #[serde(default)]
    pub counting: Vec<counting::CountingRow>,
    /// Top talkers on a Zipf mix against the truth.
    #[serde(default)]
    pub accuracy: Option<counting::Accuracy>,
    /// `--read` beside `tcpdump -r` and `tshark -r`.
    #[serde(default)]
    pub read: Option<counting::ReadSpeed>,
    /// What `--metrics` and `--ipfix` add to traffic's CPU.
    #[serde(default)]
    pub exporters: Vec<exporters::ExportRow>,
}

/// One in-kernel figure.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KernelRow {
    /// The figure.
    #[serde(flatten)]
    pub cost: Cost,
    /// Against the floor of the same family.
    pub ratio_to_floor: f64,
}

/// One live scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LiveRow {
    /// The figures.
    #[serde(flatten)]
    pub result: LiveResult,
    /// Rate against the pass floor sent the same way.
    pub rate_ratio_to_floor: f64,
    /// CPU per frame against the pass floor sent the same way.
    pub cpu_ratio_to_floor: f64,
}

/// What the figures were measured on.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct Machine {
    /// Host name.
    pub host: String,
    /// `uname -r`.
    pub kernel: String,
    /// CPU model.
    pub cpu: String,
    /// Online cores.
    pub cores: usize,
    /// Memory.
    pub memory: String,
    /// tcpdump's version.
    pub tcpdump: String,
    /// xdp-tools' version.
    pub xdp_filter: String,
    /// When.
    pub date: String,
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "not installed".to_owned())
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        host: first_line("uname", &["-n"]),
        kernel: first_line("uname", &["-srm"]),
        cpu: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default(),
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        memory: meminfo
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" "),
        tcpdump: first_line("tcpdump", &["--version"]),
        xdp_filter: first_line(
            "dpkg-query",
            &["-W", "-f=xdp-tools ${Version}", "xdp-tools"],
        ),
        date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    }
}

/// `traffic bench`: measures, prints the tables, and writes the report
/// when `--out` is given.
///
/// # Errors
///
/// [`BenchError`].
pub fn run(args: &BenchArgs) -> Result<(), BenchError> {
    caps::check(!args.kernel_only)?;
    let rules = if !args.rules.is_empty() {
        args.rules.clone()
    } else if args.quick {
        vec![1, 1_000]
    } else {
        vec![1, 1_000, 100_000, 1_000_000]
    };
    if args.repeat < 1 || rules.contains(&0) || args.soak_seconds == 0 || args.soak_rate == 0 {
        return Err(BenchError::Zero);
    }
    // The report's directory, made now: a run takes minutes, and a path
    // that is a file (or not writable) should not cost them.
    if let Some(dir) = &args.out {
        let out = |source| BenchError::Out {
            dir: dir.display().to_string(),
            source,
        };
        if dir.exists() && !dir.is_dir() {
            return Err(out(io::Error::from(io::ErrorKind::NotADirectory)));
        }
        std::fs::create_dir_all(dir).map_err(out)?;
    }
    if args.soak {
        return soak(args);
    }
    let machine = machine();
    // Live runs come first: the private mount namespace the kernel part
    // enters for xdp-filter's pinned maps would hide the lab's namespaces.
    let only = args.kernel_only || args.scale || args.counting || args.exporters;
    let (live, afxdp_runs) = if only {
        (Vec::new(), Vec::new())
    } else {
        live(args.quick)?
    };
    let mut out = io::stdout().lock();
    let bin = std::env::current_exe().map_err(write_err("the path of the traffic binary"))?;
    let bin = bin.to_string_lossy().into_owned();
    let (counting, accuracy, read) = if args.kernel_only || args.scale || args.exporters {
        (Vec::new(), None, None)
    } else {
        let rows = counting::rows(args.quick, &mut out)?;
        writeln!(out, "\n{}", counting_table(&rows)).map_err(write_err("stdout"))?;
        let accuracy = counting::accuracy(&bin, args.quick)?;
        writeln!(out, "\n{}", accuracy_table(&accuracy)).map_err(write_err("stdout"))?;
        let read = counting::read_speed(&bin, args.quick, &live::workdir())?;
        writeln!(out, "\n{}", read_table(&read)).map_err(write_err("stdout"))?;
        (rows, Some(accuracy), Some(read))
    };
    let (scale, million) = if args.kernel_only || args.counting || args.exporters {
        (Vec::new(), None)
    } else {
        let rows = scale::rows(args.quick, &mut out)?;
        let m = scale::million_rules(&bin, args.quick, &live::workdir())?;
        writeln!(out, "\n{}", million_table(&m)).map_err(write_err("stdout"))?;
        (rows, Some(m))
    };
    let exporters = if args.kernel_only || args.scale || args.counting {
        Vec::new()
    } else {
        let rows = exporters::rows(&bin, args.quick, &live::workdir()).map_err(|source| {
            BenchError::Live {
                scenario: "measuring --metrics and --ipfix",
                source,
            }
        })?;
        writeln!(out, "\n{}", exporters::table(&rows)).map_err(write_err("stdout"))?;
        rows
    };
    let kernel = if args.scale || args.counting || args.exporters {
        Vec::new()
    } else {
        kernel_rows(&rules, args.repeat, &mut out)?
    };
    let live = live_rows(live);
    if !live.is_empty() {
        writeln!(out, "\n{}", live_table(&live)).map_err(write_err("stdout"))?;
    }
    if !afxdp_runs.is_empty() {
        writeln!(out, "\n# AF_XDP loss loop\n{}", afxdp_table(&afxdp_runs))
            .map_err(write_err("stdout"))?;
    }
    if let Some(dir) = &args.out {
        let report = Report {
            machine,
            repeat: args.repeat,
            kernel,
            live,
            afxdp_runs,
            scale,
            million,
            counting,
            accuracy,
            read,
            exporters,
        };
        write_report(dir, &report)?;
        writeln!(out, "report written to {}", dir.display()).map_err(write_err("stdout"))?;
    }
    Ok(())
}

/// Measures the in-kernel costs, printing each figure to `out` as it comes.
fn kernel_rows(
    rules: &[usize],
    repeat: u32,
    out: &mut impl io::Write,
) -> Result<Vec<KernelRow>, BenchError> {
    writeln!(
        out,
        "# in-kernel cost per packet (BPF_PROG_TEST_RUN, {repeat} runs per figure, median of {})",
        kernel::ROUNDS
    )
    .and_then(|()| {
        writeln!(
            out,
            "{:<10} {:<8} {:<6} {:>9} {:>10} {:>8}",
            "program", "path", "family", "rules", "ns/packet", "x floor"
        )
    })
    .map_err(write_err("stdout"))?;

    // xdp-tools' objects pin their maps by name; give them a bpffs of their
    // own in a private mount namespace (nothing is mounted on the host).
    let pins = kernel::private_bpffs()
        .inspect_err(|e| crate::say!("traffic: not measuring xdp-filter: no private bpffs ({e})"))
        .ok();
    let mut floor = std::collections::HashMap::new();
    let mut progress_err = None;
    let costs = kernel::kernel_costs(rules, repeat, pins.as_deref(), |cost| {
        if cost.program == "floor" {
            floor.insert(cost.family.clone(), cost.ns_per_packet);
        }
        let ratio = floor
            .get(&cost.family)
            .map_or(f64::NAN, |f| cost.ns_per_packet / f);
        if let Err(e) = writeln!(
            out,
            "{:<10} {:<8} {:<6} {:>9} {:>10.1} {:>8.2}",
            cost.program, cost.path, cost.family, cost.rules, cost.ns_per_packet, ratio
        ) {
            progress_err.get_or_insert(e);
        }
    })?;
    if let Some(e) = progress_err {
        return Err(write_err("stdout")(e));
    }
    Ok(costs
        .into_iter()
        .map(|cost| KernelRow {
            ratio_to_floor: floor
                .get(&cost.family)
                .map_or(f64::NAN, |f| cost.ns_per_packet / f),
            cost,
        })
        .collect())
}

/// Each live figure beside the pass floor sent the same way.
fn live_rows(live: Vec<LiveResult>) -> Vec<LiveRow> {
    let floors: Vec<LiveResult> = live
        .iter()
        .filter(|r| r.scenario == Receiver::FloorPass.name())
        .cloned()
        .collect();
    live.into_iter()
        .map(|result| {
            let floor = floors.iter().find(|f| f.sender == result.sender);
            LiveRow {
                rate_ratio_to_floor: floor.map_or(f64::NAN, |f| result.rate_pps / f.rate_pps),
                cpu_ratio_to_floor: floor
                    .map_or(f64::NAN, |f| result.cpu_ns_per_packet / f.cpu_ns_per_packet),
                result,
            }
        })
        .collect()
}

/// `--soak`: the long run, its report written to `--out`.
fn soak(args: &BenchArgs) -> Result<(), BenchError> {
    for name in live::cleanup() {
        crate::say!("traffic: removed namespace {name} left by a killed run");
    }
    let bin = std::env::current_exe().map_err(write_err("the path of the traffic binary"))?;
    let workdir = live::workdir();
    std::fs::create_dir_all(&workdir).map_err(write_err(workdir.display().to_string()))?;
    crate::say!(
        "traffic bench: soak of {} s at {} frames/s",
        args.soak_seconds,
        args.soak_rate
    );
    let result =
        soak::run(&bin, &workdir, args.soak_seconds, args.soak_rate, 30).map_err(|source| {
            BenchError::Live {
                scenario: "soak",
                source,
            }
        });
    let _ = std::fs::remove_dir_all(&workdir);
    let result = result?;
    let md = soak::table(&result);
    let mut out = io::stdout().lock();
    writeln!(out, "{md}").map_err(write_err("stdout"))?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(write_err(dir.display().to_string()))?;
        let json =
            serde_json::to_string_pretty(&result).map_err(|e| write_err("soak.json")(e.into()))?;
        std::fs::write(dir.join("soak.json"), json).map_err(write_err("soak.json"))?;
        std::fs::write(dir.join("soak.md"), &md).map_err(write_err("soak.md"))?;
    }
    if !result.exact() {
        return Err(BenchError::Inexact(md));
    }
    Ok(())
}

/// The live scenarios of a run, in order.
/// The live scenarios, and the AF_XDP runs of the loss loop.
fn live(quick: bool) -> Result<(Vec<LiveResult>, Vec<LiveResult>), BenchError> {
    for name in live::cleanup() {
        crate::say!("traffic: removed namespace {name} left by a killed run");
    }
    let bin = std::env::current_exe().map_err(write_err("the path of the traffic binary"))?;
    let workdir = live::workdir();
    std::fs::create_dir_all(&workdir).map_err(write_err(format!(
        "the bench's work directory {}",
        workdir.display()
    )))?;
    let count: u64 = if quick { 200_000 } else { 1_000_000 };
    let seconds_at_rate: u64 = if quick { 2 } else { 4 };
    // 10,000/s is where delivery latency is judged; the others, CPU.
    let rates: &[u64] = if quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 50_000, 100_000, 200_000]
    };
    // `xdpdump --version` exits with status 1 (xdp-tools 1.3.1): that it
    // runs at all says it is installed.
    let has_xdpdump = Command::new("xdpdump").arg("--version").output().is_ok();
    if !has_xdpdump {
        crate::say!("traffic bench: xdpdump is not installed; skipping it");
    }
    let mut results = Vec::new();
    let run_with = |receiver: Receiver,
                    rate: Option<u64>,
                    count: u64,
                    mechanism: Mechanism|
     -> Result<LiveResult, BenchError> {
        let n = rate.map_or(count, |r| (r * seconds_at_rate).min(count));
        crate::say!(
            "traffic bench: {} at {}",
            receiver.name(),
            rate.map_or("full speed".to_owned(), |r| format!("{r} frames/s"))
        );
        live::run_scenario(&bin, &workdir, &receiver, n, rate, mechanism).map_err(|source| {
            BenchError::Live {
                scenario: receiver.name(),
                source,
            }
        })
    };
    let run = |receiver: Receiver, rate: Option<u64>| {
        run_with(receiver, rate, count, Mechanism::AfPacket)
    };
    let wanted = |receiver: &Receiver| match receiver {
        Receiver::XdpFilterDrop => {
            let there = Path::new(kernel::XDP_FILTER_DIR)
                .join("xdpfilt_alw_ip.o")
                .exists();
            if !there {
                crate::say!("traffic bench: xdp-filter is not installed; skipping it");
            }
            there
        }
        Receiver::Xdpdump => has_xdpdump,
        _ => true,
    };
    for receiver in [
        Receiver::Nothing,
        Receiver::FloorPass,
        Receiver::FloorDrop,
        Receiver::TrafficDrop,
        Receiver::XdpFilterDrop,
        Receiver::TrafficCapture,
        Receiver::TrafficCaptureMaxSnap,
        Receiver::TrafficCaptureBusy,
        Receiver::TrafficAfxdp,
        Receiver::Tcpdump,
        Receiver::Xdpdump,
    ] {
        if wanted(&receiver) {
            results.push(run(receiver, None)?);
        }
    }
    // The same traffic at fixed rates: CPU per packet of each capture, and
    // traffic's delivery latency, by default and busy polling.
    for &rate in rates {
        for receiver in [
            Receiver::TrafficCapture,
            Receiver::TrafficCaptureBusy,
            Receiver::Tcpdump,
            Receiver::Xdpdump,
        ] {
            let busy_here = receiver != Receiver::TrafficCaptureBusy || rate == 100_000;
            if wanted(&receiver) && busy_here {
                results.push(run(receiver, Some(rate))?);
            }
        }
    }
    // Side by side on the same traffic: at the highest rate traffic
    // captured at, and at a tenth of it.
    let top = results
        .iter()
        .find(|r| r.scenario == Receiver::TrafficCapture.name() && r.offered_pps.is_none())
        .map_or(100_000.0, |r| r.rate_pps);
    results.push(run(Receiver::TrafficAndTcpdump, None)?);
    results.push(run(Receiver::TrafficAndTcpdump, Some((top / 10.0) as u64))?);
    // The generator's other mechanism: BPF_PROG_RUN live frames, several
    // times faster than AF_PACKET on veth but without back-pressure, so the
    // receiving side can be overrun and lose frames.
    for receiver in [
        Receiver::FloorPass,
        Receiver::TrafficDrop,
        Receiver::TrafficCapture,
        Receiver::TrafficAfxdp,
        Receiver::Tcpdump,
        Receiver::Xdpdump,
    ] {
        if wanted(&receiver) {
            results.push(run_with(receiver, None, count, Mechanism::LiveFrames)?);
        }
    }
    // AF_XDP must lose nothing at the AF_PACKET sender's full rate, run
    // after run: its loss loop.
    let loops = if quick { 3 } else { 20 };
    let mut afxdp_runs = Vec::with_capacity(loops);
    for _ in 0..loops {
        afxdp_runs.push(run_with(
            Receiver::TrafficAfxdp,
            None,
            count / 2,
            Mechanism::AfPacket,
        )?);
    }
    let _ = std::fs::remove_dir_all(&workdir);
    Ok((results, afxdp_runs))
}

/// The AF_XDP loss loop in one line per run and a total.
fn afxdp_table(runs: &[LiveResult]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "| run | sent | rate (frames/s) | captured | lost |");
    let _ = writeln!(t, "|---:|---:|---:|---:|---:|");
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} |",
            i + 1,
            r.sent,
            crate::sink::report::si(r.rate_pps),
            opt(r.captured),
            opt(r.capture_lost)
        );
    }
    let lost: u64 = runs.iter().filter_map(|r| r.capture_lost).sum();
    let sent: u64 = runs.iter().map(|r| r.sent).sum();
    let _ = writeln!(
        t,
        "\n{} runs, {sent} frames sent, {lost} lost; runs with a loss: {}",
        runs.len(),
        runs.iter().filter(|r| r.capture_lost != Some(0)).count()
    );
    t
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".to_owned(), |v| v.to_string())
}

fn live_table(rows: &[LiveRow]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| scenario | sender | offered | sent | rate (frames/s) | × floor | CPU ns/frame | × floor | tool CPU s | tool CPU ns/frame | captured | lost | tcpdump beside: captured / lost | latency p50 / p99 / p99.9 / max |"
    );
    let _ = writeln!(
        t,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for row in rows {
        let r = &row.result;
        let lat = r.latency_ns.map_or("-".to_owned(), |l| {
            format!(
                "{} / {} / {} / {}",
                crate::sink::report::duration_text(l.p50, l.count),
                crate::sink::report::duration_text(l.p99, l.count),
                crate::sink::report::duration_text(l.p999, l.count),
                crate::sink::report::duration_text(l.max, l.count)
            )
        });
        let beside = match (r.tcpdump_captured, r.tcpdump_lost) {
            (None, None) => "-".to_owned(),
            (c, _) => format!("{} / {}", opt(c), opt(c.map(|c| r.sent.saturating_sub(c)))),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {:.2} | {:.0} | {:.2} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.sender,
            r.offered_pps
                .map_or("max".to_owned(), crate::sink::report::si_u64),
            r.sent,
            crate::sink::report::si(r.rate_pps),
            row.rate_ratio_to_floor,
            r.cpu_ns_per_packet,
            row.cpu_ratio_to_floor,
            r.tool_cpu_s.map_or("-".to_owned(), |s| format!("{s:.2}")),
            r.tool_cpu_ns_per_packet
                .map_or("-".to_owned(), |n| format!("{n:.0}")),
            opt(r.captured),
            opt(r.capture_lost),
            beside,
            lat
        );
    }
    t
}

fn kernel_table(rows: &[KernelRow]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| program | path | family | rules | ns/packet | × floor |"
    );
    let _ = writeln!(t, "|---|---|---|---:|---:|---:|");
    for row in rows {
        let c = &row.cost;
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {:.1} | {:.2} |",
            c.program, c.path, c.family, c.rules, c.ns_per_packet, row.ratio_to_floor
        );
    }
    // The capture path against the drop path, and how much of the
    // difference one clock read is, per family and rule count.
    let find = |program: &str, path: &str, family: &str, rules: usize| {
        rows.iter().map(|r| &r.cost).find(|c| {
            c.program == program && c.path == path && c.family == family && c.rules == rules
        })
    };
    let mut said = false;
    for capture in rows.iter().map(|r| &r.cost).filter(|c| c.path == "capture") {
        let (Some(drop), Some(floor), Some(clock)) = (
            find("traffic", "drop", &capture.family, capture.rules),
            find("floor", "pass", &capture.family, 0),
            find(kernel::CLOCK_PROGRAM, "pass", &capture.family, 0),
        ) else {
            continue;
        };
        if !said {
            t.push_str("\nCapture path against drop path (same rules, same frame), and the part of the difference that is the event's clock read (`floor+clock` minus `floor`):\n\n");
            said = true;
        }
        let _ = writeln!(
            t,
            "- {} {} rule{}: capture {:.1} ns = {:.2} × drop ({:.1} ns); +{:.1} ns, of which the clock read {:.1}",
            capture.family,
            capture.rules,
            if capture.rules == 1 { "" } else { "s" },
            capture.ns_per_packet,
            capture.ns_per_packet / drop.ns_per_packet,
            drop.ns_per_packet,
            capture.ns_per_packet - drop.ns_per_packet,
            clock.ns_per_packet - floor.ns_per_packet,
        );
    }
    t
}

/// The classifier at scale as a Markdown table, with each figure against
/// the one-rule figure of its program and family, as measured and net of
/// the floor (a program that only drops: what the statistics and test_run
/// cost themselves).
fn scale_table(rows: &[scale::ScaleRow]) -> String {
    let mut t = String::from(
        "Program time per packet from the kernel's BPF statistics (median of rounds, the programs of a family in turn in each round); every frame dropped; sources take turns among 4,096 prefixes covering the rules' block (240.0.0.0/8, 2001:db8::/32). *x one rule*: the median of the rounds' ratios to the same program with one rule; *net*: both minus the floor's time, what the classifier itself costs.\n\n\
         | program | family | rules | prefix | test_run, 4,096 distinct frames | x one rule (net) | live (veth lab) | x one rule (net) | load |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let find = |program: &str, family: &str| {
        rows.iter()
            .find(|o| o.program == program && o.family == family && o.rules == 1)
    };
    for r in rows {
        let one = find(&r.program, &r.family);
        let floor = find("floor", &r.family);
        // The ratio to the one-rule row, and net of the floor: the median
        // of the rounds' ratios where the rounds were measured in turn
        // (as many of each), else the ratio of the medians.
        let x = |f: fn(&scale::ScaleRow) -> Option<f64>, rounds: fn(&scale::ScaleRow) -> &[f64]| {
            let (Some(one), Some(v)) = (one, f(r)) else {
                return "-".to_owned();
            };
            let Some(one_v) = f(one) else {
                return "-".to_owned();
            };
            if r.program == "floor" {
                return "-".to_owned();
            }
            let (xs, ones) = (rounds(r), rounds(one));
            let floors = floor.map_or(&[][..], rounds);
            if !xs.is_empty() && xs.len() == ones.len() && xs.len() == floors.len() {
                let ratio = scale::median_of_differences(xs, ones, |x, o| x / o);
                let net: Vec<f64> = xs
                    .iter()
                    .zip(ones)
                    .zip(floors)
                    .map(|((x, o), b)| (x - b) / (o - b))
                    .collect();
                return format!(
                    "{:.2} ({:.2})",
                    ratio.unwrap_or(f64::NAN),
                    scale::median(&net)
                );
            }
            let base = floor.and_then(f).unwrap_or(0.0);
            format!("{:.2} ({:.2})", v / one_v, (v - base) / (one_v - base))
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | /{} | {:.1} ns | {} | {} | {} | {:.2} s |",
            r.program,
            r.family,
            r.rules,
            r.prefix_len,
            r.test_run_ns,
            x(|r| Some(r.test_run_ns), |r| &r.test_run_rounds),
            r.live_ns.map_or("-".to_owned(), |n| format!("{n:.1} ns")),
            x(|r| r.live_ns, |r| &r.live_rounds),
            r.load_s
        );
    }
    t
}

/// What counting costs, each variant against the same sources without
/// counts and against the variant before it: the median of the per-round
/// differences (the variants of one source count were measured in turn in
/// each round, so a slow spell of the machine falls on all of them).
fn counting_table(rows: &[counting::CountingRow]) -> String {
    let (test_runs, lives) = rows
        .first()
        .map_or((0, 0), |r| (r.test_run_rounds.len(), r.live_rounds.len()));
    let mut t = format!(
        "Program time per packet from the kernel's BPF statistics (median of rounds: {test_runs} by test_run, {lives} live, each a variant's turn); 1,024 rules over 240.0.0.0/8, every frame dropped; sources spread over the rules (live, a million over the {lives} rounds). *added*: the median over rounds of the difference to the same sources with no counts, and (in brackets) to the row above. *loader*: with `--top`, traffic's own time per frame reading the kernel's logs of sources and summing them (every 50 ms while the live frames flow), on top of the program's.\n\n\
         | counting | distinct sources | test_run | added | live (veth lab) | added | loader |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    let paired = |a: &[f64], b: &[f64]| scale::median_of_differences(a, b, |x, y| x - y);
    for (i, r) in rows.iter().enumerate() {
        let base = rows
            .iter()
            .find(|b| b.variant == "no counts" && b.sources == r.sources)
            .filter(|b| b.variant != r.variant);
        let above = i
            .checked_sub(1)
            .map(|j| &rows[j])
            .filter(|a| a.sources == r.sources && base.is_some_and(|b| b.variant != a.variant));
        let added = |f: fn(&counting::CountingRow) -> &[f64]| {
            let Some(b) = base else {
                return "-".to_owned();
            };
            let mut text = paired(f(r), f(b)).map_or("-".to_owned(), |d| format!("{d:+.1} ns"));
            if let Some(d) = above.and_then(|a| paired(f(r), f(a))) {
                let _ = write!(text, " ({d:+.1})");
            }
            text
        };
        let _ = writeln!(
            t,
            "| {} | {} | {:.1} ns | {} | {:.1} ns | {} | {} |",
            r.variant,
            r.sources,
            r.test_run_ns,
            added(|r| &r.test_run_rounds),
            r.live_ns,
            added(|r| &r.live_rounds),
            if r.loader_ns > 0.0 {
                format!("{:.1} ns", r.loader_ns)
            } else {
                "-".to_owned()
            }
        );
    }
    t
}

fn accuracy_table(a: &counting::Accuracy) -> String {
    format!(
        "| frames | sources | Zipf s | top 10 exact, in order | top 100: exact counts | largest error | not in the true top 100 | report says exact | untracked |\n\
         |---:|---:|---:|---|---:|---:|---:|---|---:|\n\
         | {} | {} | {} | {} | {} of 100 | {:.2} % | {} | {} | {} |\n",
        a.frames,
        a.sources,
        a.s,
        if a.top10_exact { "yes" } else { "no" },
        a.top100_exact,
        a.top100_max_rel_error * 100.0,
        a.top100_misplaced,
        if a.reported_exact { "yes" } else { "no" },
        a.untracked
    )
}

fn read_table(r: &counting::ReadSpeed) -> String {
    let fps = |s: Option<f64>| {
        s.map_or("not installed".to_owned(), |s| {
            format!(
                "{} frames/s ({s:.3} s)",
                crate::sink::report::si(r.frames as f64 / s)
            )
        })
    };
    let n = |w: Option<u64>| w.map_or("-".to_owned(), |w| w.to_string());
    format!(
        "{} frames of 64 bytes in a pcap file, those from 240.0.0.0/12 ({}) written to another (best of 3 runs):\n\n\
         | tool | speed | frames written |\n|---|---:|---:|\n\
         | traffic --read --capture 240.0.0.0/12 -w | {} | {} |\n\
         | tcpdump -r -w 'src net 240.0.0.0/12' | {} | {} |\n\
         | tshark -r -Y 'ip.src == 240.0.0.0/12' -w | {} | {} |\n",
        r.frames,
        r.subset,
        fps(Some(r.traffic_s)),
        r.written.0,
        fps(r.tcpdump_s),
        n(r.written.1),
        fps(r.tshark_s),
        n(r.written.2),
    )
}

fn million_table(m: &scale::MillionRules) -> String {
    format!(
        "| rules | start-up (until attached) | resident memory | peak | reload at {} frames/s: SIGHUP to in force | sent | counted | dropped (old) + passed (new) | peak after reload |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {} | {:.2} s | {:.1} MiB | {:.1} MiB | {:.0} ms | {} | {} | {} + {} | {:.1} MiB |\n",
        m.reload_rate,
        m.rules,
        m.startup_s,
        m.rss_mib,
        m.peak_rss_mib,
        m.reload_ms,
        m.sent,
        m.counted,
        m.dropped,
        m.passed,
        m.peak_rss_after_reload_mib
    )
}

fn write_report(dir: &Path, report: &Report) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(write_err(dir.display().to_string()))?;
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text)
            .map_err(write_err(dir.join(name).display().to_string()))
    };
    write(
        "raw.json",
        &serde_json::to_string_pretty(report).map_err(|e| write_err("raw.json")(e.into()))?,
    )?;
    let m = &report.machine;
    write(
        "README.SETUP",
        &format!(
            "host: {}\nkernel: {}\ncpu: {} ({} cores)\nmemory: {}\ntcpdump: {}\nxdp-filter: {}\ndate: {}\n\
             in-kernel: BPF_PROG_TEST_RUN, {} runs per figure, median of {} rounds, 64-byte UDP frames\n\
             live: two network namespaces joined by a veth pair; `traffic gen` (AF_PACKET, sendmmsg) sends\n\
             64-byte UDP frames from 192.0.2.1 as fast as veth takes them, or at the offered rate\n\
             scale: the same lab, frames from sources taking turns among 4,096 prefixes covering the\n\
             rules' block; program time per packet from BPF statistics (BPF_ENABLE_STATS)\n",
            m.host,
            m.kernel,
            m.cpu,
            m.cores,
            m.memory,
            m.tcpdump,
            m.xdp_filter,
            m.date,
            report.repeat,
            kernel::ROUNDS
        ),
    )?;
    let mut md = format!(
        "# traffic benchmark, {}\n\nMachine: {} ({} cores), {}. Command: `cargo xtask bench`.\n\n",
        m.date, m.cpu, m.cores, m.kernel,
    );
    if !report.kernel.is_empty() {
        let _ = write!(
            md,
            "## In-kernel cost per packet\n\n{}\n",
            kernel_table(&report.kernel)
        );
    }
    if !report.live.is_empty() {
        let _ = write!(
            md,
            "## Live on the veth lab\n\n{}\n",
            live_table(&report.live)
        );
    }
    if !report.afxdp_runs.is_empty() {
        let _ = write!(
            md,
            "## AF_XDP loss loop (AF_PACKET sender, full rate)\n\n{}\n",
            afxdp_table(&report.afxdp_runs)
        );
    }
    if !report.scale.is_empty() {
        let _ = write!(
            md,
            "## The drop path with sources spread over the rules\n\n{}\n",
            scale_table(&report.scale)
        );
    }
    if !report.counting.is_empty() {
        let _ = write!(
            md,
            "## What counting costs\n\n{}\n",
            counting_table(&report.counting)
        );
    }
    if let Some(a) = &report.accuracy {
        let _ = write!(
            md,
            "## Top talkers on a Zipf mix\n\n{}\n",
            accuracy_table(a)
        );
    }
    if let Some(r) = &report.read {
        let _ = write!(
            md,
            "## Recorded captures: --read beside tcpdump and tshark\n\n{}\n",
            read_table(r)
        );
    }
    if let Some(m) = &report.million {
        let _ = write!(
            md,
            "## A million rules from a file

{}
",
            million_table(m)
        );
    }
    if !report.exporters.is_empty() {
        let _ = writeln!(md, "{}", exporters::table(&report.exporters));
    }
    write("summary.md", &md)?;
    let kernel_bars: Vec<(String, f64)> = report
        .kernel
        .iter()
        .map(|r| {
            (
                format!(
                    "{} {} {} {} rules",
                    r.cost.program, r.cost.path, r.cost.family, r.cost.rules
                ),
                r.cost.ns_per_packet,
            )
        })
        .collect();
    write(
        "kernel.svg",
        &plot::bars("in-kernel cost per packet (test_run)", "ns", &kernel_bars),
    )?;
    if !report.live.is_empty() {
        let live_bars: Vec<(String, f64)> = report
            .live
            .iter()
            .map(|r| {
                let at = r.result.offered_pps.map_or("max".to_owned(), si_u64);
                (format!("{} @ {at}", r.result.scenario), r.result.rate_pps)
            })
            .collect();
        write(
            "live.svg",
            &plot::bars("sustained rate on the veth lab", "frames/s", &live_bars),
        )?;
    }
    Ok(())
}
