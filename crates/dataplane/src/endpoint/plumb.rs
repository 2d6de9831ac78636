//! The endpoint "driver": wiring a namespace to a network's bridge and unwiring it, over a
//! borrowed context holding the container's namespace as an fd (the engine's own namespace is
//! the one its threads are in). Set-up is a fixed sequence of steps; when one fails, everything
//! the earlier ones made is removed (deleting the host-side veth takes its peer along), so a
//! failed attach leaves nothing behind. Tear-down is the mirror: delete the host-side veth, and
//! only when its alias says vxnet made it for this endpoint.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::sys::link::Netlink;
use crate::sys::netns::Netns;

/// What one endpoint is wired with.
#[derive(Debug)]
pub(super) struct Wiring<'a> {
    pub(super) ns: &'a Netns,
    pub(super) bridge: &'a str,
    pub(super) host_ifname: &'a str,
    /// Marks the host-side veth as vxnet's (see [`crate::engine::bridge::endpoint_alias`]).
    pub(super) alias: &'a str,
    pub(super) ifname: &'a str,
    pub(super) mac: [u8; 6],
    pub(super) address: IpNet,
    pub(super) gateway: IpAddr,
    pub(super) mtu: u32,
}

/// The steps of set-up, in order; tests fail each in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    CreateVeth,
    HostPort,
    OpenNamespace,
    Address,
    LinkUp,
    Loopback,
    Route,
}

impl Step {
    #[cfg(test)]
    pub(super) const ALL: [Step; 7] = [
        Step::CreateVeth,
        Step::HostPort,
        Step::OpenNamespace,
        Step::Address,
        Step::LinkUp,
        Step::Loopback,
        Step::Route,
    ];
}

/// Why wiring failed (all of it undone).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlumbError {
    #[error("bridge {0} not found (is the network served in bridge mode?)")]
    NoBridge(String),
    #[error("interface {0} exists on this host and vxnet did not make it")]
    HostNameTaken(String),
    #[error("interface {0} already exists in the namespace")]
    IfnameTaken(String),
    #[error("cannot {what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
}

fn at(what: &'static str) -> impl FnOnce(io::Error) -> PlumbError {
    move |source| PlumbError::Io { what, source }
}

/// Wires the endpoint; `fault` is consulted before each step (production passes one that
/// never fails).
pub(super) fn setup(
    w: &Wiring<'_>,
    fault: &mut dyn FnMut(Step) -> io::Result<()>,
) -> Result<(), PlumbError> {
    let mut host = Netlink::open().map_err(at("open a netlink socket"))?;
    let bridge = host
        .link_by_name(w.bridge)
        .map_err(at("look up the bridge"))?
        .filter(|l| l.kind.as_deref() == Some("bridge"))
        .ok_or_else(|| PlumbError::NoBridge(w.bridge.to_string()))?;
    // A host-side veth of this endpoint left by an engine that died half-way is ours to
    // replace; any other device of that name is not ours to touch.
    if let Some(old) = host
        .link_by_name(w.host_ifname)
        .map_err(at("look up the host-side name"))?
    {
        if old.alias.as_deref() != Some(w.alias) || old.kind.as_deref() != Some("veth") {
            return Err(PlumbError::HostNameTaken(w.host_ifname.to_string()));
        }
        host.delete_link(old.index)
            .map_err(at("remove a stale host-side veth"))?;
    }
    fault(Step::CreateVeth).map_err(at("create the veth pair"))?;
    match host.create_veth(
        w.host_ifname,
        w.alias,
        w.ifname,
        std::os::fd::AsFd::as_fd(w.ns),
        w.mac,
        w.mtu,
    ) {
        Ok(()) => {}
        // The host-side name was free a moment ago: the namespace has `ifname`.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            return Err(PlumbError::IfnameTaken(w.ifname.to_string()))
        }
        Err(e) => return Err(at("create the veth pair")(e)),
    }
    let result = wire(&mut host, bridge.index, w, fault);
    if result.is_err() {
        // Takes the namespace's end along.
        let _ = teardown(w.host_ifname, w.alias);
    }
    result
}

fn wire(
    host: &mut Netlink,
    bridge: u32,
    w: &Wiring<'_>,
    fault: &mut dyn FnMut(Step) -> io::Result<()>,
) -> Result<(), PlumbError> {
    let veth = host
        .link_by_name(w.host_ifname)
        .map_err(at("find the host-side veth"))?
        .ok_or_else(|| at("find the host-side veth")(io::ErrorKind::NotFound.into()))?;
    fault(Step::HostPort).map_err(at("plug the veth into the bridge"))?;
    host.set_link(veth.index, Some(bridge), Some(w.mtu), Some(true))
        .map_err(at("plug the veth into the bridge"))?;
    fault(Step::OpenNamespace).map_err(at("open a netlink socket in the namespace"))?;
    let mut inside = Netlink::open_in(std::os::fd::AsFd::as_fd(w.ns))
        .map_err(at("open a netlink socket in the namespace"))?;
    let link = inside
        .link_by_name(w.ifname)
        .map_err(at("find the interface in the namespace"))?
        .ok_or_else(|| at("find the interface in the namespace")(io::ErrorKind::NotFound.into()))?;
    fault(Step::Address).map_err(at("set the address"))?;
    inside
        .add_address(link.index, w.address.addr(), w.address.prefix_len())
        .map_err(at("set the address"))?;
    fault(Step::LinkUp).map_err(at("bring the interface up"))?;
    inside
        .set_link(link.index, None, None, Some(true))
        .map_err(at("bring the interface up"))?;
    fault(Step::Loopback).map_err(at("bring loopback up"))?;
    if let Some(lo) = inside.link_by_name("lo").map_err(at("bring loopback up"))? {
        inside
            .set_link(lo.index, None, None, Some(true))
            .map_err(at("bring loopback up"))?;
    }
    fault(Step::Route).map_err(at("add the default route"))?;
    match inside.add_default_route(w.gateway, link.index) {
        Ok(()) => Ok(()),
        // The namespace has a default route already (another network's endpoint): keep it.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(at("add the default route")(e)),
    }
}

/// Removes the endpoint's host-side veth (its peer goes with it) if it is there and carries
/// `alias`; anything else of that name is left alone. Gone already is success.
pub(super) fn teardown(host_ifname: &str, alias: &str) -> io::Result<()> {
    let mut host = Netlink::open()?;
    match host.link_by_name(host_ifname)? {
        Some(link)
            if link.alias.as_deref() == Some(alias) && link.kind.as_deref() == Some("veth") =>
        {
            match host.delete_link(link.index) {
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
                other => other,
            }
        }
        _ => Ok(()),
    }
}

/// Whether the endpoint's host-side veth is still there (its namespace alive).
pub(super) fn present(host_ifname: &str, alias: &str) -> bool {
    Netlink::open()
        .and_then(|mut nl| nl.link_by_name(host_ifname))
        .ok()
        .flatten()
        .is_some_and(|l| l.alias.as_deref() == Some(alias))
}
