//! The userspace packet parser: what the XDP program sees in a frame.
//!
//! One parser describes every packet userspace shows (packet lines, JSON
//! `packet` objects, AF_XDP frames), and it follows the classifier in
//! `traffic-ebpf` step by step, so that a frame is described the same way
//! whichever path brought it: Ethernet, up to two VLAN tags (802.1Q or
//! 802.1ad, in any order; a third tag makes the frame non-IP), IPv4 with its
//! IHL, total length and fragment offset, IPv6 with up to
//! [`MAX_IPV6_EXT_HEADERS`] extension headers (hop-by-hop, routing,
//! destination options, fragment, AH), and the transport header's minimum
//! size. The root tests run a million generated and mutated frames through
//! both and require them to agree on every one.
//!
//! Header fields are read with etherparse's header slices. Its whole-packet
//! lax slicer is not used: it follows up to three VLAN tags, parses AH in
//! IPv4, takes a first fragment (offset 0, more fragments) as carrying no
//! transport header, and stops at a repeated extension-header type, where
//! the kernel's bounded walk does otherwise; the differential test counts
//! how many frames it would describe differently.
//!
//! # Examples
//!
//! ```
//! use traffic::packet::{self, Outcome};
//!
//! let frame = traffic::lab::frame::FrameSpec::udp(
//!     "192.0.2.1".parse().unwrap(),
//!     "198.51.100.1".parse().unwrap(),
//! )
//! .build();
//! let p = packet::parse(&frame);
//! assert_eq!(p.outcome, Outcome::Ipv4);
//! assert_eq!(p.src, Some("192.0.2.1".parse().unwrap()));
//! assert_eq!(p.ports, Some((40000, 9)));
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{EtherType, IpNumber, Ipv6FragmentHeaderSlice, SingleVlanHeaderSlice};
use traffic_common::event_flags;

/// How many IPv6 extension headers are walked before the transport header
/// is no longer looked for (the XDP program's bound).
pub const MAX_IPV6_EXT_HEADERS: usize = 4;
/// An IPv6 extension header that starts past this offset is not walked (the
/// XDP program's bound, which lets the verifier prove its reads safe). Four
/// extension headers of the largest size end before it.
pub const MAX_L3_OFFSET: usize = 16 * 1024 - 1;
/// VLAN tags looked through before the EtherType must say IPv4 or IPv6.
pub const MAX_VLAN_TAGS: usize = 2;

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;

/// The counter a frame lands in: exactly one per frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The (innermost) EtherType is neither IPv4 nor IPv6.
    NonIp,
    /// Too short for its headers, or with inconsistent lengths.
    Malformed,
    /// A well-formed IPv4 packet.
    Ipv4,
    /// A well-formed IPv6 packet.
    Ipv6,
}

/// What the parser found in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The counter the frame lands in.
    pub outcome: Outcome,
    /// 4 or 6 when the frame had a source address to classify, else 0. A
    /// malformed frame can have one.
    pub ip_version: u8,
    /// The source address, when `ip_version` is not 0.
    pub src: Option<IpAddr>,
    /// The destination address, likewise.
    pub dst: Option<IpAddr>,
    /// The IP protocol (for IPv6, of the header the walk ended on), when
    /// `ip_version` is not 0.
    pub protocol: Option<u8>,
    /// Source and destination ports, for TCP and UDP whose header was
    /// checked.
    pub ports: Option<(u16, u16)>,
    /// TCP flags, for TCP whose header was checked.
    pub tcp_flags: Option<u8>,
    /// VLAN tags in front of the IP header (0 when a tag was cut short).
    pub vlan_depth: u8,
    /// The outer VLAN id, when `vlan_depth > 0`.
    pub vlan_id: Option<u16>,
    /// An IP fragment other than the first.
    pub later_fragment: bool,
}

impl Packet {
    fn unclassified(outcome: Outcome) -> Self {
        Self {
            outcome,
            ip_version: 0,
            src: None,
            dst: None,
            protocol: None,
            ports: None,
            tcp_flags: None,
            vlan_depth: 0,
            vlan_id: None,
            later_fragment: false,
        }
    }

    /// A captured frame as the XDP program saw it: what its first bytes
    /// `data` say, with the program's verdict (`flags`, [`event_flags`] of
    /// its event or AF_XDP metadata) on how the whole frame was counted.
    ///
    /// When `data` is the whole frame the two agree (the differential test
    /// holds them to it); when the snaplen cut the frame short, this parser
    /// cannot see the lengths the program checked, so the program's word on
    /// the outcome stands and the rest is what the bytes show.
    pub fn from_capture(data: &[u8], wire_len: u32, flags: u8) -> Self {
        let mut p = parse_start(data, wire_len as usize);
        let version = if flags & event_flags::IPV4 != 0 {
            4
        } else if flags & event_flags::IPV6 != 0 {
            6
        } else {
            0
        };
        p.outcome = match (flags & event_flags::MALFORMED != 0, version) {
            (true, _) => Outcome::Malformed,
            (false, 4) => Outcome::Ipv4,
            (false, 6) => Outcome::Ipv6,
            (false, _) => Outcome::NonIp,
        };
        if p.ip_version != version {
            // The bytes end before the IP header the program read.
            p.ip_version = version;
            p.src = None;
            p.dst = None;
            p.protocol = None;
            p.ports = None;
            p.tcp_flags = None;
        }
        p.later_fragment = flags & event_flags::LATER_FRAGMENT != 0;
        p
    }

    /// The [`event_flags`] the XDP program sets for this parse (all but
    /// `SAMPLED`).
    pub fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.outcome == Outcome::Malformed {
            flags |= event_flags::MALFORMED;
        }
        if self.later_fragment {
            flags |= event_flags::LATER_FRAGMENT;
        }
        match self.ip_version {
            4 => flags |= event_flags::IPV4,
            6 => flags |= event_flags::IPV6,
            _ => {}
        }
        flags
    }
}

/// A frame (or the captured start of one) and the bounds checks the XDP
/// program makes on it.
struct Frame<'a> {
    bytes: &'a [u8],
    /// The whole frame's length, which the length checks compare with.
    len: usize,
}

impl<'a> Frame<'a> {
    /// `len` bytes at `at`, if the frame has them.
    fn at(&self, at: usize, len: usize) -> Option<&'a [u8]> {
        self.bytes.get(at..at.checked_add(len)?)
    }

    fn be16(&self, at: usize) -> Option<u16> {
        self.at(at, 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn remaining_from(&self, at: usize) -> usize {
        self.len.saturating_sub(at)
    }
}

/// Describes `frame` as the XDP program classifies it.
pub fn parse(frame: &[u8]) -> Packet {
    parse_start(frame, frame.len())
}

/// Describes a frame of `wire_len` bytes from its first bytes, `start`: as
/// [`parse`] would the whole frame, but for what lies past `start`.
pub fn parse_start(start: &[u8], wire_len: usize) -> Packet {
    let f = Frame {
        bytes: start,
        len: wire_len.max(start.len()),
    };
    let Some(mut proto) = f.be16(12) else {
        return Packet::unclassified(Outcome::Malformed);
    };
    let mut at = ETH_HLEN;
    let mut vlan_depth = 0u8;
    let mut vlan_id = None;
    for _ in 0..MAX_VLAN_TAGS {
        let tpid = EtherType(proto);
        if tpid != EtherType::VLAN_TAGGED_FRAME && tpid != EtherType::PROVIDER_BRIDGING {
            break;
        }
        let Some(tag) = f
            .at(at, 4)
            .and_then(|b| SingleVlanHeaderSlice::from_slice(b).ok())
        else {
            return Packet::unclassified(Outcome::Malformed);
        };
        if vlan_depth == 0 {
            vlan_id = Some(tag.vlan_identifier().value());
        }
        vlan_depth += 1;
        proto = tag.ether_type().0;
        at += 4;
    }
    let mut packet = match EtherType(proto) {
        EtherType::IPV4 => ipv4(&f, at),
        EtherType::IPV6 => ipv6(&f, at),
        _ => Packet::unclassified(Outcome::NonIp),
    };
    packet.vlan_depth = vlan_depth;
    packet.vlan_id = vlan_id;
    packet
}

/// The smallest transport header checked for `proto`; 0 for protocols whose
/// header is not inspected.
fn min_l4_len(proto: u8) -> usize {
    match IpNumber(proto) {
        IpNumber::TCP => 20,
        IpNumber::UDP | IpNumber::ICMP | IpNumber::IPV6_ICMP => 8,
        _ => 0,
    }
}

/// Whether a TCP header at `l4` has a data offset of at least 5 words that
/// fits in the `room` the datagram leaves.
fn tcp_header_fits(f: &Frame<'_>, l4: usize, room: usize) -> bool {
    let Some(b) = f.at(l4, 13) else {
        return false;
    };
    let doff = usize::from(b[12] >> 4) * 4;
    doff >= 20 && doff <= room
}

/// Fills in ports and TCP flags from the transport header at `l4`.
fn transport(f: &Frame<'_>, p: &mut Packet, l4: usize) {
    let proto = p.protocol.unwrap_or(0);
    match IpNumber(proto) {
        IpNumber::UDP => {
            if let Some(b) = f.at(l4, 4) {
                p.ports = Some((
                    u16::from_be_bytes([b[0], b[1]]),
                    u16::from_be_bytes([b[2], b[3]]),
                ));
            }
        }
        IpNumber::TCP => {
            if let Some(b) = f.at(l4, 4) {
                p.ports = Some((
                    u16::from_be_bytes([b[0], b[1]]),
                    u16::from_be_bytes([b[2], b[3]]),
                ));
            }
            // A capture event reads the flags only when the frame has them.
            if let Some(b) = f.at(l4, 14) {
                p.tcp_flags = Some(b[13]);
            }
        }
        _ => {}
    }
}

fn classified(version: u8, src: IpAddr, dst: IpAddr, proto: u8) -> Packet {
    Packet {
        outcome: if version == 4 {
            Outcome::Ipv4
        } else {
            Outcome::Ipv6
        },
        ip_version: version,
        src: Some(src),
        dst: Some(dst),
        protocol: Some(proto),
        ..Packet::unclassified(Outcome::NonIp)
    }
}

fn malformed(mut p: Packet) -> Packet {
    p.outcome = Outcome::Malformed;
    p
}

fn ipv4(f: &Frame<'_>, l3: usize) -> Packet {
    let Some(ip) = f.at(l3, IPV4_HLEN) else {
        return Packet::unclassified(Outcome::Malformed);
    };
    // A version that contradicts the EtherType: not an IPv4 header at all.
    if ip[0] >> 4 != 4 {
        return Packet::unclassified(Outcome::Malformed);
    }
    let addr = |at: usize| IpAddr::V4(Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]));
    let mut p = classified(4, addr(12), addr(16), ip[9]);
    let frag_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    p.later_fragment = frag_offset != 0;
    // Malformed, but the source is there: its rule applies.
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < IPV4_HLEN {
        return malformed(p);
    }

    // The frame may carry Ethernet padding after the datagram, never less.
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if total < ihl || total > f.remaining_from(l3) {
        return malformed(p);
    }
    // Only the first fragment (offset 0) carries the transport header.
    if frag_offset != 0 {
        return p;
    }
    let l4 = l3 + ihl;
    let room = total - ihl;
    if room < min_l4_len(ip[9]) {
        return malformed(p);
    }
    if IpNumber(ip[9]) == IpNumber::TCP && !tcp_header_fits(f, l4, room) {
        return malformed(p);
    }
    transport(f, &mut p, l4);
    p
}

fn ipv6(f: &Frame<'_>, l3: usize) -> Packet {
    let Some(ip) = f.at(l3, IPV6_HLEN) else {
        return Packet::unclassified(Outcome::Malformed);
    };
    if ip[0] >> 4 != 6 {
        return Packet::unclassified(Outcome::Malformed);
    }
    let addr = |at: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&ip[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(b))
    };
    let mut p = classified(6, addr(8), addr(24), ip[6]);
    let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    if payload > f.remaining_from(l3 + IPV6_HLEN) {
        return malformed(p);
    }
    // Walk the extension headers to find the transport header, so that a
    // truncated one is malformed as for IPv4.
    let end = l3 + IPV6_HLEN + payload;
    let mut next = IpNumber(ip[6]);
    let mut pos = l3 + IPV6_HLEN;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let len = match next {
            IpNumber::IPV6_HEADER_HOP_BY_HOP
            | IpNumber::IPV6_ROUTE_HEADER
            | IpNumber::IPV6_DESTINATION_OPTIONS
            | IpNumber::IPV6_FRAGMENTATION_HEADER
            | IpNumber::AUTHENTICATION_HEADER => {
                if pos > MAX_L3_OFFSET {
                    // Too deep to follow: classified, transport unknown.
                    p.protocol = Some(next.0);
                    return p;
                }
                let Some(ext) = f.at(pos, 2) else {
                    return malformed(p);
                };
                let len = match next {
                    IpNumber::IPV6_FRAGMENTATION_HEADER => {
                        let Some(frag) = f
                            .at(pos, 8)
                            .and_then(|b| Ipv6FragmentHeaderSlice::from_slice(b).ok())
                        else {
                            return malformed(p);
                        };
                        if frag.fragment_offset().value() != 0 {
                            // A later fragment: no transport header here.
                            p.protocol = Some(frag.next_header().0);
                            p.later_fragment = true;
                            return if pos + 8 > end { malformed(p) } else { p };
                        }
                        8
                    }
                    IpNumber::AUTHENTICATION_HEADER => (usize::from(ext[1]) + 2) * 4,
                    _ => (usize::from(ext[1]) + 1) * 8,
                };
                next = IpNumber(ext[0]);
                len
            }
            _ => break,
        };
        pos += len;
        if pos > end {
            return malformed(p);
        }
    }
    p.protocol = Some(next.0);
    let room = end - pos.min(end);
    if room < min_l4_len(next.0) {
        return malformed(p);
    }
    if next == IpNumber::TCP && !tcp_header_fits(f, pos, room) {
        return malformed(p);
    }
    if pos <= MAX_L3_OFFSET {
        transport(f, &mut p, pos);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::frame::{ETH_P_8021AD, ETH_P_8021Q, Fragment, FrameSpec, L4};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tcp_behind_two_tags_is_described_whole() {
        let mut spec = FrameSpec::udp(ip("2001:db8::7"), ip("2001:db8::1"));
        spec.vlans = vec![(ETH_P_8021AD, 42), (ETH_P_8021Q, 7)];
        spec.l4 = L4::TcpSyn {
            sport: 1234,
            dport: 80,
        };
        let p = parse(&spec.build());
        assert_eq!(p.outcome, Outcome::Ipv6);
        assert_eq!((p.vlan_depth, p.vlan_id), (2, Some(42)));
        assert_eq!(
            (p.protocol, p.ports, p.tcp_flags),
            (Some(6), Some((1234, 80)), Some(0x02))
        );
        assert_eq!(p.src, Some(ip("2001:db8::7")));
    }

    #[test]
    fn a_fragmented_ipv6_datagram_shows_its_transport() {
        let mut spec = FrameSpec::udp(ip("2001:db8::7"), ip("2001:db8::1"));
        spec.fragment = Some(Fragment {
            offset: 0,
            more: true,
        });
        let first = parse(&spec.build());
        assert_eq!(
            (first.protocol, first.ports, first.later_fragment),
            (Some(17), Some((40000, 9)), false)
        );
        spec.fragment = Some(Fragment {
            offset: 8,
            more: false,
        });
        let later = parse(&spec.build());
        assert_eq!(
            (later.protocol, later.ports, later.later_fragment),
            (Some(17), None, true)
        );
    }

    #[test]
    fn a_third_tag_is_not_ip_and_a_short_tag_is_malformed() {
        let mut spec = FrameSpec::udp(ip("192.0.2.1"), ip("198.51.100.1"));
        spec.vlans = vec![(ETH_P_8021Q, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)];
        let frame = spec.build();
        assert_eq!(parse(&frame).outcome, Outcome::NonIp);
        assert_eq!(
            parse(&frame[..16]),
            Packet::unclassified(Outcome::Malformed)
        );
    }

    #[test]
    fn a_whole_capture_reads_back_as_the_parse_and_a_cut_one_keeps_the_verdict() {
        let mut spec = FrameSpec::udp(ip("192.0.2.9"), ip("198.51.100.1"));
        spec.vlans = vec![(ETH_P_8021Q, 100)];
        let frame = spec.build();
        let p = parse(&frame);
        let len = frame.len() as u32;
        assert_eq!(Packet::from_capture(&frame, len, p.flags()), p);
        // Cut after the ports: the same description.
        assert_eq!(
            Packet::from_capture(&frame[..14 + 4 + 20 + 4], len, p.flags()),
            p
        );
        // Cut inside the UDP header: the program counted it as IPv4.
        let cut = Packet::from_capture(&frame[..14 + 4 + 20 + 2], len, p.flags());
        assert_eq!(cut.outcome, Outcome::Ipv4);
        assert_eq!(cut.src, p.src);
        assert_eq!(cut.ports, None);
        // Cut before the IP header: no addresses, still IPv4.
        let cut = Packet::from_capture(&frame[..14], len, p.flags());
        assert_eq!(
            (cut.outcome, cut.ip_version, cut.src),
            (Outcome::Ipv4, 4, None)
        );
    }

    #[test]
    fn every_truncation_is_described_without_panicking() {
        let mut spec = FrameSpec::udp(ip("2001:db8::7"), ip("2001:db8::1"));
        spec.fragment = Some(Fragment {
            offset: 0,
            more: true,
        });
        spec.payload_len = 30;
        let frame = spec.build();
        for len in 0..frame.len() {
            let p = parse(&frame[..len]);
            assert!(
                len >= 14 + 40 + 8 + 8 + 30 || p.outcome == Outcome::Malformed,
                "{len}: {p:?}"
            );
        }
    }
}
