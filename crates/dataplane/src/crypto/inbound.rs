//! Inbound SAs of one encrypted network, shared by every worker: found by SPI, each with its
//! replay window behind a lock held only for the window check and the commit (the AES-GCM pass
//! runs outside it, see `vxnet_encap::esp`).

use std::net::IpAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use vxnet_encap::esp::{EspError, OpenKey, OpenSa, Opened, ReplayWindow, SaId};

use super::floors::{FloorKey, ReplayFloors, SaFloor};
use crate::fdb::Millis;
use crate::state::lock;

/// Inbound SAs one network keeps at most. Only holders of the network key can make one (an SA
/// exists only after a packet under it authenticated), so this bounds what a misbehaving member
/// restarting in a loop can make us hold, not what an outsider can.
pub const MAX_INBOUND_SAS: usize = 1024;

/// One inbound SA: the key (shared, immutable), the window (locked), its replay floor, what it
/// received.
pub struct InboundSa {
    key: OpenKey,
    window: Mutex<ReplayWindow>,
    floor: SaFloor,
    packets: AtomicU64,
    bytes: AtomicU64,
    last_seen: AtomicU64,
}

impl std::fmt::Debug for InboundSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundSa")
            .field("id", self.key.id())
            .finish_non_exhaustive()
    }
}

impl InboundSa {
    /// An SA of network `vni` just established: its window refuses everything up to the floor
    /// `floors` kept for it (what it accepted before a restart or a rebuild of its network).
    pub(crate) fn new(sa: OpenSa, vni: u32, floors: &ReplayFloors, now: Millis) -> Self {
        let (key, window) = sa.into_parts();
        let floor = floors.for_sa(FloorKey { vni, id: *key.id() }, now);
        let window = match floor.start() {
            0 => window,
            start => ReplayWindow::after(start),
        };
        InboundSa {
            key,
            window: Mutex::new(window),
            floor,
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last_seen: AtomicU64::new(now),
        }
    }

    pub fn id(&self) -> &SaId {
        self.key.id()
    }

    pub fn key(&self) -> &OpenKey {
        &self.key
    }

    /// The configured address of the VTEP that sends under this SA: authenticated, unlike the
    /// source address a packet arrives from.
    pub fn sender(&self) -> IpAddr {
        self.key.id().src
    }

    /// Opens the ESP packets `data[packets[k]]` (a run received together, all under this SA's
    /// SPI) in RFC 4303 §3.4.3's order for each: window check, then verify and decrypt, then
    /// commit (which checks again, so two workers racing with one packet, or a packet repeated
    /// within the run, cannot be accepted twice). The window lock is taken twice per run, not per
    /// packet, and the AES-GCM passes run outside it. The replay floor moves above the run's
    /// highest accepted number, if it must, before any packet is handed on. `results[k]` is what
    /// became of `packets[k]` (payload ranges are within the packet).
    pub fn open_run(
        &self,
        data: &mut [u8],
        packets: &[Range<usize>],
        floors: &ReplayFloors,
        now: Millis,
        results: &mut Vec<Result<Opened, EspError>>,
    ) {
        results.clear();
        {
            let window = lock(&self.window);
            results.extend(packets.iter().map(|range| {
                let seq = self.key.sequence_of(&data[range.clone()], &window)?;
                window.check(seq)?;
                Ok(Opened { seq, payload: 0..0 })
            }));
        }
        for (result, range) in results.iter_mut().zip(packets) {
            if let Ok(opened) = result {
                match self
                    .key
                    .decrypt_in_place(opened.seq, &mut data[range.clone()])
                {
                    Ok(payload) => opened.payload = payload,
                    Err(e) => *result = Err(e),
                }
            }
        }
        let (mut accepted, mut bytes, mut top) = (0u64, 0u64, 0u64);
        {
            let mut window = lock(&self.window);
            for (result, range) in results.iter_mut().zip(packets) {
                let Ok(opened) = result else {
                    continue;
                };
                match window.commit(opened.seq) {
                    Ok(()) => {
                        accepted += 1;
                        bytes += range.len() as u64;
                        top = top.max(opened.seq);
                    }
                    Err(e) => *result = Err(e),
                }
            }
            if accepted > 0 {
                floors.accepted(&self.floor, top, now);
            }
        }
        if accepted > 0 {
            self.packets.fetch_add(accepted, Ordering::Relaxed);
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            if self.last_seen.load(Ordering::Relaxed) != now {
                self.last_seen.store(now, Ordering::Relaxed);
            }
        }
    }

    /// Highest sequence number accepted so far.
    pub fn top(&self) -> Option<u64> {
        lock(&self.window).top()
    }

    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn last_seen(&self) -> Millis {
        self.last_seen.load(Ordering::Relaxed)
    }
}

type Map = papaya::HashMap<u32, Arc<InboundSa>, foldhash::fast::RandomState>;

/// The inbound SAs of one network by SPI.
#[derive(Debug)]
pub struct InboundTable {
    map: Map,
    len: AtomicUsize,
}

impl Default for InboundTable {
    fn default() -> Self {
        InboundTable {
            map: papaya::HashMap::builder()
                .hasher(foldhash::fast::RandomState::default())
                .build(),
            len: AtomicUsize::new(0),
        }
    }
}

impl InboundTable {
    /// Runs `f` with the SA of `spi`, if there is one. Lock-free; no reference count is touched,
    /// so workers reading the same SA do not bounce a cache line per packet.
    pub fn with<R>(&self, spi: u32, f: impl FnOnce(&InboundSa) -> R) -> Option<R> {
        let map = self.map.pin();
        map.get(&spi).map(|sa| f(sa))
    }

    /// Adds an SA that has just authenticated a packet. When the table is full the SA seen least
    /// recently goes (its sender has most likely restarted or stopped). Returns the one added, or
    /// the one already there if another worker added the same SPI first.
    pub fn insert(&self, sa: InboundSa) -> Arc<InboundSa> {
        let map = self.map.pin();
        if self.len.load(Ordering::Relaxed) >= MAX_INBOUND_SAS {
            let oldest = map
                .iter()
                .min_by_key(|(_, sa)| sa.last_seen())
                .map(|(spi, _)| *spi);
            if let Some(spi) = oldest {
                if map.remove(&spi).is_some() {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    tracing::debug!(spi = format!("{spi:#010x}"), "inbound SA evicted");
                }
            }
        }
        let spi = sa.id().spi.get();
        let new = Arc::new(sa);
        match map.try_insert(spi, Arc::clone(&new)) {
            Ok(_) => {
                self.len.fetch_add(1, Ordering::Relaxed);
                new
            }
            Err(e) => Arc::clone(e.current),
        }
    }

    /// Drops the SAs `keep` says no to (e.g. of key epochs that left the ring).
    pub fn retain(&self, mut keep: impl FnMut(&InboundSa) -> bool) {
        let map = self.map.pin();
        let gone: Vec<u32> = map
            .iter()
            .filter(|(_, sa)| !keep(sa))
            .map(|(spi, _)| *spi)
            .collect();
        for spi in gone {
            if map.remove(&spi).is_some() {
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every SA (for `vxnet sa show`).
    pub fn all(&self) -> Vec<Arc<InboundSa>> {
        self.map
            .pin()
            .iter()
            .map(|(_, sa)| Arc::clone(sa))
            .collect()
    }
}

/// Trial decryptions (`esp::establish`) one worker may spend, as a token bucket: a forged packet
/// with an unknown SPI costs an HKDF and an AES-GCM pass per candidate sender, so without a bound
/// a flood of them would cost unbounded CPU. Legitimate new SAs are rare (one per sender worker
/// and start or rotation); one that hits an empty bucket is established by a later packet.
#[derive(Debug, Clone)]
pub struct EstablishBudget {
    tokens: u32,
    last_refill: Millis,
}

impl EstablishBudget {
    /// Attempts in a burst.
    pub const BURST: u32 = 64;
    /// Attempts per second after the burst, per worker.
    pub const PER_SECOND: u32 = 128;

    pub fn new(now: Millis) -> Self {
        EstablishBudget {
            tokens: Self::BURST,
            last_refill: now,
        }
    }

    /// Takes one attempt; false when none is left.
    pub fn take(&mut self, now: Millis) -> bool {
        let elapsed = now.saturating_sub(self.last_refill);
        let refill = elapsed.saturating_mul(u64::from(Self::PER_SECOND)) / 1000;
        if refill > 0 {
            self.tokens = (u64::from(self.tokens) + refill).min(u64::from(Self::BURST)) as u32;
            self.last_refill = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use vxnet_encap::esp::{KeyEpoch, NetworkKey, SealSa, Spi, ESP_HEADER_LEN, MAX_TAILROOM};

    /// `count` ESP packets sealed under `sa`, each in a buffer of its own.
    fn sealed(sa: &mut SealSa, count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| {
                let mut buf = vec![i as u8; ESP_HEADER_LEN + 100 + MAX_TAILROOM];
                let sealed = sa
                    .seal_in_place(&mut buf, ESP_HEADER_LEN..ESP_HEADER_LEN + 100)
                    .unwrap();
                buf[sealed.packet].to_vec()
            })
            .collect()
    }

    /// `packets` back to back, as a GRO read holds them, and their ranges.
    fn run(packets: &[&Vec<u8>]) -> (Vec<u8>, Vec<Range<usize>>) {
        let mut data = Vec::new();
        let mut ranges = Vec::new();
        for p in packets {
            ranges.push(data.len()..data.len() + p.len());
            data.extend_from_slice(p);
        }
        (data, ranges)
    }

    #[test]
    fn a_run_accepts_each_number_once_and_steps_the_floor_past_its_top() {
        let key = NetworkKey::from_bytes([5; 32]);
        let id = SaId {
            epoch: KeyEpoch(0),
            spi: Spi::for_epoch(KeyEpoch(0), 0xBEEF),
            src: IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2)),
        };
        let mut tx = SealSa::new(&key, id, 1000);
        let p = sealed(&mut tx, 3);
        let floors = ReplayFloors::in_memory();
        let sa = InboundSa::new(OpenSa::new(&key, id), 7, &floors, 0);
        let mut results = Vec::new();

        let (mut data, ranges) = run(&[&p[0]]);
        sa.open_run(&mut data, &ranges, &floors, 5, &mut results);
        assert_eq!(results[0].as_ref().unwrap().seq, 1000);

        // A replay of an earlier run, a packet repeated within the run, a forgery: each refused
        // on its own, the others delivered.
        let mut forged = p[2].clone();
        forged[40] ^= 1;
        let (mut data, ranges) = run(&[&p[1], &p[1], &p[0], &forged, &p[2]]);
        sa.open_run(&mut data, &ranges, &floors, 6, &mut results);
        let seqs: Vec<_> = results.iter().map(|r| r.clone().map(|o| o.seq)).collect();
        assert_eq!(
            seqs,
            [
                Ok(1001),
                Err(EspError::Replayed { seq: 1001 }),
                Err(EspError::Replayed { seq: 1000 }),
                Err(EspError::BadIcv),
                Ok(1002),
            ]
        );
        // The plaintext is where `payload` says, in the packet's own range.
        let opened = results[4].as_ref().unwrap();
        let plain = &data[ranges[4].clone()][opened.payload.clone()];
        assert_eq!(plain, &[2u8; 100][..]);
        assert_eq!((sa.packets(), sa.top()), (3, Some(1002)));
        // Nothing delivered lies above the floor kept for a restart.
        let floor = floors.floor(&FloorKey { vni: 7, id });
        assert!(floor >= 1002, "floor {floor}");
        assert_eq!(sa.last_seen(), 6);
    }

    #[test]
    fn budget_bounds_attempts_and_refills() {
        let mut b = EstablishBudget::new(1000);
        let burst = (0..1000).take_while(|_| b.take(1000)).count();
        assert_eq!(burst, EstablishBudget::BURST as usize);
        assert!(!b.take(1000));
        // 100 ms later: 12.8 attempts' worth.
        let more = (0..1000).take_while(|_| b.take(1100)).count();
        assert_eq!(more, 12);
        let later = (0..1000).take_while(|_| b.take(100_000)).count();
        assert_eq!(later, EstablishBudget::BURST as usize);
    }
}
