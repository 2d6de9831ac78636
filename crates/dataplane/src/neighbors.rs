//! The neighbour table of a network: IP -> MAC of every endpoint and host the records name.
//!
//! Written by the control plane (static `[[network.host]]` entries, `vxnet name add`, the
//! cluster's endpoint records) as a whole new snapshot, read by the workers on every ARP
//! request or neighbour solicitation from the TAP. It is never learned from traffic: an ARP
//! reply a container sends for another container's address cannot change it (see
//! `worker::neighbors`, which drops such a reply).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use vxnet_encap::MacAddr;

/// The owner of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neighbor {
    pub mac: MacAddr,
    /// An endpoint attached on this host: it is on the network's bridge with the TAP, so it
    /// hears an ARP request itself and answers it.
    pub here: bool,
}

/// IP -> its owner, swapped whole.
#[derive(Debug, Default)]
pub struct NeighborTable {
    table: ArcSwap<HashMap<IpAddr, Neighbor>>,
}

impl NeighborTable {
    /// Replaces the table. Multicast, broadcast and all-zero MACs are left out: no reply may
    /// claim an address for them.
    pub fn replace(&self, entries: impl IntoIterator<Item = (IpAddr, Neighbor)>) {
        let table = entries
            .into_iter()
            .filter(|(_, owner)| owner.mac.is_unicast())
            .collect();
        self.table.store(Arc::new(table));
    }

    /// The owner recorded for `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<Neighbor> {
        self.table.load().get(&ip).copied()
    }

    /// Whether no address is known (the workers then skip the neighbour check entirely).
    pub fn is_empty(&self) -> bool {
        self.table.load().is_empty()
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.table.load().len()
    }

    /// Every entry, sorted by address (for `vxnet names`/tests).
    pub fn entries(&self) -> Vec<(IpAddr, Neighbor)> {
        let mut entries: Vec<_> = self.table.load().iter().map(|(i, n)| (*i, *n)).collect();
        entries.sort();
        entries
    }
}
