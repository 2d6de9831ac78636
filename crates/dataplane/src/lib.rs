//! The vxnet engine.

pub mod counters;
pub mod fdb;
pub mod forward;
pub mod network;
pub mod sys;
