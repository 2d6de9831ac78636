//! The engine's lifecycle: set-up that fails cleanly, forwarding workers, the control plane
//! (control socket, FDB ageing, signals) and an orderly stop that removes what was created.
//!
//! Set-up order matters for "nothing left behind": the UDP port is bound first (a port in use
//! fails before any device exists), then the TAPs (non-persistent: they vanish when their fds
//! close, including when set-up fails half-way), then the control socket (removed on drop).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use thiserror::Error;
use vxnet_encap::{MacAddr, OVERHEAD_IPV4, OVERHEAD_IPV6};

use crate::config::{resolve_remote, ConfigError, EngineConfig, NetworkConfig};
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
/// `VXNET_DISABLE_OFFLOADS=tap,gso,gro,uso` (any subset).
pub const DISABLE_ENV: &str = "VXNET_DISABLE_OFFLOADS";
/// The names [`DISABLE_ENV`] takes.
pub const DISABLEABLE_OFFLOADS: [&str; 4] = ["tap", "gso", "gro", "uso"];

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
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0} is already served")]
    AlreadyServed(String),
    #[error("the engine has stopped")]
    Stopped,
    #[error("{0}")]
    ControlPlane(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

/// The cluster the engine belongs to, as the cluster control plane last reported it; `None` in
/// static mode. Shown by `vxnet networks --json` and `vxnet stats --json`.
pub use crate::control::proto::ClusterInfo;

/// What the control plane reads: shared with the control socket handlers.
#[derive(Debug)]
pub struct EngineState {
    /// The current forwarding generation; replaced (never mutated) when networks change.
    forwarder: ArcSwap<Forwarder>,
    pub epoch: Instant,
    pub workers: usize,
    offloads: Mutex<Vec<String>>,
    /// `--address` (or cluster-assigned address) of each network, by network name.
    addresses: Mutex<BTreeMap<String, String>>,
    cluster: Mutex<Option<ClusterInfo>>,
}

impl EngineState {
    pub fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    /// The forwarder of this moment (a cheap `Arc` clone).
    pub fn forwarder(&self) -> Arc<Forwarder> {
        self.forwarder.load_full()
    }

    /// Offloads in use, e.g. "tap-vnet-hdr", "tso", "udp-gso", "udp-gro".
    pub fn offloads(&self) -> Vec<String> {
        lock(&self.offloads).clone()
    }

    pub fn address(&self, network: &str) -> Option<String> {
        lock(&self.addresses).get(network).cloned()
    }

    pub fn cluster(&self) -> Option<ClusterInfo> {
        lock(&self.cluster).clone()
    }
}

/// A poisoned lock only means another control-plane call panicked mid-update; the data is
/// still the best there is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decided once at start: what every network added later is built with.
#[derive(Debug)]
struct Setup {
    local: IpAddr,
    port: u16,
    threads: usize,
    learning: bool,
    max_fdb: usize,
    underlay_mtu: u32,
    overhead: u32,
    want_tap_offload: bool,
    /// Ask TAPs for USO (UDP superframes; kernel 6.2+) too.
    want_uso: bool,
    offloads: Offloads,
}

/// A network being served: its state and the original fds of its TAP queues (workers get
/// clones, so the TAP lives exactly as long as this).
#[derive(Debug)]
struct Served {
    network: Arc<Network>,
    queues: Vec<TapQueue>,
    /// The TAP accepted TSO (what `stats` reports as "tso" when every TAP did).
    tso: bool,
    /// The TAP accepted USO as well ("uso" likewise).
    uso: bool,
    /// The TAP's MAC, read when it was opened (in the engine's namespace).
    mac: Option<MacAddr>,
}

/// The running workers and what they serve; changed only under the lock in [`Core`].
#[derive(Debug)]
struct Running {
    served: Vec<Served>,
    workers: Vec<JoinHandle<std::io::Result<()>>>,
    /// The stop signal of the current worker generation (an eventfd stays readable once
    /// notified, so each generation gets a fresh one).
    stop: Arc<EventFd>,
    /// Static FDB entries the cluster installed, by network name, so a later view can remove
    /// the ones it no longer lists without touching entries added by `vxnet fdb add`.
    cluster_macs: BTreeMap<String, Vec<(MacAddr, IpAddr)>>,
    shut_down: bool,
}

/// Shared by the [`Engine`] and every [`EngineControl`].
#[derive(Debug)]
struct Core {
    state: Arc<EngineState>,
    setup: Setup,
    /// One receive socket per worker (SO_REUSEPORT when several); workers get clones.
    sockets: Vec<UdpSocket>,
    source_ports: Arc<SourcePorts>,
    running: Mutex<Running>,
}

#[derive(Debug)]
pub struct Engine {
    core: Arc<Core>,
    ageing_secs: u64,
    listener: Option<std::os::unix::net::UnixListener>,
    metrics: Option<std::net::TcpListener>,
    // Dropped last (field order): the socket file is removed after the workers stopped.
    _socket_file: SocketFile,
    local_addr: SocketAddr,
}

/// Changes what a running engine serves: networks, cluster peers and cluster MACs. Cheap to
/// clone; used by the control plane (e.g. the cluster watcher) while the engine runs.
#[derive(Debug, Clone)]
pub struct EngineControl {
    core: Arc<Core>,
}

fn iface_err<'a>(dev: &'a str, what: &'static str) -> impl FnOnce(IfaceError) -> EngineError + 'a {
    move |source| EngineError::Iface {
        dev: dev.to_string(),
        what,
        source,
    }
}

impl Engine {
    /// Sets everything up; on error, whatever was created is gone again. `config.networks` may
    /// be empty when networks are added later through [`Engine::control`].
    pub fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        config.check_consistency()?;
        let local = config.local;
        let mut remotes = Vec::with_capacity(config.networks.len());
        for network in &config.networks {
            remotes.push(resolve_remotes(network, local)?);
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
        let setup = Setup {
            local,
            port: config.port,
            threads: workers,
            learning: config.learning,
            max_fdb: config.max_fdb,
            underlay_mtu,
            overhead,
            want_tap_offload,
            want_uso: want_tap_offload && !disabled_by_env("uso"),
            offloads: Offloads {
                vnet_hdr: want_tap_offload,
                gso,
                gro,
            },
        };

        let mut served = Vec::with_capacity(config.networks.len());
        let mut addresses = BTreeMap::new();
        for (network, remotes) in config.networks.iter().zip(remotes) {
            served.push(open_network(&setup, network, remotes)?);
            if let Some(address) = network.address {
                addresses.insert(network.name.clone(), address.to_string());
            }
        }

        let (listener, socket_file) = server::bind(&config.control)?;
        let stop = Arc::new(new_eventfd()?);
        let state = Arc::new(EngineState {
            forwarder: ArcSwap::from_pointee(Forwarder::new(
                Vec::new(),
                local,
                config.port,
                config.accept_any,
            )),
            epoch: Instant::now(),
            workers,
            offloads: Mutex::new(Vec::new()),
            addresses: Mutex::new(addresses),
            cluster: Mutex::new(None),
        });
        let core = Arc::new(Core {
            state,
            setup,
            sockets,
            source_ports,
            running: Mutex::new(Running {
                served,
                workers: Vec::new(),
                stop,
                cluster_macs: BTreeMap::new(),
                shut_down: false,
            }),
        });
        core.start_generation(&mut lock(&core.running))?;
        tracing::info!(
            "offloads in use: {}",
            match core.state.offloads() {
                v if v.is_empty() => "none".to_string(),
                v => v.join(", "),
            }
        );
        tracing::info!(
            local = %local_addr,
            workers,
            ageing_secs = config.ageing_secs,
            learning = config.learning,
            accept_any = config.accept_any,
            max_fdb = config.max_fdb,
            control = %config.control.display(),
            source_ports = ?core.source_ports.ports(),
            "vxnet engine running"
        );

        Ok(Engine {
            core,
            ageing_secs: config.ageing_secs,
            listener: Some(listener),
            metrics: None,
            _socket_file: socket_file,
            local_addr,
        })
    }

    pub fn state(&self) -> &Arc<EngineState> {
        &self.core.state
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Binds the Prometheus endpoint (`--metrics`), served once the engine runs. Bound now so a
    /// port in use is reported before the engine is considered started.
    pub fn bind_metrics(&mut self, addr: SocketAddr) -> Result<(), EngineError> {
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| EngineError::Metrics { addr, source })?;
        self.metrics = Some(listener);
        Ok(())
    }

    /// A handle to change networks, peers and MACs while the engine runs.
    pub fn control(&self) -> EngineControl {
        EngineControl {
            core: Arc::clone(&self.core),
        }
    }

    /// Serves the control socket and ages the FDB until SIGINT or SIGTERM, then stops.
    pub fn run_until_signal(self) -> Result<(), EngineError> {
        self.run_until_signal_with(std::future::pending::<Result<(), String>>())
    }

    /// Like [`run_until_signal`](Self::run_until_signal), and runs `task` (e.g. the cluster
    /// watcher) on the same single-threaded control runtime. The engine stops on SIGINT/SIGTERM
    /// (the task is dropped) or when the task fails (its error is returned after a clean stop);
    /// a task that finishes with `Ok` just ends.
    pub fn run_until_signal_with<F>(mut self, task: F) -> Result<(), EngineError>
    where
        F: std::future::Future<Output = Result<(), String>>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| EngineError::Io {
                what: "starting the control runtime",
                source,
            })?;
        let state = Arc::clone(&self.core.state);
        let listener = self.listener.take();
        let metrics = self.metrics.take();
        let ageing = Duration::from_secs(self.ageing_secs);
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
            if let Some(metrics) = metrics {
                let listener = tokio::net::TcpListener::from_std(metrics).map_err(|source| {
                    EngineError::Io {
                        what: "serving the metrics endpoint",
                        source,
                    }
                })?;
                tokio::spawn(crate::control::metrics::serve(listener, Arc::clone(&state)));
            }
            tokio::spawn(age_fdb(Arc::clone(&state), ageing));
            let task = async move {
                match task.await {
                    Ok(()) => std::future::pending().await,
                    Err(message) => message,
                }
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
                message = task => return Err(EngineError::ControlPlane(message)),
            }
            Ok::<(), EngineError>(())
        });
        drop(runtime);
        self.core.shut_down();
        result
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.core.shut_down();
    }
}

fn new_eventfd() -> Result<EventFd, EngineError> {
    EventFd::new().map_err(|source| EngineError::Io {
        what: "eventfd",
        source,
    })
}

fn resolve_remotes(network: &NetworkConfig, local: IpAddr) -> Result<Vec<IpAddr>, EngineError> {
    Ok(network
        .remotes
        .iter()
        .map(|r| resolve_remote(r, local))
        .collect::<Result<Vec<IpAddr>, _>>()?)
}

/// Opens and configures one network's TAP. Nothing outlives a failure: the TAP is not
/// persistent, so it vanishes with its fds.
fn open_network(
    setup: &Setup,
    network: &NetworkConfig,
    remotes: Vec<IpAddr>,
) -> Result<Served, EngineError> {
    let overhead = setup.overhead;
    let underlay_mtu = setup.underlay_mtu;
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
        vnet_hdr: setup.want_tap_offload,
        queues: setup.threads,
    })?;
    let mut tso = setup.want_tap_offload;
    let mut uso = false;
    if setup.want_tap_offload {
        let wanted = TapOffloads::CSUM | TapOffloads::TSO4 | TapOffloads::TSO6;
        // USO4 and USO6 only together (the kernel's rule); a kernel without them says EINVAL
        // and TSO is tried alone.
        let with_uso = wanted | TapOffloads::USO4 | TapOffloads::USO6;
        uso = setup.want_uso && tap.set_offloads(with_uso).is_ok();
        if !uso && tap.set_offloads(wanted).is_err() {
            tso = false;
            if tap.set_offloads(TapOffloads::CSUM).is_err() {
                tracing::warn!(dev = %network.dev, "the kernel refused TAP offloads");
                // The vnet header stays (the TAP was opened with it); frames just carry no
                // offload work.
                let _ = tap.set_offloads(TapOffloads::NONE);
            }
        }
    }
    if tap.existed() {
        tracing::info!(dev = %network.dev, "using existing persistent TAP (left in place on exit)");
    }
    let dev = network.dev.as_str();
    if let Some(mac) = network.mac {
        iface::set_hw_addr(dev, mac.0).map_err(iface_err(dev, "set the MAC address"))?;
    }
    iface::set_mtu(dev, mtu).map_err(iface_err(dev, "set the MTU"))?;
    if setup.want_tap_offload && setup.offloads.gso {
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
    let network_state = Arc::new(Network::new(
        NetworkSettings {
            name: network.name.clone(),
            vni: network.vni,
            dev: network.dev.clone(),
            mtu,
            allow_vlan: network.allow_vlan,
            learning: setup.learning,
            max_fdb: setup.max_fdb,
        },
        setup.local,
        setup.port,
        remotes,
    ));
    tracing::info!(
        name = %network.name,
        vni = %network.vni,
        dev = %network.dev,
        mtu,
        address = ?network.address,
        flood = ?network_state.peers().flood,
        "network up"
    );
    Ok(Served {
        network: network_state,
        queues: tap.into_queues(),
        tso,
        uso,
        mac: iface::hw_addr(dev).ok().map(MacAddr),
    })
}

impl Core {
    /// Stops the current workers (if any) and starts a generation serving `running.served`.
    /// Workers pause for the time it takes to join and spawn threads (about a millisecond);
    /// packets arriving meanwhile wait in the socket and TAP queues.
    fn start_generation(&self, running: &mut Running) -> Result<(), EngineError> {
        Self::stop_workers(running);
        let networks: Vec<Arc<Network>> = running
            .served
            .iter()
            .map(|s| Arc::clone(&s.network))
            .collect();
        let forwarder = Arc::new(self.state.forwarder.load().with_networks(networks));
        self.state.forwarder.store(Arc::clone(&forwarder));
        *lock(&self.state.offloads) = self.offloads_in_use(running);

        let stop = Arc::new(new_eventfd()?);
        running.stop = Arc::clone(&stop);
        for (w, socket) in self.sockets.iter().enumerate() {
            let clone_err = |source| EngineError::Io {
                what: "duplicating a worker fd",
                source,
            };
            // Worker w takes queue w of every network's TAP.
            let taps = running
                .served
                .iter()
                .filter_map(|s| s.queues.get(w))
                .map(TapQueue::try_clone)
                .collect::<Result<Vec<_>, _>>()
                .map_err(clone_err)?;
            let worker = Worker::new(
                Arc::clone(&forwarder),
                taps,
                socket.try_clone().map_err(clone_err)?,
                Arc::clone(&self.source_ports),
                Arc::clone(&stop),
                self.state.epoch,
                self.setup.offloads,
            );
            let handle = std::thread::Builder::new()
                .name(format!("vxnet-worker-{w}"))
                .spawn(move || worker.run())
                .map_err(|source| EngineError::Io {
                    what: "spawning a worker",
                    source,
                })?;
            running.workers.push(handle);
        }
        Ok(())
    }

    fn offloads_in_use(&self, running: &Running) -> Vec<String> {
        let offloads = self.setup.offloads;
        let mut in_use = Vec::new();
        if offloads.vnet_hdr {
            in_use.extend(["tap-vnet-hdr", "gro-coalescing"]);
            if running.served.iter().all(|s| s.tso) {
                in_use.push("tso");
            }
            if running.served.iter().all(|s| s.tso && s.uso) {
                in_use.push("uso");
            }
        }
        if offloads.gso {
            in_use.push("udp-gso");
        }
        if offloads.gro {
            in_use.push("udp-gro");
        }
        in_use.into_iter().map(String::from).collect()
    }

    /// Stops the workers and waits for them; their TAP and socket clones close with them.
    fn stop_workers(running: &mut Running) {
        let _ = running.stop.notify();
        for handle in running.workers.drain(..) {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("worker failed: {e}"),
                Err(_) => tracing::error!("worker panicked"),
            }
        }
    }

    /// Stops forwarding for good and closes every TAP.
    fn shut_down(&self) {
        let mut running = lock(&self.running);
        Self::stop_workers(&mut running);
        running.served.clear();
        running.shut_down = true;
    }

    fn network(&self, name: &str) -> Option<Arc<Network>> {
        self.state
            .forwarder
            .load()
            .networks()
            .iter()
            .find(|n| n.settings.name == name)
            .cloned()
    }
}

impl EngineControl {
    /// Creates the network's TAP (MTU, address, up) and starts forwarding for it; the networks
    /// already served keep running (their workers restart, pausing for about a millisecond).
    pub fn add_network(&self, network: NetworkConfig) -> Result<(), EngineError> {
        let core = &self.core;
        let mut running = lock(&core.running);
        if running.shut_down {
            return Err(EngineError::Stopped);
        }
        for served in &running.served {
            let settings = &served.network.settings;
            if settings.name == network.name {
                return Err(EngineError::AlreadyServed(format!(
                    "network {}",
                    network.name
                )));
            }
            if settings.vni == network.vni {
                return Err(ConfigError::DuplicateVni(network.vni).into());
            }
            if settings.dev == network.dev {
                return Err(ConfigError::DuplicateDev(network.dev.clone()).into());
            }
        }
        let remotes = resolve_remotes(&network, core.setup.local)?;
        // Opened before the workers stop, so a failure here disturbs nothing.
        let served = open_network(&core.setup, &network, remotes)?;
        if let Some(address) = network.address {
            lock(&core.state.addresses).insert(network.name.clone(), address.to_string());
        }
        running.served.push(served);
        core.start_generation(&mut running)
    }

    /// Stops forwarding for `name` and removes its TAP. False if it is not served.
    pub fn remove_network(&self, name: &str) -> Result<bool, EngineError> {
        let core = &self.core;
        let mut running = lock(&core.running);
        let Some(index) = running
            .served
            .iter()
            .position(|s| s.network.settings.name == name)
        else {
            return Ok(false);
        };
        let removed = running.served.remove(index);
        running.cluster_macs.remove(name);
        lock(&core.state.addresses).remove(name);
        let result = core.start_generation(&mut running);
        // The old workers are joined, so these are the last fds of the TAP: it goes now.
        drop(removed);
        tracing::info!(name, "network removed");
        result.map(|()| true)
    }

    pub fn network_names(&self) -> Vec<String> {
        lock(&self.core.running)
            .served
            .iter()
            .map(|s| s.network.settings.name.clone())
            .collect()
    }

    /// Replaces the cluster-sourced peers of `name` (flood list and receive allow-list, in union
    /// with `--remote` and all-zeros FDB entries). False if it is not served.
    pub fn set_cluster_peers(&self, name: &str, peers: Vec<IpAddr>) -> bool {
        let Some(network) = self.core.network(name) else {
            return false;
        };
        let forwarder = self.core.state.forwarder();
        for ip in &peers {
            let _ = forwarder.peers.counters(*ip);
        }
        network.update_sources(|s| s.cluster = peers);
        true
    }

    /// Replaces the cluster-sourced static FDB entries of `name`: entries the cluster no longer
    /// lists are removed, entries added by `vxnet fdb add` are left alone. False if not served.
    pub fn set_cluster_macs(&self, name: &str, macs: Vec<(MacAddr, IpAddr)>) -> bool {
        let Some(network) = self.core.network(name) else {
            return false;
        };
        let mut running = lock(&self.core.running);
        let previous = running
            .cluster_macs
            .insert(name.to_string(), macs.clone())
            .unwrap_or_default();
        for (mac, _) in previous {
            if !macs.iter().any(|(m, _)| *m == mac) {
                network.fdb.remove(mac);
            }
        }
        for (mac, vtep) in macs {
            if let Err(e) = network.fdb.replace_static(mac, vtep) {
                tracing::warn!(network = name, %mac, %vtep, "static MAC from the cluster not installed: {e}");
            }
        }
        network.rebuild_peers();
        true
    }

    /// The MAC of the network's TAP: what this host publishes for it. None if not served.
    pub fn local_mac(&self, name: &str) -> Option<MacAddr> {
        lock(&self.core.running)
            .served
            .iter()
            .find(|s| s.network.settings.name == name)
            .and_then(|s| s.mac)
    }

    pub fn set_cluster_info(&self, info: Option<ClusterInfo>) {
        *lock(&self.core.state.cluster) = info;
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

/// Sweeps learned entries idle for `ageing`; a few times per ageing period so an entry lives
/// at most about a quarter period longer than asked.
async fn age_fdb(state: Arc<EngineState>, ageing: Duration) {
    let period = (ageing / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let ageing_ms = ageing.as_millis() as Millis;
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let now = state.now();
        for network in state.forwarder().networks() {
            let removed = network.fdb.age_out(now, ageing_ms);
            if removed > 0 {
                tracing::debug!(vni = %network.vni(), removed, "aged out FDB entries");
            }
        }
    }
}
