//! `explain --svg FILE`: one packet drawn as nested boxes, each layer inside the one that carries
//! it (outer Ethernet ⊃ outer IP ⊃ outer UDP ⊃ VXLAN ⊃ inner frame …), with its byte range and
//! the fields that matter. Plain SVG 1.1 text, so any browser shows it and it diffs well.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::model::{Layer, LayerKind, Packet};
use super::ExplainError;

const WIDTH: usize = 960;
const MARGIN: usize = 16;
/// How far each box sits inside the one that carries it.
const INDENT: usize = 18;
const TITLE_HEIGHT: usize = 72;
const LABEL_HEIGHT: usize = 24;
const FIELD_HEIGHT: usize = 16;
const BOX_PAD: usize = 8;
/// Fields drawn per layer: the drawing is an overview; the text view has them all.
const MAX_FIELDS: usize = 6;
/// Longest value drawn before it is cut with an ellipsis.
const MAX_VALUE: usize = 64;
/// Fields that describe the header's own bookkeeping rather than the packet's journey.
const NOISE: [&str; 12] = [
    "checksum",
    "reserved",
    "hardware type",
    "hardware size",
    "protocol size",
    "address length",
    "urgent pointer",
    "window",
    "version / IHL",
    "ARPHRD type",
    "data",
    "padding",
];

/// The file the drawing goes to, checked before any work so a bad path is one error line and
/// nothing is captured. The drawing is written to a temporary file beside it and renamed into
/// place, so a failure leaves neither a partial file nor the temporary one.
pub(super) struct SvgTarget {
    path: PathBuf,
    temp: PathBuf,
}

impl SvgTarget {
    pub(super) fn check(path: &Path) -> Result<SvgTarget, ExplainError> {
        let fail = |detail: String| ExplainError::Svg {
            path: path.display().to_string(),
            detail,
        };
        if path.is_dir() {
            return Err(fail("it is a directory".into()));
        }
        let Some(name) = path.file_name() else {
            return Err(fail("it names no file".into()));
        };
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.exists() {
            return Err(fail(format!("no such directory {}", parent.display())));
        }
        if !parent.is_dir() {
            return Err(fail(format!("{} is not a directory", parent.display())));
        }
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.tmp", std::process::id()));
        let temp = parent.join(temp_name);
        std::fs::File::create(&temp)
            .map_err(|e| fail(format!("cannot create a file in {}: {e}", parent.display())))?;
        Ok(SvgTarget {
            path: path.to_owned(),
            temp,
        })
    }

    pub(super) fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// Draws `packet` into the file.
    pub(super) fn write(&self, packet: &Packet) -> Result<(), ExplainError> {
        let fail = |e: std::io::Error| ExplainError::Svg {
            path: self.path(),
            detail: e.to_string(),
        };
        std::fs::write(&self.temp, draw(packet)).map_err(fail)?;
        std::fs::rename(&self.temp, &self.path).map_err(fail)
    }
}

impl Drop for SvgTarget {
    fn drop(&mut self) {
        // Gone already once the drawing was renamed into place; otherwise nothing is left behind.
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// The fields worth drawing: the packet's journey, not its bookkeeping.
fn shown_fields(layer: &Layer) -> Vec<String> {
    layer
        .fields
        .iter()
        .filter(|f| !NOISE.contains(&f.name))
        .take(MAX_FIELDS)
        .map(|f| {
            let mut value = f.value.to_string();
            if value.chars().count() > MAX_VALUE {
                value = value.chars().take(MAX_VALUE - 1).collect::<String>() + "…";
            }
            format!("{}: {value}", f.name)
        })
        .collect()
}

/// Fill and stroke per kind of layer, the same families as the text view's colours.
fn colours(kind: LayerKind) -> (&'static str, &'static str) {
    match kind {
        LayerKind::Link => ("#dbe9ff", "#2f6fd0"),
        LayerKind::OuterIp => ("#d9f5f7", "#178a94"),
        LayerKind::OuterUdp => ("#dcf5dc", "#2f8f2f"),
        LayerKind::Vxlan => ("#f6dcf6", "#9b2f9b"),
        LayerKind::InnerEthernet => ("#fff6cc", "#a88a00"),
        LayerKind::InnerNetwork => ("#ffe0dc", "#c0392b"),
        LayerKind::InnerTransport => ("#e3e6ff", "#4050c0"),
        LayerKind::Payload => ("#f4f4f4", "#777777"),
        LayerKind::Padding | LayerKind::EspTrailer => ("#eeeeee", "#999999"),
        LayerKind::Esp | LayerKind::EspEncrypted => ("#f3e0f7", "#7d3c98"),
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters at all.
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The SVG document for one packet.
pub(super) fn draw(packet: &Packet) -> String {
    // Layers that carry the rest nest; what trails the payload (link padding, the ESP trailer and
    // ICV) is drawn flat beneath the nest.
    let trails = |l: &&Layer| {
        matches!(l.kind, LayerKind::Padding | LayerKind::EspTrailer)
            || (l.kind == LayerKind::Esp && l.name == "ESP ICV")
    };
    let nested: Vec<&Layer> = packet.layers.iter().filter(|l| !trails(l)).collect();
    let trailing: Vec<&Layer> = packet.layers.iter().filter(trails).collect();
    let fields: Vec<Vec<String>> = nested.iter().map(|l| shown_fields(l)).collect();
    let head = |i: usize| LABEL_HEIGHT + fields[i].len() * FIELD_HEIGHT;
    // Heights from the innermost box out: each holds its own label and fields and the next box.
    let mut heights = vec![0; nested.len()];
    for i in (0..nested.len()).rev() {
        let inside = heights.get(i + 1).map_or(0, |h| h + BOX_PAD);
        heights[i] = head(i) + inside + BOX_PAD;
    }
    let trailer_height = if trailing.is_empty() {
        0
    } else {
        LABEL_HEIGHT + BOX_PAD
    };
    let total = TITLE_HEIGHT + heights.first().copied().unwrap_or(0) + trailer_height + 2 * MARGIN;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total}" viewBox="0 0 {WIDTH} {total}" font-family="DejaVu Sans Mono, monospace" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<title>{}</title><rect width="100%" height="100%" fill="white"/>"#,
        escape(&format!("vxnet explain: packet {}", packet.frame))
    );
    let _ = writeln!(
        svg,
        r#"<text x="{MARGIN}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
        MARGIN + 14,
        escape(&format!(
            "Packet {}: {} bytes, {} bytes of overhead",
            packet.frame, packet.captured_len, packet.overhead
        ))
    );
    // The inner frame and the outer flow on lines of their own: together they are wider than
    // the drawing.
    for (i, line) in [&packet.inner_summary, &packet.outer_flow]
        .iter()
        .enumerate()
    {
        let _ = writeln!(
            svg,
            r#"<text x="{MARGIN}" y="{}">{}</text>"#,
            MARGIN + 34 + 16 * i,
            escape(line)
        );
    }
    let mut y = MARGIN + TITLE_HEIGHT;
    for (i, layer) in nested.iter().enumerate() {
        let x = MARGIN + i * INDENT;
        let width = WIDTH - 2 * MARGIN - 2 * i * INDENT;
        draw_box(&mut svg, layer, &fields[i], x, y, width, heights[i]);
        y += head(i) + BOX_PAD;
    }
    let mut x = MARGIN;
    let y = MARGIN + TITLE_HEIGHT + heights.first().copied().unwrap_or(0) + BOX_PAD;
    for layer in trailing {
        let label = format!("{}  {}B", layer.name, layer.len);
        let width = label.chars().count() * 8 + 16;
        let (fill, stroke) = colours(layer.kind);
        let _ = writeln!(
            svg,
            r#"<g class="layer"><rect x="{x}" y="{y}" width="{width}" height="{LABEL_HEIGHT}" rx="4" fill="{fill}" stroke="{stroke}"/><text x="{}" y="{}">{}</text></g>"#,
            x + 8,
            y + 16,
            escape(&label)
        );
        x += width + BOX_PAD;
    }
    svg.push_str("</svg>\n");
    svg
}

fn draw_box(
    svg: &mut String,
    layer: &Layer,
    fields: &[String],
    x: usize,
    y: usize,
    width: usize,
    height: usize,
) {
    let (fill, stroke) = colours(layer.kind);
    let _ = writeln!(
        svg,
        r#"<g class="layer"><rect x="{x}" y="{y}" width="{width}" height="{height}" rx="6" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-weight="bold" fill="{stroke}">{}</text><text x="{}" y="{}" text-anchor="end" fill="{stroke}">{}</text>"#,
        x + 8,
        y + 17,
        escape(&layer.name),
        x + width - 8,
        y + 17,
        escape(&format!(
            "bytes {}..{} ({} B)",
            layer.offset,
            layer.offset + layer.len,
            layer.len
        ))
    );
    for (i, field) in fields.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{}</text>"#,
            x + 16,
            y + LABEL_HEIGHT + 12 + i * FIELD_HEIGHT,
            escape(field)
        );
    }
    svg.push_str("</g>\n");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::example::{worked_example, ExampleArgs};
    use super::*;

    #[test]
    fn every_layer_is_a_box_inside_the_previous_one() {
        let explanation = worked_example(4789, &ExampleArgs::default()).unwrap();
        let packet = &explanation.packets[0];
        let svg = draw(packet);
        for layer in &packet.layers {
            assert!(svg.contains(&escape(&layer.name)), "{} missing", layer.name);
        }
        // Rectangles: one per layer plus the white background.
        assert_eq!(svg.matches("<rect").count(), packet.layers.len() + 1);
        // Each nested box starts further right than the one carrying it.
        let xs: Vec<usize> = svg
            .match_indices(r#"<g class="layer"><rect x=""#)
            .map(|(i, m)| {
                let rest = &svg[i + m.len()..];
                rest[..rest.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
        assert!(svg.contains("VNI: 42"), "{svg}");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b>&\"'\u{7}"), "a&lt;b&gt;&amp;&quot;&apos; ");
    }
}
