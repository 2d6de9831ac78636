//! The engine link's side of encrypted networks: which of them the engine may serve (never one
//! in plaintext), the key ring handed to the engine and replaced live as rotations move on, the
//! acknowledgement of the rings applied, and the managers' automatic key rotation running beside
//! the link.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use vxnet_cluster::keyring::NetworkKeys;
use vxnet_cluster::{rotation, ClusterView, MembershipHandle, NetworkDef, Store};
use vxnet_dataplane::keyring::KeyRing;
use vxnet_dataplane::EngineControl;

/// The automatic key rotation task (it acts only while this node is a manager); stopped with the
/// link.
pub(super) struct AutoRotation(JoinHandle<()>);

impl AutoRotation {
    pub(super) fn start(store: &Store, node_id: &str, view: watch::Receiver<ClusterView>) -> Self {
        AutoRotation(tokio::spawn(rotation::auto(
            store.clone(),
            node_id.to_owned(),
            view,
        )))
    }
}

impl Drop for AutoRotation {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The engine's form of a stored ring.
pub(super) fn engine_ring(ring: &NetworkKeys) -> KeyRing {
    let (keys, send) = ring.ring();
    KeyRing { keys, send }
}

#[derive(Debug, Default)]
pub(super) struct Encryption {
    /// Encrypted networks held back for want of a valid ring, each logged once.
    held_back: BTreeSet<String>,
    /// Rings the engine refused, each logged once.
    refused: BTreeSet<(String, u32, u32)>,
    /// The epochs last acknowledged in the member record.
    acked: Option<BTreeMap<String, u32>>,
}

impl Encryption {
    /// Whether `def` may be served now: an encrypted network only with a valid key ring (a
    /// network without one waits; it is never served in plaintext).
    pub(super) fn servable(&mut self, view: &ClusterView, def: &NetworkDef) -> bool {
        if !def.encrypted || view.key_ring(&def.name).is_some() {
            self.held_back.remove(&def.name);
            return true;
        }
        if self.held_back.insert(def.name.clone()) {
            tracing::warn!(network = %def.name, "not serving encrypted network {}: it has no valid key record in the store (yet)", def.name);
        }
        false
    }

    /// Hands the engine `name`'s ring from `view` if it differs from `applied` (what the engine
    /// has). A ring missing from the view (a record that failed its checks) changes nothing: the
    /// engine keeps the ring it has.
    pub(super) fn update(
        &mut self,
        engine: &EngineControl,
        view: &ClusterView,
        name: &str,
        applied: &mut Option<NetworkKeys>,
    ) {
        let Some(ring) = view.key_ring(name) else {
            return;
        };
        if applied.as_ref() == Some(ring) {
            return;
        }
        match engine.set_key_ring(name, engine_ring(ring)) {
            Ok(true) => {
                tracing::info!(network = %name, send = ring.send, newest = ring.newest(), "key ring from the cluster applied");
                *applied = Some(ring.clone());
            }
            Ok(false) => {}
            Err(e) => {
                if self
                    .refused
                    .insert((name.to_owned(), ring.send, ring.newest()))
                {
                    tracing::error!(network = %name, error = %e, "the engine refused the cluster's key ring; keeping the one it has");
                }
            }
        }
    }

    /// Tells the cluster the newest epoch the engine holds for each encrypted network it serves
    /// (what a rotation waits for before switching senders), when that changed.
    pub(super) async fn acknowledge<'a>(
        &mut self,
        handle: &MembershipHandle,
        applied: impl Iterator<Item = (&'a String, &'a Option<NetworkKeys>)>,
    ) {
        let epochs: BTreeMap<String, u32> = applied
            .filter_map(|(name, ring)| Some((name.clone(), ring.as_ref()?.newest())))
            .collect();
        if self.acked.as_ref() == Some(&epochs) {
            return;
        }
        match handle.set_key_epochs(epochs.clone()).await {
            Ok(()) => self.acked = Some(epochs),
            Err(e) => {
                tracing::warn!(error = %e, "could not acknowledge the key epochs in the store; will retry")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vxnet_cluster::keyring::DEFAULT_ROTATION;

    fn net(name: &str, encrypted: bool) -> NetworkDef {
        NetworkDef {
            name: name.into(),
            vni: 4096,
            subnet: None,
            encrypted,
        }
    }

    #[test]
    fn encrypted_networks_wait_for_a_valid_ring() {
        let mut view = ClusterView {
            networks: vec![net("sec", true), net("plain", false)],
            ..ClusterView::default()
        };
        let mut enc = Encryption::default();
        assert!(enc.servable(&view, &net("plain", false)));
        assert!(!enc.servable(&view, &net("sec", true)));
        let ring = NetworkKeys::new("sec", DEFAULT_ROTATION).published();
        view.keys.insert("sec".into(), ring.clone());
        assert!(enc.servable(&view, &net("sec", true)));
        // A ring for a network the view does not call encrypted is not used.
        view.keys.insert("plain".into(), ring.clone());
        assert!(view.key_ring("plain").is_none());

        let engine = engine_ring(&ring);
        assert_eq!(engine.send.0, 1);
        assert_eq!(
            engine.keys.iter().map(|(e, _)| e.0).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(engine.validate().is_ok());
    }
}
