//! `vxnet explain`: the teaching view of the VXLAN double wrap.
//!
//! Everything shown is decoded from real bytes by the `vxnet-encap` code the data plane uses: the
//! worked example is built with [`vxnet_encap::encapsulate`] and then read back with
//! [`vxnet_encap::decapsulate_ethernet`], so the explanation cannot drift from the implementation.
//! Captures (`--pcap`) and live traffic (`--live`) go through the same decoder.
//!
//! Encrypted VXLAN (UDP-encapsulated ESP, `esp`) is shown layer by layer too: the worked example
//! `--encrypted` is sealed with the data plane's `SealSa`, and captures are opened with `--keys`
//! (the JSON `vxnet sa show --json --keys` prints, or Wireshark's `esp_sa` lines).

mod checksum;
mod decode;
mod esp;
mod example;
mod fields;
mod inner;
mod json;
mod link;
mod live;
mod model;
mod outer;
mod output;
mod pcap;
mod render;
mod svg;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// Explain every VXLAN packet in this capture (pcap or pcapng, as tcpdump or tshark write them)
    /// instead of the worked example.
    #[arg(long, value_name = "FILE", conflicts_with = "live")]
    pub pcap: Option<PathBuf>,
    /// Capture on this interface (an AF_PACKET socket: needs root) and explain each VXLAN packet
    /// as it passes, both directions, until --count packets or Ctrl-C.
    #[arg(long, value_name = "DEV")]
    pub live: Option<String>,
    /// With --live: stop after this many VXLAN packets (0: only Ctrl-C stops).
    #[arg(long, value_name = "N", default_value_t = 10, requires = "live")]
    pub count: usize,
    /// Print JSON instead of the text view: one document (with --live: one per packet, one
    /// per line).
    #[arg(long)]
    pub json: bool,
    /// UDP destination port to treat as VXLAN, besides 4789 (IANA) and 8472 (Linux's default),
    /// and as encrypted VXLAN (ESP-in-UDP, an engine's --esp-port), besides 4500. Without --pcap
    /// or --live it is the port the worked example uses [default: 4789; with --encrypted: 4500].
    #[arg(long, value_name = "N", value_parser = vxnet_dataplane::config::parse_port)]
    pub port: Option<u16>,
    /// Explain the worked example as an encrypted network sends it: the VXLAN packet sealed as
    /// ESP (AES-256-GCM) in UDP to port 4500, then opened again with the example's own key.
    #[arg(long, conflicts_with_all = ["pcap", "live", "keys"])]
    pub encrypted: bool,
    /// Decrypt encrypted VXLAN (ESP-in-UDP) in the capture with these SAs: the JSON `vxnet sa
    /// show --json --keys` prints (each SA with "spi" and "key", the hex RFC 4106 key material
    /// with its 4-byte salt), or Wireshark esp_sa lines ("IPv4","*","*","0x1234abcd","AES-GCM
    /// with 16 octet ICV [RFC4106]","0x<key><salt>","NULL",""). Without it the payload is opaque.
    #[arg(long, value_name = "FILE")]
    pub keys: Option<PathBuf>,
    /// When to colour the text view.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// One line per packet: number, time since the first frame, outer flow, VNI (or ESP SPI),
    /// the inner frame in a few words, size.
    #[arg(long, conflicts_with = "json")]
    pub brief: bool,
    /// Also draw one packet as nested boxes (outer Ethernet / IP / UDP / VXLAN / inner frame,
    /// each with its bytes and the fields that matter) into this SVG file, which any browser
    /// shows: the worked example's packet, or the capture's packet --frame N (default: the
    /// first explained).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// With --svg and a capture: the frame number (as the text view numbers packets) to draw.
    #[arg(long, value_name = "N", requires = "svg")]
    pub frame: Option<usize>,
    #[command(flatten)]
    pub example: example::ExampleArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when stdout is a terminal and NO_COLOR is not set.
    Auto,
    Always,
    Never,
}

/// Why `vxnet explain` could not produce an explanation. Each message is one line.
#[derive(Debug, Error)]
pub enum ExplainError {
    #[error("{path}: no such file")]
    NotFound { path: String },
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a pcap or pcapng capture: {detail}")]
    NotPcap { path: String, detail: String },
    #[error("{path}: truncated capture: {detail}")]
    Truncated { path: String, detail: String },
    #[error("{path}: malformed capture: {detail}")]
    Malformed { path: String, detail: String },
    #[error("{path}: no VXLAN packets (UDP ports {ports}) among its {total} packets{why}")]
    NoVxlan {
        path: String,
        ports: String,
        total: usize,
        /// `: 5 not IP (ARP); 3 …` and where a truncated file ends.
        why: String,
    },
    #[error("{dev}: no such network interface in this network namespace")]
    NoInterface { dev: String },
    #[error("capturing on {dev} needs root (CAP_NET_RAW): {source}")]
    NotPermitted { dev: String, source: std::io::Error },
    #[error("capturing on {dev}: {detail}")]
    Capture { dev: String, detail: String },
    #[error("{path}: not a keys file: {detail}")]
    Keys { path: String, detail: String },
    #[error("--keys decrypts captures: give --pcap FILE or --live DEV (the worked example --encrypted uses its own key)")]
    KeysWithoutCapture,
    #[error("cannot build the worked example: {0}")]
    Example(String),
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
    #[error("{path}: cannot write the SVG drawing: {detail}")]
    Svg { path: String, detail: String },
    #[error("{path}: no VXLAN packet numbered {frame} to draw into {svg}")]
    NoSuchFrame {
        frame: usize,
        path: String,
        svg: String,
    },
}

pub fn run(args: ExplainArgs) -> Result<(), ExplainError> {
    let mut ports = vec![vxnet_encap::DEFAULT_PORT, vxnet_encap::LINUX_LEGACY_PORT];
    ports.extend(args.port.filter(|p| !ports.contains(p)));
    let mut esp_ports = vec![vxnet_encap::esp::DEFAULT_ESP_PORT];
    esp_ports.extend(args.port.filter(|p| !esp_ports.contains(p)));
    if args.keys.is_some() && args.pcap.is_none() && args.live.is_none() {
        return Err(ExplainError::KeysWithoutCapture);
    }
    // Read before any capture starts, so a bad file is one error line and nothing else.
    let keys = args
        .keys
        .as_deref()
        .map(esp::keys::KeyTable::load)
        .transpose()?;
    // Refused before any work: a bad --svg path is one error line, and nothing is captured.
    let svg = args.svg.as_deref().map(svg::SvgTarget::check).transpose()?;
    let mut esp = esp::EspContext::new(esp_ports, keys);
    let view = if args.json {
        output::View::Json
    } else if args.brief {
        output::View::Brief
    } else {
        output::View::Full {
            colour: use_colour(args.color),
            width: terminal_width(),
        }
    };
    if let Some(dev) = &args.live {
        return live::run(dev, &ports, &mut esp, args.count, view, svg.as_ref());
    }
    let Some(path) = &args.pcap else {
        let explanation = if args.encrypted {
            example::encrypted_example(
                args.port.unwrap_or(vxnet_encap::esp::DEFAULT_ESP_PORT),
                &args.example,
            )?
        } else {
            example::worked_example(
                args.port.unwrap_or(vxnet_encap::DEFAULT_PORT),
                &args.example,
            )?
        };
        if let (Some(target), Some(packet)) = (&svg, explanation.packets.first()) {
            target.write(packet)?;
        }
        let output = match view {
            output::View::Json => json::to_string(&explanation),
            output::View::Brief => {
                let lines: String = explanation.packets.iter().map(render::brief_line).collect();
                format!("{}{lines}", output::BRIEF_HEADER)
            }
            output::View::Full { colour, width } => {
                render::render_example(&explanation, colour, width)
            }
        };
        return write_stdout(output.as_bytes());
    };
    explain_capture(path, &ports, &mut esp, view, svg.as_ref(), args.frame)
}

/// Streams the capture at `path` through `view`, drawing the chosen packet into `svg`.
fn explain_capture(
    path: &std::path::Path,
    ports: &[u16],
    esp: &mut esp::EspContext,
    view: output::View,
    svg: Option<&svg::SvgTarget>,
    frame: Option<usize>,
) -> Result<(), ExplainError> {
    let name = path.display().to_string();
    let vxlan_ports = decode::port_list(ports);
    let esp_ports = decode::port_list(&esp.ports);
    let keys = esp.keys.as_ref().map(|k| k.path.clone());
    let mut output = output::PacketOutput::new(
        view,
        render::CaptureSource {
            path: &name,
            vxlan_ports: &vxlan_ports,
            esp_ports: &esp_ports,
            keys: keys.as_deref(),
        },
    );
    let mut drawn = false;
    let run = pcap::stream_file(path, ports, esp, &mut |packet| {
        if let Some(target) = svg.filter(|_| !drawn && frame.is_none_or(|f| f == packet.frame)) {
            target.write(&packet)?;
            drawn = true;
        }
        output.packet(&packet)
    })?;
    if run.explained == 0 {
        return Err(no_vxlan(&run, &name, ports, &esp.ports, view));
    }
    if let (Some(target), false) = (svg, drawn) {
        return Err(ExplainError::NoSuchFrame {
            frame: frame.unwrap_or(1),
            path: name,
            svg: target.path(),
        });
    }
    let source = model::Source::Capture {
        path: name.clone(),
        format: run.format,
        total_packets: run.total,
        vxlan_ports: ports.to_vec(),
        esp_ports: esp.ports.clone(),
        keys: keys.clone(),
    };
    let overhead = if run.encrypted > 0 {
        model::Overhead::encrypted()
    } else {
        model::Overhead::standard()
    };
    output.finish(&run, source, &overhead)
}

/// Columns the text view may use: `COLUMNS`, else the terminal's width, else 100.
fn terminal_width() -> usize {
    let from_env = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok());
    from_env
        .or_else(vxnet_dataplane::sys::term::stdout_columns)
        .filter(|&w: &usize| w >= 20)
        .unwrap_or(100)
}

/// The error for a capture without VXLAN, with the skip reasons counted. With `--json` the
/// counts also go to stdout as one document, for scripts (the `error:` line still goes to stderr).
fn no_vxlan(
    run: &pcap::CaptureRun,
    path: &str,
    ports: &[u16],
    esp_ports: &[u16],
    view: output::View,
) -> ExplainError {
    let mut why = String::new();
    let by_reason = run.skipped.by_reason();
    if !by_reason.is_empty() {
        why = format!(": {}", model::reasons_line(&by_reason, 6));
    }
    if let Some(truncated) = &run.truncated {
        why.push_str(&format!("; {truncated}"));
    }
    let error = ExplainError::NoVxlan {
        path: path.to_owned(),
        ports: format!(
            "{}; ESP-in-UDP {}",
            decode::port_list(ports),
            decode::port_list(esp_ports)
        ),
        total: run.total,
        why,
    };
    if matches!(view, output::View::Json) {
        let doc = serde_json::json!({
            "error": error.to_string(),
            "source": {"kind": "capture", "path": path, "format": run.format, "total_packets": run.total},
            "skipped_by_reason": by_reason,
            "skipped": run.skipped.listed,
            "truncated": run.truncated,
        });
        // The error line is what matters; a closed stdout must not hide it.
        let _ = write_stdout(json::to_string(&doc).as_bytes());
    }
    error
}

fn use_colour(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        // https://no-color.org: any non-empty value disables colour.
        ColorChoice::Auto => {
            std::io::stdout().is_terminal()
                && !matches!(std::env::var_os("NO_COLOR"), Some(v) if !v.is_empty())
        }
    }
}

/// `vxnet explain | head` closes the pipe early; that is the reader's choice, not an error.
fn write_stdout(bytes: &[u8]) -> Result<(), ExplainError> {
    write_stdout_while_read(bytes).map(|_| ())
}

/// [`write_stdout`], saying whether anyone still reads it (`false` after a broken pipe).
fn write_stdout_while_read(bytes: &[u8]) -> Result<bool, ExplainError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(ExplainError::Output(e)),
    }
}
