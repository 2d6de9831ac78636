//! `vxnet name add|rm|ls`: the names a running engine's DNS service answers in each network
//! (static hosts; in cluster mode the endpoint records add theirs on their own).

use std::fmt::Write as _;
use std::net::IpAddr;

use clap::{Args, Subcommand};
use vxnet_dataplane::control::client::request;
use vxnet_dataplane::control::proto::{NameReport, Request};

use crate::show::{ControlArgs, ShowError};

#[derive(Debug, Args)]
pub struct NameArgs {
    #[command(subcommand)]
    pub cmd: NameCmd,
    #[command(flatten)]
    pub control: ControlArgs,
}

#[derive(Debug, Subcommand)]
pub enum NameCmd {
    /// Give addresses of a network a name (and aliases), answered by the network's DNS service
    /// on the host's gateway address; with --mac, ARP/ND for them is answered by the engine.
    Add {
        /// The network (as `vxnet networks` lists it).
        #[arg(long)]
        network: String,
        /// One DNS label: letters, digits, '-', '_'.
        name: String,
        /// An address of the network; repeat for several (IPv4 and IPv6).
        #[arg(long = "address", required = true, value_name = "IP")]
        addresses: Vec<IpAddr>,
        /// Another name for the same addresses; repeat for several.
        #[arg(long = "alias", value_name = "NAME")]
        aliases: Vec<String>,
        /// The MAC holding the addresses.
        #[arg(long)]
        mac: Option<String>,
    },
    /// Remove a name added with `vxnet name add`.
    Rm {
        #[arg(long)]
        network: String,
        name: String,
    },
    /// Every name the engine answers, by network, with its source (host, config, added,
    /// endpoint), and the DNS service's counters.
    Ls {
        /// Only this network.
        #[arg(long)]
        network: Option<String>,
    },
}

pub fn run(args: NameArgs) -> Result<(), ShowError> {
    let req = match args.cmd {
        NameCmd::Add {
            network,
            name,
            addresses,
            aliases,
            mac,
        } => Request::NameAdd {
            network,
            name,
            aliases,
            addresses,
            mac,
        },
        NameCmd::Rm { network, name } => Request::NameRm { network, name },
        NameCmd::Ls { network } => {
            let value = request(&args.control.control, &Request::NameLs { network })?;
            if args.control.json {
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", render(&serde_json::from_value(value)?));
            }
            return Ok(());
        }
    };
    request(&args.control.control, &req)?;
    crate::show::changed(&args.control);
    Ok(())
}

/// One line per name: network, name, addresses, aliases, MAC, source; then the counters.
pub fn render(report: &NameReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<20} {:<8} {:<32} {:<18} ALIASES",
        "NETWORK", "NAME", "SOURCE", "ADDRESSES", "MAC"
    );
    for row in &report.names {
        let addresses: Vec<String> = row.entry.addresses.iter().map(IpAddr::to_string).collect();
        let source = serde_json::to_value(row.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mac = row
            .entry
            .mac
            .map(|m| m.to_string())
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<12} {:<20} {:<8} {:<32} {:<18} {}",
            row.network,
            row.entry.name,
            source,
            addresses.join(","),
            mac,
            row.entry.aliases.join(",")
        );
    }
    let counters: Vec<String> = report
        .counters
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        out,
        "dns: {}",
        if counters.is_empty() {
            "no queries yet".to_string()
        } else {
            counters.join("  ")
        }
    );
    out
}
