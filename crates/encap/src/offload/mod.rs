//! TAP offloads, sans-IO: the virtio-net header, checksum completion, TSO segmentation of TCP
//! superframes into one UDP GSO send, and GRO-style coalescing of received TCP segments.
//!
//! - [`vnet`]: `struct virtio_net_hdr` (native endian, 10 bytes).
//! - [`segment`]: TAP -> wire. [`prepare_for_wire`] is the single entry point for every frame read
//!   from the TAP: it passes plain frames through, completes a pending checksum, or splits a TSO
//!   superframe into VXLAN-wrapped segments of equal size laid out for one `UDP_SEGMENT` send.
//! - [`coalesce`]: wire -> TAP. [`Coalescer`] merges consecutive, checksum-verified TCP segments of
//!   one flow into a superframe with a `NEEDS_CSUM` + `TCPV4/6` virtio-net header.
//! - [`copy_csum`]: the fused copy + checksum both directions use.
//! - [`partial`]: inner checksums a kernel VTEP on the same machine left for a NIC to finish.
//!
//! All offsets (like the virtio-net header's) count from the start of the inner Ethernet header.
//!
//! # Engine usage
//!
//! TAP -> wire, per TAP read `[virtio_net_hdr][frame]`:
//! ```text
//! let hdr = VirtioNetHdr::parse(&read)?;            // native endian, 10 bytes
//! let frame = &read[VIRTIO_NET_HDR_LEN..];
//! // out: allocated once; a superframe that does not fit goes out in several chunks
//! let mut plan = WirePlan::new(&hdr, frame, mss)?;
//! while let Some(seg) = plan.write_next(frame, vni, &mut out, max_segments)? {
//!     for b in seg.batches(MAX_UDP_GSO_PAYLOAD, MAX_GSO_SEGMENTS) {
//!         // one sendmsg of out[b.range] with cmsg UDP_SEGMENT = b.segment_size as u16
//!         // (skip the cmsg when b.segments == 1)
//!     }
//! }
//! ```
//! ([`prepare_for_wire`] does it in one go when the output buffer holds the whole frame.)
//! `mss` is the inner TCP payload that fits the underlay: underlay MTU - outer IP (20/40) - UDP 8 -
//! VXLAN 8 - inner Ethernet 14 - inner IP/TCP headers (e.g. 1500 - 50 - 20 - 32 = 1398 for IPv4
//! with timestamps). A malformed frame is an error to count and drop.
//!
//! Wire -> TAP, per batch of decapsulated inner frames:
//! ```text
//! coalescer.coalesce(frames, |e| match e {
//!     Emit::Write(bytes) => tap.write(bytes),            // header included
//!     Emit::AsIs(frame) => tap.writev(&[ZERO_VNET_HDR, frame]),
//! });
//! ```

pub mod coalesce;
pub mod copy_csum;
pub mod partial;
pub mod segment;
pub mod tunnel_gso;
pub mod vnet;

pub use coalesce::{CoalesceConfig, CoalesceStats, Coalescer, Emit, Push, Reject};
pub use partial::complete_partial_checksum;
pub use segment::{
    complete_checksum, prepare_for_wire, prepare_for_wire_with, required_output_len,
    segments_per_send, CopyMode, GsoBatch, GsoBatches, Segmented, WirePlan, MAX_GSO_SEGMENTS,
    MAX_UDP_GSO_PAYLOAD,
};
pub use tunnel_gso::InnerSuperframe;
pub use vnet::{VirtioNetHdr, VIRTIO_NET_HDR_LEN, ZERO_VNET_HDR};

use crate::error::{Layer, OffloadError};
use crate::wire::{
    EtherType, ETHERNET_HEADER_LEN, IPPROTO_TCP, IPPROTO_UDP, IPV4_HEADER_LEN, IPV6_HEADER_LEN,
};

/// Fixed TCP header length (no options).
pub const TCP_HEADER_LEN: usize = 20;
/// UDP header length.
pub const UDP_HEADER_LEN: usize = 8;
/// Offset of the checksum inside the UDP header: the virtio-net `csum_offset` for UDP.
pub const UDP_CHECKSUM_OFFSET: u16 = 6;
/// Offset of the checksum inside the TCP header: the virtio-net `csum_offset` for TCP.
pub const TCP_CHECKSUM_OFFSET: u16 = 16;
const VLAN_TAG_LEN: usize = 4;

/// TCP header fields (offsets inside the TCP header) and flag bits.
pub mod tcp {
    use std::ops::Range;
    pub const PORTS: Range<usize> = 0..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
    pub const OPTIONS_START: usize = 20;

    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK_FLAG: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Where the headers of an Ethernet + IPv4/IPv6 + TCP frame are. Produced only by
/// [`TcpFrame::parse`], which checks every offset against the frame, so slicing with them is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpFrame {
    /// Offset of the IP header (14, or 18 behind one 802.1Q tag).
    pub l3: usize,
    pub ipv6: bool,
    /// Offset of the TCP header.
    pub l4: usize,
    /// TCP header length from the data offset, options included.
    pub tcp_hlen: usize,
    /// End of the IP packet; bytes after it are link padding and are ignored.
    pub end: usize,
}

pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(w) => u16::from_be_bytes([w[0], w[1]]),
        None => 0,
    }
}

/// Where the IP header and the transport header after it are. Produced only by
/// [`IpFrame::parse`], which checks every offset against the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpFrame {
    pub l3: usize,
    pub ipv6: bool,
    pub l4: usize,
    pub end: usize,
}

fn wrong_protocol(want: u8, protocol: u8) -> OffloadError {
    if want == IPPROTO_UDP {
        OffloadError::NotUdp { protocol }
    } else {
        OffloadError::NotTcp { protocol }
    }
}

impl IpFrame {
    /// Parses Ethernet [+ one 802.1Q tag] + IPv4 (not a fragment) or IPv6 carrying `protocol`.
    pub fn parse(frame: &[u8], protocol: u8) -> Result<Self, OffloadError> {
        let len = frame.len();
        if len < ETHERNET_HEADER_LEN {
            return Err(OffloadError::Truncated {
                layer: Layer::InnerEthernet,
                required: ETHERNET_HEADER_LEN,
                actual: len,
            });
        }
        let mut ethertype = be16(frame, 12);
        let mut l3 = ETHERNET_HEADER_LEN;
        if ethertype == EtherType::VLAN {
            l3 += VLAN_TAG_LEN;
            if len < l3 {
                return Err(OffloadError::Truncated {
                    layer: Layer::InnerVlan,
                    required: l3,
                    actual: len,
                });
            }
            ethertype = be16(frame, 16);
        }
        let (ipv6, l4, end) = match ethertype {
            EtherType::IPV4 => {
                if len < l3 + IPV4_HEADER_LEN {
                    return Err(OffloadError::Truncated {
                        layer: Layer::InnerIpv4,
                        required: l3 + IPV4_HEADER_LEN,
                        actual: len,
                    });
                }
                let ip = &frame[l3..];
                let bad = |reason| OffloadError::BadHeader {
                    layer: Layer::InnerIpv4,
                    reason,
                };
                if ip[0] >> 4 != 4 {
                    return Err(bad("version is not 4"));
                }
                let ihl = ((ip[0] & 0x0F) as usize) * 4;
                if ihl < IPV4_HEADER_LEN {
                    return Err(bad("IHL below 5"));
                }
                if ip[9] != protocol {
                    return Err(wrong_protocol(protocol, ip[9]));
                }
                if be16(ip, 6) & 0x3FFF != 0 {
                    return Err(OffloadError::Fragment);
                }
                let total = be16(ip, 2) as usize;
                if total < ihl {
                    return Err(bad("total length shorter than the header"));
                }
                if len < l3 + total {
                    return Err(OffloadError::Truncated {
                        layer: Layer::InnerIpv4,
                        required: l3 + total,
                        actual: len,
                    });
                }
                (false, l3 + ihl, l3 + total)
            }
            EtherType::IPV6 => {
                if len < l3 + IPV6_HEADER_LEN {
                    return Err(OffloadError::Truncated {
                        layer: Layer::InnerIpv6,
                        required: l3 + IPV6_HEADER_LEN,
                        actual: len,
                    });
                }
                let ip = &frame[l3..];
                if ip[0] >> 4 != 6 {
                    return Err(OffloadError::BadHeader {
                        layer: Layer::InnerIpv6,
                        reason: "version is not 6",
                    });
                }
                // Extension headers are not walked: TCP/UDP must follow the fixed header directly
                // (what Linux TSO/USO/GRO produce; anything else is passed through as-is).
                if ip[6] != protocol {
                    return Err(wrong_protocol(protocol, ip[6]));
                }
                let payload = be16(ip, 4) as usize;
                let end = l3 + IPV6_HEADER_LEN + payload;
                if len < end {
                    return Err(OffloadError::Truncated {
                        layer: Layer::InnerIpv6,
                        required: end,
                        actual: len,
                    });
                }
                (true, l3 + IPV6_HEADER_LEN, end)
            }
            other => return Err(OffloadError::NotIp { ethertype: other }),
        };
        Ok(IpFrame { l3, ipv6, l4, end })
    }
}

/// Where the headers of an Ethernet + IPv4/IPv6 + UDP frame are (checked like [`TcpFrame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UdpFrame {
    pub l3: usize,
    pub ipv6: bool,
    /// Offset of the UDP header.
    pub l4: usize,
    /// End of the IP packet.
    pub end: usize,
}

impl UdpFrame {
    /// The UDP length field is not trusted (a USO superframe's may describe the whole or be
    /// stale); the IP header's length decides.
    pub fn parse(frame: &[u8]) -> Result<Self, OffloadError> {
        let IpFrame { l3, ipv6, l4, end } = IpFrame::parse(frame, IPPROTO_UDP)?;
        if end < l4 + UDP_HEADER_LEN {
            return Err(OffloadError::Truncated {
                layer: Layer::InnerUdp,
                required: l4 + UDP_HEADER_LEN,
                actual: end,
            });
        }
        Ok(UdpFrame { l3, ipv6, l4, end })
    }

    /// All headers up to the UDP payload.
    pub fn hdr_len(&self) -> usize {
        self.l4 + UDP_HEADER_LEN
    }

    pub fn payload_len(&self) -> usize {
        self.end - self.hdr_len()
    }

    /// The pseudo-header sum for a UDP datagram of `udp_len` bytes with this frame's addresses.
    pub fn pseudo_header(&self, frame: &[u8], udp_len: usize) -> crate::checksum::Sum {
        pseudo_header(frame, self.l3, self.ipv6, IPPROTO_UDP, udp_len)
    }
}

/// Whether the checksum field at `field` holds exactly `pseudo` folded: what a kernel leaves for
/// a NIC to finish (CHECKSUM_PARTIAL stores `~csum_tcpudp_magic(.., 0)`). A zero field never
/// matches, so a UDP "no checksum" is never taken for one: a pseudo-header sum includes the
/// protocol number, and a non-zero sum never folds to zero.
pub(crate) fn holds_partial_checksum(
    frame: &[u8],
    field: usize,
    pseudo: crate::checksum::Sum,
) -> bool {
    frame.len() >= field + 2 && be16(frame, field) == pseudo.fold()
}

/// Test support: leaves `frame`'s TCP/UDP checksum as a kernel does for a NIC to finish (the
/// folded pseudo-header sum).
#[cfg(test)]
pub(crate) fn make_partial(frame: &mut [u8], protocol: u8) {
    let Ok(ip) = IpFrame::parse(frame, protocol) else {
        panic!("not a protocol {protocol} frame");
    };
    let pseudo = pseudo_header(frame, ip.l3, ip.ipv6, protocol, ip.end - ip.l4);
    let at = ip.l4
        + if protocol == IPPROTO_TCP {
            TCP_CHECKSUM_OFFSET
        } else {
            UDP_CHECKSUM_OFFSET
        } as usize;
    frame[at..at + 2].copy_from_slice(&pseudo.fold().to_be_bytes());
}

fn pseudo_header(
    frame: &[u8],
    l3: usize,
    ipv6: bool,
    protocol: u8,
    len: usize,
) -> crate::checksum::Sum {
    let addrs = if ipv6 {
        frame.get(l3 + 8..l3 + 40)
    } else {
        frame.get(l3 + 12..l3 + 20)
    };
    crate::checksum::Sum::new()
        .add_bytes(addrs.unwrap_or(&[]))
        .add_u16(protocol as u16)
        .add_u32(len as u32)
}

impl TcpFrame {
    /// All headers up to the TCP payload: what every segment repeats. Recomputed from the frame;
    /// the virtio-net `hdr_len` is only a hint and is not trusted.
    pub fn hdr_len(&self) -> usize {
        self.l4 + self.tcp_hlen
    }

    pub fn payload_len(&self) -> usize {
        self.end - self.hdr_len()
    }

    pub fn parse(frame: &[u8]) -> Result<Self, OffloadError> {
        let IpFrame { l3, ipv6, l4, end } = IpFrame::parse(frame, IPPROTO_TCP)?;
        if end < l4 + TCP_HEADER_LEN {
            return Err(OffloadError::Truncated {
                layer: Layer::InnerTcp,
                required: l4 + TCP_HEADER_LEN,
                actual: end,
            });
        }
        let tcp_hlen = ((frame[l4 + tcp::DATA_OFFSET] >> 4) as usize) * 4;
        if tcp_hlen < TCP_HEADER_LEN {
            return Err(OffloadError::BadHeader {
                layer: Layer::InnerTcp,
                reason: "data offset below 5",
            });
        }
        if end < l4 + tcp_hlen {
            return Err(OffloadError::Truncated {
                layer: Layer::InnerTcp,
                required: l4 + tcp_hlen,
                actual: end,
            });
        }
        Ok(TcpFrame {
            l3,
            ipv6,
            l4,
            tcp_hlen,
            end,
        })
    }

    /// The pseudo-header sum for a TCP segment of `tcp_len` bytes with this frame's addresses
    /// (taken from `frame`, which must be the frame this was parsed from or a copy of its headers).
    pub fn pseudo_header(&self, frame: &[u8], tcp_len: usize) -> crate::checksum::Sum {
        pseudo_header(frame, self.l3, self.ipv6, IPPROTO_TCP, tcp_len)
    }
}
