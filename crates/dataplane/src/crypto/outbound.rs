//! Outbound SAs: each worker owns its own, one per peer of each encrypted network (see
//! `vxnet_encap::esp::sa` for why per worker), made on the first packet to the peer with a fresh
//! random SPI and a random first sequence number, and made again when the ring's send key
//! changes. The network keeps a registry of them for `vxnet sa show` and to keep the SPIs of one
//! engine's workers distinct.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vxnet_encap::esp::{initial_sequence, SaId, SaKeyMaterial, SealSa, Spi};

use super::NetworkCrypto;
use crate::keyring::KeyRing;
use crate::state::lock;

/// What the control socket sees of one worker's outbound SA.
#[derive(Debug)]
pub struct OutboundInfo {
    pub id: SaId,
    pub material: SaKeyMaterial,
    pub worker: usize,
    /// The kernel's id of the worker's thread.
    thread: i32,
    next_seq: AtomicU64,
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl OutboundInfo {
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Relaxed)
    }

    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// The outbound SAs of one network's workers.
#[derive(Debug, Default)]
pub struct OutboundRegistry {
    list: Mutex<Vec<Arc<OutboundInfo>>>,
}

impl OutboundRegistry {
    /// The SAs of running workers (a worker that stopped dropped its reference).
    pub fn all(&self) -> Vec<Arc<OutboundInfo>> {
        let mut list = lock(&self.list);
        list.retain(|info| Arc::strong_count(info) > 1);
        list.clone()
    }

    /// Forgets every SA (the send key changed: workers make new ones before sealing again).
    pub fn clear(&self) {
        lock(&self.list).clear();
    }

    /// Forgets the SAs of the worker thread `tid`, which the kernel ended: it seals nothing
    /// more, but the references it holds (which keep an SA listed) are never dropped.
    pub(crate) fn forget_thread(&self, tid: i32) {
        lock(&self.list).retain(|info| info.thread != tid);
    }

    /// A new SA from `local` to `peer` under the ring's send key, with an SPI no other running
    /// SA of this network to that peer under that epoch uses. `None` when the system's random
    /// source fails (nothing is sent rather than something with a guessable nonce space).
    fn create(
        &self,
        ring: &KeyRing,
        local: IpAddr,
        peer: IpAddr,
        worker: usize,
    ) -> Option<(SealSa, Arc<OutboundInfo>)> {
        let key = ring.send_key()?;
        let thread = crate::sys::thread::current_tid();
        let (spi, first, mut list) = loop {
            let mut random = [0u8; 12];
            // Drawn before the list is locked: a worker whose thread the kernel ends inside a
            // system call must not leave the lock held (see engine::supervise).
            getrandom::getrandom(&mut random).ok()?;
            let spi_bits = u32::from_be_bytes([random[0], random[1], random[2], random[3]]);
            let spi = Spi::for_epoch(ring.send, spi_bits);
            let mut list = lock(&self.list);
            list.retain(|info| Arc::strong_count(info) > 1);
            let taken = list
                .iter()
                .any(|i| i.id.spi == spi && i.id.dst == peer && i.id.epoch == ring.send);
            if !taken {
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&random[4..]);
                break (spi, initial_sequence(u64::from_be_bytes(seq)), list);
            }
        };
        let id = SaId {
            epoch: ring.send,
            spi,
            src: local,
            dst: peer,
        };
        let sa = SealSa::new(key, id, first);
        let info = Arc::new(OutboundInfo {
            id,
            material: sa.key_material().clone(),
            worker,
            thread,
            next_seq: AtomicU64::new(sa.next_seq()),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        list.push(Arc::clone(&info));
        drop(list);
        tracing::debug!(spi = %spi, %peer, worker, epoch = ring.send.0, "outbound SA");
        Some((sa, info))
    }
}

/// One outbound SA of a worker, with what it reports.
pub struct OutSa {
    pub sa: SealSa,
    info: Arc<OutboundInfo>,
}

impl OutSa {
    /// Records `packets` sealed, `bytes` long together (call after each run of seals; relaxed
    /// operations on a line only this worker writes).
    pub fn sealed(&self, packets: u64, bytes: u64) {
        self.info
            .next_seq
            .store(self.sa.next_seq(), Ordering::Relaxed);
        self.info.packets.fetch_add(packets, Ordering::Relaxed);
        self.info.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// One worker's outbound SAs for one encrypted network, by peer VTEP.
#[derive(Default)]
pub struct WorkerSeals {
    ring: Option<Arc<KeyRing>>,
    sas: HashMap<IpAddr, OutSa, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for WorkerSeals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSeals")
            .field("peers", &self.sas.len())
            .finish()
    }
}

impl WorkerSeals {
    /// Follows a ring change (once per batch): a new send epoch means new SAs for every peer.
    pub fn refresh(&mut self, crypto: &NetworkCrypto) {
        let ring = crypto.ring();
        let same = self
            .ring
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(r, &ring) || (r.send == ring.send && **r == *ring));
        if !same {
            self.sas.clear();
            self.ring = Some(ring);
        }
    }

    /// The SA for `peer`, made on first use. `None` only if no SA can be made (see
    /// [`OutboundRegistry`]); the caller drops the packet.
    pub fn sa_for(
        &mut self,
        crypto: &NetworkCrypto,
        local: IpAddr,
        peer: IpAddr,
        worker: usize,
    ) -> Option<&mut OutSa> {
        if !self.sas.contains_key(&peer) {
            if self.ring.is_none() {
                self.refresh(crypto);
            }
            let ring = self.ring.as_ref()?;
            let (sa, info) = crypto.outbound.create(ring, local, peer, worker)?;
            self.sas.insert(peer, OutSa { sa, info });
        }
        self.sas.get_mut(&peer)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vxnet_encap::esp::NetworkKey;

    #[test]
    fn a_lost_workers_sas_leave_the_list() {
        let crypto = Arc::new(NetworkCrypto::new(KeyRing::single(NetworkKey::from_bytes(
            [7; 32],
        ))));
        let (local, peer) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        // Each worker's seals outlive its thread, as a lost worker's do.
        let seal = |worker| {
            let crypto = Arc::clone(&crypto);
            std::thread::spawn(move || {
                let mut seals = WorkerSeals::default();
                assert!(seals.sa_for(&crypto, local, peer, worker).is_some());
                (seals, crate::sys::thread::current_tid())
            })
            .join()
            .unwrap()
        };
        let (_lost, lost) = seal(0);
        let (_live, _) = seal(1);
        assert_eq!(crypto.outbound.all().len(), 2);
        crypto.outbound.forget_thread(lost);
        let workers: Vec<usize> = crypto.outbound.all().iter().map(|i| i.worker).collect();
        assert_eq!(workers, [1]);
    }
}
