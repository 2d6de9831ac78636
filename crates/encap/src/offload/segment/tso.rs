//! TSO: a TCP superframe cut at the MSS, each segment with its own IP length, IPv4 ID and
//! checksums, sequence number and flags, as the kernel's `tcp_gso_segment` makes them.

use std::ops::Range;

use crate::checksum::Sum;
use crate::error::OffloadError;
use crate::vni::Vni;
use crate::wire::{tcp::flags, Ipv4Packet, TcpPacket};

use super::super::frame::{TcpFrame, Transport};
use super::super::vnet::VirtioNetHdr;
use super::check_csum_start;
use super::cut::{CopyFn, Cut, Prefix, Segment};

/// A TCP superframe's layout and its cut at `min(gso_size, mss)` payload bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct TsoPlan {
    tf: TcpFrame,
    pub cut: Cut,
}

impl TsoPlan {
    pub(crate) fn new(hdr: &VirtioNetHdr, frame: &[u8], mss: usize) -> Result<Self, OffloadError> {
        if hdr.gso_size == 0 {
            return Err(OffloadError::GsoSizeZero);
        }
        if mss == 0 {
            return Err(OffloadError::MssZero);
        }
        let tf = TcpFrame::parse(frame)?;
        let want_v6 = hdr.gso_kind() == VirtioNetHdr::GSO_TCPV6;
        if tf.ip.ipv6 != want_v6 {
            return Err(OffloadError::GsoTypeMismatch {
                gso_type: hdr.gso_type,
                ip_version: if tf.ip.ipv6 { 6 } else { 4 },
            });
        }
        check_csum_start(hdr, tf.ip.l4)?;
        let seg_payload = mss.min(usize::from(hdr.gso_size));
        Ok(TsoPlan {
            tf,
            cut: Cut::new(tf.hdr_len(), tf.ip.end, seg_payload),
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
        let TcpFrame { ip, tcp_hlen } = self.tf;
        let (l3, l4) = (ip.l3, ip.l4);
        let hl = self.tf.hdr_len();
        let tcp = self.tf.tcp(frame);
        let base_seq = tcp.seq_number();
        let base_flags = tcp.flags();
        let base_id = ip.ipv4_ident(frame);

        // Every segment repeats the superframe's headers with a few fields changed: zero those in
        // a template, sum the template once, and per segment add only what changed (a
        // ones'-complement sum is a sum of its words, RFC 1624). Same bytes as summing each header.
        let mut prefix = Prefix::new(vni, &frame[..hl]);
        let template = prefix.headers();
        ip.clear_per_segment_fields(template);
        let mut template_tcp = TcpPacket::new_unchecked(&mut template[l4..]);
        template_tcp.set_seq_number(0);
        template_tcp.set_flags(0);
        template_tcp.set_checksum(0);
        let ip_base = Sum::new().add_bytes(&template[l3..l4]);
        // The pseudo-header without its length, and the TCP header without seq, flags, checksum.
        let tcp_base = self.tf.pseudo_header(frame, 0).add_bytes(&template[l4..]);

        let last = self.cut.segments - 1;
        let seg_payload = self.cut.seg_payload;
        let finish = move |seg: Segment<'_>| {
            let tcp_len = tcp_hlen + seg.payload_len;
            if ip.ipv6 {
                ip.set_len(seg.headers, tcp_len);
            } else {
                let total = (l4 - l3 + tcp_len) as u16;
                let id = base_id.wrapping_add(seg.index as u16);
                let mut v4 = Ipv4Packet::new_unchecked(&mut seg.headers[l3..l4]);
                v4.set_total_len(total);
                v4.set_ident(id);
                v4.set_checksum(ip_base.add_u16(total).add_u16(id).finish());
            }

            let seq = base_seq.wrapping_add((seg.index * seg_payload) as u32);
            let mut f = base_flags;
            if seg.index != last {
                f &= !(flags::FIN | flags::PSH);
            }
            if seg.index != 0 {
                f &= !flags::CWR;
            }
            // The flags are the low byte of the 16-bit word at the data offset.
            let sum = tcp_base
                .add_u32(tcp_len as u32)
                .add_u32(seq >> 16)
                .add_u32(seq & 0xFFFF)
                .add_u16(u16::from(f))
                .add_sum(seg.payload_sum);
            let mut th = TcpPacket::new_unchecked(&mut seg.headers[l4..]);
            th.set_seq_number(seq);
            th.set_flags(f);
            th.set_checksum(Transport::Tcp.finished_checksum(sum));
        };
        self.cut.write(frame, out, segments, &prefix, copy, finish);
    }
}
