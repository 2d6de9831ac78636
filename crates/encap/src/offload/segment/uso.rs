//! USO: a UDP superframe cut into datagrams of exactly `gso_size` payload bytes (the last
//! shorter), each with its own lengths, IPv4 ID and header checksum, and full UDP checksum.
//!
//! Unlike TCP, datagram boundaries are the application's: never re-cut, so a `gso_size` too big
//! for the underlay is refused rather than split smaller.

use std::ops::Range;

use crate::error::OffloadError;
use crate::vni::Vni;
use crate::wire::{Ipv4Packet, UdpPacket, IPV4_HEADER_LEN, TCP_HEADER_LEN, UDP_HEADER_LEN};

use super::super::frame::{Transport, UdpFrame};
use super::super::vnet::VirtioNetHdr;
use super::check_csum_start;
use super::cut::{CopyFn, Cut, Prefix, Segment};

#[derive(Debug, Clone, Copy)]
pub(super) struct UsoPlan {
    uf: UdpFrame,
    pub cut: Cut,
    /// Compute the UDP checksum (false only for IPv4 without one and no NEEDS_CSUM).
    checksum: bool,
}

impl UsoPlan {
    pub(crate) fn new(hdr: &VirtioNetHdr, frame: &[u8], mss: usize) -> Result<Self, OffloadError> {
        if hdr.gso_size == 0 {
            return Err(OffloadError::GsoSizeZero);
        }
        let uf = UdpFrame::parse(frame)?;
        let ip = uf.ip;
        check_csum_start(hdr, ip.l4)?;
        let seg_payload = usize::from(hdr.gso_size);
        // `mss` leaves room for an option-less IPv4 and TCP header: with those it is the largest
        // inner IP packet the underlay carries.
        let ip_len = ip.l4 - ip.l3 + UDP_HEADER_LEN + seg_payload;
        let max = mss.saturating_add(IPV4_HEADER_LEN + TCP_HEADER_LEN);
        if ip_len > max {
            return Err(OffloadError::SegmentTooBig { ip_len, max });
        }
        let sent_checksum = UdpPacket::new_unchecked(&frame[ip.l4..ip.end]).checksum();
        Ok(UsoPlan {
            uf,
            cut: Cut::new(uf.hdr_len(), ip.end, seg_payload),
            checksum: hdr.needs_csum() || ip.ipv6 || sent_checksum != 0,
        })
    }

    /// Writes `segments` of the superframe to the front of `out`.
    pub(crate) fn write(
        &self,
        frame: &[u8],
        vni: Vni,
        out: &mut [u8],
        segments: Range<usize>,
        copy: CopyFn,
    ) {
        let ip = self.uf.ip;
        let (l3, l4) = (ip.l3, ip.l4);
        let hl = self.uf.hdr_len();
        let base_id = ip.ipv4_ident(frame);
        let prefix = Prefix::new(vni, &frame[..hl]);

        let finish = move |seg: Segment<'_>| {
            let udp_len = UDP_HEADER_LEN + seg.payload_len;
            ip.set_len(seg.headers, udp_len);
            if !ip.ipv6 {
                let mut v4 = Ipv4Packet::new_unchecked(&mut seg.headers[l3..l4]);
                v4.set_ident(base_id.wrapping_add(seg.index as u16));
                v4.fill_checksum();
            }
            let udp_header = &mut seg.headers[l4..];
            let mut udp = UdpPacket::new_unchecked(&mut *udp_header);
            udp.set_len(udp_len as u16);
            udp.set_checksum(0);
            if self.checksum {
                let sum = self
                    .uf
                    .pseudo_header(frame, udp_len)
                    .add_bytes(udp_header)
                    .add_sum(seg.payload_sum);
                UdpPacket::new_unchecked(udp_header)
                    .set_checksum(Transport::Udp.finished_checksum(sum));
            }
        };
        self.cut.write(frame, out, segments, &prefix, copy, finish);
    }
}
