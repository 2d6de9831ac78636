//! Opening one network's TAP: offload negotiation, MAC, MTU, address, link up.

use std::net::IpAddr;
use std::sync::Arc;

use vxnet_encap::esp::MAX_OVERHEAD as ESP_OVERHEAD;
use vxnet_encap::MacAddr;

use super::{iface_err, EngineError, Served, Setup};
use crate::config::NetworkConfig;
use crate::network::{Network, NetworkSettings};
use crate::sys::iface;
use crate::sys::tap::{Offloads as TapOffloads, Tap, TapConfig};

/// The largest outer IP packet: a TAP MTU plus the VXLAN overhead must stay within it.
const MAX_OUTER_PACKET: u32 = 65_535;

/// Opens and configures one network's TAP. Nothing outlives a failure: the TAP is not
/// persistent, so it vanishes with its fds.
pub(super) fn open_network(
    setup: &Setup,
    network: &NetworkConfig,
    remotes: Vec<IpAddr>,
) -> Result<Served, EngineError> {
    // An encrypted network's datagrams carry ESP's header, IV, trailer and ICV on top of the
    // VXLAN packet (at most `MAX_OVERHEAD`: 45 bytes, 1405 over a 1500-byte IPv4 underlay).
    let esp = network.encryption.is_some();
    let overhead = setup.overhead + if esp { ESP_OVERHEAD as u32 } else { 0 };
    let underlay_mtu = setup.underlay_mtu;
    let mtu = network.mtu.unwrap_or(underlay_mtu.saturating_sub(overhead));
    if mtu + overhead > MAX_OUTER_PACKET {
        return Err(EngineError::MtuTooLarge {
            dev: network.dev.clone(),
            mtu,
            limit: MAX_OUTER_PACKET,
            overhead,
            esp,
        });
    }
    if mtu + overhead > underlay_mtu {
        // As the kernel's vxlan without a lower device: allowed, since path-MTU signalling
        // tells the TAP's TCP what fits (e.g. one MTU for every host of a cluster whose
        // underlays differ).
        tracing::warn!(
            dev = %network.dev,
            mtu,
            underlay_mtu,
            "the TAP MTU is larger than the underlay carries: frames over {} bytes are answered with ICMP too-big when they carry DF and fragmented otherwise",
            underlay_mtu.saturating_sub(overhead)
        );
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
    // Without a configured MAC a new TAP gets one derived from the host, the local VTEP and the
    // VNI rather than the kernel's random one: an engine restarted (even after kill -9) comes
    // back with the same MAC, so its peers' ARP caches stay valid. A persistent TAP keeps its own.
    // In bridge mode the configured MAC (the gateway's, which peers' ARP caches hold) is the
    // bridge's: the TAP is only a port.
    let mac = match &network.bridge {
        Some(_) => None,
        None => network.mac,
    }
    .or_else(|| (!tap.existed()).then(|| static_mac(setup.local, network.vni)));
    if let Some(mac) = mac {
        iface::set_hw_addr(dev, mac.0).map_err(iface_err(dev, "set the MAC address"))?;
    }
    iface::set_mtu(dev, mtu).map_err(iface_err(dev, "set the MTU"))?;
    let bridge_mac = match &network.bridge {
        Some(bridge) => {
            super::bridge::plug_tap(&network.name, bridge, dev, mtu, network.mac, setup.local)?
        }
        None => None,
    };
    // Not on a bridge port: the cap is a TAP device limit that the kernel does not pass on to
    // the bridge (it takes only its ports' tso_max_segs) nor to the endpoints' veths, so TCP on
    // the bridge or in a container still builds 46-segment superframes, and the bridge would cut
    // every one of them in software to fit the TAP (measured: bridge mode at a fifth of the TAP
    // pair's throughput). Uncapped, a superframe just takes two UDP GSO sends, or one on the
    // tunnel-GSO path.
    if setup.want_tap_offload && setup.offloads.gso.in_use() && network.bridge.is_none() {
        crate::worker::fit_superframes_to_gso(dev, mtu);
    }
    // The address sits on the bridge in bridge mode.
    let dev = network.bridge.as_deref().unwrap_or(dev);
    if let Some(address) = network.address {
        warn_if_held_elsewhere(dev, address);
        match address {
            ipnet::IpNet::V4(v4) => iface::set_ipv4(dev, v4.addr(), v4.prefix_len()),
            ipnet::IpNet::V6(v6) => iface::add_ipv6(dev, v6.addr(), v6.prefix_len()),
        }
        // A bridge kept from the last run has its IPv6 address already.
        .or_else(|e| match e.raw_os_error() {
            Some(libc::EEXIST) if network.bridge.is_some() => Ok(()),
            _ => Err(e),
        })
        .map_err(iface_err(dev, "set the address"))?;
    }
    iface::set_up(dev, true).map_err(iface_err(dev, "bring it up"))?;
    let built = Network::new(
        NetworkSettings {
            name: network.name.clone(),
            vni: network.vni,
            dev: network.dev.clone(),
            mtu,
            allow_vlan: network.allow_vlan,
            learning: setup.learning,
            max_fdb: setup.max_fdb,
            bum_rate: network.bum_rate.or(setup.bum_rate),
        },
        setup.local,
        setup.port,
        remotes,
    );
    let network_state = Arc::new(match &network.encryption {
        Some(ring) => built.encrypted(ring.clone()),
        None => built,
    });
    tracing::info!(
        name = %network.name,
        vni = %network.vni,
        dev = %network.dev,
        mtu,
        encrypted = esp,
        address = ?network.address,
        flood = ?network_state.peers().flood,
        bum_rate = ?network_state.settings.bum_rate,
        "network up"
    );
    Ok(Served {
        network: network_state,
        queues: tap.into_queues(),
        tso,
        uso,
        mac: bridge_mac.or_else(|| iface::hw_addr(&network.dev).ok().map(MacAddr)),
    })
}

/// The MAC of a static-mode TAP that has none configured: stable for one host (its machine id,
/// when it has one), local VTEP address and VNI, different for another of any of them.
fn static_mac(local: IpAddr, vni: vxnet_encap::Vni) -> MacAddr {
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    MacAddr::derived(format!("static/{}/{local}/{vni}", machine.trim()).as_bytes())
}

/// An address another interface of this namespace holds already (the bridge a bridge-mode run
/// left, another engine's TAP) is still set, as the kernel allows it, but the kernel may then
/// route the subnet past `dev`, and the overlay looks dead without any drop being counted.
fn warn_if_held_elsewhere(dev: &str, address: ipnet::IpNet) {
    if let Some((other, _)) = iface::device_for_local_address(address.addr()) {
        if other != dev {
            tracing::warn!(
                "address {address} of {dev} is also on {other}: traffic to the subnet may leave \
                 through {other} instead (a bridge kept from a --bridge run? `ip addr del \
                 {address} dev {other}`, or remove {other})"
            );
        }
    }
}
