//! The control-plane task of `vxnet run --store …`, and the one place where the engine
//! (`vxnet-dataplane`), the cluster (`vxnet-cluster`) and the host firewall (`firewall::sync`)
//! meet: none of the three knows the others. It registers this host as a member, then on every
//! view change decides which networks the engine serves (TAPs added and removed live), gives them
//! their addresses, flood lists, allow-lists and published MACs, tells the membership which
//! networks it serves, and hands an applied nftables firewall the live members' addresses.
//! When the store is away the membership keeps publishing the last view (marked unhealthy), so
//! forwarding carries on unchanged; the resynchronised view after the outage is applied like any
//! other change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use sha2::{Digest, Sha256};
use vxnet_cluster::keyring::NetworkKeys;
use vxnet_cluster::membership::LeaveOnDrop;
use vxnet_cluster::{
    ipam, ClusterView, Membership, MembershipHandle, NetworkDef, Store, StoreAccess,
};
use vxnet_dataplane::names::HostEntry;
use vxnet_dataplane::{ClusterInfo, EngineControl, EngineError, NetworkConfig};
use vxnet_encap::{MacAddr, Vni};

use super::engine_keys::{engine_ring, AutoRotation, Encryption};
use super::registry::StoreRegistry;
use crate::firewall::sync::{FirewallSync, SyncOptions};

/// Why the cluster link stopped `vxnet run` (returned to the engine, which stops cleanly and
/// reports it).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Cluster(#[from] vxnet_cluster::Error),
    /// A network could not be served on the first view (a bad `--dev` or `--address`).
    #[error("network {name}: {source}")]
    Network {
        name: String,
        #[source]
        source: Box<LinkError>,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Vni(#[from] vxnet_encap::VniError),
    #[error("the cluster membership task stopped")]
    MembershipStopped,
}

impl LinkError {
    fn is_unreachable(&self) -> bool {
        matches!(self, LinkError::Cluster(e) if e.is_unreachable())
    }
}

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// What `vxnet run` asks of the cluster link.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// Where the engine's endpoints are published; connected once this host is registered.
    pub registry: Arc<StoreRegistry>,
    pub node_id: String,
    pub cluster_id: String,
    /// The store: endpoints, TLS, credentials.
    pub access: StoreAccess,
    /// This host's VTEP (the engine's `--local`).
    pub vtep: IpAddr,
    /// `--network` names; empty = every network of the cluster.
    pub networks: Vec<String>,
    /// `--dev`, only with exactly one `--network`.
    pub dev: Option<String>,
    /// `--address`, only with exactly one `--network`.
    pub address: Option<IpNet>,
    /// `--remote`s, added to every served network's peers.
    pub remotes: Vec<String>,
    pub mtu: Option<u32>,
    pub allow_vlan: bool,
    /// `--bridge`: for the single `--network` only; otherwise [`bridge_name`].
    pub bridge: Option<String>,
    /// `--mac`: for the single `--network` only; otherwise [`stable_mac`].
    pub mac: Option<MacAddr>,
    /// Publish this host's TAP MACs and install the other members' as static FDB entries.
    pub publish_macs: bool,
    pub ttl_secs: i64,
    /// Keeping vxnet's nftables table (if any, or `--firewall`) in step with the members.
    pub firewall: SyncOptions,
}

/// The TAP name of a cluster network: `vx-<name>` when that fits in 15 bytes, otherwise
/// `vx.<first 4>.<7 hex of SHA-256(name)>`. Network names are `[A-Za-z0-9._-]`, all valid in
/// interface names; the third byte (`-` or `.`) keeps the two forms from ever colliding.
pub fn tap_name(network: &str) -> String {
    derived_name("vx", network)
}

/// The bridge of a cluster network (bridge mode is the default there): named like the TAP
/// with `vb` for `vx`: `vb-<name>`, or `vb.<first 4>.<7 hex>`.
pub fn bridge_name(network: &str) -> String {
    derived_name("vb", network)
}

fn derived_name(prefix: &str, network: &str) -> String {
    let short = format!("{prefix}-{network}");
    if short.len() <= IFNAME_MAX {
        return short;
    }
    let hash = hex::encode(Sha256::digest(network.as_bytes()));
    let head: String = network.chars().take(4).collect();
    format!("{prefix}.{head}.{}", &hash[..7])
}

/// A TAP MAC that stays the same across restarts of this node (so peers' ARP caches and
/// static FDB entries stay right) and differs between nodes and networks: a locally
/// administered unicast address from a hash of the cluster, node and network.
pub fn stable_mac(cluster_id: &str, node_id: &str, network: &str) -> MacAddr {
    MacAddr::derived(format!("{cluster_id}/{node_id}/{network}").as_bytes())
}

/// The networks of `view` this host should serve: the `wanted` ones that exist, or all.
pub fn desired<'a>(view: &'a ClusterView, wanted: &[String]) -> Vec<&'a NetworkDef> {
    view.networks
        .iter()
        .filter(|n| wanted.is_empty() || wanted.contains(&n.name))
        .collect()
}

/// Static MAC entries for `vni`: the other members' published TAP MACs and the MACs of their
/// endpoints (so the first frame to a new container on another host is not flooded). A MAC
/// that two VTEPs would hold gets no entry: it is flooded and learned instead of trusting
/// either.
pub fn peer_macs(
    view: &ClusterView,
    vni: u32,
    self_node: &str,
    self_vtep: IpAddr,
) -> Vec<(MacAddr, IpAddr)> {
    let published = view
        .macs
        .iter()
        .filter(|m| m.vni == vni)
        .map(|m| (m.node_id.as_str(), m.mac.as_str(), Some(m.vtep)));
    let live: BTreeMap<&str, IpAddr> = view
        .alive()
        .filter_map(|m| Some((m.node_id.as_str(), m.vtep?)))
        .collect();
    let endpoints = view
        .network_by_vni(vni)
        .into_iter()
        .flat_map(|net| view.endpoints_in(&net.name))
        .map(|e| {
            (
                e.node.as_str(),
                e.mac.as_str(),
                live.get(e.node.as_str()).copied(),
            )
        });
    let mut out: Vec<(MacAddr, IpAddr)> = published
        .chain(endpoints)
        .filter(|(node, _, _)| *node != self_node)
        .filter_map(|(_, mac, vtep)| Some((mac.parse::<MacAddr>().ok()?, vtep?)))
        .filter(|(mac, vtep)| mac.is_unicast() && *vtep != self_vtep)
        .collect();
    out.sort();
    out.dedup();
    let twice: BTreeSet<MacAddr> = out
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .map(|w| w[0].0)
        .collect();
    out.retain(|(mac, _)| !twice.contains(mac));
    out
}

/// The names network `name`'s endpoint records give (every host's, those of node `me` marked
/// as this host's).
pub(crate) fn endpoint_names(view: &ClusterView, name: &str, me: &str) -> Vec<HostEntry> {
    view.endpoints_in(name)
        .map(|e| HostEntry {
            name: e.name.clone(),
            aliases: e.aliases.clone(),
            addresses: e.ips().collect(),
            mac: e.mac.parse().ok(),
            here: e.node == me,
        })
        .collect()
}

/// One network the engine serves, with what was last applied to it.
#[derive(Debug)]
struct Served {
    def: NetworkDef,
    peers: Option<Vec<IpAddr>>,
    macs: Option<Vec<(MacAddr, IpAddr)>>,
    /// The VNI this host's MAC was published under.
    published: bool,
    /// The key ring the engine holds (encrypted networks).
    ring: Option<NetworkKeys>,
}

struct Link {
    opts: LinkOptions,
    engine: EngineControl,
    store: Store,
    served: BTreeMap<String, Served>,
    /// Networks whose TAP could not be created, with the definition that failed: not retried
    /// until the definition changes, so one bad network does not spam the log.
    failed: BTreeMap<String, NetworkDef>,
    waiting_logged: BTreeSet<String>,
    registered: Option<Vec<String>>,
    firewall: FirewallSync,
    encryption: Encryption,
    /// The lease this host's endpoint records were last written under.
    endpoints_lease: i64,
    /// Per network, this host's endpoints missing from the last view (re-asserted once each
    /// time that set changes, not on every view).
    unlisted: BTreeMap<String, BTreeSet<String>>,
}

/// Registers this host, then applies every cluster view to the engine until the membership
/// stops. The engine runs this beside its control socket; on SIGINT/SIGTERM it is dropped, and
/// the host leaves the cluster (lease revoked) so peers drop it at once.
pub async fn run(opts: LinkOptions, engine: EngineControl) -> Result<(), LinkError> {
    let store = Store::connect_with(&opts.access, &opts.cluster_id).await?;
    let handle = Membership {
        ttl_secs: opts.ttl_secs,
    }
    .start(&store, &opts.node_id, opts.vtep, Vec::new())
    .await?;
    let member = LeaveOnDrop::new(handle);
    let handle = member.handle();
    opts.registry
        .connect(store.clone(), handle.lease(), handle.view());
    tracing::info!(
        node = %opts.node_id,
        cluster = %opts.cluster_id,
        vtep = %opts.vtep,
        networks = %if opts.networks.is_empty() { "all".to_string() } else { opts.networks.join(",") },
        "registered with the cluster"
    );
    let mut link = Link {
        firewall: FirewallSync::new(opts.firewall.clone()),
        opts,
        engine,
        store,
        served: BTreeMap::new(),
        failed: BTreeMap::new(),
        waiting_logged: BTreeSet::new(),
        registered: None,
        encryption: Encryption::default(),
        endpoints_lease: handle.lease_id(),
        unlisted: BTreeMap::new(),
    };
    let _rotation = AutoRotation::start(&link.store, &link.opts.node_id, handle.view());
    let mut rx = handle.view();
    let mut first = true;
    let mut previous: Option<ClusterView> = None;
    loop {
        let view = rx.borrow_and_update().clone();
        if let Some(old) = &previous {
            log_membership(old, &view);
        }
        link.apply(&view, handle, first).await?;
        first = false;
        previous = Some(view);
        if rx.changed().await.is_err() {
            return Err(handle
                .failure()
                .map_or(LinkError::MembershipStopped, LinkError::Cluster));
        }
    }
}

/// One line per member that joined or left since the last view, saying why it left.
fn log_membership(old: &ClusterView, new: &ClusterView) {
    use vxnet_cluster::changes::{changes, Change};
    let vtep = |m: &vxnet_cluster::Member| m.vtep.map_or("-".to_string(), |a| a.to_string());
    for change in changes(old, new) {
        match change {
            Change::Joined(m) => {
                tracing::info!(node = %m.node_id, vtep = %vtep(m), "member {} joined", m.node_id)
            }
            Change::Left(m, why) => tracing::info!(
                node = %m.node_id,
                vtep = %vtep(m),
                "member {} left: {}",
                m.node_id,
                why.describe()
            ),
        }
    }
}

impl Link {
    /// Brings the engine in line with `view`. Errors are fatal only on the first view (a bad
    /// `--dev` or `--address` should stop `vxnet run` at once); later they are logged and the
    /// engine keeps serving what it can.
    async fn apply(
        &mut self,
        view: &ClusterView,
        handle: &MembershipHandle,
        startup: bool,
    ) -> Result<(), LinkError> {
        let me = self.opts.node_id.clone();
        self.engine.set_cluster_info(Some(ClusterInfo {
            store: self.opts.access.url(),
            cluster_id: self.opts.cluster_id.clone(),
            node_id: me.clone(),
            store_healthy: view.store_healthy,
            members_alive: view.alive().count(),
            revision: view.revision,
        }));

        for name in &self.opts.networks {
            if view.network(name).is_none() && self.waiting_logged.insert(name.clone()) {
                tracing::info!(network = %name, "waiting for network {name} to be created (vxnet network create {name})");
            } else if view.network(name).is_some() {
                self.waiting_logged.remove(name);
            }
        }

        let desired: BTreeMap<String, NetworkDef> = desired(view, &self.opts.networks)
            .into_iter()
            // One already served keeps its ring when its key record turns invalid.
            .filter(|d| {
                self.served.get(&d.name).is_some_and(|s| s.def == **d)
                    || self.encryption.servable(view, d)
            })
            .map(|d| (d.name.clone(), d.clone()))
            .collect();
        self.failed
            .retain(|name, def| desired.get(name).is_some_and(|d| d == def));

        // Removed networks, and networks re-created under the same name with another VNI (or
        // encrypted where they were not, or the other way round).
        let stale: Vec<String> = self
            .served
            .iter()
            .filter(|(name, s)| {
                desired.get(*name).map(|d| (d.vni, d.encrypted))
                    != Some((s.def.vni, s.def.encrypted))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            let Some(served) = self.served.remove(&name) else {
                continue;
            };
            match self.engine.forget_network(&name) {
                Ok(_) => {
                    tracing::info!(network = %name, vni = served.def.vni, "network removed from the cluster: stopped serving it")
                }
                Err(e) => tracing::error!(network = %name, error = %e, "could not remove network"),
            }
            if served.published {
                if let Err(e) = handle.publish_macs(served.def.vni, &[]).await {
                    tracing::warn!(network = %name, error = %e, "could not withdraw published MACs");
                }
            }
        }

        for (name, def) in &desired {
            if self.served.contains_key(name) || self.failed.contains_key(name) {
                continue;
            }
            match self.add(def, view.key_ring(name), handle).await {
                Ok(()) => {}
                Err(e) if e.is_unreachable() => {
                    // Retried with the next view (the resync after the store returns is one).
                    tracing::warn!(network = %name, error = %e, "store unreachable while adding network; will retry");
                }
                Err(e) if startup => {
                    return Err(LinkError::Network {
                        name: name.clone(),
                        source: Box::new(e),
                    })
                }
                Err(e) => {
                    tracing::error!(network = %name, error = %e, "cannot serve network");
                    self.failed.insert(name.clone(), def.clone());
                }
            }
        }

        let names: Vec<String> = self.served.keys().cloned().collect();
        if self.registered.as_ref() != Some(&names) {
            match handle.set_networks(names.clone()).await {
                Ok(()) => self.registered = Some(names),
                Err(e) => {
                    tracing::warn!(error = %e, "could not update the served networks in the store")
                }
            }
        }

        // Names: every served network's endpoint records; the cluster's other networks are
        // domains never forwarded.
        let names = self.engine.names();
        names.set_reserved(
            view.networks
                .iter()
                .filter(|n| !self.served.contains_key(&n.name))
                .map(|n| n.name.clone()),
        );
        for name in self.served.keys() {
            names.set_endpoints(name, endpoint_names(view, name, &self.opts.node_id));
        }

        for (name, served) in self.served.iter_mut() {
            let vni = served.def.vni;
            let peers = view.flood_list(vni, &me);
            if served.peers.as_ref() != Some(&peers) {
                tracing::info!(network = %name, vni, ?peers, "cluster peers");
                self.engine.set_cluster_peers(name, peers.clone());
                served.peers = Some(peers);
            }
            if self.opts.publish_macs {
                let macs = peer_macs(view, vni, &me, self.opts.vtep);
                if served.macs.as_ref() != Some(&macs) {
                    tracing::debug!(network = %name, vni, count = macs.len(), "static MACs from peers");
                    self.engine.set_cluster_macs(name, macs.clone());
                    served.macs = Some(macs);
                }
            }
            if served.def.encrypted {
                self.encryption
                    .update(&self.engine, view, name, &mut served.ring);
            }
        }
        self.encryption
            .acknowledge(handle, self.served.iter().map(|(n, s)| (n, &s.ring)))
            .await;
        self.heal_endpoints(view, handle);
        self.firewall.update(&view.live_vteps()).await;
        Ok(())
    }

    /// Puts this host's endpoint records back when the store lost them: all of them when the
    /// membership had to take a new lease (records under the old one are gone with it), and any
    /// the view no longer lists (deleted by hand, or lost with the store's data).
    fn heal_endpoints(&mut self, view: &ClusterView, handle: &MembershipHandle) {
        if !view.store_healthy {
            return;
        }
        let lease = handle.lease_id();
        let new_lease = lease != self.endpoints_lease;
        self.endpoints_lease = lease;
        for name in self.served.keys() {
            let listed: BTreeSet<&str> = view
                .endpoints_in(name)
                .filter(|e| e.node == self.opts.node_id)
                .map(|e| e.id.as_str())
                .collect();
            let missing: BTreeSet<String> = self
                .engine
                .local_endpoints(name)
                .into_iter()
                .map(|e| e.id)
                .filter(|id| !listed.contains(id.as_str()))
                .collect();
            let changed = self.unlisted.get(name) != Some(&missing);
            if new_lease || (changed && !missing.is_empty()) {
                tracing::info!(network = %name, missing = missing.len(), new_lease, "re-asserting this host's endpoint records");
                self.engine.resume_endpoints(name);
            }
            self.unlisted.insert(name.clone(), missing);
        }
        self.unlisted
            .retain(|name, _| self.served.contains_key(name));
    }

    /// Starts serving `def`: address (given or allocated), TAP, and the published MAC.
    async fn add(
        &mut self,
        def: &NetworkDef,
        ring: Option<&NetworkKeys>,
        handle: &MembershipHandle,
    ) -> Result<(), LinkError> {
        if def.encrypted && ring.is_none() {
            // `servable` keeps these out; never let one through in plaintext.
            return Err(LinkError::Cluster(vxnet_cluster::Error::Invalid(format!(
                "network {} is encrypted but has no valid key ring",
                def.name
            ))));
        }
        let single = self.opts.networks.len() == 1;
        let address = match self.opts.address.filter(|_| single) {
            Some(given) => {
                let in_subnet = ipam::subnet(def)?.is_some_and(|s| s.contains(&given.addr()));
                if in_subnet
                    && !ipam::claim(&self.store, def, given.addr(), &self.opts.node_id).await?
                {
                    tracing::warn!(network = %def.name, address = %given, "--address is allocated to another node too");
                }
                Some(given)
            }
            None => ipam::address_for(&self.store, def, &self.opts.node_id).await?,
        };
        let dev = match self.opts.dev.clone().filter(|_| single) {
            Some(dev) => dev,
            None => tap_name(&def.name),
        };
        let vni = Vni::new(def.vni)?;
        let mac = match self.opts.mac.filter(|_| single) {
            Some(given) => given,
            None => stable_mac(&self.opts.cluster_id, &self.opts.node_id, &def.name),
        };
        self.engine.add_network(NetworkConfig {
            name: def.name.clone(),
            vni,
            dev: dev.clone(),
            address,
            remotes: self.opts.remotes.clone(),
            mtu: self.opts.mtu,
            allow_vlan: self.opts.allow_vlan,
            mac: Some(mac),
            // The engine's --bum-rate applies.
            bum_rate: None,
            // `servable` let an encrypted network through only with its ring.
            encryption: ring.filter(|_| def.encrypted).map(engine_ring),
            // Bridge mode, always: `--bridge` names the bridge of the single `--network`;
            // otherwise its name is derived from the network's, like the TAP's.
            bridge: Some(
                self.opts
                    .bridge
                    .clone()
                    .filter(|_| single)
                    .unwrap_or_else(|| bridge_name(&def.name)),
            ),
            // The cluster's IPAM hands out the addresses.
            pool: None,
            // Cluster names come from the endpoint records, not from static tables.
            hosts: Vec::new(),
        })?;
        tracing::info!(
            network = %def.name,
            vni = def.vni,
            %dev,
            address = %address.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            "serving cluster network"
        );
        let mut published = false;
        if self.opts.publish_macs {
            if let Some(mac) = self.engine.local_mac(&def.name) {
                // Failure here only costs flooding; the membership re-publishes after an outage.
                match handle.publish_macs(def.vni, &[mac.octets()]).await {
                    Ok(()) => published = true,
                    Err(e) => {
                        tracing::warn!(network = %def.name, error = %e, "could not publish the TAP's MAC")
                    }
                }
            }
        }
        self.served.insert(
            def.name.clone(),
            Served {
                def: def.clone(),
                peers: None,
                macs: None,
                published,
                ring: ring.filter(|_| def.encrypted).cloned(),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vxnet_cluster::{MacEntry, Member};

    #[test]
    fn stable_macs_are_local_unicast_and_distinct() {
        let a = stable_mac("c1", "node-a", "blue");
        assert_eq!(a, stable_mac("c1", "node-a", "blue"));
        assert!(a.is_unicast());
        assert_eq!(a.0[0] & 0x03, 0x02, "locally administered unicast: {a}");
        for other in [
            stable_mac("c1", "node-b", "blue"),
            stable_mac("c1", "node-a", "red"),
            stable_mac("c2", "node-a", "blue"),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn tap_names_fit_and_differ() {
        assert_eq!(tap_name("blue"), "vx-blue");
        assert_eq!(tap_name("twelve-chars"), "vx-twelve-chars");
        let a = tap_name("production-frontend");
        let b = tap_name("production-backend");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("vx.prod."), "{a}");
        assert_ne!(a, b);
        assert_eq!(a, tap_name("production-frontend"));
        for n in ["a", "x.y_z-0", "0123456789abcdef0123", &"n".repeat(64)] {
            let t = tap_name(n);
            assert!(t.len() <= 15 && !t.contains('/') && !t.contains(':') && !t.contains(' '));
        }
    }

    fn view() -> ClusterView {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        ClusterView {
            cluster_id: "c".into(),
            members: vec![
                Member {
                    node_id: "a".into(),
                    vtep: Some(ip("10.0.0.1")),
                    networks: vec!["blue".into()],
                    role: None,
                    alive: true,
                    key_epochs: Default::default(),
                },
                Member {
                    node_id: "b".into(),
                    vtep: Some(ip("10.0.0.2")),
                    networks: vec!["blue".into()],
                    role: None,
                    alive: true,
                    key_epochs: Default::default(),
                },
            ],
            networks: vec![
                NetworkDef {
                    name: "blue".into(),
                    vni: 4096,
                    subnet: None,
                    encrypted: false,
                },
                NetworkDef {
                    name: "red".into(),
                    vni: 4097,
                    subnet: None,
                    encrypted: false,
                },
            ],
            macs: vec![
                MacEntry {
                    vni: 4096,
                    mac: "02:00:00:00:00:01".into(),
                    vtep: ip("10.0.0.1"),
                    node_id: "a".into(),
                },
                MacEntry {
                    vni: 4096,
                    mac: "02:00:00:00:00:02".into(),
                    vtep: ip("10.0.0.2"),
                    node_id: "b".into(),
                },
                MacEntry {
                    vni: 4097,
                    mac: "02:00:00:00:00:03".into(),
                    vtep: ip("10.0.0.2"),
                    node_id: "b".into(),
                },
                MacEntry {
                    vni: 4096,
                    mac: "ff:ff:ff:ff:ff:ff".into(),
                    vtep: ip("10.0.0.2"),
                    node_id: "b".into(),
                },
            ],
            store_healthy: true,
            revision: 1,
            keys: Default::default(),
            ..ClusterView::default()
        }
    }

    #[test]
    fn desired_networks() {
        let v = view();
        let all: Vec<&str> = desired(&v, &[]).iter().map(|n| n.name.as_str()).collect();
        assert_eq!(all, ["blue", "red"]);
        let some: Vec<&str> = desired(&v, &["red".into(), "green".into()])
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(some, ["red"]);
    }

    fn endpoint(node: &str, name: &str, mac: &str) -> vxnet_cluster::EndpointRecord {
        vxnet_cluster::EndpointRecord {
            id: format!("{node}-{name}"),
            name: name.into(),
            aliases: vec!["api".into()],
            network: "blue".into(),
            addresses: vec!["10.1.0.9/24".into()],
            mac: mac.into(),
            node: node.into(),
            container_id: None,
            ifname: "eth0".into(),
            since: 0,
        }
    }

    #[test]
    fn endpoint_macs_point_at_their_live_hosts_and_ambiguous_ones_at_none() {
        let mut v = view();
        v.members.push(Member {
            node_id: "c".into(),
            vtep: Some("10.0.0.3".parse().unwrap()),
            networks: vec!["blue".into()],
            role: None,
            alive: true,
            key_epochs: Default::default(),
        });
        v.endpoints = vec![
            endpoint("b", "web", "02:00:00:00:00:10"),
            // This host's own endpoint: behind the local bridge.
            endpoint("a", "own", "02:00:00:00:00:11"),
            // A host that is not live: nowhere to send to.
            endpoint("gone", "old", "02:00:00:00:00:12"),
            // Host b's TAP MAC claimed by an endpoint on c: ambiguous, neither gets an entry.
            endpoint("c", "dup", "02:00:00:00:00:02"),
        ];
        let macs = peer_macs(&v, 4096, "a", "10.0.0.1".parse().unwrap());
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(macs, vec![("02:00:00:00:00:10".parse().unwrap(), b)]);
        let names = endpoint_names(&v, "blue", "a");
        assert_eq!(names.len(), 4);
        // Only this host's own endpoint answers ARP for itself.
        let here: Vec<&str> = names
            .iter()
            .filter(|n| n.here)
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(here, ["own"]);
        assert_eq!(
            names[0].addresses,
            vec!["10.1.0.9".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(names[0].aliases, ["api"]);
        assert!(endpoint_names(&v, "red", "a").is_empty());
    }

    #[test]
    fn peer_macs_exclude_own_other_vnis_and_group_addresses() {
        let v = view();
        let macs = peer_macs(&v, 4096, "a", "10.0.0.1".parse().unwrap());
        assert_eq!(
            macs,
            vec![(
                "02:00:00:00:00:02".parse().unwrap(),
                "10.0.0.2".parse().unwrap()
            )]
        );
    }
}
