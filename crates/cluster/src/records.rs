//! The records stored under a cluster's prefix, and how a raw key/value pair is decoded into one.
//! [`decode`] is the single entry point for everything read back from the store into a view, so
//! it is `pub` for the fuzz target too.
//!
//! | key                     | value                          | lifetime                 |
//! |-------------------------|--------------------------------|--------------------------|
//! | `meta`                  | [`Meta`] (token hashes only)   | persistent               |
//! | `nodes/<node_id>`       | [`NodeRecord`] (joined nodes)  | until `cluster leave/rm` |
//! | `members/<node_id>`     | [`MemberRecord`] (running)     | the member's lease       |
//! | `networks/<name>`       | [`NetworkDef`]                 | persistent               |
//! | `vni/<vni>`             | network name (uniqueness)      | persistent               |
//! | `macs/<vni>/<mac>`      | [`MacRecord`]                  | the publisher's lease    |
//! | `ipam/<network>/<ip>`   | node id holding the address    | until network/node rm    |

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::token::Role;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub cluster_id: String,
    pub created: u64,
    /// Hex SHA-256 of the manager token's secret.
    pub manager_secret_sha256: String,
    /// Hex SHA-256 of the worker token's secret.
    pub worker_secret_sha256: String,
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
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkDef {
    pub name: String,
    pub vni: u32,
    pub subnet: Option<String>,
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
    /// `macs/<vni>/<mac>`
    Mac {
        vni: u32,
        mac: String,
        record: MacRecord,
    },
}

/// Why a record under the cluster prefix was not used.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not valid JSON for its kind: {0}")]
    Json(#[from] serde_json::Error),
}

/// Decodes the record at `rest` (the key with the cluster prefix removed). `Ok(None)` for keys
/// that are not part of the view (`meta`, `vni/…`, `ipam/…`, unknown kinds).
pub fn decode(rest: &str, value: &[u8]) -> Result<Option<Record>, RecordError> {
    let record = if let Some(id) = rest.strip_prefix("nodes/") {
        Record::Node {
            id: id.to_owned(),
            record: serde_json::from_slice(value)?,
        }
    } else if let Some(id) = rest.strip_prefix("members/") {
        Record::Member {
            id: id.to_owned(),
            record: serde_json::from_slice(value)?,
        }
    } else if rest.starts_with("networks/") {
        Record::Network(serde_json::from_slice(value)?)
    } else if let Some(m) = rest.strip_prefix("macs/") {
        let Some((vni, mac)) = m.split_once('/') else {
            return Ok(None);
        };
        let Ok(vni) = vni.parse() else {
            return Ok(None);
        };
        Record::Mac {
            vni,
            mac: mac.to_owned(),
            record: serde_json::from_slice(value)?,
        }
    } else {
        return Ok(None);
    };
    Ok(Some(record))
}
