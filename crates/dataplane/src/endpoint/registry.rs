//! Where cluster-mode endpoint records and address claims live: the engine's side of the
//! cluster store, implemented by the control plane.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use crate::control::proto::Endpoint;

/// Why the cluster store refused or could not take a claim.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("address {0} is already claimed in the cluster")]
    AddressTaken(IpAddr),
    #[error("name {0} is already taken in the cluster")]
    NameTaken(String),
    #[error("no free address left in the network")]
    Exhausted,
    #[error("cluster store: {0}")]
    Store(String),
}

pub type RegistryFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, RegistryError>> + Send + 'a>>;

/// Where cluster-mode endpoint records and address claims live (the store); static mode has
/// none (records in the state dir, addresses from the local allocator).
pub trait Registry: Send + Sync + std::fmt::Debug {
    /// The node id records are written under.
    fn node(&self) -> String;
    /// Claims `endpoint.address` when `given`, otherwise an address the cluster's IPAM picks
    /// (the one in `endpoint.address` is a placeholder), and publishes the record with the claim
    /// in one transaction. Returns the address claimed.
    fn publish<'a>(&'a self, endpoint: &'a Endpoint, given: bool) -> RegistryFuture<'a, IpAddr>;
    /// Deletes the record and its claim; gone already is success.
    fn withdraw<'a>(&'a self, endpoint: &'a Endpoint) -> RegistryFuture<'a, ()>;
    /// Puts a record kept in the state dir back (after a restart, under the new lease).
    fn reassert<'a>(&'a self, endpoint: &'a Endpoint) -> RegistryFuture<'a, ()>;
    /// Every endpoint of the cluster (of `network` when given), from the store's view.
    fn list<'a>(&'a self, network: Option<&'a str>) -> RegistryFuture<'a, Vec<Endpoint>>;
}
