//! The records stored under a cluster's prefix, and how a raw key/value pair is decoded into one.
//! [`decode`] is the single entry point for everything read back from the store into a view, so
//! it is `pub` for the fuzz target too.
//!
//! The key is the identity: a record whose content names another network, node or MAC than its
//! key, or holds a value the CLI would never write (VNI 0 or above 2^24-1, a /0 subnet, a
//! multicast MAC, an unspecified VTEP), is refused here with the reason, and the view leaves it
//! out. The same checks guard what the CLI writes ([`validate_name`], [`validate_subnet`],
//! [`validate_vni`]), so nothing the store accepts from vxnet is refused on the way back.
//!
//! | key                                 | value                              | lifetime                 | written by |
//! |-------------------------------------|------------------------------------|--------------------------|------------|
//! | `meta`                              | [`Meta`] (token hashes only)       | persistent               | managers |
//! | `nodes/<node_id>`                   | [`NodeRecord`] (joined nodes)      | until `cluster leave/rm` | the node, managers |
//! | `members/<node_id>`                 | [`MemberRecord`] (running)         | the member's lease       | the node |
//! | `networks/<name>`                   | [`NetworkDef`]                     | persistent               | managers |
//! | `vni/<vni>`                         | network name (uniqueness)          | persistent               | managers |
//! | `keys/<network>`                    | [`NetworkKeys`] (secret)           | with its network         | managers |
//! | `locks/keys/<network>`              | node id of the rotating manager    | the rotator's lease      | managers |
//! | `node/<id>/macs/<vni>/<mac>`        | [`MacRecord`]                      | the node's lease         | the node |
//! | `node/<id>/addrs/<network>/<ip>`    | [`AddressClaim`]                   | host: until network/node rm; endpoint: the node's lease | the node |
//! | `node/<id>/endpoints/<network>/<ep>`| [`EndpointRecord`]                 | the node's lease (one txn with its claim) | the node |
//! | `node/<id>/cursors/<network>`       | last address the node handed out  | until network/node rm    | the node |
//! | `macs/<vni>/<mac>` (old layout)     | [`MacRecord`]                      | the publisher's lease    | read only |
//! | `ipam/<network>/<ip>` (old layout)  | node id holding the address        | until network/node rm    | read only |
//!
//! Everything a node writes about itself is under `node/<id>/` (see [`crate::scoped`]), which
//! only its own etcd user and the managers may write. Where two nodes' records compete (an
//! address, an endpoint name in a network), the earliest (lowest create revision) wins and every
//! reader ignores the rest ([`crate::claims`]). The old layout's keys are still read, so a
//! cluster laid out before node-scoped records keeps its addresses and MACs while it upgrades.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use vxnet_encap::MacAddr;

pub use super::keyring::NetworkKeys;
pub use super::scoped::{AddressClaim, ClaimKind, EndpointRecord};
use super::token::Role;

/// The smallest VNI a cluster network may have: VNI 0 is refused like the CLI refuses it.
pub const VNI_MIN: u32 = 1;
/// VNIs are 24 bits on the wire (RFC 7348).
pub const VNI_MAX: u32 = (1 << 24) - 1;
/// Network names and node ids are used in keys and interface names.
const NAME_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub cluster_id: String,
    pub created: u64,
    /// Hex SHA-256 of the manager token's secret.
    pub manager_secret_sha256: String,
    /// Hex SHA-256 of the worker token's secret.
    pub worker_secret_sha256: String,
    /// etcd authentication is on and the cluster's roles exist (see `roles.rs`): nodes
    /// join by request, and rotating a token changes its join user's password.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auth: bool,
}

/// A node that joined with a valid token. Persistent, so `cluster status` can show nodes that are
/// down, and so a restart does not need the (possibly rotated) token again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: String,
    pub role: Role,
    pub local: Option<IpAddr>,
    pub joined: u64,
}

/// A running engine, written under its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub node_id: String,
    pub vtep: IpAddr,
    pub networks: Vec<String>,
    pub role: Role,
    pub updated: u64,
    /// Per encrypted network it serves, the newest key epoch its engine holds: the
    /// acknowledgement a key rotation waits for before anyone sends with that key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_epochs: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkDef {
    pub name: String,
    pub vni: u32,
    pub subnet: Option<String>,
    /// Traffic is ESP-in-UDP with the keys at `keys/<name>`; an engine never serves an encrypted
    /// network in plaintext (without a valid key record it waits).
    #[serde(default)]
    pub encrypted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacRecord {
    pub node_id: String,
    pub vtep: IpAddr,
}

/// One record of the cluster view, as [`decode`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `nodes/<id>`
    Node { id: String, record: NodeRecord },
    /// `members/<id>`
    Member { id: String, record: MemberRecord },
    /// `networks/<name>`
    Network(NetworkDef),
    /// `macs/<vni>/<mac>` (old layout) or `node/<node>/macs/<vni>/<mac>`
    Mac {
        vni: u32,
        mac: String,
        record: MacRecord,
    },
    /// `vni/<vni>`: which network holds the VNI (written with the network, in one transaction).
    VniIndex { vni: u32, name: String },
    /// `keys/<name>`
    Keys(NetworkKeys),
    /// `node/<node>/addrs/<network>/<ip>`, or the old layout's `ipam/<network>/<ip>`.
    Claim {
        network: String,
        ip: IpAddr,
        claim: AddressClaim,
    },
    /// `node/<node>/endpoints/<network>/<id>`
    Endpoint(EndpointRecord),
}

/// Why a record under the cluster prefix was not used, or a value refused before it was written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not valid JSON for its kind: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the key names {what} {key:?} but the record says {content:?}")]
    KeyMismatch {
        what: &'static str,
        key: String,
        content: String,
    },
    #[error("invalid network name {0:?} (1-64 of [A-Za-z0-9._-])")]
    BadName(String),
    #[error("invalid node id {0:?} (1-64 of [A-Za-z0-9._-])")]
    BadNodeId(String),
    #[error("VNI {0} out of range {VNI_MIN}-{VNI_MAX}")]
    VniOutOfRange(u64),
    #[error("invalid subnet {0:?} (expected ADDR/PREFIX with a prefix of 1 or more)")]
    BadSubnet(String),
    #[error("invalid MAC {0:?} (expected a unicast MAC in lowercase aa:bb:cc:dd:ee:ff form)")]
    BadMac(String),
    #[error("VTEP {0} is not a unicast address")]
    BadVtep(IpAddr),
    #[error("malformed key")]
    BadKey,
    #[error("invalid key ring: {0}")]
    BadKeys(String),
    #[error("invalid {what} {value:?}")]
    Invalid { what: &'static str, value: String },
}

/// Names: 1-64 of `[A-Za-z0-9._-]`, valid in keys and (after `vx-`) in interface names.
pub(crate) fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

pub fn validate_name(name: &str) -> Result<(), RecordError> {
    if name_ok(name) {
        Ok(())
    } else {
        Err(RecordError::BadName(name.to_owned()))
    }
}

pub fn validate_vni(vni: u64) -> Result<u32, RecordError> {
    match u32::try_from(vni) {
        Ok(v) if (VNI_MIN..=VNI_MAX).contains(&v) => Ok(v),
        _ => Err(RecordError::VniOutOfRange(vni)),
    }
}

/// Checks `a.b.c.d/len` or `x::/len` (prefix 1 or more: a /0 overlay would claim every address)
/// and returns it normalised.
pub fn validate_subnet(cidr: &str) -> Result<String, RecordError> {
    let bad = || RecordError::BadSubnet(cidr.to_owned());
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len == 0 || len > max {
        return Err(bad());
    }
    Ok(format!("{addr}/{len}"))
}

pub(crate) fn validate_node_id(id: &str) -> Result<(), RecordError> {
    if name_ok(id) {
        Ok(())
    } else {
        Err(RecordError::BadNodeId(id.to_owned()))
    }
}

/// A VTEP peers can send to: not unspecified, multicast or the IPv4 broadcast address.
/// (Loopback stays allowed: single-host labs run every VTEP on 127.0.0.0/8.)
pub(crate) fn validate_vtep(ip: IpAddr) -> Result<(), RecordError> {
    let bad = match ip {
        IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
    };
    if bad {
        Err(RecordError::BadVtep(ip))
    } else {
        Ok(())
    }
}

pub(crate) fn same(what: &'static str, key: &str, content: &str) -> Result<(), RecordError> {
    if key == content {
        Ok(())
    } else {
        Err(RecordError::KeyMismatch {
            what,
            key: key.to_owned(),
            content: content.to_owned(),
        })
    }
}

impl NetworkDef {
    /// Everything [`decode`] checks in a network record except that its key names it.
    pub fn validate(&self) -> Result<(), RecordError> {
        validate_name(&self.name)?;
        validate_vni(u64::from(self.vni))?;
        if let Some(s) = &self.subnet {
            validate_subnet(s)?;
        }
        Ok(())
    }
}

/// The VNI of a `macs/<vni>/…` or `vni/<vni>` key, in the decimal form vxnet writes: `042` or
/// `+42` would otherwise be a second key for VNI 42, and its record a duplicate of the real one.
pub(crate) fn key_vni(text: &str) -> Result<u32, RecordError> {
    let vni = validate_vni(text.parse().map_err(|_| RecordError::BadKey)?)?;
    if vni.to_string() != text {
        return Err(RecordError::BadKey);
    }
    Ok(vni)
}

/// The MAC of a `macs/<vni>/<mac>` key: unicast, in the canonical form vxnet writes.
pub(crate) fn key_mac(text: &str) -> Result<MacAddr, RecordError> {
    let bad = || RecordError::BadMac(text.to_owned());
    let mac: MacAddr = text.parse().map_err(|_| bad())?;
    if !mac.is_unicast() || mac.to_string() != text {
        return Err(bad());
    }
    Ok(mac)
}

/// Decodes and checks the record at `rest` (the key with the cluster prefix removed). `Ok(None)`
/// for keys that are not part of the view (`meta`, `locks/…`, cursors, unknown kinds). Never
/// panics, whatever the bytes (a fuzz target holds it to that).
pub fn decode(rest: &str, value: &[u8]) -> Result<Option<Record>, RecordError> {
    let record = if let Some(scoped) = rest.strip_prefix("node/") {
        return super::scoped::decode(scoped, value);
    } else if let Some(claim) = rest.strip_prefix("ipam/") {
        super::scoped::decode_legacy_claim(claim, value)?
    } else if let Some(id) = rest.strip_prefix("nodes/") {
        validate_node_id(id)?;
        let record: NodeRecord = serde_json::from_slice(value)?;
        same("node", id, &record.node_id)?;
        if let Some(local) = record.local {
            validate_vtep(local)?;
        }
        Record::Node {
            id: id.to_owned(),
            record,
        }
    } else if let Some(id) = rest.strip_prefix("members/") {
        validate_node_id(id)?;
        let record: MemberRecord = serde_json::from_slice(value)?;
        same("node", id, &record.node_id)?;
        validate_vtep(record.vtep)?;
        for name in record.key_epochs.keys() {
            validate_name(name)?;
        }
        Record::Member {
            id: id.to_owned(),
            record,
        }
    } else if let Some(name) = rest.strip_prefix("networks/") {
        validate_name(name)?;
        let def: NetworkDef = serde_json::from_slice(value)?;
        same("network", name, &def.name)?;
        def.validate()?;
        Record::Network(def)
    } else if let Some(m) = rest.strip_prefix("macs/") {
        let (vni, mac) = m.split_once('/').ok_or(RecordError::BadKey)?;
        let vni = key_vni(vni)?;
        key_mac(mac)?;
        let record: MacRecord = serde_json::from_slice(value)?;
        validate_node_id(&record.node_id)?;
        validate_vtep(record.vtep)?;
        Record::Mac {
            vni,
            mac: mac.to_owned(),
            record,
        }
    } else if let Some(name) = rest.strip_prefix("keys/") {
        validate_name(name)?;
        let keys: NetworkKeys = serde_json::from_slice(value)?;
        same("network", name, &keys.network)?;
        keys.validate()?;
        Record::Keys(keys)
    } else if let Some(vni) = rest.strip_prefix("vni/") {
        let vni = key_vni(vni)?;
        let name = std::str::from_utf8(value)
            .map_err(|_| RecordError::BadName(String::from_utf8_lossy(value).into_owned()))?;
        validate_name(name)?;
        Record::VniIndex {
            vni,
            name: name.to_owned(),
        }
    } else {
        return Ok(None);
    };
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, vni: u32, subnet: Option<&str>) -> Vec<u8> {
        serde_json::to_vec(&NetworkDef {
            name: name.into(),
            vni,
            subnet: subnet.map(Into::into),
            encrypted: false,
        })
        .unwrap()
    }

    fn mac_record(node: &str, vtep: &str) -> Vec<u8> {
        serde_json::to_vec(&MacRecord {
            node_id: node.into(),
            vtep: vtep.parse().unwrap(),
        })
        .unwrap()
    }

    #[test]
    fn networks_are_checked_against_their_key_and_ranges() {
        let ok = decode("networks/blue", &net("blue", 4096, Some("10.1.0.0/24"))).unwrap();
        assert!(matches!(ok, Some(Record::Network(d)) if d.vni == 4096));
        let err = |key: &str, v: Vec<u8>| decode(key, &v).unwrap_err().to_string();
        assert!(err("networks/zzz", net("blue", 4096, None)).contains("names network \"zzz\""));
        assert!(err("networks/blue", net("blue", 0, None)).contains("VNI 0 out of range"));
        assert!(err("networks/blue", net("blue", 1 << 24, None)).contains("16777216 out of range"));
        assert!(err("networks/blue", net("blue", 7, Some("0.0.0.0/0"))).contains("invalid subnet"));
        assert!(err("networks/blue", net("blue", 7, Some("::/0"))).contains("invalid subnet"));
        assert!(err("networks/blue", b"{".to_vec()).contains("not valid JSON"));
        assert!(err("networks/a b", net("a b", 7, None)).contains("invalid network name"));
        assert!(decode("networks/blue", &net("blue", VNI_MAX, None)).is_ok());
    }

    #[test]
    fn members_nodes_and_macs_are_checked() {
        let member = |node: &str, vtep: &str| {
            serde_json::to_vec(&MemberRecord {
                node_id: node.into(),
                vtep: vtep.parse().unwrap(),
                networks: vec![],
                role: Role::Worker,
                updated: 0,
                key_epochs: Default::default(),
            })
            .unwrap()
        };
        assert!(decode("members/a1", &member("a1", "10.0.0.1")).is_ok());
        assert!(decode("members/a1", &member("b2", "10.0.0.1")).is_err());
        assert!(decode("members/a1", &member("a1", "0.0.0.0")).is_err());
        assert!(decode("members/a1", &member("a1", "224.0.0.1")).is_err());
        assert!(decode("members/a1", &member("a1", "255.255.255.255")).is_err());
        let node = serde_json::to_vec(&NodeRecord {
            node_id: "a1".into(),
            role: Role::Manager,
            local: None,
            joined: 0,
        })
        .unwrap();
        assert!(decode("nodes/a1", &node).is_ok());
        assert!(decode("nodes/zz", &node).is_err());

        let rec = mac_record("a1", "10.0.0.1");
        assert!(decode("macs/4096/02:00:00:00:00:01", &rec).is_ok());
        for bad in [
            "macs/4096/ff:ff:ff:ff:ff:ff",
            "macs/4096/01:00:5e:00:00:01",
            "macs/4096/00:00:00:00:00:00",
            "macs/4096/02:00:00:00:00:0A",
            "macs/4096/02-00-00-00-00-01",
            "macs/4096/nonsense",
            "macs/0/02:00:00:00:00:01",
            "macs/16777216/02:00:00:00:00:01",
            "macs/x/02:00:00:00:00:01",
            "macs/04096/02:00:00:00:00:01",
            "macs/+4096/02:00:00:00:00:01",
            "macs/4096",
        ] {
            assert!(decode(bad, &rec).is_err(), "{bad} accepted");
        }
        assert!(decode("macs/4096/02:00:00:00:00:01", &mac_record("a1", "::")).is_err());
    }

    #[test]
    fn vni_index_and_other_keys() {
        assert!(matches!(
            decode("vni/4096", b"blue").unwrap(),
            Some(Record::VniIndex { vni: 4096, .. })
        ));
        assert!(decode("vni/0", b"blue").is_err());
        assert!(decode("vni/04096", b"blue").is_err());
        assert!(decode("vni/4096", b"a/b").is_err());
        assert!(decode("meta", b"{}").unwrap().is_none());
        assert!(decode("ipam/blue/10.1.0.1", b"a1").unwrap().is_some());
    }

    #[test]
    fn cli_side_checks() {
        assert!(validate_name("blue-net_1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"n".repeat(65)).is_err());
        assert_eq!(validate_subnet("10.1.0.0/24").unwrap(), "10.1.0.0/24");
        assert!(validate_subnet("10.1.0.0/0").is_err());
        assert!(validate_subnet("10.1.0.0/33").is_err());
        assert!(validate_subnet("fd00::/64").is_ok());
        assert!(validate_subnet("10.1.0.0").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_vni(0).is_err());
        assert_eq!(validate_vni(1).unwrap(), 1);
        assert!(validate_vni(u64::from(u32::MAX) + 1).is_err());
    }
}
