//! An endpoint's address: checked against this host's endpoints, then claimed in the cluster
//! (cluster mode) or allocated from the network's pool here (static mode); and given back.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{book, EndpointError, Endpoints, Plan, RegistryError};
use crate::control::proto::Endpoint;
use crate::state::lock;

impl Endpoints {
    /// Takes the address: checked against this host's endpoints, then claimed in the cluster
    /// (cluster mode) or allocated here (static mode).
    pub(super) async fn claim(
        &self,
        plan: &Plan,
        endpoint: &mut Endpoint,
        given: Option<IpAddr>,
    ) -> Result<IpAddr, EndpointError> {
        let subnet = plan.gateway.trunc();
        if let Some(addr) = given {
            if lock(&self.book).address_taken(&plan.name, addr) {
                return Err(EndpointError::AddressTaken {
                    address: addr,
                    network: plan.name.clone(),
                });
            }
        }
        let Some(registry) = &self.registry else {
            return match given {
                Some(addr) => Ok(addr),
                None => {
                    let pool = plan.pool;
                    if pool.max_prefix_len() - pool.prefix_len() > book::MAX_HOST_BITS {
                        return Err(EndpointError::SubnetSize(pool));
                    }
                    lock(&self.book)
                        .allocate(&plan.name, pool, subnet, plan.gateway.addr())
                        .ok_or(EndpointError::Exhausted {
                            network: plan.name.clone(),
                            subnet: pool,
                        })
                }
            };
        };
        if let Some(addr) = given {
            endpoint.address = IpNet::new(addr, plan.gateway.prefix_len())
                .map_err(|_| EndpointError::SubnetSize(subnet))?;
        }
        registry
            .publish(endpoint, given.is_some())
            .await
            .map_err(|e| match e {
                RegistryError::AddressTaken(address) => EndpointError::AddressTaken {
                    address,
                    network: plan.name.clone(),
                },
                RegistryError::NameTaken(name) => EndpointError::NameTaken {
                    name,
                    network: plan.name.clone(),
                },
                RegistryError::Exhausted => EndpointError::Exhausted {
                    network: plan.name.clone(),
                    subnet,
                },
                other => other.into(),
            })
    }

    /// Withdraws the record and claim from the registry, logging (not failing) when the store
    /// is away: the lease takes the record with it anyway.
    pub(super) async fn unclaim(&self, endpoint: &Endpoint) {
        if let Some(registry) = &self.registry {
            if let Err(e) = registry.withdraw(endpoint).await {
                tracing::warn!(id = %endpoint.id, error = %e, "could not withdraw the endpoint's record");
            }
        }
    }
}
