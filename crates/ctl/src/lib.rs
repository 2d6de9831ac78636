//! The `vxnet` command line: running the engine (static or cluster mode, where the cluster link
//! ties the engine, the `vxnet-cluster` control plane and the host firewall together), talking to
//! a running engine, host firewall management, and the teaching and benchmark tools (explain,
//! demo, bench). The `vxnet` binary is a thin entry point over this.

#![deny(unsafe_code)]
#![warn(unreachable_pub)]
// Unit tests may panic on broken fixtures; production code may not (workspace lints).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod attach;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod cni;
pub mod demo;
pub mod explain;
pub mod firewall;
pub mod key;
pub mod man;
pub mod name;
pub mod netns;
pub mod reload;
pub mod run;
pub mod sa;
pub mod show;
