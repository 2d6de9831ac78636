//! The engine side of encrypted networks (ESP-in-UDP, see `vxnet_encap::esp`): each encrypted
//! network's key ring (replaceable while it runs: a reload with a changed key file, the cluster's
//! key rotation), its inbound SAs (shared by the workers), the registry of the workers' outbound
//! SAs, where each peer is reached (its endpoint roams with authenticated packets, as
//! WireGuard's does), and counters.
//!
//! - [`inbound`]: SAs by SPI, each with its replay window; the trial-decryption budget.
//! - [`floors`]: each inbound SA's replay floor, kept in the state dir across restarts.
//! - [`outbound`]: per-worker SAs by peer and their registry.
//! - [`receive`]: one ESP datagram from the socket to an authenticated VXLAN packet.

pub mod floors;
pub mod inbound;
pub mod outbound;
pub mod receive;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::fdb::Millis;
use crate::keyring::KeyRing;
use inbound::InboundTable;
use outbound::OutboundRegistry;

/// RFC 3948 §4: NAT keepalives (a 1-byte 0xFF datagram) from the ESP socket to every peer of
/// an encrypted network, so a NAT in between keeps its mapping (UDP mappings commonly expire
/// after 30 s or more; RFC 3948 suggests 20 s).
pub const KEEPALIVE_INTERVAL_MS: u64 = 20_000;

/// The crypto state of one encrypted network, shared by its workers.
#[derive(Debug)]
pub struct NetworkCrypto {
    ring: ArcSwap<KeyRing>,
    pub inbound: InboundTable,
    pub outbound: OutboundRegistry,
    /// Peer VTEP (configured address) → where its authenticated packets last came from. Absent:
    /// the VTEP's own address at the ESP port.
    endpoints: papaya::HashMap<IpAddr, SocketAddr, foldhash::fast::RandomState>,
    pub counters: EspCounters,
    /// Rate limit of the warnings about plaintext for this encrypted network.
    pub plaintext_log: LogLimit,
}

/// What an encrypted network did, besides drops (which are counted by reason with the others).
#[derive(Debug, Default)]
pub struct EspCounters {
    /// Packets sealed and handed to the kernel (each segment of a superframe counts).
    pub encrypted: AtomicU64,
    /// Packets that authenticated and were decrypted.
    pub decrypted: AtomicU64,
    /// Inbound SAs established (first authenticated packet of a new SPI).
    pub sas_established: AtomicU64,
    /// A peer's endpoint moved (NAT rebinding, roaming), learnt from an authenticated packet.
    pub endpoint_changes: AtomicU64,
}

/// The counters as the control socket reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EspSnapshot {
    pub encrypted: u64,
    pub decrypted: u64,
    pub sas_established: u64,
    pub endpoint_changes: u64,
    pub inbound_sas: usize,
    pub outbound_sas: usize,
    /// Key epochs of the ring, and the one sent with.
    pub epochs: Vec<u32>,
    pub send_epoch: u32,
}

/// At most one log line per period for one kind of event (a flood of bad packets must not
/// become a flood of log lines).
#[derive(Debug, Default)]
pub struct LogLimit {
    next: AtomicU64,
}

impl LogLimit {
    pub const PERIOD_MS: u64 = 10_000;

    /// True when a line may be logged now (and then not again for the period).
    pub fn allow(&self, now: Millis) -> bool {
        let next = self.next.load(Ordering::Relaxed);
        now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now + Self::PERIOD_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

impl NetworkCrypto {
    pub fn new(ring: KeyRing) -> Self {
        NetworkCrypto {
            ring: ArcSwap::from_pointee(ring),
            inbound: InboundTable::default(),
            outbound: OutboundRegistry::default(),
            endpoints: papaya::HashMap::builder()
                .hasher(foldhash::fast::RandomState::default())
                .build(),
            counters: EspCounters::default(),
            plaintext_log: LogLimit::default(),
        }
    }

    /// The ring of the moment.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// Replaces the ring (validated by the caller). Inbound SAs of epochs still in the ring keep
    /// working, the others are dropped; outbound SAs move to the new send epoch with the next
    /// batch of each worker.
    pub fn set_ring(&self, ring: KeyRing) {
        let old = self.ring();
        // An epoch stays only with the same key (a static key file replaced in place keeps
        // epoch 0 but is another key: its SAs go).
        let kept: Vec<_> = ring
            .keys
            .iter()
            .filter(|(epoch, key)| old.get(*epoch) == Some(key))
            .map(|(epoch, _)| *epoch)
            .collect();
        self.ring.store(Arc::new(ring));
        self.inbound.retain(|sa| kept.contains(&sa.id().epoch));
        // Every worker makes new outbound SAs before it seals again; the old ones are no longer
        // what it sends with.
        if old.send != self.ring().send || !kept.contains(&old.send) {
            self.outbound.clear();
        }
    }

    /// Where packets for `vtep` go: its last authenticated endpoint, else its address at `port`.
    pub fn endpoint(&self, vtep: IpAddr, port: u16) -> SocketAddr {
        self.endpoints
            .pin()
            .get(&vtep)
            .copied()
            .unwrap_or(SocketAddr::new(vtep, port))
    }

    /// Records that an authenticated packet of `vtep` came from `from`. True when that moved it.
    pub fn saw_endpoint(&self, vtep: IpAddr, from: SocketAddr, port: u16) -> bool {
        let map = self.endpoints.pin();
        let current = map.get(&vtep).copied();
        if current == Some(from) || (current.is_none() && from == SocketAddr::new(vtep, port)) {
            return false;
        }
        map.insert(vtep, from);
        self.counters
            .endpoint_changes
            .fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Every endpoint learnt (for keepalives and `vxnet sa show`).
    pub fn endpoints(&self) -> Vec<(IpAddr, SocketAddr)> {
        self.endpoints.pin().iter().map(|(k, v)| (*k, *v)).collect()
    }

    pub fn snapshot(&self) -> EspSnapshot {
        let ring = self.ring();
        let c = &self.counters;
        EspSnapshot {
            encrypted: c.encrypted.load(Ordering::Relaxed),
            decrypted: c.decrypted.load(Ordering::Relaxed),
            sas_established: c.sas_established.load(Ordering::Relaxed),
            endpoint_changes: c.endpoint_changes.load(Ordering::Relaxed),
            inbound_sas: self.inbound.len(),
            outbound_sas: self.outbound.all().len(),
            epochs: ring.epochs(),
            send_epoch: ring.send.0,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn log_limit_lets_one_line_through_per_period() {
        let limit = LogLimit::default();
        assert!(limit.allow(5));
        assert!(!limit.allow(6));
        assert!(!limit.allow(5 + LogLimit::PERIOD_MS - 1));
        assert!(limit.allow(5 + LogLimit::PERIOD_MS));
    }
}
