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

use crate::error::{Layer, OffloadError};
use crate::wire::{UdpPacket, IPV6_HEADER_LEN, TAGGED_HEADER_LEN, UDP_HEADER_LEN};

use super::frame::{IpFrame, Transport, UdpFrame};
use super::merge::{
    ipv4_checksum_verifies, ipv4_eligible, same_link_and_ip, CoalesceConfig, CoalesceStats, Merge,
    Push, Reject, Seal,
};
use super::pending::Pending;
use super::vnet::VirtioNetHdr;

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
    /// The pending superframe; its template is the headers as every further datagram must repeat
    /// them, masked by [`mask_per_datagram_fields`].
    pending: Pending<Run, MAX_TEMPLATE>,
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
            pending: Pending::new(Transport::Udp, config),
        }
    }

    /// Test hook: decide every frame with the full checks only (the fast path must agree).
    #[doc(hidden)]
    pub fn set_fast_path(&mut self, on: bool) {
        self.pending.fast_path = on;
    }

    pub fn config(&self) -> &CoalesceConfig {
        &self.pending.config
    }

    pub fn stats(&self) -> CoalesceStats {
        self.pending.stats
    }

    /// True while a superframe is pending.
    pub fn is_pending(&self) -> bool {
        self.pending.run.is_some()
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
        if ip_len > self.pending.config.max_ip_len {
            return Err(Reject::TooLong { ip_len });
        }
        Ok(())
    }

    /// The per-datagram rules: room left, size, IPv4 ID. `uf` has the run's layout.
    fn fits(&self, run: &Run, frame: &[u8], uf: &UdpFrame) -> bool {
        let (payload, config) = (uf.payload_len(), &self.pending.config);
        !run.sealed
            && run.segments < config.max_segments
            && payload <= run.gso_size
            && (payload == run.gso_size || config.short_tail)
            && self.pending.ip_len(&run.uf.ip) + payload <= config.max_ip_len
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
        if !self
            .pending
            .repeats_template(frame, hl, |h| mask_per_datagram_fields(&uf, h))
        {
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
        let run = Run {
            uf,
            gso_size: uf.payload_len(),
            segments: 1,
            first_id: uf.ip.ipv4_ident(frame),
            sealed: false,
        };
        self.pending.start(frame, &uf.ip, uf.hdr_len(), run, |h| {
            mask_per_datagram_fields(&uf, h)
        })
    }

    fn extend(&mut self, mut run: Run, frame: &[u8], uf: &UdpFrame) -> Push {
        // A zero checksum is "none" (the fast path masked it): not merged either. A bad one
        // appends nothing. Either way, same flow: let it go out after the superframe, where the
        // full checks reject it.
        if udp_header(frame, uf).checksum() == 0 {
            return Push::Flush;
        }
        let Some(payload) = self.pending.append(frame, &uf.ip, uf.hdr_len()) else {
            return Push::Flush;
        };
        run.segments += 1;
        run.sealed = payload < run.gso_size;
        self.pending.run = Some(run);
        Push::Absorbed
    }
}

impl Merge for UdpCoalescer {
    fn push(&mut self, frame: &[u8]) -> Push {
        if let (Some(run), true) = (self.pending.run, self.pending.fast_path) {
            if let Some(next) = self.continue_fast(&run, frame) {
                return self.extend(run, frame, &next);
            }
        }
        let uf = match UdpFrame::parse(frame) {
            Ok(uf) => uf,
            // Another protocol may pass. A fragment or a damaged datagram may be of the pending
            // flow: it must not overtake the superframe (both are rare).
            Err(e @ (OffloadError::NotIp { .. } | OffloadError::NotUdp { .. })) => {
                return self.pending.pass(Reject::Malformed(e))
            }
            Err(_) if self.pending.run.is_some() => return Push::Flush,
            Err(e) => return self.pending.pass(Reject::Malformed(e)),
        };
        let same_flow = match &self.pending.run {
            Some(run) => self.pending.same_flow(&run.uf.ip, frame, &uf.ip),
            None => false,
        };
        if let Err(reject) = self.eligible(frame, &uf) {
            return if same_flow {
                Push::Flush
            } else {
                self.pending.pass(reject)
            };
        }
        match self.pending.run {
            None => self.start(frame, uf),
            Some(run) => {
                let continues = same_flow
                    && self.fits(&run, frame, &uf)
                    && same_link_and_ip(self.pending.bytes(), frame, &uf.ip);
                if !continues {
                    return Push::Flush;
                }
                self.extend(run, frame, &uf)
            }
        }
    }

    fn finish(&mut self) -> Option<&[u8]> {
        self.pending.finish(|run| {
            let seal_as = Seal {
                ip: run.uf.ip,
                transport: Transport::Udp,
                hdr_len: run.uf.hdr_len(),
                gso_size: run.gso_size,
                gso_type: VirtioNetHdr::GSO_UDP_L4,
            };
            (seal_as, run.segments)
        })
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
