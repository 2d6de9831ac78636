//! `vxnet firewall apply|remove|list`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::{
    apply_plan, bypass, choose_backend, list, remove_plan, Backend, Error, Open, Probe, Result,
    DEFAULT_ESP_PORT, DEFAULT_PORT,
};
use vxnet_cluster::{node, state::StateDir, state::DEFAULT_STATE_DIR};

#[derive(Debug, Args)]
pub struct FirewallArgs {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Open the VXLAN port (and the ESP port, when a network is encrypted) to the cluster members
    /// (or --peer addresses) only.
    Apply(Opts),
    /// Close them again.
    Remove(Opts),
    /// Show the ports open and the addresses they are open to.
    List(Opts),
}

#[derive(Debug, Args)]
pub struct Opts {
    /// The firewall to program [default: firewalld or ufw when active, else nftables].
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Print the exact commands/ruleset instead of running them.
    #[arg(long)]
    pub dry_run: bool,
    /// The VXLAN UDP port to open.
    #[arg(long, default_value_t = DEFAULT_PORT, value_parser = vxnet_dataplane::config::parse_port)]
    pub port: u16,
    /// The ESP-in-UDP port of encrypted networks, opened too when the cluster (or --config) has
    /// an encrypted network, or with --encrypted [default: 4500, or the --config file's
    /// `esp_port`].
    #[arg(long, value_name = "PORT")]
    pub esp_port: Option<u16>,
    /// Open the ESP port as well (static peers without --config).
    #[arg(long)]
    pub encrypted: bool,
    /// Static mode: the engine's configuration file; its encrypted networks (`key_file`) open
    /// the ESP port, its `esp_port` is the one opened.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Peer address; repeatable. Without it the cluster members' addresses are used.
    #[arg(long = "peer")]
    pub peers: Vec<IpAddr>,
    /// One JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// Control socket of the local engine, asked whether it sends by the tunnel-GSO path
    /// (whose packets skip the output and postrouting hooks: apply and list then say so).
    #[arg(long, default_value = vxnet_dataplane::config::DEFAULT_CONTROL_PATH)]
    pub control: PathBuf,
    /// Node state directory, for the cluster store and its members.
    #[arg(long, env = "VXNET_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    backend: Backend,
    /// The VXLAN port.
    port: u16,
    /// The ESP port, when it is (to be) open.
    #[serde(skip_serializing_if = "Option::is_none")]
    esp_port: Option<u16>,
    /// Every port with the addresses it is open to.
    open: &'a [Open],
    peers: &'a [IpAddr],
    dry_run: bool,
    commands: Vec<String>,
    /// Said when the local engine's tunnel-GSO path passes by output/postrouting chains.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// What to open: the peers, and whether an encrypted network needs the ESP port.
struct Wanted {
    peers: Vec<IpAddr>,
    encrypted: bool,
}

/// The peers: `--peer` if given, else every cluster member with a known VTEP (from the store,
/// or the cached view when the store is down). Encrypted: `--encrypted`, a `key_file` network in
/// `--config`, or an encrypted network in the cluster.
fn wanted(opts: &Opts, file_encrypted: bool) -> Result<Wanted> {
    let mut encrypted = opts.encrypted || file_encrypted;
    let mut peers = if !opts.peers.is_empty() {
        opts.peers.clone()
    } else {
        let dir = StateDir::new(&opts.state_dir);
        if dir.load().map_err(Error::Cluster)?.is_none() {
            return Err(Error::NoPeers);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Spawn {
                cmd: "tokio runtime".into(),
                source,
            })?;
        let status = rt.block_on(node::status(&dir))?;
        encrypted |= status.view.networks.iter().any(|n| n.encrypted);
        status.view.members.iter().filter_map(|m| m.vtep).collect()
    };
    peers.sort();
    peers.dedup();
    if peers.is_empty() {
        return Err(Error::NoPeers);
    }
    Ok(Wanted { peers, encrypted })
}

/// From `--config`: whether a network is encrypted, and the file's `esp_port`.
fn from_config(opts: &Opts) -> Result<(bool, Option<u16>)> {
    let Some(path) = &opts.config else {
        return Ok((false, None));
    };
    let file = vxnet_dataplane::config::load_file(path).map_err(|e| Error::Parse {
        what: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let encrypted = file.networks.iter().any(|n| n.encryption.is_some());
    Ok((encrypted, file.esp_port))
}

pub fn run(args: FirewallArgs) -> Result<()> {
    let (opts, kind) = match &args.action {
        Action::Apply(o) => (o, "apply"),
        Action::Remove(o) => (o, "remove"),
        Action::List(o) => (o, "list"),
    };
    let (file_encrypted, file_esp_port) = from_config(opts)?;
    let esp_port = opts.esp_port.or(file_esp_port).unwrap_or(DEFAULT_ESP_PORT);
    let backend = choose_backend(Probe::detect(), opts.backend)?;
    let mut known = vec![opts.port, esp_port];
    known.dedup();
    // What is open now; during a dry run on a host without the tool, assume nothing is.
    let current = match list(backend, &known) {
        Ok(c) => c,
        Err(_) if opts.dry_run => Vec::new(),
        Err(e) if kind != "list" && backend == Backend::Nftables => {
            tracing::debug!(error = %e, "cannot read current nftables state");
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let (open, cmds) = match kind {
        "apply" => {
            let w = wanted(opts, file_encrypted)?;
            let mut ports = vec![opts.port];
            if w.encrypted && esp_port != opts.port {
                ports.push(esp_port);
            }
            let cmds = apply_plan(backend, &ports, &w.peers, &current);
            let open: Vec<Open> = ports
                .iter()
                .map(|&port| Open {
                    port,
                    peers: w.peers.clone(),
                })
                .collect();
            (open, cmds)
        }
        "remove" => (Vec::new(), remove_plan(backend, &current)),
        _ => (current, Vec::new()),
    };
    if !opts.dry_run {
        for c in &cmds {
            c.run()?;
        }
    }
    let note = match kind {
        "remove" => None,
        _ => bypass::tunnel_devices(&opts.control)
            .and_then(|devices| bypass::note(&devices, bypass::outbound_chains().as_deref())),
    };
    let mut peers: Vec<IpAddr> = open.iter().flat_map(|o| o.peers.clone()).collect();
    peers.sort();
    peers.dedup();
    let esp_open = open
        .iter()
        .any(|o| o.port == esp_port && o.port != opts.port);
    let role = |port: u16| {
        if port == opts.port {
            "VXLAN"
        } else if port == esp_port {
            "ESP"
        } else {
            "other"
        }
    };
    if opts.json {
        let report = Report {
            backend,
            port: opts.port,
            esp_port: esp_open.then_some(esp_port),
            open: &open,
            peers: &peers,
            dry_run: opts.dry_run,
            commands: cmds.iter().map(ToString::to_string).collect(),
            note: note.clone(),
        };
        let text = serde_json::to_string_pretty(&report).map_err(|e| Error::Parse {
            what: "report".into(),
            detail: e.to_string(),
        })?;
        println!("{text}");
    } else if opts.dry_run {
        for c in &cmds {
            println!("{c}");
        }
    } else if kind == "list" {
        println!("backend {backend}:");
        if open.is_empty() {
            println!("no vxnet rules");
        }
        for o in &open {
            let list: Vec<String> = o.peers.iter().map(ToString::to_string).collect();
            println!(
                "udp port {} ({}) open to {}",
                o.port,
                role(o.port),
                list.join(", ")
            );
        }
    } else if kind == "apply" {
        for o in &open {
            let list: Vec<String> = o.peers.iter().map(ToString::to_string).collect();
            println!(
                "{backend}: udp port {} ({}) open to {}",
                o.port,
                role(o.port),
                list.join(", ")
            );
        }
    } else {
        println!("{backend}: vxnet rules removed");
    }
    if let Some(note) = note {
        eprintln!("{note}");
    }
    Ok(())
}
