//! The engine's lifecycle: set-up that fails cleanly, forwarding workers, the control plane
//! (control socket, FDB ageing, signals) and an orderly stop that removes what was created.
//!
//! Set-up order matters for "nothing left behind": the UDP port is bound first (a port in use
//! fails before any device exists), then the TAPs (non-persistent: they vanish when their fds
//! close, including when set-up fails half-way), then the control socket (removed on drop).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thiserror::Error;
use vxnet_encap::{OVERHEAD_IPV4, OVERHEAD_IPV6};

use crate::config::{resolve_remote, ConfigError, EngineConfig};
use crate::control::server::{self, BindError, SocketFile};
use crate::fdb::Millis;
use crate::forward::Forwarder;
use crate::network::{Network, NetworkSettings};
use crate::sys::iface::{self, IfaceError};
use crate::sys::poll::EventFd;
use crate::sys::tap::{Offloads as TapOffloads, Tap, TapConfig, TapError, TapQueue};
use crate::sys::udp::{UdpError, UdpOptions, UdpSocket};
use crate::worker::{Offloads, SourcePorts, Worker};

/// Source-port sockets per engine: stripes of 1024 ports over 49152–65535.
const SOURCE_PORT_SOCKETS: usize = 16;

/// Offloads a test (or a user chasing a kernel bug) can force off, as if the kernel refused them:
/// `VXNET_DISABLE_OFFLOADS=tap,gso,gro` (any subset).
const DISABLE_ENV: &str = "VXNET_DISABLE_OFFLOADS";

fn disabled_by_env(name: &str) -> bool {
    std::env::var(DISABLE_ENV)
        .map(|v| v.split(',').any(|x| x.trim() == name))
        .unwrap_or(false)
}

/// Socket buffers big enough that bursts of a fast TAP do not overflow them.
const SOCKET_BUFFER_BYTES: usize = 8 << 20;
/// Underlay MTU assumed when the local address sits on no interface we can see.
const FALLBACK_UNDERLAY_MTU: u32 = 1500;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("device {dev}: cannot {what}: {source}")]
    Iface {
        dev: String,
        what: &'static str,
        source: IfaceError,
    },
    #[error(transparent)]
    Udp(#[from] UdpError),
    #[error(transparent)]
    Control(#[from] BindError),
    #[error("MTU {mtu} of {dev} leaves no room for VXLAN: the underlay MTU is {underlay}")]
    MtuTooLarge {
        dev: String,
        mtu: u32,
        underlay: u32,
    },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

/// What the control plane reads: shared with the control socket handlers.
#[derive(Debug)]
pub struct EngineState {
    pub forwarder: Arc<Forwarder>,
    pub epoch: Instant,
    pub workers: usize,
    pub offloads: Vec<String>,
    /// `--address` of each network, by network index.
    pub addresses: Vec<Option<String>>,
}

impl EngineState {
    pub fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }
}

#[derive(Debug)]
pub struct Engine {
    state: Arc<EngineState>,
    config: EngineConfig,
    workers: Vec<JoinHandle<std::io::Result<()>>>,
    stop: Arc<EventFd>,
    listener: Option<std::os::unix::net::UnixListener>,
    // Dropped last (field order): the socket file is removed after the workers stopped.
    _socket_file: SocketFile,
    local_addr: SocketAddr,
}

fn iface_err<'a>(dev: &'a str, what: &'static str) -> impl FnOnce(IfaceError) -> EngineError + 'a {
    move |source| EngineError::Iface {
        dev: dev.to_string(),
        what,
        source,
    }
}

impl Engine {
    /// Sets everything up; on error, whatever was created is gone again.
    pub fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        config.validate()?;
        let local = config.local;
        let mut remotes = Vec::with_capacity(config.networks.len());
        for network in &config.networks {
            let resolved = network
                .remotes
                .iter()
                .map(|r| resolve_remote(r, local))
                .collect::<Result<Vec<IpAddr>, _>>()?;
            remotes.push(resolved);
        }

        let workers = config.threads;
        let bind_addr = SocketAddr::new(local, config.port);
        let sockets = (0..workers)
            .map(|_| {
                UdpSocket::bind(
                    bind_addr,
                    &UdpOptions {
                        reuse_port: workers > 1,
                        buffer_bytes: SOCKET_BUFFER_BYTES,
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let local_addr = sockets
            .first()
            .map(UdpSocket::local_addr)
            .unwrap_or(bind_addr);
        let source_ports = bind_source_ports(local)?;

        let underlay_mtu = iface::device_for_local_address(local)
            .map(|(_, mtu)| mtu)
            .unwrap_or(FALLBACK_UNDERLAY_MTU);
        let overhead = if local.is_ipv4() {
            OVERHEAD_IPV4
        } else {
            OVERHEAD_IPV6
        } as u32;

        // Probe what the kernel takes; anything refused is switched off, never fatal.
        let want_tap_offload = config.offloads && !disabled_by_env("tap");
        let gso = config.offloads
            && !disabled_by_env("gso")
            && sockets
                .iter()
                .chain(&source_ports)
                .all(UdpSocket::probe_gso);
        let source_ports = Arc::new(SourcePorts::new(source_ports));
        let gro = config.offloads
            && !disabled_by_env("gro")
            && sockets.iter().all(|s| s.enable_gro().is_ok());
        let vnet_hdr = want_tap_offload;
        // True while every network's TAP accepted TSO (what `stats` reports as "tso").
        let mut tso_everywhere = want_tap_offload;

        let mut networks = Vec::with_capacity(config.networks.len());
        let mut queues_by_network: Vec<Vec<TapQueue>> = Vec::new();
        let mut addresses = Vec::new();
        for (network, remotes) in config.networks.iter().zip(remotes) {
            let mtu = network.mtu.unwrap_or(underlay_mtu.saturating_sub(overhead));
            if mtu + overhead > underlay_mtu && network.mtu.is_some() {
                return Err(EngineError::MtuTooLarge {
                    dev: network.dev.clone(),
                    mtu,
                    underlay: underlay_mtu,
                });
            }
            let tap = Tap::open(&TapConfig {
                name: network.dev.clone(),
                vnet_hdr: want_tap_offload,
                queues: workers,
            })?;
            if want_tap_offload {
                // CSUM+TSO only: USO superframes (GSO_UDP_L4) are not segmented by vxnet yet.
                let tso = TapOffloads::CSUM | TapOffloads::TSO4 | TapOffloads::TSO6;
                if tap.set_offloads(tso).is_err() {
                    tso_everywhere = false;
                    if tap.set_offloads(TapOffloads::CSUM).is_err() {
                        tracing::warn!(dev = %network.dev, "the kernel refused TAP offloads");
                        // The vnet header stays (the TAP was opened with it); frames just
                        // carry no offload work.
                        let _ = tap.set_offloads(TapOffloads::NONE);
                    }
                }
            }
            if tap.existed() {
                tracing::info!(dev = %network.dev, "using existing persistent TAP (left in place on exit)");
            }
            let dev = network.dev.as_str();
            iface::set_mtu(dev, mtu).map_err(iface_err(dev, "set the MTU"))?;
            if want_tap_offload && gso {
                crate::worker::fit_superframes_to_gso(dev, mtu);
            }
            if let Some(address) = network.address {
                match address {
                    ipnet::IpNet::V4(v4) => iface::set_ipv4(dev, v4.addr(), v4.prefix_len()),
                    ipnet::IpNet::V6(v6) => iface::add_ipv6(dev, v6.addr(), v6.prefix_len()),
                }
                .map_err(iface_err(dev, "set the address"))?;
            }
            iface::set_up(dev, true).map_err(iface_err(dev, "bring it up"))?;
            addresses.push(network.address.map(|a| a.to_string()));
            networks.push(Arc::new(Network::new(
                NetworkSettings {
                    name: network.name.clone(),
                    vni: network.vni,
                    dev: network.dev.clone(),
                    mtu,
                    allow_vlan: network.allow_vlan,
                    learning: config.learning,
                    max_fdb: config.max_fdb,
                },
                local,
                config.port,
                remotes,
            )));
            queues_by_network.push(tap.into_queues());
        }

        let (listener, socket_file) = server::bind(&config.control)?;
        let forwarder = Arc::new(Forwarder::new(
            networks,
            local,
            config.port,
            config.accept_any,
        ));
        let stop = Arc::new(EventFd::new().map_err(|source| EngineError::Io {
            what: "eventfd",
            source,
        })?);
        let epoch = Instant::now();

        // Worker w takes queue w of every network's TAP.
        let mut per_worker: Vec<Vec<TapQueue>> = (0..workers).map(|_| Vec::new()).collect();
        for queues in queues_by_network {
            for (w, queue) in queues.into_iter().enumerate() {
                per_worker[w].push(queue);
            }
        }
        let offloads = Offloads { vnet_hdr, gso, gro };
        let mut in_use = Vec::new();
        if vnet_hdr {
            in_use.extend(["tap-vnet-hdr", "gro-coalescing"]);
        }
        if tso_everywhere {
            in_use.push("tso");
        }
        if gso {
            in_use.push("udp-gso");
        }
        if gro {
            in_use.push("udp-gro");
        }
        let in_use: Vec<String> = in_use.into_iter().map(String::from).collect();
        tracing::info!(
            "offloads in use: {}",
            if in_use.is_empty() {
                "none".to_string()
            } else {
                in_use.join(", ")
            }
        );
        let mut handles = Vec::with_capacity(workers);
        for (w, (taps, socket)) in per_worker.into_iter().zip(sockets).enumerate() {
            let worker = Worker::new(
                Arc::clone(&forwarder),
                taps,
                socket,
                Arc::clone(&source_ports),
                Arc::clone(&stop),
                epoch,
                offloads,
            );
            let handle = std::thread::Builder::new()
                .name(format!("vxnet-worker-{w}"))
                .spawn(move || worker.run())
                .map_err(|source| EngineError::Io {
                    what: "spawning a worker",
                    source,
                })?;
            handles.push(handle);
        }

        for (network, n) in config.networks.iter().zip(forwarder.networks()) {
            tracing::info!(
                name = %network.name,
                vni = %network.vni,
                dev = %network.dev,
                mtu = n.settings.mtu,
                address = ?network.address,
                flood = ?n.peers().flood,
                "network up"
            );
        }
        tracing::info!(
            local = %local_addr,
            workers,
            ageing_secs = config.ageing_secs,
            learning = config.learning,
            accept_any = config.accept_any,
            max_fdb = config.max_fdb,
            control = %config.control.display(),
            source_ports = ?source_ports.ports(),
            "vxnet engine running"
        );

        Ok(Engine {
            state: Arc::new(EngineState {
                forwarder,
                epoch,
                workers,
                offloads: in_use,
                addresses,
            }),
            config,
            workers: handles,
            stop,
            listener: Some(listener),
            _socket_file: socket_file,
            local_addr,
        })
    }

    pub fn state(&self) -> &Arc<EngineState> {
        &self.state
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves the control socket and ages the FDB until SIGINT or SIGTERM, then stops.
    pub fn run_until_signal(mut self) -> Result<(), EngineError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| EngineError::Io {
                what: "starting the control runtime",
                source,
            })?;
        let state = Arc::clone(&self.state);
        let listener = self.listener.take();
        let ageing = Duration::from_secs(self.config.ageing_secs);
        let result = runtime.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).map_err(|source| EngineError::Io {
                what: "installing the SIGTERM handler",
                source,
            })?;
            let mut int = signal(SignalKind::interrupt()).map_err(|source| EngineError::Io {
                what: "installing the SIGINT handler",
                source,
            })?;
            if let Some(listener) = listener {
                tokio::spawn(server::serve(listener, Arc::clone(&state)));
            }
            tokio::spawn(age_fdb(Arc::clone(&state), ageing));
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
            }
            Ok::<(), EngineError>(())
        });
        drop(runtime);
        self.stop_workers();
        result
    }

    /// Stops the workers and waits for them; TAPs close with them.
    pub fn stop_workers(&mut self) {
        let _ = self.stop.notify();
        for handle in self.workers.drain(..) {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("worker failed: {e}"),
                Err(_) => tracing::error!("worker panicked"),
            }
        }
    }
}

/// One socket per stripe of the dynamic range; within a stripe the first free port is taken, so
/// another program holding a port costs nothing but that port.
fn bind_source_ports(local: IpAddr) -> Result<Vec<UdpSocket>, EngineError> {
    let first = *vxnet_encap::flow::SOURCE_PORT_RANGE.start() as usize;
    let span = *vxnet_encap::flow::SOURCE_PORT_RANGE.end() as usize - first + 1;
    let stripe = span / SOURCE_PORT_SOCKETS;
    let mut sockets = Vec::with_capacity(SOURCE_PORT_SOCKETS);
    for k in 0..SOURCE_PORT_SOCKETS {
        let mut bound = None;
        for port in (first + k * stripe..first + (k + 1) * stripe).map(|p| p as u16) {
            match UdpSocket::bind(
                SocketAddr::new(local, port),
                &UdpOptions {
                    reuse_port: false,
                    buffer_bytes: SOCKET_BUFFER_BYTES,
                },
            ) {
                Ok(socket) => {
                    bound = Some(socket);
                    break;
                }
                Err(UdpError::AddrInUse { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(socket) = bound {
            sockets.push(socket);
        }
    }
    if sockets.is_empty() {
        return Err(EngineError::Io {
            what: "binding source-port sockets in 49152-65535",
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        });
    }
    Ok(sockets)
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

/// Sweeps learned entries idle for `ageing`; a few times per ageing period so an entry lives
/// at most about a quarter period longer than asked.
async fn age_fdb(state: Arc<EngineState>, ageing: Duration) {
    let period = (ageing / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let ageing_ms = ageing.as_millis() as Millis;
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let now = state.now();
        for network in state.forwarder.networks() {
            let removed = network.fdb.age_out(now, ageing_ms);
            if removed > 0 {
                tracing::debug!(vni = %network.vni(), removed, "aged out FDB entries");
            }
        }
    }
}
