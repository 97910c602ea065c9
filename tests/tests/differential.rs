//! The userspace parser against the XDP program, frame by frame.
//!
//! A million frames are generated with etherparse's headers and then
//! mutated: VLAN stacks of up to three tags, IPv4 options and fragments,
//! IPv6 chains of hop-by-hop, routing, destination-options, fragment and AH
//! headers, TCP data offsets, truncation at every length, corrupted length
//! and version fields, Ethernet padding. Each runs once through
//! `BPF_PROG_TEST_RUN` on the real program with `--sample 1`, so that every
//! frame leaves an event, and through `traffic::packet::parse` with the rule
//! set's own lookup. The verdict, the action, the rule, the counter category,
//! the addresses, the protocol, the ports, the TCP flags, the VLAN and the
//! later-fragment flag must agree on every frame; a mismatch is printed as
//! hex.
//!
//! The same frames also go through etherparse's lax whole-packet slicer, to
//! measure how often it would describe a frame otherwise than the kernel
//! (printed, not asserted): the reason `packet` walks the headers itself.

use std::{net::IpAddr, time::Instant};

use aya::programs::{TestRun as _, TestRunOptions};
use etherparse::{
    EtherType, Ethernet2Header, IpAuthHeader, IpFragOffset, IpNumber, Ipv4Header, Ipv4Options,
    Ipv6FlowLabel, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, LaxNetSlice, LaxSlicedPacket,
    SingleVlanHeader, TcpHeader, TransportSlice, UdpHeader, VlanId,
};
use traffic::{
    kernel::{Engine, EventRing, Settings},
    packet::{self, Outcome, Packet},
    rules::{Action, Origin, RuleSet},
    source::ringbuf::decode,
};
use traffic_common::{EventHeader, NO_RULE, Stats, event_flags};

/// Frames run through both; the issue asks for at least a million.
const FRAMES: usize = 1_000_000;
/// test_run refuses frames shorter than an Ethernet header (EINVAL).
const MIN_TEST_RUN_LEN: usize = 14;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// xorshift64*: a fixed seed, so a failure can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Nested prefixes with every action, in the documentation ranges and the
/// reserved 240.0.0.0/4.
const RULES: [(Action, &str); 12] = [
    (Action::Drop, "192.0.2.0/24"),
    (Action::Pass, "192.0.2.128/25"),
    (Action::Capture, "192.0.2.200/32"),
    (Action::Capture, "198.51.100.0/24"),
    (Action::Drop, "203.0.113.0/26"),
    (Action::Drop, "240.0.0.0/8"),
    (Action::Capture, "240.1.0.0/16"),
    (Action::Drop, "2001:db8::/32"),
    (Action::Capture, "2001:db8:c::/48"),
    (Action::Pass, "2001:db8:c:1::/64"),
    (Action::Capture, "2001:db8:bad::/48"),
    (Action::Drop, "2001:db8:bad::1/128"),
];

fn source(rng: &mut Rng, v6: bool) -> IpAddr {
    if v6 {
        let prefixes: [u128; 4] = [
            0x2001_0db8_0000_0000_0000_0000_0000_0000,
            0x2001_0db8_000c_0000_0000_0000_0000_0000,
            0x2001_0db8_000c_0001_0000_0000_0000_0000,
            0x2001_0db8_0bad_0000_0000_0000_0000_0000,
        ];
        let host = if rng.chance(4) {
            1
        } else {
            u128::from(rng.next()) & 0xffff
        };
        IpAddr::from((rng.pick(&prefixes) | host).to_be_bytes())
    } else {
        let prefixes: [u32; 5] = [
            0xc000_0200,
            0xc633_6400,
            0xcb00_7100,
            0xf000_0000,
            0xf001_0000,
        ];
        let host = if rng.chance(2) {
            rng.next() as u32 & 0xff
        } else {
            rng.next() as u32 & 0xffff
        };
        IpAddr::from((rng.pick(&prefixes) | host).to_be_bytes())
    }
}

/// A transport header and payload for `proto`.
fn transport(rng: &mut Rng, proto: IpNumber) -> Vec<u8> {
    let mut out = Vec::new();
    match proto {
        IpNumber::TCP => {
            let mut tcp = TcpHeader::new(
                rng.next() as u16,
                rng.next() as u16,
                rng.next() as u32,
                64240,
            );
            tcp.syn = rng.chance(2);
            tcp.ack = rng.chance(2);
            tcp.fin = rng.chance(4);
            tcp.psh = rng.chance(4);
            let options = rng.below(4) as usize * 4;
            let _ = tcp.set_options_raw(&vec![1u8; options]);
            out.extend_from_slice(&tcp.to_bytes());
        }
        IpNumber::UDP => {
            let udp = UdpHeader {
                source_port: rng.next() as u16,
                destination_port: rng.next() as u16,
                length: 0,
                checksum: 0,
            };
            out.extend_from_slice(&udp.to_bytes());
        }
        IpNumber::ICMP | IpNumber::IPV6_ICMP => out.extend(rng.bytes(8)),
        _ => {}
    }
    let payload = rng.below(48) as usize;
    out.extend(rng.bytes(payload));
    out
}

fn l4_proto(rng: &mut Rng, v6: bool) -> IpNumber {
    let icmp = if v6 {
        IpNumber::IPV6_ICMP
    } else {
        IpNumber::ICMP
    };
    rng.pick(&[
        IpNumber::TCP,
        IpNumber::TCP,
        IpNumber::UDP,
        IpNumber::UDP,
        icmp,
        IpNumber(47),
    ])
}

fn ipv4(rng: &mut Rng) -> Vec<u8> {
    let proto = l4_proto(rng, false);
    let l4 = transport(rng, proto);
    let src = match source(rng, false) {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => unreachable!(),
    };
    let mut ip = Ipv4Header::new(0, 64, proto, src, [198, 51, 100, 1]).expect("small payload");
    if rng.chance(4) {
        let len = rng.below(11) as usize * 4;
        ip.options = Ipv4Options::try_from(&vec![1u8; len][..]).expect("a multiple of 4 up to 40");
    }
    match rng.below(6) {
        0 => ip.more_fragments = true,
        1 => {
            ip.fragment_offset =
                IpFragOffset::try_new(1 + rng.below(0x1ffe) as u16).expect("13 bits");
            ip.more_fragments = rng.chance(2);
        }
        _ => {}
    }
    ip.total_len = (ip.header_len() + l4.len()) as u16;
    let mut out = ip.to_bytes().to_vec();
    out.extend(l4);
    out
}

fn ipv6(rng: &mut Rng) -> Vec<u8> {
    let proto = l4_proto(rng, true);
    let mut body = transport(rng, proto);
    // Extension headers, built innermost first so each names the next.
    let mut next = proto;
    let chain = match rng.below(4) {
        0 => 0,
        1 => 1,
        2 => 2 + rng.below(2),
        _ => 4 + rng.below(3),
    };
    for _ in 0..chain {
        let kind = rng.pick(&[
            IpNumber::IPV6_HEADER_HOP_BY_HOP,
            IpNumber::IPV6_ROUTE_HEADER,
            IpNumber::IPV6_DESTINATION_OPTIONS,
            IpNumber::IPV6_FRAGMENTATION_HEADER,
            IpNumber::AUTHENTICATION_HEADER,
        ]);
        let header: Vec<u8> = match kind {
            IpNumber::IPV6_FRAGMENTATION_HEADER => {
                let offset = if rng.chance(3) {
                    1 + rng.below(0x1ffe) as u16
                } else {
                    0
                };
                Ipv6FragmentHeader::new(
                    next,
                    IpFragOffset::try_new(offset).expect("13 bits"),
                    rng.chance(2),
                    rng.next() as u32,
                )
                .to_bytes()
                .to_vec()
            }
            IpNumber::AUTHENTICATION_HEADER => {
                let icv_len = rng.below(4) as usize * 4;
                let icv = rng.bytes(icv_len);
                IpAuthHeader::new(next, rng.next() as u32, rng.next() as u32, &icv)
                    .expect("a multiple of 4")
                    .to_bytes()
                    .to_vec()
            }
            _ => {
                // Long options now and then, so chains reach past 1024 bytes.
                let words = if rng.chance(8) {
                    20 + rng.below(60)
                } else {
                    rng.below(3)
                };
                let payload = vec![0u8; 6 + 8 * words as usize];
                Ipv6RawExtHeader::new_raw(next, &payload)
                    .expect("6 + 8n bytes")
                    .to_bytes()
                    .to_vec()
            }
        };
        let mut with = header;
        with.extend(body);
        body = with;
        next = kind;
    }
    let src = match source(rng, true) {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => unreachable!(),
    };
    let ip = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::try_new(rng.below(1 << 20) as u32).expect("20 bits"),
        payload_length: body.len() as u16,
        next_header: next,
        hop_limit: 64,
        source: src,
        destination: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    };
    let mut out = ip.to_bytes().to_vec();
    out.extend(body);
    out
}

/// A well-formed frame: Ethernet, up to three VLAN tags, an IP packet (or
/// now and then ARP or an unknown EtherType).
fn frame(rng: &mut Rng) -> Vec<u8> {
    let (ether_type, l3) = match rng.below(20) {
        0 => (EtherType::ARP, rng.bytes(28)),
        1 => {
            let len = rng.below(60) as usize;
            (EtherType(0x88b5), rng.bytes(len))
        }
        2..=10 => (EtherType::IPV4, ipv4(rng)),
        _ => (EtherType::IPV6, ipv6(rng)),
    };
    let tags = match rng.below(10) {
        0..=5 => 0,
        6 | 7 => 1,
        8 => 2,
        _ => 3,
    };
    let tpids: Vec<EtherType> = (0..tags)
        .map(|_| rng.pick(&[EtherType::VLAN_TAGGED_FRAME, EtherType::PROVIDER_BRIDGING]))
        .collect();
    let mut out = Ethernet2Header {
        source: [2, 0, 0, 0, 0, 1],
        destination: [2, 0, 0, 0, 0, 2],
        ether_type: tpids.first().copied().unwrap_or(ether_type),
    }
    .to_bytes()
    .to_vec();
    for i in 0..tags {
        let tag = SingleVlanHeader {
            pcp: Default::default(),
            drop_eligible_indicator: false,
            vlan_id: VlanId::try_new(rng.below(4095) as u16).expect("12 bits"),
            ether_type: tpids.get(i + 1).copied().unwrap_or(ether_type),
        };
        out.extend_from_slice(&tag.to_bytes());
    }
    out.extend(l3);
    if rng.chance(8) {
        // Ethernet padding after the datagram.
        let pad = rng.below(20) as usize;
        out.extend(rng.bytes(pad));
    }
    out
}

/// Where the IP header starts, if the EtherType chain says IP.
fn l3_offset(f: &[u8]) -> Option<(usize, u16)> {
    let mut at = 12;
    for _ in 0..4 {
        let ty = u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]);
        if ty == 0x8100 || ty == 0x88a8 {
            at += 4;
            continue;
        }
        return Some((at + 2, ty));
    }
    None
}

/// Corrupts a field the parsers depend on.
fn mutate(rng: &mut Rng, f: &mut Vec<u8>) {
    let Some((l3, ty)) = l3_offset(f) else {
        return;
    };
    let set16 = |f: &mut Vec<u8>, at: usize, v: u16| {
        if at + 2 <= f.len() {
            f[at..at + 2].copy_from_slice(&v.to_be_bytes());
        }
    };
    let jitter = |rng: &mut Rng, v: u16| -> u16 {
        match rng.below(3) {
            0 => rng.next() as u16,
            1 => v.wrapping_add(rng.below(16) as u16),
            _ => v.wrapping_sub(rng.below(16) as u16),
        }
    };
    match (ty, rng.below(4)) {
        (0x0800, 0) if l3 < f.len() => {
            // IHL, or the version with it.
            f[l3] = if rng.chance(2) {
                0x40 | (rng.next() as u8 & 0x0f)
            } else {
                rng.next() as u8
            };
        }
        (0x0800, 1) if l3 + 4 <= f.len() => {
            let total = u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]);
            let v = jitter(rng, total);
            set16(f, l3 + 2, v);
        }
        (0x0800, 2) if l3 + 20 <= f.len() => {
            // The transport header's first bytes: TCP's data offset, or the
            // protocol itself.
            let ihl = usize::from(f[l3] & 0x0f) * 4;
            if rng.chance(2) {
                f[l3 + 9] = rng.pick(&[6, 17, 1, 47, 0]);
            } else if l3 + ihl + 13 < f.len() {
                f[l3 + ihl + 12] = rng.next() as u8;
            }
        }
        (0x86dd, 0) if l3 < f.len() => f[l3] = rng.next() as u8,
        (0x86dd, 1) if l3 + 6 <= f.len() => {
            let payload = u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]);
            let v = jitter(rng, payload);
            set16(f, l3 + 4, v);
        }
        (0x86dd, 2) if l3 + 41 < f.len() => {
            // An extension header's length or next-header byte.
            let at = l3 + 40 + rng.below(2) as usize;
            f[at] = rng.next() as u8;
        }
        (_, _) => {
            // Any byte of the headers.
            let end = f.len().min(l3 + 80);
            if end > 12 {
                let at = 12 + rng.below((end - 12) as u64) as usize;
                f[at] = rng.next() as u8;
            }
        }
    }
}

/// What the parser and the rule set say the program does with `frame`.
fn expected(rules: &RuleSet, frame: &[u8]) -> (Packet, Action, u32) {
    let p = packet::parse(frame);
    let (action, rule) = match p.src.filter(|_| p.ip_version != 0) {
        Some(src) => rules
            .lookup(src)
            .map_or((rules.default_action(), NO_RULE), |(id, r)| {
                (r.action, id as u32)
            }),
        None => (Action::Pass, NO_RULE),
    };
    (p, action, rule)
}

/// How etherparse's lax slicer describes `frame`: category, source, ports.
fn lax_view(frame: &[u8]) -> (Outcome, Option<IpAddr>, Option<(u16, u16)>) {
    let Ok(p) = LaxSlicedPacket::from_ethernet(frame) else {
        return (Outcome::Malformed, None, None);
    };
    let (outcome, src) = match &p.net {
        Some(LaxNetSlice::Ipv4(s)) => (Outcome::Ipv4, Some(IpAddr::V4(s.header().source_addr()))),
        Some(LaxNetSlice::Ipv6(s)) => (Outcome::Ipv6, Some(IpAddr::V6(s.header().source_addr()))),
        _ if p.stop_err.is_some() => (Outcome::Malformed, None),
        _ => (Outcome::NonIp, None),
    };
    let outcome = if src.is_some() && p.stop_err.is_some() {
        Outcome::Malformed
    } else {
        outcome
    };
    let ports = match &p.transport {
        Some(TransportSlice::Tcp(t)) => Some((t.source_port(), t.destination_port())),
        Some(TransportSlice::Udp(u)) => Some((u.source_port(), u.destination_port())),
        _ => None,
    };
    (outcome, src, ports)
}

fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

struct Kernel {
    engine: Engine,
    ring: EventRing,
}

impl Kernel {
    /// Runs each frame once; returns its verdict and event.
    fn run(&mut self, frames: &[Vec<u8>]) -> Vec<(u32, (EventHeader, Vec<u8>))> {
        let mut verdicts = Vec::with_capacity(frames.len());
        for f in frames {
            let out = self
                .engine
                .program()
                .test_run(TestRunOptions {
                    data_in: Some(f),
                    repeat: 1,
                    ..TestRunOptions::default()
                })
                .unwrap_or_else(|e| panic!("test_run refused {}: {e}", hex(f)));
            verdicts.push(out.return_value);
        }
        let mut events = Vec::with_capacity(frames.len());
        self.ring.read(|record| {
            let ev = decode(record).expect("a well-formed record");
            events.push((ev.header, ev.data.to_vec()));
        });
        assert_eq!(
            events.len(),
            frames.len(),
            "with --sample 1 every frame leaves exactly one event"
        );
        verdicts.into_iter().zip(events).collect()
    }
}

/// What the frames checked so far add up to.
#[derive(Default)]
struct Tally {
    /// The counters the parser and the rule set predict.
    want: Stats,
    mismatches: Vec<String>,
    lax_disagrees: u64,
    checked: usize,
}

impl Tally {
    /// Runs `batch` through the kernel and compares each frame; empties it.
    fn check(&mut self, rules: &RuleSet, kernel: &mut Kernel, batch: &mut Vec<Vec<u8>>) {
        for (f, (verdict, (event, data))) in batch.iter().zip(kernel.run(batch)) {
            let (p, action, rule) = expected(rules, f);
            // The program's verdict on the frame: outcome, family and
            // fragment, as event flags; every frame is sampled.
            let got = event.flags & !event_flags::SAMPLED;
            let cut = f.len().min(data.len());
            let want_verdict = if action == Action::Drop {
                XDP_DROP
            } else {
                XDP_PASS
            };
            let got_action = Action::from_kernel(u32::from(event.action));
            if got != p.flags()
                || data.as_slice() != &f[..cut]
                || event.wire_len as usize != f.len()
                || Packet::from_capture(f, f.len() as u32, got) != p
                || verdict != want_verdict
                || got_action != Some(action)
                || event.rule_id != rule
            {
                self.mismatches.push(format!(
                    "frame {}\n  kernel: verdict {verdict} action {got_action:?} rule {} flags {got:#x}\n  parser: verdict {want_verdict} action {action:?} rule {rule} flags {:#x} {p:?}",
                    hex(f),
                    event.rule_id,
                    p.flags(),
                ));
            }
            let (outcome, src, ports) = lax_view(f);
            let classified = matches!(p.outcome, Outcome::Ipv4 | Outcome::Ipv6);
            if outcome != p.outcome || (classified && src != p.src) || ports != p.ports {
                self.lax_disagrees += 1;
            }
            let w = &mut self.want;
            w.packets += 1;
            match p.outcome {
                Outcome::NonIp => w.non_ip += 1,
                Outcome::Malformed => w.malformed += 1,
                Outcome::Ipv4 => w.ipv4 += 1,
                Outcome::Ipv6 => w.ipv6 += 1,
            }
            match action {
                Action::Pass => w.pass += 1,
                Action::Drop => w.drop += 1,
                Action::Capture => w.capture += 1,
            }
        }
        self.checked += batch.len();
        batch.clear();
    }
}

#[test]
fn the_parser_agrees_with_the_kernel_on_a_million_mutated_frames() {
    let started = Instant::now();
    let mut rules = RuleSet::new(Action::Pass);
    for (action, cidr) in RULES {
        rules.add_str(action, cidr, Origin::Flag("test")).unwrap();
    }
    assert!(rules.seal().is_empty());
    let settings = Settings {
        sample_every: 1,
        ring_bytes: 16 << 20,
        ..Settings::default()
    };
    let mut engine = Engine::load_with(&rules, &settings)
        .expect("load the XDP program (needs root: run `cargo xtask test`)");
    let ring = engine.take_events().unwrap();
    let mut kernel = Kernel { engine, ring };

    let mut rng = Rng(0x7472_6166_6669_6321);
    let mut tally = Tally::default();
    let mut below_test_run = 0usize;
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(4096);
    while tally.checked + batch.len() < FRAMES {
        let base = frame(&mut rng);
        let mut variants = Vec::new();
        match rng.below(400) {
            // Truncation at every length.
            0 => variants.extend((0..base.len()).map(|n| base[..n].to_vec())),
            1..=140 => {
                let mut f = base.clone();
                for _ in 0..1 + rng.below(2) {
                    mutate(&mut rng, &mut f);
                }
                variants.push(f);
            }
            141..=200 => {
                let n = rng.below(base.len() as u64 + 1) as usize;
                variants.push(base[..n].to_vec());
            }
            _ => variants.push(base),
        }
        for f in variants {
            if f.len() < MIN_TEST_RUN_LEN {
                // The kernel never sees these; the parser must call them
                // malformed, as the program would.
                assert_eq!(packet::parse(&f).outcome, Outcome::Malformed);
                below_test_run += 1;
                continue;
            }
            batch.push(f);
            if batch.len() == 4096 {
                tally.check(&rules, &mut kernel, &mut batch);
            }
        }
    }
    tally.check(&rules, &mut kernel, &mut batch);
    let Tally {
        want,
        mismatches,
        lax_disagrees,
        checked,
    } = tally;

    let stats = kernel.engine.stats().unwrap();
    let counters = |s: &Stats| {
        [
            s.packets,
            s.pass,
            s.drop,
            s.capture,
            s.ipv4,
            s.ipv6,
            s.non_ip,
            s.malformed,
        ]
    };
    eprintln!(
        "differential: {checked} frames through test_run and the parser in {:.1} s \
         ({below_test_run} more below 14 bytes, parser only); {} mismatches; \
         etherparse's lax slicer would describe {lax_disagrees} of them otherwise \
         (category, source or ports); counters {:?}",
        started.elapsed().as_secs_f64(),
        mismatches.len(),
        counters(&stats),
    );
    assert!(checked >= FRAMES, "{checked}");
    assert!(
        mismatches.is_empty(),
        "{} of {checked} frames differ; the first ones:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );
    assert_eq!(counters(&stats), counters(&want), "the counters agree too");
    // The mix reached every category and every action.
    assert!(counters(&want).iter().all(|&n| n > 1000), "{want:?}");
}
