//! The vxnet cluster control plane, backed by etcd: join tokens, node state, named networks,
//! host addresses (IPAM) and live membership. It knows nothing of the packet engine: `vxnet run`
//! (crates/ctl) applies the [`ClusterView`]s published here to the engine and the host firewall.
//!
//! Key layout under `/vxnet/<cluster_id>/` (the table is in [`records`]): `meta`,
//! `nodes/<node_id>`, `members/<node_id>` (leased), `networks/<name>`, `vni/<vni>`,
//! `keys/<network>` (encrypted networks' key rings, [`keyring`]), `locks/keys/<network>` (leased,
//! [`rotation`]), and under `node/<node_id>/` what each node writes about itself: MACs, address
//! claims, endpoints ([`scoped`], [`claims`]).
//! With etcd authentication, `/vxnet-join/<cluster_id>/<node_id>` holds join requests and etcd
//! roles limit each node to what its role may change (see `roles.rs`).

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]
// Unit tests may panic on broken fixtures; production code may not (workspace lints).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod access;
mod admission;
pub mod changes;
pub mod claims;
mod error;
pub mod follow;
pub mod ipam;
pub mod keyring;
pub mod membership;
pub mod network;
pub mod node;
pub mod records;
pub mod removal;
mod roles;
pub mod rotation;
pub mod scoped;
pub mod state;
pub mod store;
mod tls_check;
pub use tls_check::format_time;
pub mod token;
pub mod view;

pub use access::StoreAccess;
pub use claims::AddressEntry;
pub use error::{Error, Result};
pub use membership::{Membership, MembershipHandle};
pub use records::NetworkDef;
pub use scoped::{AddressClaim, ClaimKind, EndpointRecord};
pub use store::Store;
pub use view::{ClusterView, MacEntry, Member};

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
