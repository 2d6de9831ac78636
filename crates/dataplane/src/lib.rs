//! The vxnet engine.
//!
//! Surface: `pub` is what `vxnet` (the CLI), the integration tests and the benchmarks use;
//! everything else is `pub(crate)`, and `unreachable_pub` keeps it that way. `unsafe` is denied
//! outside [`sys`], the one module that talks to the kernel below `std`.
#![deny(unsafe_code)]
#![warn(unreachable_pub)]

pub mod config;
pub mod control;
pub mod counters;
pub mod crypto;
pub mod endpoint;
pub mod engine;
mod exclusive;
pub mod fdb;
mod files;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod keyring;
pub mod names;
pub mod neighbors;
pub mod network;
pub mod offload;
pub(crate) mod reload;
pub(crate) mod service;
pub mod source_port;
pub mod state;
pub(crate) mod storm;
#[allow(unsafe_code)]
pub mod sys;
mod text;
pub mod tuning;
pub mod underlay;
pub(crate) mod validate;
pub(crate) mod worker;

pub use config::{EngineConfig, NetworkConfig};
pub use engine::{ClusterInfo, Engine, EngineControl, EngineError};
