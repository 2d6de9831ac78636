//! TAP -> wire: turn whatever a TAP read returned into VXLAN payloads for one `UDP_SEGMENT` send.
//!
//! Output layout (written into the caller's buffer, nothing allocated):
//!
//! ```text
//! | VXLAN 8 | Eth [+802.1Q] | IP | TCP | payload chunk 0 |   <- segment_size bytes
//! | VXLAN 8 | Eth [+802.1Q] | IP | TCP | payload chunk 1 |   <- segment_size bytes
//! | ...                                                   |
//! | VXLAN 8 | Eth [+802.1Q] | IP | TCP | tail chunk      |   <- <= segment_size bytes
//! ```
//!
//! Every segment but the last has exactly `segment_size` bytes, so the kernel's UDP GSO can cut
//! the buffer at that fixed size and put each piece behind its own outer UDP/IP header.

use crate::checksum::{self, Sum};
use crate::error::OffloadError;
use crate::vni::Vni;
use crate::wire::{VxlanPacket, VxlanRepr, VXLAN_HEADER_LEN};

use super::copy_csum::{copy_and_sum, copy_then_sum};
use super::vnet::VirtioNetHdr;
use super::{tcp, TcpFrame, TCP_CHECKSUM_OFFSET};

/// Most segments one `UDP_SEGMENT` send may carry: the kernel's `UDP_MAX_SEGMENTS` is 64 on older
/// kernels (128 since 6.x), 64 is safe everywhere.
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Largest UDP payload one send may carry over IPv4 (65535 - 20 IPv4 - 8 UDP); IPv6 allows a
/// little more, so this is safe for both.
pub const MAX_UDP_GSO_PAYLOAD: usize = 65_507;

/// How many full-size segments of an inner MTU of `mtu` bytes one `UDP_SEGMENT` send carries:
/// each is VXLAN 8 + Ethernet 14 (+ a 4-byte 802.1Q tag, allowed for) + `mtu`, and a send
/// holds at most [`MAX_UDP_GSO_PAYLOAD`] bytes and [`MAX_GSO_SEGMENTS`] segments (at least 1).
///
/// Capping the TAP's `gso_max_segs` at this makes every TCP superframe one send: for MTU 1450
/// that is 44, where the kernel's default 64 KB superframe (47 segments) takes a second send for
/// its last 3 segments — a whole extra skb on both ends and an extra TAP write at the receiver.
pub fn segments_per_send(mtu: usize) -> usize {
    let segment = VXLAN_HEADER_LEN + 14 + 4 + mtu;
    (MAX_UDP_GSO_PAYLOAD / segment).clamp(1, MAX_GSO_SEGMENTS)
}

/// What [`prepare_for_wire`] wrote to the front of the output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segmented {
    /// Number of VXLAN datagrams (1 for a plain or checksum-completed frame).
    pub segments: usize,
    /// Bytes per datagram (VXLAN header + inner frame) of all but the last: the `UDP_SEGMENT`
    /// value. Equal to `total_len` when `segments == 1` (then no `UDP_SEGMENT` is needed).
    pub segment_size: usize,
    /// Bytes written, `out[..total_len]`.
    pub total_len: usize,
}

impl Segmented {
    /// Splits the output into `UDP_SEGMENT` sends of whole segments, each at most `max_bytes`
    /// (use [`MAX_UDP_GSO_PAYLOAD`]) and at most `max_segments` ([`MAX_GSO_SEGMENTS`]) long.
    /// A 64 KB superframe cut at MSS 1398 is 47 segments but ~68 KB once every segment carries
    /// its own headers, so it takes two sends.
    pub fn batches(&self, max_bytes: usize, max_segments: usize) -> GsoBatches {
        let per_send = max_bytes
            .checked_div(self.segment_size)
            .unwrap_or(1)
            .clamp(1, max_segments.max(1));
        GsoBatches {
            seg: *self,
            next_segment: 0,
            per_send,
        }
    }
}

/// One `UDP_SEGMENT` send: `out[range]`, `segments` datagrams of `segment_size` (the last shorter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GsoBatch {
    pub range: std::ops::Range<usize>,
    pub segments: usize,
    pub segment_size: usize,
}

/// Iterator returned by [`Segmented::batches`].
#[derive(Debug, Clone)]
pub struct GsoBatches {
    seg: Segmented,
    next_segment: usize,
    per_send: usize,
}

impl Iterator for GsoBatches {
    type Item = GsoBatch;

    fn next(&mut self) -> Option<GsoBatch> {
        if self.next_segment >= self.seg.segments {
            return None;
        }
        let first = self.next_segment;
        let count = self.per_send.min(self.seg.segments - first);
        self.next_segment += count;
        let start = first * self.seg.segment_size;
        let end = if self.next_segment == self.seg.segments {
            self.seg.total_len
        } else {
            start + count * self.seg.segment_size
        };
        Some(GsoBatch {
            range: start..end,
            segments: count,
            segment_size: self.seg.segment_size,
        })
    }
}

/// The geometry of a TSO split, computed once and shared by the size query and the writer.
struct Plan {
    tf: TcpFrame,
    seg_payload: usize,
    segments: usize,
    stride: usize,
    total_len: usize,
}

fn plan_tso(hdr: &VirtioNetHdr, frame: &[u8], mss: usize) -> Result<Plan, OffloadError> {
    if hdr.gso_size == 0 {
        return Err(OffloadError::GsoSizeZero);
    }
    if mss == 0 {
        return Err(OffloadError::MssZero);
    }
    let tf = TcpFrame::parse(frame)?;
    let want_v6 = hdr.gso_kind() == VirtioNetHdr::GSO_TCPV6;
    if tf.ipv6 != want_v6 {
        return Err(OffloadError::GsoTypeMismatch {
            gso_type: hdr.gso_type,
            ip_version: if tf.ipv6 { 6 } else { 4 },
        });
    }
    if hdr.needs_csum() && hdr.csum_start as usize != tf.l4 {
        return Err(OffloadError::CsumStartMismatch {
            csum_start: hdr.csum_start,
            tcp_offset: tf.l4,
        });
    }
    let seg_payload = mss.min(hdr.gso_size as usize);
    let payload = tf.payload_len();
    let segments = payload.div_ceil(seg_payload).max(1);
    if segments > MAX_GSO_SEGMENTS {
        return Err(OffloadError::TooManySegments {
            segments,
            max: MAX_GSO_SEGMENTS,
        });
    }
    let hl = VXLAN_HEADER_LEN + tf.hdr_len();
    let stride = hl + seg_payload;
    let last_payload = payload - (segments - 1) * seg_payload;
    let total_len = (segments - 1) * stride + hl + last_payload;
    Ok(Plan {
        tf,
        seg_payload,
        segments,
        stride,
        total_len,
    })
}

/// Most header bytes a segment repeats: Ethernet with an 802.1Q tag 18, IPv4 with options 60
/// (IPv6 40), TCP with options 60.
const MAX_SEGMENT_HEADERS: usize = 18 + 60 + 60;

/// Exact number of output bytes [`prepare_for_wire`] needs for this frame. The engine can instead
/// allocate once for the worst case: `MAX_GSO_SEGMENTS * (8 + 138 + mss)` (138 = Ethernet with
/// 802.1Q + IPv4 with options + TCP with options), or `8 + frame.len()` for non-GSO frames.
pub fn required_output_len(
    hdr: &VirtioNetHdr,
    frame: &[u8],
    mss: usize,
) -> Result<usize, OffloadError> {
    match hdr.gso_kind() {
        VirtioNetHdr::GSO_NONE => Ok(VXLAN_HEADER_LEN + frame.len()),
        VirtioNetHdr::GSO_TCPV4 | VirtioNetHdr::GSO_TCPV6 => {
            Ok(plan_tso(hdr, frame, mss)?.total_len)
        }
        _ => Err(OffloadError::UnsupportedGsoType {
            gso_type: hdr.gso_type,
        }),
    }
}

/// The one entry point for a frame read from the TAP (after its virtio-net header).
///
/// - `gso_type` NONE, no `NEEDS_CSUM`: copied behind a VXLAN header (one segment).
/// - `gso_type` NONE + `NEEDS_CSUM`: copied and the checksum at `csum_start + csum_offset`
///   completed (any L4 protocol, the kernel's pseudo-header sum is already in the field).
/// - `gso_type` TCPV4/TCPV6 (ECN bit allowed): split at `min(hdr.gso_size, mss)` payload bytes.
///   `mss` is the largest inner TCP payload the underlay carries without fragmenting.
///
/// Writes into `out[..total_len]`; never allocates, never panics.
pub fn prepare_for_wire(
    hdr: &VirtioNetHdr,
    frame: &[u8],
    vni: Vni,
    mss: usize,
    out: &mut [u8],
) -> Result<Segmented, OffloadError> {
    prepare_for_wire_with(hdr, frame, vni, mss, out, CopyMode::Fused)
}

/// How segment payloads are copied and checksummed; [`prepare_for_wire`] uses `Fused`. The other
/// mode exists so the benchmark can show what fusing buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// Sum while copying, one pass ([`copy_and_sum`]).
    Fused,
    /// `memcpy`, then checksum the copy ([`copy_then_sum`]).
    CopyThenSum,
}

/// [`prepare_for_wire`] with an explicit [`CopyMode`].
pub fn prepare_for_wire_with(
    hdr: &VirtioNetHdr,
    frame: &[u8],
    vni: Vni,
    mss: usize,
    out: &mut [u8],
    mode: CopyMode,
) -> Result<Segmented, OffloadError> {
    match hdr.gso_kind() {
        VirtioNetHdr::GSO_NONE => single(hdr, frame, vni, out),
        VirtioNetHdr::GSO_TCPV4 | VirtioNetHdr::GSO_TCPV6 => {
            let plan = plan_tso(hdr, frame, mss)?;
            let copy = match mode {
                CopyMode::Fused => copy_and_sum,
                CopyMode::CopyThenSum => copy_then_sum,
            };
            tso(&plan, frame, vni, out, copy)
        }
        _ => Err(OffloadError::UnsupportedGsoType {
            gso_type: hdr.gso_type,
        }),
    }
}

fn check_out(required: usize, out: &[u8]) -> Result<(), OffloadError> {
    if out.len() < required {
        return Err(OffloadError::OutputTooSmall {
            required,
            available: out.len(),
        });
    }
    Ok(())
}

fn write_vxlan(out: &mut [u8], vni: Vni) {
    if let Some(h) = out.get_mut(..VXLAN_HEADER_LEN) {
        VxlanRepr { vni }.emit(&mut VxlanPacket::new_unchecked(h));
    }
}

fn checksum_field(
    frame_len: usize,
    csum_start: u16,
    csum_offset: u16,
) -> Result<(usize, usize), OffloadError> {
    let start = csum_start as usize;
    let field = start + csum_offset as usize;
    if field + 2 > frame_len {
        return Err(OffloadError::BadChecksumOffsets {
            csum_start,
            csum_offset,
            frame_len,
        });
    }
    Ok((start, field))
}

/// RFC 768: a computed checksum of zero goes out as all ones (for TCP both mean the same).
fn store_checksum(field: &mut [u8], sum: Sum) {
    let mut value = sum.finish();
    if value == 0 {
        value = 0xFFFF;
    }
    if let Some(f) = field.get_mut(..2) {
        f.copy_from_slice(&value.to_be_bytes());
    }
}

/// Completes a `NEEDS_CSUM` checksum in place: sums from `csum_start` to the end (over the
/// pseudo-header sum the kernel left in the field) and stores the result in the field.
pub fn complete_checksum(
    frame: &mut [u8],
    csum_start: u16,
    csum_offset: u16,
) -> Result<(), OffloadError> {
    let (start, field) = checksum_field(frame.len(), csum_start, csum_offset)?;
    let sum = checksum::Sum::new().add_bytes(&frame[start..]);
    store_checksum(&mut frame[field..], sum);
    Ok(())
}

fn single(
    hdr: &VirtioNetHdr,
    frame: &[u8],
    vni: Vni,
    out: &mut [u8],
) -> Result<Segmented, OffloadError> {
    let total_len = VXLAN_HEADER_LEN + frame.len();
    let csum = if hdr.needs_csum() {
        Some(checksum_field(
            frame.len(),
            hdr.csum_start,
            hdr.csum_offset,
        )?)
    } else {
        None
    };
    check_out(total_len, out)?;
    write_vxlan(out, vni);
    let dst = &mut out[VXLAN_HEADER_LEN..total_len];
    match csum {
        None => dst.copy_from_slice(frame),
        Some((start, field)) => {
            // Fused: the bytes from csum_start are summed while they are copied.
            dst[..start].copy_from_slice(&frame[..start]);
            let sum = copy_and_sum(&mut dst[start..], &frame[start..]);
            store_checksum(&mut dst[field..], sum);
        }
    }
    Ok(Segmented {
        segments: 1,
        segment_size: total_len,
        total_len,
    })
}

fn tso(
    plan: &Plan,
    frame: &[u8],
    vni: Vni,
    out: &mut [u8],
    copy: fn(&mut [u8], &[u8]) -> Sum,
) -> Result<Segmented, OffloadError> {
    check_out(plan.total_len, out)?;
    let tf = &plan.tf;
    let hl = tf.hdr_len();
    let l3 = tf.l3;
    let l4 = tf.l4;
    let base_seq = u32::from_be_bytes(read4(frame, l4 + 4));
    let base_id = super::be16(frame, l3 + 4);
    let flags = frame[l4 + tcp::FLAGS];
    let payload = &frame[hl..tf.end];

    // Every segment repeats the superframe's headers with a few fields changed: zero those in
    // a template, sum the template once, and per segment add only what changed (a
    // ones'-complement sum is a sum of its words, RFC 1624). Same bytes as summing each header.
    let mut vxlan = [0u8; VXLAN_HEADER_LEN];
    write_vxlan(&mut vxlan, vni);
    let mut template = [0u8; MAX_SEGMENT_HEADERS];
    let template = &mut template[..hl];
    template.copy_from_slice(&frame[..hl]);
    if tf.ipv6 {
        template[l3 + 4..l3 + 6].fill(0);
    } else {
        template[l3 + 2..l3 + 6].fill(0);
        template[l3 + 10..l3 + 12].fill(0);
    }
    template[l4 + tcp::SEQ.start..l4 + tcp::SEQ.end].fill(0);
    template[l4 + tcp::FLAGS] = 0;
    template[l4 + tcp::CHECKSUM.start..l4 + tcp::CHECKSUM.end].fill(0);
    let ip_base = Sum::new().add_bytes(&template[l3..l4]);
    // The pseudo-header without its length, and the TCP header without seq, flags, checksum.
    let tcp_base = tf.pseudo_header(frame, 0).add_bytes(&template[l4..]);

    for i in 0..plan.segments {
        let first = i == 0;
        let last = i + 1 == plan.segments;
        let off = i * plan.seg_payload;
        let chunk = &payload[off..payload.len().min(off + plan.seg_payload)];
        let start = i * plan.stride;
        let seg = &mut out[start..start + VXLAN_HEADER_LEN + hl + chunk.len()];
        let (head, data) = seg.split_at_mut(VXLAN_HEADER_LEN + hl);
        let payload_sum = copy(data, chunk);
        let (vx, hdrs) = head.split_at_mut(VXLAN_HEADER_LEN);
        vx.copy_from_slice(&vxlan);
        hdrs.copy_from_slice(template);

        let tcp_len = tf.tcp_hlen + chunk.len();
        if tf.ipv6 {
            hdrs[l3 + 4..l3 + 6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        } else {
            let total = (l4 - l3 + tcp_len) as u16;
            let id = base_id.wrapping_add(i as u16);
            hdrs[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
            hdrs[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
            let c = ip_base.add_u16(total).add_u16(id).finish();
            hdrs[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }

        let seq = base_seq.wrapping_add(off as u32);
        let mut f = flags;
        if !last {
            f &= !(tcp::FIN | tcp::PSH);
        }
        if !first {
            f &= !tcp::CWR;
        }
        let th = &mut hdrs[l4..];
        th[tcp::SEQ].copy_from_slice(&seq.to_be_bytes());
        th[tcp::FLAGS] = f;
        // The flags are the low byte of the 16-bit word at offset 12.
        let sum = tcp_base
            .add_u32(tcp_len as u32)
            .add_u32(seq >> 16)
            .add_u32(seq & 0xFFFF)
            .add_u16(u16::from(f))
            .add_sum(payload_sum);
        store_checksum(&mut th[TCP_CHECKSUM_OFFSET as usize..], sum);
    }
    Ok(Segmented {
        segments: plan.segments,
        segment_size: if plan.segments == 1 {
            plan.total_len
        } else {
            plan.stride
        },
        total_len: plan.total_len,
    })
}

fn read4(b: &[u8], at: usize) -> [u8; 4] {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    a
}
