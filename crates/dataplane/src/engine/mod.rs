//! The engine's lifecycle: set-up that fails cleanly, forwarding workers, the control plane
//! (control socket, FDB ageing, signals) and an orderly stop that removes what was created.
//!
//! Set-up order matters for "nothing left behind": the UDP port is bound first (a port in use
//! fails before any device exists), then the TAPs (non-persistent: they vanish when their fds
//! close, including when set-up fails half-way), then the control socket (removed on drop).
//!
//! The parts: `start` (bind, probe what the kernel offers, open the configured networks),
//! `tap` (one network's TAP), `generation` (the forwarder and worker threads serving one set
//! of networks, replaced as a whole), `supervise` (a worker that is gone is noticed and the
//! workers started again), `reconfigure` ([`EngineControl`]: networks, peers and
//! MACs changed while running) and `runtime` (the control runtime, FDB ageing, signals).

pub(crate) mod bridge;
mod generation;
mod reconfigure;
mod runtime;
mod start;
mod supervise;
mod tap;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use thiserror::Error;
use vxnet_encap::MacAddr;

use crate::config::ConfigError;
use crate::control::socket::{BindError, ControlListener, SocketFile};
use crate::network::Network;
use crate::offload::Offloads;
use crate::reload::Reloader;
use crate::state::lock;
use crate::sys::iface::IfaceError;
use crate::sys::poll::EventFd;
use crate::sys::tap::{TapError, TapQueue};
use crate::sys::udp::{UdpError, UdpSocket};
use crate::worker::SourcePorts;

pub use crate::state::{ClusterInfo, EngineState};
pub use start::{DISABLEABLE_OFFLOADS, DISABLE_ENV};

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
    /// Only the 64 KB outer-packet limit bounds a TAP MTU: one larger than the underlay is
    /// allowed (path-MTU signalling tells the TAP's TCP what fits), so the range is named.
    #[error("MTU {mtu} of {dev} is out of range (valid: {min}-{max}: an outer packet holds at most {limit} bytes, {overhead} of them VXLAN{})", if *esp { " and ESP" } else { "" }, min = crate::validate::MTU.start(), max = limit.saturating_sub(*overhead))]
    MtuTooLarge {
        dev: String,
        mtu: u32,
        limit: u32,
        overhead: u32,
        /// An encrypted network: the overhead includes ESP's.
        esp: bool,
    },
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("bridge {bridge}: {message}")]
    Bridge { bridge: String, message: String },
    #[error("{0} is already served")]
    AlreadyServed(String),
    #[error("the engine has stopped")]
    Stopped,
    #[error("network {network} is encrypted, but the ESP-in-UDP port cannot be bound: {source}")]
    EncryptionUnavailable { network: String, source: UdpError },
    #[error("network {0} is not encrypted (a key ring needs a network created with one)")]
    NotEncrypted(String),
    /// The control-plane task given to [`Engine::run_until_signal_with`] failed.
    #[error(transparent)]
    ControlPlane(Box<dyn std::error::Error + Send + Sync>),
    /// Workers kept dying: restarting them did not help (see `supervise`).
    #[error("workers lost more than {restarts} times within {window_secs} s: stopping, for the service manager to restart the engine")]
    WorkersFailing { restarts: usize, window_secs: u64 },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

/// Decided once at start: what every network added later is built with.
#[derive(Debug)]
struct Setup {
    local: IpAddr,
    port: u16,
    /// The ESP-in-UDP port, bound when an encrypted network needs it (see `Core::esp`).
    esp_port: u16,
    /// Outer DF/TTL/TOS, for ESP sockets bound after start.
    outer: vxnet_encap::outer::OuterPolicy,
    threads: usize,
    learning: bool,
    max_fdb: usize,
    underlay_mtu: u32,
    overhead: u32,
    want_tap_offload: bool,
    /// Ask TAPs for USO (UDP superframes; kernel 6.2+) too.
    want_uso: bool,
    offloads: Offloads,
    /// Storm control for networks that do not set their own (`--bum-rate`).
    bum_rate: Option<u32>,
    /// How long workers poll without sleeping after traffic (`--busy-poll`).
    busy_poll: std::time::Duration,
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
    workers: Vec<supervise::WorkerThread>,
    /// The stop signal of the current worker generation (an eventfd stays readable once
    /// notified, so each generation gets a fresh one).
    stop: EventFd,
    /// Static FDB entries the cluster installed, by network name, so a later view can remove
    /// the ones it no longer lists without touching entries added by `vxnet fdb add`.
    cluster_macs: BTreeMap<String, Vec<(MacAddr, IpAddr)>>,
    shut_down: bool,
}

/// The ESP-in-UDP port's sockets and the claim that keeps other engines off it.
#[derive(Debug)]
struct EspBinding {
    _claim: crate::sys::claim::Claim,
    sockets: Vec<UdpSocket>,
}

/// Shared by the [`Engine`] and every [`EngineControl`].
#[derive(Debug)]
struct Core {
    state: Arc<EngineState>,
    setup: Setup,
    /// One receive socket per worker (SO_REUSEPORT when several); workers get clones.
    sockets: Vec<UdpSocket>,
    /// One ESP-in-UDP socket per worker (same group rules), bound once an encrypted network is
    /// served or `--esp-port` was given; `None` before.
    esp: Mutex<Option<EspBinding>>,
    source_ports: Arc<SourcePorts>,
    running: Mutex<Running>,
}

#[derive(Debug)]
pub struct Engine {
    core: Arc<Core>,
    ageing_secs: u64,
    listener: Option<ControlListener>,
    metrics: Option<std::net::TcpListener>,
    /// Static mode with `--config`: how SIGHUP and `vxnet reload` re-read it.
    reloader: Option<Reloader>,
    /// `--cleanup`: on stop, remove the bridges and endpoints instead of keeping them.
    cleanup: bool,
    /// Keeps other engines off this engine's address and port while it lives.
    _port_claim: crate::sys::claim::Claim,
    // Dropped last (field order): the socket file is removed after the workers stopped.
    _socket_file: SocketFile,
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
    pub fn state(&self) -> &Arc<EngineState> {
        &self.core.state
    }

    /// A handle to change networks, peers and MACs while the engine runs.
    pub fn control(&self) -> EngineControl {
        EngineControl {
            core: Arc::clone(&self.core),
        }
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
