//! Turns one captured frame into a [`Packet`]: the link layer by fixed offsets, the outer
//! IP/UDP/VXLAN layers through `vxnet-encap`'s decapsulation and wire views (so the offsets shown
//! are the ones the data plane uses), the inner frame through etherparse.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use etherparse::{LaxLinkExtSlice, LaxNetSlice, LaxSlicedPacket, TransportSlice};
use vxnet_encap::decap::OuterIp;
use vxnet_encap::wire::{
    ethernet, ipv4, ipv6, udp, vxlan, EtherType, Ipv4Packet, Ipv6Packet, UdpPacket, VxlanPacket,
};
use vxnet_encap::{decapsulate_ethernet, decapsulate_ip, flow, InnerFrame, OuterPacket};

use super::model::{hex16, Layer, LayerBuilder, LayerKind, Packet};

/// The link layers vxnet can read captures of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    Ethernet,
    /// `tcpdump -i any` before libpcap 1.10.
    LinuxSll,
    /// `tcpdump -i any` / tshark on "any" since libpcap 1.10.
    LinuxSll2,
    /// Bare IPv4/IPv6 (tun devices, `LINKTYPE_RAW`).
    RawIp,
}

const SLL_HEADER_LEN: usize = 16;
const SLL2_HEADER_LEN: usize = 20;
const VLAN_TAG_LEN: usize = 4;

fn one(at: usize) -> Range<usize> {
    at..at + 1
}

// Callers check a layer's length before they describe its fields, so a missing field (read as 0)
// never shows; the reader and the address format are `vxnet-encap`'s, as the data plane's are.
fn be16(data: &[u8], at: usize) -> u16 {
    vxnet_encap::wire::be16(data, at).unwrap_or(0)
}

fn be32(data: &[u8], at: usize) -> u32 {
    vxnet_encap::wire::be32(data, at).unwrap_or(0)
}

fn mac(bytes: &[u8]) -> String {
    vxnet_encap::LinkAddr(bytes).to_string()
}

pub fn ethertype_name(ethertype: u16) -> &'static str {
    match ethertype {
        EtherType::IPV4 => "IPv4",
        EtherType::IPV6 => "IPv6",
        EtherType::ARP => "ARP",
        EtherType::VLAN => "802.1Q VLAN tag",
        EtherType::QINQ => "802.1ad VLAN tag",
        _ => "unknown",
    }
}

fn ip_protocol_name(protocol: u8) -> &'static str {
    match protocol {
        1 => "ICMP",
        2 => "IGMP",
        6 => "TCP",
        17 => "UDP",
        58 => "ICMPv6",
        132 => "SCTP",
        _ => "other",
    }
}

/// Where the outer IP header starts and what the link layer says it carries.
struct Link {
    layer: Option<Layer>,
    ip_start: usize,
    ethertype: u16,
    /// A plain Ethernet header, which `decapsulate_ethernet` reads itself.
    plain_ethernet: bool,
}

fn link_layer(link: LinkType, data: &[u8]) -> Result<Link, String> {
    let too_short = |what: &str, need: usize| {
        format!(
            "{} bytes is shorter than a {what} header ({need} bytes)",
            data.len()
        )
    };
    match link {
        LinkType::Ethernet => {
            if data.len() < ethernet::ETHERNET_HEADER_LEN {
                return Err(too_short("Ethernet", ethernet::ETHERNET_HEADER_LEN));
            }
            let mut b = LayerBuilder::new("outer Ethernet", LayerKind::Link, 0, 14);
            b.noted(
                "destination MAC",
                ethernet::field::DESTINATION,
                mac(&data[ethernet::field::DESTINATION]),
                "next hop on the underlay (the receiving host's NIC)",
            )
            .noted(
                "source MAC",
                ethernet::field::SOURCE,
                mac(&data[ethernet::field::SOURCE]),
                "the sending host's NIC",
            );
            let mut ethertype = be16(data, 12);
            let mut ip_start = ethernet::ETHERNET_HEADER_LEN;
            // One underlay VLAN tag is common on trunks; skip it rather than call the packet alien.
            if matches!(ethertype, EtherType::VLAN | EtherType::QINQ) {
                if data.len() < ip_start + VLAN_TAG_LEN {
                    return Err(too_short("802.1Q-tagged Ethernet", ip_start + VLAN_TAG_LEN));
                }
                let tci = be16(data, 14);
                b.noted("802.1Q TPID", 12..14, hex16(ethertype), "underlay VLAN tag")
                    .field(
                        "802.1Q TCI",
                        14..16,
                        format!("VLAN {} priority {}", tci & 0x0FFF, tci >> 13),
                    );
                ethertype = be16(data, 16);
                ip_start += VLAN_TAG_LEN;
                b.noted(
                    "EtherType",
                    16..18,
                    hex16(ethertype),
                    ethertype_name(ethertype),
                );
            } else {
                b.noted(
                    "EtherType",
                    ethernet::field::ETHERTYPE,
                    hex16(ethertype),
                    ethertype_name(ethertype),
                );
            }
            let mut layer = b.finish();
            layer.len = ip_start;
            Ok(Link {
                layer: Some(layer),
                ip_start,
                ethertype,
                plain_ethernet: ip_start == ethernet::ETHERNET_HEADER_LEN,
            })
        }
        LinkType::LinuxSll => {
            if data.len() < SLL_HEADER_LEN {
                return Err(too_short("Linux cooked (SLL)", SLL_HEADER_LEN));
            }
            let ethertype = be16(data, 14);
            let addr_len = usize::from(be16(data, 4)).min(8);
            let mut b = LayerBuilder::new(
                "Linux cooked capture (SLL)",
                LayerKind::Link,
                0,
                SLL_HEADER_LEN,
            );
            b.noted("packet type", 0..2, be16(data, 0), "0 to us, 4 sent by us")
                .noted("ARPHRD type", 2..4, be16(data, 2), "1 = Ethernet")
                .field("address length", 4..6, be16(data, 4))
                .noted(
                    "link-layer address",
                    6..14,
                    mac(&data[6..6 + addr_len]),
                    "the sender's MAC",
                )
                .noted(
                    "protocol",
                    14..16,
                    hex16(ethertype),
                    ethertype_name(ethertype),
                );
            Ok(Link {
                layer: Some(b.finish()),
                ip_start: SLL_HEADER_LEN,
                ethertype,
                plain_ethernet: false,
            })
        }
        LinkType::LinuxSll2 => {
            if data.len() < SLL2_HEADER_LEN {
                return Err(too_short("Linux cooked (SLL2)", SLL2_HEADER_LEN));
            }
            let ethertype = be16(data, 0);
            let addr_len = usize::from(data[11]).min(8);
            let mut b = LayerBuilder::new(
                "Linux cooked capture (SLL2)",
                LayerKind::Link,
                0,
                SLL2_HEADER_LEN,
            );
            b.noted(
                "protocol",
                0..2,
                hex16(ethertype),
                ethertype_name(ethertype),
            )
            .field("reserved", 2..4, be16(data, 2))
            .field("interface index", 4..8, be32(data, 4))
            .noted("ARPHRD type", 8..10, be16(data, 8), "1 = Ethernet")
            .noted("packet type", one(10), data[10], "0 to us, 4 sent by us")
            .field("address length", one(11), data[11])
            .noted(
                "link-layer address",
                12..20,
                mac(&data[12..12 + addr_len]),
                "the sender's MAC",
            );
            Ok(Link {
                layer: Some(b.finish()),
                ip_start: SLL2_HEADER_LEN,
                ethertype,
                plain_ethernet: false,
            })
        }
        LinkType::RawIp => {
            let ethertype = match data.first().map(|b| b >> 4) {
                Some(4) => EtherType::IPV4,
                Some(6) => EtherType::IPV6,
                _ => return Err("raw IP packet that is neither IPv4 nor IPv6".into()),
            };
            Ok(Link {
                layer: None,
                ip_start: 0,
                ethertype,
                plain_ethernet: false,
            })
        }
    }
}

/// Says why a packet is not VXLAN before handing it to the decapsulator, so the skipped list
/// reads "ARP" or "UDP 53" rather than a parse error.
fn classify(link: &Link, data: &[u8], ports: &[u16]) -> Result<(), String> {
    if !matches!(link.ethertype, EtherType::IPV4 | EtherType::IPV6) {
        return Err(format!(
            "not IP: EtherType {} ({})",
            hex16(link.ethertype),
            ethertype_name(link.ethertype)
        ));
    }
    // Unreadable IP is left to the decapsulator, whose error names the exact problem.
    let Ok(sliced) = LaxSlicedPacket::from_ip(&data[link.ip_start..]) else {
        return Ok(());
    };
    if let Some(payload) = sliced.net.as_ref().and_then(|n| n.ip_payload_ref()) {
        let protocol = payload.ip_number.0;
        if protocol != 17 {
            return Err(format!(
                "not UDP: IP protocol {protocol} ({})",
                ip_protocol_name(protocol)
            ));
        }
    }
    if let Some(TransportSlice::Udp(udp)) = &sliced.transport {
        let port = udp.destination_port();
        if !ports.contains(&port) {
            return Err(format!(
                "UDP {} -> {port}: not a VXLAN port ({})",
                udp.source_port(),
                port_list(ports)
            ));
        }
    }
    Ok(())
}

pub fn port_list(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Explains one captured frame, or says why it is not a VXLAN packet.
pub fn explain_frame(
    frame: usize,
    link_type: LinkType,
    data: &[u8],
    original_len: usize,
    ports: &[u16],
) -> Result<Packet, String> {
    let link = link_layer(link_type, data)?;
    classify(&link, data, ports)?;
    let decoded = if link.plain_ethernet {
        decapsulate_ethernet(data)
    } else {
        decapsulate_ip(&data[link.ip_start..]).map(|mut p| {
            let shift = link.ip_start;
            p.offsets.ip += shift;
            p.offsets.udp += shift;
            p.offsets.vxlan += shift;
            p.offsets.inner += shift;
            p.offsets.end += shift;
            p
        })
    };
    let outer = decoded.map_err(|e| {
        let mut reason = format!("not a valid VXLAN packet: {e}");
        if data.len() < original_len {
            reason.push_str(&format!(
                " (the capture kept only {} of its {original_len} bytes)",
                data.len()
            ));
        }
        reason
    })?;
    Ok(build_packet(frame, data, link.layer, &outer))
}

fn build_packet(frame: usize, data: &[u8], link: Option<Layer>, outer: &OuterPacket<'_>) -> Packet {
    let o = outer.offsets;
    let mut layers: Vec<Layer> = link.into_iter().collect();
    let outer_src: IpAddr;
    match outer.ip {
        OuterIp::V4(repr) => {
            outer_src = repr.src.into();
            layers.push(outer_ipv4(&data[o.ip..o.udp], o.ip));
        }
        OuterIp::V6(repr) => {
            outer_src = repr.src.into();
            layers.push(outer_ipv6(&data[o.ip..o.udp], o.ip));
        }
    }
    let inner = outer.vxlan.inner;
    layers.push(outer_udp(&data[o.udp..o.vxlan], o.udp, inner));
    layers.push(vxlan_layer(&data[o.vxlan..o.inner], o.vxlan));
    let (inner_layers, inner_summary) = inner_layers(inner, o.inner, outer_src);
    layers.extend(inner_layers);
    if o.end < data.len() {
        layers.push(Layer {
            name: "link padding".into(),
            kind: LayerKind::Padding,
            offset: o.end,
            len: data.len() - o.end,
            fields: Vec::new(),
        });
    }
    let outer_dst = match outer.ip {
        OuterIp::V4(r) => IpAddr::from(r.dst),
        OuterIp::V6(r) => IpAddr::from(r.dst),
    };
    // The outer Ethernet header does not count against the underlay MTU; the inner one does.
    let overhead = o.inner - o.ip + ethernet::ETHERNET_HEADER_LEN;
    let vni = outer.vxlan.vni.get();
    Packet {
        frame,
        captured_len: data.len(),
        vni,
        summary: format!(
            "{inner_summary} | VNI {vni} | {} -> {}",
            SocketAddr::new(outer_src, outer.udp.src_port),
            SocketAddr::new(outer_dst, outer.udp.dst_port)
        ),
        overhead,
        layers,
        bytes: data.to_vec(),
    }
}

fn outer_ipv4(header: &[u8], offset: usize) -> Layer {
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
    .noted(
        "header checksum",
        field::CHECKSUM,
        hex16(v.checksum()),
        "verified",
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

fn outer_ipv6(header: &[u8], offset: usize) -> Layer {
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

fn outer_udp(header: &[u8], offset: usize, inner: &[u8]) -> Layer {
    use udp::field;
    let v = UdpPacket::new_unchecked(header);
    let ours = flow::source_port(inner);
    let src_note = if v.src_port() == ours {
        "flow hash of the inner headers (49152-65535), so underlay ECMP/RSS spread flows".to_owned()
    } else {
        format!(
            "the sender's hash of the inner flow, for ECMP/RSS entropy (vxnet's would be {ours})"
        )
    };
    let dst_note = match v.dst_port() {
        vxnet_encap::DEFAULT_PORT => "VXLAN, IANA-assigned",
        vxnet_encap::LINUX_LEGACY_PORT => "VXLAN, the Linux kernel's pre-IANA default",
        _ => "VXLAN, configured port",
    };
    let checksum_note = match v.checksum() {
        0 => "zero: no checksum, allowed over IPv4 (RFC 7348)",
        _ => "verified over the pseudo-header and the whole datagram",
    };
    let mut b = LayerBuilder::new("outer UDP", LayerKind::OuterUdp, offset, header.len());
    b.noted("source port", field::SRC_PORT, v.src_port(), src_note)
        .noted("destination port", field::DST_PORT, v.dst_port(), dst_note)
        .noted(
            "length",
            field::LENGTH,
            v.len_field(),
            "UDP header + VXLAN header + inner frame",
        )
        .noted(
            "checksum",
            field::CHECKSUM,
            hex16(v.checksum()),
            checksum_note,
        );
    b.finish()
}

fn vxlan_layer(header: &[u8], offset: usize) -> Layer {
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

fn mac_note(bytes: &[u8]) -> &'static str {
    if bytes.iter().all(|&b| b == 0xff) {
        "broadcast: flooded to every VTEP of the VNI"
    } else if bytes.first().is_some_and(|b| b & 1 == 1) {
        "multicast: flooded to every VTEP of the VNI"
    } else {
        "unicast: the FDB says which VTEP has it"
    }
}

/// The inner frame's layers and a one-line summary of what it carries.
fn inner_layers(frame: &[u8], base: usize, outer_src: IpAddr) -> (Vec<Layer>, String) {
    let mut layers = Vec::new();
    // `decapsulate` guarantees an Ethernet header, so this only fails on a broken invariant; show
    // the bytes as payload rather than panic.
    let Ok(inner) = InnerFrame::new(frame) else {
        layers.push(payload("inner bytes", base, frame.len()));
        return (layers, "short inner frame".into());
    };
    let sliced = inner.headers().ok();
    // Only VLAN tags have a fixed size; anything after another extension is shown as payload.
    let tags = sliced.as_ref().map_or(0, |s| {
        s.link_exts
            .iter()
            .take_while(|e| matches!(e, LaxLinkExtSlice::Vlan(_)))
            .count()
    });
    let eth_len = ethernet::ETHERNET_HEADER_LEN + tags * VLAN_TAG_LEN;
    let mut b = LayerBuilder::new("inner Ethernet", LayerKind::InnerEthernet, base, eth_len);
    b.noted(
        "destination MAC",
        ethernet::field::DESTINATION,
        inner.destination().to_string(),
        mac_note(&inner.destination().octets()),
    )
    .noted(
        "source MAC",
        ethernet::field::SOURCE,
        inner.source().to_string(),
        format!("the receiver learns: this MAC is behind VTEP {outer_src}"),
    );
    let mut at = 12;
    for _ in 0..tags {
        b.noted(
            "802.1Q TPID",
            at..at + 2,
            hex16(be16(frame, at)),
            "tagged inner frame: RFC 7348 says drop on decap unless configured",
        );
        let tci = be16(frame, at + 2);
        b.field(
            "802.1Q TCI",
            at + 2..at + 4,
            format!("VLAN {} priority {}", tci & 0x0FFF, tci >> 13),
        );
        at += VLAN_TAG_LEN;
    }
    let ethertype = be16(frame, at);
    b.noted(
        "EtherType",
        at..at + 2,
        hex16(ethertype),
        ethertype_name(ethertype),
    );
    layers.push(b.finish());

    let net_start = eth_len;
    let mut summary = format!(
        "{} -> {} {}",
        inner.source(),
        inner.destination(),
        ethertype_name(ethertype)
    );
    let mut consumed = net_start;
    if let Some(net) = sliced.as_ref().and_then(|s| s.net.as_ref()) {
        let (layer, payload_len, net_summary) = inner_net(net, base + net_start);
        consumed += layer.len;
        layers.push(layer);
        summary = net_summary;
        match sliced.as_ref().and_then(|s| s.transport.as_ref()) {
            Some(transport) => {
                let (layer, data_len, what) = inner_transport(transport, base + consumed);
                consumed += layer.len;
                layers.push(layer);
                summary.push(' ');
                summary.push_str(&what);
                if data_len > 0 {
                    layers.push(payload("payload", base + consumed, data_len));
                    consumed += data_len;
                }
            }
            None if payload_len > 0 => {
                layers.push(payload("payload", base + consumed, payload_len));
                consumed += payload_len;
            }
            None => {}
        }
    } else if consumed < frame.len() {
        layers.push(payload(
            "inner payload",
            base + consumed,
            frame.len() - consumed,
        ));
        consumed = frame.len();
    }
    if consumed < frame.len() {
        layers.push(Layer {
            name: "inner padding".into(),
            kind: LayerKind::Padding,
            offset: base + consumed,
            len: frame.len() - consumed,
            fields: Vec::new(),
        });
    }
    (layers, summary)
}

fn payload(name: &str, offset: usize, len: usize) -> Layer {
    let mut b = LayerBuilder::new(name, LayerKind::Payload, offset, len);
    b.field("data", 0..len, format!("{len} bytes"));
    b.finish()
}

/// The inner network layer, the length of what follows it, and a summary.
fn inner_net(net: &LaxNetSlice<'_>, offset: usize) -> (Layer, usize, String) {
    match net {
        LaxNetSlice::Ipv4(s) => {
            let h = s.header();
            let len = h.slice().len();
            let protocol = h.protocol().0;
            let mut b = LayerBuilder::new("inner IPv4", LayerKind::InnerNetwork, offset, len);
            b.noted(
                "version / IHL",
                0..1,
                format!("{} / {}", h.version(), h.ihl()),
                format!("{len}-byte header"),
            )
            .field("DSCP / ECN", 1..2, h.slice()[1])
            .noted(
                "total length",
                2..4,
                h.total_len(),
                "the inner packet as the container sent it",
            )
            .field("identification", 4..6, h.identification())
            .field("flags / fragment offset", 6..8, hex16(be16(h.slice(), 6)))
            .field("TTL", 8..9, h.ttl())
            .noted("protocol", 9..10, protocol, ip_protocol_name(protocol))
            .field("header checksum", 10..12, hex16(h.header_checksum()))
            .noted(
                "source address",
                12..16,
                h.source_addr().to_string(),
                "sending container",
            )
            .noted(
                "destination address",
                16..20,
                h.destination_addr().to_string(),
                "receiving container",
            );
            let summary = format!("{} -> {}", h.source_addr(), h.destination_addr());
            (b.finish(), s.payload().payload.len(), summary)
        }
        LaxNetSlice::Ipv6(s) => {
            let h = s.header();
            let len = h.slice().len() + s.extensions().slice().len();
            let next = h.next_header().0;
            let mut b = LayerBuilder::new("inner IPv6", LayerKind::InnerNetwork, offset, len);
            b.field(
                "version / traffic class / flow label",
                0..4,
                format!(
                    "{} / {} / {:#07x}",
                    h.version(),
                    h.traffic_class(),
                    h.flow_label().value()
                ),
            )
            .field("payload length", 4..6, h.payload_length())
            .noted("next header", 6..7, next, ip_protocol_name(next))
            .field("hop limit", 7..8, h.hop_limit())
            .noted(
                "source address",
                8..24,
                h.source_addr().to_string(),
                "sending container",
            )
            .noted(
                "destination address",
                24..40,
                h.destination_addr().to_string(),
                "receiving container",
            );
            let summary = format!("{} -> {}", h.source_addr(), h.destination_addr());
            (b.finish(), s.payload().payload.len(), summary)
        }
        LaxNetSlice::Arp(s) => arp(s.slice(), offset),
    }
}

fn arp(p: &[u8], offset: usize) -> (Layer, usize, String) {
    let mut b = LayerBuilder::new("inner ARP", LayerKind::InnerNetwork, offset, p.len());
    // Ethernet/IPv4 ARP is the only kind a container network sends; others show as bytes.
    if p.len() < 28 || be16(p, 0) != 1 || be16(p, 2) != EtherType::IPV4 {
        b.field("data", 0..p.len(), format!("{} bytes", p.len()));
        return (b.finish(), 0, "ARP".into());
    }
    let ip = |at: usize| std::net::Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]);
    let op = be16(p, 6);
    let op_name = match op {
        1 => "request",
        2 => "reply",
        _ => "other",
    };
    b.noted("hardware type", 0..2, be16(p, 0), "1 = Ethernet")
        .noted("protocol type", 2..4, hex16(be16(p, 2)), "IPv4")
        .field("hardware size", 4..5, p[4])
        .field("protocol size", 5..6, p[5])
        .noted("operation", 6..8, op, op_name)
        .field("sender MAC", 8..14, mac(&p[8..14]))
        .field("sender IP", 14..18, ip(14).to_string())
        .field("target MAC", 18..24, mac(&p[18..24]))
        .field("target IP", 24..28, ip(24).to_string());
    let summary = match op {
        1 => format!("ARP who-has {} tell {}", ip(24), ip(14)),
        2 => format!("ARP {} is-at {}", ip(14), mac(&p[8..14])),
        _ => format!("ARP operation {op}"),
    };
    let mut layer = b.finish();
    layer.len = 28;
    (layer, 0, summary)
}

/// The inner transport header, the length of its payload, and a word for the summary.
fn inner_transport(t: &TransportSlice<'_>, offset: usize) -> (Layer, usize, String) {
    match t {
        TransportSlice::Icmpv4(s) => {
            let (kind, echo) = match (s.type_u8(), s.code_u8()) {
                (8, 0) => ("echo request", true),
                (0, 0) => ("echo reply", true),
                (3, _) => ("destination unreachable", false),
                (11, _) => ("time exceeded", false),
                _ => ("message", false),
            };
            icmp(
                "inner ICMPv4",
                s.slice(),
                s.header_len(),
                s.payload().len(),
                offset,
                kind,
                echo,
            )
        }
        TransportSlice::Icmpv6(s) => {
            let (kind, echo) = match s.type_u8() {
                128 => ("echo request", true),
                129 => ("echo reply", true),
                133..=137 => ("neighbour discovery", false),
                _ => ("message", false),
            };
            icmp(
                "inner ICMPv6",
                s.slice(),
                s.header_len(),
                s.payload().len(),
                offset,
                kind,
                echo,
            )
        }
        TransportSlice::Udp(s) => {
            let mut b = LayerBuilder::new("inner UDP", LayerKind::InnerTransport, offset, 8);
            b.field("source port", 0..2, s.source_port())
                .field("destination port", 2..4, s.destination_port())
                .field("length", 4..6, s.length())
                .field("checksum", 6..8, hex16(s.checksum()));
            let what = format!("UDP {} -> {}", s.source_port(), s.destination_port());
            (b.finish(), s.payload().len(), what)
        }
        TransportSlice::Tcp(s) => {
            let len = s.header_slice().len();
            let flags: Vec<&str> = [
                (s.syn(), "SYN"),
                (s.ack(), "ACK"),
                (s.fin(), "FIN"),
                (s.rst(), "RST"),
                (s.psh(), "PSH"),
                (s.urg(), "URG"),
            ]
            .iter()
            .filter(|(set, _)| *set)
            .map(|(_, name)| *name)
            .collect();
            let mut b = LayerBuilder::new("inner TCP", LayerKind::InnerTransport, offset, len);
            b.field("source port", 0..2, s.source_port())
                .field("destination port", 2..4, s.destination_port())
                .field("sequence number", 4..8, s.sequence_number())
                .field("acknowledgment number", 8..12, s.acknowledgment_number())
                .noted(
                    "data offset / flags",
                    12..14,
                    flags.join(" "),
                    format!("{len}-byte header"),
                )
                .field("window", 14..16, s.window_size())
                .field("checksum", 16..18, hex16(s.checksum()))
                .field("urgent pointer", 18..20, s.urgent_pointer());
            let what = format!(
                "TCP {} -> {} [{}]",
                s.source_port(),
                s.destination_port(),
                flags.join(" ")
            );
            (b.finish(), s.payload().len(), what)
        }
        TransportSlice::Igmp(s) => {
            let len = s.slice().len();
            let mut b = LayerBuilder::new("inner IGMP", LayerKind::InnerTransport, offset, len);
            b.field("message", 0..len, format!("{len} bytes"));
            (b.finish(), 0, "IGMP".into())
        }
    }
}

fn icmp(
    name: &str,
    slice: &[u8],
    header_len: usize,
    payload_len: usize,
    offset: usize,
    kind: &str,
    echo: bool,
) -> (Layer, usize, String) {
    let mut b = LayerBuilder::new(name, LayerKind::InnerTransport, offset, header_len);
    b.noted("type", 0..1, slice[0], kind)
        .field("code", 1..2, slice[1])
        .field("checksum", 2..4, hex16(be16(slice, 2)));
    if echo {
        b.field("identifier", 4..6, be16(slice, 4))
            .field("sequence number", 6..8, be16(slice, 6));
    } else if header_len > 4 {
        b.field(
            "rest of header",
            4..header_len,
            format!("{} bytes", header_len - 4),
        );
    }
    let what = format!("{} {kind}", name.trim_start_matches("inner "));
    (b.finish(), payload_len, what)
}
