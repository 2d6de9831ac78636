//! The engine's endpoint [`Registry`] in cluster mode: every endpoint's record and address claim
//! in the store (`node/<node>/endpoints/…` and `node/<node>/addrs/…`, written in one etcd
//! transaction by [`claims`]) under the membership's lease, so a host that dies takes its
//! endpoints with it within the lease TTL, and a restarted engine puts them back
//! ([`Registry::reassert`]) from its state dir.
//!
//! The engine serves endpoint requests from the start, but the store is reached only once the
//! cluster link has registered this host: until [`StoreRegistry::connect`], requests that need
//! the store are refused (the CNI plugin's STATUS reports the engine not ready meanwhile).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use tokio::sync::watch;
use vxnet_cluster::claims;
use vxnet_cluster::membership::LeaseRef;
use vxnet_cluster::{ClaimKind, ClusterView, EndpointRecord, NetworkDef, Store};
use vxnet_dataplane::control::proto::Endpoint;
use vxnet_dataplane::endpoint::{Registry, RegistryError, RegistryFuture};

/// What the registry needs of the running membership.
#[derive(Debug)]
struct Linked {
    store: Store,
    lease: LeaseRef,
    view: watch::Receiver<ClusterView>,
}

/// The cluster's endpoint registry of one node (see the module documentation).
#[derive(Debug)]
pub struct StoreRegistry {
    node: String,
    linked: OnceLock<Linked>,
}

impl StoreRegistry {
    pub fn new(node: &str) -> StoreRegistry {
        StoreRegistry {
            node: node.to_owned(),
            linked: OnceLock::new(),
        }
    }

    /// Called once by the cluster link when this host is registered.
    pub fn connect(&self, store: Store, lease: LeaseRef, view: watch::Receiver<ClusterView>) {
        let _ = self.linked.set(Linked { store, lease, view });
    }

    fn linked(&self) -> Result<&Linked, RegistryError> {
        self.linked.get().ok_or_else(|| {
            RegistryError::Store("this host is not registered with the cluster yet".into())
        })
    }

    fn network(&self, name: &str) -> Result<(&Linked, NetworkDef), RegistryError> {
        let linked = self.linked()?;
        let def =
            linked.view.borrow().network(name).cloned().ok_or_else(|| {
                RegistryError::Store(format!("network {name} is not in the cluster"))
            })?;
        Ok((linked, def))
    }
}

/// The store's record of `e` (its address placeholder is filled in by the claim).
fn record_of(e: &Endpoint) -> EndpointRecord {
    EndpointRecord {
        id: e.id.clone(),
        name: e.name.clone(),
        aliases: e.aliases.clone(),
        network: e.network.clone(),
        addresses: vec![e.address.to_string()],
        mac: e.mac.clone(),
        node: e.node.clone(),
        container_id: e.container_id.clone(),
        ifname: e.ifname.clone(),
        since: e.since,
    }
}

/// An endpoint as the cluster lists it: what its record says, its gateway being its node's
/// address on the network. The namespace, MTU and host-side veth are known only on its host.
fn endpoint_of(view: &ClusterView, r: &EndpointRecord) -> Option<Endpoint> {
    let address = r.addresses.first()?.parse().ok()?;
    let gateway = view
        .addresses_in(&r.network)
        .find(|a| a.node == r.node && a.kind == ClaimKind::Host)
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.address);
    Some(Endpoint {
        id: r.id.clone(),
        name: r.name.clone(),
        aliases: r.aliases.clone(),
        network: r.network.clone(),
        address,
        gateway,
        mac: r.mac.clone(),
        ifname: r.ifname.clone(),
        netns: String::new(),
        node: r.node.clone(),
        container_id: r.container_id.clone(),
        since: r.since,
        mtu: 0,
        host_ifname: String::new(),
        dns: None,
    })
}

fn store_error(e: vxnet_cluster::Error) -> RegistryError {
    use vxnet_cluster::Error;
    match e {
        Error::AddressTaken { address, .. } => RegistryError::AddressTaken(address),
        Error::EndpointNameTaken { name, .. } => RegistryError::NameTaken(name),
        Error::SubnetExhausted { .. } => RegistryError::Exhausted,
        other => RegistryError::Store(other.to_string()),
    }
}

/// The first address of a record the store returned.
fn address_of(r: &EndpointRecord) -> Result<IpAddr, RegistryError> {
    r.ips()
        .next()
        .ok_or_else(|| RegistryError::Store(format!("endpoint {} has no address", r.id)))
}

impl Registry for StoreRegistry {
    fn node(&self) -> String {
        self.node.clone()
    }

    fn publish<'a>(&'a self, endpoint: &'a Endpoint, given: bool) -> RegistryFuture<'a, IpAddr> {
        Box::pin(async move {
            let (linked, def) = self.network(&endpoint.network)?;
            let want = given.then(|| endpoint.address.addr());
            let record = claims::publish_endpoint(
                &linked.store,
                &def,
                linked.lease.id(),
                &record_of(endpoint),
                want,
            )
            .await
            .map_err(store_error)?;
            address_of(&record)
        })
    }

    fn withdraw<'a>(&'a self, endpoint: &'a Endpoint) -> RegistryFuture<'a, ()> {
        Box::pin(async move {
            let linked = self.linked()?;
            claims::withdraw_endpoint(&linked.store, &self.node, &endpoint.network, &endpoint.id)
                .await
                .map_err(store_error)?;
            Ok(())
        })
    }

    fn reassert<'a>(&'a self, endpoint: &'a Endpoint) -> RegistryFuture<'a, ()> {
        Box::pin(async move {
            let (linked, def) = self.network(&endpoint.network)?;
            claims::reassert_endpoint(&linked.store, &def, linked.lease.id(), &record_of(endpoint))
                .await
                .map_err(store_error)?;
            Ok(())
        })
    }

    fn list<'a>(&'a self, network: Option<&'a str>) -> RegistryFuture<'a, Vec<Endpoint>> {
        Box::pin(async move {
            let linked = self.linked()?;
            let view = linked.view.borrow();
            Ok(view
                .endpoints
                .iter()
                .filter(|r| network.is_none_or(|n| r.network == n))
                .filter_map(|r| endpoint_of(&view, r))
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_endpoints_carry_the_same_fields() {
        let e = Endpoint {
            id: "e1".into(),
            name: "web".into(),
            aliases: vec!["www".into()],
            network: "blue".into(),
            address: "10.1.0.7/24".parse().unwrap(),
            gateway: "10.1.0.1".parse().unwrap(),
            mac: "02:00:00:00:00:07".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            node: "n1".into(),
            container_id: Some("c1".into()),
            since: 5,
            mtu: 1450,
            host_ifname: "vxe-1".into(),
            dns: None,
        };
        let r = record_of(&e);
        r.validate().unwrap();
        let view = ClusterView {
            addresses: vec![vxnet_cluster::AddressEntry {
                network: "blue".into(),
                address: "10.1.0.1".parse().unwrap(),
                node: "n1".into(),
                kind: ClaimKind::Host,
                endpoint: None,
            }],
            ..ClusterView::default()
        };
        let back = endpoint_of(&view, &r).unwrap();
        assert_eq!(
            back,
            Endpoint {
                netns: String::new(),
                mtu: 0,
                host_ifname: String::new(),
                ..e
            }
        );
    }
}
