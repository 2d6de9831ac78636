//! The pending superframe of either coalescer ([`Coalescer`](super::Coalescer) for TCP,
//! [`UdpCoalescer`](super::UdpCoalescer) for UDP) and the buffer work both do on it: starting it
//! with a frame whose transport checksum verifies, appending a frame's payload, comparing a
//! frame's headers with the superframe's, and ending it for one TAP write. What decides whether a
//! frame joins (the merge rules) stays with each coalescer.

use std::ops::Range;

use crate::checksum;
use crate::wire::{udp, TAGGED_HEADER_LEN};

use super::copy_csum::copy_and_sum;
use super::frame::{at, IpFrame, Transport};
use super::merge::{
    finish_run, CoalesceConfig, CoalesceStats, Push, Reject, Seal, MAX_SUPERFRAME_IP_LEN,
};
use super::vnet::VIRTIO_NET_HDR_LEN;

/// Source and destination port: the first four bytes of a TCP header and of a UDP header alike.
const PORTS: Range<usize> = udp::field::SRC_PORT.start..udp::field::DST_PORT.end;

/// One pending superframe at a time, built in a buffer allocated once (~64 KB; steady state
/// allocates nothing), with `R`, what the coalescer knows of it (`None`: nothing pending), the
/// first `T` bytes of its headers as a template, and the configuration and counters around it.
#[derive(Debug)]
pub(crate) struct Pending<R, const T: usize> {
    transport: Transport,
    /// `[virtio-net header][superframe]`, so a superframe leaves with a single write.
    buf: Box<[u8]>,
    /// Superframe bytes after the virtio-net header.
    len: usize,
    pub(crate) run: Option<R>,
    pub(crate) config: CoalesceConfig,
    pub(crate) stats: CoalesceStats,
    /// The superframe's headers as every further frame must repeat them, with the fields that
    /// change per frame zeroed by the coalescer's mask.
    template: [u8; T],
    /// Off only in tests that compare the fast path with the full checks.
    pub(crate) fast_path: bool,
}

impl<R: Copy, const T: usize> Pending<R, T> {
    pub(crate) fn new(transport: Transport, config: CoalesceConfig) -> Self {
        Pending {
            transport,
            buf: vec![0u8; VIRTIO_NET_HDR_LEN + TAGGED_HEADER_LEN + MAX_SUPERFRAME_IP_LEN]
                .into_boxed_slice(),
            len: 0,
            run: None,
            config: config.clamped(),
            stats: CoalesceStats::default(),
            template: [0; T],
            fast_path: true,
        }
    }

    /// The superframe bytes so far (after the virtio-net header).
    pub(crate) fn bytes(&self) -> &[u8] {
        self.buf
            .get(VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + self.len)
            .unwrap_or(&[])
    }

    /// The superframe's IP packet length so far, `ip` being its layout.
    pub(crate) fn ip_len(&self, ip: &IpFrame) -> usize {
        self.len - ip.l3
    }

    /// Counts a frame passed through for `reject`.
    pub(crate) fn pass(&mut self, reject: Reject) -> Push {
        self.stats.pass(reject)
    }

    /// Whether `frame` (laid out as `ip`) has the layout of the superframe (laid out as `cur`),
    /// its addresses and its ports.
    pub(crate) fn same_flow(&self, cur: &IpFrame, frame: &[u8], ip: &IpFrame) -> bool {
        if cur.l3 != ip.l3 || cur.l4 != ip.l4 || cur.ipv6 != ip.ipv6 {
            return false;
        }
        let sf = self.bytes();
        let (addrs, ports) = (cur.addrs(), at(cur.l4, PORTS));
        sf.get(addrs.clone()) == frame.get(addrs) && sf.get(ports.clone()) == frame.get(ports)
    }

    /// Whether the first `hl` bytes of `frame`, `mask`ed, repeat the template.
    pub(crate) fn repeats_template(
        &self,
        frame: &[u8],
        hl: usize,
        mask: impl FnOnce(&mut [u8]),
    ) -> bool {
        let mut headers = [0u8; T];
        let (Some(headers), Some(src)) = (headers.get_mut(..hl), frame.get(..hl)) else {
            return false;
        };
        headers.copy_from_slice(src);
        mask(headers);
        *headers == self.template[..hl]
    }

    /// Starts a superframe with `frame` (laid out as `ip`, `hl` bytes of headers), described by
    /// `run`, if its transport checksum verifies (checked while it is copied in), and keeps its
    /// headers, `mask`ed, as the template. Otherwise the frame is passed through (counted).
    pub(crate) fn start(
        &mut self,
        frame: &[u8],
        ip: &IpFrame,
        hl: usize,
        run: R,
        mask: impl FnOnce(&mut [u8]),
    ) -> Push {
        let IpFrame { l3, l4, end, .. } = *ip;
        let Some(dst) = self
            .buf
            .get_mut(VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + end)
        else {
            return self.pass(Reject::TooLong { ip_len: end - l3 });
        };
        dst[..l4].copy_from_slice(&frame[..l4]);
        let sum = copy_and_sum(&mut dst[l4..], &frame[l4..end]);
        let pseudo = ip.pseudo_header(frame, self.transport.protocol(), end - l4);
        if !checksum::verifies(pseudo.add_sum(sum)) {
            return self.pass(match self.transport {
                Transport::Tcp => Reject::BadTcpChecksum,
                Transport::Udp => Reject::BadUdpChecksum,
            });
        }
        self.len = end;
        if let Some(template) = self.template.get_mut(..hl) {
            template.copy_from_slice(&frame[..hl]);
            mask(template);
        }
        self.run = Some(run);
        Push::Absorbed
    }

    /// Appends the payload of `frame` (laid out as `ip`, `hl` bytes of headers) to the
    /// superframe if the frame's transport checksum verifies (checked while it is copied in).
    /// Returns the payload length, or `None` (nothing appended) when the checksum fails or the
    /// payload does not fit. The caller updates the run.
    pub(crate) fn append(&mut self, frame: &[u8], ip: &IpFrame, hl: usize) -> Option<usize> {
        let IpFrame { l4, end, .. } = *ip;
        let payload = &frame[hl..end];
        let tail = VIRTIO_NET_HDR_LEN + self.len;
        let dst = self.buf.get_mut(tail..tail + payload.len())?;
        let sum = ip
            .pseudo_header(frame, self.transport.protocol(), end - l4)
            .add_bytes(&frame[l4..hl])
            .add_sum(copy_and_sum(dst, payload));
        if !checksum::verifies(sum) {
            return None;
        }
        self.len += payload.len();
        Some(payload.len())
    }

    /// The superframe's bytes from `offset` on, to rewrite a header field.
    pub(crate) fn bytes_mut_from(&mut self, offset: usize) -> Option<&mut [u8]> {
        self.buf.get_mut(VIRTIO_NET_HDR_LEN + offset..)
    }

    /// Ends the pending superframe, if any, for one TAP write: `seal` says from its run how it
    /// is described to the kernel and of how many segments it is (see [`finish_run`]).
    pub(crate) fn finish(&mut self, seal: impl FnOnce(&R) -> (Seal, usize)) -> Option<&[u8]> {
        let run = self.run.take()?;
        let len = std::mem::take(&mut self.len);
        let (seal_as, segments) = seal(&run);
        finish_run(&mut self.buf, len, segments, &seal_as, &mut self.stats)
    }
}
