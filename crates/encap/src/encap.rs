//! Encapsulation into headroom.
//!
//! The caller reads the inner frame into a buffer *after* some reserved headroom; the outer headers
//! are then written into that headroom, right in front of the frame, and the payload never moves.
//! One code path serves both uses: for a UDP socket only the VXLAN header is written (the kernel adds
//! UDP and IP), and for raw paths, tests, `explain` and pcap the full outer IPv4/IPv6 + UDP (+
//! Ethernet) stack is prepended as well.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::checksum;
use crate::error::EncapError;
use crate::mac::MacAddr;
use crate::vni::Vni;
use crate::wire::{
    EtherType, EthernetPacket, EthernetRepr, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, UdpPacket,
    UdpRepr, VxlanPacket, VxlanRepr, ETHERNET_HEADER_LEN, IPPROTO_UDP, IPV4_HEADER_LEN,
    IPV6_HEADER_LEN, UDP_HEADER_LEN, VXLAN_HEADER_LEN,
};

/// Headroom that fits the largest outer stack: Ethernet (14) + IPv6 (40) + UDP (8) + VXLAN (8).
pub const MAX_OUTER_LEN: usize =
    ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + UDP_HEADER_LEN + VXLAN_HEADER_LEN;

/// The outer UDP checksum policy (RFC 7348 §5, RFC 6935).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpChecksum {
    /// Send zero: what RFC 7348 recommends over IPv4 and what the Linux kernel does by default.
    Zero,
    /// Compute it: required over IPv6 unless the zero-checksum exemption is configured.
    Compute,
}

/// Outer source and destination, one address family by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpPair {
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
}

impl IpPair {
    pub fn new(src: IpAddr, dst: IpAddr) -> Result<Self, EncapError> {
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => Ok(IpPair::V4 { src, dst }),
            (IpAddr::V6(src), IpAddr::V6(dst)) => Ok(IpPair::V6 { src, dst }),
            _ => Err(EncapError::MixedAddressFamilies),
        }
    }

    pub const fn header_len(&self) -> usize {
        match self {
            IpPair::V4 { .. } => IPV4_HEADER_LEN,
            IpPair::V6 { .. } => IPV6_HEADER_LEN,
        }
    }
}

/// The full outer header stack, for paths where nobody else writes UDP and IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterStack {
    /// Outer Ethernet source and destination; `None` starts the packet at the IP header.
    pub ethernet: Option<(MacAddr, MacAddr)>,
    pub ips: IpPair,
    pub src_port: u16,
    pub dst_port: u16,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 DSCP/ECN byte or IPv6 traffic class.
    pub tos: u8,
    pub ipv4_ident: u16,
    pub dont_fragment: bool,
    pub ipv6_flow_label: u32,
    pub udp_checksum: UdpChecksum,
}

impl OuterStack {
    /// The Linux kernel vxlan driver's defaults: TTL 64, TOS 0, DF clear, zero UDP checksum over
    /// IPv4 and a real one over IPv6.
    pub fn new(ips: IpPair, src_port: u16, dst_port: u16) -> Self {
        let udp_checksum = match ips {
            IpPair::V4 { .. } => UdpChecksum::Zero,
            IpPair::V6 { .. } => UdpChecksum::Compute,
        };
        OuterStack {
            ethernet: None,
            ips,
            src_port,
            dst_port,
            ttl: 64,
            tos: 0,
            ipv4_ident: 0,
            dont_fragment: false,
            ipv6_flow_label: 0,
            udp_checksum,
        }
    }

    pub const fn header_len(&self) -> usize {
        let ethernet = if self.ethernet.is_some() {
            ETHERNET_HEADER_LEN
        } else {
            0
        };
        ethernet + self.ips.header_len() + UDP_HEADER_LEN
    }
}

/// What to wrap a frame in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encapsulation {
    pub vni: Vni,
    /// `None`: VXLAN header only, for a UDP socket.
    pub outer: Option<OuterStack>,
}

impl Encapsulation {
    /// VXLAN header only: what a UDP socket needs.
    pub const fn vxlan(vni: Vni) -> Self {
        Encapsulation { vni, outer: None }
    }

    pub const fn with_outer(vni: Vni, outer: OuterStack) -> Self {
        Encapsulation {
            vni,
            outer: Some(outer),
        }
    }

    /// Bytes written in front of the frame.
    pub const fn header_len(&self) -> usize {
        VXLAN_HEADER_LEN
            + match &self.outer {
                Some(outer) => outer.header_len(),
                None => 0,
            }
    }
}

/// Wraps the frame `buf[frame_start..]` by writing the headers into `buf[..frame_start]`, and
/// returns where the finished packet starts (`buf[start..]` is the packet).
///
/// Cost is constant in the frame size except for an IPv6 (or explicitly requested) UDP checksum,
/// which has to read the payload.
pub fn encapsulate(
    buf: &mut [u8],
    frame_start: usize,
    encapsulation: &Encapsulation,
) -> Result<usize, EncapError> {
    let header_len = encapsulation.header_len();
    if frame_start > buf.len() {
        return Err(EncapError::NoHeadroom {
            needed: header_len,
            available: buf.len(),
        });
    }
    let frame_len = buf.len() - frame_start;
    if frame_len < ETHERNET_HEADER_LEN {
        return Err(EncapError::InnerTooShort { len: frame_len });
    }
    if frame_start < header_len {
        return Err(EncapError::NoHeadroom {
            needed: header_len,
            available: frame_start,
        });
    }
    let start = frame_start - header_len;

    let vxlan_start = frame_start - VXLAN_HEADER_LEN;
    VxlanRepr {
        vni: encapsulation.vni,
    }
    .emit(&mut VxlanPacket::new_unchecked(
        &mut buf[vxlan_start..frame_start],
    ));

    let Some(outer) = &encapsulation.outer else {
        return Ok(start);
    };

    let udp_start = vxlan_start - UDP_HEADER_LEN;
    let udp_len = buf.len() - udp_start;
    let ip_start = udp_start - outer.ips.header_len();
    let ip_total_len = buf.len() - ip_start;
    // IPv6's length field excludes its own header; IPv4's includes it.
    let ip_len_limit = match outer.ips {
        IpPair::V4 { .. } => ip_total_len,
        IpPair::V6 { .. } => udp_len,
    };
    if ip_len_limit > u16::MAX as usize {
        return Err(EncapError::TooLong {
            len: ip_len_limit,
            limit: u16::MAX as usize,
        });
    }
    let udp_len = udp_len as u16;

    {
        let mut udp = UdpPacket::new_unchecked(&mut buf[udp_start..]);
        UdpRepr {
            src_port: outer.src_port,
            dst_port: outer.dst_port,
        }
        .emit(&mut udp, udp_len);
        if outer.udp_checksum == UdpChecksum::Compute {
            let pseudo = match outer.ips {
                IpPair::V4 { src, dst } => {
                    checksum::pseudo_header_v4(src, dst, IPPROTO_UDP, udp_len as u32)
                }
                IpPair::V6 { src, dst } => {
                    checksum::pseudo_header_v6(src, dst, IPPROTO_UDP, udp_len as u32)
                }
            };
            udp.fill_checksum(pseudo);
        }
    }

    match outer.ips {
        IpPair::V4 { src, dst } => Ipv4Repr {
            src,
            dst,
            protocol: IPPROTO_UDP,
            ttl: outer.ttl,
            dscp_ecn: outer.tos,
            ident: outer.ipv4_ident,
            dont_fragment: outer.dont_fragment,
        }
        .emit(
            &mut Ipv4Packet::new_unchecked(&mut buf[ip_start..udp_start]),
            udp_len,
        ),
        IpPair::V6 { src, dst } => Ipv6Repr {
            src,
            dst,
            next_header: IPPROTO_UDP,
            hop_limit: outer.ttl,
            traffic_class: outer.tos,
            flow_label: outer.ipv6_flow_label,
        }
        .emit(
            &mut Ipv6Packet::new_unchecked(&mut buf[ip_start..udp_start]),
            udp_len,
        ),
    }

    if let Some((src, dst)) = outer.ethernet {
        let ethertype = match outer.ips {
            IpPair::V4 { .. } => EtherType::IPV4,
            IpPair::V6 { .. } => EtherType::IPV6,
        };
        EthernetRepr {
            src,
            dst,
            ethertype,
        }
        .emit(&mut EthernetPacket::new_unchecked(
            &mut buf[start..ip_start],
        ));
    }
    Ok(start)
}

/// Convenience for cold paths (tests, `explain`, pcap writing): copies `frame` behind fresh
/// headroom and returns the finished packet.
pub fn encapsulate_to_vec(
    frame: &[u8],
    encapsulation: &Encapsulation,
) -> Result<Vec<u8>, EncapError> {
    let header_len = encapsulation.header_len();
    let mut buf = vec![0u8; header_len + frame.len()];
    buf[header_len..].copy_from_slice(frame);
    let start = encapsulate(&mut buf, header_len, encapsulation)?;
    buf.drain(..start);
    Ok(buf)
}
