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
//!
//! - this module: [`WirePlan`], the one entry point, and frames that go out as one datagram;
//! - `cut`: the segment geometry TSO and USO share, and the loop that lays segments out;
//! - `tso` / `uso`: what changes per TCP segment / UDP datagram;
//! - `batch`: how many segments one `UDP_SEGMENT` send may carry.

use crate::checksum;
use crate::error::OffloadError;
use crate::vni::Vni;
use crate::wire::be::set_be16;
use crate::wire::{VxlanPacket, VxlanRepr, VXLAN_HEADER_LEN};

use super::copy_csum::{copy_and_sum, copy_then_sum};
use super::frame::Transport;
use super::vnet::VirtioNetHdr;
use super::UDP_CHECKSUM_OFFSET;

mod batch;
mod cut;
mod tso;
mod uso;

pub use batch::{
    segments_per_send, GsoBatch, GsoBatches, Segmented, MAX_GSO_SEGMENTS, MAX_UDP_GSO_PAYLOAD,
};
use tso::TsoPlan;
use uso::UsoPlan;

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
    Tso(TsoPlan),
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
                PlanKind::Tso(TsoPlan::new(hdr, frame, mss)?)
            }
            VirtioNetHdr::GSO_UDP_L4 => PlanKind::Uso(UsoPlan::new(hdr, frame, mss)?),
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
            PlanKind::Tso(p) => p.cut.segments,
            PlanKind::Uso(p) => p.cut.segments,
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
            PlanKind::Tso(p) => p.cut.total_len,
            PlanKind::Uso(p) => p.cut.total_len,
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
            PlanKind::Tso(plan) => {
                let (segments, written) = plan.cut.chunk(self.next, out.len(), max_segments)?;
                plan.write(frame, vni, out, segments, copy);
                written
            }
            PlanKind::Uso(plan) => {
                let (segments, written) = plan.cut.chunk(self.next, out.len(), max_segments)?;
                plan.write(frame, vni, out, segments, copy);
                written
            }
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

fn vxlan_header(vni: Vni) -> [u8; VXLAN_HEADER_LEN] {
    let mut header = [0u8; VXLAN_HEADER_LEN];
    VxlanRepr { vni }.emit(&mut VxlanPacket::new_unchecked(&mut header[..]));
    header
}

/// Refuses a `NEEDS_CSUM` header whose checksum does not start at the transport header `l4`.
fn check_csum_start(hdr: &VirtioNetHdr, l4: usize) -> Result<(), OffloadError> {
    if hdr.needs_csum() && usize::from(hdr.csum_start) != l4 {
        return Err(OffloadError::CsumStartMismatch {
            csum_start: hdr.csum_start,
            tcp_offset: l4,
        });
    }
    Ok(())
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

/// The transport whose checksum rules apply to a `NEEDS_CSUM` field at `csum_offset`: UDP's
/// (a computed zero is sent as all ones) at UDP's offset, TCP's (zero stays zero) elsewhere.
fn transport_at(csum_offset: usize) -> Transport {
    if csum_offset == usize::from(UDP_CHECKSUM_OFFSET) {
        Transport::Udp
    } else {
        Transport::Tcp
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
    let value = transport_at(usize::from(csum_offset)).finished_checksum(sum);
    set_be16(frame, field, value);
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
    out[..VXLAN_HEADER_LEN].copy_from_slice(&vxlan_header(vni));
    let dst = &mut out[VXLAN_HEADER_LEN..total_len];
    match csum {
        None => dst.copy_from_slice(frame),
        Some((start, field)) => {
            // Fused: the bytes from csum_start are summed while they are copied.
            dst[..start].copy_from_slice(&frame[..start]);
            let sum = copy_and_sum(&mut dst[start..], &frame[start..]);
            set_be16(
                dst,
                field,
                transport_at(field - start).finished_checksum(sum),
            );
        }
    }
    Ok(Segmented {
        segments: 1,
        segment_size: total_len,
        total_len,
    })
}
