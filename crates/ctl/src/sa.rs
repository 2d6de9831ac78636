//! `vxnet sa show`: the security associations of a running engine's encrypted networks, laid out
//! like `ip xfrm state`. `--keys` adds the key material (RFC 4106: AES-256 key and salt), which
//! is what Wireshark's ESP SA table needs to decrypt a capture; without it no key is shown.

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use vxnet_dataplane::control::client::request;
use vxnet_dataplane::control::proto::{Request, SaRow};

use crate::show::{ControlArgs, ShowError};

#[derive(Debug, Args)]
pub struct SaArgs {
    #[command(subcommand)]
    pub cmd: SaCmd,
    #[command(flatten)]
    pub control: ControlArgs,
}

#[derive(Debug, Subcommand)]
pub enum SaCmd {
    /// List SAs: SPI, source and destination VTEP, direction, algorithm, sequence numbers,
    /// replay window, packets. In `--json` each SA has `spi`, `src`, `dst`, `direction`, `seq`,
    /// `replay_window`, and with `--keys` `key`.
    Show {
        /// Include each SA's key material (hex, AES-256 key then 4-byte salt), e.g. for
        /// Wireshark's ESP SA table. Anyone who sees it can decrypt and forge that SA's traffic.
        #[arg(long)]
        keys: bool,
    },
}

pub fn run(args: SaArgs) -> Result<(), ShowError> {
    let SaCmd::Show { keys } = args.cmd;
    let value = request(&args.control.control, &Request::SaShow { keys })?;
    if args.control.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let rows: Vec<SaRow> = serde_json::from_value(value)?;
    print!("{}", render(&rows));
    Ok(())
}

/// `ip xfrm state` style, one block per SA.
pub fn render(rows: &[SaRow]) -> String {
    let mut out = String::new();
    for r in rows {
        let endpoint = r
            .endpoint
            .map(|e| format!(" endpoint {e}"))
            .unwrap_or_default();
        let _ = writeln!(out, "src {} dst {}{endpoint}", r.src, r.dst);
        let worker = r.worker.map(|w| format!(" worker {w}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "\tproto esp spi {} dir {} network {} vni {} epoch {}{worker}",
            r.spi, r.direction, r.network, r.vni, r.epoch
        );
        match &r.key {
            Some(key) => {
                let _ = writeln!(out, "\taead {} {key} 128", r.algorithm);
            }
            None => {
                let _ = writeln!(out, "\taead {} (key: --keys) 128", r.algorithm);
            }
        }
        let seq = if r.direction == "out" {
            "next"
        } else {
            "highest"
        };
        let _ = write!(
            out,
            "\tesn {seq} seq {:#x}  packets {} bytes {}",
            r.seq, r.packets, r.bytes
        );
        if r.replay_window > 0 {
            let _ = write!(out, "  replay-window {}", r.replay_window);
        }
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("no SAs (no encrypted network, or no traffic yet)\n");
    }
    out
}
