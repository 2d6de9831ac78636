//! The plugin's side of the engine's control socket: the endpoint requests (attach, detach,
//! endpoints, endpoint_gc, status) and how their failures map to CNI error codes.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use vxnet_dataplane::control::client::{request, ClientError};

use crate::spec::{Code, Dns, PluginError};

/// The endpoint requests, as the control socket's `Request` spells them.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub(crate) enum EngineRequest<'a> {
    Attach {
        network: &'a str,
        netns: &'a Path,
        ifname: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        aliases: &'a [String],
        #[serde(skip_serializing_if = "Option::is_none")]
        address: Option<IpNet>,
        container_id: &'a str,
    },
    Detach {
        network: &'a str,
        container_id: &'a str,
        ifname: &'a str,
    },
    Endpoints {
        network: &'a str,
    },
    EndpointGc {
        network: &'a str,
        valid: Vec<ValidAttachment<'a>>,
    },
    Status {
        network: &'a str,
    },
    Networks,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ValidAttachment<'a> {
    pub(crate) container_id: &'a str,
    pub(crate) ifname: &'a str,
}

/// An endpoint as the engine reports it (the fields the plugin uses; others are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Endpoint {
    pub(crate) network: String,
    pub(crate) address: IpNet,
    pub(crate) gateway: Option<IpAddr>,
    pub(crate) mac: String,
    pub(crate) ifname: String,
    pub(crate) netns: PathBuf,
    #[serde(default)]
    pub(crate) container_id: Option<String>,
    /// The host that owns it (endpoints of every host are listed).
    #[serde(default)]
    pub(crate) node: Option<String>,
    #[serde(default)]
    pub(crate) mtu: Option<u32>,
    #[serde(default)]
    pub(crate) dns: Option<EngineDns>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct EngineDns {
    #[serde(default)]
    pub(crate) nameservers: Vec<IpAddr>,
    #[serde(default)]
    pub(crate) domain: String,
    #[serde(default)]
    pub(crate) search: Vec<String>,
}

impl From<EngineDns> for Dns {
    fn from(d: EngineDns) -> Dns {
        Dns {
            nameservers: d.nameservers.iter().map(IpAddr::to_string).collect(),
            domain: Some(d.domain).filter(|s| !s.is_empty()),
            search: d.search,
            options: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct EndpointList {
    #[serde(default)]
    pub(crate) endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GcReport {
    #[serde(default)]
    pub(crate) released: Vec<Endpoint>,
}

/// The engine's readiness (`status`): `ready`, or `degraded` with a reason.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Readiness {
    pub(crate) state: String,
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct NetworkName {
    name: String,
    #[serde(default)]
    cluster: Option<NodeOf>,
}

#[derive(Debug, Clone, Deserialize)]
struct NodeOf {
    node_id: String,
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
        req: &EngineRequest<'_>,
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
            // An engine is there; trying again will not let this user in.
            ClientError::Denied { .. } => PluginError::new(Code::EngineRefused, e.to_string()),
        }
    }

    /// The engine's view of `network`: code 7 if it does not serve it (a config naming the
    /// wrong network, or an engine of another cluster).
    pub(crate) fn served(&self, network: &str) -> Result<Served, PluginError> {
        let served: Vec<NetworkName> = self.ask(&EngineRequest::Networks)?;
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
    ) -> Result<Option<Endpoint>, PluginError> {
        let all: EndpointList = self.ask(&EngineRequest::Endpoints { network })?;
        Ok(all.endpoints.into_iter().find(|ep| {
            ep.network == network
                && ep.ifname == ifname
                && ep.container_id.as_deref() == Some(container_id)
                && (served.node.is_none() || ep.node == served.node)
        }))
    }
}
