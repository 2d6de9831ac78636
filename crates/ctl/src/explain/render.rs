//! The text view: a story line, a layer diagram, a table per layer, a hex dump with the layers
//! marked, and the overhead/MTU arithmetic. Colour only marks what the text already says, so the
//! plain rendering loses nothing.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Color, Style};

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
    }
}

pub(super) fn render(explanation: &Explanation, colour: bool) -> String {
    let p = Painter { colour };
    let mut out = String::new();
    match &explanation.source {
        Source::WorkedExample { story } => {
            let _ = writeln!(
                out,
                "{}",
                p.bold("VXLAN, the double wrap: a worked example")
            );
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
        } => {
            let ports: Vec<String> = vxlan_ports.iter().map(u16::to_string).collect();
            let _ = writeln!(
                out,
                "{} {path} ({format}): {total_packets} packets, {} VXLAN (UDP ports {}), {} skipped",
                p.bold("Capture"),
                explanation.packets.len(),
                ports.join(", "),
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
    let _ = writeln!(
        out,
        "{} {}: {} bytes, VNI {}, VXLAN overhead {} bytes",
        p.bold("Packet"),
        packet.frame,
        packet.captured_len,
        packet.vni,
        packet.overhead
    );
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
    render_hex(out, p, packet);
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
fn render_hex(out: &mut String, p: &Painter, packet: &Packet) {
    let _ = writeln!(
        out,
        "{}  (| marks where a layer starts)",
        p.bold("Hex dump")
    );
    let layer_at = |i: usize| {
        packet
            .layers
            .iter()
            .find(|l| (l.offset..l.offset + l.len).contains(&i))
    };
    for (row, chunk) in packet.bytes.chunks(16).enumerate() {
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
