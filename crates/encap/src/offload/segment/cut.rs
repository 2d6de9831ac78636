//! The geometry TSO and USO share: a superframe's payload cut into equal segments, each behind a
//! copy of the superframe's headers and a VXLAN header, laid out back to back so the kernel's UDP
//! GSO can cut the buffer at one fixed size.

use std::ops::Range;

use crate::checksum::Sum;
use crate::error::OffloadError;
use crate::vni::Vni;
use crate::wire::{
    VxlanPacket, VxlanRepr, IPV4_MAX_HEADER_LEN, TAGGED_HEADER_LEN, TCP_MAX_HEADER_LEN,
    VXLAN_HEADER_LEN,
};

use super::Segmented;

/// Most header bytes a segment repeats: Ethernet with an 802.1Q tag, IPv4 with options (IPv6's
/// fixed header is shorter), TCP with options.
const MAX_SEGMENT_HEADERS: usize = TAGGED_HEADER_LEN + IPV4_MAX_HEADER_LEN + TCP_MAX_HEADER_LEN;

/// What every segment starts with: the VXLAN header, then a copy of the superframe's headers
/// (which the protocol prepares once, and [`Cut::write`] finishes per segment). On the stack.
pub(super) struct Prefix {
    bytes: [u8; VXLAN_HEADER_LEN + MAX_SEGMENT_HEADERS],
    len: usize,
}

impl Prefix {
    /// `headers` are the frame's headers up to the payload (at most [`MAX_SEGMENT_HEADERS`],
    /// which parsing guarantees; a longer run is cut there).
    pub(crate) fn new(vni: Vni, headers: &[u8]) -> Self {
        let mut bytes = [0u8; VXLAN_HEADER_LEN + MAX_SEGMENT_HEADERS];
        VxlanRepr { vni }.emit(&mut VxlanPacket::new_unchecked(&mut bytes[..]));
        let headers = &headers[..headers.len().min(MAX_SEGMENT_HEADERS)];
        let len = VXLAN_HEADER_LEN + headers.len();
        bytes[VXLAN_HEADER_LEN..len].copy_from_slice(headers);
        Prefix { bytes, len }
    }

    /// The copy of the superframe's headers.
    pub(crate) fn headers(&mut self) -> &mut [u8] {
        &mut self.bytes[VXLAN_HEADER_LEN..self.len]
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Copies a segment's payload and returns its checksum ([`CopyMode`](super::CopyMode)).
pub(super) type CopyFn = fn(&mut [u8], &[u8]) -> Sum;

/// How a superframe becomes segments; computed once per frame, shared by the size query and the
/// writer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cut {
    /// Headers every segment repeats (Ethernet to the end of TCP/UDP): the payload starts here.
    pub hdr_len: usize,
    /// End of the payload (of the IP packet) in the frame.
    pub end: usize,
    /// Payload bytes per segment; the last may carry fewer.
    pub seg_payload: usize,
    pub segments: usize,
    /// Bytes of one full-size datagram: VXLAN header + headers + `seg_payload`.
    pub stride: usize,
    /// Bytes of all datagrams together.
    pub total_len: usize,
}

/// What [`Cut::write`] hands the protocol for each segment it laid out.
pub(super) struct Segment<'a> {
    /// Index of the segment in the whole superframe.
    pub index: usize,
    /// The segment's copy of the headers (Ethernet to TCP/UDP), to finish in place.
    pub headers: &'a mut [u8],
    pub payload_len: usize,
    /// Checksum of the payload, taken while copying it.
    pub payload_sum: Sum,
}

impl Cut {
    /// Cuts the payload `frame[hdr_len..end]` into segments of `seg_payload` bytes. There is no
    /// cap on the count: a small MSS gives more than one `UDP_SEGMENT` send may carry (536 ->
    /// 123 segments of a 64 KB superframe); `WirePlan::write_next` and `Segmented::batches` split
    /// them.
    pub(crate) fn new(hdr_len: usize, end: usize, seg_payload: usize) -> Self {
        let seg_payload = seg_payload.max(1);
        let payload = end - hdr_len;
        let segments = payload.div_ceil(seg_payload).max(1);
        let headers = VXLAN_HEADER_LEN + hdr_len;
        let stride = headers + seg_payload;
        let last_payload = payload - (segments - 1) * seg_payload;
        Cut {
            hdr_len,
            end,
            seg_payload,
            segments,
            stride,
            total_len: (segments - 1) * stride + headers + last_payload,
        }
    }

    /// The segments from `from` that go into an `out_len`-byte chunk (at most `max_segments`;
    /// all full-size but possibly the last of the superframe), and what writing them makes.
    pub(crate) fn chunk(
        &self,
        from: usize,
        out_len: usize,
        max_segments: usize,
    ) -> Result<(Range<usize>, Segmented), OffloadError> {
        let left = self.segments - from;
        // Bytes of the segments from `from` to the end; only the very last one may be short.
        let rest_len = self.total_len - from * self.stride;
        let fit = if rest_len <= out_len {
            left
        } else {
            // Full-size segments only: the (shorter) last one does not fit with them.
            (out_len / self.stride).min(left - 1)
        };
        let count = fit.min(max_segments.max(1));
        if count == 0 {
            return Err(OffloadError::OutputTooSmall {
                required: self.stride.min(rest_len),
                available: out_len,
            });
        }
        let total_len = if from + count == self.segments {
            rest_len
        } else {
            count * self.stride
        };
        let written = Segmented {
            segments: count,
            segment_size: if count == 1 { total_len } else { self.stride },
            total_len,
        };
        Ok((from..from + count, written))
    }

    /// Writes `segments` (a range [`chunk`](Self::chunk) chose) of `frame` to the front of `out`:
    /// each is `prefix` (its headers' per-segment fields as `finish` wants them), then its payload
    /// copied with `copy`; `finish` then completes the segment's headers.
    /// Inlined into each protocol's writer, so the values `finish` captures stay in registers.
    #[inline]
    pub(crate) fn write(
        &self,
        frame: &[u8],
        out: &mut [u8],
        segments: Range<usize>,
        prefix: &Prefix,
        copy: CopyFn,
        mut finish: impl FnMut(Segment<'_>),
    ) {
        let prefix = prefix.as_bytes();
        let payload = &frame[self.hdr_len..self.end];
        let from = segments.start;
        for index in segments {
            let off = index * self.seg_payload;
            let data_in = &payload[off..payload.len().min(off + self.seg_payload)];
            let start = (index - from) * self.stride;
            let seg = &mut out[start..start + prefix.len() + data_in.len()];
            let (head, data) = seg.split_at_mut(prefix.len());
            head.copy_from_slice(prefix);
            let payload_sum = copy(data, data_in);
            finish(Segment {
                index,
                headers: &mut head[VXLAN_HEADER_LEN..],
                payload_len: data_in.len(),
                payload_sum,
            });
        }
    }
}
