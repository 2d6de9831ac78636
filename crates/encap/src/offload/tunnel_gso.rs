//! Wire -> TAP for UDP-tunnel GSO: one VXLAN datagram carrying a whole inner superframe.
//!
//! A Linux vxlan device hands TCP superframes down with `SKB_GSO_UDP_TUNNEL` and leaves the
//! splitting to the NIC. When the "NIC" is a veth (a kernel VTEP in another namespace of the same
//! machine), the skb reaches vxnet's socket unsplit: one datagram of VXLAN header + a 64 KB inner
//! TCP frame whose checksum is only the pseudo-header sum (CHECKSUM_PARTIAL). With `UDP_GRO` on,
//! the socket reports the inner MSS as the segment size, so cutting the datagram at that size (as
//! for a GRO run of separate datagrams) makes garbage.
//!
//! Such a datagram is recognised by its shape: the first inner IP packet spans the whole
//! datagram, which no wire datagram and no GRO run can do (a GRO run's first packet ends after
//! one segment). [`InnerSuperframe::prepare`] then makes it a TAP superframe: a virtio-net header
//! with `NEEDS_CSUM` and `TCPV4/6` (or `UDP_L4`) and the pseudo-header sum in the checksum field,
//! which the receiving stack consumes without ever splitting it (the cheapest path there is). A
//! TAP without a virtio-net header gets the segments instead ([`super::WirePlan`] on the header).
//!
//! The payload checksum of a superframe is never verified, as the kernel never verifies it
//! either: it never crossed a wire. (A 64 KB datagram a remote peer sent as IP fragments has the
//! same shape; its inner payload then relies on the outer UDP checksum, as with any VTEP.)

use crate::checksum::Sum;
use crate::error::{Layer, OffloadError};

use super::{tcp, TcpFrame, UdpFrame, VirtioNetHdr, TCP_CHECKSUM_OFFSET, UDP_CHECKSUM_OFFSET};

/// Why [`InnerSuperframe::parse`] refuses a frame whose IP packet is shorter than the frame.
pub const ENDS_EARLY: &str = "IP packet ends before the datagram does";

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
    /// exactly. An error says why not: the first packet of a GRO run, which ends after one
    /// segment, is `BadHeader { reason: ENDS_EARLY }`.
    pub fn parse(frame: &[u8]) -> Result<Self, OffloadError> {
        let (kind, end, ipv6) = match TcpFrame::parse(frame) {
            Ok(tf) => (Kind::Tcp(tf), tf.end, tf.ipv6),
            Err(OffloadError::NotTcp { .. }) => {
                let uf = UdpFrame::parse(frame)?;
                (Kind::Udp(uf), uf.end, uf.ipv6)
            }
            Err(e) => return Err(e),
        };
        if end != frame.len() {
            return Err(OffloadError::BadHeader {
                layer: if ipv6 {
                    Layer::InnerIpv6
                } else {
                    Layer::InnerIpv4
                },
                reason: ENDS_EARLY,
            });
        }
        Ok(InnerSuperframe { kind })
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

    /// Turns `frame` (the frame this was parsed from) into a TAP superframe: stores the
    /// pseudo-header sum the `NEEDS_CSUM` header asks for (whatever the field held, partial or
    /// complete) and returns that header. `gso_size` is the sender's segment payload: the
    /// `UDP_GRO` size when the socket reported one. UDP needs it (datagram boundaries are the
    /// application's); TCP without it is cut at `fallback_mss`.
    pub fn prepare(
        &self,
        frame: &mut [u8],
        gso_size: Option<u16>,
        fallback_mss: usize,
    ) -> Result<VirtioNetHdr, OffloadError> {
        let reported = gso_size.filter(|s| *s > 0).map(usize::from);
        let (l3, ipv6, l4, end, protocol_hdr) = match self.kind {
            Kind::Tcp(tf) => (tf.l3, tf.ipv6, tf.l4, tf.end, tf.hdr_len()),
            Kind::Udp(uf) => (uf.l3, uf.ipv6, uf.l4, uf.end, uf.hdr_len()),
        };
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
        let segment = u16::try_from(segment).unwrap_or(u16::MAX);
        let l4_len = end - l4;
        let (protocol, field, gso_type, csum_offset) = match self.kind {
            Kind::Tcp(_) => {
                let ecn = if frame[l4 + tcp::FLAGS] & tcp::CWR != 0 {
                    VirtioNetHdr::GSO_ECN
                } else {
                    0
                };
                let kind = if ipv6 {
                    VirtioNetHdr::GSO_TCPV6
                } else {
                    VirtioNetHdr::GSO_TCPV4
                };
                (
                    crate::wire::IPPROTO_TCP,
                    l4 + tcp::CHECKSUM.start,
                    kind | ecn,
                    TCP_CHECKSUM_OFFSET,
                )
            }
            Kind::Udp(_) => {
                // The UDP length of a USO superframe may describe one datagram; the segmenter
                // rewrites it per datagram, but the local stack reads the whole.
                let len = u16::try_from(l4_len).unwrap_or(0);
                frame[l4 + 4..l4 + 6].copy_from_slice(&len.to_be_bytes());
                (
                    crate::wire::IPPROTO_UDP,
                    l4 + UDP_CHECKSUM_OFFSET as usize,
                    VirtioNetHdr::GSO_UDP_L4,
                    UDP_CHECKSUM_OFFSET,
                )
            }
        };
        let pseudo: Sum = super::pseudo_header(frame, l3, ipv6, protocol, l4_len);
        frame[field..field + 2].copy_from_slice(&pseudo.fold().to_be_bytes());
        Ok(VirtioNetHdr {
            flags: VirtioNetHdr::FLAG_NEEDS_CSUM,
            gso_type,
            hdr_len: protocol_hdr as u16,
            gso_size: segment,
            csum_start: l4 as u16,
            csum_offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum;
    use crate::offload::{IpFrame, WirePlan};
    use crate::wire::IPPROTO_TCP;
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

    /// What a kernel VTEP hands over: the checksum field left as the pseudo-header sum.
    fn make_partial(frame: &mut [u8]) {
        let ip = IpFrame::parse(frame, IPPROTO_TCP).unwrap();
        let pseudo =
            crate::offload::pseudo_header(frame, ip.l3, ip.ipv6, IPPROTO_TCP, ip.end - ip.l4);
        let at = ip.l4 + 16;
        frame[at..at + 2].copy_from_slice(&pseudo.fold().to_be_bytes());
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn kernel_tcp_superframe_becomes_a_tso_write() {
        for v6 in [false, true] {
            let mut frame = tcp_superframe(v6, &payload(60_000), false);
            make_partial(&mut frame);
            let partial = frame.clone();
            let sf = InnerSuperframe::parse(&frame).unwrap();
            assert_eq!(sf.segments(MSS), 60_000usize.div_ceil(MSS));
            let hdr = sf.prepare(&mut frame, Some(MSS as u16), 1).unwrap();
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
            assert_eq!(
                frame, partial,
                "the kernel's partial sum is what NEEDS_CSUM wants"
            );
        }
    }

    #[test]
    fn a_complete_checksum_is_replaced_by_the_pseudo_header_sum() {
        let good = tcp_superframe(false, &payload(5000), true);
        let mut partial = good.clone();
        make_partial(&mut partial);
        let mut frame = good.clone();
        let hdr = InnerSuperframe::parse(&frame)
            .unwrap()
            .prepare(&mut frame, None, 1000)
            .unwrap();
        assert_eq!(frame, partial);
        assert_eq!(hdr.gso_size, 1000, "no GRO size: the fallback MSS");
        assert_eq!(
            hdr.gso_type,
            VirtioNetHdr::GSO_TCPV4 | VirtioNetHdr::GSO_ECN
        );
    }

    #[test]
    fn segments_of_the_prepared_superframe_carry_correct_checksums() {
        // The no-vnet-header path: the TAP gets what the segmenter makes of the prepared frame.
        let mut frame = tcp_superframe(false, &payload(10_000), false);
        make_partial(&mut frame);
        let hdr = InnerSuperframe::parse(&frame)
            .unwrap()
            .prepare(&mut frame, Some(MSS as u16), 1)
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
            let sum =
                crate::offload::pseudo_header(inner, ip.l3, false, IPPROTO_TCP, ip.end - ip.l4)
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
        // A USO superframe's UDP length may be one datagram's; the local stack reads the whole.
        out[34 + 4..34 + 6].copy_from_slice(&1208u16.to_be_bytes());
        let sf = InnerSuperframe::parse(&out).unwrap();
        assert_eq!(
            sf.prepare(&mut out.clone(), None, 1400),
            Err(OffloadError::GsoSizeZero)
        );
        let hdr = sf.prepare(&mut out, Some(1200), 1400).unwrap();
        assert_eq!(hdr.gso_type, VirtioNetHdr::GSO_UDP_L4);
        assert_eq!(
            (hdr.csum_start, hdr.csum_offset, hdr.gso_size),
            (34, 6, 1200)
        );
        assert_eq!(u16::from_be_bytes([out[38], out[39]]), 8008);
    }

    #[test]
    fn the_first_datagram_of_a_gro_run_is_not_a_superframe() {
        let one = tcp_superframe(false, &payload(MSS), false);
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
            let mut frame = bytes;
            if let Ok(sf) = InnerSuperframe::parse(&frame) {
                let _ = sf.prepare(&mut frame, gso, 1000);
            }
        }
    }
}
