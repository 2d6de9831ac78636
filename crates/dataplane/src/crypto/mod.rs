//! The engine side of encrypted networks (ESP-in-UDP, see `vxnet_encap::esp`): the key ring each
//! encrypted network holds, replaceable while it runs (a reload with a changed key file, the
//! cluster's key rotation).

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::keyring::KeyRing;

/// The crypto state of one encrypted network, shared by its workers.
#[derive(Debug)]
pub struct NetworkCrypto {
    ring: ArcSwap<KeyRing>,
}

impl NetworkCrypto {
    pub fn new(ring: KeyRing) -> Self {
        NetworkCrypto {
            ring: ArcSwap::from_pointee(ring),
        }
    }

    /// The ring of the moment. Lock-free.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// Replaces the ring (validated by the caller). Packets under SAs of epochs still in the ring
    /// keep flowing; outbound SAs move to the new send epoch.
    pub fn set_ring(&self, ring: KeyRing) {
        self.ring.store(Arc::new(ring));
    }
}
