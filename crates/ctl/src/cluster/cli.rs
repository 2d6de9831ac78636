//! `vxnet cluster …` and `vxnet network …`: argument structs and handlers.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

pub use super::network_cli::{run_network, NetworkArgs, NetworkCmd};
use vxnet_cluster::access::{parse_store, AccessOptions};
use vxnet_cluster::state::{StateDir, DEFAULT_STATE_DIR};
use vxnet_cluster::token::Role;
use vxnet_cluster::{node, removal, ClaimKind, ClusterView, Error, Membership, Result, Store};

#[derive(Debug, Args)]
pub struct StateDirArg {
    /// Node state directory (node id, cluster, token).
    #[arg(long, global = true, env = "VXNET_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

/// How to reach a secured store (etcd with TLS and/or authentication). Given once, kept in
/// --state-dir (mode 0600).
#[derive(Debug, Clone, Default, Args)]
pub struct StoreAccessArgs {
    /// CA certificate (PEM) of etcd's server certificate; needed with an https:// store.
    #[arg(long, value_name = "FILE")]
    pub store_ca: Option<PathBuf>,
    /// Client certificate (PEM), for an etcd started with --client-cert-auth.
    #[arg(long, value_name = "FILE", requires = "store_key")]
    pub store_cert: Option<PathBuf>,
    /// Key (PEM) of --store-cert.
    #[arg(long, value_name = "FILE", requires = "store_cert")]
    pub store_key: Option<PathBuf>,
    /// etcd user; its password comes from --store-password-file or VXNET_STORE_PASSWORD.
    #[arg(long, value_name = "USER")]
    pub store_user: Option<String>,
    /// File holding the etcd user's password (one line).
    #[arg(long, value_name = "FILE")]
    pub store_password_file: Option<PathBuf>,
}

impl StoreAccessArgs {
    pub fn options(&self) -> AccessOptions {
        AccessOptions {
            ca: self.store_ca.clone(),
            cert: self.store_cert.clone(),
            key: self.store_key.clone(),
            user: self.store_user.clone(),
            password_file: self.store_password_file.clone(),
            // Not a flag: a password on the command line is visible to every user in `ps`.
            password_env: std::env::var("VXNET_STORE_PASSWORD").ok(),
        }
    }
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    #[command(subcommand)]
    pub cmd: ClusterCmd,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Create a cluster in the store; prints the manager and worker join tokens. Given etcd's admin
    /// identity (a root --store-user), also creates the cluster's etcd roles and users.
    Init {
        /// etcd://HOST:PORT[,HOST:PORT] (plain) or https://HOST:PORT[,HOST:PORT] (TLS)
        #[arg(long)]
        store: String,
        #[command(flatten)]
        access: StoreAccessArgs,
        /// Use this (hex) cluster id instead of a random one.
        #[arg(long)]
        cluster_id: Option<String>,
        /// This host's VTEP (underlay) address, recorded for the other members [default: none
        /// recorded; `vxnet run --local` registers it].
        #[arg(long)]
        local: Option<IpAddr>,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Join the cluster a token names; the membership is saved in --state-dir. In a store with the
    /// cluster's etcd roles, waits up to 30 s for a manager engine holding the admin identity to admit it.
    Join {
        /// The manager or worker token `vxnet cluster init` printed.
        token: String,
        #[command(flatten)]
        access: StoreAccessArgs,
        /// This host's VTEP (underlay) address, recorded for the other members [default: none
        /// recorded; `vxnet run --local` registers it].
        #[arg(long)]
        local: Option<IpAddr>,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Issue new join tokens (both unless one is chosen); the old ones are refused afterwards.
    Rotate {
        /// Only the worker token [default: both].
        #[arg(long)]
        worker: bool,
        /// Only the manager token [default: both].
        #[arg(long)]
        manager: bool,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Members, their VTEP addresses, networks and liveness.
    Status {
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Leave the cluster for good: this node's record and addresses are removed from the store
    /// and the membership from --state-dir (stop `vxnet run` first).
    Leave {
        /// Leave even as the last manager of a cluster other nodes still belong to.
        #[arg(long)]
        force: bool,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Manager only: remove a node that is down (its record and addresses), by its node id.
    Rm {
        /// The node id, as `vxnet cluster status` lists it.
        node_id: String,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Debug: print the live cluster view, one JSON line per change, until SIGINT/SIGTERM.
    /// Read-only: writes nothing to the store, so this node's engine keeps running. With --local
    /// it joins instead, registering as a member the way the engine does (not beside a running
    /// engine of this node).
    Watch {
        /// Join as a member with this VTEP address [default: watch only, register nothing].
        #[arg(long)]
        local: Option<IpAddr>,
        /// With --local: networks to register as serving (repeat for several) [default: none].
        #[arg(long = "network", requires = "local")]
        networks: Vec<String>,
        /// Lease TTL in seconds.
        #[arg(long, default_value_t = vxnet_cluster::membership::DEFAULT_TTL_SECS)]
        ttl: i64,
        /// Accepted for symmetry; the output is always JSON lines.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            path: PathBuf::from("tokio runtime"),
            source,
        })
}

pub(super) fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn run_cluster(args: ClusterArgs) -> Result<()> {
    let dir = StateDir::new(args.state.state_dir);
    runtime()?.block_on(async move {
        match args.cmd {
            ClusterCmd::Init {
                store,
                access,
                cluster_id,
                local,
                json,
            } => {
                let (eps, tls) = parse_store(&store)?;
                let access = access.options().load(eps, tls)?;
                let out = node::init_with(&dir, &access, cluster_id.as_deref(), local).await?;
                access.warn_if_open();
                if json {
                    print_json(&out)
                } else {
                    println!(
                        "cluster {} created; this node ({}) is a manager",
                        out.cluster_id, out.node_id
                    );
                    println!("manager token: {}", out.manager_token);
                    println!("worker token:  {}", out.worker_token);
                    Ok(())
                }
            }
            ClusterCmd::Join {
                token,
                access,
                local,
                json,
            } => {
                let st = node::join_with(&dir, &token, &access.options(), None, local).await?;
                dir.access(&st)?.warn_if_open();
                if json {
                    print_json(&serde_json::json!({
                        "cluster_id": st.cluster_id, "node_id": st.node_id, "role": st.role,
                        "state_dir": dir.path(),
                    }))
                } else {
                    println!(
                        "joined cluster {} as {} (node {})",
                        st.cluster_id, st.role, st.node_id
                    );
                    Ok(())
                }
            }
            ClusterCmd::Rotate {
                worker,
                manager,
                json,
            } => {
                let out = node::rotate(&dir, manager, worker).await?;
                if json {
                    return print_json(&out);
                }
                if let Some(t) = &out.manager_token {
                    println!("manager token: {t}");
                }
                if let Some(t) = &out.worker_token {
                    println!("worker token:  {t}");
                }
                Ok(())
            }
            ClusterCmd::Status { json } => {
                let st = node::status(&dir).await?;
                if json {
                    print_json(&st)
                } else {
                    print_status(&st);
                    Ok(())
                }
            }
            ClusterCmd::Leave { force, json } => {
                print_removed(&removal::leave(&dir, force).await?, "left", json)
            }
            ClusterCmd::Rm { node_id, json } => print_removed(
                &removal::rm(&dir, &node_id).await?,
                "was removed from",
                json,
            ),
            ClusterCmd::Watch {
                local,
                networks,
                ttl,
                json: _,
            } => watch(&dir, local, networks, ttl).await,
        }
    })
}

/// `how` completes "node X … cluster C".
fn print_removed(out: &removal::Removed, how: &str, json: bool) -> Result<()> {
    if json {
        return print_json(out);
    }
    println!(
        "node {} {how} cluster {}; freed {}",
        out.node_id,
        out.cluster_id,
        removal::describe(&out.freed)
    );
    Ok(())
}

fn print_status(st: &node::Status) {
    let v = &st.view;
    match &st.store_error {
        None => println!(
            "cluster {}  store healthy ({})",
            v.cluster_id,
            st.endpoints.join(",")
        ),
        Some(e) => println!(
            "cluster {}  store DEGRADED, showing last known state: {e}",
            v.cluster_id
        ),
    }
    println!("node {} ({})", st.node_id, st.role);
    println!(
        "\n{:<18} {:<40} {:<8} {:<6} NETWORKS (OVERLAY ADDRESSES)",
        "MEMBER", "VTEP", "ROLE", "ALIVE"
    );
    for m in &v.members {
        let vtep = m.vtep.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        let role = m.role.map(Role::as_str).unwrap_or("-");
        let alive = if m.alive { "yes" } else { "no" };
        // Each network the node serves or holds an address in, with its own (host) address.
        let mut networks: Vec<String> = m.networks.clone();
        for a in v.addresses.iter().filter(|a| a.node == m.node_id) {
            if a.kind == ClaimKind::Host && !networks.contains(&a.network) {
                networks.push(a.network.clone());
            }
        }
        let shown: Vec<String> = networks
            .iter()
            .map(|net| {
                let own: Vec<String> = v
                    .addresses
                    .iter()
                    .filter(|a| a.node == m.node_id && &a.network == net)
                    .filter(|a| a.kind == ClaimKind::Host)
                    .map(|a| a.address.to_string())
                    .collect();
                if own.is_empty() {
                    net.clone()
                } else {
                    format!("{net} ({})", own.join(","))
                }
            })
            .collect();
        println!(
            "{:<18} {:<40} {:<8} {:<6} {}",
            m.node_id,
            vtep,
            role,
            alive,
            if shown.is_empty() {
                "-".to_string()
            } else {
                shown.join(", ")
            }
        );
    }
    println!(
        "\n{:<24} {:<9} {:<20} ENCRYPTION",
        "NETWORK", "VNI", "SUBNET"
    );
    for n in &v.networks {
        let encryption = match (n.encrypted, st.key_epochs.get(&n.name)) {
            (false, _) => "plain".to_string(),
            (true, Some(epoch)) => format!("esp, key epoch {epoch}"),
            (true, None) => "esp, key epoch unknown".to_string(),
        };
        println!(
            "{:<24} {:<9} {:<20} {encryption}",
            n.name,
            n.vni,
            n.subnet.as_deref().unwrap_or("-")
        );
    }
}

async fn watch(
    dir: &StateDir,
    local: Option<IpAddr>,
    networks: Vec<String>,
    ttl: i64,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let sig = |k| {
        signal(k).map_err(|source| Error::Io {
            path: PathBuf::from("signal handler"),
            source,
        })
    };
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let emit = |v: &ClusterView| -> Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, v)?;
        // Tests read this line by line; a closed stdout just ends the loop below.
        writeln!(out)
            .and_then(|_| out.flush())
            .map_err(|source| Error::Io {
                path: PathBuf::from("stdout"),
                source,
            })
    };
    let Some(vtep) = local else {
        // Watch only: no lease, no member record, nothing that could take the place of this
        // node's running engine.
        let state = dir.require()?;
        let store = Store::connect_with(&dir.access(&state)?, &state.cluster_id).await?;
        return tokio::select! {
            done = vxnet_cluster::follow::follow(&store, |v| emit(v).is_ok()) => done,
            _ = term.recv() => Ok(()),
            _ = int.recv() => Ok(()),
        };
    };
    let (store, state) = node::join_or_resume(dir, None, None).await?;
    let handle = Membership { ttl_secs: ttl }
        .start(&store, &state.node_id, vtep, networks)
        .await?;
    let mut rx = handle.view();
    emit(&rx.borrow_and_update().clone())?;
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    // The membership stopped on its own (e.g. the node id is another engine's).
                    return Err(handle
                        .failure()
                        .unwrap_or_else(|| Error::Invalid("the cluster membership task stopped".into())));
                }
                let v = rx.borrow_and_update().clone();
                if emit(&v).is_err() { break; }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    handle.leave().await;
    Ok(())
}
