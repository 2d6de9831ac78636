//! Live reconfiguration through [`EngineControl`]: networks added and removed, cluster peers and
//! MACs replaced, while the engine runs.

use std::net::IpAddr;

use vxnet_encap::MacAddr;

use super::start::resolve_remotes;
use super::tap::open_network;
use super::{lock, ClusterInfo, EngineControl, EngineError};
use crate::config::{ConfigError, NetworkConfig};
use crate::keyring::KeyRing;
use crate::validate::ValidationError;

impl EngineControl {
    /// Creates the network's TAP (MTU, address, up) and starts forwarding for it; the networks
    /// already served keep running (their workers restart, pausing for about a millisecond).
    pub fn add_network(&self, network: NetworkConfig) -> Result<(), EngineError> {
        let core = &self.core;
        let mut running = lock(&core.running);
        if running.shut_down {
            return Err(EngineError::Stopped);
        }
        crate::validate::network(&network).map_err(ConfigError::from)?;
        for served in &running.served {
            let settings = &served.network.settings;
            if settings.name == network.name {
                return Err(EngineError::AlreadyServed(format!(
                    "network {}",
                    network.name
                )));
            }
            if settings.vni == network.vni {
                return Err(ConfigError::DuplicateVni(network.vni).into());
            }
            if settings.dev == network.dev {
                return Err(ConfigError::DuplicateDev(network.dev.clone()).into());
            }
        }
        let remotes = resolve_remotes(&network, core.setup.local)?;
        if network.encryption.is_some() {
            core.ensure_esp()
                .map_err(|source| EngineError::EncryptionUnavailable {
                    network: network.name.clone(),
                    source,
                })?;
        }
        // Opened before the workers stop, so a failure here disturbs nothing.
        let served = open_network(&core.setup, &network, remotes)?;
        if let Some(address) = network.address {
            core.state
                .set_address(&network.name, Some(address.to_string()));
        }
        core.state
            .set_bridge(&network.name, crate::state::Bridged::of(&network));
        core.state
            .names
            .set_network(&network.name, network.address, network.hosts.clone());
        let name = network.name.clone();
        running.served.push(served);
        core.start_generation(&mut running)?;
        drop(running);
        self.resume_endpoints(&name);
        Ok(())
    }

    /// Picks up the endpoints kept in the state dir for `name` (bridge mode, once served):
    /// on the control runtime, when there is one (there is whenever the engine runs). Also how
    /// the cluster link re-asserts their records when the membership's lease changed.
    pub fn resume_endpoints(&self, name: &str) {
        let Some(endpoints) = self.core.state.endpoints().cloned() else {
            return;
        };
        if self.core.state.bridge(name).is_none() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let name = name.to_string();
            runtime.spawn(async move { endpoints.resume(&name).await });
        }
    }

    /// This host's endpoints of `name`, as kept in the state dir.
    pub fn local_endpoints(&self, name: &str) -> Vec<crate::control::proto::Endpoint> {
        self.core
            .state
            .endpoints()
            .map(|e| e.local(name))
            .unwrap_or_default()
    }

    /// Stops forwarding for `name` and removes its TAP. False if it is not served.
    pub fn remove_network(&self, name: &str) -> Result<bool, EngineError> {
        let core = &self.core;
        let mut running = lock(&core.running);
        let Some(index) = running
            .served
            .iter()
            .position(|s| s.network.settings.name == name)
        else {
            return Ok(false);
        };
        let removed = running.served.remove(index);
        running.cluster_macs.remove(name);
        core.state.set_address(name, None);
        core.state.set_bridge(name, None);
        core.state.names.remove_network(name);
        let result = core.start_generation(&mut running);
        // The old workers are joined, so these are the last fds of the TAP: it goes now.
        drop(removed);
        tracing::info!(name, "network removed");
        result.map(|()| true)
    }

    /// Stops serving `name` for good: as [`remove_network`](Self::remove_network), and in
    /// bridge mode also detaches its endpoints (releasing their addresses and records) and
    /// deletes the bridge vxnet made. A network rebuilt with other settings is removed with
    /// `remove_network` instead, which keeps the bridge and the endpoints.
    pub fn forget_network(&self, name: &str) -> Result<bool, EngineError> {
        let bridge = self.core.state.bridge(name).map(|b| b.bridge);
        let removed = self.remove_network(name)?;
        self.core.state.names.forget_network(name);
        if let Some(endpoints) = self.core.state.endpoints() {
            endpoints.forget_network(name);
        }
        if let Some(bridge) = bridge {
            super::bridge::remove(name, &bridge).map_err(|source| EngineError::Bridge {
                bridge: bridge.clone(),
                message: format!("cannot remove it: {source}"),
            })?;
            tracing::info!(network = name, bridge, "bridge and endpoints removed");
        }
        Ok(removed)
    }

    pub fn network_names(&self) -> Vec<String> {
        lock(&self.core.running)
            .served
            .iter()
            .map(|s| s.network.settings.name.clone())
            .collect()
    }

    /// Replaces the cluster-sourced peers of `name` (flood list and receive allow-list, in union
    /// with `--remote` and all-zeros FDB entries). False if it is not served.
    pub fn set_cluster_peers(&self, name: &str, mut peers: Vec<IpAddr>) -> bool {
        let Some(network) = self.core.network(name) else {
            return false;
        };
        let local = self.core.setup.local;
        // Our own VTEP (a shared view lists it) is dropped quietly; anything else that is no
        // unicast VTEP is never a flood target or accepted sender (the cluster link warns about
        // the record that carried it; this is the engine's backstop).
        peers.retain(
            |ip| match crate::validate::destination("cluster peer", *ip, local) {
                Ok(()) => true,
                Err(_) if *ip == local => false,
                Err(e) => {
                    tracing::debug!(network = name, "{e}: ignored");
                    false
                }
            },
        );
        let forwarder = self.core.state.forwarder();
        for ip in &peers {
            let _ = forwarder.peers.counters(*ip);
        }
        network.update_sources(|s| s.cluster = peers);
        true
    }

    /// Replaces the `[[network.host]]` entries of `name` (on reload). False if it is not served.
    pub fn set_hosts(&self, name: &str, hosts: Vec<crate::names::HostEntry>) -> bool {
        if self.core.network(name).is_none() {
            return false;
        }
        let gateway = self.core.state.address(name).and_then(|a| a.parse().ok());
        self.core.state.names.set_network(name, gateway, hosts);
        true
    }

    /// The engine's name service: where the cluster's endpoint records go.
    pub fn names(&self) -> std::sync::Arc<crate::names::NameService> {
        std::sync::Arc::clone(&self.core.state.names)
    }

    /// Replaces the configured remotes of `name` (`--remote`, `remotes = [...]`), e.g. on
    /// reload. False if it is not served.
    pub fn set_static_remotes(&self, name: &str, remotes: Vec<IpAddr>) -> bool {
        let Some(network) = self.core.network(name) else {
            return false;
        };
        let forwarder = self.core.state.forwarder();
        for ip in &remotes {
            let _ = forwarder.peers.counters(*ip);
        }
        network.update_sources(|s| s.configured = remotes);
        true
    }

    /// Replaces the key ring of the encrypted network `name` while it runs (a reload with a new
    /// key file; the cluster's key rotation: add the next key to every host's ring, then make it
    /// the send key, then drop the old one). SAs under epochs that stay in the ring keep working;
    /// senders move to the new send epoch with their next packet. False if `name` is not served.
    pub fn set_key_ring(&self, name: &str, ring: KeyRing) -> Result<bool, EngineError> {
        let Some(network) = self.core.network(name) else {
            return Ok(false);
        };
        ring.validate().map_err(|source| {
            ConfigError::from(ValidationError::KeyRing {
                network: name.to_string(),
                source,
            })
        })?;
        let Some(crypto) = &network.crypto else {
            return Err(EngineError::NotEncrypted(name.to_string()));
        };
        tracing::info!(
            network = name,
            epochs = ?ring.epochs(),
            send = ring.send.0,
            "key ring replaced"
        );
        crypto.set_ring(ring);
        Ok(true)
    }

    /// Replaces the cluster-sourced static FDB entries of `name`: entries the cluster no longer
    /// lists are removed, entries added by `vxnet fdb add` are left alone. False if not served.
    pub fn set_cluster_macs(&self, name: &str, macs: Vec<(MacAddr, IpAddr)>) -> bool {
        let Some(network) = self.core.network(name) else {
            return false;
        };
        let mut running = lock(&self.core.running);
        let previous = running
            .cluster_macs
            .insert(name.to_string(), macs.clone())
            .unwrap_or_default();
        for (mac, _) in previous {
            if !macs.iter().any(|(m, _)| *m == mac) {
                network.fdb.remove(mac);
            }
        }
        for (mac, vtep) in macs {
            if let Err(e) = network.fdb.replace_static(mac, vtep) {
                tracing::warn!(network = name, %mac, %vtep, "static MAC from the cluster not installed: {e}");
            }
        }
        network.rebuild_peers();
        true
    }

    /// The MAC of the network's TAP: what this host publishes for it. None if not served.
    pub fn local_mac(&self, name: &str) -> Option<MacAddr> {
        lock(&self.core.running)
            .served
            .iter()
            .find(|s| s.network.settings.name == name)
            .and_then(|s| s.mac)
    }

    pub fn set_cluster_info(&self, info: Option<ClusterInfo>) {
        self.core.state.set_cluster(info);
    }
}
