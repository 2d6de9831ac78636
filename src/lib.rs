//! The root package owns the netns integration tests (`tests/`) and the criterion benchmarks
//! (`benches/`); their support is the `vxnet-testkit` crate, re-exported here so every test
//! reads `use vxnet_tests::*`.
#![deny(unsafe_code)]

pub use vxnet_testkit::*;
