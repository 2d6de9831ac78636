//! Support for vxnet's integration tests: a [`Lab`] builds hosts as network namespaces on a
//! switched underlay, runs processes in them, and on drop stops those processes (by PID, only
//! its own) and deletes every namespace it made, also when a test fails. [`Vxnet`] is an engine
//! under test, read through the engine's own report types; [`etcd::EtcdServer`] a real etcd.
//!
//! Tests need root. Outside CI a test without root is skipped with a message; with `CI=true` it
//! fails, so a CI run cannot pass by skipping.
//!
//! Used by the root package's netns tests (`tests/`) and by the `vxnet` crate's cluster tests,
//! so nothing is shared by including files across packages.
#![deny(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bridged;
mod capture;
pub mod cli;
pub mod containers;
mod engine;
pub mod etcd;
mod lab;
mod leftovers;
mod process;
mod traffic;

pub use bridged::Bridged;
pub use capture::{read_pcap, Capture};
pub use engine::{refuses_to_start, Vxnet};
pub use lab::{Family, Host, Lab};
pub use leftovers::{run_leftovers, SweepRun};
pub use process::{have_tool, in_ci, interrupt, must, privileged, run, vxnet_bin, wait_for, Proc};
pub use traffic::{http_get, in_netns, start_transfer, transfer_checked};
pub use vxnet::netns::transfer::Transfer;
// The engine's report vocabulary, which the tests assert in.
pub use vxnet_dataplane::counters::DropReason;
pub use vxnet_dataplane::offload::Offload;
