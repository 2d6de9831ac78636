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
mod pcap;
mod render;

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
    let mut esp = esp::EspContext::new(esp_ports, keys);
    if let Some(dev) = &args.live {
        let colour = use_colour(args.color);
        return live::run(dev, &ports, &mut esp, args.count, args.json, colour);
    }
    let explanation = match &args.pcap {
        Some(path) => {
            let explanation = pcap::explain_file(path, &ports, &mut esp)?;
            if explanation.packets.is_empty() {
                return Err(no_vxlan(&explanation, path, &ports, &esp.ports, args.json));
            }
            explanation
        }
        None if args.encrypted => {
            example::encrypted_example(args.port.unwrap_or(vxnet_encap::esp::DEFAULT_ESP_PORT))?
        }
        None => example::worked_example(args.port.unwrap_or(vxnet_encap::DEFAULT_PORT))?,
    };
    let output = if args.json {
        json::to_string(&explanation)
    } else {
        render::render(&explanation, use_colour(args.color))
    };
    write_stdout(output.as_bytes())
}

/// The error for a capture without VXLAN, with the skip reasons counted. With `--json` the
/// counts also go to stdout as one document, for scripts (the `error:` line still goes to stderr).
fn no_vxlan(
    explanation: &model::Explanation,
    path: &std::path::Path,
    ports: &[u16],
    esp_ports: &[u16],
    json: bool,
) -> ExplainError {
    let total = explanation.skipped.len();
    let mut why = String::new();
    if !explanation.skipped_by_reason.is_empty() {
        why = format!(
            ": {}",
            model::reasons_line(&explanation.skipped_by_reason, 6)
        );
    }
    if let Some(truncated) = &explanation.truncated {
        why.push_str(&format!("; {truncated}"));
    }
    let error = ExplainError::NoVxlan {
        path: path.display().to_string(),
        ports: format!(
            "{}; ESP-in-UDP {}",
            decode::port_list(ports),
            decode::port_list(esp_ports)
        ),
        total,
        why,
    };
    if json {
        let doc = serde_json::json!({
            "error": error.to_string(),
            "source": explanation.source,
            "skipped_by_reason": explanation.skipped_by_reason,
            "skipped": explanation.skipped,
            "truncated": explanation.truncated,
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
