//! Endpoints: network namespaces (containers) joined to a bridge-mode network through a veth,
//! on request over the control socket (`vxnet attach`, the CNI plugin).
//!
//! The engine does the work, not the client: it opens and checks the namespace, picks the
//! address ([`claim`]: the cluster's IPAM through a [`Registry`], or the local allocator in
//! static mode), wires the veth ([`plumb`]) and keeps the record ([`book`], and the registry's
//! store). Every
//! attach runs under one lock, so two requests for the same container cannot race; any failure
//! part-way undoes what was done (claim, veth) before the error is returned.

mod book;
pub(crate) mod check;
mod claim;
mod plumb;
mod registry;
mod resolver;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use crate::control::proto::{
    AttachRequest, DetachRequest, Endpoint, EndpointList, GcReport, GcRequest, Status,
};
use crate::engine::bridge::endpoint_alias;
use crate::state::{lock, EngineState};
use crate::sys::netns::{Netns, NetnsError};
use book::{Book, Entry};
pub use registry::{Registry, RegistryError, RegistryFuture};
use resolver::with_dns;

/// Why an endpoint request was refused; one line, sent back as the reply's message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EndpointError {
    #[error("network {0} is not served by this engine")]
    NotServed(String),
    #[error("network {0} is not in bridge mode (give it a bridge: `bridge = \"NAME\"`, --bridge)")]
    NotBridged(String),
    #[error(
        "network {0} has no address on this host, so no subnet to give endpoints addresses from"
    )]
    NoSubnet(String),
    #[error("name {0:?} is not valid: 1-63 letters, digits, '-' or '_', not starting or ending with '-'")]
    BadName(String),
    #[error("container id {0:?} is not valid: 1-256 letters, digits, '_', '.' or '-'")]
    BadContainerId(String),
    #[error("address {address}: {why}")]
    BadAddress { address: String, why: String },
    #[error("MAC {0}")]
    BadMac(String),
    #[error(transparent)]
    BadIfname(#[from] crate::sys::InvalidIfName),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("name {name} is already taken in network {network}")]
    NameTaken { name: String, network: String },
    #[error("address {address} is already taken in network {network}")]
    AddressTaken { address: IpAddr, network: String },
    #[error("no free address left in network {network} ({subnet})")]
    Exhausted { network: String, subnet: IpNet },
    #[error("subnet {0} is larger than /16 or has no host addresses (the allocator hands out at most 65536)")]
    SubnetSize(IpNet),
    #[error("detach needs --netns/--pid, --name or a container id")]
    NoSelector,
    #[error("cannot wire the endpoint: {0}")]
    Plumb(#[from] plumb::PlumbError),
    #[error("cannot remove the endpoint's veth: {0}")]
    Unplumb(std::io::Error),
    #[error("cannot save the endpoint records: {0}")]
    Save(std::io::Error),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// A bridge-mode network as endpoints see it.
#[derive(Debug, Clone)]
struct Plan {
    name: String,
    bridge: String,
    mtu: u32,
    /// This host's address on the network, with the subnet's prefix.
    gateway: IpNet,
    /// Where the static allocator picks from (the subnet, or a configured part of it).
    pool: IpNet,
}

/// The endpoint service of one engine (see the module documentation).
#[derive(Debug)]
pub struct Endpoints {
    book: Mutex<Book>,
    /// Held across a whole attach/detach/gc, so requests never interleave.
    op: tokio::sync::Mutex<()>,
    registry: Option<Arc<dyn Registry>>,
    /// The node name put in static-mode records (the VTEP address).
    node: String,
    /// Where the endpoints' names and neighbour entries go in static mode (in cluster mode the
    /// store's records bring every host's, this one's included).
    names: Arc<crate::names::NameService>,
}

impl Endpoints {
    /// Endpoints with records in `dir` (created when the first is attached); `None` keeps them
    /// in memory only.
    pub fn new(
        dir: Option<&Path>,
        node: String,
        registry: Option<Arc<dyn Registry>>,
        names: Arc<crate::names::NameService>,
    ) -> std::io::Result<Endpoints> {
        let book = match dir {
            Some(dir) => Book::load(dir)?,
            None => Book::in_memory(),
        };
        Ok(Endpoints {
            book: Mutex::new(book),
            op: tokio::sync::Mutex::new(()),
            node: registry.as_ref().map(|r| r.node()).unwrap_or(node),
            registry,
            names,
        })
    }

    fn plan(state: &EngineState, network: &str) -> Result<Plan, EndpointError> {
        let forwarder = state.forwarder();
        let served = forwarder
            .networks()
            .iter()
            .find(|n| n.settings.name == network)
            .cloned()
            .ok_or_else(|| EndpointError::NotServed(crate::text::printable(network)))?;
        let bridged = state
            .bridge(network)
            .ok_or_else(|| EndpointError::NotBridged(network.to_string()))?;
        let gateway = state
            .address(network)
            .and_then(|a| a.parse::<IpNet>().ok())
            .ok_or_else(|| EndpointError::NoSubnet(network.to_string()))?;
        Ok(Plan {
            name: network.to_string(),
            bridge: bridged.bridge,
            pool: bridged.pool.unwrap_or(gateway.trunc()),
            mtu: served.settings.mtu,
            gateway,
        })
    }

    /// `attach`: the endpoint, new or (same container/namespace and ifname) the existing one.
    pub(crate) async fn attach(
        &self,
        state: &EngineState,
        req: AttachRequest,
    ) -> Result<Endpoint, EndpointError> {
        self.attach_with(state, req, &mut |_| Ok(())).await
    }

    async fn attach_with(
        &self,
        state: &EngineState,
        req: AttachRequest,
        fault: &mut (dyn FnMut(plumb::Step) -> std::io::Result<()> + Send),
    ) -> Result<Endpoint, EndpointError> {
        let _op = self.op.lock().await;
        let plan = Self::plan(state, &req.network)?;
        let ifname = req.ifname.clone().unwrap_or_else(|| "eth0".into());
        crate::sys::validate_ifname(&ifname)?;
        if let Some(name) = &req.name {
            check::label(name)?;
        }
        for alias in &req.aliases {
            check::label(alias)?;
        }
        if let Some(id) = &req.container_id {
            check::container_id(id)?;
        }
        let given = req
            .address
            .as_deref()
            .map(|a| check::address(a, plan.gateway))
            .transpose()?;
        let mac = match &req.mac {
            Some(text) => Some(
                crate::config::parse_unicast_mac(text)
                    .map_err(|e| EndpointError::BadMac(crate::text::printable(&e)))?
                    .0,
            ),
            None => None,
        };
        let ns = Netns::open(Path::new(&req.netns))?;
        let owner = match &req.container_id {
            Some(cid) => format!("cid:{cid}"),
            None => format!("netns:{}", ns.id),
        };
        let id = check::endpoint_id(&plan.name, &owner, &ifname);
        let alias = endpoint_alias(&plan.name, &id);

        // Idempotent: the same container (or namespace) and interface get what they have.
        let existing = lock(&self.book)
            .in_network(&plan.name)
            .find(|e| {
                e.endpoint.id == id
                    || (e.netns_id == ns.id.to_string() && e.endpoint.ifname == ifname)
            })
            .cloned();
        if let Some(old) = existing {
            let old_alias = endpoint_alias(&plan.name, &old.endpoint.id);
            if plumb::present(&old.endpoint.host_ifname, &old_alias) {
                return Ok(with_dns(old.endpoint));
            }
            // Its namespace went away without a detach: release it and attach anew.
            self.release(&old).await;
        }

        let name = self.pick_name(&plan.name, req.name.as_deref(), &req, &id)?;
        let mut endpoint = Endpoint {
            id: id.clone(),
            name,
            aliases: req.aliases.clone(),
            network: plan.name.clone(),
            address: plan.gateway,
            gateway: plan.gateway.addr(),
            mac: vxnet_encap::MacAddr(mac.unwrap_or_else(|| check::stable_mac(&id))).to_string(),
            ifname: ifname.clone(),
            netns: req.netns.clone(),
            node: self.node.clone(),
            container_id: req.container_id.clone(),
            since: unix_now(),
            mtu: plan.mtu,
            host_ifname: check::host_ifname(&id),
            dns: None,
        };
        let address = self.claim(&plan, &mut endpoint, given).await?;
        endpoint.address = IpNet::new(address, plan.gateway.prefix_len())
            .map_err(|_| EndpointError::SubnetSize(plan.gateway))?;

        let wiring = plumb::Wiring {
            ns: &ns,
            bridge: &plan.bridge,
            host_ifname: &endpoint.host_ifname,
            alias: &alias,
            ifname: &ifname,
            mac: mac.unwrap_or_else(|| check::stable_mac(&id)),
            address: endpoint.address,
            gateway: plan.gateway.addr(),
            mtu: plan.mtu,
        };
        let wired = plumb::setup(&wiring, fault);
        let entry = Entry {
            endpoint: endpoint.clone(),
            netns_id: ns.id.to_string(),
        };
        let saved = match wired {
            Ok(()) => {
                let mut book = lock(&self.book);
                book.entries.insert(id.clone(), entry.clone());
                let saved = book.save().map_err(EndpointError::Save);
                if saved.is_err() {
                    book.entries.remove(&id);
                }
                saved
            }
            Err(e) => Err(e.into()),
        };
        if let Err(e) = saved {
            let _ = plumb::teardown(&endpoint.host_ifname, &alias);
            self.unclaim(&endpoint).await;
            return Err(e);
        }
        tracing::info!(
            network = %plan.name,
            id,
            name = %endpoint.name,
            address = %endpoint.address,
            netns = %endpoint.netns,
            "endpoint attached"
        );
        self.publish_names(&plan.name);
        Ok(with_dns(endpoint))
    }

    /// The name given (refused when another endpoint of the network has it), or a default: the
    /// container id's first 12 characters, the namespace's name under /run/netns, or `ep-` and
    /// the id, whichever is a free valid label first.
    fn pick_name(
        &self,
        network: &str,
        given: Option<&str>,
        req: &AttachRequest,
        id: &str,
    ) -> Result<String, EndpointError> {
        let book = lock(&self.book);
        let taken = |name: &str| {
            book.in_network(network).any(|e| {
                e.endpoint.name.eq_ignore_ascii_case(name)
                    || e.endpoint
                        .aliases
                        .iter()
                        .any(|a| a.eq_ignore_ascii_case(name))
            })
        };
        if let Some(name) = given {
            if taken(name) {
                return Err(EndpointError::NameTaken {
                    name: name.to_string(),
                    network: network.to_string(),
                });
            }
            return Ok(name.to_string());
        }
        let netns_name = req
            .netns
            .strip_prefix("/run/netns/")
            .or_else(|| req.netns.strip_prefix("/var/run/netns/"));
        let candidates = [
            req.container_id
                .as_deref()
                .map(|c| c.chars().take(12).collect::<String>()),
            netns_name.map(str::to_string),
        ];
        Ok(candidates
            .into_iter()
            .flatten()
            .find(|c| check::label(c).is_ok() && !taken(c))
            .unwrap_or_else(|| format!("ep-{}", &id[..10.min(id.len())])))
    }

    /// Unwires and forgets one endpoint (and withdraws its record).
    async fn release(&self, entry: &Entry) -> Option<EndpointError> {
        let e = &entry.endpoint;
        if let Err(err) = plumb::teardown(&e.host_ifname, &endpoint_alias(&e.network, &e.id)) {
            return Some(EndpointError::Unplumb(err));
        }
        self.unclaim(e).await;
        let saved = {
            let mut book = lock(&self.book);
            book.entries.remove(&e.id);
            book.save().err().map(EndpointError::Save)
        };
        self.publish_names(&e.network);
        saved
    }

    /// `detach`: every endpoint of the network matching all the keys given; none is success.
    pub(crate) async fn detach(&self, req: DetachRequest) -> Result<Vec<Endpoint>, EndpointError> {
        let _op = self.op.lock().await;
        if req.container_id.is_none() && req.netns.is_none() && req.name.is_none() {
            return Err(EndpointError::NoSelector);
        }
        // A namespace that still exists is matched by identity too (another path to it).
        let netns_id = req
            .netns
            .as_deref()
            .and_then(|p| Netns::open(Path::new(p)).ok())
            .map(|ns| ns.id.to_string());
        let matching: Vec<Entry> = lock(&self.book)
            .in_network(&req.network)
            .filter(|e| {
                let ep = &e.endpoint;
                req.container_id
                    .as_ref()
                    .is_none_or(|c| ep.container_id.as_ref() == Some(c))
                    && req
                        .netns
                        .as_ref()
                        .is_none_or(|p| *p == ep.netns || netns_id.as_ref() == Some(&e.netns_id))
                    && req
                        .name
                        .as_ref()
                        .is_none_or(|n| n.eq_ignore_ascii_case(&ep.name))
                    && req.ifname.as_ref().is_none_or(|i| *i == ep.ifname)
            })
            .cloned()
            .collect();
        let mut released = Vec::new();
        for entry in matching {
            if let Some(e) = self.release(&entry).await {
                return Err(e);
            }
            tracing::info!(network = %entry.endpoint.network, id = %entry.endpoint.id, "endpoint detached");
            released.push(entry.endpoint);
        }
        Ok(released)
    }

    /// `endpoint_gc`: releases this host's endpoints of the network that a runtime attached
    /// (they carry a container id) and no longer lists. Endpoints attached without a container
    /// id (`vxnet attach`) are not a runtime's to collect.
    pub(crate) async fn gc(&self, req: GcRequest) -> Result<GcReport, EndpointError> {
        let _op = self.op.lock().await;
        let stale: Vec<Entry> = lock(&self.book)
            .in_network(&req.network)
            .filter(|e| {
                e.endpoint.container_id.as_ref().is_some_and(|cid| {
                    !req.valid
                        .iter()
                        .any(|v| v.container_id == *cid && v.ifname == e.endpoint.ifname)
                })
            })
            .cloned()
            .collect();
        let mut report = GcReport::default();
        for entry in stale {
            if let Some(e) = self.release(&entry).await {
                return Err(e);
            }
            tracing::info!(network = %entry.endpoint.network, id = %entry.endpoint.id, "endpoint collected");
            report.released.push(entry.endpoint);
        }
        Ok(report)
    }

    /// `endpoints`: this host's (static mode) or the cluster's (cluster mode). This host's own
    /// are listed as kept here (with their namespace, MTU and veth, which only this host knows),
    /// also when the store's view does not hold them yet.
    pub(crate) async fn list(&self, network: Option<&str>) -> Result<EndpointList, EndpointError> {
        let listed = match &self.registry {
            Some(registry) => registry.list(network).await?,
            None => Vec::new(),
        };
        let mut endpoints: Vec<Endpoint> = lock(&self.book)
            .entries
            .values()
            .filter(|e| network.is_none_or(|n| e.endpoint.network == n))
            .map(|e| e.endpoint.clone())
            .collect();
        let own: std::collections::BTreeSet<String> =
            endpoints.iter().map(|e| e.id.clone()).collect();
        endpoints.extend(
            listed
                .into_iter()
                .filter(|e| e.node != self.node || !own.contains(&e.id)),
        );
        endpoints
            .sort_by(|a, b| (&a.network, a.address.addr()).cmp(&(&b.network, b.address.addr())));
        Ok(EndpointList {
            endpoints: endpoints.into_iter().map(with_dns).collect(),
        })
    }

    /// This host's endpoints of `network` as kept in the state dir.
    pub fn local(&self, network: &str) -> Vec<Endpoint> {
        lock(&self.book)
            .in_network(network)
            .map(|e| e.endpoint.clone())
            .collect()
    }

    /// After a (re)start, once `network` is served again: endpoints whose veth survived are
    /// kept (and their records re-asserted in cluster mode); ones whose namespace went away
    /// meanwhile are released.
    pub async fn resume(&self, network: &str) {
        let _op = self.op.lock().await;
        let entries: Vec<Entry> = lock(&self.book).in_network(network).cloned().collect();
        for entry in entries {
            let e = &entry.endpoint;
            if plumb::present(&e.host_ifname, &endpoint_alias(&e.network, &e.id)) {
                if let Some(registry) = &self.registry {
                    if let Err(err) = registry.reassert(e).await {
                        tracing::warn!(id = %e.id, error = %err, "could not re-assert the endpoint's record");
                    }
                }
            } else {
                tracing::info!(network, id = %e.id, "endpoint's namespace went away while the engine was down: released");
                let _ = self.release(&entry).await;
            }
        }
        self.publish_names(network);
    }

    /// The network was removed for good: forget its endpoints here (their veths go with the
    /// bridge); in cluster mode their records are withdrawn in the background.
    pub(crate) fn forget_network(&self, network: &str) {
        let gone = {
            let mut book = lock(&self.book);
            let Some(gone) = book.remove_network(network) else {
                return;
            };
            if let Err(e) = book.save() {
                tracing::warn!(error = %e, "cannot save the endpoint records");
            }
            gone
        };
        for entry in &gone {
            let _ = plumb::teardown(
                &entry.endpoint.host_ifname,
                &endpoint_alias(network, &entry.endpoint.id),
            );
        }
        if let (Some(registry), Ok(runtime)) =
            (&self.registry, tokio::runtime::Handle::try_current())
        {
            let registry = Arc::clone(registry);
            runtime.spawn(async move {
                for entry in gone {
                    let _ = registry.withdraw(&entry.endpoint).await;
                }
            });
        }
    }

    /// `status`: ready unless the network is not served or not bridged, or the store is away.
    pub(crate) fn status(state: &EngineState, network: Option<&str>) -> Status {
        let degraded = |reason: String| Status {
            state: "degraded".into(),
            reason: Some(reason),
        };
        if state.endpoints().is_none() {
            return degraded("this engine keeps no endpoint records (no state dir)".into());
        }
        if let Some(network) = network {
            if let Err(e) = Self::plan(state, network) {
                return degraded(e.to_string());
            }
        }
        if let Some(cluster) = state.cluster() {
            if !cluster.store_healthy {
                return degraded("the cluster store is unreachable".into());
            }
        }
        Status {
            state: "ready".into(),
            reason: None,
        }
    }
}

/// Where the records of engine state dir `dir` are kept.
pub fn records_path(dir: &Path) -> PathBuf {
    dir.join("endpoints.json")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
