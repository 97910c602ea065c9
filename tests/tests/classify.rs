//! The XDP program on crafted frames, through BPF_PROG_TEST_RUN: each case
//! checks the verdict and the exact change of every counter.

use std::net::IpAddr;

use aya::programs::{TestRun as _, TestRunOptions};
use traffic::{
    kernel::Engine,
    lab::frame::{ETH_P_8021AD, ETH_P_8021Q, Fragment, FrameSpec, L4, arp_request},
    rules::{Action, Origin, RuleSet},
};
use traffic_common::Stats;

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// test_run refuses frames shorter than an Ethernet header (EINVAL).
const MIN_TEST_RUN_LEN: usize = 14;

fn engine(default: Action, rules: &[(Action, &str)]) -> Engine {
    let mut set = RuleSet::new(default);
    for &(action, cidr) in rules {
        set.add_str(action, cidr, Origin::Flag("test")).unwrap();
    }
    assert!(set.seal().is_empty());
    Engine::load(&set).expect("load the XDP program (needs root: run `cargo xtask test`)")
}

/// The rules most cases use.
fn standard() -> Engine {
    engine(
        Action::Pass,
        &[
            (Action::Drop, "192.0.2.0/24"),
            (Action::Pass, "192.0.2.128/25"),
            (Action::Capture, "203.0.113.0/24"),
            (Action::Drop, "2001:db8:bad::/48"),
            (Action::Capture, "2001:db8:c::/48"),
        ],
    )
}

/// Runs one frame and returns the verdict and the counter deltas.
fn run(engine: &Engine, frame: &[u8]) -> (u32, Stats) {
    let before = engine.stats().unwrap();
    let result = engine
        .program()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..TestRunOptions::default()
        })
        .unwrap_or_else(|e| panic!("test_run of a {}-byte frame: {e}", frame.len()));
    let after = engine.stats().unwrap();
    (result.return_value, after.since(&before))
}

#[derive(Clone, Copy, Debug)]
enum Outcome {
    NonIp,
    Malformed,
    V4,
    V6,
}

/// The deltas one frame of `len` bytes must cause.
fn expect(action: Action, outcome: Outcome, len: usize) -> Stats {
    let len = len as u64;
    let mut s = Stats {
        packets: 1,
        bytes: len,
        ..Stats::default()
    };
    match action {
        Action::Pass => (s.pass, s.pass_bytes) = (1, len),
        Action::Drop => (s.drop, s.drop_bytes) = (1, len),
        // A captured frame also writes one event (the ring never fills here).
        Action::Capture => (s.capture, s.capture_bytes, s.events) = (1, len, 1),
    }
    match outcome {
        Outcome::NonIp => s.non_ip = 1,
        Outcome::Malformed => s.malformed = 1,
        Outcome::V4 => (s.ipv4, s.ipv4_bytes) = (1, len),
        Outcome::V6 => (s.ipv6, s.ipv6_bytes) = (1, len),
    }
    s
}

fn verdict(action: Action) -> u32 {
    match action {
        Action::Drop => XDP_DROP,
        Action::Pass | Action::Capture => XDP_PASS,
    }
}

#[track_caller]
fn check(engine: &Engine, frame: &[u8], action: Action, outcome: Outcome) {
    let (ret, delta) = run(engine, frame);
    assert_ne!(ret, XDP_ABORTED, "the program aborted on {frame:02x?}");
    assert_eq!(
        (ret, delta),
        (verdict(action), expect(action, outcome, frame.len())),
        "{action:?}/{outcome:?} for a {}-byte frame",
        frame.len()
    );
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn udp(src: &str, dst: &str) -> FrameSpec {
    FrameSpec::udp(ip(src), ip(dst))
}

#[test]
fn ipv4_follows_the_longest_prefix() {
    let e = standard();
    check(
        &e,
        &udp("192.0.2.1", "198.51.100.1").build(),
        Action::Drop,
        Outcome::V4,
    );
    check(
        &e,
        &udp("192.0.2.200", "198.51.100.1").build(),
        Action::Pass,
        Outcome::V4,
    );
    check(
        &e,
        &udp("203.0.113.9", "198.51.100.1").build(),
        Action::Capture,
        Outcome::V4,
    );
    check(
        &e,
        &udp("198.51.100.7", "192.0.2.1").build(),
        Action::Pass,
        Outcome::V4,
    );
}

#[test]
fn ipv4_options_are_skipped_by_ihl() {
    let e = standard();
    for options in [4, 8, 40] {
        for (src, action) in [
            ("192.0.2.1", Action::Drop),
            ("203.0.113.1", Action::Capture),
        ] {
            let mut spec = udp(src, "198.51.100.1");
            spec.ipv4_options = vec![1; options]; // NOPs
            spec.payload_len = 3;
            check(&e, &spec.build(), action, Outcome::V4);
        }
    }
    // TCP behind 40 bytes of options, too.
    let mut spec = udp("192.0.2.1", "198.51.100.1");
    spec.ipv4_options = vec![1; 40];
    spec.l4 = L4::TcpSyn { sport: 1, dport: 2 };
    check(&e, &spec.build(), Action::Drop, Outcome::V4);
}

#[test]
fn ipv6_follows_the_longest_prefix() {
    let e = standard();
    check(
        &e,
        &udp("2001:db8:bad::1", "2001:db8::1").build(),
        Action::Drop,
        Outcome::V6,
    );
    check(
        &e,
        &udp("2001:db8:c::1", "2001:db8::1").build(),
        Action::Capture,
        Outcome::V6,
    );
    check(
        &e,
        &udp("2001:db8:1::1", "2001:db8::1").build(),
        Action::Pass,
        Outcome::V6,
    );
    let mut tcp = udp("2001:db8:bad::2", "2001:db8::1");
    tcp.l4 = L4::TcpSyn { sport: 1, dport: 2 };
    check(&e, &tcp.build(), Action::Drop, Outcome::V6);
    let mut echo = udp("2001:db8:c::2", "2001:db8::1");
    echo.l4 = L4::Echo;
    check(&e, &echo.build(), Action::Capture, Outcome::V6);
}

#[test]
fn vlan_tags_are_looked_through() {
    let e = standard();
    for vlans in [
        vec![(ETH_P_8021Q, 100)],
        vec![(ETH_P_8021AD, 10), (ETH_P_8021Q, 20)],
        vec![(ETH_P_8021Q, 10), (ETH_P_8021Q, 20)],
    ] {
        let mut v4 = udp("192.0.2.3", "198.51.100.1");
        v4.vlans = vlans.clone();
        check(&e, &v4.build(), Action::Drop, Outcome::V4);
        let mut v6 = udp("2001:db8:c::3", "2001:db8::1");
        v6.vlans = vlans;
        check(&e, &v6.build(), Action::Capture, Outcome::V6);
    }
    // A third tag is past what we parse: the frame is not classified.
    let mut three = udp("192.0.2.3", "198.51.100.1");
    three.vlans = vec![(ETH_P_8021AD, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)];
    check(&e, &three.build(), Action::Pass, Outcome::NonIp);
}

#[test]
fn fragments_are_classified_by_source_and_later_ones_have_no_ports() {
    let e = standard();
    let mut first = udp("192.0.2.9", "198.51.100.1");
    first.payload_len = 32;
    first.fragment = Some(Fragment {
        offset: 0,
        more: true,
    });
    check(&e, &first.build(), Action::Drop, Outcome::V4);

    // A later fragment carries no UDP header: 3 bytes of data are fine.
    let mut later = udp("203.0.113.9", "198.51.100.1");
    later.l4 = L4::Raw(17);
    later.payload_len = 3;
    later.fragment = Some(Fragment {
        offset: 5,
        more: false,
    });
    check(&e, &later.build(), Action::Capture, Outcome::V4);

    // The same 3 bytes as a first fragment are a truncated UDP header.
    let mut tiny_first = later.clone();
    tiny_first.fragment = Some(Fragment {
        offset: 0,
        more: true,
    });
    check(&e, &tiny_first.build(), Action::Capture, Outcome::Malformed);

    let mut v6_later = udp("2001:db8:bad::9", "2001:db8::1");
    v6_later.l4 = L4::Raw(17);
    v6_later.payload_len = 3;
    v6_later.fragment = Some(Fragment {
        offset: 100,
        more: true,
    });
    check(&e, &v6_later.build(), Action::Drop, Outcome::V6);

    let mut v6_first = udp("2001:db8:bad::9", "2001:db8::1");
    v6_first.fragment = Some(Fragment {
        offset: 0,
        more: true,
    });
    check(&e, &v6_first.build(), Action::Drop, Outcome::V6);
}

#[test]
fn non_ip_frames_pass_even_with_a_drop_default() {
    let e = engine(Action::Drop, &[(Action::Pass, "192.0.2.0/24")]);
    let arp = arp_request([2, 0, 0, 0, 0, 1], [192, 0, 2, 1], [192, 0, 2, 2]);
    check(&e, &arp, Action::Pass, Outcome::NonIp);
    // ...while IP from elsewhere gets the default.
    check(
        &e,
        &udp("198.51.100.1", "192.0.2.1").build(),
        Action::Drop,
        Outcome::V4,
    );
    check(
        &e,
        &udp("2001:db8::5", "2001:db8::1").build(),
        Action::Drop,
        Outcome::V6,
    );
    check(
        &e,
        &udp("192.0.2.77", "198.51.100.1").build(),
        Action::Pass,
        Outcome::V4,
    );
}

#[test]
fn bad_headers_are_malformed_and_never_abort() {
    let e = standard();
    let good = udp("192.0.2.1", "198.51.100.1").build();

    // IHL below 5 (issue 9: it used to bypass every rule): malformed, but
    // the fixed header and its source are there, so the drop rule applies,
    // for every IHL from 0 to 4; a capture rule captures it.
    for ihl in 0..5u8 {
        let mut bad_ihl = good.clone();
        bad_ihl[14] = 0x40 | ihl;
        check(&e, &bad_ihl, Action::Drop, Outcome::Malformed);
    }
    let mut captured = udp("203.0.113.9", "198.51.100.1").build();
    captured[14] = 0x44;
    check(&e, &captured, Action::Capture, Outcome::Malformed);

    // Version 6 in an IPv4 EtherType.
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    check(&e, &bad_version, Action::Pass, Outcome::Malformed);

    // A total length longer than the frame: the source is readable, so the
    // rule applies, and the frame counts as malformed.
    let mut long_total = good.clone();
    long_total[16..18].copy_from_slice(&500u16.to_be_bytes());
    check(&e, &long_total, Action::Drop, Outcome::Malformed);

    // A total length shorter than the header.
    let mut short_total = good.clone();
    short_total[16..18].copy_from_slice(&10u16.to_be_bytes());
    check(&e, &short_total, Action::Drop, Outcome::Malformed);

    // Ethernet padding after the datagram is normal.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 18]);
    check(&e, &padded, Action::Drop, Outcome::V4);

    // TCP with a data offset below its fixed header.
    let mut tcp = udp("203.0.113.1", "198.51.100.1");
    tcp.l4 = L4::TcpSyn { sport: 1, dport: 2 };
    let mut bad_doff = tcp.build();
    bad_doff[14 + 20 + 12] = 0x40;
    check(&e, &bad_doff, Action::Capture, Outcome::Malformed);

    // IPv6 with a version nibble of 4.
    let mut v6 = udp("2001:db8:bad::1", "2001:db8::1").build();
    v6[14] = 0x40;
    check(&e, &v6, Action::Pass, Outcome::Malformed);
}

/// What the program must make of `frame[..len]`, when the full frame is
/// `full` bytes, its IP header starts at `l3` and the fixed part of that
/// header (which holds the source address) is `fixed` bytes long.
fn truncated_outcome(
    len: usize,
    full: usize,
    l3: usize,
    fixed: usize,
    rule: Action,
    family: Outcome,
) -> (Action, Outcome) {
    if len < l3 + fixed {
        // No complete source address: not classified, passed.
        (Action::Pass, Outcome::Malformed)
    } else if len < full {
        // The source is there, so its rule applies; the rest is missing.
        (rule, Outcome::Malformed)
    } else {
        (rule, family)
    }
}

#[test]
fn frames_truncated_at_every_byte_are_counted_and_passed_unless_a_rule_drops_them() {
    let e = standard();
    let mut cases = Vec::new();

    let mut v4 = udp("192.0.2.1", "198.51.100.1");
    v4.payload_len = 6;
    cases.push((v4.build(), 14, 20, Action::Drop, Outcome::V4));

    let mut v4_vlan = udp("203.0.113.1", "198.51.100.1");
    v4_vlan.vlans = vec![(ETH_P_8021AD, 1), (ETH_P_8021Q, 2)];
    v4_vlan.ipv4_options = vec![1; 8];
    v4_vlan.l4 = L4::TcpSyn { sport: 1, dport: 2 };
    cases.push((v4_vlan.build(), 22, 20, Action::Capture, Outcome::V4));

    let mut v6 = udp("2001:db8:bad::1", "2001:db8::1");
    v6.l4 = L4::TcpSyn { sport: 1, dport: 2 };
    cases.push((v6.build(), 14, 40, Action::Drop, Outcome::V6));

    let mut v6_frag = udp("2001:db8:c::1", "2001:db8::1");
    v6_frag.vlans = vec![(ETH_P_8021Q, 7)];
    v6_frag.fragment = Some(Fragment {
        offset: 0,
        more: true,
    });
    cases.push((v6_frag.build(), 18, 40, Action::Capture, Outcome::V6));

    for (frame, l3, hdr, rule, family) in cases {
        let full = frame.len();
        for len in MIN_TEST_RUN_LEN..=full {
            let (action, outcome) = truncated_outcome(len, full, l3, hdr, rule, family);
            let (ret, delta) = run(&e, &frame[..len]);
            assert_eq!(
                (ret, delta),
                (verdict(action), expect(action, outcome, len)),
                "{family:?} frame of {full} bytes cut to {len}"
            );
        }
    }
}

/// Runs a UDP frame from `src` through the program and checks that it gets
/// the action the rule set's own lookup gives, counted once as IPv4 or
/// IPv6; returns that action.
#[track_caller]
fn agrees_with_rule_set(e: &Engine, set: &RuleSet, src: IpAddr, context: &str) -> Action {
    let dst = if src.is_ipv4() {
        "203.0.113.1"
    } else {
        "2001:db8::1"
    };
    let frame = FrameSpec::udp(src, ip(dst)).build();
    let want = set.action_for(src);
    let family = if src.is_ipv4() {
        Outcome::V4
    } else {
        Outcome::V6
    };
    let (ret, delta) = run(e, &frame);
    assert_eq!(
        (ret, delta),
        (verdict(want), expect(want, family, frame.len())),
        "source {src}{context}"
    );
    want
}

#[test]
fn the_kernel_agrees_with_the_userspace_model_of_longest_prefix_match() {
    let rules = [
        (Action::Drop, "192.0.2.0/24"),
        (Action::Pass, "192.0.2.64/26"),
        (Action::Capture, "192.0.2.64/28"),
        (Action::Drop, "192.0.2.70"),
        (Action::Capture, "198.51.100.0/23"),
        (Action::Drop, "0.0.0.0/1"),
        (Action::Drop, "2001:db8::/32"),
        (Action::Pass, "2001:db8:0:1::/64"),
        (Action::Capture, "2001:db8:0:1::/120"),
    ];
    let mut set = RuleSet::new(Action::Pass);
    for (action, cidr) in rules {
        set.add_str(action, cidr, Origin::Flag("test")).unwrap();
    }
    assert!(set.seal().is_empty());
    let e = Engine::load(&set).unwrap();
    let mut addrs: Vec<IpAddr> = (0..=255u8).map(|i| IpAddr::from([192, 0, 2, i])).collect();
    addrs.extend((0..=255u8).map(|i| IpAddr::from([198, 51, 100 + (i % 3), i])));
    addrs.extend(["240.0.0.1", "127.0.0.1", "128.0.0.1", "255.255.255.255"].map(ip));
    for i in 0..=255u16 {
        addrs.push(IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, i]));
        addrs.push(IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 1, i]));
        addrs.push(IpAddr::from([0x2001, 0xdb8, i, 0, 0, 0, 0, 1]));
    }
    addrs.push(ip("2001:db9::1"));
    for src in addrs {
        agrees_with_rule_set(&e, &set, src, "");
    }
}

/// Collects the XDP program's log lines.
#[derive(Clone, Default)]
struct Lines(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl log::Log for Lines {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(traffic::source::explain::render(&record.args().to_string()));
    }

    fn flush(&self) {}
}

#[test]
fn explain_says_why_for_the_first_n_frames() {
    // One CPU, so that the per-CPU budget of explanations is the only one.
    // SAFETY: an all-zero cpu_set_t is valid; CPU_SET fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
    let mut set = RuleSet::new(Action::Pass);
    set.add_str(Action::Drop, "192.0.2.0/24", Origin::Flag("test"))
        .unwrap();
    assert!(set.seal().is_empty());
    let settings = traffic::kernel::Settings {
        explain: 3,
        ..traffic::kernel::Settings::default()
    };
    let mut e = Engine::load_with(&set, &settings).unwrap();
    let lines = Lines::default();
    let mut log = e.take_log(lines.clone()).unwrap();
    let good = udp("192.0.2.1", "198.51.100.1").build();
    let mut ihl = good.clone();
    ihl[14] = 0x44;
    let arp = arp_request([2, 0, 0, 0, 0, 1], [192, 0, 2, 1], [192, 0, 2, 2]);
    let mut vlans = udp("192.0.2.1", "198.51.100.1");
    vlans.vlans = vec![(ETH_P_8021Q, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)];
    for frame in [&good, &ihl, &arp, &vlans.build(), &ihl, &arp] {
        run(&e, frame);
    }
    log.flush();
    let got = lines.0.lock().unwrap().clone();
    assert_eq!(
        got,
        [
            "malformed frame of 42 bytes on queue 0: IPv4 header length (IHL) below 5; dropped",
            "non-IP frame of 42 bytes on queue 0: the EtherType is neither IPv4 nor IPv6; passed",
            "non-IP frame of 54 bytes on queue 0: more than two VLAN tags; passed",
        ],
        "the well-formed frame is not explained, and only the first three are"
    );
}

/// Issue 11: longest-prefix semantics at every prefix length, nested on one
/// address, with and without a /0 rule, through test_run against the rule
/// set's own lookup (a different implementation from the kernel's table).
/// Flipping bit `k` of the address leaves exactly the prefixes shorter than
/// `k + 1` containing it, so each probe names one length.
#[test]
fn every_prefix_length_nests_in_the_kernel_as_in_the_rule_set() {
    let actions = [Action::Drop, Action::Pass, Action::Capture];
    let v4: u32 = 0xc000_0207; // 192.0.2.7
    let v6: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0007;
    for with_default_route in [true, false] {
        let first = u8::from(!with_default_route);
        let mut set = RuleSet::new(Action::Capture);
        for len in first..=32u8 {
            let net = v4 & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            let text = format!("{}/{len}", std::net::Ipv4Addr::from_bits(net));
            set.add_str(actions[usize::from(len) % 3], &text, Origin::Flag("test"))
                .unwrap();
        }
        for len in first..=128u8 {
            let net = v6 & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            let text = format!("{}/{len}", std::net::Ipv6Addr::from_bits(net));
            set.add_str(
                actions[usize::from(len + 1) % 3],
                &text,
                Origin::Flag("test"),
            )
            .unwrap();
        }
        assert!(set.seal().is_empty());
        let e = Engine::load(&set).unwrap();
        let mut probes: Vec<IpAddr> = (0..32)
            .map(|k| IpAddr::V4(std::net::Ipv4Addr::from_bits(v4 ^ (1 << k))))
            .collect();
        probes.push(IpAddr::V4(std::net::Ipv4Addr::from_bits(v4)));
        probes.extend((0..128).map(|k| IpAddr::V6(std::net::Ipv6Addr::from_bits(v6 ^ (1 << k)))));
        probes.push(IpAddr::V6(std::net::Ipv6Addr::from_bits(v6)));
        for src in probes {
            let context = format!(", /0 rule: {with_default_route}");
            agrees_with_rule_set(&e, &set, src, &context);
        }
    }
}

/// Issue 11: the kernel's walk of the table (strides chosen per node, IPv6
/// in two halves) against the rule set's own lookup, on rule sets dense and
/// sparse, nested at random lengths, inside 240.0.0.0/4 and 2001:db8::/32
/// (frames that never leave test_run).
#[test]
fn the_kernel_walks_dense_and_sparse_tables_as_the_rule_set_looks_up() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let actions = [Action::Drop, Action::Pass, Action::Capture];
    let v4_block = |r: u64| 0xf000_0000u32 | (r as u32 & 0x0fff_ffff);
    let v6_block = |a: u64, b: u64| {
        (0x2001_0db8u128 << 96) | ((u128::from(a) << 64 | u128::from(b)) & (u128::MAX >> 32))
    };
    let mut set = RuleSet::new(Action::Pass);
    let add = |set: &mut RuleSet, ip: IpAddr, len: u8, a: u64| {
        let masked = match ip {
            IpAddr::V4(v) => IpAddr::V4(std::net::Ipv4Addr::from_bits(
                v.to_bits() & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0),
            )),
            IpAddr::V6(v) => IpAddr::V6(std::net::Ipv6Addr::from_bits(
                v.to_bits() & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0),
            )),
        };
        set.add_str(
            actions[(a % 3) as usize],
            &format!("{masked}/{len}"),
            Origin::Flag("test"),
        )
        .unwrap();
    };
    let mut probes = Vec::new();
    for _ in 0..1500 {
        let v4 = IpAddr::V4(std::net::Ipv4Addr::from_bits(v4_block(next())));
        add(&mut set, v4, 4 + (next() % 29) as u8, next());
        probes.push(v4);
        let v6 = IpAddr::V6(std::net::Ipv6Addr::from_bits(v6_block(next(), next())));
        add(&mut set, v6, 32 + (next() % 97) as u8, next());
        probes.push(v6);
    }
    // Dense: every /28 of 240.16.0.0/16 and every /52 of 2001:db8:ab00::/40.
    for i in 0..4096u32 {
        let v4 = IpAddr::V4(std::net::Ipv4Addr::from_bits(0xf010_0000 | (i << 4)));
        add(&mut set, v4, 28, u64::from(i));
        probes.push(IpAddr::V4(std::net::Ipv4Addr::from_bits(
            0xf010_0000 | (i << 4) | (next() as u32 & 0xf),
        )));
        let v6 = (0x2001_0db8_ab00u128 << 80) | (u128::from(i) << 76);
        add(
            &mut set,
            IpAddr::V6(std::net::Ipv6Addr::from_bits(v6)),
            52,
            u64::from(i) + 1,
        );
        probes.push(IpAddr::V6(std::net::Ipv6Addr::from_bits(
            v6 | (u128::from(next()) & 0xffff),
        )));
    }
    set.seal();
    let e = Engine::load(&set).unwrap();
    let mut seen = std::collections::HashSet::new();
    for src in probes {
        seen.insert(agrees_with_rule_set(&e, &set, src, ""));
    }
    assert_eq!(seen.len(), 3, "every action was probed");
}

/// Issue 12: the program logs each IP frame's source for the loader to
/// count ([`traffic_common::top`]). Through test_run on one CPU: every
/// frame's source and length arrive exactly, IPv4 and IPv6, masked to the
/// `--top-prefix`; a log with no room counts the frame untracked (and
/// nothing else is lost); once read, the log has room again; and sources
/// past `--top-capacity` in an interval are counted untracked by the loader.
#[test]
fn the_log_of_sources_counts_every_frame_once_and_a_full_log_untracked() {
    use std::collections::HashMap;

    use traffic::kernel::{Settings, engine::TopSettings};
    use traffic_common::{Count, TopKey, top::LOG_UNITS};

    // One CPU, so that one log fills.
    // SAFETY: a CPU set on the stack, for this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, size_of_val(&set), &set), 0);
    }
    let set = RuleSet::new(Action::Pass);
    let load = |capacity| {
        let settings = Settings {
            top: Some(TopSettings {
                capacity,
                prefix_v4: 24,
                prefix_v6: 64,
            }),
            ..Settings::default()
        };
        Engine::load_with(&set, &settings).unwrap()
    };
    let mut e = load(1 << 20);
    let take = |e: &mut Engine| {
        let mut got = HashMap::new();
        e.take_sources(&mut |key: &TopKey, count: Count| {
            assert!(
                got.insert(*key, count).is_none(),
                "{key:?} handed out twice"
            );
        });
        got
    };

    // Sources in 256 /24s, frames of two lengths; IPv6 in 4 /64s.
    let v4 = |i: u32| {
        let mut f = udp(&format!("240.{}.0.{}", i % 256, i % 251), "198.51.100.1");
        f.payload_len = 18 + (i % 2) as usize * 100;
        f.build()
    };
    let v6 = |i: u32| {
        udp(
            &format!("2001:db8:0:{:x}::{:x}", i % 4, i + 1),
            "2001:db8::1",
        )
        .build()
    };
    let mut want: HashMap<TopKey, Count> = HashMap::new();
    let mut expect = |key: TopKey, frame: &[u8]| {
        let c = want.entry(key).or_default();
        c.packets += 1;
        c.bytes += frame.len() as u64;
    };
    let before = e.stats().unwrap();
    for i in 0..3000 {
        let f = v4(i);
        run(&e, &f);
        expect(TopKey::v4(0xf000_0000 | (i % 256) << 16), &f);
    }
    for i in 0..100 {
        let f = v6(i);
        run(&e, &f);
        expect(
            TopKey {
                words: [0x2001_0db8, i % 4, 0, 0],
            },
            &f,
        );
    }
    let got = take(&mut e);
    assert_eq!(got.len(), want.len(), "256 IPv4 /24s and 4 IPv6 /64s");
    for (key, count) in &want {
        assert_eq!(got.get(key), Some(count), "{}", key.addr());
    }
    assert_eq!(take(&mut e), HashMap::new(), "taken once");

    // A full log: one unit a frame fills it; the rest are untracked.
    let f = v4(1);
    for _ in 0..LOG_UNITS + 10 {
        run(&e, &f);
    }
    let got = take(&mut e);
    let all: u64 = got.values().map(|c| c.packets).sum();
    assert_eq!(all, u64::from(LOG_UNITS));
    let s = e.stats().unwrap().since(&before);
    assert_eq!(s.untracked, 10);
    assert_eq!(s.untracked_bytes, 10 * f.len() as u64);
    assert_eq!(s.packets, 3100 + u64::from(LOG_UNITS) + 10);
    // Read, it has room again.
    let (_, s) = run(&e, &f);
    assert_eq!(s.untracked, 0);
    assert_eq!(take(&mut e).values().map(|c| c.packets).sum::<u64>(), 1);

    // An IPv6 source whose three units wrap around the log's end: IPv4
    // units up to one short of it, then the IPv6 source.
    let logged = 3000 + 3 * 100 + LOG_UNITS + 1;
    let to_end = LOG_UNITS - 1 - logged % LOG_UNITS;
    for _ in 0..to_end {
        run(&e, &f);
    }
    let got = take(&mut e);
    assert_eq!(
        got.values().map(|c| c.packets).sum::<u64>(),
        u64::from(to_end)
    );
    let f6 = v6(7);
    run(&e, &f6);
    let got = take(&mut e);
    let wrapped = TopKey {
        words: [0x2001_0db8, 3, 0, 0],
    };
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got.get(&wrapped),
        Some(&Count {
            packets: 1,
            bytes: f6.len() as u64
        })
    );

    // The loader keeps --top-capacity sources an interval.
    let mut e = load(100);
    for i in 0..300 {
        run(&e, &v4(i));
    }
    let got = take(&mut e);
    assert_eq!(got.len(), 100);
    let s = e.stats().unwrap();
    assert_eq!(
        s.untracked + got.values().map(|c| c.packets).sum::<u64>(),
        300
    );
    assert!(s.untracked > 0);
}
