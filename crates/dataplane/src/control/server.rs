//! The engine side of the control socket: answers requests from the live forwarding state.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fdb;
use super::proto::{
    parse_request, NetworkInfo, NetworkStats, PeerRow, Reply, Request, StatsReport, MAX_REQUEST_LEN,
};
use crate::engine::EngineState;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

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
            // One bounded line: a client cannot make the engine buffer without end.
            let mut line = Vec::new();
            let mut reader = BufReader::new(read).take(MAX_REQUEST_LEN as u64 + 1);
            if reader.read_until(b'\n', &mut line).await.is_err() {
                return;
            }
            let reply = match parse_request(&line) {
                Ok(request) => handle(&state, request),
                Err(e) => Reply::Error {
                    message: e.to_string(),
                },
            };
            if let Ok(mut text) = serde_json::to_string(&reply) {
                text.push('\n');
                let _ = write.write_all(text.as_bytes()).await;
            }
        });
    }
}

pub(super) fn ok<T: serde::Serialize>(value: T) -> Reply {
    match serde_json::to_value(value) {
        Ok(data) => Reply::Ok { data },
        Err(e) => Reply::Error {
            message: e.to_string(),
        },
    }
}

pub fn handle(state: &EngineState, request: Request) -> Reply {
    // One generation for the whole request, even if networks change meanwhile.
    let forwarder = state.forwarder();
    match request {
        Request::FdbShow { .. }
        | Request::FdbAdd { .. }
        | Request::FdbAppend { .. }
        | Request::FdbReplace { .. }
        | Request::FdbDel { .. } => fdb::handle(&forwarder, state.now(), request),
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
            })
            .collect(),
        drops: drops_map(forwarder.drops.snapshot()),
        workers: state.workers,
        offloads: state.offloads(),
        cluster: state.cluster(),
    }
}
