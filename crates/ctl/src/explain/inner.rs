//! The inner frame, decoded for display with etherparse (lax: a truncated upper layer is shown
//! as far as it goes). This is the only full dissection in vxnet: the data plane reads the few
//! fixed offsets it needs itself, so it lives here and not in `vxnet-encap`.

use std::net::{IpAddr, Ipv6Addr};

use etherparse::{LaxLinkExtSlice, LaxNetSlice, LaxSlicedPacket, TransportSlice};
use vxnet_encap::checksum::{pseudo_header_v4, pseudo_header_v6, Sum};
use vxnet_encap::wire::{ethernet, EtherType};
use vxnet_encap::InnerFrame;

use super::checksum::{self, Check, Zero};
use super::fields::{be16, ethertype_name, ip_protocol_name, mac};
use super::link::VLAN_TAG_LEN;
use super::model::{hex16, Layer, LayerBuilder, LayerKind};

/// The upper-layer packet an inner IP header carries, for its checksum.
struct Upper<'a> {
    /// TCP/UDP/ICMP header and payload, as far as the capture and the IP length go.
    segment: &'a [u8],
    /// False when part of it is missing (capture cut short) or it is a fragment.
    complete: bool,
    addresses: (IpAddr, IpAddr),
}

impl Upper<'_> {
    fn pseudo(&self, protocol: u8) -> Sum {
        let len = self.segment.len() as u32;
        match self.addresses {
            (IpAddr::V4(src), IpAddr::V4(dst)) => pseudo_header_v4(src, dst, protocol, len),
            (IpAddr::V6(src), IpAddr::V6(dst)) => pseudo_header_v6(src, dst, protocol, len),
            // One IP header holds addresses of one family.
            _ => Sum::new(),
        }
    }

    fn udp_zero(&self) -> Zero {
        match self.addresses.0 {
            IpAddr::V4(_) => Zero::MeansNone,
            IpAddr::V6(_) => Zero::Forbidden,
        }
    }

    fn check(&self, field_at: usize, protocol: Option<u8>, zero: Zero) -> Check {
        checksum::transport(
            self.segment,
            field_at,
            protocol.map(|p| self.pseudo(p)),
            zero,
            self.complete,
        )
    }
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
pub(super) fn inner_layers(frame: &[u8], base: usize, outer_src: IpAddr) -> (Vec<Layer>, String) {
    let mut layers = Vec::new();
    // `decapsulate` guarantees an Ethernet header, so this only fails on a broken invariant; show
    // the bytes as payload rather than panic.
    let Ok(inner) = InnerFrame::new(frame) else {
        layers.push(payload("inner bytes", base, frame.len()));
        return (layers, "short inner frame".into());
    };
    let sliced = LaxSlicedPacket::from_ethernet(frame).ok();
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
        let (layer, payload_len, net_summary, upper) = inner_net(net, base + net_start);
        consumed += layer.len;
        layers.push(layer);
        summary = net_summary;
        match sliced.as_ref().and_then(|s| s.transport.as_ref()) {
            Some(transport) => {
                let (layer, data_len, what) =
                    inner_transport(transport, upper.as_ref(), base + consumed);
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
fn inner_net<'a>(
    net: &LaxNetSlice<'a>,
    offset: usize,
) -> (Layer, usize, String, Option<Upper<'a>>) {
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
            .checked(
                "header checksum",
                10..12,
                hex16(h.header_checksum()),
                checksum::ipv4_header(h.slice()),
            )
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
            let upper = upper(
                s.payload(),
                (h.source_addr().into(), h.destination_addr().into()),
            );
            (b.finish(), s.payload().payload.len(), summary, Some(upper))
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
            let src: Ipv6Addr = h.source_addr();
            let dst: Ipv6Addr = h.destination_addr();
            let upper = upper(s.payload(), (src.into(), dst.into()));
            (b.finish(), s.payload().payload.len(), summary, Some(upper))
        }
        LaxNetSlice::Arp(s) => {
            let (layer, len, summary) = arp(s.slice(), offset);
            (layer, len, summary, None)
        }
    }
}

fn upper<'a>(
    payload: &etherparse::LaxIpPayloadSlice<'a>,
    addresses: (IpAddr, IpAddr),
) -> Upper<'a> {
    Upper {
        segment: payload.payload,
        complete: !payload.incomplete && !payload.fragmented,
        addresses,
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
fn inner_transport(
    t: &TransportSlice<'_>,
    upper: Option<&Upper<'_>>,
    offset: usize,
) -> (Layer, usize, String) {
    let check = |field_at: usize, protocol: Option<u8>, zero: Zero| {
        upper.map_or(Check::Unchecked, |u| u.check(field_at, protocol, zero))
    };
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
                (s.header_len(), s.payload().len()),
                offset,
                (kind, echo),
                check(2, None, Zero::IsAValue),
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
                (s.header_len(), s.payload().len()),
                offset,
                (kind, echo),
                check(2, Some(58), Zero::IsAValue),
            )
        }
        TransportSlice::Udp(s) => {
            let mut b = LayerBuilder::new("inner UDP", LayerKind::InnerTransport, offset, 8);
            b.field("source port", 0..2, s.source_port())
                .field("destination port", 2..4, s.destination_port())
                .field("length", 4..6, s.length())
                .checked(
                    "checksum",
                    6..8,
                    hex16(s.checksum()),
                    check(6, Some(17), upper.map_or(Zero::MeansNone, Upper::udp_zero)),
                );
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
                .checked(
                    "checksum",
                    16..18,
                    hex16(s.checksum()),
                    check(16, Some(6), Zero::IsAValue),
                )
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

/// An ICMP header; `lens` is (header, payload), `what` the message kind and whether it is an echo.
fn icmp(
    name: &str,
    slice: &[u8],
    lens: (usize, usize),
    offset: usize,
    what: (&str, bool),
    check: Check,
) -> (Layer, usize, String) {
    let ((header_len, payload_len), (kind, echo)) = (lens, what);
    let mut b = LayerBuilder::new(name, LayerKind::InnerTransport, offset, header_len);
    b.noted("type", 0..1, slice[0], kind)
        .field("code", 1..2, slice[1])
        .checked("checksum", 2..4, hex16(be16(slice, 2)), check);
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
