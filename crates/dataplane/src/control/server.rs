//! The engine side of the control socket: answers requests from the live forwarding state.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::fdb;
use super::limits::{bump, Backoff, Slots, EXCHANGE_TIMEOUT, MAX_REQUEST_BYTES};
use super::proto::{
    parse_request, NetworkInfo, NetworkStats, PeerRow, Reply, Request, RequestError, SaRow,
    StatsReport,
};
use super::socket::ControlListener;
use crate::offload::Offload;
use crate::state::EngineState;
use crate::sys::creds::peer_credentials;

/// How a `reload` request reaches the engine's control loop (which owns the reload logic): the
/// loop answers on the enclosed channel.
pub(crate) type ReloadCalls = mpsc::Sender<oneshot::Sender<Reply>>;

/// The longest a `reload` may take (it can create TAPs) before the client is told it timed out.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves until the task is dropped. Every connection is checked against `control.access`,
/// bounded by [`limits`](super::limits), and answered with one reply line.
pub(crate) async fn serve(
    control: ControlListener,
    state: Arc<EngineState>,
    reload: Option<ReloadCalls>,
) {
    let Ok(listener) = UnixListener::from_std(control.listener) else {
        tracing::error!("control socket could not be registered with the runtime");
        return;
    };
    let access = control.access;
    let slots = Arc::new(Slots::default());
    let mut backoff = Backoff::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                if backoff.reset() {
                    tracing::info!("control socket: accepting again");
                }
                stream
            }
            Err(e) => {
                bump(&state.control_counters.accept_errors);
                let (pause, first) = backoff.pause();
                if first {
                    tracing::warn!("control socket: accept failed ({e}); backing off");
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let allowed = peer_credentials(stream.as_fd())
            .map_err(|e| format!("cannot read peer credentials: {e}"))
            .and_then(|peer| access.check(&peer).map(|()| peer));
        let peer = match allowed {
            Ok(peer) => peer,
            Err(reason) => {
                bump(&state.control_counters.refused);
                tracing::debug!("control socket: {reason}");
                // One line, without waiting: the socket buffer takes it or the peer misses it.
                let _ = stream.try_write(reply_line(&error(reason)).as_bytes());
                continue;
            }
        };
        let (slot, evicted) = slots.admit();
        if evicted {
            bump(&state.control_counters.evicted);
        }
        let state = Arc::clone(&state);
        let reload = reload.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = exchange(stream, &state, reload, peer.uid) => {}
                () = slot.evicted() => {}
            }
            drop(slot);
        });
    }
}

fn reply_line(reply: &Reply) -> String {
    let mut text = serde_json::to_string(reply).unwrap_or_else(|_| {
        r#"{"status":"error","message":"reply could not be encoded"}"#.to_string()
    });
    text.push('\n');
    text
}

/// Why a request was not read.
enum ReadError {
    TooLarge,
    Io,
}

/// Reads one request line of at most [`MAX_REQUEST_BYTES`]; memory use is bounded by the cap
/// whatever the client sends.
async fn read_request<R: tokio::io::AsyncRead + Unpin>(read: R) -> Result<Vec<u8>, ReadError> {
    let mut line = Vec::new();
    let mut limited = BufReader::new(read).take(MAX_REQUEST_BYTES as u64 + 1);
    limited
        .read_until(b'\n', &mut line)
        .await
        .map_err(|_| ReadError::Io)?;
    if line.len() > MAX_REQUEST_BYTES {
        return Err(ReadError::TooLarge);
    }
    Ok(line)
}

/// One request and its reply, each within [`EXCHANGE_TIMEOUT`].
async fn exchange(
    stream: UnixStream,
    state: &Arc<EngineState>,
    reload: Option<ReloadCalls>,
    uid: u32,
) {
    let (read, mut write) = stream.into_split();
    let reply = match tokio::time::timeout(EXCHANGE_TIMEOUT, read_request(read)).await {
        Err(_) => {
            bump(&state.control_counters.timed_out);
            error(format!(
                "no complete request within {} s",
                EXCHANGE_TIMEOUT.as_secs()
            ))
        }
        Ok(Err(ReadError::TooLarge)) => {
            bump(&state.control_counters.oversized);
            error(RequestError::TooLong.to_string())
        }
        Ok(Err(ReadError::Io)) => return,
        Ok(Ok(line)) => match parse_request(&line) {
            Ok(Request::Reload) => {
                tracing::info!(uid, "reload requested on the control socket");
                ask_reload(reload).await
            }
            Ok(
                request @ (Request::Attach(_)
                | Request::Detach(_)
                | Request::Endpoints { .. }
                | Request::EndpointGc(_)),
            ) => endpoint_request(state, request).await,
            Ok(request) => handle(state, request),
            Err(e) => error(e.to_string()),
        },
    };
    let line = reply_line(&reply);
    let sent = tokio::time::timeout(EXCHANGE_TIMEOUT, write.write_all(line.as_bytes()));
    if sent.await.is_err() {
        bump(&state.control_counters.timed_out);
    }
}

/// The endpoint requests: they wire namespaces and may wait for the cluster store. Each runs as
/// a task of its own, so a client that goes away (or a connection evicted) cannot cut one
/// short half-way.
async fn endpoint_request(state: &Arc<EngineState>, request: Request) -> Reply {
    let state = Arc::clone(state);
    let task = tokio::spawn(async move { endpoint_work(&state, request).await });
    task.await
        .unwrap_or_else(|_| error("the endpoint request failed (see the engine's log)"))
}

async fn endpoint_work(state: &EngineState, request: Request) -> Reply {
    let Some(endpoints) = state.endpoints().cloned() else {
        return error("this engine serves no endpoints (it was started without a state dir)");
    };
    let result = match request {
        Request::Attach(req) => endpoints.attach(state, req).await.map(ok),
        Request::Detach(req) => endpoints
            .detach(req)
            .await
            .map(|released| ok(crate::control::proto::GcReport { released })),
        Request::Endpoints { network } => endpoints.list(network.as_deref()).await.map(ok),
        Request::EndpointGc(req) => endpoints.gc(req).await.map(ok),
        _ => return error("not an endpoint request"),
    };
    result.unwrap_or_else(|e| error(e.to_string()))
}

async fn ask_reload(reload: Option<ReloadCalls>) -> Reply {
    let Some(calls) = reload else {
        return error("this engine was not started with --config: there is nothing to reload");
    };
    let (answer, reply) = oneshot::channel();
    if calls.send(answer).await.is_err() {
        return error("the engine is stopping");
    }
    match tokio::time::timeout(RELOAD_TIMEOUT, reply).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) => error("the engine is stopping"),
        Err(_) => error(format!(
            "reload did not finish within {} s",
            RELOAD_TIMEOUT.as_secs()
        )),
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

fn error(message: impl Into<String>) -> Reply {
    Reply::Error {
        message: message.into(),
    }
}

/// Answers a request from the forwarding state (`reload` is the engine loop's, see [`serve`]).
pub(crate) fn handle(state: &EngineState, request: Request) -> Reply {
    // One generation for the whole request, even if networks change meanwhile.
    let forwarder = state.forwarder();
    match request {
        Request::FdbShow { .. }
        | Request::FdbAdd { .. }
        | Request::FdbAppend { .. }
        | Request::FdbReplace { .. }
        | Request::FdbDel { .. } => fdb::handle(&forwarder, state.now(), request),
        Request::Reload => error("reload is answered by the engine's control loop"),
        Request::Attach(_)
        | Request::Detach(_)
        | Request::Endpoints { .. }
        | Request::EndpointGc(_) => error("endpoint requests are answered asynchronously"),
        Request::Status { network } => ok(crate::endpoint::Endpoints::status(
            state,
            network.as_deref(),
        )),
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
        Request::SaShow { keys } => ok(sa_rows(state, keys)),
        Request::NameAdd {
            network,
            name,
            aliases,
            addresses,
            mac,
        } => {
            let mac = match mac
                .as_deref()
                .map(crate::config::parse_unicast_mac)
                .transpose()
            {
                Ok(mac) => mac,
                Err(e) => return error(e),
            };
            let entry = crate::names::HostEntry {
                name,
                aliases,
                addresses,
                mac,
                here: false,
            };
            match state.names.add(&network, entry) {
                Ok(()) => ok(serde_json::Value::Null),
                Err(e) => error(e.to_string()),
            }
        }
        Request::NameRm { network, name } => match state.names.remove(&network, &name) {
            Ok(()) => ok(serde_json::Value::Null),
            Err(e) => error(e.to_string()),
        },
        Request::NameLs { network } => ok(crate::control::proto::NameReport {
            names: state.names.list(network.as_deref()),
            counters: state
                .names
                .counters
                .snapshot()
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect(),
        }),
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
                encrypted: n.is_encrypted(),
                esp_port: n.is_encrypted().then(|| forwarder.esp_port()),
                cluster: state.cluster(),
            })
            .collect::<Vec<_>>()),
    }
}

/// Every SA of every encrypted network: the workers' outbound ones, then the inbound ones.
pub fn sa_rows(state: &EngineState, keys: bool) -> Vec<SaRow> {
    use vxnet_encap::esp::REPLAY_WINDOW;
    const ALGORITHM: &str = "rfc4106(gcm(aes))";
    let forwarder = state.forwarder();
    let mut rows = Vec::new();
    for n in forwarder.networks() {
        let Some(crypto) = &n.crypto else {
            continue;
        };
        let mut out: Vec<_> = crypto.outbound.all();
        out.sort_by_key(|i| (i.id.dst, i.worker));
        for info in out {
            rows.push(SaRow {
                network: n.settings.name.clone(),
                vni: n.vni().get(),
                direction: "out".into(),
                spi: format!("{:#010x}", info.id.spi.get()),
                src: info.id.src,
                dst: info.id.dst,
                endpoint: Some(crypto.endpoint(info.id.dst, forwarder.esp_port())),
                epoch: info.id.epoch.0,
                algorithm: ALGORITHM.into(),
                esn: true,
                seq: info.next_seq(),
                replay_window: 0,
                packets: info.packets(),
                bytes: info.bytes(),
                worker: Some(info.worker),
                key: keys.then(|| info.material.to_hex()),
            });
        }
        let endpoints = crypto.endpoints();
        let mut inbound = crypto.inbound.all();
        inbound.sort_by_key(|sa| (sa.id().src, sa.id().spi));
        for sa in inbound {
            let id = sa.id();
            rows.push(SaRow {
                network: n.settings.name.clone(),
                vni: n.vni().get(),
                direction: "in".into(),
                spi: format!("{:#010x}", id.spi.get()),
                src: id.src,
                dst: id.dst,
                endpoint: endpoints
                    .iter()
                    .find(|(vtep, _)| *vtep == id.src)
                    .map(|(_, e)| *e)
                    .or(Some(SocketAddr::new(id.src, forwarder.esp_port()))),
                epoch: id.epoch.0,
                algorithm: ALGORITHM.into(),
                esn: true,
                seq: sa.top().unwrap_or(0),
                replay_window: REPLAY_WINDOW,
                packets: sa.packets(),
                bytes: sa.bytes(),
                worker: None,
                key: keys.then(|| sa.key().key_material().to_hex()),
            });
        }
    }
    rows
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
                drops: n.drops.snapshot(),
                tso_superframes: n.events.tso_superframes.load(Relaxed),
                tso_segments: n.events.tso_segments.load(Relaxed),
                uso_superframes: n.events.uso_superframes.load(Relaxed),
                uso_segments: n.events.uso_segments.load(Relaxed),
                gso_batches: n.events.gso_batches.load(Relaxed),
                gro_batches: n.events.gro_batches.load(Relaxed),
                coalesced_superframes: n.events.coalesced_superframes.load(Relaxed),
                coalesced_segments: n.events.coalesced_segments.load(Relaxed),
                udp_coalesced_superframes: n.events.udp_coalesced_superframes.load(Relaxed),
                udp_coalesced_datagrams: n.events.udp_coalesced_datagrams.load(Relaxed),
                partial_checksums: n.events.partial_checksums.load(Relaxed),
                tap_refused_short_tail: n.events.tap_refused_short_tail.load(Relaxed),
                tap_refused_gso: n.events.tap_refused_gso.load(Relaxed),
                tunnel_superframes: n.events.tunnel_superframes.load(Relaxed),
                tunnel_segments: n.events.tunnel_segments.load(Relaxed),
                tap_queue_drops: crate::sys::iface::tx_dropped(&n.settings.dev).unwrap_or(0),
                too_big_replies: n.events.too_big_replies.load(Relaxed),
                neighbor_answered: n.events.neighbor_answered.load(Relaxed),
                neighbor_flooded: n.events.neighbor_flooded.load(Relaxed),
                neighbor_spoofed: n.events.neighbor_spoofed.load(Relaxed),
                neighbor_entries: n.neighbors.len(),
                esp: n.crypto.as_ref().map(|c| c.snapshot()),
            })
            .collect(),
        drops: forwarder.drops.snapshot(),
        workers: state.workers,
        worker_restarts: state.worker_restarts.load(Relaxed),
        offloads: state.offloads(),
        cluster: state.cluster(),
        control: state.control_counters.snapshot(),
        source_ports: state.source_ports(),
        tx_path: if state.offloads().contains(&Offload::TunnelGso) {
            "tunnel-gso"
        } else {
            "socket"
        }
        .to_string(),
        tunnel_gso: state.tunnel_gso(),
    }
}
