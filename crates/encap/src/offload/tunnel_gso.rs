//! Wire -> TAP for UDP-tunnel GSO: one VXLAN datagram carrying a whole inner superframe.
//!
//! A Linux vxlan device hands TCP superframes down with `SKB_GSO_UDP_TUNNEL` and leaves the
//! splitting to the NIC. When the "NIC" is a veth (a kernel VTEP in another namespace of the same
//! machine), the skb reaches vxnet's socket unsplit: one datagram of VXLAN header + a 64 KB inner
//! TCP frame whose checksum is only the pseudo-header sum (CHECKSUM_PARTIAL). With `UDP_GRO` on,
//! the socket reports the inner MSS as the segment size, so cutting the datagram at that size (as
//! for a GRO run of separate datagrams) makes garbage.
//!
//! Such a datagram is recognised by its shape and its checksum: the first inner IP packet spans
//! the whole datagram, which no GRO run can do (a GRO run's first packet ends after one segment),
//! and its TCP/UDP checksum field holds exactly the pseudo-header sum the kernel leaves for a NIC.
//! [`InnerSuperframe::prepare`] then makes it a TAP superframe: a virtio-net header with
//! `NEEDS_CSUM` and `TCPV4/6` (or `UDP_L4`), which the receiving stack consumes without ever
//! splitting it (the cheapest path there is). A TAP without a virtio-net header gets the segments
//! instead ([`super::WirePlan`] on the header).
//!
//! The checksum rule keeps wire-born datagrams out: a remote peer's oversize datagram,
//! reassembled from IP fragments, can have the same shape, but its checksum is a complete one.
//! It stays an oversize frame (VTEPs do not fragment), rather than a superframe whose
//! `NEEDS_CSUM` would make the receiving stack recompute, and so hide, any corruption. A partial
//! checksum has nothing to verify: the superframe never crossed a wire.

use crate::error::{Layer, OffloadError};
use crate::wire::tcp::flags as tcp_flags;

use super::frame::{holds_partial_checksum, IpFrame, TcpFrame, Transport, UdpFrame};
use super::{VirtioNetHdr, TCP_CHECKSUM_OFFSET, UDP_CHECKSUM_OFFSET};

/// Why [`InnerSuperframe::parse`] refuses a frame whose IP packet is shorter than the frame.
pub const ENDS_EARLY: &str = "IP packet ends before the datagram does";
/// Why [`InnerSuperframe::parse`] refuses a frame whose checksum is not a kernel's partial one.
pub const NOT_PARTIAL: &str = "checksum is not the pseudo-header sum a kernel leaves for a NIC";

/// An inner frame that is exactly one TCP or UDP superframe, with its header layout checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerSuperframe {
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp(TcpFrame),
    Udp(UdpFrame),
}

impl InnerSuperframe {
    /// Recognises `frame` (an inner Ethernet frame) as one TCP or UDP packet that fills it
    /// exactly and carries a partial checksum. An error says why not: the first packet of a GRO
    /// run, which ends after one segment, is `BadHeader { reason: ENDS_EARLY }`; a complete
    /// checksum is `BadHeader { reason: NOT_PARTIAL }`.
    pub fn parse(frame: &[u8]) -> Result<Self, OffloadError> {
        let kind = match TcpFrame::parse(frame) {
            Ok(tf) => Kind::Tcp(tf),
            Err(OffloadError::NotTcp { .. }) => Kind::Udp(UdpFrame::parse(frame)?),
            Err(e) => return Err(e),
        };
        let superframe = InnerSuperframe { kind };
        let IpFrame { ipv6, l4, end, .. } = superframe.ip();
        let ip_layer = if ipv6 {
            Layer::InnerIpv6
        } else {
            Layer::InnerIpv4
        };
        if end != frame.len() {
            return Err(OffloadError::BadHeader {
                layer: ip_layer,
                reason: ENDS_EARLY,
            });
        }
        let transport = superframe.transport();
        let pseudo = superframe
            .ip()
            .pseudo_header(frame, transport.protocol(), end - l4);
        if !holds_partial_checksum(frame, l4 + transport.checksum_offset(), pseudo) {
            return Err(OffloadError::BadHeader {
                layer: transport.layer(),
                reason: NOT_PARTIAL,
            });
        }
        Ok(superframe)
    }

    fn ip(&self) -> IpFrame {
        match self.kind {
            Kind::Tcp(tf) => tf.ip,
            Kind::Udp(uf) => uf.ip,
        }
    }

    fn transport(&self) -> Transport {
        match self.kind {
            Kind::Tcp(_) => Transport::Tcp,
            Kind::Udp(_) => Transport::Udp,
        }
    }

    /// Headers every segment repeats (Ethernet to the end of TCP/UDP).
    pub fn hdr_len(&self) -> usize {
        match self.kind {
            Kind::Tcp(tf) => tf.hdr_len(),
            Kind::Udp(uf) => uf.hdr_len(),
        }
    }

    pub fn payload_len(&self) -> usize {
        match self.kind {
            Kind::Tcp(tf) => tf.payload_len(),
            Kind::Udp(uf) => uf.payload_len(),
        }
    }

    /// Segments the superframe stands for at `gso_size` payload bytes each.
    pub fn segments(&self, gso_size: usize) -> usize {
        self.payload_len().div_ceil(gso_size.max(1)).max(1)
    }

    /// The virtio-net header that hands `frame` (the frame this was parsed from) to a TAP
    /// whole. `gso_size` is the sender's segment payload: the `UDP_GRO` size when the socket
    /// reported one. UDP needs it (datagram boundaries are the application's); TCP without it
    /// is cut at `fallback_mss`. The frame's partial checksum is already what `NEEDS_CSUM` wants.
    pub fn prepare(
        &self,
        frame: &[u8],
        gso_size: Option<u16>,
        fallback_mss: usize,
    ) -> Result<VirtioNetHdr, OffloadError> {
        let reported = gso_size.filter(|s| *s > 0).map(usize::from);
        let IpFrame { ipv6, l4, end, .. } = self.ip();
        if frame.len() != end {
            return Err(OffloadError::FrameChanged {
                planned: end,
                actual: frame.len(),
            });
        }
        let segment = match (self.kind, reported) {
            (_, Some(size)) => size,
            (Kind::Tcp(_), None) if fallback_mss > 0 => fallback_mss,
            (Kind::Tcp(_), None) => return Err(OffloadError::MssZero),
            (Kind::Udp(_), None) => return Err(OffloadError::GsoSizeZero),
        };
        let (gso_type, csum_offset) = match self.kind {
            Kind::Tcp(tf) => {
                let ecn = if tf.tcp(frame).flags() & tcp_flags::CWR != 0 {
                    VirtioNetHdr::GSO_ECN
                } else {
                    0
                };
                let kind = if ipv6 {
                    VirtioNetHdr::GSO_TCPV6
                } else {
                    VirtioNetHdr::GSO_TCPV4
                };
                (kind | ecn, TCP_CHECKSUM_OFFSET)
            }
            Kind::Udp(_) => (VirtioNetHdr::GSO_UDP_L4, UDP_CHECKSUM_OFFSET),
        };
        Ok(VirtioNetHdr {
            flags: VirtioNetHdr::FLAG_NEEDS_CSUM,
            gso_type,
            hdr_len: self.hdr_len() as u16,
            gso_size: u16::try_from(segment).unwrap_or(u16::MAX),
            csum_start: l4 as u16,
            csum_offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum;
    use crate::offload::frame::make_partial;
    use crate::offload::WirePlan;
    use crate::wire::{IPPROTO_TCP, IPPROTO_UDP};
    use etherparse::PacketBuilder;

    const MSS: usize = 1398;

    fn tcp_superframe(v6: bool, payload: &[u8], cwr: bool) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let ip = if v6 {
            eth.ipv6([0xfd; 16], [0xfe; 16], 64)
        } else {
            eth.ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64)
        };
        let mut b = ip.tcp(40000, 5201, 1_000_000, 1000).ack(9).psh();
        if cwr {
            b = b.cwr();
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn kernel_tcp_superframe_becomes_a_tso_write() {
        for v6 in [false, true] {
            let mut frame = tcp_superframe(v6, &payload(60_000), false);
            make_partial(&mut frame, IPPROTO_TCP);
            let sf = InnerSuperframe::parse(&frame).unwrap();
            assert_eq!(sf.segments(MSS), 60_000usize.div_ceil(MSS));
            let hdr = sf.prepare(&frame, Some(MSS as u16), 1).unwrap();
            let l4 = if v6 { 54 } else { 34 };
            assert_eq!(
                hdr,
                VirtioNetHdr {
                    flags: VirtioNetHdr::FLAG_NEEDS_CSUM,
                    gso_type: if v6 {
                        VirtioNetHdr::GSO_TCPV6
                    } else {
                        VirtioNetHdr::GSO_TCPV4
                    },
                    hdr_len: (l4 + 20) as u16,
                    gso_size: MSS as u16,
                    csum_start: l4 as u16,
                    csum_offset: 16,
                }
            );
        }
    }

    #[test]
    fn a_complete_checksum_is_not_a_local_superframe() {
        // What an oversize datagram from a remote peer, reassembled from IP fragments, carries.
        let complete = tcp_superframe(false, &payload(5000), true);
        assert_eq!(
            InnerSuperframe::parse(&complete),
            Err(OffloadError::BadHeader {
                layer: Layer::InnerTcp,
                reason: NOT_PARTIAL
            })
        );
        let mut partial = complete.clone();
        make_partial(&mut partial, IPPROTO_TCP);
        let hdr = InnerSuperframe::parse(&partial)
            .unwrap()
            .prepare(&partial, None, 1000)
            .unwrap();
        assert_eq!(hdr.gso_size, 1000, "no GRO size: the fallback MSS");
        assert_eq!(
            hdr.gso_type,
            VirtioNetHdr::GSO_TCPV4 | VirtioNetHdr::GSO_ECN
        );
    }

    #[test]
    fn segments_of_the_prepared_superframe_carry_correct_checksums() {
        // The no-vnet-header path: the TAP gets what the segmenter makes of the superframe.
        let mut frame = tcp_superframe(false, &payload(10_000), false);
        make_partial(&mut frame, IPPROTO_TCP);
        let hdr = InnerSuperframe::parse(&frame)
            .unwrap()
            .prepare(&frame, Some(MSS as u16), 1)
            .unwrap();
        let mut plan = WirePlan::new(&hdr, &frame, MSS).unwrap();
        let mut out = vec![0u8; 20_000];
        let seg = plan
            .write_next(&frame, crate::Vni::new(7).unwrap(), &mut out, 64)
            .unwrap()
            .unwrap();
        assert_eq!(seg.segments, 10_000usize.div_ceil(MSS));
        let mut seen = 0;
        for datagram in out[..seg.total_len].chunks(seg.segment_size) {
            let inner = &datagram[8..];
            let parsed = etherparse::SlicedPacket::from_ethernet(inner).unwrap();
            let Some(etherparse::TransportSlice::Tcp(tcp)) = parsed.transport else {
                panic!("not TCP");
            };
            let ip = IpFrame::parse(inner, IPPROTO_TCP).unwrap();
            let sum = ip
                .pseudo_header(inner, IPPROTO_TCP, ip.end - ip.l4)
                .add_bytes(&inner[ip.l4..ip.end]);
            assert!(checksum::verifies(sum), "segment checksum");
            seen += tcp.payload().len();
        }
        assert_eq!(seen, 10_000);
    }

    #[test]
    fn udp_superframe_needs_the_reported_size() {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64)
            .udp(5000, 6000)
            .write(&mut out, &payload(8000))
            .unwrap();
        make_partial(&mut out, IPPROTO_UDP);
        let sf = InnerSuperframe::parse(&out).unwrap();
        assert_eq!(sf.prepare(&out, None, 1400), Err(OffloadError::GsoSizeZero));
        let hdr = sf.prepare(&out, Some(1200), 1400).unwrap();
        assert_eq!(hdr.gso_type, VirtioNetHdr::GSO_UDP_L4);
        assert_eq!(
            (hdr.csum_start, hdr.csum_offset, hdr.gso_size, hdr.hdr_len),
            (34, 6, 1200, 42)
        );
    }

    #[test]
    fn the_first_datagram_of_a_gro_run_is_not_a_superframe() {
        let mut one = tcp_superframe(false, &payload(MSS), false);
        make_partial(&mut one, IPPROTO_TCP);
        let mut run = one.clone();
        run.extend_from_slice(&[0u8; 8]);
        run.extend_from_slice(&one);
        assert_eq!(
            InnerSuperframe::parse(&run),
            Err(OffloadError::BadHeader {
                layer: Layer::InnerIpv4,
                reason: ENDS_EARLY
            })
        );
        let mut arp = vec![0xff; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(InnerSuperframe::parse(&arp).is_err());
        assert!(InnerSuperframe::parse(&one[..30]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_and_prepare_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), gso in proptest::option::of(proptest::num::u16::ANY)) {
            if let Ok(sf) = InnerSuperframe::parse(&bytes) {
                let _ = sf.prepare(&bytes, gso, 1000);
            }
        }
    }
}
