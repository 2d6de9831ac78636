//! The control socket: a Unix stream socket speaking one JSON request and one JSON reply per
//! connection. `vxnet fdb|peers|stats|networks` are its clients.

pub mod access;
pub mod client;
pub mod fdb;
pub mod limits;
pub mod metrics;
pub mod proto;
pub mod server;
pub mod socket;
