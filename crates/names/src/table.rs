//! The names of one network and of every network an engine serves.
//!
//! A table is an immutable snapshot: the engine rebuilds it when a record or a static host
//! changes (a few thousand entries take well under a millisecond) and swaps it in whole, so a
//! query never sees half an update.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

/// Why a name, an alias or a host entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty, longer than one DNS label (63 bytes), or with a character outside `a-z A-Z 0-9 - _`,
    /// or starting/ending with '-'.
    #[error("{0:?} is not a name DNS can carry: 1-63 characters of a-z, A-Z, 0-9, '-', '_', not starting or ending with '-'")]
    Label(String),
    /// An address outside every subnet of the network: answering it would let one network's
    /// record claim another network's address.
    #[error("address {address} of {name:?} is outside network {network}'s subnets")]
    Outside {
        /// The entry's name.
        name: String,
        /// The refused address.
        address: IpAddr,
        /// The network.
        network: String,
    },
    /// An entry without any address has nothing to answer.
    #[error("{0:?} has no address")]
    NoAddress(String),
}

/// Checks that `label` is one DNS label a resolver can ask for: the rule for endpoint names,
/// aliases, host names and network names used as domains.
pub fn valid_label(label: &str) -> Result<(), NameError> {
    let bytes = label.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-');
    if ok {
        Ok(())
    } else {
        Err(NameError::Label(label.to_owned()))
    }
}

/// One named thing of a network: an endpoint (container), a static host, or the engine's own
/// host on its gateway address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name; the first label of the PTR answer for each of its addresses.
    pub name: String,
    /// More names for the same addresses (shared aliases answer every holder's addresses).
    pub aliases: Vec<String>,
    /// IPv4 and/or IPv6 addresses.
    pub addresses: Vec<IpAddr>,
}

/// The names of one network.
#[derive(Debug, Clone)]
pub struct NetworkNames {
    network: String,
    /// Lower-case network name when it is a valid label: names also answer as `NAME.NETWORK`.
    domain: Option<String>,
    subnets: Vec<IpNet>,
    /// Lower-case name or alias -> addresses (in insertion order; shuffled per answer).
    by_name: HashMap<String, Vec<IpAddr>>,
    /// Address -> the name of the entry that holds it (the first one inserted wins).
    by_address: HashMap<IpAddr, String>,
}

impl NetworkNames {
    /// An empty table of `network` whose addresses lie in `subnets`.
    pub fn new(network: &str, subnets: Vec<IpNet>) -> Self {
        let domain = valid_label(network)
            .is_ok()
            .then(|| network.to_ascii_lowercase());
        NetworkNames {
            network: network.to_owned(),
            domain,
            subnets: subnets.into_iter().map(|net| net.trunc()).collect(),
            by_name: HashMap::new(),
            by_address: HashMap::new(),
        }
    }

    /// Adds `entry`, checked whole first: a refused entry changes nothing.
    pub fn insert(&mut self, entry: &Entry) -> Result<(), NameError> {
        valid_label(&entry.name)?;
        for alias in &entry.aliases {
            valid_label(alias)?;
        }
        if entry.addresses.is_empty() {
            return Err(NameError::NoAddress(entry.name.clone()));
        }
        if let Some(address) = entry.addresses.iter().find(|a| !self.contains(**a)) {
            return Err(NameError::Outside {
                name: entry.name.clone(),
                address: *address,
                network: self.network.clone(),
            });
        }
        let names = std::iter::once(&entry.name).chain(&entry.aliases);
        let mut seen = HashSet::new();
        for name in names {
            let key = name.to_ascii_lowercase();
            if !seen.insert(key.clone()) {
                continue;
            }
            let held = self.by_name.entry(key).or_default();
            for address in &entry.addresses {
                if !held.contains(address) {
                    held.push(*address);
                }
            }
        }
        for address in &entry.addresses {
            self.by_address
                .entry(*address)
                .or_insert_with(|| entry.name.clone());
        }
        Ok(())
    }

    /// The network's name.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The lower-case domain label (`NAME.DOMAIN`), when the network's name is a valid label.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// Whether `address` lies in one of the network's subnets.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.subnets.iter().any(|net| net.contains(&address))
    }

    /// The addresses of a name or alias (any case).
    pub fn lookup(&self, name: &str) -> Option<&[IpAddr]> {
        self.by_name
            .get(&name.to_ascii_lowercase())
            .map(Vec::as_slice)
    }

    /// The name that holds `address` (its PTR answer's first label).
    pub fn name_of(&self, address: IpAddr) -> Option<&str> {
        self.by_address.get(&address).map(String::as_str)
    }

    /// Number of distinct names and aliases.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the table has no name.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The tables of every network an engine serves, plus the names of networks it does not serve
/// (a cluster's other networks): those domains are answered NXDOMAIN, never forwarded, so a
/// query cannot learn another network's names through the host's resolvers.
#[derive(Debug, Clone, Default)]
pub struct Zones {
    networks: HashMap<String, NetworkNames>,
    other_domains: HashSet<String>,
}

impl Zones {
    /// No network.
    pub fn new() -> Self {
        Zones::default()
    }

    /// Adds (or replaces) a served network's table.
    pub fn add(&mut self, names: NetworkNames) {
        self.networks.insert(names.network.clone(), names);
    }

    /// Marks `network` (served here or not) as a domain that is never forwarded.
    pub fn reserve(&mut self, network: &str) {
        if valid_label(network).is_ok() {
            self.other_domains.insert(network.to_ascii_lowercase());
        }
    }

    /// The table of a served network.
    pub fn network(&self, name: &str) -> Option<&NetworkNames> {
        self.networks.get(name)
    }

    /// Whether `label` is the domain of any known network (served or reserved).
    pub fn is_network_domain(&self, label: &str) -> bool {
        let label = label.to_ascii_lowercase();
        self.other_domains.contains(&label)
            || self.networks.values().any(|n| n.domain() == Some(&label))
    }

    /// Whether `address` lies in the subnet of any known network: reverse names of such
    /// addresses are answered (or NXDOMAIN), never forwarded.
    pub fn is_overlay_address(&self, address: IpAddr) -> bool {
        self.networks.values().any(|n| n.contains(address))
    }

    /// Total names over every served network.
    pub fn len(&self) -> usize {
        self.networks.values().map(NetworkNames::len).sum()
    }

    /// Whether no served network has a name.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NetworkNames {
        NetworkNames::new(
            "blue",
            vec![
                "10.7.0.0/24".parse().unwrap(),
                "fd00:7::/64".parse().unwrap(),
            ],
        )
    }

    fn entry(name: &str, aliases: &[&str], addresses: &[&str]) -> Entry {
        Entry {
            name: name.into(),
            aliases: aliases.iter().map(|a| (*a).into()).collect(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn labels_dns_cannot_carry_are_refused() {
        for bad in [
            "",
            "a.b",
            "-web",
            "web-",
            "wé",
            "a b",
            &"x".repeat(64),
            "a/b",
            "a\0",
        ] {
            assert!(valid_label(bad).is_err(), "{bad:?}");
        }
        for good in ["web", "Web-1", "redis_2", &"x".repeat(63), "7"] {
            assert!(valid_label(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn names_and_aliases_share_addresses_case_insensitively() {
        let mut names = net();
        names
            .insert(&entry("web1", &["web"], &["10.7.0.2", "fd00:7::2"]))
            .unwrap();
        names
            .insert(&entry("web2", &["WEB"], &["10.7.0.3"]))
            .unwrap();
        assert_eq!(names.lookup("WEB1").unwrap().len(), 2);
        assert_eq!(names.lookup("web").unwrap().len(), 3);
        assert_eq!(names.name_of("10.7.0.3".parse().unwrap()), Some("web2"));
        assert_eq!(names.domain(), Some("blue"));
    }

    #[test]
    fn an_address_of_another_network_is_refused_whole() {
        let mut names = net();
        let err = names
            .insert(&entry("evil", &["alias"], &["10.7.0.9", "10.8.0.2"]))
            .unwrap_err();
        assert!(matches!(err, NameError::Outside { .. }), "{err}");
        assert!(names.lookup("evil").is_none() && names.lookup("alias").is_none());
        assert!(names.name_of("10.7.0.9".parse().unwrap()).is_none());
        assert!(names
            .insert(&entry("bad name", &[], &["10.7.0.4"]))
            .is_err());
        assert!(names
            .insert(&entry("ok", &["bad.alias"], &["10.7.0.4"]))
            .is_err());
        assert!(names.insert(&entry("empty", &[], &[])).is_err());
        assert!(names.is_empty());
    }

    #[test]
    fn zones_know_every_network_domain() {
        let mut zones = Zones::new();
        zones.add(net());
        zones.reserve("red");
        zones.reserve("not a label");
        assert!(zones.is_network_domain("BLUE") && zones.is_network_domain("red"));
        assert!(!zones.is_network_domain("example"));
        assert!(zones.is_overlay_address("10.7.0.200".parse().unwrap()));
        assert!(!zones.is_overlay_address("10.8.0.1".parse().unwrap()));
    }
}
