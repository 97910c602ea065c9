//! traffic on a veth pair between two network namespaces, driven by its own
//! generator: exact accounting, clean exits, refusals.

use std::{process::Command, time::Duration};

use traffic::{
    kernel::{AttachMode, Tool, ToolProgram, netlink},
    lab::in_netns,
    rules::Action,
    sink::json::{Line, SummaryReport},
};
use traffic_tests::{Lab, Running, eventually, fails, has_xdp, send, traffic_in};

/// The report lines `traffic --json` printed.
fn lines(stdout: &[u8]) -> Vec<Line> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The summary, the last line `traffic --json` printed.
fn summary_of(stdout: &[u8]) -> SummaryReport {
    match lines(stdout).pop() {
        Some(Line::Summary(s)) => s,
        other => panic!("the last line is not the summary: {other:?}"),
    }
}

#[test]
fn every_packet_is_counted_exactly_once() {
    let lab = Lab::create("exact", 1).expect("create the lab (needs root)");
    let (running, start) = Running::watch(
        &lab,
        &[
            "--drop",
            "192.0.2.0/25",
            "--pass",
            "198.51.100.0/25",
            "--capture",
            "203.0.113.0/24",
            "--drop",
            "2001:db8:bad::/48",
            "--capture",
            "2001:db8:c::/48",
        ],
    );
    assert_eq!(start.iface, lab.rx_if);
    assert_eq!((start.rules_v4, start.rules_v6), (3, 2));

    // (sources, count, extra flags) and what each batch must count as.
    let batches: [(&[&str], u64, &[&str], Action); 7] = [
        (&["192.0.2.0/25"], 1000, &[], Action::Drop),
        (&["192.0.2.128/25"], 900, &[], Action::Pass),
        (
            &["198.51.100.0/25"],
            300,
            &["--proto", "tcp-syn"],
            Action::Pass,
        ),
        (
            &["203.0.113.0/24"],
            500,
            &["--payload", "1000"],
            Action::Capture,
        ),
        (&["2001:db8:bad::/64"], 700, &[], Action::Drop),
        (
            &["2001:db8:1::/64"],
            800,
            &["--proto", "tcp-syn"],
            Action::Pass,
        ),
        (
            &["2001:db8:c::/64", "2001:db8:c:1::/64"],
            600,
            &[],
            Action::Capture,
        ),
    ];
    let mut want = [0u64; 3];
    let mut want_bytes = 0;
    let (mut v4, mut v6) = (0, 0);
    for (sources, n, extra, action) in batches {
        let count_arg = n.to_string();
        let mut args = vec!["--count", &count_arg];
        for s in sources {
            args.extend(["--src", s]);
        }
        args.extend_from_slice(extra);
        let report = send(&lab, &args);
        assert_eq!(report.sent, n);
        want_bytes += report.bytes;
        want[action as usize] += n;
        if sources[0].contains(':') {
            v6 += n
        } else {
            v4 += n
        }
    }
    let total: u64 = want.iter().sum();

    let (summary, status, stderr) = running.expect_packets(total).stop();
    assert!(
        status.success(),
        "traffic exited with {status}; stderr:\n{stderr}"
    );
    let c = summary.counts;
    assert_eq!(
        [c.packets, c.pass, c.drop, c.capture],
        [
            total,
            want[Action::Pass as usize],
            want[Action::Drop as usize],
            want[Action::Capture as usize]
        ],
        "summary: {summary:?}"
    );
    assert_eq!(c.pass + c.drop + c.capture, c.packets);
    assert_eq!([c.ipv4, c.ipv6, c.non_ip, c.malformed], [v4, v6, 0, 0]);
    assert_eq!(c.bytes, want_bytes);
    // Every captured packet became an event, delivered and timed.
    assert_eq!([c.events, c.events_lost, c.sampled], [c.capture, 0, 0]);
    assert_eq!(summary.latency_ns.count, c.events);
    assert_eq!(c.pass_bytes + c.drop_bytes + c.capture_bytes, want_bytes);
    assert_eq!(summary.iface, lab.rx_if);
    assert!(summary.duration_s > 0.0);
    assert!(
        !has_xdp(&lab.rx_ns, &lab.rx_if),
        "the program is still attached after exit"
    );
}

#[test]
fn sigkill_leaves_no_program_behind() {
    let lab = Lab::create("kill", 1).expect("create the lab");
    let (running, _) = Running::start(&lab.rx_ns, &["--iface", &lab.rx_if]);
    assert!(
        has_xdp(&lab.rx_ns, &lab.rx_if),
        "no XDP program while traffic runs"
    );
    running.kill9();
    assert!(
        eventually(Duration::from_secs(5), || !has_xdp(&lab.rx_ns, &lab.rx_if)),
        "an XDP program is still attached 5 s after SIGKILL"
    );
}

#[test]
fn sigterm_and_duration_end_with_a_summary() {
    let lab = Lab::create("stop", 1).expect("create the lab");
    let (running, _) = Running::start(&lab.rx_ns, &["--iface", &lab.rx_if]);
    traffic_tests::signal(running.pid(), libc::SIGTERM);
    // The SIGINT that `stop` sends finds traffic already stopping (or a
    // zombie): either way the exit must be clean and carry a summary.
    let (summary, status, _) = running.stop();
    assert!(status.success());
    assert_eq!(summary.iface, lab.rx_if);

    let out = traffic_in(
        &lab.rx_ns,
        &["--iface", &lab.rx_if, "--duration", "0.5", "--json"],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = summary_of(&out.stdout).duration_s;
    assert!((0.5..5.0).contains(&d), "ran {d} s for --duration 0.5");
    assert!(!has_xdp(&lab.rx_ns, &lab.rx_if));
}

#[test]
fn auto_mode_falls_back_to_skb_and_says_why() {
    let lab = Lab::create("mtu", 1).expect("create the lab");
    // veth cannot run native XDP with a jumbo MTU: the kernel answers ERANGE.
    for (ns, ifname) in [(&lab.tx_ns, &lab.tx_if), (&lab.rx_ns, &lab.rx_if)] {
        traffic::lab::ip(&["-n", ns, "link", "set", "dev", ifname, "mtu", "9000"]).unwrap();
    }
    let err = fails(
        &lab.rx_ns,
        &[
            "--iface",
            &lab.rx_if,
            "--mode",
            "native",
            "--duration",
            "0.2",
        ],
    );
    assert!(
        err.contains("refused XDP in native mode") && err.contains("--mode skb"),
        "{err}"
    );

    let (running, start) = Running::start(&lab.rx_ns, &["--iface", &lab.rx_if]);
    assert_eq!(start.mode, AttachMode::Skb, "{start:?}");
    assert_eq!(start.refused[0].mode, AttachMode::Native, "{start:?}");
    send(&lab, &["--count", "100", "--src", "192.0.2.0/24"]);
    let (summary, status, _) = running.expect_packets(100).stop();
    assert!(status.success());
    assert_eq!(
        (summary.mode, summary.counts.packets),
        (AttachMode::Skb, 100)
    );
}

#[test]
fn another_program_is_refused_unless_forced() {
    let lab = Lab::create("force", 1).expect("create the lab");
    // A program attached the legacy way (netlink), as older tools do.
    let ns = lab.rx_ns.clone();
    let ifname = lab.rx_if.clone();
    let other = in_netns(&lab.rx_ns, move || {
        let floor = ToolProgram::load(Tool::FloorPass).expect("load");
        let ifindex = netlink::ifindex(&ifname).expect("lab interface");
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let fd = floor.program().fd().unwrap().as_fd().as_raw_fd();
        netlink::set_xdp_fd(ifindex, fd, netlink::XDP_FLAGS_SKB_MODE).expect("netlink attach");
        floor
    })
    .unwrap();
    assert!(has_xdp(&ns, &lab.rx_if));

    let err = fails(&lab.rx_ns, &["--iface", &lab.rx_if, "--duration", "0.2"]);
    assert!(
        err.contains("already has an XDP program attached") && err.contains("--force"),
        "{err}"
    );
    assert!(
        err.contains("traffic_floor"),
        "the message names the program: {err}"
    );

    let forced = traffic_in(
        &lab.rx_ns,
        &[
            "--iface",
            &lab.rx_if,
            "--duration",
            "0.2",
            "--force",
            "--json",
        ],
    )
    .output()
    .unwrap();
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    let Some(Line::Start(start)) = lines(&forced.stdout).into_iter().next() else {
        panic!("no start line")
    };
    assert!(
        start
            .replaced
            .as_deref()
            .is_some_and(|p| p.contains("traffic_floor")),
        "{start:?}"
    );
    assert!(
        !has_xdp(&ns, &lab.rx_if),
        "after --force and exit, nothing is left attached"
    );
    drop(other);

    // A program held by another traffic's bpf_link cannot be forced out.
    let (holder, _) = Running::start(&lab.rx_ns, &["--iface", &lab.rx_if]);
    let err = fails(
        &lab.rx_ns,
        &["--iface", &lab.rx_if, "--force", "--duration", "0.2"],
    );
    assert!(
        err.contains("bpf_link") && err.contains("stop that process"),
        "{err}"
    );
    let (_, status, _) = holder.stop();
    assert!(status.success());
}

#[test]
fn bad_rules_are_all_reported_and_nothing_is_attached() {
    let lab = Lab::create("rules", 1).expect("create the lab");
    let dir = std::env::temp_dir().join(format!("traffic-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rules.txt");
    std::fs::write(
        &file,
        "drop 192.0.2.0/24\nblock 198.51.100.0/24\npass 2001:db8::/129\n",
    )
    .unwrap();
    let out = traffic_in(
        &lab.rx_ns,
        &[
            "--iface",
            &lab.rx_if,
            "--drop",
            "192.0.2.1/24",
            "--capture",
            "nonsense",
            "--rules",
            file.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "nothing was attached",
        "--drop: bad prefix `192.0.2.1/24`: host bits are set; did you mean 192.0.2.0/24?",
        "--capture: bad prefix `nonsense`",
        "rules.txt:2: unknown action `block`",
        "rules.txt:3: bad prefix `2001:db8::/129`",
    ] {
        assert!(err.contains(needle), "stderr lacks `{needle}`:\n{err}");
    }
    assert!(!has_xdp(&lab.rx_ns, &lab.rx_if));
}

#[test]
fn users_get_one_clear_sentence_for_common_mistakes() {
    let lab = Lab::create("errors", 1).expect("create the lab");
    let err = fails(&lab.rx_ns, &["--iface", "no-such-if0"]);
    assert!(
        err.contains("there is no network interface named `no-such-if0`"),
        "{err}"
    );

    let out = traffic_in(&lab.rx_ns, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--iface IFACE"));

    // Without privileges: as nobody, with every capability dropped.
    let bin = traffic_tests::traffic_bin();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.rx_ns,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(&bin)
        .args(["--iface", &lab.rx_if])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs root") && err.contains("CAP_BPF"),
        "{err}"
    );
    assert!(!has_xdp(&lab.rx_ns, &lab.rx_if));
}

#[test]
fn the_built_in_lab_runs_and_removes_what_it_made() {
    // A namespace left by a lab whose process is gone (no pid is this large).
    let stale = "trf-99999999-0-stale-tx";
    traffic::lab::ip(&["netns", "add", stale]).unwrap();

    let out = Command::new(traffic_tests::traffic_bin())
        .args(["--lab", "--duration", "1.5", "--interval", "0.5", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "traffic --lab failed: {stderr}");
    assert!(
        stderr.contains(&format!("removed namespace {stale}")),
        "{stderr}"
    );
    let c = summary_of(&out.stdout).counts;
    for (key, n) in [
        ("pass", c.pass),
        ("drop", c.drop),
        ("capture", c.capture),
        ("ipv4", c.ipv4),
        ("ipv6", c.ipv6),
    ] {
        assert!(n > 0, "the demo traffic has some {key}: {c:?}");
    }
    assert_eq!(c.pass + c.drop + c.capture, c.packets);
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    let mine = format!("trf-{}-", out_pid_marker(&stderr));
    assert!(
        !namespaces.contains(&mine),
        "the lab left {mine}*: {namespaces}"
    );
    assert!(!namespaces.contains(stale));
}

#[test]
fn the_built_in_lab_serves_metrics_and_exports_where_it_was_started() {
    // The lab attaches inside a namespace of its own; a user's scraper and
    // collector are where traffic was started: here, a test namespace whose
    // loopback is up.
    let home = Lab::create("labhome", 1).expect("create the lab");
    let ns = home.rx_ns.clone();
    Lab::loopback_up(&ns).unwrap();
    let collector = in_netns(&ns, || std::net::UdpSocket::bind("127.0.0.1:4739"))
        .unwrap()
        .unwrap();
    collector
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let child = traffic_in(
        &ns,
        &[
            "--lab",
            "--duration",
            "6",
            "--interval",
            "0.5",
            "--json",
            "--metrics",
            "127.0.0.1:9464",
            "--ipfix",
            "127.0.0.1:4739",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut scraped = None;
    assert!(
        eventually(Duration::from_secs(4), || {
            scraped = traffic_tests::http_get(&ns, "127.0.0.1:9464", "/metrics").filter(
                |(status, body)| {
                    *status == 200 && body.contains("traffic_packets_total{iface=\"trf-rx\"")
                },
            );
            scraped.is_some()
        }),
        "nothing served the lab's metrics at 127.0.0.1:9464 in the namespace traffic started in"
    );
    let mut datagram = [0u8; 65_535];
    let (len, _) = collector
        .recv_from(&mut datagram)
        .expect("an IPFIX message reaches the collector where traffic started");
    assert!(len >= 16, "an IPFIX message header: {len} bytes");
    assert_eq!(&datagram[..2], &[0, 10], "IPFIX version 10");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "traffic --lab failed: {stderr}");
    assert!(summary_of(&out.stdout).counts.packets > 0, "{stderr}");
}

#[test]
fn a_down_interface_and_queues_it_lacks_are_noted() {
    let lab = Lab::create("notes", 1).expect("create the lab");
    traffic::lab::ip(&["-n", &lab.rx_ns, "link", "set", "dev", &lab.rx_if, "down"]).unwrap();
    let out = traffic_in(&lab.rx_ns, &["--iface", &lab.rx_if, "--duration", "0.5"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "note: {} is down: no packet reaches the program until it is up",
            lab.rx_if
        )),
        "{stderr}"
    );
    traffic::lab::ip(&["-n", &lab.rx_ns, "link", "set", "dev", &lab.rx_if, "up"]).unwrap();

    // Down and up again while traffic runs: noted each time, the run goes on.
    let run = traffic_tests::spawn_attached(&lab, &["--duration", "2"]);
    std::thread::sleep(Duration::from_millis(300));
    traffic::lab::ip(&["-n", &lab.rx_ns, "link", "set", "dev", &lab.rx_if, "down"]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    traffic::lab::ip(&["-n", &lab.rx_ns, "link", "set", "dev", &lab.rx_if, "up"]).unwrap();
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let down = stderr
        .find(&format!("note: {} went down", lab.rx_if))
        .unwrap_or_else(|| panic!("{stderr}"));
    let up = stderr
        .find(&format!("note: {} is up", lab.rx_if))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(down < up, "{stderr}");

    let out = traffic_in(
        &lab.rx_ns,
        &[
            "--iface",
            &lab.rx_if,
            "--duration",
            "0.5",
            "--afxdp",
            "--queues",
            "4",
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("is down"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "note: --queues 4: {} has 1 receive queue; opening a socket on each",
            lab.rx_if
        )),
        "{stderr}"
    );
}

/// The pid in the lab's namespace names, from its first stderr line.
fn out_pid_marker(stderr: &str) -> String {
    let at = stderr
        .find("(namespace trf-")
        .expect("the lab names its namespaces")
        + "(namespace trf-".len();
    stderr[at..].split('-').next().unwrap().to_owned()
}

#[test]
fn live_frames_reach_the_receiver() {
    let lab = Lab::create("live", 1).expect("create the lab");
    let (running, _) = Running::watch(
        &lab,
        &["--drop", "192.0.2.0/24", "--capture", "2001:db8:c::/48"],
    );
    let report = send(
        &lab,
        &[
            "--count",
            "10000",
            "--src",
            "192.0.2.0/24",
            "--src",
            "2001:db8:c::/64",
            "--mechanism",
            "live-frames",
        ],
    );
    assert_eq!(report.sent, 10_000);
    let (summary, status, _) = running.expect_packets(10_000).stop();
    assert!(status.success());
    // One frame per prefix, repeated: half from each.
    let c = summary.counts;
    assert_eq!([c.drop, c.capture], [5_000, 5_000], "{summary:?}");
    assert_eq!(c.events, 5_000);

    // Refusals, each with exit status 2, before anything is sent.
    let refused = |args: &[&str]| {
        let base = ["gen", "--iface", lab.tx_if.as_str(), "--count", "1"];
        let out = traffic_in(&lab.tx_ns, &[&base[..], args].concat())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refused(&[
        "--src",
        "192.0.2.1",
        "--mechanism",
        "live-frames",
        "--rate",
        "10",
    ]);
    assert!(stderr.contains("--rate is not supported"), "{stderr}");
    // The generator attaches nothing: its refusals of flags say what it
    // did not do.
    let stderr = refused(&["--src", "192.0.2.0/33"]);
    assert!(
        stderr.contains("nothing was sent:\n  --src: bad prefix `192.0.2.0/33`"),
        "{stderr}"
    );
}

/// The generator's open-ended stream (the built-in lab's) ends when told,
/// and every frame it says it sent arrived.
#[test]
fn an_open_ended_stream_stops_when_told_and_counts_what_it_sent() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    use traffic::lab::generator::{self, GenOptions, Mix, Proto};

    let lab = Lab::create("until", 1).expect("create the lab");
    let (running, _) = Running::watch(&lab, &["--drop", "192.0.2.0/24"]);
    let opts = GenOptions {
        iface: lab.tx_if.clone(),
        count: u64::MAX,
        sources: vec!["192.0.2.0/24".parse().unwrap()],
        dst4: "198.51.100.1".parse().unwrap(),
        dst6: "2001:db8::1".parse().unwrap(),
        dst_mac: traffic::lab::RX_MAC,
        rate: Some(20_000),
        proto: Proto::Udp,
        payload_len: 22,
        mix: Mix::RoundRobin,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (done, ended) = std::sync::mpsc::channel();
    let (ns, flag) = (lab.tx_ns.clone(), Arc::clone(&stop));
    std::thread::spawn(move || {
        let _ = done.send(in_netns(&ns, move || generator::run_until(&opts, &flag)));
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let report = ended
        .recv_timeout(Duration::from_secs(10))
        .expect("the stream ended when told")
        .expect("enter the sending namespace")
        .expect("send");
    assert!(report.sent > 0 && report.sent < 1_000_000, "{report:?}");
    let (summary, status, stderr) = running.expect_packets(report.sent).stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(summary.counts.drop, report.sent, "{summary:?}");
}
