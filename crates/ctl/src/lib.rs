//! vxnet control plane: the etcd-backed cluster (tokens, node state, named networks, membership
//! for the engine) and host firewall management. The `vxnet` binary is a thin CLI over this.

#![deny(unsafe_code)]
// Unit tests may panic on broken fixtures; production code may not (workspace lints).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod bench;
pub mod cluster;
pub mod demo;
pub mod explain;
pub mod firewall;
pub mod netns;
pub mod run;
pub mod show;
