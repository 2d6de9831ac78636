//! Encrypted VXLAN: UDP-encapsulated ESP (RFC 3948, RFC 4303 transport mode, AES-256-GCM per
//! RFC 4106), as `vxnet run` with a key sends it.
//!
//! The clear layers (outer IP, UDP to the ESP port, SPI, sequence number, IV, ICV) are always
//! shown. With a key for the SPI (`--keys`) the ciphertext is opened with the data plane's own
//! `OpenKey` and what was inside (the VXLAN packet's UDP header, VXLAN, the inner frame) goes on
//! through the same decoders as a plain VXLAN packet, at the offsets the bytes have on the wire.
//!
//! Extended sequence numbers: the high 32 bits are never sent. A capture starts anywhere in an
//! SA's life, so they are found as a receiver finds them: from the IV when it holds the full
//! number (vxnet's senders), otherwise inferred (RFC 4303 Appendix A2) from the packets of the
//! same SPI earlier in the capture, starting from 0. Each packet says which.

pub(super) mod keys;
mod layers;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;
use vxnet_encap::esp::wire::{MAX_PAD_LEN, TRAILER_LEN};
use vxnet_encap::esp::{
    classify, EspError, EspPacket, ReplayWindow, UdpEncapKind, ESP_HEADER_LEN, ICV_LEN,
    MAX_OVERHEAD,
};
use vxnet_encap::wire::{
    ethernet, ipv4, ipv6, Ipv4Packet, Ipv6Packet, UdpPacket, VxlanPacket, UDP_HEADER_LEN,
    VXLAN_HEADER_LEN,
};

use super::checksum::{self, Zero};
use super::decode::{remarks, Skip};
use super::inner::inner_layers;
use super::link::Link;
use super::model::{Layer, LayerKind, Packet};
use super::outer;
use keys::KeyTable;

/// What `explain` needs across the packets of one capture to read ESP.
pub(super) struct EspContext {
    /// UDP ports to read as ESP-in-UDP: 4500 and `--port`.
    pub ports: Vec<u16>,
    pub keys: Option<KeyTable>,
    /// Per SPI, the window a receiver would keep: the high halves of sequence numbers follow it.
    windows: HashMap<u32, ReplayWindow>,
}

impl EspContext {
    pub(super) fn new(ports: Vec<u16>, keys: Option<KeyTable>) -> Self {
        EspContext {
            ports,
            keys,
            windows: HashMap::new(),
        }
    }
}

/// What an ESP packet's explanation says about the ESP layer, for `--json` and the headline.
#[derive(Debug, Clone, Serialize)]
pub(super) struct EspFacts {
    pub spi: u32,
    /// The low 32 bits, as sent.
    pub sequence_low: u32,
    /// The full 64-bit sequence number the packet was (or would be) opened with.
    pub sequence: u64,
    pub sequence_high: u32,
    /// `iv` (the IV carries the full number) or `inferred` (RFC 4303 Appendix A2).
    pub sequence_high_from: &'static str,
    pub iv: String,
    pub ciphertext_len: usize,
    pub icv: String,
    pub state: EspState,
    /// One sentence on the state: which key opened it, or why nothing did.
    pub detail: String,
    /// Bytes over the same plain VXLAN packet: known once decrypted (the padding is encrypted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overhead_over_plain_vxlan: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pad_len: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_header: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum EspState {
    /// No key for the SPI: only the clear layers can be read.
    Opaque,
    /// The ICV verified and the payload is shown.
    Decrypted,
    /// A key for the SPI was given, and the ICV does not verify with it.
    IcvMismatch,
    /// The ICV verified but what is inside is not a VXLAN packet vxnet would send.
    BadPayload,
}

/// The ESP-in-UDP datagram `explain_frame` found: where its parts are.
struct Datagram {
    ip: usize,
    udp: usize,
    esp: usize,
    end: usize,
    src: IpAddr,
    dst: IpAddr,
    v6: bool,
}

/// Whether the frame is UDP to (or from) an ESP-in-UDP port, and not a VXLAN packet on a port
/// that is both (`--port`): such a frame goes to [`explain`] instead of the VXLAN decoder.
pub(super) fn is_esp(link: &Link, data: &[u8], vxlan_ports: &[u16], ctx: &EspContext) -> bool {
    let Some((src_port, dst_port, payload)) = udp_of(link, data) else {
        return false;
    };
    let looks_vxlan = vxlan_ports.contains(&dst_port)
        && payload.first() == Some(&vxnet_encap::wire::vxlan::FLAG_I)
        && payload.get(1..4) == Some(&[0, 0, 0]);
    !looks_vxlan
        && (ctx.ports.contains(&dst_port)
            || (ctx.ports.contains(&src_port) && !vxlan_ports.contains(&dst_port)))
}

/// Source port, destination port and the captured payload of a UDP datagram in `data`.
fn udp_of<'a>(link: &Link, data: &'a [u8]) -> Option<(u16, u16, &'a [u8])> {
    let ip = data.get(link.ip_start..)?;
    let udp = match ip.first()? >> 4 {
        4 => {
            let v4 = Ipv4Packet::new_unchecked(ip);
            (ip.len() >= ipv4::IPV4_HEADER_LEN && v4.protocol() == 17 && !v4.is_fragment())
                .then(|| ip.get(v4.header_len()..))??
        }
        6 => {
            let v6 = Ipv6Packet::new_unchecked(ip);
            (ip.len() >= ipv6::IPV6_HEADER_LEN && v6.next_header() == 17)
                .then(|| ip.get(ipv6::IPV6_HEADER_LEN..))??
        }
        _ => return None,
    };
    let header = udp.get(..UDP_HEADER_LEN)?;
    let u = UdpPacket::new_unchecked(header);
    Some((u.src_port(), u.dst_port(), &udp[UDP_HEADER_LEN..]))
}

fn locate(link: &Link, data: &[u8], original_len: usize) -> Result<Datagram, Skip> {
    let cut = data.len() < original_len;
    let short = |what: String| {
        if cut {
            Skip::new(
                format!(
                    "ESP-in-UDP packet {what} (the capture kept only {} of its {original_len} bytes)",
                    data.len()
                ),
                "cut short by the capture's snap length (tcpdump -s 0 keeps whole packets)",
            )
        } else {
            Skip::new(
                format!("not a valid ESP-in-UDP packet: {what}"),
                "not valid ESP-in-UDP: IP or UDP length disagrees with the packet",
            )
        }
    };
    let ip = link.ip_start;
    let bytes = &data[ip..];
    let (udp, end, src, dst, v6) = if bytes.first().map(|b| b >> 4) == Some(6) {
        let v6 = Ipv6Packet::new_checked(bytes).map_err(|e| short(e.to_string()))?;
        let end = ip + ipv6::IPV6_HEADER_LEN + usize::from(v6.payload_len());
        let (s, d) = (v6.src_addr().into(), v6.dst_addr().into());
        (ip + ipv6::IPV6_HEADER_LEN, end, s, d, true)
    } else {
        let v4 = Ipv4Packet::new_checked(bytes).map_err(|e| short(e.to_string()))?;
        let end = ip + usize::from(v4.total_len());
        let (s, d) = (v4.src_addr().into(), v4.dst_addr().into());
        (ip + v4.header_len(), end, s, d, false)
    };
    if end > data.len() {
        return Err(short(format!(
            "the IP header says {} bytes, {} are there",
            end - ip,
            data.len() - ip
        )));
    }
    let u = UdpPacket::new_checked(&data[udp..end]).map_err(|e| short(e.to_string()))?;
    Ok(Datagram {
        ip,
        udp,
        esp: udp + UDP_HEADER_LEN,
        end: udp + usize::from(u.len_field()),
        src,
        dst,
        v6,
    })
}

/// How the full sequence number was found, for the field's note and `sequence_high_from`.
fn sequence_of(packet: &EspPacket<&[u8]>, window: &ReplayWindow) -> (u64, &'static str) {
    let (low, iv) = (packet.sequence_low(), packet.iv());
    // What `OpenKey::sequence_of` does: vxnet's senders put the full number in the IV.
    if iv as u32 == low && iv != 0 {
        return (iv, "iv");
    }
    // `None` only for a low half of 0 before any packet: sequence number 0 is never sent.
    (window.infer(low).unwrap_or(u64::from(low)), "inferred")
}

/// Explains an ESP-in-UDP frame, decrypting it when the keys hold its SPI.
pub(super) fn explain(
    frame: usize,
    data: &[u8],
    original_len: usize,
    link: Link,
    ctx: &mut EspContext,
) -> Result<Packet, Skip> {
    let d = locate(&link, data, original_len)?;
    let payload = &data[d.esp..d.end];
    match classify(payload) {
        Ok(UdpEncapKind::Esp) => {}
        Ok(UdpEncapKind::NatKeepalive) => {
            return Err(Skip::plain(
                "ESP-in-UDP NAT keepalive (one 0xFF byte, RFC 3948 §2.3): keeps a NAT mapping open",
            ))
        }
        Ok(UdpEncapKind::NonEsp) => {
            return Err(Skip::plain(
                "IKE on the ESP-in-UDP port (non-ESP marker: 4 zero bytes, RFC 3948 §2.2)",
            ))
        }
        Err(e) => {
            let kind = match e {
                EspError::Truncated { .. } => "not valid ESP: truncated",
                EspError::ReservedSpi { .. } => "not valid ESP: reserved SPI",
                _ => "not valid ESP",
            };
            return Err(Skip::new(format!("not a valid ESP packet: {e}"), kind));
        }
    }
    let esp = EspPacket::new_unchecked(payload);
    let spi = esp.spi();
    let window = ctx.windows.entry(spi).or_default();
    let (seq, high_from) = sequence_of(&esp, window);
    let replayed = window.check(seq).err();
    let candidates: Vec<_> = ctx
        .keys
        .as_ref()
        .map(|k| k.for_spi(spi).collect())
        .unwrap_or_default();

    // Opened in a copy; the captured bytes stay as they were for the hex dump and --json.
    let mut opened = None;
    let mut failure = None;
    for entry in &candidates {
        let mut scratch = payload.to_vec();
        match entry.key.decrypt_in_place(seq, &mut scratch) {
            Ok(range) => {
                opened = Some((entry, scratch, range));
                break;
            }
            Err(e) => failure = Some(e),
        }
    }
    // A receiver moves its window only for packets that verify; without a key, explain follows
    // what it sees, which is all a capture allows.
    if opened.is_some() || candidates.is_empty() {
        let _ = window.commit(seq);
    }

    let seq_note = match high_from {
        "iv" => format!(
            "low 32 bits of the 64-bit sequence number {seq}; the high 32 ({}) are never sent: \
             here the IV carries the full number (vxnet's senders do that)",
            seq >> 32
        ),
        _ => format!(
            "low 32 bits; the high 32 are never sent (RFC 4303 §2.2.1): inferred as a receiver \
             does (Appendix A2) from this SPI's packets earlier in the capture, starting from 0: \
             {} (sequence number {seq})",
            seq >> 32
        ),
    };
    let mut layers: Vec<Layer> = link.layer.into_iter().collect();
    layers.push(outer_ip_layer(data, &d));
    layers.push(layers::outer_udp(
        &data[d.udp..d.esp],
        d.udp,
        udp_check(data, &d),
    ));
    layers.push(layers::header(payload, d.esp, &seq_note));
    let ciphertext = d.esp + ESP_HEADER_LEN;
    let icv_at = d.end - ICV_LEN;
    // ` in FILE`, or nothing for the worked example's own key.
    let keys_name = match ctx.keys.as_ref().map(|k| k.path.as_str()) {
        Some("") | None => String::new(),
        Some(path) => format!(" in {path}"),
    };

    let mut facts = EspFacts {
        spi,
        sequence_low: esp.sequence_low(),
        sequence: seq,
        sequence_high: (seq >> 32) as u32,
        sequence_high_from: high_from,
        iv: format!("{:#018x}", esp.iv()),
        ciphertext_len: esp.ciphertext_len(),
        icv: hex::encode(esp.icv()),
        state: EspState::Opaque,
        detail: String::new(),
        overhead_over_plain_vxlan: None,
        pad_len: None,
        next_header: None,
    };
    let mut vni = None;
    let mut decrypted_bytes = None;
    let mut inner_summary = String::from("encrypted");
    let plain_ip = if d.v6 {
        ipv6::IPV6_HEADER_LEN
    } else {
        ipv4::IPV4_HEADER_LEN
    };
    let plain_overhead =
        plain_ip + UDP_HEADER_LEN + VXLAN_HEADER_LEN + ethernet::ETHERNET_HEADER_LEN;
    // Until the padding is known: the least ESP adds (outer UDP, header and IV, trailer, ICV).
    let least_esp = MAX_OVERHEAD - MAX_PAD_LEN;
    let mut overhead = plain_overhead + least_esp;

    match opened {
        Some((entry, plain, range)) => {
            let mut bytes = data.to_vec();
            bytes[d.esp..d.end].copy_from_slice(&plain);
            let udp = d.esp + range.start;
            let payload_end = d.esp + range.end;
            let pad = (icv_at - payload_end - TRAILER_LEN) as u8;
            facts.pad_len = Some(pad);
            facts.next_header = Some(bytes[icv_at - 1]);
            let esp_overhead = least_esp + usize::from(pad);
            facts.overhead_over_plain_vxlan = Some(esp_overhead);
            overhead = plain_overhead + esp_overhead;
            facts.detail = format!(
                "decrypted with the key of {}{keys_name}; the ICV verifies",
                entry.describe()
            );
            facts.state = EspState::Decrypted;
            let vxlan = udp + UDP_HEADER_LEN;
            let inner = vxlan + VXLAN_HEADER_LEN;
            if payload_end >= inner + ethernet::ETHERNET_HEADER_LEN {
                layers.push(layers::inner_udp(&bytes[udp..vxlan], udp));
                layers.push(outer::vxlan_layer(&bytes[vxlan..inner], vxlan));
                vni = Some(VxlanPacket::new_unchecked(&bytes[vxlan..inner]).vni().get());
                let (inner_layers, summary) =
                    inner_layers(&bytes[inner..payload_end], inner, d.src);
                layers.extend(inner_layers);
                inner_summary = summary;
            } else {
                facts.state = EspState::BadPayload;
                facts.detail.push_str(&format!(
                    ", but its {} payload bytes are too few for UDP, VXLAN and an Ethernet header",
                    payload_end - udp
                ));
                layers.push(layers::opaque(
                    payload_end - udp,
                    udp,
                    "decrypted, too short",
                ));
            }
            layers.push(layers::trailer(&bytes[payload_end..icv_at], payload_end));
            layers.push(layers::icv(
                esp.icv(),
                icv_at,
                "verified: AES-GCM tag over SPI ‖ sequence (high ‖ low) ‖ ciphertext",
            ));
            decrypted_bytes = Some(bytes);
        }
        None => {
            let (why, verdict) = if candidates.is_empty() {
                facts.detail = match &ctx.keys {
                    Some(k) => format!(
                        "no key for SPI {spi:#010x} in {}: the payload is opaque",
                        k.path
                    ),
                    None => "no keys given (--keys FILE): the payload is opaque".to_owned(),
                };
                (
                    "opaque without its key (--keys FILE)".to_owned(),
                    "not verified: no key for this SPI".to_owned(),
                )
            } else {
                facts.state = EspState::IcvMismatch;
                let reason = match failure {
                    Some(EspError::BadIcv) | None => "the ICV does not verify".to_owned(),
                    Some(e) => e.to_string(),
                };
                facts.detail = format!(
                    "{reason} with the key{} for SPI {spi:#010x}{keys_name}: a wrong key, \
                     or (with the high sequence bits inferred) an SA that passed 2^32 packets \
                     before the capture began; a receiver drops it",
                    if candidates.len() > 1 { "s" } else { "" }
                );
                (
                    format!("{reason}, so it stays opaque"),
                    "DOES NOT VERIFY with the given key: a receiver drops this packet".to_owned(),
                )
            };
            layers.push(layers::opaque(icv_at - ciphertext, ciphertext, &why));
            layers.push(layers::icv(esp.icv(), icv_at, &verdict));
        }
    }
    if d.end < data.len() {
        layers.push(Layer {
            name: "link padding".into(),
            kind: LayerKind::Padding,
            offset: d.end,
            len: data.len() - d.end,
            fields: Vec::new(),
        });
    }
    let mut notes = remarks(&layers, d.end - d.ip);
    if let Some(e) = replayed {
        notes.push(format!(
            "{e}: a receiver drops it before decrypting (RFC 4303 §3.4.3); shown all the same"
        ));
    }
    notes.push(facts.detail.clone());
    let vni_text = vni.map_or("VNI unknown".to_owned(), |v| format!("VNI {v}"));
    let outer_flow = format!(
        "{} -> {}",
        SocketAddr::new(d.src, UdpPacket::new_unchecked(&data[d.udp..]).src_port()),
        SocketAddr::new(d.dst, UdpPacket::new_unchecked(&data[d.udp..]).dst_port())
    );
    Ok(Packet {
        frame,
        captured_len: data.len(),
        time: None,
        vni,
        summary: format!(
            "{inner_summary} | {vni_text} | ESP SPI {spi:#010x} seq {seq} | {outer_flow}"
        ),
        outer_flow,
        inner_summary,
        overhead,
        layers,
        remarks: notes,
        bytes: data.to_vec(),
        decrypted_bytes,
        esp: Some(facts),
    })
}

fn outer_ip_layer(data: &[u8], d: &Datagram) -> Layer {
    let header = &data[d.ip..d.udp];
    let mut layer = if d.v6 {
        outer::outer_ipv6(header, d.ip)
    } else {
        outer::outer_ipv4(header, d.ip)
    };
    for f in &mut layer.fields {
        if matches!(f.name, "total length" | "payload length") {
            f.note = Some("outer IP header (IPv6: not counted) + UDP + ESP (SPI to ICV)".into());
        }
    }
    layer
}

fn udp_check(data: &[u8], d: &Datagram) -> checksum::Check {
    use vxnet_encap::checksum::{pseudo_header_v4, pseudo_header_v6};
    let segment = &data[d.udp..d.end];
    let len = segment.len() as u32;
    let (pseudo, zero) = match (d.src, d.dst) {
        (IpAddr::V4(s), IpAddr::V4(t)) => (pseudo_header_v4(s, t, 17, len), Zero::MeansNone),
        (IpAddr::V6(s), IpAddr::V6(t)) => (pseudo_header_v6(s, t, 17, len), Zero::Forbidden),
        _ => return checksum::Check::Unchecked,
    };
    checksum::transport(segment, 6, Some(pseudo), zero, true)
}

/// The fixed cost of ESP over plain VXLAN, for the overhead section (from `vxnet-encap`).
#[derive(Debug, Clone, Serialize)]
pub(super) struct EspOverhead {
    pub outer_udp: usize,
    pub esp_header: usize,
    pub iv: usize,
    pub trailer_min: usize,
    pub trailer_max: usize,
    pub icv: usize,
    pub over_plain_min: usize,
    pub over_plain_max: usize,
    pub ipv4_total_max: usize,
    pub ipv6_total_max: usize,
    pub ipv4_inner_mtu: usize,
    pub ipv6_inner_mtu: usize,
}

impl EspOverhead {
    pub(super) fn standard(plain_v4: usize, plain_v6: usize, underlay_mtu: usize) -> Self {
        EspOverhead {
            outer_udp: UDP_HEADER_LEN,
            esp_header: ESP_HEADER_LEN - 8,
            iv: 8,
            trailer_min: TRAILER_LEN,
            trailer_max: TRAILER_LEN + MAX_PAD_LEN,
            icv: ICV_LEN,
            over_plain_min: MAX_OVERHEAD - MAX_PAD_LEN,
            over_plain_max: MAX_OVERHEAD,
            ipv4_total_max: plain_v4 + MAX_OVERHEAD,
            ipv6_total_max: plain_v6 + MAX_OVERHEAD,
            ipv4_inner_mtu: underlay_mtu - plain_v4 - MAX_OVERHEAD,
            ipv6_inner_mtu: underlay_mtu - plain_v6 - MAX_OVERHEAD,
        }
    }
}

#[cfg(test)]
mod tests;
