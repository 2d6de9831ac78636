//! The vxnet engine.
