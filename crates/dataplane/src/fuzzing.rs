//! What the fuzz targets (`fuzz/`, outside the workspace), the stable runs of their seed
//! corpora (`tests/fuzz_*.rs`) and `tests/fdb_concurrency.rs` drive, gathered in one place.
//!
//! Hidden from the docs and not an API: it exists so that the engine's internals can stay
//! private (`pub(crate)`) while the fuzzers still reach the code that parses untrusted bytes,
//! and so that a field added to [`NetworkSettings`] is fixed here, inside the crate, rather
//! than in a crate the workspace does not build. A cargo feature would do the same, but the
//! stable seed runs would then need `--features` in every `cargo test`, and a test that is
//! silently skipped without it is worse than a hidden module.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use vxnet_encap::{MacAddr, Vni};

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

// Crate-internal methods the harnesses call, as free functions so that the methods themselves
// stay `pub(crate)`.

/// [`Fdb`]'s removal of an entry of either kind; whether there was one.
pub fn fdb_remove(fdb: &Fdb, mac: MacAddr) -> bool {
    fdb.remove(mac)
}

/// [`Fdb`]'s ageing pass; how many learned entries it dropped.
pub fn fdb_age_out(fdb: &Fdb, now: Millis, ageing: Millis) -> usize {
    fdb.age_out(now, ageing)
}

/// Entries of both kinds in `fdb`.
pub fn fdb_len(fdb: &Fdb) -> usize {
    fdb.len()
}

/// Learned entries in `fdb` (the counter `--max-fdb` bounds).
pub fn fdb_learned(fdb: &Fdb) -> usize {
    fdb.learned_count()
}

/// Longest datagram that holds a single frame of any of `fwd`'s networks.
pub fn max_single_datagram(fwd: &Forwarder) -> usize {
    fwd.max_single_datagram()
}

/// The receive path of a datagram that carries one inner superframe.
pub fn from_wire_superframe(
    fwd: &Forwarder,
    now: Millis,
    source: SocketAddr,
    datagram: &[u8],
) -> WireAction {
    fwd.from_wire_superframe(now, source, datagram)
}
