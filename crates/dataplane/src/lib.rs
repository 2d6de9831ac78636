//! The vxnet engine.

pub mod sys;
