//! Bridge mode: a network's TAP as one port of a Linux bridge whose other ports are the
//! attached endpoints' veths, with the network's address (the endpoints' gateway) on the bridge.
//!
//! The bridge is persistent (the TAP is not): an engine that stops or dies takes its TAP along
//! and leaves the bridge, its address and the endpoints' veths in place, so a restarted engine
//! only plugs its new TAP back in. What vxnet created carries an interface alias
//! (`ip link set DEV alias`) naming the network, so that removing a network for good deletes
//! exactly that and never a bridge or veth someone else made.

use vxnet_encap::MacAddr;

use super::EngineError;
use crate::sys::link::{Link, Netlink};

/// The alias of a bridge vxnet created for `network`.
pub(crate) fn bridge_alias(network: &str) -> String {
    format!("vxnet:{network}")
}

/// The alias of an endpoint's host-side veth: `vxnet:<network>:<endpoint id>`.
pub(crate) fn endpoint_alias(network: &str, id: &str) -> String {
    format!("vxnet:{network}:{id}")
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> EngineError {
    move |source| EngineError::Io { what, source }
}

fn bridge_err(bridge: &str, message: String) -> EngineError {
    EngineError::Bridge {
        bridge: bridge.to_string(),
        message,
    }
}

/// Ensures the bridge exists with `mtu` (and `mac` when given), makes the TAP one of its ports
/// with that MTU too, brings the endpoints' veths to the MTU and both devices up. Returns the
/// bridge's MAC (the gateway's, the one peers should know). A bridge created here is deleted
/// again if a later step fails.
///
/// A bridge left to itself takes the lowest MAC of its ports, so its MAC (and with it the
/// gateway's) would change whenever the TAP is recreated or an endpoint comes or goes, and
/// every neighbour's ARP entry for it would go stale. One created here gets a fixed MAC: `mac`,
/// or one derived from this host's VTEP address and the network.
pub(super) fn plug_tap(
    network: &str,
    bridge: &str,
    tap: &str,
    mtu: u32,
    mac: Option<MacAddr>,
    local: std::net::IpAddr,
) -> Result<Option<MacAddr>, EngineError> {
    let mut nl = Netlink::open().map_err(io("opening a netlink socket"))?;
    let existing = nl
        .link_by_name(bridge)
        .map_err(io("looking up the bridge"))?;
    let created = existing.is_none();
    match existing {
        None => nl
            .create_bridge(
                bridge,
                mtu,
                Some(mac.map_or_else(|| derived_mac(local, network), |m| m.0)),
                &bridge_alias(network),
            )
            .map_err(|e| bridge_err(bridge, format!("cannot create it: {e}")))?,
        Some(link) if link.kind.as_deref() != Some("bridge") => {
            return Err(bridge_err(
                bridge,
                format!(
                    "exists and is not a bridge (kind {})",
                    link.kind.as_deref().unwrap_or("none")
                ),
            ))
        }
        Some(_) => {}
    }
    let result = configure(&mut nl, network, bridge, tap, mtu, mac);
    if result.is_err() && created {
        if let Ok(Some(link)) = nl.link_by_name(bridge) {
            let _ = nl.delete_link(link.index);
        }
    }
    result
}

/// A locally administered unicast MAC for the bridge of `network` on the host with VTEP
/// `local`: the same on every start, different between hosts and networks.
fn derived_mac(local: std::net::IpAddr, network: &str) -> [u8; 6] {
    crate::endpoint::check::derived_mac(&format!("vxnet-bridge\0{local}\0{network}"))
}

fn configure(
    nl: &mut Netlink,
    network: &str,
    bridge: &str,
    tap: &str,
    mtu: u32,
    mac: Option<MacAddr>,
) -> Result<Option<MacAddr>, EngineError> {
    let fail = |what: &str, e: std::io::Error| bridge_err(bridge, format!("cannot {what}: {e}"));
    let link = nl
        .link_by_name(bridge)
        .map_err(|e| fail("read it back", e))?
        .ok_or_else(|| bridge_err(bridge, "vanished while being set up".into()))?;
    if let Some(mac) = mac {
        if link.mac != Some(mac.0) {
            nl.set_mac(link.index, mac.0)
                .map_err(|e| fail("set its MAC", e))?;
        }
    }
    nl.set_link(link.index, None, Some(mtu), None)
        .map_err(|e| fail("set its MTU", e))?;
    let tap_link = nl
        .link_by_name(tap)
        .map_err(|e| fail("find the TAP", e))?
        .ok_or_else(|| bridge_err(bridge, format!("TAP {tap} not found")))?;
    nl.set_link(tap_link.index, Some(link.index), Some(mtu), Some(true))
        .map_err(|e| fail("make the TAP a port", e))?;
    for port in endpoint_ports(nl, network).map_err(|e| fail("list its ports", e))? {
        if port.mtu != mtu {
            nl.set_link(port.index, None, Some(mtu), None)
                .map_err(|e| fail("set an endpoint's MTU", e))?;
        }
    }
    nl.set_link(link.index, None, None, Some(true))
        .map_err(|e| fail("bring it up", e))?;
    let mac = nl
        .link_by_name(bridge)
        .ok()
        .flatten()
        .and_then(|l| l.mac)
        .map(MacAddr);
    Ok(mac)
}

/// The host-side veths vxnet attached to `network` (by alias), wherever they are plugged.
fn endpoint_ports(nl: &mut Netlink, network: &str) -> std::io::Result<Vec<Link>> {
    let prefix = format!("{}:", bridge_alias(network));
    Ok(nl
        .all_links()?
        .into_iter()
        .filter(|l| {
            l.kind.as_deref() == Some("veth")
                && l.alias.as_deref().is_some_and(|a| a.starts_with(&prefix))
        })
        .collect())
}

/// Removes for good what vxnet made for `network`: its endpoints' veths (their container ends
/// go with them) and the bridge, if vxnet created it. A bridge someone else made stays.
pub(crate) fn remove(network: &str, bridge: &str) -> std::io::Result<()> {
    let mut nl = Netlink::open()?;
    let Some(link) = nl.link_by_name(bridge)? else {
        return Ok(());
    };
    for port in endpoint_ports(&mut nl, network)? {
        nl.delete_link(port.index)?;
    }
    if link.kind.as_deref() == Some("bridge") && link.alias == Some(bridge_alias(network)) {
        nl.delete_link(link.index)?;
    }
    Ok(())
}
