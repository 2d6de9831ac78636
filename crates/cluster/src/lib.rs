//! The etcd-backed cluster: join tokens, node state, named networks and live membership.
//!
//! Key layout under `/vxnet/<cluster_id>/` (see [`store`]):
//! `meta`, `nodes/<node_id>`, `members/<node_id>` (leased), `networks/<name>`, `vni/<vni>`,
//! `macs/<vni>/<mac>` (leased), `ipam/<network>/<ip>` (host addresses).

pub mod cli;
pub mod engine_link;
mod error;
pub mod ipam;
pub mod membership;
pub mod network;
pub mod node;
pub mod removal;
pub mod state;
pub mod store;
pub mod token;

pub use error::{Error, Result};
pub use membership::{ClusterView, MacEntry, Member, Membership, MembershipHandle};
pub use store::{NetworkDef, Store};

/// Seconds since the Unix epoch; records carry it so operators can see how fresh an entry is.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Random bytes as lowercase hex, for node ids, cluster ids and secrets.
pub(crate) fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}
