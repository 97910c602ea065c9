//! What counting costs, and how well it counts:
//!
//! - the drop path's program time per packet without per-rule counters,
//!   with them, and with `--top` over 1,000 and 1,048,576 distinct sources
//!   (by test_run over distinct frames, and live in the veth lab, from the
//!   kernel's BPF statistics as at [`super::scale`]);
//! - top-talker accuracy on a Zipf mix (s = 1.1, 100,000 sources, 2,000,000
//!   frames) sent through the lab, against what the generator sent;
//! - `--read` of a pcap file beside `tcpdump -r` with an equivalent filter
//!   writing the same subset, and `tshark -r` with a display filter.

use std::{
    collections::HashMap,
    io::Write as _,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use aya::{
    programs::{TestRun as _, TestRunOptions},
    sys::Stats,
};
use serde::{Deserialize, Serialize};

use super::{
    live::{Spawned, io_step},
    scale::{ScaleError, median, per_run},
};
use crate::{
    kernel::{Engine, ModeChoice, Settings, engine::TopSettings},
    lab::{
        Lab,
        frame::FrameSpec,
        generator::{self, GenOptions, Mix, Proto},
        in_netns,
        zipf::Zipf,
    },
    rules::{Action, Cidr, Origin, Rule, RuleSet},
    source::recorded::Recorded,
};

/// One variant of the drop path.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CountingRow {
    /// What the program counts.
    pub variant: String,
    /// Distinct sources of the frames.
    pub sources: u64,
    /// Program time per packet by test_run over the distinct frames (median
    /// of rounds).
    pub test_run_ns: f64,
    /// Every round.
    pub test_run_rounds: Vec<f64>,
    /// Program time per packet live in the lab (median of rounds).
    pub live_ns: f64,
    /// Every round.
    pub live_rounds: Vec<f64>,
    /// The loader's time per frame reading the logs of sources and summing
    /// them (`--top`), over the live rounds; 0 for the other variants.
    #[serde(default)]
    pub loader_ns: f64,
}

/// Top talkers on a Zipf mix, against the truth.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Accuracy {
    /// Frames sent.
    pub frames: u64,
    /// Distinct sources (ranks) of the mix.
    pub sources: u64,
    /// The Zipf exponent.
    pub s: f64,
    /// Whether the 10 heaviest were reported with exact counts, in order.
    pub top10_exact: bool,
    /// Of the top 100 reported: sources whose count is exact.
    pub top100_exact: u32,
    /// Of the top 100: the largest error, relative to the true count.
    pub top100_max_rel_error: f64,
    /// Of the top 100: sources that are not among the true top 100.
    pub top100_misplaced: u32,
    /// The report's own word on exactness.
    pub reported_exact: bool,
    /// Packets the kernel could not place in a source.
    pub untracked: u64,
}

/// `--read` beside tcpdump and tshark on one file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReadSpeed {
    /// Frames in the file.
    pub frames: u64,
    /// Frames of the subset each writes.
    pub subset: u64,
    /// Seconds: traffic --read.
    pub traffic_s: f64,
    /// Seconds: tcpdump -r with a BPF filter.
    pub tcpdump_s: Option<f64>,
    /// Seconds: tshark -r with a display filter.
    pub tshark_s: Option<f64>,
    /// Frames each wrote (traffic, tcpdump, tshark).
    pub written: (u64, Option<u64>, Option<u64>),
}

/// The 1,024 /18 rules over 240.0.0.0/8, every one dropping.
fn rules() -> RuleSet {
    let mut set = RuleSet::new(Action::Pass);
    for i in 0..1024u32 {
        let net = Ipv4Addr::from_bits(0xf000_0000 | (i << 14));
        set.add(Rule {
            cidr: Cidr::new(IpAddr::V4(net), 18).expect("aligned"),
            action: Action::Drop,
            origin: Origin::Flag("bench"),
        });
    }
    assert!(set.seal().is_empty());
    set
}

/// Source `i` of `n` distinct ones, spread over 240.0.0.0/8 (an odd
/// multiplier is a bijection modulo 2^24).
fn source(i: u64, n: u64) -> u32 {
    let spread = if n <= 1024 {
        i * 16_411
    } else {
        i.wrapping_mul(2_654_435_761)
    };
    0xf000_0000 | (spread as u32 & 0x00ff_ffff)
}

/// Frames between two readings of the logs of sources, as traffic reads
/// them while packets flow (a log holds 262,144 IPv4 sources).
const GATHER_FRAMES: u64 = 65_536;

/// Program time per packet over `n` distinct frames by test_run, each run
/// once per pass, the first pass not counted. The logs of sources are read
/// as traffic reads them, outside the program's time.
fn test_run(engine: &mut Engine, n: u64, passes: u32) -> Result<f64, ScaleError> {
    let mut frame = FrameSpec::udp(
        IpAddr::V4(Ipv4Addr::from_bits(source(0, n))),
        "198.51.100.1".parse().expect("valid"),
    );
    frame.payload_len = 22;
    let mut frame = frame.build();
    let mut before = (Duration::ZERO, 0);
    for pass in 0..=passes {
        if pass == 1 {
            before = run_stats(engine)?;
        }
        for i in 0..n {
            frame[26..30].copy_from_slice(&source(i, n).to_be_bytes());
            let r = engine
                .program()
                .test_run(TestRunOptions {
                    data_in: Some(&frame),
                    repeat: 1,
                    ..TestRunOptions::default()
                })
                .map_err(|e| ScaleError::Program(e.to_string()))?;
            if r.return_value != 1 {
                return Err(ScaleError::Program(format!(
                    "a frame from {} was not dropped",
                    Ipv4Addr::from_bits(source(i, n))
                )));
            }
            if i % GATHER_FRAMES == GATHER_FRAMES - 1 {
                engine.gather_sources();
            }
        }
        engine.take_sources(&mut |_, _| {});
    }
    Ok(per_run(before, run_stats(engine)?))
}

/// (run time, runs) of the engine's program so far, from the kernel's
/// statistics.
fn run_stats(engine: &Engine) -> Result<(Duration, u64), ScaleError> {
    let info = engine
        .program()
        .info()
        .map_err(|e| ScaleError::Program(e.to_string()))?;
    Ok((info.run_time(), info.run_count()))
}

/// The generator's options for `count` frames over `n` distinct sources,
/// in live round `round`: with more than 4,096 sources, each round takes
/// other addresses, so that the rounds together reach `n`.
fn spread(lab: &Lab, n: u64, count: u64, round: u32) -> GenOptions {
    let sources = if n <= 4096 {
        (0..n)
            .map(|i| Cidr::new(IpAddr::V4(Ipv4Addr::from_bits(source(i, n))), 32).expect("host"))
            .collect()
    } else {
        // A /27 in each of 4,096 /20s, taken in turn: frame i is address
        // i / 4096 of prefix i % 4096, so a round of up to 131,072 frames
        // has distinct sources; round r takes the r-th /27 of each /20.
        (0..4096u32)
            .map(|p| {
                let net = 0xf000_0000 | (p << 12) | ((round % 128) << 5);
                Cidr::new(IpAddr::V4(Ipv4Addr::from_bits(net)), 27).expect("aligned")
            })
            .collect()
    };
    GenOptions {
        iface: lab.tx_if.clone(),
        count,
        sources,
        dst4: "198.51.100.1".parse().expect("valid"),
        dst6: "2001:db8::1".parse().expect("valid"),
        dst_mac: crate::lab::netns::RX_MAC,
        rate: None,
        proto: Proto::Udp,
        payload_len: 22,
        mix: Mix::RoundRobin,
    }
}

/// Program time per packet live: `count` frames over `n` sources; and the
/// time this thread spent reading the logs of sources, as traffic does
/// every [`traffic_common::top::GATHER_EVERY_MS`] while the frames flow.
fn live(
    engine: &mut Engine,
    lab: &Lab,
    n: u64,
    count: u64,
    round: u32,
) -> Result<(f64, Duration), ScaleError> {
    let before = run_stats(engine)?;
    let opts = spread(lab, n, count, round);
    let sender = std::thread::spawn({
        let ns = lab.tx_ns.clone();
        move || in_netns(&ns, move || generator::run(&opts))
    });
    let every = Duration::from_millis(traffic_common::top::GATHER_EVERY_MS);
    let mut gathering = Duration::ZERO;
    let mut gather = |engine: &mut Engine| {
        let t = Instant::now();
        engine.take_sources(&mut |_, _| {});
        gathering += t.elapsed();
    };
    while !sender.is_finished() {
        std::thread::sleep(every);
        gather(engine);
    }
    sender
        .join()
        .map_err(|_| ScaleError::Program("the sending thread panicked".to_owned()))?
        .map_err(io_step("entering the lab's sending namespace"))?
        .map_err(io_step("sending"))?;
    gather(engine);
    let after = run_stats(engine)?;
    let runs = after.1 - before.1;
    if runs < count {
        return Err(ScaleError::Program(format!(
            "the program ran {runs} times for {count} frames sent"
        )));
    }
    Ok((per_run(before, after), gathering))
}

/// Frames per live round of a full run.
const LIVE_ROUND_FRAMES: u64 = 40_000;

/// Measures each variant, printing rows as they come. The variants of one
/// source count are loaded together and measured in turn, round after
/// round, each round starting with the next, so that a slow spell of the
/// machine falls on all of them.
///
/// # Errors
///
/// [`ScaleError`].
pub fn rows(quick: bool, out: &mut impl std::io::Write) -> Result<Vec<CountingRow>, ScaleError> {
    let _stats = aya::sys::enable_stats(Stats::RunTime)
        .map_err(|e| ScaleError::Program(format!("enabling BPF statistics: {e}")))?;
    let rounds = if quick { 5 } else { 9 };
    // Live figures move with the machine's other tenants from one second to
    // the next: many short rounds, variants in turn, so that a slow spell
    // falls on all of them. One round's figure strays by 30 ns and more
    // either way (122 to 253 ns for one variant in one run), so that a
    // median of 25 rounds put per-rule counting at +4 to +31 ns from one
    // run to the next; 100 rounds narrow that to a few ns.
    let live_rounds: u64 = if quick { 9 } else { 100 };
    let set = rules();
    let plain = Settings {
        rule_counts: false,
        ..Settings::default()
    };
    let top = |capacity| Settings {
        top: Some(TopSettings {
            capacity,
            ..TopSettings::default()
        }),
        ..Settings::default()
    };
    let default_top = crate::kernel::engine::DEFAULT_TOP_CAPACITY;
    let million = 1u64 << 20;
    let groups: Vec<(u64, Vec<(&str, Settings)>)> = vec![
        (
            1000,
            vec![
                ("no counts", plain.clone()),
                ("per-rule counters", Settings::default()),
                ("per-rule + top", top(default_top)),
            ],
        ),
        (
            million,
            vec![
                ("no counts", plain),
                ("per-rule counters", Settings::default()),
                (
                    "per-rule + top (default capacity: most untracked)",
                    top(default_top),
                ),
                ("per-rule + top (capacity 2^21: all counted)", top(1 << 21)),
            ],
        ),
    ];
    let _ = writeln!(
        out,
        "# what counting costs: drop path, 1,024 rules, program ns/packet from BPF stats (median of {rounds} test_run and {live_rounds} live rounds, variants in turn)\n{:<50} {:>9} {:>12} {:>9} {:>9}",
        "variant", "sources", "test_run ns", "live ns", "loader ns"
    );
    let mut rows = Vec::new();
    for (n, variants) in groups {
        let lab = Lab::create("count", 1).map_err(io_step("creating the lab"))?;
        let mut engines = variants
            .iter()
            .map(|(_, settings)| {
                Engine::load_with(&set, settings)
                    .map_err(|e| ScaleError::Program(crate::kernel::error_chain(&e)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let passes = if n > 4096 {
            1
        } else if quick {
            20
        } else {
            50
        };
        let count = if quick {
            n.max(200_000)
        } else {
            live_rounds * LIVE_ROUND_FRAMES
        };
        let mut test_runs = vec![Vec::new(); engines.len()];
        let mut lives = vec![Vec::new(); engines.len()];
        let mut gathering = vec![Duration::ZERO; engines.len()];
        // Each round starts with another variant, so that none is always
        // measured first (or right after a given other).
        let k = engines.len();
        for round in 0..rounds {
            for i in (0..k).map(|i| (i + round) % k) {
                test_runs[i].push(test_run(&mut engines[i], n, passes)?);
            }
        }
        let mut engines: Vec<Option<Engine>> = engines.into_iter().map(Some).collect();
        for round in 0..live_rounds as u32 {
            for i in (0..k).map(|i| (i + round as usize) % k) {
                let iface = lab.rx_if.clone();
                let mut engine = engines[i].take().expect("every engine is put back");
                let mut engine = in_netns(&lab.rx_ns, move || {
                    let attached = engine.attach(&iface, ModeChoice::Native, false).map(|_| ());
                    attached.map(|()| engine)
                })
                .map_err(io_step("entering the lab's receiving namespace"))?
                .map_err(|e| ScaleError::Program(crate::kernel::error_chain(&e)))?;
                let (ns, took) = live(&mut engine, &lab, n, count / live_rounds, round)?;
                lives[i].push(ns);
                gathering[i] += took;
                engine.detach();
                engines[i] = Some(engine);
            }
        }
        let frames = (count / live_rounds * live_rounds) as f64;
        for ((((variant, settings), test_run_rounds), live_rounds), gathering) in
            variants.iter().zip(test_runs).zip(lives).zip(gathering)
        {
            let row = CountingRow {
                variant: (*variant).to_owned(),
                sources: n,
                test_run_ns: median(&test_run_rounds),
                test_run_rounds,
                live_ns: median(&live_rounds),
                live_rounds,
                loader_ns: if settings.top.is_some() {
                    gathering.as_nanos() as f64 / frames
                } else {
                    0.0
                },
            };
            let _ = writeln!(
                out,
                "{:<50} {:>9} {:>12.1} {:>9.1} {:>9.1}",
                row.variant, row.sources, row.test_run_ns, row.live_ns, row.loader_ns
            );
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The source rank `r` of the accuracy run's mix: 240.0.0.0/8's address r.
fn zipf_source(r: u64) -> IpAddr {
    generator::ranked(&["240.0.0.0/8".parse().expect("valid")], r)
}

/// Sends a Zipf mix through the lab to `traffic --top 100` and compares
/// its run's top 100 with what was sent.
///
/// # Errors
///
/// [`ScaleError`].
pub fn accuracy(bin: &str, quick: bool) -> Result<Accuracy, ScaleError> {
    let (frames, sources, s, seed) = (if quick { 500_000 } else { 2_000_000 }, 100_000u64, 1.1, 7);
    let mut truth: HashMap<IpAddr, u64> = HashMap::new();
    for r in Zipf::new(sources, s, seed).take(frames as usize) {
        *truth.entry(zipf_source(r)).or_default() += 1;
    }
    let lab = Lab::create("zipf", 1).map_err(io_step("creating the lab"))?;
    let mut cmd = Lab::command_in(&lab.rx_ns, bin);
    cmd.args([
        "--iface",
        &lab.rx_if,
        "--json",
        "--drop",
        "240.0.0.0/8",
        "--top",
        "100",
    ]);
    let mut traffic = Spawned::traffic(cmd, Duration::from_secs(30))?;
    let opts = GenOptions {
        sources: vec!["240.0.0.0/8".parse().expect("valid")],
        mix: Mix::Zipf { s, sources, seed },
        ..spread(&lab, 1, frames, 0)
    };
    in_netns(&lab.tx_ns, move || generator::run(&opts))
        .map_err(io_step("entering the lab's sending namespace"))?
        .map_err(io_step("sending"))?;
    std::thread::sleep(Duration::from_millis(300));
    traffic.interrupt();
    let summary = super::live::last_summary(&traffic)
        .ok_or_else(|| ScaleError::Program("traffic printed no summary".into()))?;
    let top = summary
        .top
        .ok_or_else(|| ScaleError::Program("traffic's summary has no top talkers".into()))?;
    let mut true_order: Vec<(IpAddr, u64)> = truth.iter().map(|(a, c)| (*a, *c)).collect();
    true_order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let true_top100: Vec<IpAddr> = true_order.iter().take(100).map(|(a, _)| *a).collect();
    let reported: Vec<(IpAddr, u64)> = top
        .sources
        .iter()
        .filter_map(|t| t.source.parse().ok().map(|a| (a, t.packets)))
        .collect();
    let exact = |(a, c): &(IpAddr, u64)| truth.get(a) == Some(c);
    let top10_exact = reported.len() >= 10
        && reported
            .iter()
            .take(10)
            .zip(&true_order)
            .all(|(r, t)| exact(r) && r.0 == t.0);
    let top100 = &reported[..reported.len().min(100)];
    Ok(Accuracy {
        frames,
        sources,
        s,
        top10_exact,
        top100_exact: top100.iter().filter(|r| exact(r)).count() as u32,
        top100_max_rel_error: top100
            .iter()
            .map(|(a, c)| {
                let t = truth.get(a).copied().unwrap_or(0).max(1) as f64;
                (*c as f64 - t).abs() / t
            })
            .fold(0.0, f64::max),
        top100_misplaced: top100
            .iter()
            .filter(|(a, _)| !true_top100.contains(a))
            .count() as u32,
        reported_exact: top.exact,
        untracked: top.untracked_packets,
    })
}

/// Writes a pcap of `n` 64-byte frames whose sources take turns among
/// 4,096 /20s of 240.0.0.0/8, a microsecond apart.
fn write_pcap(path: &Path, n: u64) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&4u16.to_le_bytes())?;
    w.write_all(&[0; 8])?;
    w.write_all(&65_535u32.to_le_bytes())?;
    w.write_all(&1u32.to_le_bytes())?;
    let mut spec = FrameSpec::udp(
        "240.0.0.1".parse().expect("valid"),
        "198.51.100.1".parse().expect("valid"),
    );
    spec.payload_len = 22;
    let mut frame = spec.build();
    for i in 0..n {
        let src = 0xf000_0000 | (((i % 4096) as u32) << 12) | ((i / 4096) as u32 & 0xfff);
        frame[26..30].copy_from_slice(&src.to_be_bytes());
        let (secs, usecs) = (1_800_000_000 + i / 1_000_000, i % 1_000_000);
        w.write_all(&(secs as u32).to_le_bytes())?;
        w.write_all(&(usecs as u32).to_le_bytes())?;
        w.write_all(&(frame.len() as u32).to_le_bytes())?;
        w.write_all(&(frame.len() as u32).to_le_bytes())?;
        w.write_all(&frame)?;
    }
    w.flush()
}

/// Frames in a capture file, or `None` when it cannot be read.
fn frames_in(path: &Path) -> Option<u64> {
    let mut r = Recorded::open(path).ok()?;
    while r.next_frame().ok()?.is_some() {}
    Some(r.frames())
}

/// Seconds `cmd` took, or `None` when it could not run or failed.
fn timed(mut cmd: Command) -> Option<f64> {
    let started = Instant::now();
    let status = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| started.elapsed().as_secs_f64())
}

/// `traffic --read` beside `tcpdump -r` and `tshark -r` on one file, each
/// writing the frames from 240.0.0.0/12 (a sixteenth) to a pcap file; the
/// best of three runs each.
///
/// # Errors
///
/// [`ScaleError`] when the file cannot be written or traffic fails.
pub fn read_speed(bin: &str, quick: bool, dir: &Path) -> Result<ReadSpeed, ScaleError> {
    let n: u64 = if quick { 200_000 } else { 1_000_000 };
    std::fs::create_dir_all(dir).map_err(io_step("creating the bench's work directory"))?;
    let file = dir.join("read.pcap");
    write_pcap(&file, n).map_err(io_step("writing the capture file"))?;
    let out = |tool: &str| dir.join(format!("read-{tool}.pcap"));
    let best =
        |make: &dyn Fn() -> Command| (0..3).filter_map(|_| timed(make())).min_by(f64::total_cmp);
    let traffic_s = best(&|| {
        let mut c = Command::new(bin);
        c.arg("--read")
            .arg(&file)
            .args(["--capture", "240.0.0.0/12", "--json", "-w"])
            .arg(out("traffic"));
        c
    })
    .ok_or_else(|| ScaleError::Program("traffic --read failed on the benchmark's file".into()))?;
    let tcpdump_s = best(&|| {
        let mut c = Command::new("tcpdump");
        c.arg("-r")
            .arg(&file)
            .arg("-w")
            .arg(out("tcpdump"))
            .arg("src net 240.0.0.0/12");
        c
    });
    let tshark_s = best(&|| {
        let mut c = Command::new("tshark");
        c.arg("-r")
            .arg(&file)
            .args(["-Y", "ip.src == 240.0.0.0/12", "-w"])
            .arg(out("tshark"));
        c
    });
    let written = (
        frames_in(&out("traffic")).unwrap_or(0),
        tcpdump_s.and_then(|_| frames_in(&out("tcpdump"))),
        tshark_s.and_then(|_| frames_in(&out("tshark"))),
    );
    for tool in ["traffic", "tcpdump", "tshark"] {
        let _ = std::fs::remove_file(out(tool));
    }
    let _ = std::fs::remove_file(&file);
    Ok(ReadSpeed {
        frames: n,
        // Frame i is from prefix i % 4096; the first 256 are in the /12.
        subset: (n / 4096) * 256 + (n % 4096).min(256),
        traffic_s,
        tcpdump_s,
        tshark_s,
        written,
    })
}
