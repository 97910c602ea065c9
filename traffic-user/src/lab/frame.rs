//! Building Ethernet frames, with etherparse's headers: for the generator
//! and for tests.
//!
//! Frames carry correct IPv4 header and UDP/TCP/ICMP checksums, so that a
//! capture of them reads clean in tcpdump or Wireshark.
//!
//! # Examples
//!
//! ```
//! use traffic::lab::frame::{FrameSpec, L4};
//!
//! let spec = FrameSpec::udp("192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap());
//! let frame = spec.build();
//! assert_eq!(frame.len(), 14 + 20 + 8);
//! assert!(matches!(spec.l4, L4::Udp { .. }));
//! ```

use std::net::IpAddr;

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, IcmpEchoHeader, Icmpv4Header,
    Icmpv4Type, Icmpv6Header, Icmpv6Type, IpFragOffset, IpNumber, Ipv4Header, Ipv4Options,
    Ipv6FlowLabel, Ipv6FragmentHeader, Ipv6Header, SingleVlanHeader, TcpHeader, UdpHeader, VlanId,
    VlanPcp,
};

/// EtherTypes.
pub const ETH_P_IP: u16 = 0x0800;
/// IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// 802.1ad service tag (outer tag of QinQ).
pub const ETH_P_8021AD: u16 = 0x88a8;

/// The transport part of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// UDP with these ports.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// A TCP SYN with these ports.
    TcpSyn {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// An ICMP (or ICMPv6) echo request.
    Echo,
    /// Raw payload after the IP header with this protocol number.
    Raw(u8),
}

/// An IPv4 fragment's position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Offset in 8-byte units.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
}

/// Everything that describes one frame.
#[derive(Clone, Debug)]
pub struct FrameSpec {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// VLAN tags, outermost first: `(TPID, TCI)`.
    pub vlans: Vec<(u16, u16)>,
    /// Source address; its family decides IPv4 or IPv6.
    pub src: IpAddr,
    /// Destination address, of the same family.
    pub dst: IpAddr,
    /// The transport header.
    pub l4: L4,
    /// Payload bytes after the transport header.
    pub payload_len: usize,
    /// IPv4 options (padded to a multiple of 4 bytes); ignored for IPv6.
    pub ipv4_options: Vec<u8>,
    /// IPv4 fragment fields; for IPv6 a Fragment extension header is added.
    pub fragment: Option<Fragment>,
}

impl FrameSpec {
    /// A UDP frame from `src` to `dst` with ports 40000 → 9 and no payload.
    pub fn udp(src: IpAddr, dst: IpAddr) -> Self {
        Self {
            dst_mac: [0x02, 0, 0, 0, 0, 0x02],
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            vlans: Vec::new(),
            src,
            dst,
            l4: L4::Udp {
                sport: 40000,
                dport: 9,
            },
            payload_len: 0,
            ipv4_options: Vec::new(),
            fragment: None,
        }
    }

    /// The frame's bytes, built from etherparse's headers.
    ///
    /// # Panics
    ///
    /// When `src` and `dst` are of different families, or the frame is
    /// larger than IP allows.
    pub fn build(&self) -> Vec<u8> {
        let (ether_type, l3) = match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => (ETH_P_IP, self.ipv4(src.octets(), dst.octets())),
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                (ETH_P_IPV6, self.ipv6(src.octets(), dst.octets()))
            }
            _ => panic!("source and destination must both be IPv4 or both IPv6"),
        };
        // Each tag names what follows it: the next tag's TPID, or the
        // EtherType of the IP header.
        let next: Vec<u16> = self
            .vlans
            .iter()
            .skip(1)
            .map(|&(tpid, _)| tpid)
            .chain([ether_type])
            .collect();
        let mut f = Ethernet2Header {
            source: self.src_mac,
            destination: self.dst_mac,
            ether_type: EtherType(self.vlans.first().map_or(ether_type, |&(tpid, _)| tpid)),
        }
        .to_bytes()
        .to_vec();
        for (&(_, tci), &next) in self.vlans.iter().zip(&next) {
            let tag = SingleVlanHeader {
                pcp: VlanPcp::try_new((tci >> 13) as u8).expect("3 bits"),
                drop_eligible_indicator: tci & 0x1000 != 0,
                vlan_id: VlanId::try_new(tci & 0x0fff).expect("12 bits"),
                ether_type: EtherType(next),
            };
            f.extend_from_slice(&tag.to_bytes());
        }
        f.extend(l3);
        f
    }

    fn ipv4(&self, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let payload = self.payload();
        let proto = IpNumber(self.protocol());
        let mut ip = Ipv4Header::new(0, 64, proto, src, dst).expect("no payload yet");
        ip.identification = 0x1234;
        let mut options = self.ipv4_options.clone();
        options.resize(options.len().div_ceil(4) * 4, 0);
        ip.options = Ipv4Options::try_from(&options[..]).expect("at most 40 bytes of options");
        if let Some(fr) = self.fragment {
            ip.fragment_offset = IpFragOffset::try_new(fr.offset).expect("13 bits");
            ip.more_fragments = fr.more;
        }
        // Only the first fragment (offset 0) carries the transport header.
        let checksummed = self.fragment.is_none_or(|fr| fr.offset == 0);
        let checksums = if checksummed {
            Checksums::V4(ip.clone())
        } else {
            Checksums::None
        };
        let l4 = self.l4(&payload, &checksums);
        ip.total_len = u16::try_from(ip.header_len() + l4.len()).expect("fits IPv4");
        ip.header_checksum = ip.calc_header_checksum();
        let mut out = ip.to_bytes().to_vec();
        out.extend(l4);
        out
    }

    fn ipv6(&self, src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
        let payload = self.payload();
        let proto = IpNumber(self.protocol());
        let mut ip = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: 0,
            next_header: proto,
            hop_limit: 64,
            source: src,
            destination: dst,
        };
        let l4 = self.l4(&payload, &Checksums::V6(ip.clone()));
        let mut body = Vec::with_capacity(8 + l4.len());
        if let Some(fr) = self.fragment {
            let frag = Ipv6FragmentHeader::new(
                proto,
                IpFragOffset::try_new(fr.offset).expect("13 bits"),
                fr.more,
                0x1234_5678,
            );
            body.extend_from_slice(&frag.to_bytes());
            ip.next_header = IpNumber::IPV6_FRAGMENTATION_HEADER;
        }
        body.extend(l4);
        ip.payload_length = u16::try_from(body.len()).expect("fits IPv6");
        let mut out = ip.to_bytes().to_vec();
        out.extend(body);
        out
    }

    fn protocol(&self) -> u8 {
        match self.l4 {
            L4::Udp { .. } => 17,
            L4::TcpSyn { .. } => 6,
            L4::Echo if self.src.is_ipv4() => 1,
            L4::Echo => 58,
            L4::Raw(p) => p,
        }
    }

    /// The payload after the transport header: a recognisable pattern.
    fn payload(&self) -> Vec<u8> {
        (0..self.payload_len).map(|i| (i % 251) as u8).collect()
    }

    /// The transport header and `payload`, checksummed as `checksums` says.
    fn l4(&self, payload: &[u8], checksums: &Checksums) -> Vec<u8> {
        let mut out = match (self.l4, checksums) {
            (L4::Udp { sport, dport }, Checksums::V4(ip)) => {
                UdpHeader::with_ipv4_checksum(sport, dport, ip, payload)
                    .expect("fits UDP")
                    .to_bytes()
                    .to_vec()
            }
            (L4::Udp { sport, dport }, Checksums::V6(ip)) => {
                UdpHeader::with_ipv6_checksum(sport, dport, ip, payload)
                    .expect("fits UDP")
                    .to_bytes()
                    .to_vec()
            }
            (L4::Udp { sport, dport }, Checksums::None) => {
                UdpHeader::without_ipv4_checksum(sport, dport, payload.len())
                    .expect("fits UDP")
                    .to_bytes()
                    .to_vec()
            }
            (L4::TcpSyn { sport, dport }, _) => {
                let mut tcp = TcpHeader::new(sport, dport, 1, 64240);
                tcp.syn = true;
                tcp.checksum = match checksums {
                    Checksums::V4(ip) => tcp.calc_checksum_ipv4(ip, payload).expect("fits"),
                    Checksums::V6(ip) => tcp.calc_checksum_ipv6(ip, payload).expect("fits"),
                    Checksums::None => 0,
                };
                tcp.to_bytes().to_vec()
            }
            (L4::Echo, Checksums::V6(ip)) => {
                let kind = Icmpv6Type::EchoRequest(ECHO);
                Icmpv6Header::with_checksum(kind, ip.source, ip.destination, payload)
                    .expect("fits")
                    .to_bytes()
                    .to_vec()
            }
            (L4::Echo, _) => {
                let kind = Icmpv4Type::EchoRequest(ECHO);
                Icmpv4Header::with_checksum(kind, payload)
                    .to_bytes()
                    .to_vec()
            }
            (L4::Raw(_), _) => Vec::new(),
        };
        out.extend_from_slice(payload);
        out
    }
}

/// The echo request's identifier and sequence number.
const ECHO: IcmpEchoHeader = IcmpEchoHeader { id: 0x1234, seq: 1 };

/// What a transport checksum covers.
enum Checksums {
    /// The IPv4 pseudo-header.
    V4(Ipv4Header),
    /// The IPv6 pseudo-header.
    V6(Ipv6Header),
    /// Nothing: a later fragment carries no transport header.
    None,
}

/// An ARP request ("who has `target`? tell `sender`") from `src_mac`.
pub fn arp_request(src_mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = Ethernet2Header {
        source: src_mac,
        destination: [0xff; 6],
        ether_type: EtherType::ARP,
    }
    .to_bytes()
    .to_vec();
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: src_mac,
        sender_ipv4: sender,
        target_mac: [0; 6],
        target_ipv4: target,
    };
    f.extend_from_slice(&arp.to_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Internet checksum (RFC 1071) over the concatenation of `parts`,
    /// written independently of etherparse to check its output.
    fn checksum(parts: &[&[u8]]) -> u16 {
        let mut sum: u64 = 0;
        let mut odd: Option<u8> = None;
        for part in parts {
            for &b in *part {
                match odd.take() {
                    Some(hi) => sum += u64::from(u16::from_be_bytes([hi, b])),
                    None => odd = Some(b),
                }
            }
        }
        if let Some(hi) = odd {
            sum += u64::from(u16::from_be_bytes([hi, 0]));
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn ipv4_header_checksum_verifies() {
        let mut spec = FrameSpec::udp(
            "192.0.2.1".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
        );
        spec.ipv4_options = vec![1, 1, 1]; // padded to 4
        spec.payload_len = 11;
        let f = spec.build();
        let ip = &f[14..14 + 24];
        assert_eq!(ip[0], 0x46);
        assert_eq!(
            checksum(&[ip]),
            0,
            "a header with its checksum sums to zero"
        );
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, f.len() - 14);
    }

    #[test]
    fn udp_checksum_verifies_for_both_families() {
        for (src, dst) in [
            ("192.0.2.1", "198.51.100.1"),
            ("2001:db8::1", "2001:db8::2"),
        ] {
            let mut spec = FrameSpec::udp(src.parse().unwrap(), dst.parse().unwrap());
            spec.payload_len = 7;
            let f = spec.build();
            let (l3, hlen) = if spec.src.is_ipv4() {
                (14, 20)
            } else {
                (14, 40)
            };
            let udp = &f[l3 + hlen..];
            let pseudo: Vec<u8> = match (spec.src, spec.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => [
                    &s.octets()[..],
                    &d.octets(),
                    &[0, 17],
                    &(udp.len() as u16).to_be_bytes(),
                ]
                .concat(),
                (IpAddr::V6(s), IpAddr::V6(d)) => [
                    &s.octets()[..],
                    &d.octets(),
                    &(udp.len() as u32).to_be_bytes(),
                    &[0, 0, 0, 17],
                ]
                .concat(),
                _ => unreachable!(),
            };
            assert_eq!(checksum(&[&pseudo, udp]), 0);
        }
    }

    #[test]
    fn vlan_tags_come_before_the_ethertype() {
        let mut spec = FrameSpec::udp("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        spec.vlans = vec![(ETH_P_8021AD, 100), (ETH_P_8021Q, 200)];
        let f = spec.build();
        assert_eq!(&f[12..14], &ETH_P_8021AD.to_be_bytes());
        assert_eq!(&f[16..18], &ETH_P_8021Q.to_be_bytes());
        assert_eq!(&f[20..22], &ETH_P_IP.to_be_bytes());
    }
}
