//! The engine side of the control socket: answers requests from the live forwarding state.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use vxnet_encap::MacAddr;

use super::proto::{FdbTable, NetworkInfo, NetworkStats, PeerRow, Reply, Request, StatsReport};
use crate::network::Network;
use crate::state::EngineState;

/// Removes the socket file when the engine stops, but only the one it bound.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "control socket {path} is in use by another running vxnet engine (use --control PATH)"
    )]
    InUse { path: PathBuf },
    #[error("cannot create control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Binds the socket, replacing a stale file left by an engine that died, never a live one.
pub fn bind(path: &Path) -> Result<(std::os::unix::net::UnixListener, SocketFile), BindError> {
    let io = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    Ok((
        listener,
        SocketFile {
            path: path.to_path_buf(),
        },
    ))
}

/// Serves until the task is dropped.
pub async fn serve(listener: std::os::unix::net::UnixListener, state: Arc<EngineState>) {
    let Ok(listener) = UnixListener::from_std(listener) else {
        tracing::error!("control socket could not be registered with the runtime");
        return;
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read);
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match serde_json::from_str::<Request>(&line) {
                Ok(request) => handle(&state, request),
                Err(e) => Reply::Error {
                    message: format!("bad request: {e}"),
                },
            };
            if let Ok(mut text) = serde_json::to_string(&reply) {
                text.push('\n');
                let _ = write.write_all(text.as_bytes()).await;
            }
        });
    }
}

fn ok<T: serde::Serialize>(value: T) -> Reply {
    match serde_json::to_value(value) {
        Ok(data) => Reply::Ok { data },
        Err(e) => Reply::Error {
            message: e.to_string(),
        },
    }
}

fn error(message: impl Into<String>) -> Reply {
    Reply::Error {
        message: message.into(),
    }
}

/// The network a request names, or the only one when it names none.
fn pick(state: &EngineState, vni: Option<u32>) -> Result<Arc<Network>, String> {
    let forwarder = state.forwarder();
    let networks = forwarder.networks();
    match vni {
        Some(v) => networks
            .iter()
            .find(|n| n.vni().get() == v)
            .cloned()
            .ok_or_else(|| format!("no network with VNI {v}")),
        None if networks.len() == 1 => Ok(Arc::clone(&networks[0])),
        None if networks.is_empty() => Err("this engine serves no network yet".to_string()),
        None => Err("this engine serves several networks: give --vni".to_string()),
    }
}

/// The network and MAC an `fdb add`/`fdb del` names.
fn pick_entry(
    state: &EngineState,
    vni: Option<u32>,
    mac: &str,
) -> Result<(Arc<Network>, MacAddr), String> {
    let network = pick(state, vni)?;
    let mac = mac.parse::<MacAddr>().map_err(|e| e.to_string())?;
    Ok((network, mac))
}

pub fn handle(state: &EngineState, request: Request) -> Reply {
    let now = state.now();
    // One generation for the whole request, even if networks change meanwhile.
    let forwarder = state.forwarder();
    match request {
        Request::FdbShow { vni } => {
            let networks: Vec<Arc<Network>> = match vni {
                None => forwarder.networks().to_vec(),
                Some(_) => match pick(state, vni) {
                    Ok(n) => vec![n],
                    Err(e) => return error(e),
                },
            };
            ok(networks
                .into_iter()
                .map(|n| FdbTable {
                    vni: n.vni().get(),
                    dev: n.settings.dev.clone(),
                    entries: n.fdb.rows(now),
                    // Every head-end replication target (remotes, flood entries, cluster), as
                    // `bridge fdb show` lists the kernel's remotes as all-zeros entries.
                    flood: n.peers().flood.iter().map(|a| a.ip()).collect(),
                })
                .collect::<Vec<_>>())
        }
        Request::FdbAdd { mac, dst, vni } => {
            let (network, mac) = match pick_entry(state, vni, &mac) {
                Ok(found) => found,
                Err(e) => return error(e),
            };
            if dst.is_ipv4() != forwarder.local().is_ipv4() {
                return error(format!(
                    "{dst} is not of the local address family ({})",
                    forwarder.local()
                ));
            }
            if mac.is_zero() {
                network.update_sources(|s| {
                    if !s.flood_entries.contains(&dst) {
                        s.flood_entries.push(dst);
                    }
                });
            } else if mac.is_multicast() {
                return error(format!(
                    "{mac} is a group address; only unicast MACs or 00:00:00:00:00:00"
                ));
            } else {
                network.fdb.add_static(mac, dst);
                network.rebuild_peers();
            }
            let _ = forwarder.peers.counters(dst);
            ok(serde_json::Value::Null)
        }
        Request::FdbDel { mac, vni } => {
            let (network, mac) = match pick_entry(state, vni, &mac) {
                Ok(found) => found,
                Err(e) => return error(e),
            };
            if mac.is_zero() {
                let had = !network.sources().flood_entries.is_empty();
                network.update_sources(|s| s.flood_entries.clear());
                return if had {
                    ok(serde_json::Value::Null)
                } else {
                    error("no flood entries")
                };
            }
            if network.fdb.remove(mac) {
                network.rebuild_peers();
                ok(serde_json::Value::Null)
            } else {
                error(format!("no entry for {mac} in VNI {}", network.vni()))
            }
        }
        Request::Peers => {
            let mut rows = Vec::new();
            for (address, traffic) in forwarder.peers.snapshot() {
                let vnis = forwarder
                    .networks()
                    .iter()
                    .filter(|n| n.peers().allows(address))
                    .map(|n| n.vni().get())
                    .collect();
                rows.push(PeerRow {
                    address,
                    vnis,
                    traffic,
                });
            }
            ok(rows)
        }
        Request::Stats => ok(stats(state)),
        Request::Networks => ok(forwarder
            .networks()
            .iter()
            .map(|n| NetworkInfo {
                name: n.settings.name.clone(),
                vni: n.vni().get(),
                dev: n.settings.dev.clone(),
                mtu: n.settings.mtu,
                address: state.address(&n.settings.name),
                local: forwarder.local(),
                port: forwarder.port(),
                flood: n
                    .peers()
                    .flood
                    .iter()
                    .map(|a| a.ip())
                    .collect::<Vec<IpAddr>>(),
                learning: n.settings.learning,
                allow_vlan: n.settings.allow_vlan,
                cluster: state.cluster(),
            })
            .collect::<Vec<_>>()),
    }
}

fn drops_map(snapshot: Vec<(String, u64)>) -> BTreeMap<String, u64> {
    snapshot.into_iter().collect()
}

pub fn stats(state: &EngineState) -> StatsReport {
    use std::sync::atomic::Ordering::Relaxed;
    let forwarder = state.forwarder();
    StatsReport {
        networks: forwarder
            .networks()
            .iter()
            .map(|n| NetworkStats {
                name: n.settings.name.clone(),
                vni: n.vni().get(),
                dev: n.settings.dev.clone(),
                traffic: n.traffic.snapshot(),
                flooded: n.events.flooded.load(Relaxed),
                learned: n.events.learned.load(Relaxed),
                moved: n.events.moved.load(Relaxed),
                fdb_full: n.events.fdb_full.load(Relaxed),
                fdb_entries: n.fdb.len(),
                drops: drops_map(n.drops.snapshot()),
                tso_superframes: n.events.tso_superframes.load(Relaxed),
                tso_segments: n.events.tso_segments.load(Relaxed),
                uso_superframes: n.events.uso_superframes.load(Relaxed),
                uso_segments: n.events.uso_segments.load(Relaxed),
                gso_batches: n.events.gso_batches.load(Relaxed),
                gro_batches: n.events.gro_batches.load(Relaxed),
                coalesced_superframes: n.events.coalesced_superframes.load(Relaxed),
                coalesced_segments: n.events.coalesced_segments.load(Relaxed),
                partial_checksums: n.events.partial_checksums.load(Relaxed),
                tunnel_superframes: n.events.tunnel_superframes.load(Relaxed),
                tunnel_segments: n.events.tunnel_segments.load(Relaxed),
                too_big_replies: n.events.too_big_replies.load(Relaxed),
            })
            .collect(),
        drops: drops_map(forwarder.drops.snapshot()),
        workers: state.workers,
        offloads: state.offloads(),
        cluster: state.cluster(),
        source_ports: state.source_ports(),
    }
}
