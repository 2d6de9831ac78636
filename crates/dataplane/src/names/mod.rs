//! The engine's name service: where names come from, the tables built from them, and the DNS
//! servers on each network's gateway address ([`serve`]).
//!
//! Sources, per network: the host entries of the configuration (`[[network.host]]`), entries
//! added at run time (`vxnet name add`), the endpoint records of the cluster (or of local
//! attachments), and the engine's own host name on the gateway address. Every change rebuilds
//! the DNS tables ([`vxnet_names::Zones`]) and the networks' neighbour tables (IP -> MAC, for
//! ARP/ND answered locally) from all of them at once; an entry DNS cannot carry or with an
//! address outside the network is refused with one warning and never served.

pub mod serve;
mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use vxnet_encap::MacAddr;
use vxnet_names::{Entry, NameError, NetworkNames, Zones};

use crate::forward::Forwarder;
use crate::neighbors::Neighbor;
use crate::state::lock;

/// One named host of a network: a container, a static host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub addresses: Vec<IpAddr>,
    /// With a MAC, ARP/ND for the addresses is answered by the engine.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_mac"
    )]
    pub mac: Option<MacAddr>,
    /// An endpoint attached on this host (see [`crate::neighbors::Neighbor::here`]); only
    /// endpoint records say so.
    #[serde(skip)]
    pub here: bool,
}

/// A MAC as its text (`02:42:ac:11:00:02`) in JSON and TOML; multicast and zero refused.
mod optional_mac {
    use serde::{Deserialize, Deserializer, Serializer};
    use vxnet_encap::MacAddr;

    pub(super) fn serialize<S: Serializer>(mac: &Option<MacAddr>, s: S) -> Result<S::Ok, S::Error> {
        match mac {
            Some(mac) => s.collect_str(mac),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<MacAddr>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| crate::config::parse_unicast_mac(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Where a listed name comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameSource {
    /// The engine's own host name on the gateway address.
    Host,
    /// `[[network.host]]` in the configuration.
    Config,
    /// `vxnet name add`.
    Added,
    /// Endpoint records (the cluster's, or local attachments).
    Endpoint,
}

/// A row of `vxnet name ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRow {
    pub network: String,
    pub source: NameSource,
    #[serde(flatten)]
    pub entry: HostEntry,
}

/// Why `vxnet name add|rm` was refused.
#[derive(Debug, thiserror::Error)]
pub enum NameServiceError {
    #[error("no network {0:?} on this engine")]
    UnknownNetwork(String),
    #[error("network {0:?} has no address on this host: it has no name service")]
    NoAddress(String),
    #[error(transparent)]
    Invalid(#[from] NameError),
    #[error("{name:?} is already a name in network {network:?} ({source_name:?})")]
    Taken {
        name: String,
        network: String,
        source_name: String,
    },
    #[error("no name {name:?} added in network {network:?}")]
    NotFound { name: String, network: String },
    #[error("cannot save the added names: {0}")]
    Save(std::io::Error),
}

#[derive(Debug, Default)]
struct NetworkSources {
    /// The host's overlay address and prefix (the gateway of its endpoints).
    gateway: Option<IpNet>,
    config: Vec<HostEntry>,
    endpoints: Vec<HostEntry>,
}

#[derive(Debug, Default)]
struct Sources {
    networks: BTreeMap<String, NetworkSources>,
    /// `vxnet name add` entries by network, then name: kept while a network is rebuilt or not
    /// served for a while, dropped when it is removed for good, saved in the state dir.
    added: BTreeMap<String, BTreeMap<String, HostEntry>>,
    /// `<state dir>/names.json`, once the engine has a state dir.
    file: Option<std::path::PathBuf>,
    /// Names of networks this engine does not serve (the cluster's others): never forwarded.
    reserved: BTreeSet<String>,
    /// Entries already warned about, so a bad record is logged once, not on every rebuild.
    warned: BTreeSet<String>,
}

/// The name service state of one engine.
#[derive(Debug)]
pub struct NameService {
    sources: Mutex<Sources>,
    zones: ArcSwap<Zones>,
    neighbors: ArcSwap<HashMap<String, Vec<(IpAddr, Neighbor)>>>,
    /// The generation whose networks get the neighbour entries (see [`attach`](Self::attach)).
    forwarder: arc_swap::ArcSwapOption<Forwarder>,
    /// Woken when the set of networks (and so of DNS sockets) changes.
    pub(crate) changed: tokio::sync::Notify,
    pub counters: vxnet_names::Counters,
    host_name: Option<String>,
}

impl Default for NameService {
    fn default() -> Self {
        NameService::new(own_host_name())
    }
}

/// The first label of the kernel's host name, when it is one DNS can carry.
fn own_host_name() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let label = text.trim().split('.').next()?.to_string();
    vxnet_names::valid_label(&label).ok().map(|()| label)
}

impl NameService {
    pub fn new(host_name: Option<String>) -> Self {
        NameService {
            sources: Mutex::new(Sources::default()),
            zones: ArcSwap::from_pointee(Zones::new()),
            neighbors: ArcSwap::from_pointee(HashMap::new()),
            forwarder: arc_swap::ArcSwapOption::empty(),
            changed: tokio::sync::Notify::new(),
            counters: vxnet_names::Counters::default(),
            host_name,
        }
    }

    /// The tables of this moment.
    pub fn zones(&self) -> Arc<Zones> {
        self.zones.load_full()
    }

    /// A network served from now on (or again, with new settings): its gateway address and the
    /// configuration's host entries. Entries added at run time and endpoints stay.
    pub fn set_network(&self, network: &str, gateway: Option<IpNet>, config: Vec<HostEntry>) {
        let mut sources = lock(&self.sources);
        let entry = sources.networks.entry(network.to_string()).or_default();
        entry.gateway = gateway;
        entry.config = config;
        self.rebuild(&mut sources);
        self.changed.notify_one();
    }

    /// A network no longer served: its names go.
    pub fn remove_network(&self, network: &str) {
        let mut sources = lock(&self.sources);
        sources.networks.remove(network);
        self.rebuild(&mut sources);
        self.changed.notify_one();
    }

    /// The gateway address of every served network that has one.
    pub fn gateways(&self) -> Vec<(String, IpNet)> {
        let sources = lock(&self.sources);
        sources
            .networks
            .iter()
            .filter_map(|(name, n)| n.gateway.map(|g| (name.clone(), g)))
            .collect()
    }

    /// Replaces the endpoint entries of `network` (from the records). Kept for a network not
    /// served yet: they are answered once it is.
    pub fn set_endpoints(&self, network: &str, endpoints: Vec<HostEntry>) {
        let mut sources = lock(&self.sources);
        let n = sources.networks.entry(network.to_string()).or_default();
        if n.endpoints == endpoints {
            return;
        }
        n.endpoints = endpoints;
        self.rebuild(&mut sources);
    }

    /// The names of networks this engine does not serve (never forwarded, always NXDOMAIN).
    pub fn set_reserved(&self, networks: impl IntoIterator<Item = String>) {
        let mut sources = lock(&self.sources);
        let reserved: BTreeSet<String> = networks.into_iter().collect();
        if sources.reserved == reserved {
            return;
        }
        sources.reserved = reserved;
        self.rebuild(&mut sources);
    }

    /// Keeps the names added at run time in `dir` (`names.json`) from now on, and takes back
    /// the ones a previous run kept there.
    pub fn keep_in(&self, dir: &std::path::Path) {
        let mut sources = lock(&self.sources);
        let file = store::path(dir);
        for (network, entries) in store::load(&file) {
            let kept = sources.added.entry(network).or_default();
            for entry in entries {
                kept.entry(entry.name.clone()).or_insert(entry);
            }
        }
        sources.file = Some(file);
        self.rebuild(&mut sources);
    }

    /// A network removed for good: the names added to it go too.
    pub fn forget_network(&self, network: &str) {
        let mut sources = lock(&self.sources);
        sources.networks.remove(network);
        if sources.added.remove(network).is_some() {
            if let Err(e) = store::save(&sources) {
                tracing::warn!(error = %e, "cannot save the added names");
            }
        }
        self.rebuild(&mut sources);
        self.changed.notify_one();
    }

    /// `vxnet name add`: refused when invalid or when the name is already held in the network.
    pub fn add(&self, network: &str, entry: HostEntry) -> Result<(), NameServiceError> {
        let mut sources = lock(&self.sources);
        let Some(n) = sources.networks.get(network) else {
            return Err(NameServiceError::UnknownNetwork(network.to_string()));
        };
        let Some(gateway) = n.gateway else {
            return Err(NameServiceError::NoAddress(network.to_string()));
        };
        // Checked against a table of its own first: the same errors a record would get.
        let mut probe = NetworkNames::new(network, vec![gateway.trunc()]);
        probe.insert(&to_entry(&entry))?;
        let lower = |e: &HostEntry| -> Vec<String> {
            std::iter::once(&e.name)
                .chain(&e.aliases)
                .map(|n| n.to_ascii_lowercase())
                .collect()
        };
        let wanted = lower(&entry);
        // Replacing one's own added entry is fine; taking a name someone else holds is not.
        let clash = self.rows_of(network, n, &sources).into_iter().find(|row| {
            let own = row.source == NameSource::Added && row.entry.name == entry.name;
            !own && lower(&row.entry).iter().any(|held| wanted.contains(held))
        });
        if let Some(row) = clash {
            return Err(NameServiceError::Taken {
                name: entry.name,
                network: network.to_string(),
                source_name: row.entry.name,
            });
        }
        let added = sources.added.entry(network.to_string()).or_default();
        let previous = added.insert(entry.name.clone(), entry.clone());
        if let Err(e) = store::save(&sources) {
            let added = sources.added.entry(network.to_string()).or_default();
            match previous {
                Some(old) => added.insert(entry.name, old),
                None => added.remove(&entry.name),
            };
            return Err(NameServiceError::Save(e));
        }
        self.rebuild(&mut sources);
        Ok(())
    }

    /// `vxnet name rm`: only names added at run time can be removed.
    pub fn remove(&self, network: &str, name: &str) -> Result<(), NameServiceError> {
        let mut sources = lock(&self.sources);
        if !sources.networks.contains_key(network) {
            return Err(NameServiceError::UnknownNetwork(network.to_string()));
        }
        let Some(old) = sources.added.get_mut(network).and_then(|a| a.remove(name)) else {
            return Err(NameServiceError::NotFound {
                name: name.to_string(),
                network: network.to_string(),
            });
        };
        if let Err(e) = store::save(&sources) {
            sources
                .added
                .entry(network.to_string())
                .or_default()
                .insert(name.to_string(), old);
            return Err(NameServiceError::Save(e));
        }
        self.rebuild(&mut sources);
        Ok(())
    }

    /// `vxnet name ls`: every name of `network` (or of all), by network, source and name.
    pub fn list(&self, network: Option<&str>) -> Vec<NameRow> {
        let sources = lock(&self.sources);
        let mut rows: Vec<NameRow> = sources
            .networks
            .iter()
            .filter(|(name, n)| {
                n.gateway.is_some() && network.is_none_or(|wanted| wanted == name.as_str())
            })
            .flat_map(|(name, n)| self.rows_of(name, n, &sources))
            .collect();
        rows.sort_by(|a, b| {
            (&a.network, a.source, &a.entry.name).cmp(&(&b.network, b.source, &b.entry.name))
        });
        rows
    }

    fn rows_of(&self, network: &str, n: &NetworkSources, sources: &Sources) -> Vec<NameRow> {
        let row = |source, entry: &HostEntry| NameRow {
            network: network.to_string(),
            source,
            entry: entry.clone(),
        };
        let host = self
            .host_name
            .as_ref()
            .zip(n.gateway)
            .map(|(name, gw)| HostEntry {
                name: name.clone(),
                aliases: Vec::new(),
                addresses: vec![gw.addr()],
                mac: None,
                here: false,
            });
        let added = sources
            .added
            .get(network)
            .into_iter()
            .flat_map(|a| a.values());
        host.iter()
            .map(|e| row(NameSource::Host, e))
            .chain(n.config.iter().map(|e| row(NameSource::Config, e)))
            .chain(added.map(|e| row(NameSource::Added, e)))
            .chain(n.endpoints.iter().map(|e| row(NameSource::Endpoint, e)))
            .collect()
    }

    /// Rebuilds the DNS tables and the neighbour entries from every source.
    fn rebuild(&self, sources: &mut Sources) {
        let mut zones = Zones::new();
        let mut neighbors = HashMap::new();
        let mut warnings = Vec::new();
        for (network, n) in &sources.networks {
            let Some(gateway) = n.gateway else {
                continue;
            };
            let mut names = NetworkNames::new(network, vec![gateway.trunc()]);
            let mut table = Vec::new();
            for row in self.rows_of(network, n, sources) {
                match names.insert(&to_entry(&row.entry)) {
                    Ok(()) => {
                        if let Some(mac) = row.entry.mac {
                            let owner = Neighbor {
                                mac,
                                here: row.entry.here,
                            };
                            table.extend(row.entry.addresses.iter().map(|a| (*a, owner)));
                        }
                    }
                    Err(e) => warnings.push(format!("network {network}: {e}; not served")),
                }
            }
            zones.add(names);
            zones.reserve(network);
            neighbors.insert(network.clone(), table);
        }
        for other in &sources.reserved {
            zones.reserve(other);
        }
        for warning in warnings {
            if sources.warned.insert(warning.clone()) {
                tracing::warn!("{warning}");
            }
        }
        self.zones.store(Arc::new(zones));
        self.neighbors.store(Arc::new(neighbors));
        if let Some(forwarder) = self.forwarder.load_full() {
            self.apply_neighbors(&forwarder);
        }
    }

    /// The generation now serving: its networks get the neighbour entries, now and after
    /// every rebuild.
    pub(crate) fn attach(&self, forwarder: Arc<Forwarder>) {
        self.apply_neighbors(&forwarder);
        self.forwarder.store(Some(forwarder));
    }

    fn apply_neighbors(&self, forwarder: &Forwarder) {
        let neighbors = self.neighbors.load();
        for network in forwarder.networks() {
            let entries = neighbors.get(&network.settings.name);
            network
                .neighbors
                .replace(entries.into_iter().flatten().copied());
        }
    }
}

fn to_entry(host: &HostEntry) -> Entry {
    Entry {
        name: host.name.clone(),
        aliases: host.aliases.clone(),
        addresses: host.addresses.clone(),
    }
}

#[cfg(test)]
mod tests;
