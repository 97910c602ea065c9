//! Issue 13: traffic on many hosts. Its Prometheus metrics scraped by a
//! real Prometheus, its IPFIX records received by a real collector
//! (nfcapd) and decoded by tshark, and one process on two interfaces.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::Duration,
};

use traffic_tests::{
    Background, Lab, Running, TempDir, eventually, expected_frames, gen_options, http_get,
    output_of, send, send_opts,
};

/// The query string of a PromQL expression.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of each series of an instant query, by the value of `label`.
fn query(ns: &str, q: &str, label: &str) -> BTreeMap<String, f64> {
    let Some((200, body)) = http_get(
        ns,
        "127.0.0.1:9090",
        &format!("/api/v1/query?query={}", encode(q)),
    ) else {
        return BTreeMap::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).expect("Prometheus answers JSON");
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let key = r["metric"][label].as_str().unwrap_or_default().to_owned();
            let value = r["value"][1].as_str()?.parse().ok()?;
            Some((key, value))
        })
        .collect()
}

/// What `open` makes in the lab's receiving namespace (a socket bound
/// there), which must succeed.
fn in_lab<T: Send + 'static>(
    lab: &Lab,
    open: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> T {
    traffic::lab::netns::in_netns(&lab.rx_ns, open)
        .expect("enter the lab's namespace")
        .expect("open a socket in the lab")
}

fn map(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[test]
fn prometheus_scrapes_the_counts_the_lab_sent() {
    let lab = Lab::create("prom", 1).expect("create the lab");
    Lab::loopback_up(&lab.rx_ns).unwrap();
    let dir = TempDir::new("prom");
    let (running, _) = Running::watch(
        &lab,
        &[
            "--metrics",
            "127.0.0.1:9464",
            "--capture",
            "192.0.2.0/24",
            "--drop",
            "198.51.100.0/24",
        ],
    );
    let config = dir.0.join("prometheus.yml");
    std::fs::write(
        &config,
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: traffic\n    static_configs:\n      - targets: ['127.0.0.1:9464']\n",
    )
    .unwrap();
    let prometheus = Background::start(
        &lab.rx_ns,
        "prometheus",
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.0.join("data").display()),
            "--web.listen-address=127.0.0.1:9090",
        ],
        &dir.0.join("prometheus.log"),
    );
    send(&lab, &["--count", "300", "--src", "192.0.2.0/30"]);
    send(&lab, &["--count", "200", "--src", "198.51.100.0/31"]);
    send(&lab, &["--count", "100", "--src", "203.0.113.0/30"]);
    let running = running.expect_packets(600);

    let want_actions = map(&[("capture", 300.0), ("drop", 200.0), ("pass", 100.0)]);
    let want_rules = map(&[
        ("192.0.2.0/24", 300.0),
        ("198.51.100.0/24", 200.0),
        ("default", 100.0),
    ]);
    let mut actions = BTreeMap::new();
    let mut rules = BTreeMap::new();
    let scraped = eventually(Duration::from_secs(40), || {
        actions = query(
            &lab.rx_ns,
            "sum by (action) (traffic_packets_total)",
            "action",
        );
        rules = query(
            &lab.rx_ns,
            "sum by (rule) (traffic_rule_packets_total)",
            "rule",
        );
        actions == want_actions && rules == want_rules
    });
    assert!(
        scraped,
        "Prometheus has {actions:?} by action and {rules:?} by rule; log:\n{}",
        std::fs::read_to_string(dir.0.join("prometheus.log")).unwrap_or_default()
    );
    let bytes = query(&lab.rx_ns, r#"traffic_bytes_total{action="drop"}"#, "iface");
    assert_eq!(bytes, map(&[(lab.rx_if.as_str(), 200.0 * 42.0)]));
    let up = query(&lab.rx_ns, "up", "job");
    assert_eq!(up, map(&[("traffic", 1.0)]));

    // The page itself passes Prometheus' own linter.
    let (status, page) = http_get(&lab.rx_ns, "127.0.0.1:9464", "/metrics").expect("served");
    assert_eq!(status, 200);
    for family in [
        "traffic_packets_total",
        "traffic_family_bytes_total",
        "traffic_parse_total",
        "traffic_events_lost_total",
        "traffic_rule_bytes_total",
        "traffic_delivery_latency_seconds_bucket",
        "traffic_build_info",
    ] {
        assert!(page.contains(family), "{family} missing from\n{page}");
    }
    let file = dir.0.join("metrics.txt");
    std::fs::write(&file, &page).unwrap();
    let lint = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .expect("run promtool");
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    assert_eq!(
        http_get(&lab.rx_ns, "127.0.0.1:9464", "/nothing").map(|(s, _)| s),
        Some(404)
    );
    drop(prometheus);
    let (summary, status, stderr) = running.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(summary.counts.packets, 600);
}

#[test]
fn a_busy_metrics_port_is_refused_before_anything_is_attached() {
    let lab = Lab::create("promport", 1).expect("create the lab");
    Lab::loopback_up(&lab.rx_ns).unwrap();
    let _taken = in_lab(&lab, || std::net::TcpListener::bind("127.0.0.1:9464"));
    let stderr = traffic_tests::fails(
        &lab.rx_ns,
        &["--iface", &lab.rx_if, "--metrics", "127.0.0.1:9464"],
    );
    assert!(
        stderr.contains("--metrics 127.0.0.1:9464: cannot listen there"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "the cause is said once: {stderr}"
    );
    assert!(!traffic_tests::has_xdp(&lab.rx_ns, &lab.rx_if));
}

/// Packets and bytes per source address of `frames` (as sent).
fn per_source(frames: &[Vec<u8>]) -> HashMap<IpAddr, (u64, u64)> {
    let mut m: HashMap<IpAddr, (u64, u64)> = HashMap::new();
    for f in frames {
        let src = match traffic::packet::parse(f).src {
            Some(a) => a,
            None => panic!("a generated frame without a source"),
        };
        let e = m.entry(src).or_default();
        e.0 += 1;
        e.1 += f.len() as u64;
    }
    m
}

/// The records nfdump reads back from `dir`: packets and bytes per source.
fn nfdump_sources(dir: &std::path::Path) -> HashMap<IpAddr, (u64, u64)> {
    let text = output_of(
        "nfdump",
        &[
            "-R",
            dir.to_str().unwrap(),
            "-q",
            "-6",
            "-N",
            "-o",
            "fmt:%sa %pkt %byt",
        ],
    );
    let mut m: HashMap<IpAddr, (u64, u64)> = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 3, "nfdump line: {line}");
        let addr: IpAddr = f[0].parse().unwrap_or_else(|_| panic!("address in {line}"));
        let e = m.entry(addr).or_default();
        e.0 += f[1].parse::<u64>().unwrap();
        e.1 += f[2].parse::<u64>().unwrap();
    }
    m
}

/// nfcapd on the lab's receiving loopback, port 4739, writing into a
/// `flows` folder of a new temporary directory.
fn nfcapd(lab: &Lab, tag: &str) -> (TempDir, std::path::PathBuf, Background) {
    let dir = TempDir::new(tag);
    let flows = dir.0.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    let nfcapd = Background::start(
        &lab.rx_ns,
        "nfcapd",
        &[
            "-w",
            flows.to_str().unwrap(),
            "-b",
            "127.0.0.1",
            "-p",
            "4739",
            "-t",
            "3600",
        ],
        &dir.0.join("nfcapd.log"),
    );
    (dir, flows, nfcapd)
}

#[test]
fn nfcapd_receives_the_packets_and_bytes_of_every_source() {
    let lab = Lab::create("nfcapd", 1).expect("create the lab");
    Lab::loopback_up(&lab.rx_ns).unwrap();
    let (dir, flows, nfcapd) = nfcapd(&lab, "nfcapd");
    let (running, _) = Running::watch(
        &lab,
        &["--ipfix", "127.0.0.1:4739", "--drop", "198.51.100.0/24"],
    );
    let v4 = gen_options(&["192.0.2.0/30", "198.51.100.0/31"], 600, 10);
    let v6 = gen_options(&["2001:db8::/126"], 400, 24);
    // Twelve thousand more sources (reserved space, only ever a source
    // inside the lab), one frame each: an interval's records then fill
    // datagrams of loopback's whole MTU, about 1,500 records each.
    let many = gen_options(&["240.0.64.0/18"], 12_000, 0);
    send_opts(&lab, &v4);
    send_opts(&lab, &v6);
    send_opts(&lab, &many);
    let (summary, status, stderr) = running.expect_packets(13_000).stop();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("could not be sent"), "{stderr}");
    nfcapd.stop(libc::SIGINT);

    let mut want = per_source(&expected_frames(&v4));
    want.extend(per_source(&expected_frames(&v6)));
    want.extend(per_source(&expected_frames(&many)));
    assert_eq!(want.len(), 10 + 12_000);
    let got = nfdump_sources(&flows);
    assert_eq!(
        got,
        want,
        "nfcapd's log:\n{}",
        std::fs::read_to_string(dir.0.join("nfcapd.log")).unwrap_or_default()
    );
    let bytes: u64 = got.values().map(|(_, b)| b).sum();
    assert_eq!(bytes, summary.counts.bytes);
}

#[test]
fn sources_with_no_room_reach_the_collector_as_one_aggregate() {
    let lab = Lab::create("nfagg", 1).expect("create the lab");
    Lab::loopback_up(&lab.rx_ns).unwrap();
    let (_dir, flows, nfcapd) = nfcapd(&lab, "nfagg");
    // 32,768 sources (reserved space, only ever a source inside the lab)
    // for 16,384 slots per CPU and a map of 16: some find no room.
    let (running, _) = Running::watch(&lab, &["--ipfix", "127.0.0.1:4739", "--top-capacity", "16"]);
    send(&lab, &["--count", "32768", "--src", "240.0.0.0/17"]);
    let (summary, status, stderr) = running.expect_packets(32768).stop();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("could not be sent"), "{stderr}");
    nfcapd.stop(libc::SIGINT);
    assert!(summary.counts.untracked > 0, "{summary:?}");
    let got = nfdump_sources(&flows);
    let packets: u64 = got.values().map(|(p, _)| p).sum();
    let bytes: u64 = got.values().map(|(_, b)| b).sum();
    assert_eq!((packets, bytes), (32768, summary.counts.bytes));
    let unspecified: u64 = got
        .iter()
        .filter(|(a, _)| a.is_unspecified())
        .map(|(_, (p, _))| p)
        .sum();
    assert_eq!(unspecified, summary.counts.untracked);
}

/// tshark's decoding of the IPFIX messages in `capture`, on `port`.
fn tshark_cflow(capture: &std::path::Path, proto: &str, port: u16) -> String {
    output_of(
        "tshark",
        &[
            "-r",
            capture.to_str().unwrap(),
            "-d",
            &format!("{proto}.port=={port},cflow"),
            "-V",
        ],
    )
}

#[test]
fn ipfix_templates_and_records_decode_in_tshark() {
    let lab = Lab::create("cflow", 1).expect("create the lab");
    Lab::loopback_up(&lab.rx_ns).unwrap();
    let dir = TempDir::new("cflow");
    // Something listens on each port, so that nothing is refused.
    let udp = in_lab(&lab, || std::net::UdpSocket::bind("127.0.0.1:4739"));
    let tcp = in_lab(&lab, || std::net::TcpListener::bind("127.0.0.1:4740"));
    let received = std::thread::spawn(move || {
        use std::io::Read as _;
        let (mut s, _) = tcp.accept().expect("traffic connects");
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        all.len()
    });
    let capture = dir.0.join("ipfix.pcap");
    let tcpdump = Background::start(
        &lab.rx_ns,
        "tcpdump",
        &[
            "-i",
            "lo",
            // Each packet written as it comes: a stop leaves none unread.
            "--immediate-mode",
            "-U",
            "-w",
            capture.to_str().unwrap(),
            "port 4739 or port 4740",
        ],
        &dir.0.join("tcpdump.log"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let (udp_run, start) = Running::watch(
        &lab,
        &[
            "--ipfix",
            "127.0.0.1:4739",
            "--ipfix-domain",
            "42",
            "--ipfix-templates",
            "0.5",
            "--drop",
            "198.51.100.0/24",
            "--top-prefix6",
            "64",
        ],
    );
    send(&lab, &["--count", "60", "--src", "198.51.100.7/32"]);
    send(&lab, &["--count", "40", "--src", "192.0.2.9/32"]);
    send(&lab, &["--count", "30", "--src", "2001:db8:0:5::1/128"]);
    let udp_run = udp_run.expect_packets(130);
    std::thread::sleep(Duration::from_secs(2));
    let (_, status, stderr) = udp_run.stop();
    assert!(status.success(), "{stderr}");
    let (tcp_run, _) = Running::watch(
        &lab,
        &[
            "--ipfix",
            "127.0.0.1:4740",
            "--ipfix-tcp",
            "--drop",
            "198.51.100.0/24",
        ],
    );
    send(&lab, &["--count", "25", "--src", "198.51.100.8/32"]);
    let (_, status, stderr) = tcp_run.expect_packets(25).stop();
    assert!(status.success(), "{stderr}");
    assert!(received.join().unwrap() > 0);
    std::thread::sleep(Duration::from_millis(300));
    tcpdump.stop(libc::SIGINT);
    drop(udp);

    let text = tshark_cflow(&capture, "udp", 4739);
    let ifindex = format!("InputInt: {}", start.ifindex);
    for want in [
        "Version: 10",
        "Observation Domain Id: 42",
        "Template Id: 256",
        "Template Id: 257",
        "Template Id: 258",
        "SrcAddr: 198.51.100.7",
        "SrcAddr: 192.0.2.9",
        "SrcAddr: 2001:db8:0:5::",
        "SrcMask: 64",
        "Packets: 60",
        "Packets: 40",
        "Octets: 2520",
        ifindex.as_str(),
        "ForwardingStatus: Drop (2)",
        "ForwardingStatus: Forward (1)",
    ] {
        assert!(text.contains(want), "{want} missing from tshark:\n{text}");
    }
    // Templates again every half second over UDP.
    let templates = text.matches("Template Id: 256").count();
    assert!(templates >= 3, "templates sent {templates} times");
    // Each record is decoded with its template: no undecoded data sets.
    assert!(!text.contains("no template found"), "{text}");

    let text = tshark_cflow(&capture, "tcp", 4740);
    for want in [
        "Template Id: 256",
        "SrcAddr: 198.51.100.8",
        "Packets: 25",
        "ForwardingStatus: Drop (2)",
    ] {
        assert!(
            text.contains(want),
            "{want} missing from tshark (TCP):\n{text}"
        );
    }
}

#[test]
fn an_unreachable_tcp_collector_is_refused_before_anything_is_attached() {
    let lab = Lab::create("ipfixtcp", 1).expect("create the lab");
    Lab::loopback_up(&lab.rx_ns).unwrap();
    let stderr = traffic_tests::fails(
        &lab.rx_ns,
        &[
            "--iface",
            &lab.rx_if,
            "--ipfix",
            "127.0.0.1:4741",
            "--ipfix-tcp",
        ],
    );
    assert!(
        stderr.contains("--ipfix 127.0.0.1:4741: cannot reach the collector over TCP"),
        "{stderr}"
    );
    let stderr = traffic_tests::fails(
        &lab.rx_ns,
        &["--iface", &lab.rx_if, "--ipfix", "collector-without-port"],
    );
    assert!(
        stderr.contains("give the collector as HOST:PORT"),
        "{stderr}"
    );
    // A datagram to port 0 goes nowhere: refused, not sent into the void.
    let stderr = traffic_tests::fails(
        &lab.rx_ns,
        &["--iface", &lab.rx_if, "--ipfix", "127.0.0.1:0"],
    );
    assert!(
        stderr.contains("--ipfix 127.0.0.1:0: port 0 is no collector's port"),
        "{stderr}"
    );
    assert!(!traffic_tests::has_xdp(&lab.rx_ns, &lab.rx_if));
}

#[test]
fn two_interfaces_are_counted_apart_and_written_as_pcapng() {
    let lab = Lab::create("twoif", 1).expect("create the lab");
    lab.add_pair("trf-tx2", "trf-rx2").unwrap();
    Lab::loopback_up(&lab.rx_ns).unwrap();
    let dir = TempDir::new("twoif");
    let out = dir.0.join("both.pcapng");
    let (running, start) = Running::start(
        &lab.rx_ns,
        &[
            "--iface",
            &lab.rx_if,
            "--iface",
            "trf-rx2",
            "--interval",
            "0.2",
            "--capture",
            "192.0.2.0/24",
            "--drop",
            "198.51.100.0/24",
            "--metrics",
            "127.0.0.1:9464",
            "--print",
            "-w",
            out.to_str().unwrap(),
        ],
    );
    let names: Vec<&str> = start.ifaces.iter().map(|i| i.iface.as_str()).collect();
    assert_eq!(names, [lab.rx_if.as_str(), "trf-rx2"]);
    send(&lab, &["--count", "300", "--src", "192.0.2.0/30"]);
    send(&lab, &["--count", "100", "--src", "198.51.100.0/30"]);
    traffic_tests::send_on_iface(
        &lab,
        "trf-tx2",
        &["--count", "200", "--src", "192.0.2.64/30"],
    );
    traffic_tests::send_on_iface(
        &lab,
        "trf-tx2",
        &["--count", "50", "--src", "198.51.100.64/30"],
    );
    let running = running.expect_packets(650);
    let page = eventually(Duration::from_secs(5), || {
        http_get(&lab.rx_ns, "127.0.0.1:9464", "/metrics").is_some_and(|(_, p)| {
            p.contains(r#"traffic_packets_total{iface="trf-rx2",action="drop"} 50"#)
        })
    });
    assert!(page, "per-interface metrics");
    let mut printed: BTreeMap<String, u64> = BTreeMap::new();
    for p in &running.packets {
        *printed
            .entry(p.iface.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let (summary, status, stderr) = running.stop();
    assert!(status.success(), "{stderr}");
    let each: Vec<(String, u64, u64, u64)> = summary
        .ifaces
        .iter()
        .map(|i| {
            (
                i.iface.clone(),
                i.counts.capture,
                i.counts.drop,
                i.counts.events,
            )
        })
        .collect();
    assert_eq!(
        each,
        [
            (lab.rx_if.clone(), 300, 100, 300),
            ("trf-rx2".to_owned(), 200, 50, 200)
        ]
    );
    assert_eq!((summary.counts.capture, summary.counts.events), (500, 500));
    // Each printed packet names its interface.
    assert_eq!(
        printed,
        [(lab.rx_if.clone(), 300), ("trf-rx2".to_owned(), 200)]
            .into_iter()
            .collect()
    );

    // tcpdump reads the pcapng whole; tshark names each frame's interface.
    assert_eq!(traffic_tests::tcpdump_read(&out).len(), 500);
    let text = output_of(
        "tshark",
        &[
            "-r",
            out.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "ip.src",
        ],
    );
    let mut by_iface: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines() {
        let (iface, src) = line.split_once('\t').expect("two fields");
        let on_two = src.starts_with("192.0.2.6");
        assert_eq!(iface == "trf-rx2", on_two, "{line}");
        *by_iface.entry(iface.to_owned()).or_default() += 1;
    }
    assert_eq!(
        by_iface,
        [(lab.rx_if.clone(), 300), ("trf-rx2".to_owned(), 200)]
            .into_iter()
            .collect()
    );
}

#[test]
fn idle_connections_cannot_starve_the_metrics_endpoint() {
    let lab = Lab::create("promidle", 1).expect("create the lab");
    Lab::loopback_up(&lab.rx_ns).unwrap();
    let (running, _) = Running::watch(&lab, &["--metrics", "127.0.0.1:9464"]);
    // More silent connections than the server serves at once: each is
    // closed when it sends no request within the header timeout.
    let idle: Vec<std::net::TcpStream> = traffic::lab::netns::in_netns(&lab.rx_ns, || {
        (0..40)
            .map(|_| std::net::TcpStream::connect("127.0.0.1:9464").expect("connect"))
            .collect()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let answered = eventually(Duration::from_secs(20), || {
        http_get(&lab.rx_ns, "127.0.0.1:9464", "/metrics").is_some_and(|(s, _)| s == 200)
    });
    assert!(answered, "no answer with 40 idle connections open");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
    let (_, status, stderr) = running.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_tcp_collector_that_goes_away_costs_counted_records_not_the_run() {
    let lab = Lab::create("ipfixgone", 1).expect("create the lab");
    Lab::loopback_up(&lab.rx_ns).unwrap();
    let listener = in_lab(&lab, || std::net::TcpListener::bind("127.0.0.1:4742"));
    // The collector takes the connection, reads a little, and goes away
    // with its listening socket: reconnecting is refused from then on.
    let collector = std::thread::spawn(move || {
        use std::io::Read as _;
        let (mut s, _) = listener.accept().expect("traffic connects");
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
    });
    let (running, _) = Running::watch(
        &lab,
        &[
            "--ipfix",
            "127.0.0.1:4742",
            "--ipfix-tcp",
            "--top-prefix",
            "24",
        ],
    );
    collector.join().unwrap();
    for _ in 0..5 {
        send(&lab, &["--count", "50", "--src", "192.0.2.0/24"]);
        std::thread::sleep(Duration::from_millis(300));
    }
    let (summary, status, stderr) = running.expect_packets(250).stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(summary.counts.packets, 250);
    assert!(
        stderr.contains("flow records could not be sent to 127.0.0.1:4742"),
        "{stderr}"
    );
}
