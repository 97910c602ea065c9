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

use std::{fmt::Write as _, net::IpAddr, time::Duration};

use serde::Serialize;
use traffic_common::NO_RULE;

use crate::{capture::Event, rules::RuleSet};

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

fn protocol_name(version: u8, proto: u8) -> String {
    match (version, proto) {
        (_, 6) => "TCP".into(),
        (_, 17) => "UDP".into(),
        (_, 1) => "ICMP".into(),
        (_, 58) => "ICMP6".into(),
        (_, 132) => "SCTP".into(),
        (_, 47) => "GRE".into(),
        (_, 50) => "ESP".into(),
        (_, p) => format!("proto {p}"),
    }
}

/// The rule that chose the frame: `capture 203.0.113.0/24`, `drop default`.
pub fn rule_text(ev: &Event<'_>, rules: &RuleSet) -> String {
    let action = ev.action().map_or("?", |a| a.as_str());
    let rule = if ev.header.rule_id == NO_RULE {
        "default".to_owned()
    } else {
        rules.rules().get(ev.header.rule_id as usize).map_or_else(
            || format!("rule #{}", ev.header.rule_id),
            |r| r.cidr.to_string(),
        )
    };
    format!("{action} {rule}")
}

fn endpoint(ip: IpAddr, port: Option<u16>) -> String {
    match port {
        Some(p) => format!("{ip}.{p}"),
        None => ip.to_string(),
    }
}

/// One text line for an event seen at Unix time `ts` (no newline).
pub fn line(ev: &Event<'_>, ts: Duration, rules: &RuleSet) -> String {
    let h = &ev.header;
    let mut out = time_of_day(ts);
    if h.vlan_depth > 0 {
        let _ = write!(out, " vlan {}", h.vlan_id);
    }
    match (ev.src(), ev.dst()) {
        (Some(src), Some(dst)) => {
            let family = if h.ip_version == 4 { "IP" } else { "IP6" };
            let (sport, dport) = ev.ports().map_or((None, None), |(s, d)| (Some(s), Some(d)));
            let _ = write!(
                out,
                " {family} {} > {}: {}",
                endpoint(src, sport),
                endpoint(dst, dport),
                protocol_name(h.ip_version, h.protocol)
            );
            if let Some(flags) = ev.tcp_flags() {
                let _ = write!(out, " [{}]", tcp_flags(flags));
            }
        }
        _ => out.push_str(" non-IP"),
    }
    let _ = write!(out, ", length {}", h.wire_len);
    if h.flags & traffic_common::event_flags::MALFORMED != 0 {
        out.push_str(" (malformed)");
    }
    let sample = if ev.sampled() { "sample, " } else { "" };
    let _ = write!(out, " [{sample}{}]", rule_text(ev, rules));
    out
}

/// The JSON form of a packet line (`"type": "packet"`).
#[derive(Serialize)]
pub struct PacketLine {
    r#type: &'static str,
    ts: f64,
    ifindex: u32,
    rx_queue: u32,
    vlan: Option<u16>,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    protocol: Option<u8>,
    sport: Option<u16>,
    dport: Option<u16>,
    tcp_flags: Option<String>,
    wire_len: u32,
    cap_len: u32,
    action: Option<crate::rules::Action>,
    rule: String,
    sampled: bool,
    latency_ns: u64,
}

impl PacketLine {
    /// The JSON object for `ev`.
    pub fn new(ev: &Event<'_>, ts: Duration, rules: &RuleSet, latency_ns: u64) -> Self {
        let h = &ev.header;
        Self {
            r#type: "packet",
            ts: ts.as_secs_f64(),
            ifindex: h.ifindex,
            rx_queue: h.rx_queue,
            vlan: (h.vlan_depth > 0).then_some(h.vlan_id),
            src: ev.src(),
            dst: ev.dst(),
            protocol: (h.ip_version != 0).then_some(h.protocol),
            sport: ev.ports().map(|p| p.0),
            dport: ev.ports().map(|p| p.1),
            tcp_flags: ev.tcp_flags().map(tcp_flags),
            wire_len: h.wire_len,
            cap_len: h.cap_len,
            action: ev.action(),
            rule: rule_text(ev, rules),
            sampled: ev.sampled(),
            latency_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use traffic_common::{EventHeader, action, event_flags};

    use super::*;
    use crate::rules::{Action, Origin};

    #[test]
    fn lines_look_like_tcpdump() {
        let mut rules = RuleSet::new(Action::Pass);
        rules
            .add_str(Action::Capture, "203.0.113.0/24", Origin::Flag("--capture"))
            .unwrap();
        let mut h = EventHeader {
            ip_version: 4,
            protocol: 6,
            tcp_flags: 0x12,
            sport: 40001,
            dport: 80,
            wire_len: 74,
            rule_id: 0,
            action: action::CAPTURE,
            flags: event_flags::PORTS | event_flags::TCP_FLAGS,
            vlan_depth: 1,
            vlan_id: 100,
            ..EventHeader::default()
        };
        h.src[..4].copy_from_slice(&[203, 0, 113, 7]);
        h.dst[..4].copy_from_slice(&[198, 51, 100, 1]);
        let ev = Event {
            header: h,
            data: &[],
        };
        let text = line(&ev, Duration::new(1_700_000_000, 5), &rules);
        let (_, rest) = text.split_once(' ').unwrap();
        assert_eq!(
            rest,
            "vlan 100 IP 203.0.113.7.40001 > 198.51.100.1.80: TCP [S.], length 74 [capture 203.0.113.0/24]"
        );
        assert!(text.starts_with(&time_of_day(Duration::new(1_700_000_000, 5))));
        assert!(text.split(' ').next().unwrap().ends_with(".000000005"));
    }

    #[test]
    fn sampled_default_and_non_ip() {
        let rules = RuleSet::new(Action::Drop);
        let h = EventHeader {
            wire_len: 42,
            rule_id: NO_RULE,
            action: action::PASS,
            flags: event_flags::SAMPLED,
            ..EventHeader::default()
        };
        let text = line(
            &Event {
                header: h,
                data: &[],
            },
            Duration::ZERO,
            &rules,
        );
        assert!(
            text.ends_with(" non-IP, length 42 [sample, pass default]"),
            "{text}"
        );
        assert_eq!(tcp_flags(0x11), "F.");
        assert_eq!(tcp_flags(0), "none");
    }
}
