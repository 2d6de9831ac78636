//! The text view: a story line, a layer diagram, a table per layer, a hex dump with the layers
//! marked, and the overhead/MTU arithmetic. Colour only marks what the text already says, so the
//! plain rendering loses nothing.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Color, Style};

use super::esp::EspState;
use super::model::{reasons_line, Explanation, Layer, LayerKind, Packet, Source};

struct Painter {
    colour: bool,
}

impl Painter {
    fn paint(&self, style: Style, text: &str) -> String {
        if self.colour {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_owned()
        }
    }

    fn bold(&self, text: &str) -> String {
        self.paint(Style::new().bold(), text)
    }

    fn layer(&self, kind: LayerKind, text: &str) -> String {
        self.paint(layer_style(kind), text)
    }
}

fn layer_style(kind: LayerKind) -> Style {
    let colour = |c: AnsiColor| Style::new().fg_color(Some(Color::Ansi(c)));
    match kind {
        LayerKind::Link => colour(AnsiColor::Blue),
        LayerKind::OuterIp => colour(AnsiColor::Cyan),
        LayerKind::OuterUdp => colour(AnsiColor::Green),
        LayerKind::Vxlan => colour(AnsiColor::Magenta).bold(),
        LayerKind::InnerEthernet => colour(AnsiColor::Yellow),
        LayerKind::InnerNetwork => colour(AnsiColor::BrightRed),
        LayerKind::InnerTransport => colour(AnsiColor::BrightBlue),
        LayerKind::Payload => Style::new(),
        LayerKind::Padding => Style::new().dimmed(),
        LayerKind::Esp => colour(AnsiColor::BrightMagenta),
        LayerKind::EspEncrypted => colour(AnsiColor::BrightBlack),
        LayerKind::EspTrailer => colour(AnsiColor::BrightMagenta).dimmed(),
    }
}

pub(super) fn render(explanation: &Explanation, colour: bool) -> String {
    let p = Painter { colour };
    let mut out = String::new();
    match &explanation.source {
        Source::WorkedExample { story } => {
            let title = if explanation.packets.iter().any(|p| p.esp.is_some()) {
                "Encrypted VXLAN, ESP in UDP: a worked example"
            } else {
                "VXLAN, the double wrap: a worked example"
            };
            let _ = writeln!(out, "{}", p.bold(title));
            let _ = writeln!(out);
            for line in wrap(story, 96) {
                let _ = writeln!(out, "{line}");
            }
        }
        Source::Capture {
            path,
            format,
            total_packets,
            vxlan_ports,
            esp_ports,
            keys,
        } => {
            let list = |ports: &[u16]| {
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let encrypted = explanation
                .packets
                .iter()
                .filter(|p| p.esp.is_some())
                .count();
            let esp = match (encrypted, keys) {
                (0, _) => String::new(),
                (n, keys) => format!(
                    "; {n} of them encrypted, ESP-in-UDP port {}, {}",
                    list(esp_ports),
                    keys.as_ref()
                        .map_or("no --keys".to_owned(), |k| format!("keys from {k}"))
                ),
            };
            let _ = writeln!(
                out,
                "{} {path} ({format}): {total_packets} packets, {} VXLAN (UDP ports {}{esp}), {} skipped",
                p.bold("Capture"),
                explanation.packets.len(),
                list(vxlan_ports),
                explanation.skipped.len()
            );
        }
    }
    if let Some(truncated) = &explanation.truncated {
        let _ = writeln!(out, "{} {truncated}", p.bold("Truncated:"));
    }
    for packet in &explanation.packets {
        let _ = writeln!(out);
        render_packet(&mut out, &p, packet);
    }
    if !explanation.skipped.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{}  {}",
            p.bold("Skipped (not VXLAN)"),
            reasons_line(&explanation.skipped_by_reason, usize::MAX)
        );
        for s in &explanation.skipped {
            let _ = writeln!(out, "  packet {:>4}: {}", s.frame, s.reason);
        }
    }
    let _ = writeln!(out);
    render_overhead(&mut out, &p, explanation);
    out
}

/// One packet alone (`explain --live`), with the same layout as in a capture.
pub(super) fn render_one(packet: &Packet, colour: bool) -> String {
    let mut out = String::new();
    render_packet(&mut out, &Painter { colour }, packet);
    out.push('\n');
    out
}

fn render_packet(out: &mut String, p: &Painter, packet: &Packet) {
    let _ = writeln!(out, "{}", headline(p, packet));
    let _ = writeln!(out, "  {}", packet.summary);
    for remark in &packet.remarks {
        for (i, line) in wrap(remark, 94).iter().enumerate() {
            let _ = writeln!(out, "  {} {line}", if i == 0 { "note:" } else { "     " });
        }
    }
    let _ = writeln!(out);
    render_diagram(out, p, &packet.layers);
    for layer in &packet.layers {
        let _ = writeln!(out);
        render_layer(out, p, layer);
    }
    let _ = writeln!(out);
    let as_sent = match packet.decrypted_bytes {
        Some(_) => ", as on the wire (behind the ESP header: ciphertext)",
        None => "",
    };
    render_hex(out, p, packet, &packet.bytes, as_sent);
    if let Some(decrypted) = &packet.decrypted_bytes {
        let _ = writeln!(out);
        render_hex(
            out,
            p,
            packet,
            decrypted,
            ", decrypted: the ciphertext replaced by its plaintext, at its offsets on the wire",
        );
    }
}

/// `Packet 1: 126 bytes, VNI 42, VXLAN overhead 50 bytes`, or for ESP the SPI, sequence number,
/// what became of the payload and the overhead over plain VXLAN.
fn headline(p: &Painter, packet: &Packet) -> String {
    let start = format!(
        "{} {}: {} bytes",
        p.bold("Packet"),
        packet.frame,
        packet.captured_len
    );
    let Some(esp) = &packet.esp else {
        let vni = packet.vni.map_or("?".to_owned(), |v| v.to_string());
        return format!(
            "{start}, VNI {vni}, VXLAN overhead {} bytes",
            packet.overhead
        );
    };
    let what = match esp.state {
        EspState::Decrypted => match packet.vni {
            Some(vni) => format!("decrypted, VNI {vni}"),
            None => "decrypted".to_owned(),
        },
        EspState::Opaque => "encrypted (no key: opaque)".to_owned(),
        EspState::IcvMismatch => "encrypted, ICV DOES NOT VERIFY".to_owned(),
        EspState::BadPayload => "decrypted, not a VXLAN packet".to_owned(),
    };
    let overhead = match esp.overhead_over_plain_vxlan {
        Some(extra) => format!(
            "overhead {} bytes ({} of plain VXLAN + {extra} of ESP in UDP)",
            packet.overhead,
            packet.overhead - extra
        ),
        None => {
            let least = vxnet_encap::esp::MAX_OVERHEAD - vxnet_encap::esp::wire::MAX_PAD_LEN;
            let plain = packet.overhead - least;
            format!(
                "overhead {}-{} bytes ({plain} of plain VXLAN + {least}-{} of ESP in UDP: the \
                 padding is encrypted)",
                packet.overhead,
                plain + vxnet_encap::esp::MAX_OVERHEAD,
                vxnet_encap::esp::MAX_OVERHEAD
            )
        }
    };
    format!(
        "{start}, ESP SPI {:#010x} seq {}, {what}, {overhead}",
        esp.spi, esp.sequence
    )
}

/// `| outer Ethernet | outer IPv4 | ... |` with each layer's byte range underneath.
fn render_diagram(out: &mut String, p: &Painter, layers: &[Layer]) {
    let cells: Vec<(String, String, LayerKind)> = layers
        .iter()
        .map(|l| {
            (
                l.name.clone(),
                format!("{}..{} ({}B)", l.offset, l.offset + l.len, l.len),
                l.kind,
            )
        })
        .collect();
    let mut names = String::from("|");
    let mut ranges = String::from("|");
    for (name, range, kind) in &cells {
        let width = name.len().max(range.len());
        names.push_str(&p.layer(*kind, &format!(" {name:^width$} ")));
        names.push('|');
        ranges.push_str(&format!(" {range:^width$} |"));
    }
    let _ = writeln!(out, "{names}");
    let _ = writeln!(out, "{ranges}");
}

fn render_layer(out: &mut String, p: &Painter, layer: &Layer) {
    let _ = writeln!(
        out,
        "{}  bytes {}..{} ({} bytes)",
        p.layer(layer.kind, &p.bold(&layer.name)),
        layer.offset,
        layer.offset + layer.len,
        layer.len
    );
    if layer.fields.is_empty() {
        return;
    }
    let name_w = layer
        .fields
        .iter()
        .map(|f| f.name.len())
        .fold("field".len(), usize::max);
    let value_w = layer
        .fields
        .iter()
        .map(|f| f.value.to_string().len())
        .fold("value".len(), usize::max);
    let _ = writeln!(
        out,
        "  {:>6} {:>3}  {:name_w$}  {:value_w$}  note",
        "offset", "len", "field", "value"
    );
    for f in &layer.fields {
        let line = format!(
            "  {:>6} {:>3}  {:name_w$}  {:value_w$}  {}",
            f.offset,
            f.len,
            f.name,
            f.value.to_string(),
            f.note.as_deref().unwrap_or("")
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// 16 bytes a line. A `|` before a byte marks where a layer starts; the layers starting on a line
/// are named at its end (and coloured on a terminal).
fn render_hex(out: &mut String, p: &Painter, packet: &Packet, bytes: &[u8], what: &str) {
    let _ = writeln!(
        out,
        "{}{what}  (| marks where a layer starts)",
        p.bold("Hex dump")
    );
    let layer_at = |i: usize| {
        packet
            .layers
            .iter()
            .find(|l| (l.offset..l.offset + l.len).contains(&i))
    };
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let base = row * 16;
        let mut line = format!("  {base:04x} ");
        let mut starts = Vec::new();
        for (i, byte) in chunk.iter().enumerate() {
            let at = base + i;
            let layer = layer_at(at);
            let starts_here = layer.is_some_and(|l| l.offset == at);
            line.push(if starts_here { '|' } else { ' ' });
            let text = format!("{byte:02x}");
            match layer {
                Some(l) => {
                    if starts_here {
                        starts.push(p.layer(l.kind, &format!("{}@{}", l.name, l.offset)));
                    }
                    line.push_str(&p.layer(l.kind, &text));
                }
                None => line.push_str(&text),
            }
        }
        let pad = (16 - chunk.len()) * 3;
        let _ = write!(out, "{line}{:pad$}", "");
        if starts.is_empty() {
            let _ = writeln!(out);
        } else {
            let _ = writeln!(out, "   {}", starts.join(", "));
        }
    }
}

fn render_overhead(out: &mut String, p: &Painter, explanation: &Explanation) {
    let o = &explanation.overhead;
    let v4 = &o.ipv4;
    let v6 = &o.ipv6;
    let _ = writeln!(out, "{}", p.bold("What the wrap costs"));
    let _ = writeln!(
        out,
        "  outer IPv4 header     {:>3}   (IPv6: {})",
        v4.outer_ip, v6.outer_ip
    );
    let _ = writeln!(out, "  outer UDP header      {:>3}", v4.udp);
    let _ = writeln!(out, "  VXLAN header          {:>3}", v4.vxlan);
    let _ = writeln!(
        out,
        "  inner Ethernet header {:>3}   (the inner frame's own header now rides inside the outer IP packet)",
        v4.inner_ethernet
    );
    let _ = writeln!(
        out,
        "  overhead              {:>3} bytes = {} + {} + {} + {}   (IPv6: {} = {} + {} + {} + {})",
        v4.total,
        v4.outer_ip,
        v4.udp,
        v4.vxlan,
        v4.inner_ethernet,
        v6.total,
        v6.outer_ip,
        v6.udp,
        v6.vxlan,
        v6.inner_ethernet
    );
    let _ = writeln!(
        out,
        "  underlay MTU {} -> inner MTU {} over IPv4 ({} - {}), {} over IPv6 ({} - {})",
        v4.underlay_mtu,
        p.bold(&v4.inner_mtu.to_string()),
        v4.underlay_mtu,
        v4.total,
        v6.inner_mtu,
        v6.underlay_mtu,
        v6.total
    );
    let _ = writeln!(
        out,
        "  The outer Ethernet header ({} bytes) is not counted: an MTU is measured from the IP header.",
        o.outer_ethernet_not_counted
    );
    let _ = writeln!(
        out,
        "  VTEPs must not fragment, so a bigger inner packet is dropped: set the overlay MTU to {}.",
        v4.inner_mtu
    );
    if let Some(esp) = &o.esp {
        render_esp_overhead(out, p, esp, v4.total, v6.total);
    }
}

fn render_esp_overhead(
    out: &mut String,
    p: &Painter,
    esp: &super::esp::EspOverhead,
    plain_v4: usize,
    plain_v6: usize,
) {
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", p.bold("What encryption adds (ESP in UDP)"));
    let _ = writeln!(
        out,
        "  outer UDP header      {:>3}   (to the ESP port; the VXLAN packet's own UDP header moves inside)",
        esp.outer_udp
    );
    let _ = writeln!(out, "  ESP SPI + sequence    {:>3}", esp.esp_header);
    let _ = writeln!(out, "  ESP IV                {:>3}", esp.iv);
    let _ = writeln!(
        out,
        "  padding + trailer   {}-{}   (pad 0-3, pad length, next header; encrypted)",
        esp.trailer_min, esp.trailer_max
    );
    let _ = writeln!(
        out,
        "  ICV                   {:>3}   (the AES-GCM tag)",
        esp.icv
    );
    let _ = writeln!(
        out,
        "  over plain VXLAN    {}-{} bytes; in all {}-{} over IPv4, {}-{} over IPv6",
        esp.over_plain_min,
        esp.over_plain_max,
        plain_v4 + esp.over_plain_min,
        esp.ipv4_total_max,
        plain_v6 + esp.over_plain_min,
        esp.ipv6_total_max
    );
    let _ = writeln!(
        out,
        "  an encrypted network's inner MTU: {} over IPv4, {} over IPv6 (vxnet sets it on the TAP)",
        p.bold(&esp.ipv4_inner_mtu.to_string()),
        esp.ipv6_inner_mtu
    );
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}
