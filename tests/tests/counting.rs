//! Who sends what (issue 12): counts per rule, top talkers, recorded
//! captures run through the program, and the plot of them.

use std::{collections::HashMap, net::IpAddr, path::Path, process::Command, time::Duration};

use traffic::{
    lab::{generator, zipf::Zipf},
    sink::json::{Line, RuleRow, SummaryReport},
};
use traffic_tests::{Lab, Running, TempDir, pcap_header, send, send_on_cpu, signal};

/// Rules of the lab tests: one of each action, and the default.
const RULES: [&str; 6] = [
    "--drop",
    "192.0.2.0/25",
    "--capture",
    "203.0.113.0/24",
    "--pass",
    "198.51.100.0/24",
];

/// Frames sent from each source: a skewed mix over every rule and the
/// default (192.0.2.200 is outside the /25; 2001:db8:1::5 matches nothing).
const MIX: [(&str, u64); 6] = [
    ("192.0.2.1", 700),
    ("192.0.2.2", 400),
    ("203.0.113.7", 300),
    ("198.51.100.9", 200),
    ("192.0.2.200", 90),
    ("2001:db8:1::5", 60),
];

fn sum_by_action(rules: &[RuleRow], action: &str) -> u64 {
    rules
        .iter()
        .filter(|r| r.action.as_str() == action)
        .map(|r| r.packets)
        .sum()
}

fn row<'a>(rules: &'a [RuleRow], rule: &str) -> &'a RuleRow {
    rules
        .iter()
        .find(|r| r.rule == rule)
        .unwrap_or_else(|| panic!("no row for {rule} in {rules:?}"))
}

/// The per-rule and per-source figures a run over [`MIX`] must report.
fn check_mix(summary: &SummaryReport) {
    let total: u64 = MIX.iter().map(|(_, n)| n).sum();
    let c = &summary.counts;
    assert_eq!(c.packets, total);
    let r = &summary.rules;
    assert_eq!(row(r, "192.0.2.0/25").packets, 1100);
    assert_eq!(row(r, "192.0.2.0/25").action.as_str(), "drop");
    assert_eq!(row(r, "203.0.113.0/24").packets, 300);
    assert_eq!(row(r, "198.51.100.0/24").packets, 200);
    assert_eq!(row(r, "default").packets, 150);
    assert_eq!(r.len(), 4, "{r:?}");
    // Per-rule sums equal the action totals, packets and bytes.
    assert_eq!(sum_by_action(r, "drop"), c.drop);
    assert_eq!(sum_by_action(r, "capture"), c.capture);
    assert_eq!(sum_by_action(r, "pass"), c.pass);
    assert_eq!(r.iter().map(|x| x.bytes).sum::<u64>(), c.bytes);
    assert_eq!(row(r, "192.0.2.0/25").bytes, c.drop_bytes);
    let top = summary.top.as_ref().expect("--top was given");
    assert!(top.exact, "{top:?}");
    let got: Vec<(&str, u64)> = top
        .sources
        .iter()
        .map(|t| (t.source.as_str(), t.packets))
        .collect();
    assert_eq!(got, MIX[..5].to_vec(), "top 5, exact and in order");
    assert_eq!(top.sources[0].rule, "192.0.2.0/25");
    assert_eq!(top.sources[4].rule, "default");
    assert!((top.sources[0].share - 700.0 / total as f64).abs() < 1e-9);
}

#[test]
fn per_rule_counts_and_top_talkers_are_exact_in_the_lab() {
    let lab = Lab::create("perrule", 1).expect("create the lab (needs root)");
    let mut args = RULES.to_vec();
    args.extend(["--top", "5"]);
    let (running, _) = Running::watch(&lab, &args);
    for (src, n) in MIX {
        let n = n.to_string();
        send(&lab, &["--src", src, "--count", &n]);
    }
    let total: u64 = MIX.iter().map(|(_, n)| n).sum();
    let mut running = running.expect_packets(total);
    let intervals = std::mem::take(&mut running.intervals);
    let (summary, status, stderr) = running.stop();
    assert!(status.success(), "{stderr}");
    check_mix(&summary);
    // The intervals' per-rule rows add up to the summary's. (Within one
    // interval they may not match its counters to the packet: the two are
    // read one after the other while packets flow.)
    let mut by_rule: HashMap<String, u64> = HashMap::new();
    for i in &intervals {
        for r in &i.rules {
            *by_rule.entry(r.rule.clone()).or_default() += r.packets;
        }
    }
    for r in &summary.rules {
        assert_eq!(by_rule.get(&r.rule), Some(&r.packets), "{}", r.rule);
    }
}

#[test]
fn top_talkers_of_a_zipf_mix_are_exact_and_in_order() {
    let lab = Lab::create("zipf", 1).expect("create the lab (needs root)");
    let (running, _) = Running::watch(&lab, &["--drop", "240.0.0.0/8", "--top", "20"]);
    let (count, sources, seed) = (40_000u64, 5_000u64, 11u64);
    send(
        &lab,
        &[
            "--src",
            "240.0.0.0/8",
            "--count",
            &count.to_string(),
            "--zipf",
            "1.1",
            "--zipf-sources",
            &sources.to_string(),
            "--seed",
            &seed.to_string(),
        ],
    );
    let (summary, status, stderr) = running.expect_packets(count).stop();
    assert!(status.success(), "{stderr}");
    // What the generator sent, from the same stream.
    let prefixes = ["240.0.0.0/8".parse().unwrap()];
    let mut truth: HashMap<IpAddr, u64> = HashMap::new();
    for r in Zipf::new(sources, 1.1, seed).take(count as usize) {
        *truth.entry(generator::ranked(&prefixes, r)).or_default() += 1;
    }
    let mut order: Vec<(IpAddr, u64)> = truth.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top = summary.top.expect("--top was given");
    assert!(top.exact);
    let got: Vec<(IpAddr, u64)> = top
        .sources
        .iter()
        .map(|t| (t.source.parse().unwrap(), t.packets))
        .collect();
    assert_eq!(got, order[..20].to_vec());
    assert!(
        order[0].1 > 10 * order[19].1 / 2,
        "the mix is skewed: {:?}",
        &order[..20]
    );
}

#[test]
fn top_prefix_counts_sources_by_their_prefix() {
    let lab = Lab::create("topprefix", 1).expect("create the lab (needs root)");
    let (running, _) = Running::watch(
        &lab,
        &["--top", "3", "--top-prefix", "24", "--top-prefix6", "64"],
    );
    send(&lab, &["--src", "192.0.2.0/28", "--count", "160"]);
    send(&lab, &["--src", "198.51.100.0/30", "--count", "40"]);
    send(&lab, &["--src", "2001:db8:7::/120", "--count", "90"]);
    let (summary, status, stderr) = running.expect_packets(290).stop();
    assert!(status.success(), "{stderr}");
    let top = summary.top.unwrap();
    let got: Vec<(&str, u64)> = top
        .sources
        .iter()
        .map(|t| (t.source.as_str(), t.packets))
        .collect();
    assert_eq!(
        got,
        [
            ("192.0.2.0/24", 160),
            ("2001:db8:7::/64", 90),
            ("198.51.100.0/24", 40)
        ]
    );
}

#[test]
fn a_full_top_talker_map_counts_what_it_cannot_place() {
    let lab = Lab::create("topfull", 1).expect("create the lab (needs root)");
    let (running, _) = Running::watch(&lab, &["--top", "5", "--top-capacity", "64"]);
    // 65,536 distinct sources, two frames each, for 64 places an interval.
    let n: u64 = 1 << 17;
    send(&lab, &["--src", "240.0.0.0/16", "--count", &n.to_string()]);
    let mut running = running.expect_packets(n);
    let intervals = std::mem::take(&mut running.intervals);
    let (summary, status, stderr) = running.stop();
    assert!(status.success(), "{stderr}");
    let top = summary.top.unwrap();
    assert!(!top.exact, "{top:?}");
    assert!(top.untracked_packets > 0);
    // The run keeps --top-capacity sources, and so does each interval.
    assert_eq!(top.tracked, 64);
    let tracked: Vec<u64> = intervals
        .iter()
        .filter_map(|i| i.top.as_ref().map(|t| t.tracked))
        .collect();
    assert!(tracked.iter().all(|&t| t <= 64), "{tracked:?}");
    assert!(tracked.iter().sum::<u64>() > 64, "{tracked:?}");
    // Every packet not placed in a source is counted as such.
    assert_eq!(summary.counts.untracked, top.untracked_packets);
    assert!(top.sources.iter().all(|t| t.packets <= 2 + t.error));
}

/// A reader that stops (SIGSTOP) while sources are counted: the kernel's
/// logs of sources fill, the frames that find no room are counted
/// untracked, and once traffic goes on every other frame is in its
/// source's count, so that sources and untracked add up to every IP packet.
#[test]
fn a_stopped_reader_fills_the_logs_and_the_rest_is_counted_untracked() {
    let lab = Lab::create("toplog", 1).expect("create the lab (needs root)");
    let (running, _) = Running::watch(&lab, &["--top", "16"]);
    signal(running.pid(), libc::SIGSTOP);
    // More than both CPUs' logs hold (2 x 262,144 IPv4 units), from 16
    // sources.
    let n: u64 = 600_000;
    send_on_cpu(
        &lab,
        0,
        &["--src", "240.0.0.0/28", "--count", &n.to_string()],
    );
    signal(running.pid(), libc::SIGCONT);
    let running = running.expect_packets(n);
    let (summary, status, stderr) = running.stop();
    assert!(status.success(), "{stderr}");
    let top = summary.top.expect("--top reports top talkers");
    assert!(!top.exact, "{top:?}");
    assert!(top.untracked_packets >= n - 2 * 262_144, "{top:?}");
    assert_eq!(summary.counts.untracked, top.untracked_packets);
    let counted: u64 = top.sources.iter().map(|s| s.packets).sum();
    let ip = summary.counts.ipv4 + summary.counts.ipv6;
    assert_eq!(counted + top.untracked_packets, ip, "{top:?}");
    assert!(counted > 0);
}

/// The last `summary` among JSON `lines`.
fn summary_in<S: AsRef<str>>(lines: impl DoubleEndedIterator<Item = S>) -> Option<SummaryReport> {
    lines
        .rev()
        .find_map(|l| match serde_json::from_str(l.as_ref()) {
            Ok(Line::Summary(s)) => Some(s),
            _ => None,
        })
}

/// Runs `traffic --read FILE ARGS --json` (no network needed); its summary,
/// exit status and stderr.
fn read(file: &Path, args: &[&str]) -> (Option<SummaryReport>, Option<i32>, String) {
    let mut all = vec!["--read", file.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    let out = Command::new(traffic_tests::traffic_bin())
        .args(&all)
        .output()
        .expect("run traffic --read");
    (
        summary_in(String::from_utf8_lossy(&out.stdout).lines()),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd` (traffic with `--json`), which must succeed; every line it
/// printed.
fn json_lines(cmd: &mut Command) -> Vec<Line> {
    let out = cmd.output().expect("run traffic");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The counts that must agree between a live run and a read of its capture.
fn same_counts(live: &SummaryReport, read: &SummaryReport, what: &str) {
    let (a, b) = (&live.counts, &read.counts);
    for (name, x, y) in [
        ("packets", a.packets, b.packets),
        ("bytes", a.bytes, b.bytes),
        ("pass", a.pass, b.pass),
        ("drop", a.drop, b.drop),
        ("capture", a.capture, b.capture),
        ("ipv4", a.ipv4, b.ipv4),
        ("ipv6", a.ipv6, b.ipv6),
        ("malformed", a.malformed, b.malformed),
        ("non_ip", a.non_ip, b.non_ip),
    ] {
        assert_eq!(x, y, "{what}: {name}");
    }
    assert_eq!(live.rules, read.rules, "{what}: per rule");
    assert_eq!(
        live.top.as_ref().map(|t| &t.sources),
        read.top.as_ref().map(|t| &t.sources),
        "{what}: top talkers"
    );
}

#[test]
fn read_of_a_capture_reports_what_the_live_run_did() {
    let lab = Lab::create("readback", 1).expect("create the lab (needs root)");
    let dir = TempDir::new("readback");
    let us = dir.0.join("tcpdump-us.pcap");
    let ns = dir.0.join("tcpdump-ns.pcap");
    let ours = dir.0.join("traffic.pcap");
    // tcpdump writes everything the interface sees, in microseconds and in
    // nanoseconds, while nothing is attached (a dropping XDP program would
    // hide frames from it); then traffic runs on the same frames, sent
    // again, and writes what it captures.
    let tcpdump = |file: &Path, extra: &[&str]| {
        let mut cmd = Lab::command_in(&lab.rx_ns, "tcpdump");
        cmd.args(["-i", &lab.rx_if, "-n", "-U", "-w"])
            .arg(file)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd.spawn().expect("start tcpdump")
    };
    let mut dumps = [
        tcpdump(&us, &[]),
        tcpdump(&ns, &["--time-stamp-precision", "nano"]),
    ];
    std::thread::sleep(Duration::from_millis(1500));
    let send_mix = || {
        for (src, n) in MIX {
            send(&lab, &["--src", src, "--count", &n.to_string()]);
        }
    };
    send_mix();
    std::thread::sleep(Duration::from_millis(500));
    for d in &mut dumps {
        traffic_tests::signal(d.id(), libc::SIGINT);
        d.wait().unwrap();
    }
    let mut args = RULES.to_vec();
    args.extend([
        "--top",
        "5",
        "--snaplen",
        "4096",
        "-w",
        ours.to_str().unwrap(),
    ]);
    let (running, _) = Running::watch(&lab, &args);
    send_mix();
    let total: u64 = MIX.iter().map(|(_, n)| n).sum();
    let (live, status, stderr) = running.expect_packets(total).stop();
    assert!(status.success(), "{stderr}");
    // tshark's pcapng of tcpdump's file.
    let ng = dir.0.join("tcpdump.pcapng");
    let editcap = Command::new("editcap")
        .args(["-F", "pcapng"])
        .arg(&ns)
        .arg(&ng)
        .status()
        .expect("run editcap (tshark's package)");
    assert!(editcap.success());
    let mut read_args = RULES.to_vec();
    read_args.extend(["--top", "5"]);
    for file in [&us, &ns, &ng] {
        let (summary, code, stderr) = read(file, &read_args);
        assert_eq!(code, Some(0), "{}: {stderr}", file.display());
        let summary = summary.expect("a summary");
        // tcpdump may also have seen frames the kernel sent on its own
        // (IPv6 neighbour discovery); the lab's frames are all there.
        assert!(summary.counts.packets >= total, "{}", file.display());
        let extra = summary.counts.packets - total;
        assert_eq!(
            summary.counts.packets - extra,
            live.counts.packets,
            "{}",
            file.display()
        );
        if extra == 0 {
            same_counts(&live, &summary, &file.display().to_string());
        } else {
            // The host's own frames are passed by default: everything else
            // is as the live run counted it.
            let rules = |s: &SummaryReport| -> Vec<RuleRow> {
                s.rules
                    .iter()
                    .filter(|r| r.rule != "default" && r.rule != "unclassified")
                    .cloned()
                    .collect()
            };
            assert_eq!(rules(&live), rules(&summary), "{}", file.display());
            assert_eq!(
                (live.counts.drop, live.counts.capture),
                (summary.counts.drop, summary.counts.capture)
            );
            assert_eq!(
                live.top.as_ref().map(|t| &t.sources),
                summary.top.as_ref().map(|t| &t.sources)
            );
        }
        check_mix_of_read(&summary, extra);
    }
    // traffic's own file holds the captured subset: read through the same
    // rules, every frame is captured again.
    let (summary, code, stderr) = read(&ours, &read_args);
    assert_eq!(code, Some(0), "{stderr}");
    let summary = summary.unwrap();
    assert_eq!(summary.counts.packets, live.counts.capture);
    assert_eq!(summary.counts.capture, live.counts.capture);
    assert_eq!(summary.counts.capture_bytes, live.counts.capture_bytes);
}

/// [`check_mix`] for a capture that may hold `extra` frames of the host's
/// own (IPv6 neighbour discovery: not IPv4, never from the mix's rules).
fn check_mix_of_read(summary: &SummaryReport, extra: u64) {
    let r = &summary.rules;
    assert_eq!(row(r, "192.0.2.0/25").packets, 1100);
    assert_eq!(row(r, "203.0.113.0/24").packets, 300);
    assert_eq!(row(r, "198.51.100.0/24").packets, 200);
    let unmatched: u64 = r
        .iter()
        .filter(|x| x.rule == "default" || x.rule == "unclassified")
        .map(|x| x.packets)
        .sum();
    assert_eq!(unmatched, 150 + extra);
    let top = summary.top.as_ref().unwrap();
    assert_eq!(top.sources[0].source, "192.0.2.1");
    assert_eq!(top.sources[0].packets, 700);
}

/// A pcap record of `frame` at second `secs`.
fn pcap_record(frame: &[u8], secs: u32) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend(secs.to_le_bytes());
    r.extend(0u32.to_le_bytes());
    r.extend((frame.len() as u32).to_le_bytes());
    r.extend((frame.len() as u32).to_le_bytes());
    r.extend(frame);
    r
}

fn udp_frame(src: &str) -> Vec<u8> {
    let mut spec =
        traffic::lab::frame::FrameSpec::udp(src.parse().unwrap(), "198.51.100.1".parse().unwrap());
    spec.payload_len = 22;
    spec.build()
}

#[test]
fn a_cut_or_corrupt_file_says_where_and_reports_what_came_before() {
    let dir = TempDir::new("badread");
    let frame = udp_frame("192.0.2.9");
    let mut file = pcap_header();
    for i in 0..10 {
        file.extend(pcap_record(&frame, 1_800_000_000 + i));
    }
    let good_len = file.len();
    // Cut in the middle of the eleventh record's frame.
    let mut cut = file.clone();
    cut.extend(&pcap_record(&frame, 1_800_000_010)[..30]);
    let path = dir.0.join("cut.pcap");
    std::fs::write(&path, &cut).unwrap();
    let (summary, code, stderr) = read(&path, &["--drop", "192.0.2.0/24"]);
    assert_eq!(code, Some(1), "{stderr}");
    let summary = summary.expect("the summary of what came before");
    assert_eq!(summary.counts.packets, 10);
    assert_eq!(summary.counts.drop, 10);
    assert!(
        stderr.contains(&format!(
            "bad record at byte offset {good_len} (after 10 frames)"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("cut short"), "{stderr}");

    // A record claiming a frame no file holds.
    let mut corrupt = file.clone();
    let mut bad = pcap_record(&frame, 1_800_000_010);
    bad[8..12].copy_from_slice(&0x4000_0000u32.to_le_bytes());
    corrupt.extend(bad);
    corrupt.extend(pcap_record(&frame, 1_800_000_011));
    std::fs::write(&path, &corrupt).unwrap();
    let (summary, code, stderr) = read(&path, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(summary.unwrap().counts.packets, 10);
    assert!(stderr.contains(&format!("offset {good_len}")), "{stderr}");
    assert!(stderr.contains("more than any frame"), "{stderr}");

    // Not a capture at all: refused before anything is loaded, exit 2.
    for (name, bytes) in [
        ("empty", Vec::new()),
        ("text", b"drop 192.0.2.0/24\n".to_vec()),
        ("binary", vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0]),
    ] {
        let p = dir.0.join(name);
        std::fs::write(&p, &bytes).unwrap();
        let (summary, code, stderr) = read(&p, &[]);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert!(summary.is_none());
        assert!(
            stderr.contains("is not a pcap or pcapng file"),
            "{name}: {stderr}"
        );
    }
    let (_, code, stderr) = read(&dir.0, &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("directory"), "{stderr}");
    let (_, code, stderr) = read(&dir.0.join("missing.pcap"), &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("cannot open"), "{stderr}");
    // A device reads as an endless stream of zeros: not a capture.
    let (_, code, stderr) = read(Path::new("/dev/zero"), &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("is not a pcap"), "{stderr}");
    // Linux cooked captures (tcpdump -i any) are not Ethernet.
    let mut sll = pcap_header();
    sll[20..24].copy_from_slice(&113u32.to_le_bytes());
    let p = dir.0.join("sll.pcap");
    std::fs::write(&p, &sll).unwrap();
    let (_, code, stderr) = read(&p, &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("link type is 113"), "{stderr}");
}

#[test]
fn read_from_a_fifo_and_frames_xdp_cannot_run() {
    let dir = TempDir::new("fiforead");
    let fifo = dir.0.join("in.pcap");
    traffic_tests::mkfifo(&fifo);
    let frame = udp_frame("203.0.113.1");
    let mut bytes = pcap_header();
    for i in 0..5 {
        bytes.extend(pcap_record(&frame, 1_800_000_000 + i));
    }
    // A frame shorter than an Ethernet header: the kernel will not run it.
    bytes.extend(pcap_record(&frame[..10], 1_800_000_006));
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, bytes).unwrap())
    };
    let (summary, code, stderr) = read(&fifo, &["--capture", "203.0.113.0/24"]);
    writer.join().unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("1 frames were not run"), "{stderr}");
    let s = summary.unwrap();
    assert_eq!(
        (s.counts.packets, s.counts.capture, s.counts.events),
        (5, 5, 5)
    );
}

#[test]
fn the_cpu_time_limit_ends_a_read_with_its_summary() {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(traffic_tests::traffic_bin());
    cmd.args(["--read", "-", "--json", "--drop", "203.0.113.0/24"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // `ulimit -t 1`: SIGXCPU after a second of CPU, SIGKILL at the hard
    // limit. Before, SIGXCPU's default action ended the run, no summary.
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between
    // fork and exec here.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 1,
                rlim_max: 60,
            };
            if libc::setrlimit(libc::RLIMIT_CPU, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // An endless capture, every frame at one time (no interval lines).
    let writer = std::thread::spawn(move || {
        let frame = udp_frame("203.0.113.5");
        let mut chunk = Vec::new();
        for _ in 0..1000 {
            chunk.extend(pcap_record(&frame, 1_800_000_000));
        }
        let mut sent = 0u64;
        let mut ok = std::io::Write::write_all(&mut stdin, &pcap_header()).is_ok();
        while ok && sent < 100_000_000 {
            ok = std::io::Write::write_all(&mut stdin, &chunk).is_ok();
            sent += 1000;
        }
    });
    let out = wait_or_kill(child, Duration::from_secs(60)).expect("SIGXCPU ended the read");
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let s = summary_in(stdout.lines()).expect("a summary");
    assert!(s.counts.drop > 0, "{stderr}");
    assert_eq!(s.counts.drop, s.counts.packets);
}

#[test]
fn a_read_waiting_on_a_quiet_fifo_or_pipe_still_ends_on_a_signal() {
    let dir = TempDir::new("quietread");
    let fifo = dir.0.join("quiet.pcap");
    traffic_tests::mkfifo(&fifo);
    let spawn = |input: &str, stdin: std::process::Stdio| {
        Command::new(traffic_tests::traffic_bin())
            .args(["--read", input, "--json", "--capture", "203.0.113.0/24"])
            .stdin(stdin)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A FIFO nobody has opened to write: opening it would wait in the
    // kernel, where Ctrl-C cannot reach.
    let child = spawn(fifo.to_str().unwrap(), std::process::Stdio::null());
    std::thread::sleep(Duration::from_millis(500));
    traffic_tests::signal(child.id(), libc::SIGINT);
    let out = wait_or_kill(child, Duration::from_secs(5)).expect("SIGINT ended the wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SIGINT came while waiting for the first bytes of"),
        "{stderr}"
    );

    // A pipe whose writer sent three records and then went quiet: SIGUSR1
    // says the counts so far, SIGTERM ends the run with its summary.
    let mut child = spawn("-", std::process::Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    let frame = udp_frame("203.0.113.5");
    let mut bytes = pcap_header();
    for i in 0..3 {
        bytes.extend(pcap_record(&frame, 1_800_000_000 + i));
    }
    std::io::Write::write_all(&mut stdin, &bytes).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    traffic_tests::signal(child.id(), libc::SIGUSR1);
    std::thread::sleep(Duration::from_millis(300));
    traffic_tests::signal(child.id(), libc::SIGTERM);
    let out = wait_or_kill(child, Duration::from_secs(5)).expect("SIGTERM ended the read");
    drop(stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("SIGUSR1: the counts so far"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let s = summary_in(stdout.lines()).expect("a summary");
    assert_eq!((s.counts.packets, s.counts.capture), (3, 3));

    // A writer that comes later is waited for, and read to its end.
    let child = spawn(fifo.to_str().unwrap(), std::process::Stdio::null());
    std::thread::sleep(Duration::from_millis(500));
    let mut bytes = pcap_header();
    for i in 0..4 {
        bytes.extend(pcap_record(&frame, 1_800_000_000 + i));
    }
    std::fs::write(&fifo, bytes).unwrap();
    let out = wait_or_kill(child, Duration::from_secs(10)).expect("the read ended with its input");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let s = summary_in(String::from_utf8_lossy(&out.stdout).lines()).expect("a summary");
    assert_eq!((s.counts.packets, s.counts.capture), (4, 4));
}

/// The output of `child` once it exits within `limit`; `None`, having
/// killed it, when it does not.
fn wait_or_kill(mut child: std::process::Child, limit: Duration) -> Option<std::process::Output> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn intervals_of_a_read_follow_the_files_time_and_the_plot_has_every_line() {
    let dir = TempDir::new("readplot");
    let mut file = pcap_header();
    // 12 rules' worth of sources, busier the lower, over 4 seconds of file
    // time, then a gap of an hour and one more frame.
    let mut per_rule = HashMap::new();
    for sec in 0..4u32 {
        for r in 0..12u32 {
            let src = format!("192.0.2.{}", r * 16 + 1);
            for _ in 0..(12 - r) {
                file.extend(pcap_record(&udp_frame(&src), 1_800_000_000 + sec));
                *per_rule.entry(r).or_insert(0u64) += 1;
            }
        }
    }
    file.extend(pcap_record(&udp_frame("192.0.2.1"), 1_800_003_600));
    let path = dir.0.join("rules.pcap");
    std::fs::write(&path, &file).unwrap();
    let svg = dir.0.join("plot.svg");
    let mut args = vec![
        "--read".to_owned(),
        path.to_str().unwrap().to_owned(),
        "--json".to_owned(),
        "--top".to_owned(),
        "3".to_owned(),
        "--plot".to_owned(),
        svg.to_str().unwrap().to_owned(),
    ];
    for r in 0..12 {
        args.extend(["--drop".to_owned(), format!("192.0.2.{}/28", r * 16)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let lines = json_lines(Command::new(traffic_tests::traffic_bin()).args(&args));
    let intervals: Vec<_> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Interval(i) => Some(i),
            _ => None,
        })
        .collect();
    // Four one-second intervals of the file's time, then the gap as one.
    assert_eq!(intervals.len(), 5, "{intervals:?}");
    assert_eq!(intervals[0].ts, 1_800_000_001.0);
    assert_eq!(intervals[0].counts.packets, 78);
    assert_eq!(intervals[3].counts.packets, 78);
    assert_eq!(intervals[4].counts.packets, 1);
    let svg = std::fs::read_to_string(&svg).unwrap();
    // It parses as XML.
    let parsed = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])",
        ])
        .arg(dir.0.join("plot.svg"))
        .status()
        .expect("python3");
    assert!(parsed.success(), "the plot is not well-formed XML");
    // Actions (3), rules (the 10 busiest and `other`), sources (3).
    assert_eq!(svg.matches("<polyline").count(), 3 + 11 + 3, "{svg}");
    assert!(svg.contains(">drop 192.0.2.0/28<"));
    assert!(svg.contains(">other (2 more)<"));
    assert!(svg.contains(">192.0.2.1<"));
}

#[test]
fn read_prints_each_packet_at_its_frames_time() {
    let dir = TempDir::new("readprint");
    let mut file = pcap_header();
    for (i, src) in ["203.0.113.1", "192.0.2.1", "203.0.113.2"]
        .iter()
        .enumerate()
    {
        file.extend(pcap_record(&udp_frame(src), 1_800_000_000 + i as u32 * 10));
    }
    let path = dir.0.join("print.pcap");
    std::fs::write(&path, &file).unwrap();
    let packets: Vec<_> = json_lines(
        Command::new(traffic_tests::traffic_bin())
            .args(["--read", path.to_str().unwrap(), "--json", "--print"])
            .args(["--capture", "203.0.113.0/24"]),
    )
    .into_iter()
    .filter_map(|l| match l {
        Line::Packet(p) => Some(p),
        _ => None,
    })
    .collect();
    let got: Vec<(f64, String, String)> = packets
        .iter()
        .map(|p| (p.ts, p.src.unwrap().to_string(), p.rule.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (
                1_800_000_000.0,
                "203.0.113.1".into(),
                "capture 203.0.113.0/24".into()
            ),
            (
                1_800_000_020.0,
                "203.0.113.2".into(),
                "capture 203.0.113.0/24".into()
            ),
        ]
    );
    assert!(packets.iter().all(|p| p.latency_ns.is_none()));
}

#[test]
fn no_rule_counts_leaves_the_rules_out_and_the_counters_whole() {
    let dir = TempDir::new("norulecounts");
    let mut file = pcap_header();
    for src in ["192.0.2.1", "192.0.2.2", "198.51.100.1"] {
        file.extend(pcap_record(&udp_frame(src), 1_800_000_000));
    }
    let path = dir.0.join("three.pcap");
    std::fs::write(&path, &file).unwrap();
    let (with, code, stderr) = read(&path, &["--drop", "192.0.2.0/24"]);
    assert_eq!(code, Some(0), "{stderr}");
    let with = with.unwrap();
    assert_eq!(row(&with.rules, "192.0.2.0/24").packets, 2);
    assert_eq!(row(&with.rules, "default").packets, 1);
    let (without, code, stderr) = read(&path, &["--drop", "192.0.2.0/24", "--no-rule-counts"]);
    assert_eq!(code, Some(0), "{stderr}");
    let without = without.unwrap();
    assert!(without.rules.is_empty(), "{:?}", without.rules);
    assert_eq!((without.counts.drop, without.counts.pass), (2, 1));
}

#[test]
fn a_rule_set_above_65536_rules_is_counted_per_rule_only_when_asked() {
    // 70,000 /28s over 240.0.0.0/8, then the lab's own /24.
    let dir = TempDir::new("bigset");
    let mut rules = String::new();
    for i in 0..70_000u32 {
        let a = std::net::Ipv4Addr::from_bits(0xf000_0000 | (i << 4));
        rules.push_str(&format!("drop {a}/28\n"));
    }
    rules.push_str("drop 192.0.2.0/24\n");
    let rules_path = dir.0.join("big.rules");
    std::fs::write(&rules_path, rules).unwrap();
    let rules_arg = rules_path.to_str().unwrap();
    let mut file = pcap_header();
    for src in ["192.0.2.1", "192.0.2.2", "240.0.0.17", "198.51.100.1"] {
        file.extend(pcap_record(&udp_frame(src), 1_800_000_000));
    }
    let path = dir.0.join("four.pcap");
    std::fs::write(&path, &file).unwrap();

    // By default: no per-rule counts, a note that says so and how to have
    // them, and the action counters whole.
    let (summary, code, stderr) = read(&path, &["--rules", rules_arg]);
    assert_eq!(code, Some(0), "{stderr}");
    let summary = summary.unwrap();
    assert!(summary.rules.is_empty(), "{:?}", summary.rules);
    assert_eq!((summary.counts.drop, summary.counts.pass), (3, 1));
    assert!(
        stderr.contains("70001 rules: per-rule counts are off")
            && stderr.contains("--by-rule or --max-rules N turns them on"),
        "{stderr}"
    );

    // Asked for, by either flag: exact, and no note.
    for asked in [&["--by-rule"][..], &["--max-rules", "80000"]] {
        let args = [&["--rules", rules_arg][..], asked].concat();
        let (summary, code, stderr) = read(&path, &args);
        assert_eq!(code, Some(0), "{stderr}");
        let summary = summary.unwrap();
        assert_eq!(row(&summary.rules, "192.0.2.0/24").packets, 2, "{asked:?}");
        assert_eq!(row(&summary.rules, "240.0.0.16/28").packets, 1, "{asked:?}");
        assert_eq!(row(&summary.rules, "default").packets, 1, "{asked:?}");
        assert_eq!(sum_by_action(&summary.rules, "drop"), 3, "{asked:?}");
        assert!(!stderr.contains("per-rule counts are off"), "{stderr}");
    }
}

#[test]
fn read_from_stdin_and_a_signal_ends_a_read_with_its_summary() {
    let dir = TempDir::new("readsignal");
    let frame = udp_frame("198.51.100.7");
    let mut file = pcap_header();
    let n = 400_000u32;
    for i in 0..n {
        file.extend(pcap_record(&frame, 1_800_000_000 + i / 1000));
    }
    let path = dir.0.join("long.pcap");
    std::fs::write(&path, &file).unwrap();
    // Standard input, whole.
    let lines = json_lines(
        Command::new(traffic_tests::traffic_bin())
            .args(["--read", "-", "--json", "--interval", "100"])
            .stdin(std::fs::File::open(&path).unwrap()),
    );
    let summary = lines
        .into_iter()
        .rev()
        .find_map(|l| match l {
            Line::Summary(s) => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!(summary.counts.packets, u64::from(n));
    assert_eq!(summary.duration_s, 399.0);
    // SIGINT part-way (after the first interval line): the summary of the
    // frames run so far.
    let mut child = Command::new(traffic_tests::traffic_bin())
        .args(["--read", path.to_str().unwrap(), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    for line in lines.by_ref() {
        if line.unwrap().contains("\"type\":\"interval\"") {
            break;
        }
    }
    // SIGUSR1 first: the counts so far on stderr, and the read goes on
    // (ten more intervals, 10,000 frames, pass before SIGINT).
    traffic_tests::signal(child.id(), libc::SIGUSR1);
    let mut more = 0;
    for line in lines.by_ref() {
        if line.unwrap().contains("\"type\":\"interval\"") {
            more += 1;
            if more == 10 {
                break;
            }
        }
    }
    assert_eq!(more, 10, "the read went on after SIGUSR1");
    traffic_tests::signal(child.id(), libc::SIGINT);
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let out = child.wait_with_output().unwrap();
    let status = out.status;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("traffic: SIGUSR1: the counts so far; the run goes on\n--- "),
        "{stderr}"
    );
    let summary = summary_in(rest.iter()).expect("a summary however the run ends");
    assert!(
        summary.counts.packets > 0 && summary.counts.packets < u64::from(n),
        "{}",
        summary.counts.packets
    );
}
