//! TAP -> wire for UDP-tunnel GSO: a whole inner TCP superframe leaves as ONE outer VXLAN frame.
//!
//! The receive side ([`super::tunnel_gso`]) takes such frames from kernel VTEPs; this is the
//! other direction. Instead of cutting a TSO superframe into MSS-sized datagrams, vxnet puts the
//! complete outer headers (Ethernet, IPv4, UDP, VXLAN) in front of it and writes the result into
//! a TAP ("underlay TAP") with a `virtio_net_hdr_v1_hash_tunnel` header (24 bytes, Linux 6.17+):
//! the kernel marks the skb `SKB_GSO_UDP_TUNNEL` and segments it only where a device needs
//! segments (a veth never does; a NIC with `tx-udp_tnl-segmentation` does it in hardware).
//!
//! The kernel's rules (`tun_vnet_hdr_tnl_to_skb` and `virtio_net_hdr_tnl_to_skb`):
//! - `NEEDS_CSUM` is required, with `csum_start`/`csum_offset` naming the INNER TCP checksum,
//!   which holds the pseudo-header sum over the whole superframe (what a TSO read leaves there);
//! - `gso_type` is the inner type or-ed with exactly one of the tunnel bits (outer IPv4/IPv6);
//! - the offsets are in order: outer transport header, then inner network header, then
//!   `csum_start`;
//! - the outer IPv4 and UDP lengths cover the whole superframe (per-segment lengths are
//!   accepted by the write and then trimmed to one segment by the receiver's `ip_rcv`).
//!
//! The outer UDP checksum is zero (RFC 7348 allows it over IPv4, and Linux vxlan sends it so by
//! default), so `UDP_TUNNEL_CSUM` stays clear.

use std::net::Ipv4Addr;

use crate::error::{Layer, OffloadError};
use crate::wire::ethernet::{EtherType, EthernetPacket, EthernetRepr, ETHERNET_HEADER_LEN};
use crate::wire::ipv4::{Ipv4Packet, Ipv4Repr, IPV4_HEADER_LEN};
use crate::wire::udp::{UdpPacket, UdpRepr, UDP_HEADER_LEN};
use crate::wire::vxlan::{VxlanPacket, VxlanRepr, VXLAN_HEADER_LEN};
use crate::wire::IPPROTO_UDP;
use crate::{MacAddr, Vni};

use super::frame::TcpFrame;
use super::vnet::{VirtioNetHdr, VIRTIO_NET_HDR_LEN};
use super::TCP_CHECKSUM_OFFSET;

/// Size of `struct virtio_net_hdr_v1_hash_tunnel`: what `TUNSETVNETHDRSZ` must be set to on the
/// underlay TAP (anything shorter and the kernel ignores the tunnel bits, EINVAL).
pub const TUNNEL_VNET_HDR_LEN: usize = 24;
/// Outer Ethernet + IPv4 + UDP + VXLAN in front of the inner frame.
pub const OUTER_IPV4_LEN: usize =
    ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN + VXLAN_HEADER_LEN;
/// Everything written in front of the inner frame: the tunnel header and the outer headers.
pub const TUNNEL_PREFIX_LEN: usize = TUNNEL_VNET_HDR_LEN + OUTER_IPV4_LEN;
/// Largest inner frame one outer IPv4 packet can carry (its total length is 16 bits).
pub const MAX_TUNNEL_INNER_FRAME: usize =
    u16::MAX as usize - IPV4_HEADER_LEN - UDP_HEADER_LEN - VXLAN_HEADER_LEN;

/// Byte ranges of `virtio_net_hdr_v1_hash_tunnel` (native endian, like the 10-byte header it
/// starts with, which is [`super::vnet::field`]).
pub mod field {
    use std::ops::Range;
    pub const NUM_BUFFERS: Range<usize> = 10..12;
    pub const HASH_VALUE: Range<usize> = 12..16;
    pub const HASH_REPORT: Range<usize> = 16..18;
    pub const PADDING: Range<usize> = 18..20;
    pub const OUTER_TH_OFFSET: Range<usize> = 20..22;
    pub const INNER_NH_OFFSET: Range<usize> = 22..24;
}

/// Or-ed into `gso_type`: the outer header is IPv4 / IPv6 and UDP (`VIRTIO_NET_HDR_GSO_UDP_TUNNEL_*`).
pub const GSO_UDP_TUNNEL_IPV4: u8 = 0x20;
pub const GSO_UDP_TUNNEL_IPV6: u8 = 0x40;
/// `flags`: the outer UDP checksum is to be completed too (not used: it is zero).
pub const FLAG_UDP_TUNNEL_CSUM: u8 = 8;

/// What goes into the outer headers of one superframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterIpv4 {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub ttl: u8,
    /// DSCP and ECN bits of the outer TOS byte.
    pub tos: u8,
    pub df: bool,
    /// IPv4 ID of the first segment; the kernel's segmentation counts up from it.
    pub ident: u16,
    pub vni: Vni,
}

/// One superframe made ready for the underlay TAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelFrame {
    /// Segments the kernel (or the NIC) will make of it.
    pub segments: usize,
    /// Outer IPv4 packet length of a full-size segment: what must fit the path MTU.
    pub segment_ip_len: usize,
    /// IPv4 IDs the segments use (the caller's counter advances by this much).
    pub idents: u16,
    /// Inner headers every segment repeats (Ethernet to the end of TCP).
    pub inner_hdr_len: usize,
}

/// Writes the tunnel header and outer headers for `frame` (read from a TAP behind `inner`, a
/// TCP TSO header) into `prefix`; the frame itself follows it unchanged in the same write.
/// Refuses anything but a checksum-pending TCP superframe whose IP packet fills the frame, and a
/// frame too long for one outer IPv4 packet: the caller sends those the ordinary way.
pub fn wrap_superframe(
    inner: &VirtioNetHdr,
    frame: &[u8],
    outer: &OuterIpv4,
    prefix: &mut [u8; TUNNEL_PREFIX_LEN],
) -> Result<TunnelFrame, OffloadError> {
    let kind = inner.gso_kind();
    if kind != VirtioNetHdr::GSO_TCPV4 && kind != VirtioNetHdr::GSO_TCPV6 {
        return Err(OffloadError::UnsupportedGsoType {
            gso_type: inner.gso_type,
        });
    }
    if !inner.needs_csum() {
        return Err(OffloadError::BadHeader {
            layer: Layer::VirtioNet,
            reason: "a TSO superframe without NEEDS_CSUM",
        });
    }
    if inner.gso_size == 0 {
        return Err(OffloadError::GsoSizeZero);
    }
    let tcp = TcpFrame::parse(frame)?;
    if (kind == VirtioNetHdr::GSO_TCPV6) != tcp.ip.ipv6 {
        return Err(OffloadError::GsoTypeMismatch {
            gso_type: inner.gso_type,
            ip_version: if tcp.ip.ipv6 { 6 } else { 4 },
        });
    }
    if usize::from(inner.csum_start) != tcp.ip.l4 {
        return Err(OffloadError::CsumStartMismatch {
            csum_start: inner.csum_start,
            tcp_offset: tcp.ip.l4,
        });
    }
    // The kernel segments by the inner IP length: it must span the frame exactly.
    if tcp.ip.end != frame.len() {
        return Err(OffloadError::FrameChanged {
            planned: tcp.ip.end,
            actual: frame.len(),
        });
    }
    if frame.len() > MAX_TUNNEL_INNER_FRAME {
        return Err(OffloadError::OutputTooSmall {
            required: frame.len(),
            available: MAX_TUNNEL_INNER_FRAME,
        });
    }
    let gso_size = usize::from(inner.gso_size);
    let segments = tcp.payload_len().div_ceil(gso_size).max(1);
    let inner_hdr_len = tcp.hdr_len();

    let (hdr, headers) = prefix.split_at_mut(TUNNEL_VNET_HDR_LEN);
    let hdr_fields = VirtioNetHdr {
        flags: VirtioNetHdr::FLAG_NEEDS_CSUM,
        gso_type: inner.gso_type | GSO_UDP_TUNNEL_IPV4,
        hdr_len: (OUTER_IPV4_LEN + inner_hdr_len) as u16,
        gso_size: inner.gso_size,
        csum_start: (OUTER_IPV4_LEN + tcp.ip.l4) as u16,
        csum_offset: TCP_CHECKSUM_OFFSET,
    };
    hdr.fill(0);
    hdr[..VIRTIO_NET_HDR_LEN].copy_from_slice(&hdr_fields.to_bytes());
    let outer_th = (ETHERNET_HEADER_LEN + IPV4_HEADER_LEN) as u16;
    let inner_nh = (OUTER_IPV4_LEN + tcp.ip.l3) as u16;
    hdr[field::OUTER_TH_OFFSET].copy_from_slice(&outer_th.to_ne_bytes());
    hdr[field::INNER_NH_OFFSET].copy_from_slice(&inner_nh.to_ne_bytes());

    let (eth, rest) = headers.split_at_mut(ETHERNET_HEADER_LEN);
    EthernetRepr {
        src: outer.src_mac,
        dst: outer.dst_mac,
        ethertype: EtherType::IPV4,
    }
    .emit(&mut EthernetPacket::new_unchecked(eth));
    let (ip, rest) = rest.split_at_mut(IPV4_HEADER_LEN);
    let udp_len = UDP_HEADER_LEN + VXLAN_HEADER_LEN + frame.len();
    Ipv4Repr {
        src: outer.src,
        dst: outer.dst,
        protocol: IPPROTO_UDP,
        ttl: outer.ttl,
        dscp_ecn: outer.tos,
        ident: outer.ident,
        dont_fragment: outer.df,
    }
    .emit(&mut Ipv4Packet::new_unchecked(ip), udp_len as u16);
    let (udp, vxlan) = rest.split_at_mut(UDP_HEADER_LEN);
    UdpRepr {
        src_port: outer.src_port,
        dst_port: outer.dst_port,
    }
    .emit(&mut UdpPacket::new_unchecked(udp), udp_len as u16);
    VxlanRepr { vni: outer.vni }.emit(&mut VxlanPacket::new_unchecked(vxlan));

    Ok(TunnelFrame {
        segments,
        segment_ip_len: IPV4_HEADER_LEN
            + UDP_HEADER_LEN
            + VXLAN_HEADER_LEN
            + inner_hdr_len
            + gso_size.min(tcp.payload_len().max(1)),
        idents: segments as u16,
        inner_hdr_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::frame::make_partial;
    use crate::wire::IPPROTO_TCP;
    use etherparse::PacketBuilder;

    const MSS: u16 = 1398;

    fn superframe(v6: bool, payload: usize) -> (VirtioNetHdr, Vec<u8>) {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let ip = if v6 {
            eth.ipv6([0xfd; 16], [0xfe; 16], 64)
        } else {
            eth.ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64)
        };
        let mut frame = Vec::new();
        let data: Vec<u8> = (0..payload).map(|i| i as u8).collect();
        ip.tcp(40000, 5201, 7, 1000)
            .ack(1)
            .write(&mut frame, &data)
            .unwrap();
        make_partial(&mut frame, IPPROTO_TCP);
        let l4 = if v6 { 54 } else { 34 };
        let hdr = VirtioNetHdr {
            flags: VirtioNetHdr::FLAG_NEEDS_CSUM,
            gso_type: if v6 {
                VirtioNetHdr::GSO_TCPV6
            } else {
                VirtioNetHdr::GSO_TCPV4
            },
            hdr_len: l4 + 20,
            gso_size: MSS,
            csum_start: l4,
            csum_offset: 16,
        };
        (hdr, frame)
    }

    fn outer() -> OuterIpv4 {
        OuterIpv4 {
            src_mac: MacAddr([2, 0, 0, 0, 0, 0xa]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 0xb]),
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(192, 0, 2, 2),
            src_port: 49152,
            dst_port: 4789,
            ttl: 64,
            tos: 0,
            df: true,
            ident: 7,
            vni: Vni::new(42).unwrap(),
        }
    }

    #[test]
    fn the_prefix_is_the_kernels_tunnel_layout() {
        for v6 in [false, true] {
            let (hdr, frame) = superframe(v6, 60_000);
            let mut prefix = [0u8; TUNNEL_PREFIX_LEN];
            let t = wrap_superframe(&hdr, &frame, &outer(), &mut prefix).unwrap();
            assert_eq!(t.segments, 60_000usize.div_ceil(usize::from(MSS)));
            let l4 = if v6 { 54 } else { 34 };
            assert_eq!(t.segment_ip_len, 36 + l4 + 20 + usize::from(MSS));
            let vnet = VirtioNetHdr::parse(&prefix).unwrap();
            assert_eq!(vnet.gso_type, hdr.gso_type | GSO_UDP_TUNNEL_IPV4);
            assert_eq!(usize::from(vnet.csum_start), 50 + l4);
            assert_eq!(usize::from(vnet.hdr_len), 50 + l4 + 20);
            assert_eq!(vnet.gso_size, MSS);
            let ne = |r: std::ops::Range<usize>| {
                u16::from_ne_bytes([prefix[r.start], prefix[r.start + 1]])
            };
            assert_eq!(ne(field::OUTER_TH_OFFSET), 34);
            assert_eq!(ne(field::INNER_NH_OFFSET), 64);
            assert_eq!(&prefix[10..20], &[0; 10]);
            // The outer headers parse, with lengths covering the whole superframe.
            let mut whole = prefix[TUNNEL_VNET_HDR_LEN..].to_vec();
            whole.extend_from_slice(&frame);
            let p = etherparse::SlicedPacket::from_ethernet(&whole).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
                panic!("outer IPv4")
            };
            assert_eq!(usize::from(ip.header().total_len()), whole.len() - 14);
            assert!(ip.header().dont_fragment());
            assert_eq!(ip.header().identification(), 7);
            let ip_hdr = Ipv4Packet::new_checked(&whole[14..]).unwrap();
            assert!(ip_hdr.verify_checksum());
            let Some(etherparse::TransportSlice::Udp(udp)) = p.transport else {
                panic!("outer UDP")
            };
            assert_eq!((udp.source_port(), udp.destination_port()), (49152, 4789));
            assert_eq!(usize::from(udp.length()), whole.len() - 34);
            assert_eq!(udp.checksum(), 0);
            assert_eq!(&whole[42..50], &[8, 0, 0, 0, 0, 0, 42, 0]);
            assert_eq!(&whole[50..], &frame[..]);
        }
    }

    #[test]
    fn anything_but_a_pending_tcp_superframe_is_refused() {
        let (hdr, frame) = superframe(false, 5000);
        let mut prefix = [0u8; TUNNEL_PREFIX_LEN];
        let refuse = |hdr: VirtioNetHdr, frame: &[u8]| {
            let mut prefix = [0u8; TUNNEL_PREFIX_LEN];
            wrap_superframe(&hdr, frame, &outer(), &mut prefix).unwrap_err()
        };
        let uso = VirtioNetHdr {
            gso_type: VirtioNetHdr::GSO_UDP_L4,
            ..hdr
        };
        assert!(matches!(
            refuse(uso, &frame),
            OffloadError::UnsupportedGsoType { .. }
        ));
        let done = VirtioNetHdr { flags: 0, ..hdr };
        assert!(matches!(
            refuse(done, &frame),
            OffloadError::BadHeader { .. }
        ));
        let zero = VirtioNetHdr { gso_size: 0, ..hdr };
        assert_eq!(refuse(zero, &frame), OffloadError::GsoSizeZero);
        let v6 = VirtioNetHdr {
            gso_type: VirtioNetHdr::GSO_TCPV6,
            ..hdr
        };
        assert!(matches!(
            refuse(v6, &frame),
            OffloadError::GsoTypeMismatch { .. }
        ));
        let moved = VirtioNetHdr {
            csum_start: 30,
            ..hdr
        };
        assert!(matches!(
            refuse(moved, &frame),
            OffloadError::CsumStartMismatch { .. }
        ));
        let mut padded = frame.clone();
        padded.extend_from_slice(&[0; 4]);
        assert!(matches!(
            refuse(hdr, &padded),
            OffloadError::FrameChanged { .. }
        ));
        assert!(refuse(hdr, &frame[..40]).to_string().contains("truncated"));
        assert!(wrap_superframe(&hdr, &frame, &outer(), &mut prefix).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300), gso in proptest::num::u16::ANY, start in proptest::num::u16::ANY) {
            let hdr = VirtioNetHdr {
                flags: 1, gso_type: 1, hdr_len: 0, gso_size: gso, csum_start: start, csum_offset: 16,
            };
            let mut prefix = [0u8; TUNNEL_PREFIX_LEN];
            let _ = wrap_superframe(&hdr, &bytes, &outer(), &mut prefix);
        }
    }
}
