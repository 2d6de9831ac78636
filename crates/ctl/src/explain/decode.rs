//! Turns one captured frame into a [`Packet`], or says why it is not VXLAN: the link layer
//! (`link`), the outer IP/UDP/VXLAN layers (`outer`), the inner frame (`inner`).

use std::net::SocketAddr;

use etherparse::{LaxSlicedPacket, TransportSlice};
use vxnet_encap::decap::OuterIp;
use vxnet_encap::offload::complete_partial_checksum;
use vxnet_encap::wire::{ethernet, vxlan, EtherType};
use vxnet_encap::DecapError;

use super::checksum::Check;
use super::esp::EspContext;
use super::fields::{ethertype_name, ip_protocol_name};
use super::inner::inner_layers;
pub(super) use super::link::LinkType;
use super::link::{link_layer, Link};
use super::model::{hex16, Layer, LayerKind, Packet};
use super::outer::{self, Outer};

/// Why a frame was not explained: the full reason, and the kind it is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Skip {
    pub reason: String,
    pub kind: String,
}

impl Skip {
    pub(super) fn new(reason: impl Into<String>, kind: impl Into<String>) -> Self {
        Skip {
            reason: reason.into(),
            kind: kind.into(),
        }
    }

    /// A reason that is its own kind (it holds no per-packet particulars).
    pub(super) fn plain(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Skip {
            kind: reason.clone(),
            reason,
        }
    }
}

/// Says why a packet is not VXLAN before handing it to the decapsulator, so the skipped list
/// reads "ARP" or "UDP 53" rather than a parse error.
fn classify(link: &Link, data: &[u8], ports: &[u16]) -> Result<(), Skip> {
    if !matches!(link.ethertype, EtherType::IPV4 | EtherType::IPV6) {
        let name = match ethertype_name(link.ethertype) {
            "unknown" => format!("EtherType {}", hex16(link.ethertype)),
            name => name.to_owned(),
        };
        return Err(Skip::new(
            format!(
                "not IP: EtherType {} ({})",
                hex16(link.ethertype),
                ethertype_name(link.ethertype)
            ),
            format!("not IP ({name})"),
        ));
    }
    // Unreadable IP is left to the decapsulator, whose error names the exact problem.
    let Ok(sliced) = LaxSlicedPacket::from_ip(&data[link.ip_start..]) else {
        return Ok(());
    };
    if let Some(payload) = sliced.net.as_ref().and_then(|n| n.ip_payload_ref()) {
        let protocol = payload.ip_number.0;
        if protocol != 17 {
            let name = ip_protocol_name(protocol);
            return Err(Skip::new(
                format!("not UDP: IP protocol {protocol} ({name})"),
                match name {
                    "other" => format!("not UDP (IP protocol {protocol})"),
                    name => format!("not UDP ({name})"),
                },
            ));
        }
    }
    if let Some(TransportSlice::Udp(udp)) = &sliced.transport {
        let port = udp.destination_port();
        if !ports.contains(&port) {
            // Counted per port: a VXLAN network on an unusual port then stands out at once.
            let mut kind = format!("UDP to port {port}, not a VXLAN port");
            if looks_like_vxlan(udp.payload()) {
                kind.push_str(&format!(" (looks like VXLAN: try --port {port})"));
            }
            return Err(Skip::new(
                format!(
                    "UDP {} -> {port}: not a VXLAN port ({})",
                    udp.source_port(),
                    port_list(ports)
                ),
                kind,
            ));
        }
    }
    Ok(())
}

/// An 8-byte VXLAN header with only the I flag set and zero reserved bytes, then an Ethernet
/// header: not proof, but a good reason to suggest `--port`.
fn looks_like_vxlan(payload: &[u8]) -> bool {
    payload.len() >= vxlan::VXLAN_HEADER_LEN + ethernet::ETHERNET_HEADER_LEN
        && payload[0] == vxlan::FLAG_I
        && payload[1..4] == [0, 0, 0]
        && payload[7] == 0
}

pub(super) fn port_list(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The kind a decapsulation error is counted under: its message without the numbers.
fn decap_kind(e: &DecapError) -> String {
    match e {
        DecapError::Truncated { layer, .. } => format!("{layer} header truncated"),
        DecapError::MissingIFlag { .. } => "VXLAN I flag clear".into(),
        DecapError::BadUdpLength { .. } => "outer UDP length disagrees with the IP header".into(),
        DecapError::NotUdp { protocol } => format!("not UDP (IP protocol {protocol})"),
        DecapError::NotIp { .. } => "not IP".into(),
        other => other.to_string(),
    }
}

/// Explains one captured frame (plain VXLAN, or ESP-in-UDP through `esp`), or says why it is
/// neither.
pub(super) fn explain_frame(
    frame: usize,
    link_type: LinkType,
    data: &[u8],
    original_len: usize,
    ports: &[u16],
    esp: &mut EspContext,
) -> Result<Packet, Skip> {
    let link = link_layer(link_type, data).map_err(|reason| {
        let kind = if reason.contains("shorter than") {
            "too short for its link-layer header".to_owned()
        } else {
            reason.clone()
        };
        Skip::new(reason, kind)
    })?;
    if matches!(link.ethertype, EtherType::IPV4 | EtherType::IPV6)
        && super::esp::is_esp(&link, data, ports, esp)
    {
        return super::esp::explain(frame, data, original_len, link, esp);
    }
    classify(&link, data, ports)?;
    let outer = outer::decapsulate(data, link.ip_start, link.plain_ethernet).map_err(|e| {
        let reason = format!("not a valid VXLAN packet: {e}");
        if data.len() < original_len {
            Skip::new(
                format!(
                    "{reason} (the capture kept only {} of its {original_len} bytes)",
                    data.len()
                ),
                "cut short by the capture's snap length (tcpdump -s 0 keeps whole packets)",
            )
        } else {
            Skip::new(reason, format!("not valid VXLAN: {}", decap_kind(&e)))
        }
    })?;
    Ok(build_packet(frame, data, link.layer, &outer))
}

fn build_packet(frame: usize, data: &[u8], link: Option<Layer>, outer: &Outer) -> Packet {
    let o = outer.offsets;
    let outer_src = outer.src();
    let mut layers: Vec<Layer> = link.into_iter().collect();
    match outer.ip {
        OuterIp::V4(_) => layers.push(outer::outer_ipv4(&data[o.ip..o.udp], o.ip)),
        OuterIp::V6(_) => layers.push(outer::outer_ipv6(&data[o.ip..o.udp], o.ip)),
    }
    let inner = &data[o.inner..o.end];
    // The inner frame as the NIC would send it, when its checksum was left to offload: the outer
    // checksum may have been computed for that (LCO).
    let mut completed = inner.to_vec();
    let completed = complete_partial_checksum(&mut completed).then_some(completed);
    layers.push(outer::outer_udp(
        &data[o.udp..o.vxlan],
        o.udp,
        inner,
        outer::udp_check(data, outer, completed.as_deref()),
    ));
    layers.push(outer::vxlan_layer(&data[o.vxlan..o.inner], o.vxlan));
    let (inner_layers, inner_summary) = inner_layers(inner, o.inner, outer_src);
    layers.extend(inner_layers);
    let gso_segments = mark_udp_gso(&mut layers, data, o.inner - o.vxlan);
    if o.end < data.len() {
        layers.push(Layer {
            name: "link padding".into(),
            kind: LayerKind::Padding,
            offset: o.end,
            len: data.len() - o.end,
            fields: Vec::new(),
        });
    }
    // The outer Ethernet header does not count against the underlay MTU; the inner one does.
    let overhead = o.inner - o.ip + ethernet::ETHERNET_HEADER_LEN;
    let mut remarks = remarks(&layers, o.end - o.ip);
    if let Some((segments, size)) = gso_segments {
        remarks.push(format!(
            "a UDP GSO send: this one buffer holds {segments} VXLAN datagrams of {size} bytes \
             (the last may be shorter), which the kernel (or NIC) cuts into separate UDP \
             datagrams; the first is explained above, the others are shown as bytes"
        ));
    }
    let outer_flow = format!(
        "{} -> {}",
        SocketAddr::new(outer_src, outer.udp.src_port),
        SocketAddr::new(outer.dst(), outer.udp.dst_port)
    );
    Packet {
        frame,
        captured_len: data.len(),
        time: None,
        vni: Some(outer.vni),
        summary: format!("{inner_summary} | VNI {} | {outer_flow}", outer.vni),
        outer_flow,
        inner_summary,
        overhead,
        layers,
        remarks,
        bytes: data.to_vec(),
        decrypted_bytes: None,
        esp: None,
    }
}

/// A UDP GSO buffer (a sender's `UDP_SEGMENT` send, captured before the kernel splits it) reads
/// as one datagram whose first inner frame ends before the UDP payload does, the next VXLAN
/// header right behind it. Renames those trailing bytes and returns (datagrams, datagram size).
fn mark_udp_gso(layers: &mut [Layer], data: &[u8], vxlan_header: usize) -> Option<(usize, usize)> {
    let vxlan_start = layers.iter().find(|l| l.kind == LayerKind::Vxlan)?.offset;
    let tail = layers
        .iter_mut()
        .rev()
        .find(|l| l.kind == LayerKind::Padding && l.name == "inner padding")?;
    let size = tail.offset - vxlan_start;
    let rest = data.get(tail.offset..tail.offset + tail.len)?;
    let header = rest.get(..vxlan_header)?;
    let first = data.get(vxlan_start..vxlan_start + vxlan_header)?;
    // The same VXLAN header (flags, VNI) starts the next datagram.
    if header != first || size == 0 {
        return None;
    }
    tail.name = "further VXLAN datagrams of the GSO send".into();
    Some((1 + rest.len().div_ceil(size), size))
}

/// Largest IP packet a standard Ethernet underlay carries.
const STANDARD_MTU: usize = 1500;

/// The packet-level lines: checksums left to offload (one line), each wrong checksum, and a
/// superframe bigger than a standard MTU.
pub(super) fn remarks(layers: &[Layer], outer_ip_len: usize) -> Vec<String> {
    let mut remarks = Vec::new();
    let mut offloaded = Vec::new();
    for layer in layers {
        for field in &layer.fields {
            let what = format!("{} {}", layer.name, field.name);
            match &field.check {
                Some(Check::LeftToOffload) => offloaded.push(what),
                Some(Check::Wrong { expected }) => remarks.push(format!(
                    "{what} {} is WRONG (should be {expected}): a receiver drops this packet",
                    field.value
                )),
                Some(Check::ZeroOverIpv6) => remarks.push(format!(
                    "{what} is zero over IPv6: receivers drop it unless they accept zero-checksum \
                     tunnels (RFC 6935)"
                )),
                _ => {}
            }
        }
    }
    if !offloaded.is_empty() {
        remarks.insert(
            0,
            format!(
                "left to checksum offload (not verified, as Wireshark's [unverified]): {}; the \
                 packet was captured before a NIC completed them (on the sending host, or across \
                 a veth, which passes them on unfinished)",
                offloaded.join(", ")
            ),
        );
    }
    if outer_ip_len > STANDARD_MTU {
        remarks.push(format!(
            "{outer_ip_len}-byte outer IP packet, more than a {STANDARD_MTU}-byte MTU carries: a \
             GSO superframe captured before segmentation (sending host) or after GRO (receiving \
             host), or a jumbo-frame underlay; on a standard wire it travels as several datagrams"
        ));
    }
    remarks
}
