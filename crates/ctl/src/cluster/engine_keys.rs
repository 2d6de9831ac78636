//! The engine link's side of encrypted networks: which of them the engine may serve (never one
//! in plaintext), and the managers' automatic key rotation running beside the link.

use std::collections::BTreeSet;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use vxnet_cluster::{rotation, ClusterView, NetworkDef, Store};

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

/// Encrypted networks the engine is holding back, each logged once.
#[derive(Debug, Default)]
pub(super) struct Encryption {
    held_back: BTreeSet<String>,
}

impl Encryption {
    /// Whether `def` may be served now. An encrypted network is served only with a valid key
    /// ring and an engine that encrypts; until then it waits, and is never served in plaintext.
    pub(super) fn servable(&mut self, view: &ClusterView, def: &NetworkDef) -> bool {
        if !def.encrypted {
            return true;
        }
        let why = if view.key_ring(&def.name).is_none() {
            "it has no valid key record in the store"
        } else {
            "this engine does not encrypt cluster networks yet"
        };
        if self.held_back.insert(def.name.clone()) {
            tracing::warn!(network = %def.name, "not serving encrypted network {}: {why}", def.name);
        }
        false
    }
}
