//! Client subcommands of a running engine: `fdb`, `peers`, `stats`, `networks`. Human output is
//! modelled on `bridge fdb show` and `ip -s link`; `--json` prints the engine's reply as is.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use vxnet_dataplane::config::DEFAULT_CONTROL_PATH;
use vxnet_dataplane::control::client::{request, ClientError};
use vxnet_dataplane::control::proto::{FdbTable, NetworkInfo, PeerRow, Request, StatsReport};
use vxnet_dataplane::counters::DropReason;
use vxnet_dataplane::fdb::EntryKind;
use vxnet_encap::MacAddr;

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// Control socket of the engine.
    #[arg(long, default_value = DEFAULT_CONTROL_PATH, global = true)]
    pub control: PathBuf,
    /// One JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FdbArgs {
    #[command(subcommand)]
    pub cmd: FdbCmd,
    #[command(flatten)]
    pub control: ControlArgs,
}

#[derive(Debug, Subcommand)]
pub enum FdbCmd {
    /// List entries: MAC, VNI, destination VTEP, static/learned, age.
    Show {
        /// Only this network's entries [default: every network's].
        #[arg(long)]
        vni: Option<u32>,
    },
    /// Add a static entry, as `bridge fdb add`: refused if the MAC has an entry (fdb replace
    /// changes one). 00:00:00:00:00:00 is the flood (head-end replication) entry: add gives it
    /// its first destination, fdb append the others.
    Add {
        /// The inner MAC address.
        mac: MacAddr,
        /// The remote VTEP it lives behind.
        #[arg(long)]
        dst: IpAddr,
        /// The network [default: the engine's only one].
        #[arg(long)]
        vni: Option<u32>,
    },
    /// Add a destination to the flood entry 00:00:00:00:00:00, as `bridge fdb append`.
    Append {
        /// 00:00:00:00:00:00 (the flood entry is the one with several destinations).
        mac: MacAddr,
        /// The remote VTEP to flood to as well.
        #[arg(long)]
        dst: IpAddr,
        /// The network [default: the engine's only one].
        #[arg(long)]
        vni: Option<u32>,
    },
    /// Make MAC a static entry to --dst, whatever it had, as `bridge fdb replace`.
    Replace {
        /// The inner MAC address.
        mac: MacAddr,
        /// The remote VTEP it lives behind.
        #[arg(long)]
        dst: IpAddr,
        /// The network [default: the engine's only one].
        #[arg(long)]
        vni: Option<u32>,
    },
    /// Delete an entry; with --dst only that destination (for 00:00:00:00:00:00, one flood
    /// destination; without --dst, all that fdb add/append added).
    Del {
        /// The inner MAC address.
        mac: MacAddr,
        /// Remove only this destination (an error if the entry has no such destination).
        #[arg(long)]
        dst: Option<IpAddr>,
        /// The network [default: the engine's only one].
        #[arg(long)]
        vni: Option<u32>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("unexpected reply from the engine: {0}")]
    Decode(#[from] serde_json::Error),
}

fn ask<T: serde::de::DeserializeOwned>(
    control: &ControlArgs,
    req: &Request,
) -> Result<(serde_json::Value, T), ShowError> {
    let value = request(&control.control, req)?;
    let typed = serde_json::from_value(value.clone())?;
    Ok((value, typed))
}

fn print_json(value: &serde_json::Value) -> Result<(), ShowError> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// After a change the engine made (it answers with no data): with `--json`, the one JSON
/// document `--json` promises, an empty object; without, nothing, as `bridge fdb add` says nothing.
pub fn changed(control: &ControlArgs) {
    if control.json {
        println!("{{}}");
    }
}

pub fn fdb(args: FdbArgs) -> Result<(), ShowError> {
    let control = &args.control;
    let change = match args.cmd {
        FdbCmd::Show { vni } => {
            let (value, tables): (_, Vec<FdbTable>) = ask(control, &Request::FdbShow { vni })?;
            if control.json {
                return print_json(&value);
            }
            print!("{}", render_fdb(&tables));
            return Ok(());
        }
        FdbCmd::Add { mac, dst, vni } => Request::FdbAdd {
            mac: mac.to_string(),
            dst,
            vni,
        },
        FdbCmd::Append { mac, dst, vni } => Request::FdbAppend {
            mac: mac.to_string(),
            dst,
            vni,
        },
        FdbCmd::Replace { mac, dst, vni } => Request::FdbReplace {
            mac: mac.to_string(),
            dst,
            vni,
        },
        FdbCmd::Del { mac, dst, vni } => Request::FdbDel {
            mac: mac.to_string(),
            dst,
            vni,
        },
    };
    request(&control.control, &change)?;
    changed(control);
    Ok(())
}

/// `bridge fdb show` style: `MAC dev DEV dst IP vni N [self permanent|age S]`.
pub fn render_fdb(tables: &[FdbTable]) -> String {
    let mut out = String::new();
    for table in tables {
        for ip in &table.flood {
            let _ = writeln!(
                out,
                "00:00:00:00:00:00 dev {} dst {ip} vni {} self permanent",
                table.dev, table.vni
            );
        }
        for e in &table.entries {
            let state = match (e.kind, e.age_secs) {
                (EntryKind::Static, _) => "self permanent".to_string(),
                (EntryKind::Learned, Some(age)) => format!("self age {age}s"),
                (EntryKind::Learned, None) => "self".to_string(),
            };
            let _ = writeln!(
                out,
                "{} dev {} dst {} vni {} {state}",
                e.mac, table.dev, e.dst, table.vni
            );
        }
    }
    out
}

/// What every byte counter counts (the metrics' help says the same).
const BYTES_DEFINITION: &str =
    "(frames and bytes: inner Ethernet frames, without the outer IP/UDP, VXLAN or ESP headers)";

pub fn peers(control: ControlArgs) -> Result<(), ShowError> {
    let (value, rows): (_, Vec<PeerRow>) = ask(&control, &Request::Peers)?;
    if control.json {
        return print_json(&value);
    }
    println!("{BYTES_DEFINITION}");
    println!(
        "{:<40} {:>12} {:>14} {:>12} {:>14}  vnis",
        "peer", "rx_frames", "rx_bytes", "tx_frames", "tx_bytes"
    );
    for r in rows {
        let vnis: Vec<String> = r.vnis.iter().map(u32::to_string).collect();
        println!(
            "{:<40} {:>12} {:>14} {:>12} {:>14}  {}",
            r.address.to_string(),
            r.traffic.rx_packets,
            r.traffic.rx_bytes,
            r.traffic.tx_packets,
            r.traffic.tx_bytes,
            vnis.join(",")
        );
    }
    Ok(())
}

pub fn stats(control: ControlArgs) -> Result<(), ShowError> {
    let (value, report): (_, StatsReport) = ask(&control, &Request::Stats)?;
    if control.json {
        return print_json(&value);
    }
    print!("{}", render_stats(&report));
    Ok(())
}

/// `ip -s link` style: a block per network, then engine-wide drops.
pub fn render_stats(report: &StatsReport) -> String {
    let mut out = String::new();
    let offloads = if report.offloads.is_empty() {
        "none".to_string()
    } else {
        let names: Vec<&str> = report.offloads.iter().map(|o| o.name()).collect();
        names.join(" ")
    };
    let _ = writeln!(out, "workers {}  offloads {offloads}", report.workers);
    if report.worker_restarts > 0 {
        let _ = writeln!(
            out,
            "worker restarts {} (a worker was gone: see the engine's log)",
            report.worker_restarts
        );
    }
    if !report.tx_path.is_empty() {
        let _ = writeln!(out, "tx path {}", report.tx_path);
    }
    if let Some(t) = &report.tunnel_gso {
        let _ = writeln!(
            out,
            "tunnel gso{}: {} superframes -> {} segments, {} bytes; {} by the socket path, {} refused, {} path changes, {} redirects restored; {}",
            if t.active { "" } else { " (off: refused by the kernel)" },
            t.superframes,
            t.segments,
            t.bytes,
            t.fallbacks,
            t.refused,
            t.path_changes,
            t.redirects_restored,
            if t.devices.is_empty() { "no underlay TAP".to_string() } else { t.devices.join(" ") }
        );
    }
    if let Some(p) = &report.source_ports {
        let _ = writeln!(
            out,
            "source ports {}: {} sockets open (at most {}), {} bound, {} evicted, {} closed idle, {} busy elsewhere",
            p.info.range,
            p.counters.open,
            p.info.max_open,
            p.counters.bound,
            p.counters.evicted,
            p.counters.idle_closed,
            p.counters.port_busy
        );
    }
    if !report.networks.is_empty() {
        let _ = writeln!(out, "{BYTES_DEFINITION}");
    }
    for n in &report.networks {
        let _ = writeln!(out, "{}: vni {} dev {}", n.name, n.vni, n.dev);
        let _ = writeln!(out, "    RX:  bytes  frames");
        let _ = writeln!(
            out,
            "    {:>12} {:>7}",
            n.traffic.rx_bytes, n.traffic.rx_packets
        );
        let _ = writeln!(out, "    TX:  bytes  frames");
        let _ = writeln!(
            out,
            "    {:>12} {:>7}",
            n.traffic.tx_bytes, n.traffic.tx_packets
        );
        let _ = writeln!(
            out,
            "    fdb {} entries  learned {}  moved {}  flooded {}  fdb_full {}",
            n.fdb_entries, n.learned, n.moved, n.flooded, n.fdb_full
        );
        let _ = writeln!(
            out,
            "    offload: tso {} superframes -> {} segments  uso {} -> {}  gso {} sends  gro {} reads  coalesced {} superframes <- {} segments  udp coalesced {} <- {} datagrams  tunnel superframes {} <- {} segments  partial checksums completed {}",
            n.tso_superframes,
            n.tso_segments,
            n.uso_superframes,
            n.uso_segments,
            n.gso_batches,
            n.gro_batches,
            n.coalesced_superframes,
            n.coalesced_segments,
            n.udp_coalesced_superframes,
            n.udp_coalesced_datagrams,
            n.tunnel_superframes,
            n.tunnel_segments,
            n.partial_checksums
        );
        if n.neighbor_entries > 0 || n.neighbor_answered + n.neighbor_flooded > 0 {
            let _ = writeln!(
                out,
                "    neighbors: {} known  ARP/ND answered {}  flooded {}  spoofed replies dropped {}",
                n.neighbor_entries, n.neighbor_answered, n.neighbor_flooded, n.neighbor_spoofed
            );
        }
        if n.tap_refused_short_tail + n.tap_refused_gso > 0 {
            let _ = writeln!(
                out,
                "    tap refused superframes (written segment by segment): short tail {}  equal segments {}",
                n.tap_refused_short_tail, n.tap_refused_gso
            );
        }
        if n.too_big_replies > 0 {
            let _ = writeln!(
                out,
                "    path MTU: {} ICMP too-big replies into the TAP",
                n.too_big_replies
            );
        }
        if let Some(esp) = &n.esp {
            let epochs: Vec<String> = esp.epochs.iter().map(u32::to_string).collect();
            let _ = writeln!(
                out,
                "    esp: encrypted {}  decrypted {}  sas in {} out {}  established {}  endpoint changes {}  key epochs {} (send {})",
                esp.encrypted,
                esp.decrypted,
                esp.inbound_sas,
                esp.outbound_sas,
                esp.sas_established,
                esp.endpoint_changes,
                epochs.join(","),
                esp.send_epoch
            );
        }
        let _ = writeln!(out, "    drops: {}", nonzero(&n.drops));
        if n.tap_queue_drops > 0 {
            let _ = writeln!(
                out,
                "    TAP queue full: {} frames dropped by the kernel before vxnet read them",
                n.tap_queue_drops
            );
        }
    }
    let _ = writeln!(out, "engine drops: {}", nonzero(&report.drops));
    out
}

/// `reason count` pairs of the non-zero drop counters, or `none`.
fn nonzero(drops: &std::collections::BTreeMap<DropReason, u64>) -> String {
    let shown: Vec<String> = drops
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if shown.is_empty() {
        "none".into()
    } else {
        shown.join("  ")
    }
}

pub fn networks(control: ControlArgs) -> Result<(), ShowError> {
    let (value, nets): (_, Vec<NetworkInfo>) = ask(&control, &Request::Networks)?;
    if control.json {
        return print_json(&value);
    }
    for n in nets {
        let flood: Vec<String> = n.flood.iter().map(IpAddr::to_string).collect();
        let encryption = match (n.encrypted, n.esp_port) {
            (true, Some(port)) => format!("encrypted (esp udp/{port})"),
            (true, None) => "encrypted".to_string(),
            (false, _) => "plain".to_string(),
        };
        println!(
            "{}: vni {} dev {} mtu {} address {} local {}:{} {encryption} learning {} peers {}",
            n.name,
            n.vni,
            n.dev,
            n.mtu,
            n.address.as_deref().unwrap_or("-"),
            n.local,
            n.port,
            if n.learning { "on" } else { "off" },
            if flood.is_empty() {
                "-".into()
            } else {
                flood.join(",")
            }
        );
    }
    Ok(())
}
