//! Node-scoped records: everything a node writes about itself lives under `node/<node_id>/`, a
//! prefix only that node's etcd user (and the managers) may write (see `roles.rs`), so no node
//! can overwrite or delete another's MAC, address claim or endpoint.
//!
//! | key (under the cluster prefix)          | value              | lifetime                       |
//! |-----------------------------------------|--------------------|--------------------------------|
//! | `node/<id>/macs/<vni>/<mac>`            | [`MacRecord`]      | the node's lease               |
//! | `node/<id>/addrs/<network>/<ip>`        | [`AddressClaim`]   | host: persistent; endpoint: lease |
//! | `node/<id>/endpoints/<network>/<ep_id>` | [`EndpointRecord`] | the node's lease (one txn with its claim) |
//! | `node/<id>/cursors/<network>`           | last address this node handed out (round-robin) | persistent |
//! | `node/<id>/names/<network>/<name>/<ep_id>` | empty (an index of endpoint names) | the node's lease (same txn) |
//!
//! The prefix ends in a slash: an etcd prefix grant on `node/ab` would also cover `node/abc`.
//! Uniqueness across nodes (an address, an endpoint name in a network) is decided by etcd's
//! create revision: the claim written first wins and every reader ignores the others (see
//! [`crate::claims`]).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::records::{
    key_mac, key_vni, name_ok, same, validate_name, validate_node_id, MacRecord, Record,
    RecordError,
};

/// A DNS name is at most 253 characters in text form (RFC 1035 §2.3.4, without the root dot).
const DNS_NAME_MAX: usize = 253;
const DNS_LABEL_MAX: usize = 63;
/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;
/// Runtimes' container ids are 64 hex digits; leave room for others' schemes.
const CONTAINER_ID_MAX: usize = 128;
/// Bounds what one record makes every reader hold.
const ALIASES_MAX: usize = 32;

/// `node/<node_id>/`: everything node `node_id` writes, and only it.
pub fn node_prefix(node_id: &str) -> String {
    format!("node/{node_id}/")
}

/// `node/<node_id>/macs/<vni>/<mac>`.
pub fn mac_key(node_id: &str, vni: u32, mac: &str) -> String {
    format!("node/{node_id}/macs/{vni}/{mac}")
}

/// `node/<node_id>/addrs/<network>/`: node `node_id`'s claims in `network`.
pub fn addrs_prefix(node_id: &str, network: &str) -> String {
    format!("node/{node_id}/addrs/{network}/")
}

/// `node/<node_id>/addrs/<network>/<ip>`.
pub fn addr_key(node_id: &str, network: &str, ip: IpAddr) -> String {
    format!("node/{node_id}/addrs/{network}/{ip}")
}

/// `node/<node_id>/endpoints/<network>/`.
pub fn endpoints_prefix(node_id: &str, network: &str) -> String {
    format!("node/{node_id}/endpoints/{network}/")
}

/// `node/<node_id>/endpoints/<network>/<endpoint_id>`.
pub fn endpoint_key(node_id: &str, network: &str, id: &str) -> String {
    format!("node/{node_id}/endpoints/{network}/{id}")
}

/// `node/<node_id>/cursors/<network>`: the address node `node_id` handed out last in `network`.
pub fn cursor_key(node_id: &str, network: &str) -> String {
    format!("node/{node_id}/cursors/{network}")
}

/// `node/<node_id>/names/<network>/<name>/`: node `node_id`'s endpoints named `name`
/// (lowercased, as DNS compares names). An index written with each endpoint, so a claimer finds
/// every node's holders of one name with one small range read per node instead of reading every
/// endpoint of the network. Readers of the view ignore it: the endpoint records decide.
pub fn names_prefix(node_id: &str, network: &str, name: &str) -> String {
    format!(
        "node/{node_id}/names/{network}/{}/",
        name.to_ascii_lowercase()
    )
}

/// `node/<node_id>/names/<network>/<name>/<endpoint_id>`: see [`names_prefix`].
pub fn name_key(node_id: &str, network: &str, name: &str, id: &str) -> String {
    format!("{}{id}", names_prefix(node_id, network, name))
}

/// What an address is claimed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClaimKind {
    /// The node's own overlay address (the gateway of its endpoints); persistent.
    Host,
    /// An endpoint's address, under the node's lease with the endpoint record.
    Endpoint,
}

/// `node/<id>/addrs/<network>/<ip>` (and, read only, the old layout's `ipam/<network>/<ip>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressClaim {
    pub node: String,
    pub kind: ClaimKind,
    /// The endpoint id holding it (kind `endpoint` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// One container (or namespace) interface attached to a network:
/// `node/<node>/endpoints/<network>/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Stable across re-attaches of the same interface (e.g. a hash of container id + ifname).
    pub id: String,
    /// The DNS name it answers to in the network (unique in the network).
    pub name: String,
    /// Further names; several endpoints may share an alias.
    #[serde(default)]
    pub aliases: Vec<String>,
    pub network: String,
    /// CIDR strings (the address with the subnet's prefix length), each claimed.
    pub addresses: Vec<String>,
    pub mac: String,
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    pub ifname: String,
    /// Unix seconds when it was attached.
    pub since: u64,
}

impl EndpointRecord {
    /// The addresses without their prefix lengths.
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addresses
            .iter()
            .filter_map(|a| a.parse::<IpNet>().ok().map(|n| n.addr()))
    }

    /// Every check [`crate::records::decode`] makes on an endpoint record, except that its key
    /// names it; callers run it before writing one.
    pub fn validate(&self) -> Result<(), RecordError> {
        if !name_ok(&self.id) {
            return Err(invalid("endpoint id", &self.id));
        }
        validate_dns_name(&self.name)?;
        if self.aliases.len() > ALIASES_MAX {
            return Err(invalid(
                "alias list (too many)",
                &self.aliases.len().to_string(),
            ));
        }
        for alias in &self.aliases {
            validate_dns_name(alias)?;
        }
        validate_name(&self.network)?;
        validate_node_id(&self.node)?;
        key_mac(&self.mac)?;
        if self.addresses.is_empty() || self.addresses.len() > 2 {
            return Err(invalid("address list", &self.addresses.join(",")));
        }
        for a in &self.addresses {
            let net: IpNet = a.parse().map_err(|_| invalid("endpoint address", a))?;
            if net.to_string() != *a || net.addr() == net.network() && net.prefix_len() < 31 {
                return Err(invalid("endpoint address", a));
            }
        }
        validate_ifname(&self.ifname)?;
        if let Some(c) = &self.container_id {
            if c.is_empty() || c.len() > CONTAINER_ID_MAX || !c.bytes().all(id_byte) {
                return Err(invalid("container id", c));
            }
        }
        Ok(())
    }
}

fn id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

fn invalid(what: &'static str, value: &str) -> RecordError {
    RecordError::Invalid {
        what,
        value: value.chars().take(80).collect(),
    }
}

/// A name DNS can carry as the owner name of an answer: 1-253 characters, dot-separated labels
/// of 1-63 letters, digits, `-` or `_` (runtimes allow `_` in container names), no label starting
/// or ending with `-`. Compared case-insensitively, as DNS does.
pub fn validate_dns_name(name: &str) -> Result<(), RecordError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= DNS_LABEL_MAX
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > DNS_NAME_MAX || !name.split('.').all(label_ok) {
        return Err(invalid("DNS name", name));
    }
    Ok(())
}

/// A Linux interface name: 1-15 bytes, no `/`, whitespace or NUL, not `.` or `..`.
pub fn validate_ifname(name: &str) -> Result<(), RecordError> {
    let ok = !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if ok {
        Ok(())
    } else {
        Err(invalid("interface name", name))
    }
}

/// The address of an `…/<ip>` key, in the canonical form vxnet writes (`10.1.0.01` or an
/// uncompressed IPv6 form would be a second key for the same address).
fn key_ip(text: &str) -> Result<IpAddr, RecordError> {
    let ip: IpAddr = text.parse().map_err(|_| RecordError::BadKey)?;
    if ip.to_string() != text {
        return Err(RecordError::BadKey);
    }
    Ok(ip)
}

/// The old layout's `ipam/<network>/<ip>` → node id: read as a host claim, so clusters laid out
/// before node-scoped records keep their addresses (their create revisions are the oldest).
pub(crate) fn decode_legacy_claim(rest: &str, value: &[u8]) -> Result<Record, RecordError> {
    let (network, ip) = rest.split_once('/').ok_or(RecordError::BadKey)?;
    validate_name(network)?;
    let ip = key_ip(ip)?;
    let node = std::str::from_utf8(value)
        .map_err(|_| RecordError::BadNodeId(String::from_utf8_lossy(value).into_owned()))?;
    validate_node_id(node)?;
    Ok(Record::Claim {
        network: network.to_owned(),
        ip,
        claim: AddressClaim {
            node: node.to_owned(),
            kind: ClaimKind::Host,
            endpoint: None,
        },
    })
}

/// Decodes `node/<rest>`. `Ok(None)` for kinds that are not part of the view (cursors, kinds a
/// newer version writes).
pub(crate) fn decode(rest: &str, value: &[u8]) -> Result<Option<Record>, RecordError> {
    let (node, rest) = rest.split_once('/').ok_or(RecordError::BadKey)?;
    validate_node_id(node)?;
    let (kind, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let record = match kind {
        "macs" => {
            let (vni, mac) = rest.split_once('/').ok_or(RecordError::BadKey)?;
            let vni = key_vni(vni)?;
            key_mac(mac)?;
            let record: MacRecord = serde_json::from_slice(value)?;
            same("node", node, &record.node_id)?;
            super::records::validate_vtep(record.vtep)?;
            Record::Mac {
                vni,
                mac: mac.to_owned(),
                record,
            }
        }
        "addrs" => {
            let (network, ip) = rest.split_once('/').ok_or(RecordError::BadKey)?;
            validate_name(network)?;
            let ip = key_ip(ip)?;
            let claim: AddressClaim = serde_json::from_slice(value)?;
            same("node", node, &claim.node)?;
            match (claim.kind, &claim.endpoint) {
                (ClaimKind::Host, None) => {}
                (ClaimKind::Endpoint, Some(id)) if name_ok(id) => {}
                _ => return Err(invalid("address claim", &String::from_utf8_lossy(value))),
            }
            Record::Claim {
                network: network.to_owned(),
                ip,
                claim,
            }
        }
        "endpoints" => {
            let (network, id) = rest.split_once('/').ok_or(RecordError::BadKey)?;
            let record: EndpointRecord = serde_json::from_slice(value)?;
            same("node", node, &record.node)?;
            same("network", network, &record.network)?;
            same("endpoint", id, &record.id)?;
            record.validate()?;
            Record::Endpoint(record)
        }
        _ => return Ok(None),
    };
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::decode as decode_any;

    pub(crate) fn endpoint(
        node: &str,
        network: &str,
        id: &str,
        name: &str,
        addr: &str,
    ) -> EndpointRecord {
        EndpointRecord {
            id: id.into(),
            name: name.into(),
            aliases: vec![],
            network: network.into(),
            addresses: vec![addr.into()],
            mac: "02:00:00:00:00:01".into(),
            node: node.into(),
            container_id: Some("c0ffee".into()),
            ifname: "eth0".into(),
            since: 1,
        }
    }

    fn claim(node: &str, kind: ClaimKind, ep: Option<&str>) -> Vec<u8> {
        serde_json::to_vec(&AddressClaim {
            node: node.into(),
            kind,
            endpoint: ep.map(Into::into),
        })
        .unwrap()
    }

    #[test]
    fn keys_end_in_a_slash_per_node() {
        assert_eq!(node_prefix("ab"), "node/ab/");
        assert!(
            !addr_key("abc", "blue", "10.1.0.2".parse().unwrap()).starts_with(&node_prefix("ab"))
        );
        assert_eq!(endpoint_key("a", "blue", "e1"), "node/a/endpoints/blue/e1");
        assert_eq!(
            mac_key("a", 7, "02:00:00:00:00:01"),
            "node/a/macs/7/02:00:00:00:00:01"
        );
    }

    #[test]
    fn claims_must_match_their_key() {
        let ok = decode_any(
            "node/a/addrs/blue/10.1.0.2",
            &claim("a", ClaimKind::Host, None),
        )
        .unwrap();
        assert!(matches!(ok, Some(Record::Claim { ref network, .. }) if network == "blue"));
        let ep = claim("a", ClaimKind::Endpoint, Some("e1"));
        assert!(decode_any("node/a/addrs/blue/10.1.0.2", &ep).is_ok());
        for (key, value) in [
            // Another node's claim written under a's prefix (or the other way round).
            (
                "node/a/addrs/blue/10.1.0.2",
                claim("b", ClaimKind::Host, None),
            ),
            (
                "node/a/addrs/blue/10.1.0.02",
                claim("a", ClaimKind::Host, None),
            ),
            (
                "node/a/addrs/blue/fd00:0::2",
                claim("a", ClaimKind::Host, None),
            ),
            (
                "node/a/addrs/b l/10.1.0.2",
                claim("a", ClaimKind::Host, None),
            ),
            (
                "node/a/addrs/blue/10.1.0.2",
                claim("a", ClaimKind::Endpoint, None),
            ),
            (
                "node/a/addrs/blue/10.1.0.2",
                claim("a", ClaimKind::Host, Some("e1")),
            ),
            ("node/a/addrs/blue/10.1.0.2", b"a".to_vec()),
            (
                "node/a b/addrs/blue/10.1.0.2",
                claim("a b", ClaimKind::Host, None),
            ),
        ] {
            assert!(
                decode_any(key, &value).is_err(),
                "{key} {}",
                String::from_utf8_lossy(&value)
            );
        }
        // Cursors and unknown kinds are not part of the view.
        assert!(decode_any("node/a/cursors/blue", b"10.1.0.9")
            .unwrap()
            .is_none());
        assert!(decode_any("node/a/future/x", b"{}").unwrap().is_none());
        // The old layout reads as a host claim.
        let old = decode_any("ipam/blue/10.1.0.7", b"a").unwrap();
        assert!(
            matches!(old, Some(Record::Claim { claim, .. }) if claim.node == "a" && claim.kind == ClaimKind::Host)
        );
        assert!(decode_any("ipam/blue/10.1.0.7", b"a/b").is_err());
        assert!(decode_any("ipam/blue/nonsense", b"a").is_err());
    }

    #[test]
    fn node_scoped_macs_name_their_node() {
        let rec = |node: &str| {
            serde_json::to_vec(&MacRecord {
                node_id: node.into(),
                vtep: "10.0.0.1".parse().unwrap(),
            })
            .unwrap()
        };
        assert!(decode_any("node/a/macs/4096/02:00:00:00:00:01", &rec("a")).is_ok());
        assert!(decode_any("node/a/macs/4096/02:00:00:00:00:01", &rec("b")).is_err());
        assert!(decode_any("node/a/macs/4096/ff:ff:ff:ff:ff:ff", &rec("a")).is_err());
    }

    #[test]
    fn endpoints_are_checked() {
        let key = "node/a/endpoints/blue/e1";
        let good = endpoint("a", "blue", "e1", "web", "10.1.0.5/24");
        let enc = |e: &EndpointRecord| serde_json::to_vec(e).unwrap();
        assert!(matches!(
            decode_any(key, &enc(&good)).unwrap(),
            Some(Record::Endpoint(_))
        ));
        let bad: Vec<(&str, EndpointRecord)> = vec![
            (
                "other node",
                EndpointRecord {
                    node: "b".into(),
                    ..good.clone()
                },
            ),
            (
                "other network",
                EndpointRecord {
                    network: "red".into(),
                    ..good.clone()
                },
            ),
            (
                "other id",
                EndpointRecord {
                    id: "e2".into(),
                    ..good.clone()
                },
            ),
            (
                "space in name",
                EndpointRecord {
                    name: "my web".into(),
                    ..good.clone()
                },
            ),
            (
                "empty name",
                EndpointRecord {
                    name: String::new(),
                    ..good.clone()
                },
            ),
            (
                "long label",
                EndpointRecord {
                    name: "x".repeat(64),
                    ..good.clone()
                },
            ),
            (
                "leading hyphen",
                EndpointRecord {
                    name: "-web".into(),
                    ..good.clone()
                },
            ),
            (
                "empty label",
                EndpointRecord {
                    name: "a..b".into(),
                    ..good.clone()
                },
            ),
            (
                "bad alias",
                EndpointRecord {
                    aliases: vec!["a/b".into()],
                    ..good.clone()
                },
            ),
            (
                "no address",
                EndpointRecord {
                    addresses: vec![],
                    ..good.clone()
                },
            ),
            (
                "not a cidr",
                EndpointRecord {
                    addresses: vec!["10.1.0.5".into()],
                    ..good.clone()
                },
            ),
            (
                "network address",
                EndpointRecord {
                    addresses: vec!["10.1.0.0/24".into()],
                    ..good.clone()
                },
            ),
            (
                "multicast mac",
                EndpointRecord {
                    mac: "01:00:5e:00:00:01".into(),
                    ..good.clone()
                },
            ),
            (
                "ifname too long",
                EndpointRecord {
                    ifname: "x".repeat(16),
                    ..good.clone()
                },
            ),
            (
                "ifname slash",
                EndpointRecord {
                    ifname: "a/b".into(),
                    ..good.clone()
                },
            ),
            (
                "container id",
                EndpointRecord {
                    container_id: Some("a b".into()),
                    ..good.clone()
                },
            ),
        ];
        for (why, e) in bad {
            assert!(decode_any(key, &enc(&e)).is_err(), "{why} accepted");
        }
        assert!(validate_dns_name("flask_1.svc").is_ok());
        assert!(validate_dns_name(&format!("{}.{}", "a".repeat(63), "b".repeat(63))).is_ok());
    }
}
