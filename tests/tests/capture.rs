//! The capture path: events through test_run, a stalled reader on a tiny
//! ring, and pcap files and packet lines from a veth lab.

use std::{collections::HashMap, net::IpAddr, os::unix::fs::PermissionsExt as _};

use aya::programs::{TestRun as _, TestRunOptions};
use traffic::{
    kernel::{Engine, EventRing, Settings},
    lab::frame::{ETH_P_8021AD, ETH_P_8021Q, Fragment, FrameSpec, L4},
    packet::{Outcome, Packet},
    rules::{Action, Origin, RuleSet},
    source::{clock::monotonic_ns, ringbuf::decode},
};
use traffic_common::{EventHeader, NO_RULE, action, event_flags};
use traffic_tests::{
    Lab, Running, TempDir, expected_frames, gen_options, is_ext4, open_flags, read_pcap, send,
    send_opts, tcpdump_read,
};

fn rules(default: Action, list: &[(Action, &str)]) -> RuleSet {
    let mut set = RuleSet::new(default);
    for &(a, c) in list {
        set.add_str(a, c, Origin::Flag("test")).unwrap();
    }
    assert!(set.seal().is_empty());
    set
}

/// The rules of the event tests: ids 0, 1, 2 in this order.
fn capture_rules() -> RuleSet {
    rules(
        Action::Pass,
        &[
            (Action::Drop, "192.0.2.0/24"),
            (Action::Capture, "203.0.113.0/24"),
            (Action::Capture, "2001:db8:c::/48"),
        ],
    )
}

struct Harness {
    engine: Engine,
    ring: EventRing,
}

impl Harness {
    fn new(rules: &RuleSet, settings: Settings) -> Self {
        let mut engine =
            Engine::load_with(rules, &settings).expect("load (needs root: cargo xtask test)");
        let ring = engine.take_events().unwrap();
        Self { engine, ring }
    }

    /// Runs `frame` `repeat` times and returns the events it produced.
    fn run(&mut self, frame: &[u8], repeat: u32) -> Vec<(EventHeader, Vec<u8>)> {
        self.engine
            .program()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .expect("test_run");
        self.read()
    }

    fn read(&mut self) -> Vec<(EventHeader, Vec<u8>)> {
        let mut events = Vec::new();
        self.ring.read(|record| {
            let ev = decode(record).expect("a well-formed record");
            events.push((ev.header, ev.data.to_vec()));
        });
        events
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// What sinks see of an event: the captured bytes read by the parser, with
/// the program's verdict.
fn describe(hdr: &EventHeader, data: &[u8]) -> Packet {
    Packet::from_capture(data, hdr.wire_len, hdr.flags)
}

#[test]
fn ipv4_tcp_behind_two_vlan_tags_is_described_exactly() {
    let mut h = Harness::new(&capture_rules(), Settings::default());
    let mut spec = FrameSpec::udp(ip("203.0.113.7"), ip("198.51.100.1"));
    spec.vlans = vec![(ETH_P_8021AD, 100), (ETH_P_8021Q, 200)];
    spec.l4 = L4::TcpSyn {
        sport: 40001,
        dport: 80,
    };
    spec.payload_len = 200;
    let frame = spec.build();
    let before = monotonic_ns();
    let events = h.run(&frame, 1);
    let after = monotonic_ns();
    assert_eq!(events.len(), 1);
    let (hdr, data) = &events[0];
    assert!(
        (before..=after).contains(&hdr.ts_ns),
        "timestamp {} not in [{before}, {after}]",
        hdr.ts_ns
    );
    let p = describe(hdr, data);
    assert_eq!(
        (p.ip_version, p.protocol, p.ports, p.tcp_flags),
        (4, Some(6), Some((40001, 80)), Some(0x02))
    );
    assert_eq!((p.vlan_depth, p.vlan_id), (2, Some(100)));
    assert_eq!(
        (p.src, p.dst),
        (Some(ip("203.0.113.7")), Some(ip("198.51.100.1")))
    );
    assert_eq!((hdr.rule_id, hdr.action), (1, action::CAPTURE as u8));
    assert_eq!(hdr.flags, event_flags::IPV4);
    assert_eq!((hdr.wire_len as usize, hdr.cap_len), (frame.len(), 128));
    assert_eq!(data.as_slice(), &frame[..128]);
    assert_eq!(hdr.rx_queue, 0);
}

/// An IPv6 UDP frame whose transport header starts past byte 1,024: two
/// destination-options headers of 600 bytes each in front of it.
fn deep_ipv6_udp() -> Vec<u8> {
    use etherparse::{IpNumber, Ipv6RawExtHeader, UdpHeader};
    let mut spec = FrameSpec::udp(ip("2001:db8:c::7"), ip("2001:db8::1"));
    spec.l4 = L4::Raw(60);
    let mut frame = spec.build();
    let udp = UdpHeader {
        source_port: 4000,
        destination_port: 53,
        length: 8,
        checksum: 0,
    };
    let inner = Ipv6RawExtHeader::new_raw(IpNumber::UDP, &[0; 598]).unwrap();
    let outer = Ipv6RawExtHeader::new_raw(IpNumber::IPV6_DESTINATION_OPTIONS, &[0; 598]).unwrap();
    frame.extend_from_slice(&outer.to_bytes());
    frame.extend_from_slice(&inner.to_bytes());
    frame.extend_from_slice(&udp.to_bytes());
    let payload = (frame.len() - 14 - 40) as u16;
    frame[14 + 4..14 + 6].copy_from_slice(&payload.to_be_bytes());
    frame
}

#[test]
fn extension_headers_past_1024_bytes_are_walked() {
    // Issue 9: the walk used to stop at byte 1,024, so such a packet was
    // counted as IPv6 even when its transport header was cut, and its
    // events lacked protocol and ports.
    let frame = deep_ipv6_udp();
    assert!(frame.len() > 14 + 40 + 1024 + 8);
    let mut h = Harness::new(
        &capture_rules(),
        Settings {
            snaplen: 4096,
            ..Settings::default()
        },
    );
    let events = h.run(&frame, 1);
    let (hdr, data) = &events[0];
    let p = describe(hdr, data);
    assert_eq!(
        (p.protocol, p.ports, hdr.flags),
        (Some(17), Some((4000, 53)), event_flags::IPV6)
    );
    let before = h.engine.stats().unwrap();
    // The UDP header cut to 4 bytes, the payload length saying so.
    let mut cut = frame[..frame.len() - 4].to_vec();
    let payload = (cut.len() - 14 - 40) as u16;
    cut[14 + 4..14 + 6].copy_from_slice(&payload.to_be_bytes());
    let events = h.run(&cut, 1);
    let after = h.engine.stats().unwrap().since(&before);
    assert_eq!((after.malformed, after.ipv6), (1, 0));
    assert_eq!(
        events[0].0.flags,
        event_flags::MALFORMED | event_flags::IPV6
    );
}

#[test]
fn ipv6_events_and_every_snaplen_class() {
    for (snaplen, payload) in [
        (64, 200),
        (128, 10),
        (256, 1000),
        (300, 1000),
        (1500, 1400),
        (4096, 1400),
    ] {
        let mut h = Harness::new(
            &capture_rules(),
            Settings {
                snaplen,
                ..Settings::default()
            },
        );
        let mut spec = FrameSpec::udp(ip("2001:db8:c::5"), ip("2001:db8::1"));
        spec.l4 = L4::Udp {
            sport: 5353,
            dport: 53,
        };
        spec.payload_len = payload;
        let frame = spec.build();
        let events = h.run(&frame, 1);
        assert_eq!(events.len(), 1, "snaplen {snaplen}");
        let (hdr, data) = &events[0];
        let want = frame.len().min(snaplen as usize);
        assert_eq!(
            (hdr.cap_len as usize, hdr.wire_len as usize, data.as_slice()),
            (want, frame.len(), &frame[..want]),
            "snaplen {snaplen}, frame of {}",
            frame.len()
        );
        let p = describe(hdr, data);
        assert_eq!(
            (p.outcome, p.protocol, p.ports),
            (Outcome::Ipv6, Some(17), Some((5353, 53)))
        );
        assert_eq!(
            (p.src, p.dst),
            (Some(ip("2001:db8:c::5")), Some(ip("2001:db8::1")))
        );
        assert_eq!((hdr.rule_id, hdr.flags), (2, event_flags::IPV6));
    }
}

/// Every captured length from 1 to 300 bytes, byte for byte: lengths that
/// are and are not multiples of 8, below 8, at and across the record
/// classes' edges, so through the program's word-by-word copy (classes up
/// to 256 bytes, the last word overlapping) and its helper copy (below 8
/// bytes, above 256), cut by the snaplen and whole.
#[test]
fn every_capture_length_is_copied_byte_for_byte() {
    // Payload bytes that differ from their neighbours, so that a word
    // copied to the wrong place or one byte off shows.
    let frame_of = |payload: usize| {
        let mut spec = FrameSpec::udp(ip("203.0.113.9"), ip("198.51.100.1"));
        spec.payload_len = payload;
        let mut frame = spec.build();
        let start = frame.len() - payload;
        for (i, b) in frame[start..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        frame
    };
    let check = |h: &mut Harness, frame: &[u8], snaplen: usize| {
        let events = h.run(frame, 1);
        assert_eq!(
            events.len(),
            1,
            "snaplen {snaplen}, frame of {}",
            frame.len()
        );
        let (hdr, data) = &events[0];
        let want = frame.len().min(snaplen);
        assert_eq!(
            (hdr.cap_len as usize, hdr.wire_len as usize),
            (want, frame.len()),
            "snaplen {snaplen}, frame of {}",
            frame.len()
        );
        assert!(
            data.as_slice() == &frame[..want],
            "snaplen {snaplen}, frame of {}: captured bytes differ at {:?}",
            frame.len(),
            data.iter().zip(frame).position(|(a, b)| a != b)
        );
    };
    // Whole frames of 42 to 300 bytes.
    let mut whole = Harness::new(
        &capture_rules(),
        Settings {
            snaplen: 4096,
            ..Settings::default()
        },
    );
    for payload in 0..=258 {
        check(&mut whole, &frame_of(payload), 4096);
    }
    // A 300-byte frame cut below 8, around multiples of 8 and at the
    // classes' edges (one program load each).
    let frame = frame_of(258);
    let snaplens = (1..=17).chain([
        23, 24, 25, 31, 63, 64, 65, 71, 127, 128, 129, 199, 255, 256, 257, 300,
    ]);
    for snaplen in snaplens {
        let mut h = Harness::new(
            &capture_rules(),
            Settings {
                snaplen,
                ..Settings::default()
            },
        );
        check(&mut h, &frame, snaplen as usize);
    }
}

#[test]
fn fragments_and_malformed_frames_are_flagged() {
    let mut h = Harness::new(&capture_rules(), Settings::default());
    let mut later = FrameSpec::udp(ip("203.0.113.9"), ip("198.51.100.1"));
    later.l4 = L4::Raw(17);
    later.payload_len = 40;
    later.fragment = Some(Fragment {
        offset: 10,
        more: false,
    });
    let events = h.run(&later.build(), 1);
    assert_eq!(
        events[0].0.flags,
        event_flags::LATER_FRAGMENT | event_flags::IPV4,
    );
    let p = describe(&events[0].0, &events[0].1);
    assert_eq!(
        (p.protocol, p.ports),
        (Some(17), None),
        "no ports for a later fragment"
    );

    let mut v6_later = FrameSpec::udp(ip("2001:db8:c::9"), ip("2001:db8::1"));
    v6_later.l4 = L4::Raw(6);
    v6_later.payload_len = 16;
    v6_later.fragment = Some(Fragment {
        offset: 3,
        more: true,
    });
    let events = h.run(&v6_later.build(), 1);
    let p = describe(&events[0].0, &events[0].1);
    assert_eq!(
        (events[0].0.flags, p.protocol),
        (event_flags::LATER_FRAGMENT | event_flags::IPV6, Some(6))
    );

    let mut tcp = FrameSpec::udp(ip("203.0.113.9"), ip("198.51.100.1"));
    tcp.l4 = L4::TcpSyn { sport: 1, dport: 2 };
    let mut truncated = tcp.build();
    truncated.truncate(14 + 20 + 10);
    truncated[16..18].copy_from_slice(&30u16.to_be_bytes());
    let events = h.run(&truncated, 1);
    assert_eq!(
        events[0].0.flags,
        event_flags::MALFORMED | event_flags::IPV4
    );
    assert_eq!(events[0].1, truncated);
}

#[test]
fn sampling_takes_one_in_n_of_every_action_and_counts_it() {
    let set = rules(
        Action::Pass,
        &[
            (Action::Drop, "192.0.2.0/24"),
            (Action::Capture, "203.0.113.0/24"),
        ],
    );
    let mut h = Harness::new(
        &set,
        Settings {
            sample_every: 3,
            ..Settings::default()
        },
    );
    let dropped = FrameSpec::udp(ip("192.0.2.1"), ip("198.51.100.1")).build();
    let events = h.run(&dropped, 10);
    // Packets 1, 4, 7 and 10 of 10.
    assert_eq!(events.len(), 4);
    for (hdr, _) in &events {
        assert_eq!((hdr.action, hdr.rule_id), (action::DROP as u8, 0));
        assert_eq!(hdr.flags & event_flags::SAMPLED, event_flags::SAMPLED);
    }
    let stats = h.engine.stats().unwrap();
    assert_eq!((stats.sampled, stats.events, stats.drop), (4, 4, 10));

    // A captured packet is an event anyway; sampling it adds nothing.
    let captured = FrameSpec::udp(ip("203.0.113.1"), ip("198.51.100.1")).build();
    let events = h.run(&captured, 6);
    assert_eq!(events.len(), 6);
    assert!(
        events
            .iter()
            .all(|(hdr, _)| hdr.flags & event_flags::SAMPLED == 0)
    );
    let passed = FrameSpec::udp(ip("198.51.100.9"), ip("198.51.100.1")).build();
    let events = h.run(&passed, 3);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].0.rule_id, events[0].0.action),
        (NO_RULE, action::PASS as u8)
    );
    let stats = h.engine.stats().unwrap();
    assert_eq!(stats.events, 4 + 6 + 1);
    assert_eq!(stats.sampled, 4 + 1);
}

#[test]
fn a_stalled_reader_on_a_tiny_ring_loses_events_but_counts_every_one() {
    let mut h = Harness::new(
        &capture_rules(),
        Settings {
            ring_bytes: 4096,
            ..Settings::default()
        },
    );
    let frame = FrameSpec::udp(ip("203.0.113.1"), ip("198.51.100.1")).build();
    // Nobody reads while 500 packets are captured.
    h.engine
        .program()
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            repeat: 500,
            ..TestRunOptions::default()
        })
        .unwrap();
    let delivered = h.read().len() as u64;
    let stats = h.engine.stats().unwrap();
    assert_eq!(stats.capture, 500);
    assert!(stats.events_lost > 0, "a 4 KiB ring cannot hold 500 events");
    assert!(delivered > 0);
    assert_eq!(stats.events, delivered);
    assert_eq!(delivered + stats.events_lost, stats.capture);
}

#[test]
fn pcap_holds_exactly_the_captured_packets_byte_for_byte() {
    let lab = Lab::create("pcap", 1).expect("create the lab");
    let dir = TempDir::new("pcap");
    let file = dir.0.join("out.pcap");
    let file_arg = file.to_str().unwrap().to_owned();
    let started_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let (running, _) = Running::watch(
        &lab,
        &[
            "--snaplen",
            "256",
            "--write",
            &file_arg,
            "--capture",
            "203.0.113.0/24",
            "--capture",
            "2001:db8:c::/48",
            "--drop",
            "192.0.2.0/24",
        ],
    );
    let big = gen_options(&["203.0.113.0/24"], 600, 300); // 342-byte frames: cut to 256
    let small = gen_options(&["2001:db8:c::/64"], 400, 20);
    let other = gen_options(&["192.0.2.0/24", "198.51.100.0/24"], 500, 0);
    for opts in [&big, &small, &other] {
        send_opts(&lab, opts);
    }
    let (summary, status, stderr) = running.expect_packets(1500).stop();
    let ended_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    // 1,000 events in an 8 MiB ring: nothing may be lost.
    assert_eq!(summary.counts.events_lost, 0, "{summary:?}");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(summary.counts.capture, 1000);
    assert_eq!(summary.counts.events, 1000);

    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the capture is private");
    let (snaplen, linktype, records) = read_pcap(&file);
    assert_eq!((snaplen, linktype), (256, 1));
    assert_eq!(records.len() as u64, 1000);
    assert_eq!(
        tcpdump_read(&file).len() as u64,
        1000,
        "tcpdump reads every record"
    );

    // Every record is the start of a frame that was sent with a capture
    // source, each at most once.
    let mut want: HashMap<Vec<u8>, (u32, usize)> = HashMap::new();
    for f in expected_frames(&big)
        .into_iter()
        .chain(expected_frames(&small))
    {
        let entry = want
            .entry(f[..f.len().min(256)].to_vec())
            .or_insert((f.len() as u32, 0));
        entry.1 += 1;
    }
    for r in &records {
        let entry = want.get_mut(&r.data).unwrap_or_else(|| {
            panic!(
                "a captured frame that was never sent: {:02x?}",
                &r.data[..40.min(r.data.len())]
            )
        });
        assert!(entry.1 > 0, "captured more often than sent");
        entry.1 -= 1;
        assert_eq!(r.orig_len, entry.0, "original length");
        assert!(
            (started_ns - 1_000_000_000..ended_ns + 1_000_000_000).contains(&r.ts_ns),
            "timestamp {} outside the run",
            r.ts_ns
        );
    }
    let cut = records
        .iter()
        .filter(|r| r.data.len() == 256 && r.orig_len == 342)
        .count() as u64;
    assert_eq!(
        cut + records.iter().filter(|r| r.orig_len == 82).count() as u64,
        1000
    );
}

#[test]
fn packet_lines_name_addresses_ports_and_rules() {
    let lab = Lab::create("print", 1).expect("create the lab");
    let (running, _) = Running::watch(&lab, &["--print", "--capture", "203.0.113.0/24"]);
    send(
        &lab,
        &[
            "--count",
            "50",
            "--src",
            "203.0.113.0/24",
            "--proto",
            "tcp-syn",
        ],
    );
    send(&lab, &["--count", "50", "--src", "198.51.100.0/24"]);
    let (summary, status, _, packets) = running.expect_packets(100).stop_with_packets();
    assert!(status.success());
    assert_eq!(summary.counts.events, 50);
    assert_eq!(packets.len(), 50);
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(p.src, Some(IpAddr::from([203, 0, 113, i as u8])), "{p:?}");
        assert_eq!(p.dst, Some(IpAddr::from([198, 51, 100, 1])));
        assert_eq!((p.protocol, p.dport), (Some(6), Some(80)));
        assert_eq!(p.tcp_flags.as_deref(), Some("S"));
        assert_eq!(p.rule, "capture 203.0.113.0/24");
        assert!(p.latency_ns.is_some_and(|ns| ns > 0));
    }

    // The text form: one tcpdump-like line per packet on stdout.
    let out = traffic_tests::spawn_attached(
        &lab,
        &["--print", "--capture", "203.0.113.0/24", "--duration", "3"],
    );
    send(&lab, &["--count", "5", "--src", "203.0.113.0/24"]);
    let out = out.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    for (i, line) in lines.iter().enumerate() {
        let want = format!(
            " IP 203.0.113.{i}.{} > 198.51.100.1.9: UDP, length 42 [capture 203.0.113.0/24]",
            1024 + i
        );
        assert!(line.ends_with(&want), "{line:?} does not end with {want:?}");
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("events 5 delivered, 0 lost"));
}

#[test]
fn packet_lines_mark_an_ip_header_the_snaplen_cut() {
    // 30 bytes: the Ethernet header and the first 16 of the IP header. The
    // program classified the whole frame; the line says IP or IP6 and
    // marks the header cut short, as tcpdump does, rather than "non-IP".
    let lab = Lab::create("cutprint", 1).expect("create the lab");
    let out = traffic_tests::spawn_attached(
        &lab,
        &[
            "--print",
            "--snaplen",
            "30",
            "--capture",
            "203.0.113.0/24",
            "--capture",
            "2001:db8:c::/48",
            "--duration",
            "3",
        ],
    );
    send(&lab, &["--count", "3", "--src", "203.0.113.0/24"]);
    send(&lab, &["--count", "3", "--src", "2001:db8:c::/64"]);
    let out = out.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    for line in &lines[..3] {
        assert!(
            line.ends_with(" IP [|ip], length 42 [capture 203.0.113.0/24]"),
            "{line:?}"
        );
    }
    for line in &lines[3..] {
        assert!(
            line.ends_with(" IP6 [|ip6], length 62 [capture 2001:db8:c::/48]"),
            "{line:?}"
        );
    }
    assert!(stderr.contains("events 6 delivered, 0 lost"), "{stderr}");
}

#[test]
fn c_count_keeps_exactly_the_first_packets_and_ends_the_run() {
    // As tcpdump -c: the file holds the first COUNT captured packets, in
    // the order sent, and traffic exits by itself with its summary.
    let lab = Lab::create("count", 1).expect("create the lab");
    let dir = TempDir::new("count");
    let file = dir.0.join("first.pcap");
    let file_arg = file.to_str().unwrap().to_owned();
    let (running, _) = Running::watch(
        &lab,
        &["-c", "10", "-w", &file_arg, "--capture", "203.0.113.0/24"],
    );
    let opts = gen_options(&["203.0.113.0/24"], 100, 10);
    send_opts(&lab, &opts);
    let (summary, status, stderr) = running.wait_exit(std::time::Duration::from_secs(10));
    assert!(status.success(), "{stderr}");
    let summary = summary.expect("a summary");
    let (_, _, records) = read_pcap(&file);
    assert_records_are(
        &records,
        &expected_frames(&opts)[..10],
        "the first ten, in order",
    );
    // What was read past the tenth is said, not lost in silence.
    let past = summary.counts.events - 10;
    if past > 0 {
        assert!(
            stderr.contains(&format!(
                "-c: {past} more captured packets arrived before the program stopped, and were not kept"
            )),
            "{stderr}"
        );
    }
    assert_eq!(summary.counts.events_lost, 0, "{summary:?}");

    // And from a recorded capture: the first five of its frames.
    let out = std::process::Command::new(traffic_tests::traffic_bin())
        .args([
            "--read",
            &file_arg,
            "-c",
            "5",
            "--print",
            "--capture",
            "203.0.113.0/24",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
}

#[test]
fn s_0_keeps_as_much_as_the_ring_keeps_as_tcpdump_s_0_does() {
    let lab = Lab::create("snap0", 1).expect("create the lab");
    let dir = TempDir::new("snap0");
    let file = dir.0.join("whole.pcap");
    let file_arg = file.to_str().unwrap().to_owned();
    let (running, _) = Running::watch(
        &lab,
        &["-s", "0", "-w", &file_arg, "--capture", "203.0.113.0/24"],
    );
    let opts = gen_options(&["203.0.113.0/24"], 5, 1400);
    send_opts(&lab, &opts);
    let (summary, status, stderr) = running.expect_packets(5).stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(summary.counts.events, 5);
    assert!(
        stderr.contains("--snaplen 0: keeping up to 4096 bytes of each packet"),
        "{stderr}"
    );
    let (snaplen, _, records) = read_pcap(&file);
    assert_eq!(snaplen, 4096);
    assert_records_are(
        &records,
        &expected_frames(&opts),
        "1,442-byte frames, whole",
    );

    // Past what the ring keeps: refused, pointing at -s 0 and --afxdp.
    let err = traffic_tests::fails(&lab.rx_ns, &["--iface", &lab.rx_if, "-s", "65535"]);
    assert!(
        err.contains("--snaplen 65535 is out of range: use 1 to 4096 bytes (0 keeps 4096; --afxdp captures whole frames)"),
        "{err}"
    );
}

/// The file's records are `frames`, whole and in order.
fn assert_records_are(records: &[traffic_tests::PcapRecord], frames: &[Vec<u8>], what: &str) {
    let kept: Vec<&[u8]> = records.iter().map(|r| r.data.as_slice()).collect();
    let want: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    assert_eq!(kept, want, "{what}");
}

/// One capture configuration of the exactness test.
struct Exact {
    name: &'static str,
    args: &'static [&'static str],
    /// Bytes of UDP payload in each frame.
    payload: usize,
    /// Bytes of each frame kept: the snaplen, or every byte with AF_XDP.
    keep: usize,
}

#[test]
fn every_captured_packet_is_in_the_file_or_counted_lost_in_every_mode() {
    // Issue 10: the reader paces itself (woken at low rates, on a timer at
    // high ones, or spinning); none of that may lose a packet silently.
    let cases = [
        Exact {
            name: "ring, snaplen 64, 60-byte frames",
            args: &["--snaplen", "64"],
            payload: 0,
            keep: 64,
        },
        Exact {
            name: "ring, snaplen 128, 342-byte frames",
            args: &[],
            payload: 300,
            keep: 128,
        },
        Exact {
            name: "ring, snaplen 1500, 1042-byte frames",
            args: &["--snaplen", "1500"],
            payload: 1000,
            keep: 1500,
        },
        Exact {
            name: "ring, --busy-poll, snaplen 100",
            args: &["--busy-poll", "--snaplen", "100"],
            payload: 100,
            keep: 100,
        },
        Exact {
            name: "ring, --page-cache (written as tcpdump writes)",
            args: &["--page-cache"],
            payload: 50,
            keep: 128,
        },
        Exact {
            name: "ring, --max-wait-us 0 (a wake-up per packet)",
            args: &["--max-wait-us", "0"],
            payload: 20,
            keep: 128,
        },
        Exact {
            name: "AF_XDP, 342-byte frames",
            args: &["--afxdp"],
            payload: 300,
            keep: usize::MAX,
        },
        Exact {
            name: "AF_XDP, --busy-poll, 1042-byte frames",
            args: &["--afxdp", "--busy-poll"],
            payload: 1000,
            keep: usize::MAX,
        },
    ];
    const SENT: u64 = 5000;
    for case in &cases {
        let lab = Lab::create("exact", 1).expect("create the lab");
        let dir = TempDir::new("exact");
        let file = dir.0.join("out.pcap");
        let mut args = vec!["--capture", "203.0.113.0/24", "--write"];
        args.push(file.to_str().unwrap());
        args.extend_from_slice(case.args);
        let (running, _) = Running::watch(&lab, &args);
        // A regular file on a file system with direct I/O is written
        // around the page cache unless --page-cache says otherwise.
        let flags = open_flags(running.pid(), &file).expect("traffic holds the pcap file open");
        if is_ext4(&dir.0) {
            assert_eq!(
                flags & libc::O_DIRECT != 0,
                !case.args.contains(&"--page-cache"),
                "{}: O_DIRECT in the file's flags {flags:o}",
                case.name
            );
        }
        let opts = gen_options(&["203.0.113.0/24"], SENT, case.payload);
        send_opts(&lab, &opts);
        let (summary, status, stderr) = running.expect_packets(SENT).stop();
        let c = summary.counts;
        let (_, _, records) = read_pcap(&file);
        assert_eq!(
            records.len() as u64 + c.events_lost,
            SENT,
            "{}: every packet is in the file or counted lost ({c:?})",
            case.name
        );
        assert_eq!(c.events, records.len() as u64, "{}", case.name);
        assert_eq!(
            status.code(),
            Some(u8::from(c.events_lost > 0).into()),
            "{}: {stderr}",
            case.name
        );
        let mut want: HashMap<Vec<u8>, (u32, usize)> = HashMap::new();
        for f in expected_frames(&opts) {
            let entry = want
                .entry(f[..f.len().min(case.keep)].to_vec())
                .or_insert((f.len() as u32, 0));
            entry.1 += 1;
        }
        for r in &records {
            let entry = want
                .get_mut(&r.data)
                .unwrap_or_else(|| panic!("{}: a record that was never sent", case.name));
            assert!(entry.1 > 0, "{}: captured more often than sent", case.name);
            entry.1 -= 1;
            assert_eq!(r.orig_len, entry.0, "{}: original length", case.name);
        }
    }
}
