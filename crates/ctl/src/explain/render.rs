//! The text view: a story line, a layer diagram, a table per layer, a hex dump with the layers
//! marked, and the overhead/MTU arithmetic. Colour only marks what the text already says, so the
//! plain rendering loses nothing.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Color, Style};

use super::esp::EspState;
use super::model::{reasons_line, Explanation, Layer, LayerKind, Overhead, Packet, Source};
use super::pcap::CaptureRun;

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

/// The worked example: its story, the packet and what the wrap costs.
pub(super) fn render_example(explanation: &Explanation, colour: bool, width: usize) -> String {
    let p = Painter { colour };
    let mut out = String::new();
    if let Source::WorkedExample { story } = &explanation.source {
        let title = if explanation.packets.iter().any(|p| p.esp.is_some()) {
            "Encrypted VXLAN, ESP in UDP: a worked example"
        } else {
            "VXLAN, the double wrap: a worked example"
        };
        let _ = writeln!(out, "{}", p.bold(title));
        let _ = writeln!(out);
        for line in wrap(story, width.clamp(40, 96)) {
            let _ = writeln!(out, "{line}");
        }
    }
    for packet in &explanation.packets {
        let _ = writeln!(out);
        render_packet(&mut out, &p, packet, width);
    }
    let _ = writeln!(out);
    render_overhead(&mut out, &p, &explanation.overhead);
    out
}

/// The first line of a capture's text view, printed before its first packet.
pub(super) fn capture_intro(source: &CaptureSource<'_>, colour: bool) -> String {
    let p = Painter { colour };
    format!(
        "{} {}: VXLAN on UDP ports {}, ESP-in-UDP on {}\n",
        p.bold("Capture"),
        source.path,
        source.vxlan_ports,
        source.esp_ports
    )
}

/// What follows a capture's packets: the counts, where the file was cut, the skipped frames and
/// what the wrap costs.
/// `brief` keeps it to the counts.
pub(super) fn capture_end(
    run: &CaptureRun,
    source: &CaptureSource<'_>,
    overhead: &Overhead,
    colour: bool,
    brief: bool,
) -> String {
    let p = Painter { colour };
    let mut out = String::new();
    let esp = match (run.encrypted, source.keys) {
        (0, _) => String::new(),
        (n, keys) => format!(
            "; {n} of them encrypted, ESP-in-UDP port {}, {}",
            source.esp_ports,
            keys.map_or("no --keys".to_owned(), |k| format!("keys from {k}"))
        ),
    };
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} {} ({}): {} packets, {} VXLAN (UDP ports {}{esp}), {} skipped",
        p.bold("Capture"),
        source.path,
        run.format,
        run.total,
        run.explained,
        source.vxlan_ports,
        run.skipped.total
    );
    if let Some(truncated) = &run.truncated {
        let _ = writeln!(out, "{} {truncated}", p.bold("Truncated:"));
    }
    if brief {
        if run.skipped.total > 0 {
            let reasons = reasons_line(&run.skipped.by_reason(), 6);
            let _ = writeln!(out, "{}  {reasons}", p.bold("Skipped (not VXLAN)"));
        }
        return out;
    }
    if run.skipped.total > 0 {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{}  {}",
            p.bold("Skipped (not VXLAN)"),
            reasons_line(&run.skipped.by_reason(), usize::MAX)
        );
        for s in &run.skipped.listed {
            let _ = writeln!(out, "  packet {:>4}: {}", s.frame, s.reason);
        }
        let unlisted = run.skipped.total - run.skipped.listed.len();
        if unlisted > 0 {
            let _ = writeln!(out, "  … and {unlisted} more, counted above");
        }
    }
    let _ = writeln!(out);
    render_overhead(&mut out, &p, overhead);
    out
}

/// Where a capture came from, as its summary names it.
pub(super) struct CaptureSource<'a> {
    pub path: &'a str,
    pub vxlan_ports: &'a str,
    pub esp_ports: &'a str,
    pub keys: Option<&'a str>,
}

/// One packet alone (a capture's packets, `explain --live`), with the same layout throughout.
pub(super) fn render_one(packet: &Packet, colour: bool, width: usize) -> String {
    let mut out = String::new();
    render_packet(&mut out, &Painter { colour }, packet, width);
    out.push('\n');
    out
}

/// `--brief`: one line per packet: number, time, outer flow, VNI (or ESP SPI), inner summary,
/// size.
pub(super) fn brief_line(packet: &Packet) -> String {
    let time = packet
        .time
        .map_or_else(|| "-".to_owned(), |t| format!("{t:.6}"));
    let wrap = match (&packet.esp, packet.vni) {
        (Some(esp), Some(vni)) => format!("ESP {:#010x} VNI {vni}", esp.spi),
        (Some(esp), None) => format!("ESP {:#010x}", esp.spi),
        (None, Some(vni)) => format!("VNI {vni}"),
        (None, None) => "VNI ?".to_owned(),
    };
    format!(
        "{:>5} {time:>11}  {}  {wrap}  {}  {} B\n",
        packet.frame, packet.outer_flow, packet.inner_summary, packet.captured_len
    )
}

fn render_packet(out: &mut String, p: &Painter, packet: &Packet, width: usize) {
    let _ = writeln!(out, "{}", headline(p, packet));
    let _ = writeln!(out, "  {}", packet.summary);
    for remark in &packet.remarks {
        for (i, line) in wrap(remark, width.saturating_sub(8).clamp(32, 94))
            .iter()
            .enumerate()
        {
            let _ = writeln!(out, "  {} {line}", if i == 0 { "note:" } else { "     " });
        }
    }
    let _ = writeln!(out);
    render_diagram(out, p, &packet.layers, width);
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

/// `| outer Ethernet | outer IPv4 | ... |` with each layer's byte range underneath, in as many
/// rows as it takes to stay within `width` columns.
fn render_diagram(out: &mut String, p: &Painter, layers: &[Layer], width: usize) {
    let mut names = String::from("|");
    let mut ranges = String::from("|");
    // Visible columns of the current row (colour codes take none).
    let mut used = 1;
    for l in layers {
        let range = format!("{}..{} ({}B)", l.offset, l.offset + l.len, l.len);
        let cell = l.name.len().max(range.len());
        if used > 1 && used + cell + 3 > width {
            let _ = writeln!(out, "{names}");
            let _ = writeln!(out, "{ranges}");
            names = String::from("|");
            ranges = String::from("|");
            used = 1;
        }
        names.push_str(&p.layer(l.kind, &format!(" {:^cell$} ", l.name)));
        names.push('|');
        ranges.push_str(&format!(" {range:^cell$} |"));
        used += cell + 3;
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

fn render_overhead(out: &mut String, p: &Painter, o: &Overhead) {
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
