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
use super::{tcp, TcpFrame, UdpFrame, TCP_CHECKSUM_OFFSET, UDP_CHECKSUM_OFFSET, UDP_HEADER_LEN};

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
#[derive(Debug, Clone, Copy)]
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
    // No cap here: a small MSS gives more than one UDP_SEGMENT send may carry (536 -> 123
    // segments of a 64 KB superframe); `WirePlan::write_next` and `Segmented::batches` split them.
    let segments = payload.div_ceil(seg_payload).max(1);
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

/// The geometry of a USO split: UDP datagrams of exactly `gso_size` payload bytes (the last
/// shorter). Unlike TCP, datagram boundaries are the application's: never re-cut, so a
/// `gso_size` too big for the underlay is refused rather than split smaller.
#[derive(Debug, Clone, Copy)]
struct UsoPlan {
    uf: UdpFrame,
    seg_payload: usize,
    segments: usize,
    stride: usize,
    total_len: usize,
    /// Compute the UDP checksum (false only for IPv4 without one and no NEEDS_CSUM).
    checksum: bool,
}

fn plan_uso(hdr: &VirtioNetHdr, frame: &[u8], mss: usize) -> Result<UsoPlan, OffloadError> {
    if hdr.gso_size == 0 {
        return Err(OffloadError::GsoSizeZero);
    }
    let uf = UdpFrame::parse(frame)?;
    if hdr.needs_csum() && hdr.csum_start as usize != uf.l4 {
        return Err(OffloadError::CsumStartMismatch {
            csum_start: hdr.csum_start,
            tcp_offset: uf.l4,
        });
    }
    let seg_payload = hdr.gso_size as usize;
    // `mss` + 40 (the IPv4 and TCP headers it leaves room for) is the largest inner IP packet.
    let ip_len = uf.l4 - uf.l3 + UDP_HEADER_LEN + seg_payload;
    let max = mss.saturating_add(40);
    if ip_len > max {
        return Err(OffloadError::SegmentTooBig { ip_len, max });
    }
    let payload = uf.payload_len();
    let segments = payload.div_ceil(seg_payload).max(1);
    let hl = VXLAN_HEADER_LEN + uf.hdr_len();
    let stride = hl + seg_payload;
    let last_payload = payload - (segments - 1) * seg_payload;
    let field = super::be16(frame, uf.l4 + UDP_CHECKSUM_OFFSET as usize);
    Ok(UsoPlan {
        uf,
        seg_payload,
        segments,
        stride,
        total_len: (segments - 1) * stride + hl + last_payload,
        checksum: hdr.needs_csum() || uf.ipv6 || field != 0,
    })
}

/// How many segments from `from` go into an `out_len`-byte chunk (at most `max_segments`; all
/// full-size but possibly the plan's last) and the chunk's length.
fn chunk(
    segments: usize,
    stride: usize,
    total_len: usize,
    from: usize,
    out_len: usize,
    max_segments: usize,
) -> Result<(usize, usize), OffloadError> {
    let left = segments - from;
    // Bytes of the segments from `from` to the end; only the very last one may be short.
    let rest_len = total_len - from * stride;
    let fit = if rest_len <= out_len {
        left
    } else {
        // Full-size segments only: the (shorter) last one does not fit with them.
        (out_len / stride).min(left - 1)
    };
    let count = fit.min(max_segments.max(1));
    if count == 0 {
        return Err(OffloadError::OutputTooSmall {
            required: stride.min(rest_len),
            available: out_len,
        });
    }
    let len = if from + count == segments {
        rest_len
    } else {
        count * stride
    };
    Ok((count, len))
}

/// Exact number of output bytes [`prepare_for_wire`] needs for this frame. There is no useful
/// worst case (a tiny `gso_size` makes 64 KB of payload into megabytes of headers): an engine
/// with a fixed buffer writes big superframes in chunks with [`WirePlan::write_next`].
pub fn required_output_len(
    hdr: &VirtioNetHdr,
    frame: &[u8],
    mss: usize,
) -> Result<usize, OffloadError> {
    match hdr.gso_kind() {
        VirtioNetHdr::GSO_NONE => Ok(VXLAN_HEADER_LEN + frame.len()),
        _ => Ok(WirePlan::new(hdr, frame, mss)?.total_len()),
    }
}

/// The one entry point for a frame read from the TAP (after its virtio-net header).
///
/// - `gso_type` NONE, no `NEEDS_CSUM`: copied behind a VXLAN header (one segment).
/// - `gso_type` NONE + `NEEDS_CSUM`: copied and the checksum at `csum_start + csum_offset`
///   completed (any L4 protocol, the kernel's pseudo-header sum is already in the field).
/// - `gso_type` TCPV4/TCPV6 (ECN bit allowed): split at `min(hdr.gso_size, mss)` payload bytes.
///   `mss` is the largest inner TCP payload the underlay carries without fragmenting.
/// - `gso_type` UDP_L4 (USO): split into UDP datagrams of `gso_size` payload bytes, each with
///   its own lengths, IPv4 ID and full UDP checksum; refused (`SegmentTooBig`) when such a
///   datagram would be larger than `mss + 40` bytes of IP packet.
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
    let mut plan = WirePlan::new(hdr, frame, mss)?;
    check_out(plan.total_len(), out)?;
    match plan.write_next_with(frame, vni, out, usize::MAX, mode)? {
        Some(segmented) => Ok(segmented),
        // Not reached: a fresh plan has at least one segment and `out` holds all of them.
        None => Err(OffloadError::OutputTooSmall {
            required: plan.total_len(),
            available: out.len(),
        }),
    }
}

/// A frame read from the TAP, checked and planned once, then written out a chunk of whole
/// segments at a time. This is how a superframe of any segment count (a small MSS cuts 64 KB
/// into hundreds of segments) goes out through a fixed-size buffer: write a chunk, send it, write
/// the next. It holds no borrow of the frame, so the caller may use its buffers between chunks.
#[derive(Debug, Clone, Copy)]
pub struct WirePlan {
    kind: PlanKind,
    /// Length of the frame the plan was made for; `write_next` refuses any other.
    frame_len: usize,
    /// Index of the next segment to write.
    next: usize,
}

#[derive(Debug, Clone, Copy)]
enum PlanKind {
    /// Copied as one datagram, the checksum completed when `csum` is `Some((start, field))`.
    Single {
        csum: Option<(usize, usize)>,
    },
    Tso(Plan),
    Uso(UsoPlan),
}

impl WirePlan {
    /// Checks `frame` against its virtio-net header (see [`prepare_for_wire`] for what is
    /// accepted) and plans the split at `min(hdr.gso_size, mss)`.
    pub fn new(hdr: &VirtioNetHdr, frame: &[u8], mss: usize) -> Result<Self, OffloadError> {
        let kind = match hdr.gso_kind() {
            VirtioNetHdr::GSO_NONE => PlanKind::Single {
                csum: if hdr.needs_csum() {
                    Some(checksum_field(
                        frame.len(),
                        hdr.csum_start,
                        hdr.csum_offset,
                    )?)
                } else {
                    None
                },
            },
            VirtioNetHdr::GSO_TCPV4 | VirtioNetHdr::GSO_TCPV6 => {
                PlanKind::Tso(plan_tso(hdr, frame, mss)?)
            }
            VirtioNetHdr::GSO_UDP_L4 => PlanKind::Uso(plan_uso(hdr, frame, mss)?),
            _ => {
                return Err(OffloadError::UnsupportedGsoType {
                    gso_type: hdr.gso_type,
                })
            }
        };
        Ok(WirePlan {
            kind,
            frame_len: frame.len(),
            next: 0,
        })
    }

    /// Datagrams the whole frame becomes.
    pub fn segments(&self) -> usize {
        match &self.kind {
            PlanKind::Single { .. } => 1,
            PlanKind::Tso(p) => p.segments,
            PlanKind::Uso(p) => p.segments,
        }
    }

    /// Datagrams not written yet.
    pub fn remaining(&self) -> usize {
        self.segments() - self.next
    }

    /// Bytes of all datagrams together (what [`required_output_len`] returns).
    pub fn total_len(&self) -> usize {
        match &self.kind {
            PlanKind::Single { .. } => VXLAN_HEADER_LEN + self.frame_len,
            PlanKind::Tso(p) => p.total_len,
            PlanKind::Uso(p) => p.total_len,
        }
    }

    /// True for a TSO superframe, false for a frame that goes out as one datagram.
    pub fn is_tso(&self) -> bool {
        matches!(self.kind, PlanKind::Tso(_))
    }

    /// True for a USO superframe (UDP datagrams sent with `UDP_SEGMENT` behind the TAP).
    pub fn is_uso(&self) -> bool {
        matches!(self.kind, PlanKind::Uso(_))
    }

    /// Writes the next datagrams to the front of `out`: as many whole ones as fit, at most
    /// `max_segments`, laid out like [`prepare_for_wire`]'s output (every one but the last of
    /// the frame is `segment_size` long). `frame` must be the frame the plan was made for.
    /// Returns `None` once all were written, `OutputTooSmall` when not even the next one fits.
    pub fn write_next(
        &mut self,
        frame: &[u8],
        vni: Vni,
        out: &mut [u8],
        max_segments: usize,
    ) -> Result<Option<Segmented>, OffloadError> {
        self.write_next_with(frame, vni, out, max_segments, CopyMode::Fused)
    }

    fn write_next_with(
        &mut self,
        frame: &[u8],
        vni: Vni,
        out: &mut [u8],
        max_segments: usize,
        mode: CopyMode,
    ) -> Result<Option<Segmented>, OffloadError> {
        if self.remaining() == 0 {
            return Ok(None);
        }
        if frame.len() != self.frame_len {
            return Err(OffloadError::FrameChanged {
                planned: self.frame_len,
                actual: frame.len(),
            });
        }
        let copy = match mode {
            CopyMode::Fused => copy_and_sum,
            CopyMode::CopyThenSum => copy_then_sum,
        };
        let written = match &self.kind {
            PlanKind::Single { csum } => single(*csum, frame, vni, out)?,
            PlanKind::Tso(plan) => tso(plan, frame, vni, out, self.next, max_segments, copy)?,
            PlanKind::Uso(plan) => uso(plan, frame, vni, out, self.next, max_segments, copy)?,
        };
        self.next += written.segments;
        Ok(Some(written))
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

/// Stores a finished checksum. For UDP (RFC 768) a computed zero goes out as all ones, since
/// zero means "no checksum"; TCP keeps zero, as the kernel writes it (both verify alike).
fn store_checksum(field: &mut [u8], sum: Sum, udp: bool) {
    let mut value = sum.finish();
    if value == 0 && udp {
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
    store_checksum(&mut frame[field..], sum, csum_offset == UDP_CHECKSUM_OFFSET);
    Ok(())
}

fn single(
    csum: Option<(usize, usize)>,
    frame: &[u8],
    vni: Vni,
    out: &mut [u8],
) -> Result<Segmented, OffloadError> {
    let total_len = VXLAN_HEADER_LEN + frame.len();
    check_out(total_len, out)?;
    write_vxlan(out, vni);
    let dst = &mut out[VXLAN_HEADER_LEN..total_len];
    match csum {
        None => dst.copy_from_slice(frame),
        Some((start, field)) => {
            // Fused: the bytes from csum_start are summed while they are copied.
            dst[..start].copy_from_slice(&frame[..start]);
            let sum = copy_and_sum(&mut dst[start..], &frame[start..]);
            store_checksum(
                &mut dst[field..],
                sum,
                field - start == UDP_CHECKSUM_OFFSET as usize,
            );
        }
    }
    Ok(Segmented {
        segments: 1,
        segment_size: total_len,
        total_len,
    })
}

/// Writes segments `from..` of `plan` to the front of `out`: as many as fit, at most
/// `max_segments`.
fn tso(
    plan: &Plan,
    frame: &[u8],
    vni: Vni,
    out: &mut [u8],
    from: usize,
    max_segments: usize,
    copy: fn(&mut [u8], &[u8]) -> Sum,
) -> Result<Segmented, OffloadError> {
    let (count, total_len) = chunk(
        plan.segments,
        plan.stride,
        plan.total_len,
        from,
        out.len(),
        max_segments,
    )?;
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

    for i in from..from + count {
        let first = i == 0;
        let last = i + 1 == plan.segments;
        let off = i * plan.seg_payload;
        let chunk = &payload[off..payload.len().min(off + plan.seg_payload)];
        let start = (i - from) * plan.stride;
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
        store_checksum(&mut th[TCP_CHECKSUM_OFFSET as usize..], sum, false);
    }
    Ok(Segmented {
        segments: count,
        segment_size: if count == 1 { total_len } else { plan.stride },
        total_len,
    })
}

/// Writes datagrams `from..` of a USO `plan` to the front of `out`: as many as fit, at most
/// `max_segments`.
fn uso(
    plan: &UsoPlan,
    frame: &[u8],
    vni: Vni,
    out: &mut [u8],
    from: usize,
    max_segments: usize,
    copy: fn(&mut [u8], &[u8]) -> Sum,
) -> Result<Segmented, OffloadError> {
    let (count, total_len) = chunk(
        plan.segments,
        plan.stride,
        plan.total_len,
        from,
        out.len(),
        max_segments,
    )?;
    let uf = &plan.uf;
    let hl = uf.hdr_len();
    let (l3, l4) = (uf.l3, uf.l4);
    let base_id = super::be16(frame, l3 + 4);
    let payload = &frame[hl..uf.end];
    let csum = l4 + UDP_CHECKSUM_OFFSET as usize;

    for i in from..from + count {
        let off = i * plan.seg_payload;
        let data_in = &payload[off..payload.len().min(off + plan.seg_payload)];
        let start = (i - from) * plan.stride;
        let seg = &mut out[start..start + VXLAN_HEADER_LEN + hl + data_in.len()];
        write_vxlan(seg, vni);
        let (hdrs, data) = seg[VXLAN_HEADER_LEN..].split_at_mut(hl);
        hdrs.copy_from_slice(&frame[..hl]);

        let udp_len = UDP_HEADER_LEN + data_in.len();
        if uf.ipv6 {
            hdrs[l3 + 4..l3 + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        } else {
            let ihl = l4 - l3;
            hdrs[l3 + 2..l3 + 4].copy_from_slice(&((ihl + udp_len) as u16).to_be_bytes());
            hdrs[l3 + 4..l3 + 6].copy_from_slice(&base_id.wrapping_add(i as u16).to_be_bytes());
            hdrs[l3 + 10..l3 + 12].fill(0);
            let c = checksum::checksum(&hdrs[l3..l4]);
            hdrs[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        hdrs[l4 + 4..l4 + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        hdrs[csum..csum + 2].fill(0);
        let data_sum = copy(data, data_in);
        if plan.checksum {
            let sum = uf
                .pseudo_header(frame, udp_len)
                .add_bytes(&hdrs[l4..])
                .add_sum(data_sum);
            store_checksum(&mut hdrs[csum..], sum, true);
        }
    }
    Ok(Segmented {
        segments: count,
        segment_size: if count == 1 { total_len } else { plan.stride },
        total_len,
    })
}

fn read4(b: &[u8], at: usize) -> [u8; 4] {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    a
}
