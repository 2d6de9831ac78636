//! Validation of received VXLAN packets.
//!
//! [`decapsulate`] takes what a UDP socket delivers (VXLAN header + inner frame).
//! [`decapsulate_ip`] and [`decapsulate_ethernet`] take a whole outer packet (raw sockets, pcap),
//! check the outer IP and UDP headers including checksums, and report every layer's fields and
//! offsets so they can be shown.

use crate::checksum;
use crate::error::{DecapError, Layer};
use crate::vni::Vni;
use crate::wire::{
    EtherType, EthernetPacket, EthernetRepr, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, UdpPacket,
    UdpRepr, VxlanPacket, VxlanRepr, ETHERNET_HEADER_LEN, IPPROTO_UDP, IPV6_HEADER_LEN,
    UDP_HEADER_LEN, VXLAN_HEADER_LEN,
};

/// A validated VXLAN payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapsulated<'a> {
    pub vni: Vni,
    /// The flags byte as received (only the I bit is meaningful).
    pub flags: u8,
    /// The inner Ethernet frame; at least an Ethernet header long.
    pub inner: &'a [u8],
}

/// Validates a UDP payload as VXLAN: header present, I flag set, inner frame at least an
/// Ethernet header. Never panics, whatever the input.
pub fn decapsulate(udp_payload: &[u8]) -> Result<Decapsulated<'_>, DecapError> {
    let packet = VxlanPacket::new_checked(udp_payload)?;
    let repr = VxlanRepr::parse(&packet)?;
    let inner = packet.payload();
    if inner.len() < ETHERNET_HEADER_LEN {
        return Err(DecapError::Truncated {
            layer: Layer::InnerEthernet,
            required: ETHERNET_HEADER_LEN,
            actual: inner.len(),
        });
    }
    Ok(Decapsulated {
        vni: repr.vni,
        flags: packet.flags(),
        inner,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OuterIp {
    V4(Ipv4Repr),
    V6(Ipv6Repr),
}

/// Where each layer starts in the packet that was parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerOffsets {
    pub ip: usize,
    pub udp: usize,
    pub vxlan: usize,
    pub inner: usize,
    /// End of the UDP datagram: bytes after it are link-layer padding.
    pub end: usize,
}

/// A whole outer packet, validated layer by layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterPacket<'a> {
    pub ethernet: Option<EthernetRepr>,
    pub ip: OuterIp,
    pub udp: UdpRepr,
    /// The UDP checksum as received; zero means none was sent.
    pub udp_checksum: u16,
    pub vxlan: Decapsulated<'a>,
    pub offsets: LayerOffsets,
}

/// Parses outer Ethernet + IP + UDP + VXLAN.
pub fn decapsulate_ethernet(frame: &[u8]) -> Result<OuterPacket<'_>, DecapError> {
    let ethernet = EthernetPacket::new_checked(frame, Layer::OuterEthernet)?;
    let repr = EthernetRepr::parse(&ethernet);
    match repr.ethertype {
        EtherType::IPV4 | EtherType::IPV6 => {}
        other => return Err(DecapError::NotIp { ethertype: other }),
    }
    let mut packet = parse_ip(ethernet.payload(), ETHERNET_HEADER_LEN)?;
    packet.ethernet = Some(repr);
    Ok(packet)
}

/// Parses outer IP + UDP + VXLAN (the IP version is taken from the first nibble).
pub fn decapsulate_ip(packet: &[u8]) -> Result<OuterPacket<'_>, DecapError> {
    parse_ip(packet, 0)
}

fn parse_ip(packet: &[u8], base: usize) -> Result<OuterPacket<'_>, DecapError> {
    let version = packet.first().map(|b| b >> 4);
    let (ip, ip_header_len, udp_bytes, pseudo) = match version {
        Some(6) => {
            let v6 = Ipv6Packet::new_checked(packet)?;
            let repr = Ipv6Repr::parse(&v6);
            if repr.next_header != IPPROTO_UDP {
                return Err(DecapError::NotUdp {
                    protocol: repr.next_header,
                });
            }
            let payload = v6.payload();
            let pseudo =
                checksum::pseudo_header_v6(repr.src, repr.dst, IPPROTO_UDP, payload.len() as u32);
            (OuterIp::V6(repr), IPV6_HEADER_LEN, payload, pseudo)
        }
        _ => {
            let v4 = Ipv4Packet::new_checked(packet)?;
            if !v4.verify_checksum() {
                return Err(DecapError::BadIpv4Checksum);
            }
            if v4.is_fragment() {
                return Err(DecapError::Fragmented);
            }
            let repr = Ipv4Repr::parse(&v4);
            if repr.protocol != IPPROTO_UDP {
                return Err(DecapError::NotUdp {
                    protocol: repr.protocol,
                });
            }
            let payload = v4.payload();
            let pseudo =
                checksum::pseudo_header_v4(repr.src, repr.dst, IPPROTO_UDP, payload.len() as u32);
            (OuterIp::V4(repr), v4.header_len(), payload, pseudo)
        }
    };
    let udp = UdpPacket::new_checked(udp_bytes)?;
    if udp.len_field() as usize != udp_bytes.len() {
        return Err(DecapError::BadUdpLength {
            udp_len: udp.len_field() as usize,
            available: udp_bytes.len(),
        });
    }
    let udp_checksum = udp.checksum();
    match (udp_checksum, ip) {
        (0, OuterIp::V4(_)) => {}
        (0, OuterIp::V6(_)) => return Err(DecapError::ZeroUdpChecksumIpv6),
        _ => {
            if !udp.verify_checksum(pseudo) {
                return Err(DecapError::BadUdpChecksum);
            }
        }
    }
    let vxlan = decapsulate(udp.payload())?;
    let udp_offset = base + ip_header_len;
    Ok(OuterPacket {
        ethernet: None,
        ip,
        udp: UdpRepr::parse(&udp),
        udp_checksum,
        vxlan,
        offsets: LayerOffsets {
            ip: base,
            udp: udp_offset,
            vxlan: udp_offset + UDP_HEADER_LEN,
            inner: udp_offset + UDP_HEADER_LEN + VXLAN_HEADER_LEN,
            end: udp_offset + udp_bytes.len(),
        },
    })
}
