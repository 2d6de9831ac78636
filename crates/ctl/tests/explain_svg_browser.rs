//! `vxnet explain --svg`: the drawing opened in a real browser (Debian's chromium, headless), as
//! a reader would open it. The page must render (a screenshot with the boxes' colours on it, not
//! a blank or error page) and hold every layer's label in its DOM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod explain_support;

use std::path::Path;
use std::process::Command;

use explain_support::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Headless chromium with nothing that reaches for the network (this machine has none) and a
/// profile of its own.
fn chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium for this test"
    );
    Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium")
}

/// Pixels of a PNG that are neither white nor transparent, and how many distinct colours it has:
/// decoded with Python's standard library (zlib and the five PNG row filters).
fn png_ink(path: &Path) -> (u64, u64) {
    let script = r#"
import sys, zlib, struct
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
pos, idat, w, h, ctype = 8, b'', 0, 0, 0
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b'IHDR':
        w, h, depth, ctype = struct.unpack('>IIBB', body[:10])
        assert depth == 8, depth
    elif kind == b'IDAT':
        idat += body
    pos += 12 + n
bpp = {2: 3, 6: 4}[ctype]
raw = zlib.decompress(idat)
stride = w * bpp
prev = bytearray(stride)
ink, colours, i = 0, set(), 0
for _ in range(h):
    f = raw[i]; row = bytearray(raw[i + 1:i + 1 + stride]); i += 1 + stride
    for x in range(stride):
        a = row[x - bpp] if x >= bpp else 0
        b = prev[x]
        c = prev[x - bpp] if x >= bpp else 0
        if f == 1: row[x] = (row[x] + a) & 255
        elif f == 2: row[x] = (row[x] + b) & 255
        elif f == 3: row[x] = (row[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            row[x] = (row[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        px = bytes(row[x:x + 3])
        colours.add(px)
        if px != b'\xff\xff\xff':
            ink += 1
    prev = row
print(ink, len(colours))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut numbers = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

#[test]
fn the_drawing_renders_in_chromium_with_every_layer_labelled() {
    let dir = scratch("the_drawing_renders_in_chromium_with_every_layer_labelled");
    for (name, extra) in [("plain", &[][..]), ("encrypted", &["--encrypted"][..])] {
        let svg = dir.join(format!("{name}.svg"));
        let mut args = vec!["explain", "--json", "--svg", svg.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = vxnet(&args);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let labels: Vec<String> = doc["packets"][0]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_owned())
            .collect();
        assert!(labels.len() >= 7, "{name}: {labels:?}");

        let url = format!("file://{}", svg.display());
        let profile = dir.join(format!("profile-{name}"));
        let dom = chromium(&profile, &["--dump-dom", &url]);
        let dom_text = String::from_utf8_lossy(&dom.stdout);
        assert!(
            dom.status.success() && dom_text.contains("<svg"),
            "{name}: chromium did not load the drawing: {}",
            String::from_utf8_lossy(&dom.stderr)
        );
        for label in &labels {
            let escaped = label.replace('&', "&amp;").replace('<', "&lt;");
            assert!(
                dom_text.contains(&escaped),
                "{name}: {label} not in the page"
            );
        }

        let shot = dir.join(format!("{name}.png"));
        let out = chromium(
            &profile,
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=960,900",
                &url,
            ],
        );
        assert!(
            shot.exists(),
            "{name}: no screenshot: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (ink, colours) = png_ink(&shot);
        // Nested coloured boxes with text: a large share of the 960x900 page is not white, in
        // many colours (an error page or a blank one has a handful).
        assert!(ink > 200_000, "{name}: only {ink} non-white pixels");
        assert!(colours > 20, "{name}: only {colours} colours");
    }
}
