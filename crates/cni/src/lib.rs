//! vxnet's CNI plugin (spec 1.1.0, also 1.0.0): container runtimes (podman, containerd,
//! cnitool, kubelet's runtimes) exec the `vxnet-cni` binary by a conflist's `"type"`; it asks
//! the local vxnet engine over its control socket to attach or detach the container and prints
//! the spec's result. [`install`] writes the binary and the conflist (`vxnet cni install`).
#![deny(unsafe_code)]
#![warn(unreachable_pub)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod delegate;
mod engine;
pub mod env;
pub mod install;
pub mod plugin;
pub mod spec;

#[cfg(test)]
mod tests;
