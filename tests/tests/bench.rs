//! The benchmark's machinery and --plot, on the real kernel: small runs that
//! check the figures are measured and written, not the figures themselves
//! (performance is checked by `cargo xtask bench`, never by a test).

use std::process::Command;

use traffic::{
    bench::{
        Report,
        live::{self, Receiver},
    },
    lab::generator::Mechanism,
};
use traffic_tests::{Lab, Running, TempDir, send, traffic_bin};

#[test]
fn a_report_directory_that_is_a_file_is_refused_before_anything_is_measured() {
    let dir = TempDir::new("bench-out");
    let file = dir.0.join("not-a-dir");
    std::fs::write(&file, "keep me").unwrap();
    let started = std::time::Instant::now();
    let run = Command::new(traffic_bin())
        .args(["bench", "--kernel-only", "--rules", "1", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot hold the report (not a directory)"),
        "{stderr}"
    );
    assert!(run.stdout.is_empty(), "nothing measured: {stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn kernel_bench_writes_a_report_with_every_program() {
    let dir = TempDir::new("bench-report");
    let out = dir.0.join("report");
    let run = Command::new(traffic_bin())
        .args([
            "bench",
            "--kernel-only",
            "--repeat",
            "2000",
            "--rules",
            "1,10",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let raw: Report =
        serde_json::from_slice(&std::fs::read(out.join("raw.json")).unwrap()).unwrap();
    for (program, path, family) in [
        ("floor", "pass", "ipv4"),
        ("floor+clock", "pass", "ipv6"),
        ("traffic", "drop", "ipv4"),
        ("traffic", "capture", "ipv6"),
        ("xdp-filter", "drop", "ipv6"),
    ] {
        let row = raw
            .kernel
            .iter()
            .find(|r| r.cost.program == program && r.cost.path == path && r.cost.family == family)
            .unwrap_or_else(|| panic!("no {program} {path} {family} row in {raw:?}"));
        let ns = row.cost.ns_per_packet;
        assert!(ns > 0.0 && ns < 100_000.0, "{row:?}");
        assert_eq!(row.cost.rounds.len(), traffic::bench::kernel::ROUNDS);
        assert!(row.ratio_to_floor > 0.0);
    }
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("| xdp-filter | drop | ipv4 | 10 |"),
        "{summary}"
    );
    assert!(
        summary.contains("- ipv4 10 rules: capture ")
            && summary.contains("of which the clock read"),
        "{summary}"
    );
    assert!(
        std::fs::read_to_string(out.join("kernel.svg"))
            .unwrap()
            .contains("<svg")
    );
    assert!(
        std::fs::read_to_string(out.join("README.SETUP"))
            .unwrap()
            .contains("kernel:")
    );
}

#[test]
fn live_scenarios_count_what_they_measure() {
    // The machine's busy time comes from /proc/stat in 10 ms ticks, which
    // the kernel samples: 5,000 frames (about 12 ms of CPU for the floor)
    // read as zero ticks in one CI run. 20,000 take some 50 ms.
    const FRAMES: u64 = 20_000;
    let work = TempDir::new("bench-live");
    for receiver in [
        Receiver::TrafficDrop,
        Receiver::TrafficCapture,
        Receiver::TrafficAfxdp,
        Receiver::FloorDrop,
    ] {
        let r = live::run_scenario(
            &traffic_bin(),
            &work.0,
            &receiver,
            FRAMES,
            Some(50_000),
            Mechanism::AfPacket,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", receiver.name()));
        assert_eq!(r.sent, FRAMES, "{r:?}");
        assert!(r.rate_pps > 0.0 && r.cpu_ns_per_packet > 0.0, "{r:?}");
        match receiver {
            Receiver::TrafficDrop => assert_eq!(r.seen, Some(FRAMES), "{r:?}"),
            Receiver::TrafficCapture | Receiver::TrafficAfxdp => {
                assert_eq!(r.seen, Some(FRAMES), "{r:?}");
                // traffic's own count of what it lost: with the captured
                // packets, every packet sent.
                assert_eq!(r.captured.unwrap() + r.capture_lost.unwrap(), FRAMES);
                assert_eq!(r.latency_ns.unwrap().count, r.captured.unwrap());
            }
            _ => assert_eq!(r.seen, None),
        }
    }
}

#[test]
fn plot_draws_the_run() {
    let lab = Lab::create("plot", 1).expect("create the lab");
    let dir = TempDir::new("plot");
    let svg = dir.0.join("run.svg");
    let svg_arg = svg.to_str().unwrap().to_owned();
    let (running, _) = Running::watch(&lab, &["--plot", &svg_arg, "--capture", "203.0.113.0/24"]);
    send(
        &lab,
        &[
            "--count",
            "300",
            "--src",
            "203.0.113.0/24",
            "--src",
            "192.0.2.0/24",
        ],
    );
    let (_, status, stderr) = running.expect_packets(300).stop();
    assert!(status.success(), "{stderr}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    // One line per action, then one per rule that matched: the capture
    // rule and the default.
    assert_eq!(text.matches("<polyline").count(), 3 + 2, "{text}");
    assert!(text.contains(">capture 203.0.113.0/24<"));
    assert!(text.contains(">pass default<"));
    assert!(text.contains("delivery latency"));
    assert!(
        text.contains("p50"),
        "the histogram is drawn from 150 events"
    );
}
