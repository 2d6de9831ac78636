//! Start-up: binding the sockets, probing what the kernel offers, opening the configured networks.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use vxnet_encap::{OVERHEAD_IPV4, OVERHEAD_IPV6};

use super::tap::open_network;
use super::{
    lock, new_eventfd, Core, Engine, EngineError, EngineState, EspBinding, Running, Setup,
};
use crate::config::{resolve_remote, EngineConfig, NetworkConfig};
use crate::control::socket;
use crate::crypto::floors::ReplayFloors;
use crate::forward::Forwarder;
use crate::offload::{Offloads, UdpGso};
use crate::state::SourcePortInfo;
use crate::sys::iface;
use crate::sys::udp::{UdpError, UdpSocket};
use crate::sys::udp_path::raise_nofile_limit;
use crate::underlay::Underlay;
use crate::worker::{SourcePortConfig, SourcePorts};

/// File descriptors kept free of source-port sockets: TAP queues, receive sockets, control
/// connections, the metrics endpoint, the cluster's connections.
const FD_RESERVE: usize = 1024;
/// Source-port sockets allowed however low the file-descriptor limit is.
const MIN_SOURCE_PORT_SOCKETS: usize = 64;

/// Offloads a test (or a user chasing a kernel bug) can force off, as if the kernel refused them:
/// `VXNET_DISABLE_OFFLOADS=tap,gso,gro,uso,tunnel-gso` (any subset).
pub const DISABLE_ENV: &str = "VXNET_DISABLE_OFFLOADS";
/// The names [`DISABLE_ENV`] takes.
pub const DISABLEABLE_OFFLOADS: [&str; 5] = ["tap", "gso", "gro", "uso", "tunnel-gso"];

fn disabled_by_env(name: &str) -> bool {
    std::env::var(DISABLE_ENV)
        .map(|v| v.split(',').any(|x| x.trim() == name))
        .unwrap_or(false)
}

/// Socket buffers big enough that bursts of a fast TAP do not overflow them.
const SOCKET_BUFFER_BYTES: usize = 8 << 20;
/// Underlay MTU assumed when the local address sits on no interface we can see.
const FALLBACK_UNDERLAY_MTU: u32 = 1500;

impl Engine {
    /// Sets everything up; on error, whatever was created is gone again. `config.networks` may
    /// be empty when networks are added later through [`Engine::control`].
    pub fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        config.check_consistency()?;
        // First: a control path in use or that is no stale socket fails before anything else
        // is touched (and so is the only line printed).
        socket::check_path(&config.control)?;
        let local = config.local;
        let mut remotes = Vec::with_capacity(config.networks.len());
        for network in &config.networks {
            remotes.push(resolve_remotes(network, local)?);
        }

        let workers = config.threads;
        let bind_addr = SocketAddr::new(local, config.port);
        let (port_claim, sockets) =
            crate::exclusive::bind_worker_sockets(bind_addr, workers, SOCKET_BUFFER_BYTES)?;
        let local_addr = sockets
            .first()
            .map(UdpSocket::local_addr)
            .unwrap_or(bind_addr);
        let underlay_mtu = iface::device_for_local_address(local)
            .map(|(_, mtu)| mtu)
            .unwrap_or(FALLBACK_UNDERLAY_MTU);
        let source_ports = Arc::new(SourcePorts::new(source_port_config(&config, underlay_mtu)));
        let overhead = if local.is_ipv4() {
            OVERHEAD_IPV4
        } else {
            OVERHEAD_IPV6
        } as u32;

        // Probe what the kernel takes; anything refused is switched off, never fatal.
        let want_tap_offload = config.offloads && !disabled_by_env("tap");
        // The source-port sockets are bound on first use; they are UDP sockets of the same
        // family as these, so the receive and ESP sockets answer for them.
        let gso =
            config.offloads && !disabled_by_env("gso") && sockets.iter().all(UdpSocket::probe_gso);
        let gro = config.offloads
            && !disabled_by_env("gro")
            && sockets.iter().all(|s| s.enable_gro().is_ok());
        // Decided quietly here and logged once the engine runs: a start that fails later
        // prints its error line alone.
        let tunnel_choice = if !want_tap_offload {
            Err("TAP offloads are off".to_string())
        } else if !config.tunnel_gso {
            Err("turned off".to_string())
        } else if disabled_by_env("tunnel-gso") {
            Err(format!("turned off by {DISABLE_ENV}"))
        } else {
            probe_tunnel_gso(local)
        };
        let tunnel = tunnel_choice.as_ref().ok().cloned();
        let setup = Setup {
            local,
            port: config.port,
            esp_port: config.esp_port,
            outer: config.tuning.outer,
            threads: workers,
            learning: config.learning,
            max_fdb: config.max_fdb,
            underlay_mtu,
            overhead,
            want_tap_offload,
            want_uso: want_tap_offload && !disabled_by_env("uso"),
            offloads: Offloads {
                vnet_hdr: want_tap_offload,
                gso: UdpGso::new(gso),
                gro,
                tunnel: tunnel.clone(),
            },
            bum_rate: config.tuning.bum_rate,
            busy_poll: std::time::Duration::from_micros(config.tuning.busy_poll_us.into()),
        };

        // The ESP-in-UDP port only when something needs it: an encrypted network, or the port
        // asked for by name. A plaintext engine leaves it to others (IKE's NAT-T uses 4500, and a
        // second engine on the host would find it taken); an encrypted network added later binds
        // it then.
        let esp = if config.bind_esp || config.networks.iter().any(|n| n.encryption.is_some()) {
            Some(bind_esp(&setup)?)
        } else {
            None
        };
        let mut served = Vec::with_capacity(config.networks.len());
        let mut addresses = BTreeMap::new();
        for (network, remotes) in config.networks.iter().zip(remotes) {
            served.push(open_network(&setup, network, remotes)?);
            if let Some(address) = network.address {
                addresses.insert(network.name.clone(), address.to_string());
            }
        }

        let (listener, socket_file) =
            socket::bind(&config.control, config.control_group.as_deref())?;
        let stop = new_eventfd()?;
        let state = Arc::new(EngineState::new(
            Forwarder::new(Vec::new(), local, config.port, config.accept_any)
                .with_esp_port(config.esp_port)
                .with_replay_floors(Arc::new(match &config.state_dir {
                    Some(dir) => ReplayFloors::at(dir, local),
                    None => ReplayFloors::in_memory(),
                })),
            workers,
            addresses,
            Arc::clone(&setup.offloads.gso),
        ));
        for network in &config.networks {
            state.set_bridge(&network.name, crate::state::Bridged::of(network));
        }
        if let Some(tunnel) = tunnel {
            state.set_tunnel(tunnel);
        }
        state.set_source_ports(
            SourcePortInfo {
                range: source_ports.range().to_string(),
                max_open: source_ports.cap(),
            },
            Arc::clone(source_ports.counters()),
        );
        let core = Arc::new(Core {
            state,
            setup,
            sockets,
            esp: Mutex::new(esp),
            source_ports,
            running: Mutex::new(Running {
                served,
                workers: Vec::new(),
                stop,
                cluster_macs: BTreeMap::new(),
                shut_down: false,
            }),
        });
        for network in &config.networks {
            core.state
                .names
                .set_network(&network.name, network.address, network.hosts.clone());
        }
        core.start_generation(&mut lock(&core.running))?;
        tracing::info!(
            "offloads in use: {}",
            match core.state.offloads() {
                v if v.is_empty() => "none".to_string(),
                v => v.iter().map(|o| o.name()).collect::<Vec<_>>().join(", "),
            }
        );
        log_tx_path(&tunnel_choice);
        tracing::info!(
            local = %local_addr,
            workers,
            ageing_secs = config.ageing_secs,
            learning = config.learning,
            accept_any = config.accept_any,
            max_fdb = config.max_fdb,
            control = %config.control.display(),
            source_ports = %core.source_ports.range(),
            source_port_sockets_max = core.source_ports.cap(),
            df = %config.tuning.outer.df,
            ttl = %config.tuning.outer.ttl,
            tos = %config.tuning.outer.tos,
            busy_poll_us = config.tuning.busy_poll_us,
            esp_port = lock(&core.esp).as_ref().map(|_| config.esp_port),
            "vxnet engine running"
        );
        Ok(Engine {
            core,
            ageing_secs: config.ageing_secs,
            listener: Some(listener),
            metrics: None,
            reloader: None,
            cleanup: false,
            _port_claim: port_claim,
            _socket_file: socket_file,
        })
    }
}

/// The start-up probe of the tunnel-GSO path (an underlay TAP with the tunnel header,
/// redirected to the local address's device), and the thread following route, neighbour, link
/// and tc changes for it. An error (why not) keeps the socket path.
fn probe_tunnel_gso(local: IpAddr) -> Result<Arc<Underlay>, String> {
    let v4 = match local {
        IpAddr::V4(v4) if !v4.is_unspecified() => v4,
        IpAddr::V4(_) => {
            return Err("--local is unspecified (no underlay device to redirect to)".into())
        }
        IpAddr::V6(_) => return Err("the underlay is IPv6 (tunnel GSO is IPv4-only here)".into()),
    };
    let underlay = Arc::new(Underlay::probe(v4)?);
    let weak = Arc::downgrade(&underlay);
    std::thread::Builder::new()
        .name("vxnet-underlay".into())
        .spawn(move || {
            if let Err(e) = crate::underlay::follow(weak) {
                tracing::warn!("no longer following underlay changes: {e}");
            }
        })
        .map_err(|e| format!("cannot start the thread following changes: {e}"))?;
    Ok(underlay)
}

/// The start log's line on the transmit path of TCP superframes, once the engine runs.
fn log_tx_path(choice: &Result<Arc<Underlay>, String>) {
    match choice {
        Ok(underlay) => tracing::info!(
            "tx path: tunnel-gso through {}: TCP superframes leave whole, without crossing the \
             host's OUTPUT and POSTROUTING netfilter hooks (--no-tunnel-gso turns it off)",
            underlay.report().devices.join(" ")
        ),
        Err(reason) => tracing::info!(
            "tx path: socket (tunnel GSO not in use: {reason}): TCP superframes are segmented \
             and sent through UDP sockets"
        ),
    }
}

pub(super) fn resolve_remotes(
    network: &NetworkConfig,
    local: IpAddr,
) -> Result<Vec<IpAddr>, EngineError> {
    Ok(network
        .remotes
        .iter()
        .map(|r| resolve_remote(r, local))
        .collect::<Result<Vec<IpAddr>, _>>()?)
}

/// The source-port pool of `config`: as many sockets open at once as the range has slots, or as
/// the file-descriptor limit leaves room for (raised to its hard limit first).
fn source_port_config(config: &EngineConfig, underlay_mtu: u32) -> SourcePortConfig {
    let tuning = &config.tuning;
    let slots = tuning.srcport.len()
        * if tuning.outer.fixed_df().is_some() {
            1
        } else {
            2
        };
    let fd_limit = match raise_nofile_limit() {
        Ok(limit) => usize::try_from(limit).unwrap_or(usize::MAX),
        Err(e) => {
            tracing::warn!("cannot read the open-file limit: {e}");
            MIN_SOURCE_PORT_SOCKETS + FD_RESERVE
        }
    };
    let cap = slots.min(
        fd_limit
            .saturating_sub(FD_RESERVE)
            .max(MIN_SOURCE_PORT_SOCKETS),
    );
    if cap < slots {
        tracing::warn!(
            cap,
            slots,
            fd_limit,
            "the open-file limit allows fewer source-port sockets than the srcport range has ports: the least recently used are closed and reopened as flows come and go"
        );
    }
    SourcePortConfig {
        local: config.local,
        range: tuning.srcport,
        listen_port: config.port,
        policy: tuning.outer,
        cap,
        send_buffer: SOCKET_BUFFER_BYTES,
        fallback_mtu: underlay_mtu,
        min_pmtu: tuning.min_pmtu,
    }
}

/// The ESP-in-UDP sockets (one per worker, like the VXLAN ones, and claimed the same way), with
/// the outer DF/TTL/TOS of plaintext packets (`inherit` DF: set, so a path too small is answered
/// with ICMP rather than fragmented) and GRO when the VXLAN sockets have it.
pub(super) fn bind_esp(setup: &Setup) -> Result<EspBinding, UdpError> {
    let addr = SocketAddr::new(setup.local, setup.esp_port);
    let (claim, sockets) =
        crate::exclusive::bind_worker_sockets(addr, setup.threads, SOCKET_BUFFER_BYTES)?;
    let outer = &setup.outer;
    for socket in &sockets {
        if let Err(e) = socket.set_outer(outer, outer.fixed_df().unwrap_or(true)) {
            tracing::warn!("cannot set the outer DF/TTL/TOS of an ESP socket: {e}");
        }
        if setup.offloads.gro {
            if let Err(e) = socket.enable_gro() {
                tracing::warn!("UDP GRO refused on an ESP socket: {e}");
            }
        }
    }
    Ok(EspBinding {
        _claim: claim,
        sockets,
    })
}
