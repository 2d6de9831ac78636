//! The outer layers: IP, UDP and VXLAN, laid out by `vxnet-encap`'s decapsulation (so the
//! offsets shown are the ones the data plane uses) and judged field by field.
//!
//! A VTEP rejects a packet whose checksums do not verify, and `decapsulate_*` does too. A capture
//! is different: a packet taken before the NIC carries checksums left to offload, and even a wrong
//! checksum is worth seeing in full. So when only a checksum stands in the way, the layout comes
//! from a scratch copy with the checksums put right, and the verdict on each field from the
//! captured bytes.

use std::net::IpAddr;

use vxnet_dataplane::tuning::SourcePortRange;
use vxnet_encap::checksum::{pseudo_header_v4, pseudo_header_v6, Sum};
use vxnet_encap::decap::{LayerOffsets, OuterIp};
use vxnet_encap::wire::{
    ipv4, ipv6, udp, vxlan, Ipv4Packet, Ipv6Packet, UdpPacket, UdpRepr, VxlanPacket, IPPROTO_UDP,
};
use vxnet_encap::{decapsulate_ethernet, decapsulate_ip, flow, DecapError, OuterPacket};

use super::checksum::{self, Check, Zero};
use super::fields::{be16, ip_protocol_name, one};
use super::model::{hex16, Layer, LayerBuilder, LayerKind};

/// What decapsulation found, owned, with offsets into the captured frame.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outer {
    pub ip: OuterIp,
    pub udp: UdpRepr,
    pub vni: u32,
    pub offsets: LayerOffsets,
}

impl Outer {
    pub(super) fn src(&self) -> IpAddr {
        match self.ip {
            OuterIp::V4(r) => r.src.into(),
            OuterIp::V6(r) => r.src.into(),
        }
    }

    pub(super) fn dst(&self) -> IpAddr {
        match self.ip {
            OuterIp::V4(r) => r.dst.into(),
            OuterIp::V6(r) => r.dst.into(),
        }
    }
}

fn owned(packet: &OuterPacket<'_>, shift: usize) -> Outer {
    let mut offsets = packet.offsets;
    offsets.ip += shift;
    offsets.udp += shift;
    offsets.vxlan += shift;
    offsets.inner += shift;
    offsets.end += shift;
    Outer {
        ip: packet.ip,
        udp: packet.udp,
        vni: packet.vxlan.vni.get(),
        offsets,
    }
}

/// Decapsulates `data` (outer IP at `ip_start`; `plain_ethernet` when a bare Ethernet header
/// precedes it), looking past checksums that are only wrong.
pub(super) fn decapsulate(
    data: &[u8],
    ip_start: usize,
    plain_ethernet: bool,
) -> Result<Outer, DecapError> {
    let decap = |bytes: &[u8]| {
        if plain_ethernet {
            decapsulate_ethernet(bytes).map(|p| owned(&p, 0))
        } else {
            decapsulate_ip(&bytes[ip_start..]).map(|p| owned(&p, ip_start))
        }
    };
    match decap(data) {
        Err(
            DecapError::BadIpv4Checksum
            | DecapError::BadUdpChecksum
            | DecapError::ZeroUdpChecksumIpv6,
        ) => {
            let mut scratch = data.to_vec();
            repair_checksums(&mut scratch, ip_start);
            decap(&scratch)
        }
        other => other,
    }
}

/// Writes correct outer IPv4 header and UDP checksums into `packet` (outer IP at `ip`), as far
/// as the headers can be read; the decapsulator then judges everything else.
fn repair_checksums(packet: &mut [u8], ip: usize) {
    let Some(first) = packet.get(ip).copied() else {
        return;
    };
    let (udp_start, udp_end, pseudo) = if first >> 4 == 6 {
        let Ok(v6) = Ipv6Packet::new_checked(&packet[ip..]) else {
            return;
        };
        let end = (ip + ipv6::IPV6_HEADER_LEN + usize::from(v6.payload_len())).min(packet.len());
        let start = ip + ipv6::IPV6_HEADER_LEN;
        let len = end.saturating_sub(start) as u32;
        (
            start,
            end,
            pseudo_header_v6(v6.src_addr(), v6.dst_addr(), IPPROTO_UDP, len),
        )
    } else {
        let Ok(v4) = Ipv4Packet::new_checked(&packet[ip..]) else {
            return;
        };
        let header_len = v4.header_len();
        let end = (ip + usize::from(v4.total_len())).min(packet.len());
        let (src, dst) = (v4.src_addr(), v4.dst_addr());
        let header = ip..ip + header_len;
        let value = checksum::repaired(&packet[header.clone()], 10, Sum::new(), false);
        packet[ip + 10..ip + 12].copy_from_slice(&value.to_be_bytes());
        let start = header.end;
        let len = end.saturating_sub(start) as u32;
        (start, end, pseudo_header_v4(src, dst, IPPROTO_UDP, len))
    };
    if udp_end < udp_start + udp::UDP_HEADER_LEN {
        return;
    }
    let value = checksum::repaired(&packet[udp_start..udp_end], 6, pseudo, true);
    packet[udp_start + 6..udp_start + 8].copy_from_slice(&value.to_be_bytes());
}

/// The verdict on the outer UDP checksum of the datagram `data[udp..end]`. `completed_inner`
/// is the inner frame with its checksum completed, when the capture left it to offload: the
/// outer checksum then covers the packet as the NIC will send it (LCO).
pub(super) fn udp_check(data: &[u8], outer: &Outer, completed_inner: Option<&[u8]>) -> Check {
    let o = outer.offsets;
    let segment = &data[o.udp..o.end];
    let len = segment.len() as u32;
    let (pseudo, zero) = match outer.ip {
        OuterIp::V4(r) => (
            pseudo_header_v4(r.src, r.dst, IPPROTO_UDP, len),
            Zero::MeansNone,
        ),
        OuterIp::V6(r) => (
            pseudo_header_v6(r.src, r.dst, IPPROTO_UDP, len),
            Zero::Forbidden,
        ),
    };
    let as_captured = checksum::transport(segment, 6, Some(pseudo), zero, true);
    let (Check::Wrong { .. }, Some(inner)) = (&as_captured, completed_inner) else {
        return as_captured;
    };
    let mut as_sent = data[o.udp..o.inner].to_vec();
    as_sent.extend_from_slice(inner);
    match checksum::transport(&as_sent, 6, Some(pseudo), zero, true) {
        Check::Verified => Check::VerifiedWithInnerCompleted,
        // Wrong either way; the value it should hold is the one for the packet as sent.
        other => other,
    }
}

pub(super) fn outer_ipv4(header: &[u8], offset: usize) -> Layer {
    use ipv4::field;
    let v = Ipv4Packet::new_unchecked(header);
    let mut b = LayerBuilder::new("outer IPv4", LayerKind::OuterIp, offset, header.len());
    let flags = be16(header, field::FLAGS_FRAG.start);
    b.noted(
        "version / IHL",
        one(field::VER_IHL),
        format!("{} / {}", v.version(), v.header_len() / 4),
        format!("IHL counts 32-bit words: {}-byte header", v.header_len()),
    )
    .field("DSCP / ECN", one(field::DSCP_ECN), v.dscp_ecn())
    .noted(
        "total length",
        field::TOTAL_LEN,
        v.total_len(),
        "outer IP header + UDP + VXLAN + inner frame",
    )
    .field("identification", field::IDENT, v.ident())
    .noted(
        "flags / fragment offset",
        field::FLAGS_FRAG,
        hex16(flags),
        if v.dont_fragment() {
            "DF set; VTEPs must not fragment"
        } else {
            "DF clear, not a fragment (VTEPs must not fragment)"
        },
    )
    .field("TTL", one(field::TTL), v.ttl())
    .noted(
        "protocol",
        one(field::PROTOCOL),
        v.protocol(),
        ip_protocol_name(v.protocol()),
    )
    .checked(
        "header checksum",
        field::CHECKSUM,
        hex16(v.checksum()),
        checksum::ipv4_header(header),
    )
    .noted(
        "source address",
        field::SRC_ADDR,
        v.src_addr().to_string(),
        "sending VTEP (host)",
    )
    .noted(
        "destination address",
        field::DST_ADDR,
        v.dst_addr().to_string(),
        "receiving VTEP (host)",
    );
    if header.len() > ipv4::IPV4_HEADER_LEN {
        b.field(
            "options",
            ipv4::IPV4_HEADER_LEN..header.len(),
            format!("{} bytes", header.len() - ipv4::IPV4_HEADER_LEN),
        );
    }
    b.finish()
}

pub(super) fn outer_ipv6(header: &[u8], offset: usize) -> Layer {
    use ipv6::field;
    let v = Ipv6Packet::new_unchecked(header);
    let mut b = LayerBuilder::new("outer IPv6", LayerKind::OuterIp, offset, header.len());
    b.noted(
        "version / traffic class / flow label",
        field::VER_TC_FLOW,
        format!(
            "{} / {} / {:#07x}",
            v.version(),
            v.traffic_class(),
            v.flow_label()
        ),
        "",
    )
    .noted(
        "payload length",
        field::PAYLOAD_LEN,
        v.payload_len(),
        "UDP + VXLAN + inner frame (IPv6 does not count its own header)",
    )
    .noted(
        "next header",
        one(field::NEXT_HEADER),
        v.next_header(),
        ip_protocol_name(v.next_header()),
    )
    .field("hop limit", one(field::HOP_LIMIT), v.hop_limit())
    .noted(
        "source address",
        field::SRC_ADDR,
        v.src_addr().to_string(),
        "sending VTEP (host)",
    )
    .noted(
        "destination address",
        field::DST_ADDR,
        v.dst_addr().to_string(),
        "receiving VTEP (host)",
    );
    let mut layer = b.finish();
    for f in &mut layer.fields {
        if f.note.as_deref() == Some("") {
            f.note = None;
        }
    }
    layer
}

pub(super) fn outer_udp(header: &[u8], offset: usize, inner: &[u8], check: Check) -> Layer {
    use udp::field;
    let v = UdpPacket::new_unchecked(header);
    let mut b = LayerBuilder::new("outer UDP", LayerKind::OuterUdp, offset, header.len());
    b.noted(
        "source port",
        field::SRC_PORT,
        v.src_port(),
        source_port_note(v.src_port(), inner),
    );
    vxlan_udp_fields(&mut b, &v).checked("checksum", field::CHECKSUM, hex16(v.checksum()), check);
    b.finish()
}

/// What the source port is for, and where vxnet would send this inner flow from: the engine's
/// own mapping (the flow hash onto the whole `srcport` range, one exact port per flow), not a
/// formula of its own. A capture does not say which range the sender ran with, so the note
/// gives the port under the default range.
/// The destination port and length of a UDP header that carries VXLAN: alike in a plain
/// packet's outer UDP and in the UDP an ESP payload carries.
pub(super) fn vxlan_udp_fields<'b>(
    b: &'b mut LayerBuilder,
    v: &UdpPacket<&[u8]>,
) -> &'b mut LayerBuilder {
    use udp::field;
    b.noted(
        "destination port",
        field::DST_PORT,
        v.dst_port(),
        match v.dst_port() {
            vxnet_encap::DEFAULT_PORT => "VXLAN, IANA-assigned",
            vxnet_encap::LINUX_LEGACY_PORT => "VXLAN, the Linux kernel's pre-IANA default",
            _ => "VXLAN, configured port",
        },
    )
    .noted(
        "length",
        field::LENGTH,
        v.len_field(),
        "UDP header + VXLAN header + inner frame",
    )
}

pub(super) fn source_port_note(carried: u16, inner: &[u8]) -> String {
    let range = SourcePortRange::default();
    let port = vxnet_dataplane::source_port::port_for_flow(flow::flow_hash(inner), &range);
    let purpose = "the sender's hash of the inner flow, so underlay ECMP/RSS spread flows";
    if carried == port {
        format!(
            "{purpose}; vxnet sends this flow from this port (its flow hash over srcport {range})"
        )
    } else {
        format!("{purpose}; vxnet would send this flow from {port} (its flow hash over the default srcport {range}; another --srcport, or that port held by another program, moves it)")
    }
}

pub(super) fn vxlan_layer(header: &[u8], offset: usize) -> Layer {
    use vxlan::field;
    let v = VxlanPacket::new_unchecked(header);
    let (reserved1, reserved2) = v.reserved();
    let flags_note = if v.flags() == vxlan::FLAG_I {
        "I bit set: the VNI is valid; every other bit reserved (zero)".to_owned()
    } else {
        format!(
            "I bit {}; other bits ignored on receipt",
            if v.has_vni_flag() { "set" } else { "CLEAR" }
        )
    };
    let mut b = LayerBuilder::new("VXLAN", LayerKind::Vxlan, offset, header.len());
    b.noted(
        "flags",
        one(field::FLAGS),
        format!("{:#04x}", v.flags()),
        flags_note,
    )
    .noted(
        "reserved",
        field::RESERVED_1,
        reserved1,
        "24 bits, zero on send, ignored on receipt",
    )
    .noted(
        "VNI",
        field::VNI,
        v.vni().get(),
        "24-bit VXLAN Network Identifier: which overlay network",
    )
    .noted(
        "reserved",
        one(field::RESERVED_2),
        reserved2,
        "8 bits, zero on send, ignored on receipt",
    );
    b.finish()
}
