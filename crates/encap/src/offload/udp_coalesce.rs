//! Wire -> TAP: merge consecutive datagrams of one UDP flow into one superframe, as the kernel's
//! UDP GRO does (`udp_gro_receive_segment`), so the TAP takes one write for up to 64 datagrams
//! rather than one each (every TAP write runs the host's whole receive path).
//!
//! The superframe goes to the TAP behind a virtio-net header with `NEEDS_CSUM` and `GSO_UDP_L4`,
//! `gso_size` = the datagram payload, `csum_start` = the UDP header, `csum_offset` = 6, and its
//! UDP checksum field holds the folded, *not* complemented pseudo-header sum over the whole UDP
//! length (`CHECKSUM_PARTIAL`). The host kernel cuts it back into the original datagrams
//! (`__udp_gso_segment`): for a socket without `UDP_GRO` in `udp_rcv_segment`, at the egress
//! device of a forwarded or bridged frame; a socket with `UDP_GRO` takes it whole.
//!
//! Only for a TAP that accepted `TUN_F_USO4 | TUN_F_USO6`: that `TUNSETOFFLOAD` succeeds from Linux
//! 6.2, the release whose `virtio_net_hdr_to_skb` (include/linux/virtio_net.h) learnt
//! `case VIRTIO_NET_HDR_GSO_UDP_L4: gso_type = SKB_GSO_UDP_L4;` (the "Support USO offload in vnet
//! header" patch of the same series); before it a TAP write with this header is EINVAL. The same
//! function refuses a `GSO_UDP_L4` write without `NEEDS_CSUM`, with `csum_offset` other than 6, or
//! with more than `gso_size * UDP_MAX_SEGMENTS` (64 on older kernels, 128 on newer) bytes after
//! the UDP header.
//!
//! Merge rules (a datagram joins the pending superframe only if all hold):
//! - it parses as Ethernet [+ one 802.1Q tag] + IPv4 without options (not a fragment) or IPv6
//!   with UDP as next header, its UDP length agrees with the IP length, and it carries payload;
//! - its IPv4 header checksum and its UDP checksum verify (the superframe goes up with
//!   `NEEDS_CSUM`: the kernel would compute, not check, the checksums of the datagrams cut from
//!   it, and a corrupt datagram would be delivered as good). A datagram without a UDP checksum
//!   (zero) is not merged: segmentation would give it one the sender did not send;
//! - same Ethernet header, same IP header except length/ID/checksum (addresses, TOS/traffic
//!   class, flow label, TTL/hop limit, DF); the IPv4 ID is the first datagram's + its index (the
//!   kernel's segmentation numbers the datagrams so: any other ID would not come out as sent);
//! - same ports; payload size equal to the first datagram's (`gso_size`); a shorter one is the
//!   last (or, with `short_tail: false`, starts its own superframe);
//! - the superframe stays within `max_ip_len` (65535) bytes of IP packet and `max_segments`.
//!
//! A datagram of the pending flow that cannot join (or any IP fragment or truncated UDP datagram)
//! first makes the superframe go out, so nothing of a flow overtakes what came before it (an IPv6
//! datagram behind extension headers, which is not parsed, may). A run of one datagram is
//! returned untouched behind an all-zero header.

use crate::checksum;
use crate::error::{Layer, OffloadError};
use crate::wire::{udp, UdpPacket, IPV6_HEADER_LEN, TAGGED_HEADER_LEN, UDP_HEADER_LEN};

use super::copy_csum::copy_and_sum;
use super::frame::{at, IpFrame, Transport, UdpFrame};
use super::merge::{
    finish_run, ipv4_checksum_verifies, ipv4_eligible, same_link_and_ip, CoalesceConfig,
    CoalesceStats, Merge, Push, Reject, Seal, MAX_SUPERFRAME_IP_LEN,
};
use super::vnet::{VirtioNetHdr, VIRTIO_NET_HDR_LEN};

/// Largest header run of a coalescable datagram: Ethernet + tag, IPv6, UDP.
const MAX_TEMPLATE: usize = TAGGED_HEADER_LEN + IPV6_HEADER_LEN + UDP_HEADER_LEN;

#[derive(Debug, Clone, Copy)]
struct Run {
    uf: UdpFrame,
    gso_size: usize,
    segments: usize,
    first_id: u16,
    /// A short datagram taken: nothing more may follow.
    sealed: bool,
}

/// Merges UDP datagrams into superframes. One pending superframe at a time, built in an internal
/// buffer allocated once (~64 KB); steady state allocates nothing.
#[derive(Debug)]
pub struct UdpCoalescer {
    /// `[virtio-net header][superframe]`, so a superframe leaves with a single write.
    buf: Box<[u8]>,
    /// Superframe bytes after the virtio-net header.
    len: usize,
    run: Option<Run>,
    config: CoalesceConfig,
    stats: CoalesceStats,
    /// The pending superframe's headers as every further datagram must repeat them, with the
    /// fields that change per datagram zeroed (see [`mask_per_datagram_fields`]).
    template: [u8; MAX_TEMPLATE],
    /// Off only in tests that compare the fast path with the full checks.
    fast_path: bool,
}

/// Zeroes what legitimately differs between the datagrams of one superframe: IPv4 total length,
/// ID and header checksum (IPv6 payload length), UDP length and checksum.
fn mask_per_datagram_fields(uf: &UdpFrame, headers: &mut [u8]) {
    uf.ip.clear_per_segment_fields(headers);
    if let Some(header) = headers.get_mut(uf.ip.l4..) {
        let mut udp = UdpPacket::new_unchecked(header);
        udp.set_len(0);
        udp.set_checksum(0);
    }
}

impl Default for UdpCoalescer {
    fn default() -> Self {
        Self::new(CoalesceConfig::default())
    }
}

impl UdpCoalescer {
    pub fn new(config: CoalesceConfig) -> Self {
        UdpCoalescer {
            buf: vec![0u8; VIRTIO_NET_HDR_LEN + TAGGED_HEADER_LEN + MAX_SUPERFRAME_IP_LEN]
                .into_boxed_slice(),
            len: 0,
            run: None,
            config: config.clamped(),
            stats: CoalesceStats::default(),
            template: [0; MAX_TEMPLATE],
            fast_path: true,
        }
    }

    /// Test hook: decide every frame with the full checks only (the fast path must agree).
    #[doc(hidden)]
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast_path = on;
    }

    pub fn config(&self) -> &CoalesceConfig {
        &self.config
    }

    pub fn stats(&self) -> CoalesceStats {
        self.stats
    }

    /// True while a superframe is pending.
    pub fn is_pending(&self) -> bool {
        self.run.is_some()
    }

    fn pass(&mut self, reject: Reject) -> Push {
        self.stats.pass(reject)
    }

    /// Static checks that do not depend on the pending superframe.
    fn eligible(&self, frame: &[u8], uf: &UdpFrame) -> Result<(), Reject> {
        let ip = &uf.ip;
        ipv4_eligible(frame, ip)?;
        if !udp_len_agrees(frame, uf) {
            return Err(Reject::Malformed(OffloadError::BadHeader {
                layer: Layer::InnerUdp,
                reason: "UDP length disagrees with the IP length",
            }));
        }
        if uf.payload_len() == 0 {
            return Err(Reject::NoPayload);
        }
        if udp_header(frame, uf).checksum() == 0 {
            return Err(Reject::NoUdpChecksum);
        }
        let ip_len = ip.end - ip.l3;
        if ip_len > self.config.max_ip_len {
            return Err(Reject::TooLong { ip_len });
        }
        Ok(())
    }

    fn pending(&self) -> &[u8] {
        self.buf
            .get(VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + self.len)
            .unwrap_or(&[])
    }

    /// Same layout, addresses and ports as the pending superframe.
    fn same_flow(&self, run: &Run, frame: &[u8], uf: &UdpFrame) -> bool {
        let cur = self.pending();
        let (a, b) = (&run.uf.ip, &uf.ip);
        if a.l3 != b.l3 || a.l4 != b.l4 || a.ipv6 != b.ipv6 {
            return false;
        }
        let ports = at(a.l4, udp::field::SRC_PORT.start..udp::field::DST_PORT.end);
        let addrs = a.addrs();
        cur.get(addrs.clone()) == frame.get(addrs) && cur.get(ports.clone()) == frame.get(ports)
    }

    /// The per-datagram rules: room left, size, IPv4 ID. `uf` has the run's layout.
    fn fits(&self, run: &Run, frame: &[u8], uf: &UdpFrame) -> bool {
        let payload = uf.payload_len();
        !run.sealed
            && run.segments < self.config.max_segments
            && payload <= run.gso_size
            && (payload == run.gso_size || self.config.short_tail)
            && self.len - run.uf.ip.l3 + payload <= self.config.max_ip_len
            && (uf.ip.ipv6
                || uf.ip.ipv4_ident(frame).wrapping_sub(run.first_id) == run.segments as u16)
    }

    /// The common case in one comparison: `frame` repeats the pending superframe's headers
    /// (masked, see [`mask_per_datagram_fields`]) and satisfies the per-datagram rules, so it
    /// continues the superframe exactly as the full checks (`parse`, `eligible`, `same_flow`,
    /// `fits`) would decide. Returns the frame's layout, or `None` to leave the decision to the
    /// full checks.
    fn continue_fast(&self, run: &Run, frame: &[u8]) -> Option<UdpFrame> {
        let uf = run.uf;
        let hl = uf.hdr_len();
        let mut headers = [0u8; MAX_TEMPLATE];
        let headers = headers.get_mut(..hl)?;
        headers.copy_from_slice(frame.get(..hl)?);
        mask_per_datagram_fields(&uf, headers);
        if *headers != self.template[..hl] {
            return None;
        }
        // Same layout as the first datagram: only the length is new.
        let end = uf.ip.end_in(frame)?;
        if end > frame.len() || end <= hl {
            return None;
        }
        let next = UdpFrame {
            ip: IpFrame { end, ..uf.ip },
        };
        let ok = udp_len_agrees(frame, &next)
            && self.fits(run, frame, &next)
            && (uf.ip.ipv6 || ipv4_checksum_verifies(frame, &uf.ip));
        ok.then_some(next)
    }

    fn start(&mut self, frame: &[u8], uf: UdpFrame) -> Push {
        let IpFrame { l3, l4, end, .. } = uf.ip;
        let Some(dst) = self
            .buf
            .get_mut(VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + end)
        else {
            return self.pass(Reject::TooLong { ip_len: end - l3 });
        };
        dst[..l4].copy_from_slice(&frame[..l4]);
        let sum = copy_and_sum(&mut dst[l4..], &frame[l4..end]);
        if !checksum::verifies(uf.pseudo_header(frame, end - l4).add_sum(sum)) {
            return self.pass(Reject::BadUdpChecksum);
        }
        self.len = end;
        let hl = uf.hdr_len();
        if let Some(template) = self.template.get_mut(..hl) {
            template.copy_from_slice(&frame[..hl]);
            mask_per_datagram_fields(&uf, template);
        }
        self.run = Some(Run {
            uf,
            gso_size: uf.payload_len(),
            segments: 1,
            first_id: uf.ip.ipv4_ident(frame),
            sealed: false,
        });
        Push::Absorbed
    }

    fn extend(&mut self, mut run: Run, frame: &[u8], uf: &UdpFrame) -> Push {
        let IpFrame { l4, end, .. } = uf.ip;
        let hl = uf.hdr_len();
        let payload = &frame[hl..end];
        let tail = VIRTIO_NET_HDR_LEN + self.len;
        let Some(dst) = self.buf.get_mut(tail..tail + payload.len()) else {
            return Push::Flush;
        };
        let sum = uf
            .pseudo_header(frame, end - l4)
            .add_bytes(&frame[l4..hl])
            .add_sum(copy_and_sum(dst, payload));
        // A zero checksum is "none" (the fast path masked it): not merged either.
        if udp_header(frame, uf).checksum() == 0 || !checksum::verifies(sum) {
            // Same flow: let it go out after the superframe, where the full checks reject it.
            return Push::Flush;
        }
        self.len += payload.len();
        run.segments += 1;
        run.sealed = payload.len() < run.gso_size;
        self.run = Some(run);
        Push::Absorbed
    }
}

impl Merge for UdpCoalescer {
    fn push(&mut self, frame: &[u8]) -> Push {
        if let (Some(run), true) = (self.run, self.fast_path) {
            if let Some(next) = self.continue_fast(&run, frame) {
                return self.extend(run, frame, &next);
            }
        }
        let uf = match UdpFrame::parse(frame) {
            Ok(uf) => uf,
            // Another protocol may pass. A fragment or a damaged datagram may be of the pending
            // flow: it must not overtake the superframe (both are rare).
            Err(e @ (OffloadError::NotIp { .. } | OffloadError::NotUdp { .. })) => {
                return self.pass(Reject::Malformed(e))
            }
            Err(_) if self.run.is_some() => return Push::Flush,
            Err(e) => return self.pass(Reject::Malformed(e)),
        };
        let same_flow = match &self.run {
            Some(run) => self.same_flow(run, frame, &uf),
            None => false,
        };
        if let Err(reject) = self.eligible(frame, &uf) {
            return if same_flow {
                Push::Flush
            } else {
                self.pass(reject)
            };
        }
        match self.run {
            None => self.start(frame, uf),
            Some(run) => {
                let continues = same_flow
                    && self.fits(&run, frame, &uf)
                    && same_link_and_ip(self.pending(), frame, &uf.ip);
                if !continues {
                    return Push::Flush;
                }
                self.extend(run, frame, &uf)
            }
        }
    }

    fn finish(&mut self) -> Option<&[u8]> {
        let run = self.run.take()?;
        let len = std::mem::take(&mut self.len);
        let seal_as = Seal {
            ip: run.uf.ip,
            transport: Transport::Udp,
            hdr_len: run.uf.hdr_len(),
            gso_size: run.gso_size,
            gso_type: VirtioNetHdr::GSO_UDP_L4,
        };
        finish_run(&mut self.buf, len, run.segments, &seal_as, &mut self.stats)
    }
}

/// The UDP header of `frame`, laid out like `uf`.
fn udp_header<'f>(frame: &'f [u8], uf: &UdpFrame) -> UdpPacket<&'f [u8]> {
    UdpPacket::new_unchecked(frame.get(uf.ip.l4..).unwrap_or_default())
}

/// Whether the UDP length field says what the IP length does (a shorter one would leave bytes
/// the receiver drops inside the superframe's payload).
fn udp_len_agrees(frame: &[u8], uf: &UdpFrame) -> bool {
    usize::from(udp_header(frame, uf).len_field()) == uf.ip.end - uf.ip.l4
}
