//! `vxnet explain`: the teaching view of the VXLAN double wrap.
//!
//! Everything shown is decoded from real bytes by the `vxnet-encap` code the data plane uses: the
//! worked example is built with [`vxnet_encap::encapsulate`] and then read back with
//! [`vxnet_encap::decapsulate_ethernet`], so the explanation cannot drift from the implementation.

mod decode;
mod example;
mod json;
mod model;
mod pcap;
mod render;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// Explain every VXLAN packet in this capture (pcap or pcapng, as tcpdump or tshark write them)
    /// instead of the worked example.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Print one JSON document with the same data instead of the text view.
    #[arg(long)]
    pub json: bool,
    /// UDP destination port to treat as VXLAN, besides 4789 (IANA) and 8472 (Linux's default).
    /// Without --pcap it is the port the worked example uses.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
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
    #[error("{path}: no VXLAN packets (UDP ports {ports}) among its {total} packets")]
    NoVxlan {
        path: String,
        ports: String,
        total: usize,
    },
    #[error("cannot build the worked example: {0}")]
    Example(String),
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
}

pub fn run(args: ExplainArgs) -> Result<(), ExplainError> {
    let explanation = match &args.pcap {
        Some(path) => {
            let mut ports = vec![vxnet_encap::DEFAULT_PORT, vxnet_encap::LINUX_LEGACY_PORT];
            ports.extend(args.port.filter(|p| !ports.contains(p)));
            pcap::explain_file(path, &ports)?
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
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(ExplainError::Output(e)),
        _ => Ok(()),
    }
}
