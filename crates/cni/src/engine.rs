//! The plugin's side of the engine's control socket: the engine's own requests and replies
//! (`vxnet_dataplane::control::proto`), and how their failures map to CNI error codes.

use std::net::IpAddr;
use std::path::Path;

use vxnet_dataplane::control::client::{request, ClientError};
use vxnet_dataplane::control::proto::{self, EndpointList, NetworkInfo, Request};

use crate::spec::{Code, Dns, PluginError};

/// The engine's DNS settings for an endpoint, as the spec's result spells them.
impl From<proto::Dns> for Dns {
    fn from(d: proto::Dns) -> Dns {
        Dns {
            nameservers: d.nameservers.iter().map(IpAddr::to_string).collect(),
            domain: Some(d.domain).filter(|s| !s.is_empty()),
            search: d.search,
            options: Vec::new(),
        }
    }
}

/// A network the engine serves, and the node id it has in the cluster (none in static mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Served {
    pub(crate) node: Option<String>,
}

/// One engine, reached through its control socket.
pub(crate) struct Engine<'a> {
    pub(crate) control: &'a Path,
}

impl Engine<'_> {
    pub(crate) fn ask<T: serde::de::DeserializeOwned>(
        &self,
        req: &Request,
    ) -> Result<T, PluginError> {
        let value = request(self.control, req).map_err(|e| self.failed(e))?;
        serde_json::from_value(value).map_err(|e| {
            PluginError::new(
                Code::Io,
                format!(
                    "unexpected reply from the engine at {}: {e}",
                    self.control.display()
                ),
            )
        })
    }

    /// An engine that is not there is "try again later" (it may be restarting); one that
    /// answered and refused is vxnet's own code with the engine's message.
    fn failed(&self, e: ClientError) -> PluginError {
        match e {
            ClientError::Connect { .. } => PluginError::new(Code::TryAgainLater, e.to_string()),
            ClientError::Io { .. } | ClientError::Protocol { .. } => {
                PluginError::new(Code::Io, e.to_string())
            }
            ClientError::Engine(msg) => PluginError::new(Code::EngineRefused, msg),
            // The configured control path is something else: no retry will make it an engine.
            ClientError::NotASocket { .. } => PluginError::new(Code::InvalidConfig, e.to_string()),
            // An engine is there; trying again will not let this user in.
            ClientError::Denied { .. } => PluginError::new(Code::EngineRefused, e.to_string()),
        }
    }

    /// The engine's view of `network`: code 7 if it does not serve it (a config naming the
    /// wrong network, or an engine of another cluster).
    pub(crate) fn served(&self, network: &str) -> Result<Served, PluginError> {
        let served: Vec<NetworkInfo> = self.ask(&Request::Networks)?;
        match served.iter().find(|n| n.name == network) {
            Some(n) => Ok(Served {
                node: n.cluster.as_ref().map(|c| c.node_id.clone()),
            }),
            None => {
                let names: Vec<&str> = served.iter().map(|n| n.name.as_str()).collect();
                Err(PluginError::new(
                    Code::InvalidConfig,
                    format!(
                        "unknown network {network:?}: the engine at {} serves {}",
                        self.control.display(),
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ),
                ))
            }
        }
    }

    /// The endpoint of (container, ifname) in `network`, if the engine has one.
    /// Only this host's: container ids are unique per host, not across a cluster (`ctr` takes
    /// the user's, cnitool derives one from the namespace's path).
    pub(crate) fn find(
        &self,
        network: &str,
        served: &Served,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<proto::Endpoint>, PluginError> {
        let all: EndpointList = self.ask(&Request::Endpoints {
            network: Some(network.to_owned()),
        })?;
        Ok(all.endpoints.into_iter().find(|ep| {
            ep.network == network
                && ep.ifname == ifname
                && ep.container_id.as_deref() == Some(container_id)
                && (served.node.is_none() || served.node.as_deref() == Some(ep.node.as_str()))
        }))
    }
}
