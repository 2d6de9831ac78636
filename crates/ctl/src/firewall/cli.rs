//! `vxnet firewall apply|remove|list`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::{
    apply_plan, choose_backend, list, remove_plan, Backend, Error, Probe, Result, DEFAULT_PORT,
};
use vxnet_cluster::{node, state::StateDir, state::DEFAULT_STATE_DIR};

#[derive(Debug, Args)]
pub struct FirewallArgs {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Open the VXLAN port to the cluster members (or --peer addresses) only.
    Apply(Opts),
    /// Close it again.
    Remove(Opts),
    /// Show the addresses the port is open to.
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
    /// Peer address; repeatable. Without it the cluster members' addresses are used.
    #[arg(long = "peer")]
    pub peers: Vec<IpAddr>,
    /// One JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// Node state directory, for the cluster store and its members.
    #[arg(long, env = "VXNET_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    backend: Backend,
    port: u16,
    peers: &'a [IpAddr],
    dry_run: bool,
    commands: Vec<String>,
}

/// The member addresses: `--peer` if given, else every cluster member with a known VTEP (from the
/// store, or the cached view when the store is down).
fn peers(opts: &Opts) -> Result<Vec<IpAddr>> {
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
        status.view.members.iter().filter_map(|m| m.vtep).collect()
    };
    peers.sort();
    peers.dedup();
    if peers.is_empty() {
        return Err(Error::NoPeers);
    }
    Ok(peers)
}

pub fn run(args: FirewallArgs) -> Result<()> {
    let (opts, kind) = match &args.action {
        Action::Apply(o) => (o, "apply"),
        Action::Remove(o) => (o, "remove"),
        Action::List(o) => (o, "list"),
    };
    let backend = choose_backend(Probe::detect(), opts.backend)?;
    // What is open now; during a dry run on a host without the tool, assume nothing is.
    let current = match list(backend, opts.port) {
        Ok(c) => c,
        Err(_) if opts.dry_run => Vec::new(),
        Err(e) if kind != "list" && backend == Backend::Nftables => {
            tracing::debug!(error = %e, "cannot read current nftables state");
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let (shown, cmds) = match kind {
        "apply" => {
            let p = peers(opts)?;
            let cmds = apply_plan(backend, opts.port, &p, &current);
            (p, cmds)
        }
        "remove" => (Vec::new(), remove_plan(backend, opts.port, &current)),
        _ => (current, Vec::new()),
    };
    if !opts.dry_run {
        for c in &cmds {
            c.run()?;
        }
    }
    if opts.json {
        let report = Report {
            backend,
            port: opts.port,
            peers: &shown,
            dry_run: opts.dry_run,
            commands: cmds.iter().map(ToString::to_string).collect(),
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
        println!("backend {backend}, udp port {}:", opts.port);
        for p in &shown {
            println!("{p}");
        }
    } else if kind == "apply" {
        let list: Vec<String> = shown.iter().map(ToString::to_string).collect();
        println!(
            "{backend}: udp port {} open to {}",
            opts.port,
            list.join(", ")
        );
    } else {
        println!("{backend}: vxnet rules for udp port {} removed", opts.port);
    }
    Ok(())
}
