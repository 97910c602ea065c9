//! Building Ethernet frames: for the generator and for tests.
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

/// EtherTypes.
pub const ETH_P_IP: u16 = 0x0800;
/// IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// ARP.
pub const ETH_P_ARP: u16 = 0x0806;
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

    /// The frame's bytes.
    ///
    /// # Panics
    ///
    /// When `src` and `dst` are of different families.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(64 + self.payload_len);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for &(tpid, tci) in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        let l4 = self.l4_bytes();
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                f.extend_from_slice(&ETH_P_IP.to_be_bytes());
                let mut opts = self.ipv4_options.clone();
                opts.resize(opts.len().div_ceil(4) * 4, 0);
                let ihl = (20 + opts.len()) / 4;
                let total = 20 + opts.len() + l4.len();
                let frag = self.fragment.map_or(0, |fr| {
                    fr.offset & 0x1fff | if fr.more { 0x2000 } else { 0 }
                });
                let mut ip = Vec::with_capacity(20 + opts.len());
                ip.push(0x40 | ihl as u8);
                ip.push(0);
                ip.extend_from_slice(&(total as u16).to_be_bytes());
                ip.extend_from_slice(&0x1234u16.to_be_bytes());
                ip.extend_from_slice(&frag.to_be_bytes());
                ip.push(64);
                ip.push(self.protocol());
                ip.extend_from_slice(&[0, 0]);
                ip.extend_from_slice(&src.octets());
                ip.extend_from_slice(&dst.octets());
                ip.extend_from_slice(&opts);
                let sum = checksum(&[&ip]);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                f.extend_from_slice(&ip);
                let mut l4 = l4;
                if self.fragment.is_none_or(|fr| fr.offset == 0) {
                    let pseudo = [
                        &src.octets()[..],
                        &dst.octets()[..],
                        &[0, self.protocol()],
                        &(l4.len() as u16).to_be_bytes(),
                    ]
                    .concat();
                    self.fill_l4_checksum(&mut l4, &pseudo);
                }
                f.extend_from_slice(&l4);
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                let frag_hdr = self.fragment.map(|fr| {
                    let mut h = vec![self.protocol(), 0];
                    h.extend_from_slice(&((fr.offset << 3) | u16::from(fr.more)).to_be_bytes());
                    h.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                    h
                });
                let ext_len = frag_hdr.as_ref().map_or(0, Vec::len);
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&((ext_len + l4.len()) as u16).to_be_bytes());
                f.push(if frag_hdr.is_some() {
                    44
                } else {
                    self.protocol()
                });
                f.push(64);
                f.extend_from_slice(&src.octets());
                f.extend_from_slice(&dst.octets());
                if let Some(h) = &frag_hdr {
                    f.extend_from_slice(h);
                }
                let mut l4 = l4;
                let pseudo = [
                    &src.octets()[..],
                    &dst.octets()[..],
                    &(l4.len() as u32).to_be_bytes(),
                    &[0, 0, 0, self.protocol()],
                ]
                .concat();
                self.fill_l4_checksum(&mut l4, &pseudo);
                f.extend_from_slice(&l4);
            }
            _ => panic!("source and destination must both be IPv4 or both IPv6"),
        }
        f
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

    /// The transport header and payload, checksum zero.
    fn l4_bytes(&self) -> Vec<u8> {
        let payload = (0..self.payload_len).map(|i| (i % 251) as u8);
        let mut l4 = match self.l4 {
            L4::Udp { sport, dport } => {
                let len = (8 + self.payload_len) as u16;
                [
                    sport.to_be_bytes(),
                    dport.to_be_bytes(),
                    len.to_be_bytes(),
                    [0, 0],
                ]
                .concat()
            }
            L4::TcpSyn { sport, dport } => {
                let mut h = Vec::with_capacity(20);
                h.extend_from_slice(&sport.to_be_bytes());
                h.extend_from_slice(&dport.to_be_bytes());
                h.extend_from_slice(&1u32.to_be_bytes()); // sequence
                h.extend_from_slice(&0u32.to_be_bytes()); // ack
                h.push(5 << 4); // data offset: 5 words
                h.push(0x02); // SYN
                h.extend_from_slice(&64240u16.to_be_bytes());
                h.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
                h
            }
            L4::Echo => {
                let kind = if self.src.is_ipv4() { 8 } else { 128 };
                vec![kind, 0, 0, 0, 0x12, 0x34, 0, 1]
            }
            L4::Raw(_) => Vec::new(),
        };
        l4.extend(payload);
        l4
    }

    fn fill_l4_checksum(&self, l4: &mut [u8], pseudo: &[u8]) {
        let (at, with_pseudo) = match self.l4 {
            L4::Udp { .. } => (6, true),
            L4::TcpSyn { .. } => (16, true),
            L4::Echo => (2, self.src.is_ipv6()),
            L4::Raw(_) => return,
        };
        let sum = if with_pseudo {
            checksum(&[pseudo, l4])
        } else {
            checksum(&[l4])
        };
        // UDP sends an all-zero checksum as all ones.
        let sum = if sum == 0 && matches!(self.l4, L4::Udp { .. }) {
            0xffff
        } else {
            sum
        };
        l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
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

/// An ARP request ("who has `target`? tell `sender`") from `src_mac`.
pub fn arp_request(src_mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

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
