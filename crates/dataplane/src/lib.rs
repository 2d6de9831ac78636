//! The vxnet engine.

pub mod config;
pub mod control;
pub mod counters;
pub mod crypto;
pub mod engine;
mod exclusive;
pub mod fdb;
pub mod forward;
pub mod keyring;
pub mod network;
pub mod reload;
pub mod service;
pub mod source_port;
pub mod state;
pub mod storm;
pub mod sys;
pub mod tuning;
pub mod validate;
pub mod worker;

pub use config::{EngineConfig, NetworkConfig};
pub use engine::{ClusterInfo, Engine, EngineControl, EngineError};
