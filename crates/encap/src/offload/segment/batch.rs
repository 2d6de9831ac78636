//! Sizing `UDP_SEGMENT` sends: how many segments one send may carry, and cutting a written run of
//! segments into sends.

use crate::wire::{IPV4_HEADER_LEN, TAGGED_HEADER_LEN, UDP_HEADER_LEN, VXLAN_HEADER_LEN};

/// Most segments one `UDP_SEGMENT` send may carry: the kernel's `UDP_MAX_SEGMENTS` is 64 on older
/// kernels (128 since 6.x), 64 is safe everywhere.
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Largest UDP payload one send may carry over IPv4 (65535 - 20 IPv4 - 8 UDP); IPv6 allows a
/// little more, so this is safe for both.
pub const MAX_UDP_GSO_PAYLOAD: usize = u16::MAX as usize - IPV4_HEADER_LEN - UDP_HEADER_LEN;

/// How many full-size segments of an inner MTU of `mtu` bytes one `UDP_SEGMENT` send carries:
/// each is VXLAN 8 + Ethernet 14 (+ a 4-byte 802.1Q tag, allowed for) + `mtu`, and a send
/// holds at most [`MAX_UDP_GSO_PAYLOAD`] bytes and [`MAX_GSO_SEGMENTS`] segments (at least 1).
///
/// Capping the TAP's `gso_max_segs` at this makes every TCP superframe one send: for MTU 1450
/// that is 44, where the kernel's default 64 KB superframe (47 segments) takes a second send for
/// its last 3 segments — a whole extra skb on both ends and an extra TAP write at the receiver.
pub fn segments_per_send(mtu: usize) -> usize {
    let segment = VXLAN_HEADER_LEN + TAGGED_HEADER_LEN + mtu;
    (MAX_UDP_GSO_PAYLOAD / segment).clamp(1, MAX_GSO_SEGMENTS)
}

/// What [`prepare_for_wire`](super::prepare_for_wire) wrote to the front of the output buffer.
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
