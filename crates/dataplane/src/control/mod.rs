//! The control socket: a Unix stream socket speaking one JSON request and one JSON reply per
//! connection. `vxnet fdb|peers|stats|networks` are its clients.

pub(crate) mod access;
pub mod client;
pub mod fdb;
pub(crate) mod limits;
pub(crate) mod metrics;
pub mod proto;
pub mod server;
pub(crate) mod socket;

pub use socket::BindError;
