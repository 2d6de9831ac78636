//! The vxnet engine.

pub mod config;
pub mod control;
pub mod counters;
pub mod engine;
pub mod fdb;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod network;
pub mod sys;
mod text;
pub mod worker;

pub use config::{EngineConfig, NetworkConfig};
pub use engine::{ClusterInfo, Engine, EngineControl, EngineError};
