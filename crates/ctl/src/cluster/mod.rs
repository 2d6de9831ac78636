//! Cluster mode of the `vxnet` binary: the `vxnet cluster …` / `vxnet network …` commands, and
//! the link that keeps a running engine (and the host firewall) in line with the cluster view.
//! The control plane itself (store, tokens, membership, IPAM) is the `vxnet-cluster` crate.

pub mod cli;
mod engine_keys;
pub mod engine_link;
pub mod engine_view;
mod network_cli;
pub mod registry;
