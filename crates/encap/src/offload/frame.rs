//! Where the headers of an inner Ethernet [+ 802.1Q] + IPv4/IPv6 + TCP/UDP frame are.
//!
//! [`IpFrame::parse`] (and [`TcpFrame::parse`], [`UdpFrame::parse`] on top of it) checks every
//! offset against the frame once, so the offload code can open the `wire` views on the headers it
//! rewrites (`Ipv4Packet::new_unchecked(&mut headers[ip.l3..ip.l4])`) without checking again. All
//! offsets count from the start of the inner Ethernet header, as the virtio-net header's do.

use std::ops::Range;

use crate::checksum::Sum;
use crate::error::{Layer, OffloadError};
pub(crate) use crate::wire::at;
use crate::wire::ethernet::{self, EtherType, EthernetPacket};
use crate::wire::{
    be16, ipv4, ipv6, tcp, udp, Ipv4Packet, Ipv6Packet, TcpPacket, ETHERNET_HEADER_LEN,
    IPPROTO_TCP, IPPROTO_UDP, IPV4_HEADER_LEN, IPV6_HEADER_LEN, TCP_HEADER_LEN, UDP_HEADER_LEN,
    VLAN_TAG_LEN,
};

/// Where the IP header and the transport header after it are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpFrame {
    /// Offset of the IP header (14, or 18 behind one 802.1Q tag).
    pub l3: usize,
    pub ipv6: bool,
    /// Offset of the transport header.
    pub l4: usize,
    /// End of the IP packet; bytes after it are link padding and are ignored.
    pub end: usize,
}

/// `Truncated` unless the frame's `actual` bytes reach `required`.
fn need(layer: Layer, required: usize, actual: usize) -> Result<(), OffloadError> {
    if actual < required {
        return Err(OffloadError::Truncated {
            layer,
            required,
            actual,
        });
    }
    Ok(())
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
    /// Inlined: every received frame the coalescer passes goes through it (`partial`).
    #[inline]
    pub(crate) fn parse(frame: &[u8], protocol: u8) -> Result<Self, OffloadError> {
        let len = frame.len();
        need(Layer::InnerEthernet, ETHERNET_HEADER_LEN, len)?;
        let mut ethertype = EthernetPacket::new_unchecked(frame).ethertype();
        let mut l3 = ETHERNET_HEADER_LEN;
        if ethertype == EtherType::VLAN {
            l3 += VLAN_TAG_LEN;
            need(Layer::InnerVlan, l3, len)?;
            // The tag sits where the EtherType was; the real one follows it.
            ethertype = be16(frame, ethernet::field::ETHERTYPE.start + VLAN_TAG_LEN).unwrap_or(0);
        }
        let (ipv6, l4, end) = match ethertype {
            EtherType::IPV4 => Self::parse_ipv4(frame, l3, protocol)?,
            EtherType::IPV6 => Self::parse_ipv6(frame, l3, protocol)?,
            other => return Err(OffloadError::NotIp { ethertype: other }),
        };
        Ok(IpFrame { l3, ipv6, l4, end })
    }

    #[inline]
    fn parse_ipv4(
        frame: &[u8],
        l3: usize,
        protocol: u8,
    ) -> Result<(bool, usize, usize), OffloadError> {
        let len = frame.len();
        need(Layer::InnerIpv4, l3 + IPV4_HEADER_LEN, len)?;
        let ip = Ipv4Packet::new_unchecked(&frame[l3..]);
        let bad = |reason| OffloadError::BadHeader {
            layer: Layer::InnerIpv4,
            reason,
        };
        if ip.version() != 4 {
            return Err(bad("version is not 4"));
        }
        let ihl = ip.header_len();
        if ihl < IPV4_HEADER_LEN {
            return Err(bad("IHL below 5"));
        }
        if ip.protocol() != protocol {
            return Err(wrong_protocol(protocol, ip.protocol()));
        }
        if ip.is_fragment() {
            return Err(OffloadError::Fragment);
        }
        let total = usize::from(ip.total_len());
        if total < ihl {
            return Err(bad("total length shorter than the header"));
        }
        need(Layer::InnerIpv4, l3 + total, len)?;
        Ok((false, l3 + ihl, l3 + total))
    }

    #[inline]
    fn parse_ipv6(
        frame: &[u8],
        l3: usize,
        protocol: u8,
    ) -> Result<(bool, usize, usize), OffloadError> {
        let len = frame.len();
        need(Layer::InnerIpv6, l3 + IPV6_HEADER_LEN, len)?;
        let ip = Ipv6Packet::new_unchecked(&frame[l3..]);
        if ip.version() != 6 {
            return Err(OffloadError::BadHeader {
                layer: Layer::InnerIpv6,
                reason: "version is not 6",
            });
        }
        // Extension headers are not walked: TCP/UDP must follow the fixed header directly
        // (what Linux TSO/USO/GRO produce; anything else is passed through as-is).
        if ip.next_header() != protocol {
            return Err(wrong_protocol(protocol, ip.next_header()));
        }
        let end = l3 + IPV6_HEADER_LEN + usize::from(ip.payload_len());
        need(Layer::InnerIpv6, end, len)?;
        Ok((true, l3 + IPV6_HEADER_LEN, end))
    }

    /// The source and destination addresses in the frame.
    pub(crate) fn addrs(&self) -> Range<usize> {
        if self.ipv6 {
            at(self.l3, ipv6::field::ADDRS)
        } else {
            at(self.l3, ipv4::field::ADDRS)
        }
    }

    /// The pseudo-header sum for `len` bytes of `protocol` with this frame's addresses (taken from
    /// `frame`: the frame this was parsed from, or a copy of its headers).
    pub(crate) fn pseudo_header(&self, frame: &[u8], protocol: u8, len: usize) -> Sum {
        Sum::new()
            .add_bytes(frame.get(self.addrs()).unwrap_or_default())
            .add_u16(u16::from(protocol))
            .add_u32(len as u32)
    }

    /// The IPv4 ID of `frame` (0 for IPv6, which has none outside a fragment header).
    pub(crate) fn ipv4_ident(&self, frame: &[u8]) -> u16 {
        match (self.ipv6, frame.get(self.l3..self.l4)) {
            (false, Some(header)) => Ipv4Packet::new_unchecked(header).ident(),
            _ => 0,
        }
    }

    /// Where the IP packet of `frame`, laid out like this one, ends by its own length field; the
    /// rest of the layout is taken as it is. `None` when the frame is shorter than the header.
    pub(crate) fn end_in(&self, frame: &[u8]) -> Option<usize> {
        let header = frame.get(self.l3..self.l4)?;
        Some(if self.ipv6 {
            self.l4 + usize::from(Ipv6Packet::new_unchecked(header).payload_len())
        } else {
            self.l3 + usize::from(Ipv4Packet::new_unchecked(header).total_len())
        })
    }

    /// Sets the IP length in `headers` (a copy of the frame's headers, or the frame itself) for
    /// `l4_len` bytes of transport header and payload.
    pub(crate) fn set_len(&self, headers: &mut [u8], l4_len: usize) {
        let Some(header) = headers.get_mut(self.l3..self.l4) else {
            return;
        };
        if self.ipv6 {
            Ipv6Packet::new_unchecked(header).set_payload_len(l4_len as u16);
        } else {
            let total = self.l4 - self.l3 + l4_len;
            Ipv4Packet::new_unchecked(header).set_total_len(total as u16);
        }
    }

    /// Zeroes the IP fields every segment of a superframe has its own value in: IPv4 total
    /// length, ID and header checksum, IPv6 payload length.
    pub(crate) fn clear_per_segment_fields(&self, headers: &mut [u8]) {
        let Some(header) = headers.get_mut(self.l3..self.l4) else {
            return;
        };
        if self.ipv6 {
            Ipv6Packet::new_unchecked(header).set_payload_len(0);
        } else {
            let mut ip = Ipv4Packet::new_unchecked(header);
            ip.set_total_len(0);
            ip.set_ident(0);
            ip.set_checksum(0);
        }
    }
}

/// An Ethernet + IPv4/IPv6 + TCP frame. Produced only by [`TcpFrame::parse`], which checks the TCP
/// header against the IP packet as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpFrame {
    pub ip: IpFrame,
    /// TCP header length from the data offset, options included.
    pub tcp_hlen: usize,
}

impl TcpFrame {
    pub(crate) fn parse(frame: &[u8]) -> Result<Self, OffloadError> {
        let ip = IpFrame::parse(frame, IPPROTO_TCP)?;
        let tcp = TcpPacket::new_checked(&frame[ip.l4..ip.end]).map_err(|e| match e {
            // The view counts from the TCP header; offload errors count from the frame.
            OffloadError::Truncated {
                layer,
                required,
                actual,
            } => OffloadError::Truncated {
                layer,
                required: ip.l4 + required,
                actual: ip.l4 + actual,
            },
            other => other,
        })?;
        Ok(TcpFrame {
            ip,
            tcp_hlen: tcp.header_len(),
        })
    }

    /// All headers up to the TCP payload: what every segment repeats. Recomputed from the frame;
    /// the virtio-net `hdr_len` is only a hint and is not trusted.
    pub(crate) fn hdr_len(&self) -> usize {
        self.ip.l4 + self.tcp_hlen
    }

    pub(crate) fn payload_len(&self) -> usize {
        self.ip.end - self.hdr_len()
    }

    /// The TCP header of `frame` (or of a copy of its headers), laid out like this one.
    pub(crate) fn tcp<'f>(&self, frame: &'f [u8]) -> TcpPacket<&'f [u8]> {
        TcpPacket::new_unchecked(frame.get(self.ip.l4..).unwrap_or_default())
    }

    /// The pseudo-header sum for a TCP segment of `tcp_len` bytes with this frame's addresses.
    pub(crate) fn pseudo_header(&self, frame: &[u8], tcp_len: usize) -> Sum {
        self.ip.pseudo_header(frame, IPPROTO_TCP, tcp_len)
    }
}

/// An Ethernet + IPv4/IPv6 + UDP frame (checked like [`TcpFrame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UdpFrame {
    pub ip: IpFrame,
}

impl UdpFrame {
    /// The UDP length field is not trusted (a USO superframe's may describe the whole or be
    /// stale); the IP header's length decides.
    pub(crate) fn parse(frame: &[u8]) -> Result<Self, OffloadError> {
        let ip = IpFrame::parse(frame, IPPROTO_UDP)?;
        need(Layer::InnerUdp, ip.l4 + UDP_HEADER_LEN, ip.end)?;
        Ok(UdpFrame { ip })
    }

    /// All headers up to the UDP payload.
    pub(crate) fn hdr_len(&self) -> usize {
        self.ip.l4 + UDP_HEADER_LEN
    }

    pub(crate) fn payload_len(&self) -> usize {
        self.ip.end - self.hdr_len()
    }

    /// The pseudo-header sum for a UDP datagram of `udp_len` bytes with this frame's addresses.
    pub(crate) fn pseudo_header(&self, frame: &[u8], udp_len: usize) -> Sum {
        self.ip.pseudo_header(frame, IPPROTO_UDP, udp_len)
    }
}

/// The transport protocols the offloads handle, and what checksum work needs to know of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    pub(crate) const fn protocol(self) -> u8 {
        match self {
            Transport::Tcp => IPPROTO_TCP,
            Transport::Udp => IPPROTO_UDP,
        }
    }

    /// Where the checksum sits in the transport header.
    pub(crate) const fn checksum_offset(self) -> usize {
        match self {
            Transport::Tcp => tcp::field::CHECKSUM.start,
            Transport::Udp => udp::field::CHECKSUM.start,
        }
    }

    /// The shortest header of the protocol.
    pub(crate) const fn min_header_len(self) -> usize {
        match self {
            Transport::Tcp => TCP_HEADER_LEN,
            Transport::Udp => UDP_HEADER_LEN,
        }
    }

    pub(crate) const fn layer(self) -> Layer {
        match self {
            Transport::Tcp => Layer::InnerTcp,
            Transport::Udp => Layer::InnerUdp,
        }
    }

    /// The checksum field's value for a computed `sum`. For UDP (RFC 768) a zero goes out as all
    /// ones, since zero means "no checksum"; TCP keeps zero, as the kernel writes it (both verify
    /// alike).
    pub(crate) fn finished_checksum(self, sum: Sum) -> u16 {
        match (sum.finish(), self) {
            (0, Transport::Udp) => 0xFFFF,
            (value, _) => value,
        }
    }
}

/// Whether the checksum field at `field` holds exactly `pseudo` folded: what a kernel leaves for
/// a NIC to finish (CHECKSUM_PARTIAL stores `~csum_tcpudp_magic(.., 0)`). A zero field never
/// matches, so a UDP "no checksum" is never taken for one: a pseudo-header sum includes the
/// protocol number, and a non-zero sum never folds to zero.
pub(crate) fn holds_partial_checksum(frame: &[u8], field: usize, pseudo: Sum) -> bool {
    be16(frame, field) == Some(pseudo.fold())
}

/// Test support: leaves `frame`'s TCP/UDP checksum as a kernel does for a NIC to finish (the
/// folded pseudo-header sum).
#[cfg(test)]
pub(crate) fn make_partial(frame: &mut [u8], protocol: u8) {
    let Ok(ip) = IpFrame::parse(frame, protocol) else {
        panic!("not a protocol {protocol} frame");
    };
    let transport = if protocol == IPPROTO_TCP {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let pseudo = ip.pseudo_header(frame, protocol, ip.end - ip.l4);
    crate::wire::be::set_be16(frame, ip.l4 + transport.checksum_offset(), pseudo.fold());
}
