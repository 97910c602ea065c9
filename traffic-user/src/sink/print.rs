//! One line per captured packet, in the spirit of tcpdump's: time, VLAN,
//! addresses and ports, protocol, length, and the rule that chose it.
//!
//! ```text
//! 12:04:31.123456789 IP 203.0.113.7.40001 > 198.51.100.1.9: UDP, length 106 [capture 203.0.113.0/24]
//! 12:04:31.123502113 vlan 100 IP6 2001:db8:c::3.443 > 2001:db8::1.80: TCP [S], length 74 [sample, pass default]
//! ```
//!
//! The time is local wall-clock time at the XDP hook; `length` is the
//! frame's length on the wire.

use std::{
    fmt::Write as _,
    io::{self, BufWriter, Stdout, Write as _},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use super::{
    Format, Sink, SinkError,
    json::{Line, PacketLine},
};
use crate::{
    packet::Outcome,
    rules::{Action, RuleSet},
    source::Captured,
};

/// `HH:MM:SS.nnnnnnnnn` in local time.
pub fn time_of_day(unix: Duration) -> String {
    let secs = unix.as_secs() as libc::time_t;
    // SAFETY: an all-zero tm is valid; localtime_r fills it from `secs`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals.
    let ok = !unsafe { libc::localtime_r(&secs, &mut tm) }.is_null();
    let (h, m, s) = if ok {
        (tm.tm_hour, tm.tm_min, tm.tm_sec)
    } else {
        let day = unix.as_secs() % 86_400;
        (
            (day / 3600) as i32,
            (day / 60 % 60) as i32,
            (day % 60) as i32,
        )
    };
    format!("{h:02}:{m:02}:{s:02}.{:09}", unix.subsec_nanos())
}

/// tcpdump's rendering of TCP flags: `S`, `S.`, `F.`, `R`, `P.`...
pub fn tcp_flags(flags: u8) -> String {
    let mut out = String::new();
    for (bit, c) in [
        (0x01, 'F'),
        (0x02, 'S'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
        (0x40, 'E'),
        (0x80, 'W'),
    ] {
        if flags & bit != 0 {
            out.push(c);
        }
    }
    if flags & 0x10 != 0 {
        out.push('.');
    }
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

fn protocol_name(proto: u8) -> String {
    match proto {
        6 => "TCP".into(),
        17 => "UDP".into(),
        1 => "ICMP".into(),
        58 => "ICMP6".into(),
        132 => "SCTP".into(),
        47 => "GRE".into(),
        50 => "ESP".into(),
        p => format!("proto {p}"),
    }
}

/// The rule that chose the packet: `capture 203.0.113.0/24`, `drop default`.
pub fn rule_text(p: &Captured<'_>, rules: &RuleSet) -> String {
    let action = p.action.map_or("?", Action::as_str);
    let rule = match p.rule {
        None => "default".to_owned(),
        Some(id) => rules
            .rule(id as usize)
            .map_or_else(|| format!("rule #{id}"), |r| r.cidr.to_string()),
    };
    format!("{action} {rule}")
}

fn endpoint(ip: IpAddr, port: Option<u16>) -> String {
    match port {
        Some(p) => format!("{ip}.{p}"),
        None => ip.to_string(),
    }
}

/// One text line for a packet (no newline).
pub fn line(p: &Captured<'_>, rules: &RuleSet) -> String {
    let pkt = &p.packet();
    let mut out = time_of_day(p.ts);
    if let Some(vlan) = pkt.vlan_id {
        let _ = write!(out, " vlan {vlan}");
    }
    match (pkt.src, pkt.dst) {
        (Some(src), Some(dst)) => {
            let family = if pkt.ip_version == 4 { "IP" } else { "IP6" };
            let (sport, dport) = pkt.ports.map_or((None, None), |(s, d)| (Some(s), Some(d)));
            let _ = write!(
                out,
                " {family} {} > {}: {}",
                endpoint(src, sport),
                endpoint(dst, dport),
                protocol_name(pkt.protocol.unwrap_or(0))
            );
            if let Some(flags) = pkt.tcp_flags {
                let _ = write!(out, " [{}]", tcp_flags(flags));
            }
        }
        // The program read an IP header the snaplen cut from the capture:
        // tcpdump's mark for a header cut short.
        _ if pkt.ip_version == 4 => out.push_str(" IP [|ip]"),
        _ if pkt.ip_version == 6 => out.push_str(" IP6 [|ip6]"),
        _ => out.push_str(" non-IP"),
    }
    let _ = write!(out, ", length {}", p.wire_len);
    if pkt.outcome == Outcome::Malformed {
        out.push_str(" (malformed)");
    }
    let sample = if p.sampled { "sample, " } else { "" };
    let _ = write!(out, " [{sample}{}]", rule_text(p, rules));
    out
}

/// The JSON object for `p`.
pub fn packet_line(p: &Captured<'_>, rules: &RuleSet) -> PacketLine {
    let pkt = &p.packet();
    PacketLine {
        ts: p.ts.as_secs_f64(),
        ifindex: p.ifindex,
        iface: None,
        rx_queue: p.rx_queue,
        vlan: pkt.vlan_id,
        src: pkt.src,
        dst: pkt.dst,
        protocol: pkt.protocol,
        sport: pkt.ports.map(|p| p.0),
        dport: pkt.ports.map(|p| p.1),
        tcp_flags: pkt.tcp_flags.map(tcp_flags),
        wire_len: p.wire_len,
        cap_len: u32::try_from(p.data.len()).unwrap_or(u32::MAX),
        action: p.action,
        rule: rule_text(p, rules),
        sampled: p.sampled,
        latency_ns: p.latency_ns,
    }
}

/// `--print`: one line, or one JSON `packet` object, per captured packet on
/// stdout.
pub struct Printer {
    out: BufWriter<Stdout>,
    format: Format,
    /// The rules of each of the kernel's two tables, once known: a packet
    /// names its rule from the set of the table that classified it, which
    /// after a reload may not be the set in force.
    tables: [Arc<RuleSet>; 2],
    /// Interface names by index, in a run on several: each line names its
    /// packet's, as `tcpdump -i any` does.
    names: Vec<(u32, String)>,
}

impl Printer {
    /// A printer naming rules from `rules` (and from the rules a reload
    /// puts in force).
    pub fn new(format: Format, rules: Arc<RuleSet>) -> Self {
        Self {
            out: BufWriter::with_capacity(1 << 16, io::stdout()),
            format,
            tables: [Arc::clone(&rules), rules],
            names: Vec::new(),
        }
    }
}

/// Of `tables`, the rules of the one that classified `p`.
fn table_rules<'t>(tables: &'t [Arc<RuleSet>; 2], p: &Captured<'_>) -> &'t RuleSet {
    let table = p
        .flags
        .is_some_and(|f| f & traffic_common::event_flags::TABLE_1 != 0);
    &tables[usize::from(table)]
}

impl Sink for Printer {
    fn start(&mut self, start: &super::Start) -> Result<(), SinkError> {
        if !start.ifaces.is_empty() {
            self.names = start.each().into_iter().map(|(n, i)| (i, n)).collect();
        }
        Ok(())
    }

    fn reload(&mut self, r: &super::ReloadReport, rules: &Arc<RuleSet>) -> Result<(), SinkError> {
        if let Some(t) = r.table {
            self.tables[t as usize & 1] = Arc::clone(rules);
        }
        Ok(())
    }

    fn packet(&mut self, p: &Captured<'_>) -> Result<(), SinkError> {
        let Self {
            out,
            format,
            tables,
            names,
        } = self;
        let rules = table_rules(tables, p);
        // The name of the packet's interface, in a run on several.
        let iface = names
            .iter()
            .find(|(i, _)| *i == p.ifindex)
            .map(|(_, n)| n.as_str());
        let written = match format {
            Format::Table => {
                let text = line(p, rules);
                match (iface, text.split_once(' ')) {
                    (Some(iface), Some((time, rest))) => writeln!(out, "{time} {iface} {rest}"),
                    _ => writeln!(out, "{text}"),
                }
            }
            Format::Json => {
                let mut packet = packet_line(p, rules);
                packet.iface = iface.map(str::to_owned);
                let line = Line::Packet(packet);
                serde_json::to_writer(&mut *out, &line)
                    .map_err(io::Error::from)
                    .and_then(|()| writeln!(out))
            }
        };
        written.map_err(SinkError::write("stdout"))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(SinkError::write("stdout"))
    }

    fn finish(&mut self, _: &super::Summary<'_>) -> Result<(), SinkError> {
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use traffic_common::{EventHeader, action, event_flags};

    use super::*;
    use crate::{
        lab::frame::{ETH_P_8021Q, FrameSpec, L4},
        rules::Origin,
        source::{clock::WallClock, ringbuf::Event},
    };

    fn captured(h: EventHeader, frame: Vec<u8>, ts: Duration) -> Captured<'static> {
        let frame: &'static [u8] = Box::leak(frame.into_boxed_slice());
        let mut h = h;
        h.cap_len = frame.len() as u16;
        let mut c = Event {
            header: h,
            data: frame,
        }
        .captured(&WallClock::new(), 0, 0);
        c.ts = ts;
        c
    }

    fn ip(s: &str) -> std::net::IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_packet_names_its_rule_from_the_table_that_classified_it() {
        let set = |cidr: &str| {
            let mut rules = RuleSet::new(Action::Pass);
            rules
                .add_str(Action::Capture, cidr, Origin::Flag("--capture"))
                .unwrap();
            rules.seal();
            Arc::new(rules)
        };
        let mut printer = Printer::new(Format::Table, set("203.0.113.0/24"));
        let report = super::super::ReloadReport {
            trigger: "SIGHUP".into(),
            at_s: 1.0,
            ok: true,
            took_ms: 1.0,
            rules_v4: 1,
            rules_v6: 0,
            change: crate::rules::Change::default(),
            errors: Vec::new(),
            table: Some(1),
        };
        printer.reload(&report, &set("203.0.113.0/25")).unwrap();
        let packet = |flags| {
            let h = EventHeader {
                wire_len: 60,
                rule_id: 0,
                action: action::CAPTURE as u8,
                flags,
                ..EventHeader::default()
            };
            let spec = FrameSpec::udp(ip("203.0.113.7"), ip("198.51.100.1"));
            captured(h, spec.build(), Duration::ZERO)
        };
        // Classified by table 0 before the swap, printed after it.
        let before = packet(event_flags::IPV4);
        assert_eq!(
            rule_text(&before, table_rules(&printer.tables, &before)),
            "capture 203.0.113.0/24"
        );
        let after = packet(event_flags::IPV4 | event_flags::TABLE_1);
        assert_eq!(
            rule_text(&after, table_rules(&printer.tables, &after)),
            "capture 203.0.113.0/25"
        );
    }

    #[test]
    fn lines_look_like_tcpdump() {
        let mut rules = RuleSet::new(Action::Pass);
        rules
            .add_str(Action::Capture, "203.0.113.0/24", Origin::Flag("--capture"))
            .unwrap();
        let mut spec = FrameSpec::udp(ip("203.0.113.7"), ip("198.51.100.1"));
        spec.l4 = L4::TcpSyn {
            sport: 40001,
            dport: 80,
        };
        spec.vlans = vec![(ETH_P_8021Q, 100)];
        let h = EventHeader {
            wire_len: 74,
            rule_id: 0,
            action: action::CAPTURE as u8,
            flags: event_flags::IPV4,
            ..EventHeader::default()
        };
        let ts = Duration::new(1_700_000_000, 5);
        let text = line(&captured(h, spec.build(), ts), &rules);
        let (_, rest) = text.split_once(' ').unwrap();
        assert_eq!(
            rest,
            "vlan 100 IP 203.0.113.7.40001 > 198.51.100.1.80: TCP [S], length 74 [capture 203.0.113.0/24]"
        );
        assert!(text.starts_with(&time_of_day(ts)));
        assert!(text.split(' ').next().unwrap().ends_with(".000000005"));
    }

    #[test]
    fn sampled_default_and_non_ip() {
        let rules = RuleSet::new(Action::Drop);
        let h = EventHeader {
            wire_len: 42,
            rule_id: traffic_common::NO_RULE,
            action: action::PASS as u8,
            flags: event_flags::SAMPLED,
            ..EventHeader::default()
        };
        let arp =
            crate::lab::frame::arp_request([2, 0, 0, 0, 0, 1], [192, 0, 2, 1], [192, 0, 2, 2]);
        let text = line(&captured(h, arp, Duration::ZERO), &rules);
        assert!(
            text.ends_with(" non-IP, length 42 [sample, pass default]"),
            "{text}"
        );
        assert_eq!(tcp_flags(0x11), "F.");
        assert_eq!(tcp_flags(0), "none");
    }

    #[test]
    fn an_ip_header_cut_by_the_snaplen_is_marked_not_called_non_ip() {
        let rules = RuleSet::new(Action::Capture);
        for (src, flags, want) in [
            (
                "2001:db8:c::5",
                event_flags::IPV6,
                " IP6 [|ip6], length 86 [capture default]",
            ),
            (
                "203.0.113.5",
                event_flags::IPV4,
                " IP [|ip], length 86 [capture default]",
            ),
        ] {
            let h = EventHeader {
                wire_len: 86,
                rule_id: traffic_common::NO_RULE,
                action: action::CAPTURE as u8,
                flags,
                ..EventHeader::default()
            };
            let dst = if src.contains(':') {
                "2001:db8::1"
            } else {
                "198.51.100.1"
            };
            let mut frame = FrameSpec::udp(ip(src), ip(dst)).build();
            // A snaplen of 30: the Ethernet header and 16 bytes of IP.
            frame.truncate(30);
            let text = line(&captured(h, frame, Duration::ZERO), &rules);
            assert!(text.ends_with(want), "{text}");
        }
    }

    #[test]
    fn packet_objects_read_back() {
        let rules = RuleSet::new(Action::Capture);
        let h = EventHeader {
            wire_len: 80,
            rule_id: traffic_common::NO_RULE,
            action: action::CAPTURE as u8,
            flags: event_flags::IPV6,
            ..EventHeader::default()
        };
        let frame = FrameSpec::udp(ip("2001:db8::7"), ip("2001:db8::1")).build();
        let line = Line::Packet(packet_line(
            &captured(h, frame, Duration::from_secs(7)),
            &rules,
        ));
        let text = serde_json::to_string(&line).unwrap();
        assert!(text.starts_with(r#"{"type":"packet","#), "{text}");
        let back: Line = serde_json::from_str(&text).unwrap();
        assert_eq!(back, line);
    }
}
