//! What the name service and the endpoint's resolver get from an endpoint.

use super::Endpoints;
use crate::control::proto::{Dns, Endpoint};
use crate::state::lock;

impl Endpoints {
    /// Static mode: hands the endpoints of `network` kept here to the name service (names,
    /// and ARP/ND answers from their MACs). Cluster mode leaves it to the store's records.
    pub(super) fn publish_names(&self, network: &str) {
        if self.registry.is_some() {
            return;
        }
        let entries = lock(&self.book)
            .in_network(network)
            .map(|e| host_entry(&e.endpoint))
            .collect();
        self.names.set_endpoints(network, entries);
    }
}

/// The endpoint as the name service holds it: its name, aliases, address and MAC.
fn host_entry(e: &Endpoint) -> crate::names::HostEntry {
    crate::names::HostEntry {
        name: e.name.clone(),
        aliases: e.aliases.clone(),
        addresses: vec![e.address.addr()],
        mac: e.mac.parse().ok(),
        // Static mode: the endpoints kept here are this host's.
        here: true,
    }
}

/// The endpoint with its resolver: the network's DNS service on the gateway (this host's
/// address on the network), and the network's name as the search domain so that bare names
/// and `NAME.NETWORK` both resolve. A network name that is no DNS label has no domain.
pub(super) fn with_dns(mut e: Endpoint) -> Endpoint {
    let domain = vxnet_names::valid_label(&e.network)
        .is_ok()
        .then(|| e.network.to_ascii_lowercase());
    e.dns = Some(Dns {
        nameservers: vec![e.gateway],
        search: domain.iter().cloned().collect(),
        domain: domain.unwrap_or_default(),
    });
    e
}
