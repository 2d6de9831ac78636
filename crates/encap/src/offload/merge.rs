//! What the two wire -> TAP coalescers share: [`Coalescer`](super::Coalescer) (TCP segments,
//! GRO-style) and [`UdpCoalescer`](super::UdpCoalescer) (UDP datagrams, like the kernel's UDP
//! GRO). Their interface ([`Merge`], [`Push`], [`Emit`]), configuration and counters, and the
//! header work both do: comparing a datagram's IP header with the pending superframe's, verifying
//! an IPv4 header checksum, and sealing a superframe behind its virtio-net header.

use std::ops::Range;

use crate::checksum::{self, Sum};
use crate::error::OffloadError;
use crate::wire::{be::set_be16, ipv4, ipv6, Ipv4Packet, UdpPacket, IPV4_HEADER_LEN};

use super::frame::{at, IpFrame, Transport};
use super::vnet::{VirtioNetHdr, VIRTIO_NET_HDR_LEN, ZERO_VNET_HDR};

/// Largest IP packet a superframe may be (IPv4 total length / IPv6 payload length are 16 bits).
pub const MAX_SUPERFRAME_IP_LEN: usize = 65_535;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalesceConfig {
    /// Largest IP packet (IP + transport headers + payload) of a superframe, at most 65535.
    pub max_ip_len: usize,
    /// Most segments (datagrams) merged into one superframe. 64 is also `UDP_MAX_SEGMENTS` of
    /// older kernels (newer ones allow 128), which a TAP write of a UDP superframe may not
    /// exceed.
    pub max_segments: usize,
    /// Whether the last segment of a superframe may be shorter than `gso_size`. Some kernels
    /// (6.6.44 and backports) reject such TCP superframes on a TAP write with EINVAL; turning
    /// this off keeps every superframe's segments equal.
    pub short_tail: bool,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        CoalesceConfig {
            max_ip_len: MAX_SUPERFRAME_IP_LEN,
            max_segments: 64,
            short_tail: true,
        }
    }
}

impl CoalesceConfig {
    /// The configuration clamped to what a superframe can hold.
    pub(crate) fn clamped(mut self) -> Self {
        self.max_ip_len = self.max_ip_len.min(MAX_SUPERFRAME_IP_LEN);
        self.max_segments = self.max_segments.max(1);
        self
    }
}

/// Why a frame is written to the TAP as it came (behind
/// [`ZERO_VNET_HDR`](super::ZERO_VNET_HDR)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not Ethernet/IP/TCP (UDP), or truncated/malformed (the kernel will judge it).
    Malformed(OffloadError),
    /// IPv4 header with options.
    Ipv4Options,
    /// Pure ACK / window update, or an empty datagram: nothing to merge.
    NoPayload,
    /// Flags other than ACK, PSH, ECE (SYN, FIN, RST, URG, CWR) or no ACK.
    Flags {
        flags: u8,
    },
    BadIpv4Checksum,
    BadTcpChecksum,
    BadUdpChecksum,
    /// A datagram sent without a UDP checksum (zero): segmenting the superframe would give it
    /// one the sender did not send.
    NoUdpChecksum,
    /// Longer than `max_ip_len` on its own.
    TooLong {
        ip_len: usize,
    },
}

impl Reject {
    fn is_bad_checksum(self) -> bool {
        matches!(
            self,
            Reject::BadIpv4Checksum | Reject::BadTcpChecksum | Reject::BadUdpChecksum
        )
    }
}

/// What [`Merge::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Merged into (or started) the pending superframe; nothing to write yet.
    Absorbed,
    /// The frame does not continue the pending superframe (or belongs to its flow but cannot be
    /// merged, and must not overtake it). Write [`Merge::finish`], then push the frame again;
    /// with nothing pending, `push` never returns `Flush`.
    Flush,
    /// Write the frame as it is, behind [`ZERO_VNET_HDR`](super::ZERO_VNET_HDR). It is of
    /// another flow than the pending superframe (or unparseable), so it may overtake it; the
    /// pending superframe stays pending.
    PassThrough(Reject),
}

/// What [`Merge::coalesce`] hands to its callback, in the order to write them to the TAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit<'a> {
    /// Virtio-net header + frame, ready for one TAP `write`.
    Write(&'a [u8]),
    /// An input frame to write unchanged behind [`ZERO_VNET_HDR`](super::ZERO_VNET_HDR).
    AsIs(&'a [u8]),
}

/// Counters for `vxnet stats`; never reset by a coalescer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoalesceStats {
    /// Superframes of two or more segments written.
    pub superframes: u64,
    /// Segments that went into those superframes.
    pub merged_segments: u64,
    /// Coalescable segments that found no partner (written untouched, zero header).
    pub singles: u64,
    /// Frames passed through as-is, all reasons (including bad checksums).
    pub passed_through: u64,
    /// Frames whose IPv4 header or transport checksum failed (passed through for the kernel to
    /// drop).
    pub bad_checksum: u64,
}

impl CoalesceStats {
    /// Counts a frame passed through for `reject`.
    pub(crate) fn pass(&mut self, reject: Reject) -> Push {
        self.passed_through += 1;
        if reject.is_bad_checksum() {
            self.bad_checksum += 1;
        }
        Push::PassThrough(reject)
    }
}

/// A coalescer: frames go in one by one ([`push`](Self::push)), superframes come out
/// ([`finish`](Self::finish)).
pub trait Merge {
    /// Offers one decapsulated inner Ethernet frame. See [`Push`] for what the caller must do.
    fn push(&mut self, frame: &[u8]) -> Push;

    /// Completes the pending superframe and returns `[virtio-net header][frame]` for one TAP
    /// write (a lone segment behind an all-zero header), or `None` when nothing is pending.
    fn finish(&mut self) -> Option<&[u8]>;

    /// Offers `frame`, writing out the pending superframe first (through `write`) when the frame
    /// does not continue it. Returns what finally became of the frame: never `Flush`.
    fn push_or_flush(&mut self, frame: &[u8], write: impl FnMut(&[u8])) -> Push {
        match self.push(frame) {
            Push::Flush => self.flush_and_push(frame, write),
            push => push,
        }
    }

    /// After [`push`](Self::push) said `Flush`: writes out the pending superframe (through
    /// `write`), then offers `frame` again. Returns what finally became of the frame: never
    /// `Flush`.
    fn flush_and_push(&mut self, frame: &[u8], mut write: impl FnMut(&[u8])) -> Push {
        if let Some(pending) = self.finish() {
            write(pending);
        }
        match self.push(frame) {
            // Cannot recur with nothing pending; pass through if it ever did.
            Push::Flush => Push::PassThrough(Reject::TooLong {
                ip_len: frame.len(),
            }),
            push => push,
        }
    }

    /// Convenience over [`push`](Self::push)/[`finish`](Self::finish): runs a whole batch (e.g.
    /// one `recvmmsg` with UDP GRO, decapsulated) and hands every TAP write to `emit` in order.
    /// Ends with nothing pending, so nothing waits for a timer between batches.
    fn coalesce<'f, I>(&mut self, frames: I, mut emit: impl FnMut(Emit<'_>))
    where
        I: IntoIterator<Item = &'f [u8]>,
        Self: Sized,
    {
        for frame in frames {
            if let Push::PassThrough(_) = self.push_or_flush(frame, |b| emit(Emit::Write(b))) {
                emit(Emit::AsIs(frame));
            }
        }
        if let Some(b) = self.finish() {
            emit(Emit::Write(b));
        }
    }
}

/// The IPv4 header of `frame`, laid out as `ip` says (`ip` came from parsing a frame so laid out).
pub(crate) fn ipv4_header<'f>(frame: &'f [u8], ip: &IpFrame) -> Ipv4Packet<&'f [u8]> {
    Ipv4Packet::new_unchecked(frame.get(ip.l3..ip.l4).unwrap_or_default())
}

/// Whether the IPv4 header of `frame` at `ip` carries a correct checksum.
pub(crate) fn ipv4_checksum_verifies(frame: &[u8], ip: &IpFrame) -> bool {
    let header = frame.get(ip.l3..ip.l4).unwrap_or_default();
    checksum::verifies(Sum::new().add_bytes(header))
}

/// Whether `frame` (laid out as `ip`, the pending superframe's layout) repeats the Ethernet header
/// and the IP header of the superframe `cur` in every field a merged segment must keep: all but
/// the length, and for IPv4 the ID and checksum (so same addresses, TOS/traffic class, flow
/// label, TTL/hop limit, DF, protocol). The ID rule is the caller's.
pub(crate) fn same_link_and_ip(cur: &[u8], frame: &[u8], ip: &IpFrame) -> bool {
    let same = |r: Range<usize>| cur.get(r.clone()) == frame.get(r);
    let l3 = ip.l3;
    if !same(0..l3) || !same(ip.addrs()) {
        return false;
    }
    if ip.ipv6 {
        // Version, traffic class, flow label; next header, hop limit.
        let fixed = ipv6::field::PAYLOAD_LEN.end..ipv6::field::SRC_ADDR.start;
        same(at(l3, ipv6::field::VER_TC_FLOW)) && same(at(l3, fixed))
    } else {
        // TOS, flags/fragment (DF), TTL, protocol.
        let version_tos = ipv4::field::VER_IHL..ipv4::field::TOTAL_LEN.start;
        let flags_ttl_protocol = ipv4::field::FLAGS_FRAG.start..ipv4::field::CHECKSUM.start;
        same(at(l3, version_tos)) && same(at(l3, flags_ttl_protocol))
    }
}

/// Ends a run of `segments` frames in `buf` (`[virtio-net header][superframe of len bytes]`):
/// a run of one leaves untouched behind an all-zero header, a longer one [`seal`]ed as
/// `seal_as`; counted in `stats`. Returns the bytes to write.
pub(crate) fn finish_run<'b>(
    buf: &'b mut [u8],
    len: usize,
    segments: usize,
    seal_as: &Seal,
    stats: &mut CoalesceStats,
) -> Option<&'b [u8]> {
    if segments == 1 {
        buf.get_mut(..VIRTIO_NET_HDR_LEN)?
            .copy_from_slice(&ZERO_VNET_HDR);
        stats.singles += 1;
        return buf.get(..VIRTIO_NET_HDR_LEN + len);
    }
    stats.superframes += 1;
    stats.merged_segments += segments as u64;
    seal(buf, len, seal_as)
}

/// The IPv4 rules of every merged segment or datagram (none for IPv6): no options (the header
/// templates assume 20 bytes) and a header checksum that verifies.
pub(crate) fn ipv4_eligible(frame: &[u8], ip: &IpFrame) -> Result<(), Reject> {
    if ip.ipv6 {
        return Ok(());
    }
    if ip.l4 - ip.l3 != IPV4_HEADER_LEN {
        return Err(Reject::Ipv4Options);
    }
    if !ipv4_checksum_verifies(frame, ip) {
        return Err(Reject::BadIpv4Checksum);
    }
    Ok(())
}

/// How a superframe is described to the kernel.
pub(crate) struct Seal {
    pub ip: IpFrame,
    pub transport: Transport,
    /// All headers up to the payload.
    pub hdr_len: usize,
    pub gso_size: usize,
    /// `GSO_TCPV4`/`GSO_TCPV6` or `GSO_UDP_L4`.
    pub gso_type: u8,
}

/// Turns `buf` (`[virtio-net header][superframe of len bytes]`) into one TAP write: the IP
/// length and IPv4 header checksum for the whole superframe, the transport checksum field holding
/// the folded, *not* complemented pseudo-header sum over the superframe's transport length (what
/// Linux puts there for `CHECKSUM_PARTIAL`), and a `NEEDS_CSUM` virtio-net header that points
/// at it. Returns the bytes to write.
pub(crate) fn seal<'b>(buf: &'b mut [u8], len: usize, s: &Seal) -> Option<&'b [u8]> {
    let (hdr_bytes, rest) = buf.split_at_mut_checked(VIRTIO_NET_HDR_LEN)?;
    let sf = rest.get_mut(..len)?;
    let ip = s.ip;
    let l4_len = len.checked_sub(ip.l4)?;
    ip.set_len(sf, l4_len);
    if !ip.ipv6 {
        Ipv4Packet::new_unchecked(sf.get_mut(ip.l3..ip.l4)?).fill_checksum();
    }
    if s.transport == Transport::Udp {
        // The UDP length is the whole superframe's, as a `UDP_SEGMENT` send leaves it.
        UdpPacket::new_unchecked(sf.get_mut(ip.l4..)?).set_len(l4_len as u16);
    }
    let protocol = s.transport.protocol();
    let pseudo = ip.pseudo_header(sf, protocol, l4_len).fold();
    set_be16(sf, ip.l4 + s.transport.checksum_offset(), pseudo);
    let hdr = VirtioNetHdr {
        flags: VirtioNetHdr::FLAG_NEEDS_CSUM,
        gso_type: s.gso_type,
        hdr_len: s.hdr_len as u16,
        gso_size: s.gso_size as u16,
        csum_start: ip.l4 as u16,
        csum_offset: s.transport.checksum_offset() as u16,
    };
    hdr_bytes.copy_from_slice(&hdr.to_bytes());
    buf.get(..VIRTIO_NET_HDR_LEN + len)
}
