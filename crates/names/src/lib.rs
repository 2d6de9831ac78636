//! The name service of vxnet networks, without sockets or clocks (the engine's control runtime
//! does the I/O and passes the time in).
//!
//! - [`table`]: the names of each network (endpoints, static hosts, the engine's own host on
//!   its gateway address) and the domains of every known network.
//! - [`answer()`]: one DNS query to a reply, a query to forward, or a drop; scoped to the network
//!   the query arrived on.
//! - [`Forwarder`]: queries in flight to the host's resolvers (IDs, retries, timeouts, SERVFAIL).
//! - [`RateLimiter`]: per-source token buckets.
//!
//! DNS wire format is hickory-proto's; nothing here parses DNS by hand.
#![deny(unsafe_code)]
#![warn(unreachable_pub)]

mod answer;
mod counters;
mod forward;
mod limit;
pub mod table;

pub use answer::{answer, Decision, ForwardRequest, Transport, TTL, UDP_PAYLOAD};
pub use counters::Counters;
pub use forward::{ForwardConfig, Forwarder, Send, Step};
pub use limit::RateLimiter;
pub use table::{valid_label, Entry, NameError, NetworkNames, Zones};

#[cfg(test)]
mod tests;
