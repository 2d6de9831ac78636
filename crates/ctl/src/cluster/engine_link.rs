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
use vxnet_cluster::keyring::NetworkKeys;
use vxnet_cluster::membership::LeaveOnDrop;
use vxnet_cluster::{
    ipam, ClusterView, Membership, MembershipHandle, NetworkDef, Store, StoreAccess,
};
use vxnet_dataplane::{ClusterInfo, EngineControl, EngineError, NetworkConfig};
use vxnet_encap::{MacAddr, Vni};

use super::engine_keys::{engine_ring, AutoRotation, Encryption};
use super::engine_view::{bridge_name, desired, endpoint_names, peer_macs, stable_mac, tap_name};
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
