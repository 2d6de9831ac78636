//! What the fuzz targets (`fuzz/`, outside the workspace) and the stable runs of their seed
//! corpora (`tests/fuzz_*.rs`) drive, gathered in one place.
//!
//! Hidden from the docs and not an API: it exists so that the engine's internals can stay
//! private (`pub(crate)`) while the fuzzers still reach the code that parses untrusted bytes,
//! and so that a field added to [`NetworkSettings`] is fixed here, inside the crate, rather
//! than in a crate the workspace does not build. A cargo feature would do the same, but the
//! stable seed runs would then need `--features` in every `cargo test`, and a test that is
//! silently skipped without it is worse than a hidden module.

use std::net::IpAddr;
use std::sync::Arc;

use vxnet_encap::Vni;

pub use crate::control::fdb::handle as fdb_request;
pub use crate::counters::{DropReason, TrafficSnapshot};
pub use crate::fdb::{EntryKind, Fdb, FdbRow, Learned, Millis};
pub use crate::forward::{Forwarder, WireAction, WireRun};
pub use crate::network::{Network, NetworkSettings};

/// What a fuzz target varies about a network; everything else takes the engine's defaults.
#[derive(Debug, Clone, Copy)]
pub struct NetworkSpec {
    pub vni: Vni,
    pub mtu: u32,
    pub allow_vlan: bool,
    pub learning: bool,
    pub max_fdb: usize,
}

/// A network as the engine builds it, without a TAP.
pub fn network(spec: NetworkSpec, local: IpAddr, port: u16, remotes: Vec<IpAddr>) -> Arc<Network> {
    let settings = NetworkSettings {
        name: format!("vni{}", spec.vni),
        vni: spec.vni,
        dev: format!("vx{}", spec.vni),
        mtu: spec.mtu,
        allow_vlan: spec.allow_vlan,
        learning: spec.learning,
        max_fdb: spec.max_fdb,
        bum_rate: None,
    };
    Arc::new(Network::new(settings, local, port, remotes))
}
