//! Replay floors: what keeps a restarted receiver from accepting ESP it accepted before.
//!
//! An inbound SA's replay window lives in memory, and a sender's SA outlives the receiver's
//! process (its SPI is drawn at the *sender's* start). Without more, a packet captured before
//! the receiver restarted would establish the SA again with a fresh window and be delivered a
//! second time. So every inbound SA has a *floor* kept in the state dir: a sequence number at or
//! above every one the SA has accepted. A restarted engine (or a network rebuilt by a reload)
//! opens the SA with a window that refuses everything up to the floor
//! (`ReplayWindow::after`): replays are dropped as `esp_replay`, the sender's next packets
//! (numbered above the floor) pass.
//!
//! The floor is written ahead, in steps: a packet numbered above the SA's written floor moves
//! it to that number plus a margin before the packet is delivered, so the invariant "nothing
//! delivered above the floor on disk" holds at every instant, while the hot path writes only
//! once per margin. The margin follows the SA's rate (doubled when the last step was less than
//! [`FAST_STEP_MS`] ago, halved when more than [`SLOW_STEP_MS`]), so a busy SA writes about ten
//! times a second and an idle one's floor sits right on its top: after a restart the sender
//! loses at most one margin of packets (about 0.1 s of its traffic) to the floor, fewer than
//! it lost while the receiver was down.
//!
//! The file (`esp-replay-<local address>`, mode 0600) holds one 64-byte record per SA at a
//! fixed slot, written in place with one `pwrite`: a written record is in the page cache at
//! once, so it survives the process being killed (-9 included); a thread syncs it to disk every
//! second, so a crash of the whole host loses at most that last second's steps. It holds at
//! most [`MAX_FLOORS`] records; beyond that the one stepped least recently gives way.
//! A record that does not check (torn, corrupt) is skipped with a warning naming its offset.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv6Addr};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use vxnet_encap::esp::{KeyEpoch, SaId, Spi};

use super::LogLimit;
use crate::fdb::Millis;
use crate::state::lock;

/// Records one file holds at most (256 KiB).
pub const MAX_FLOORS: usize = 4096;
/// A step sooner than this after the last one doubles the margin.
pub const FAST_STEP_MS: u64 = 50;
/// A step later than this after the last one halves it.
pub const SLOW_STEP_MS: u64 = 500;
/// The largest margin: about a second of a saturated 10 Gb/s link's 1400-byte packets.
pub const MAX_MARGIN: u64 = 1 << 20;

const MAGIC: &[u8; 16] = b"vxnet-replay-v1\n";
const RECORD: usize = 64;
/// Records start after the header, at the first record boundary.
const FIRST: u64 = RECORD as u64;
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Which SA a floor belongs to: its network (by VNI: two networks may share a key) and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FloorKey {
    pub vni: u32,
    pub id: SaId,
}

/// One SA's side of its floor, kept by the SA (see `InboundSa`): read on every packet.
#[derive(Debug)]
pub struct SaFloor {
    key: FloorKey,
    /// The floor as written: nothing above it may be delivered before it moves.
    written: AtomicU64,
    margin: AtomicU64,
    stepped_at: AtomicU64,
}

impl SaFloor {
    /// The floor the SA starts with (a window refusing everything up to it).
    pub fn start(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct Slot {
    index: u32,
    floor: u64,
    /// When it was last stepped, for eviction.
    used: Millis,
}

#[derive(Debug, Default)]
struct Table {
    slots: HashMap<FloorKey, Slot>,
    free: Vec<u32>,
    /// Slots handed out so far (the file's length in records).
    next: u32,
}

impl Table {
    /// A slot for `key`: its own, a free one, a new one, or the least recently stepped one's.
    fn slot_for(&mut self, key: FloorKey, now: Millis) -> &mut Slot {
        if !self.slots.contains_key(&key) {
            let index = if let Some(index) = self.free.pop() {
                index
            } else if (self.next as usize) < MAX_FLOORS {
                self.next += 1;
                self.next - 1
            } else {
                let oldest = self
                    .slots
                    .iter()
                    .min_by_key(|(_, s)| s.used)
                    .map(|(k, _)| *k);
                // MAX_FLOORS > 0 slots are all in use here, so there is an oldest.
                let slot = oldest.and_then(|k| self.slots.remove(&k));
                slot.map_or(0, |s| s.index)
            };
            self.slots.insert(
                key,
                Slot {
                    index,
                    floor: 0,
                    used: now,
                },
            );
        }
        // Inserted above when missing.
        self.slots
            .get_mut(&key)
            .unwrap_or_else(|| unreachable!("slot inserted"))
    }
}

/// The floors of one engine. The file is opened when the first SA is established (a plaintext
/// engine never touches it).
#[derive(Debug)]
pub struct ReplayFloors {
    path: Option<PathBuf>,
    store: OnceLock<Arc<Store>>,
    log: LogLimit,
}

#[derive(Debug, Default)]
struct Store {
    file: Option<File>,
    table: Mutex<Table>,
    dirty: AtomicBool,
}

impl ReplayFloors {
    /// Floors kept in memory only: they still cover a network rebuilt by a reload, not a
    /// restart (engines without a state dir: tests, `vxnet demo`).
    pub fn in_memory() -> Self {
        ReplayFloors {
            path: None,
            store: OnceLock::new(),
            log: LogLimit::default(),
        }
    }

    /// The floors of the VTEP `local`, kept in `dir` (created if missing) once the first SA
    /// is established, with a thread syncing them to disk. Anything that keeps the file from
    /// being used then (no permission, another engine holding it) is one warning, and the
    /// floors are kept in memory only.
    pub fn at(dir: &Path, local: IpAddr) -> Self {
        ReplayFloors {
            path: Some(dir.join(format!("esp-replay-{local}"))),
            store: OnceLock::new(),
            log: LogLimit::default(),
        }
    }

    fn store(&self) -> &Store {
        self.store.get_or_init(|| {
            let Some(path) = &self.path else {
                return Arc::default();
            };
            match Store::load(path) {
                Ok(store) => {
                    let store = Arc::new(store);
                    let weak = Arc::downgrade(&store);
                    let spawned = std::thread::Builder::new()
                        .name("vxnet-floors".into())
                        .spawn(move || sync_loop(weak));
                    if let Err(e) = spawned {
                        tracing::warn!("ESP replay floors are not synced to disk (no thread: {e}); they still survive the engine's own restart");
                    }
                    store
                }
                Err(reason) => {
                    tracing::warn!(
                        file = %path.display(),
                        "ESP replay floors kept in memory only ({reason}): after a restart, ESP captured before it would be accepted once more"
                    );
                    Arc::default()
                }
            }
        })
    }

    /// The floor side of an SA seen for the first time since this engine started (or since its
    /// network was rebuilt): starts at the floor kept for it, 0 for an SA never seen.
    pub fn for_sa(&self, key: FloorKey, now: Millis) -> SaFloor {
        let floor = lock(&self.store().table)
            .slots
            .get(&key)
            .map_or(0, |s| s.floor);
        SaFloor {
            key,
            written: AtomicU64::new(floor),
            margin: AtomicU64::new(1),
            stepped_at: AtomicU64::new(now),
        }
    }

    /// Called with each sequence number an SA accepts, before the packet is delivered (and
    /// under the SA's window lock, so one SA's steps are in order). Writes only when `seq` is
    /// above the written floor.
    pub fn accepted(&self, sa: &SaFloor, seq: u64, now: Millis) {
        if seq <= sa.written.load(Ordering::Relaxed) {
            return;
        }
        let since = now.saturating_sub(sa.stepped_at.load(Ordering::Relaxed));
        let margin = sa.margin.load(Ordering::Relaxed);
        let margin = if since < FAST_STEP_MS {
            (margin * 2).min(MAX_MARGIN)
        } else if since > SLOW_STEP_MS {
            (margin / 2).max(1)
        } else {
            margin
        };
        let floor = seq.saturating_add(margin);
        sa.margin.store(margin, Ordering::Relaxed);
        sa.stepped_at.store(now, Ordering::Relaxed);
        sa.written.store(floor, Ordering::Relaxed);
        let store = self.store();
        let mut table = lock(&store.table);
        let slot = table.slot_for(sa.key, now);
        slot.floor = slot.floor.max(floor);
        slot.used = now;
        let (index, floor) = (slot.index, slot.floor);
        drop(table);
        let Some(file) = &store.file else {
            return;
        };
        let offset = FIRST + u64::from(index) * RECORD as u64;
        match file.write_all_at(&encode(&sa.key, floor), offset) {
            Ok(()) => store.dirty.store(true, Ordering::Relaxed),
            Err(e) => {
                if self.log.allow(now) {
                    tracing::warn!(
                        file = %self.path.as_deref().unwrap_or(Path::new("?")).display(),
                        "cannot write an ESP replay floor ({e}): until it can, ESP accepted now would be accepted again after a restart"
                    );
                }
            }
        }
    }

    /// The floor kept for `key` (0: none).
    pub fn floor(&self, key: &FloorKey) -> u64 {
        lock(&self.store().table)
            .slots
            .get(key)
            .map_or(0, |s| s.floor)
    }
}

impl Store {
    fn load(path: &Path) -> Result<Self, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the folder: {e}"))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("cannot open it: {e}"))?;
        match crate::sys::claim::lock_file(&file) {
            Ok(true) => {}
            Ok(false) => return Err("another engine holds it".into()),
            Err(e) => return Err(format!("cannot lock it: {e}")),
        }
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(|e| format!("cannot read it: {e}"))?;
        let mut table = Table::default();
        if data.len() >= MAGIC.len() && &data[..MAGIC.len()] == MAGIC {
            decode(&data, &mut table, path);
        } else if !data.is_empty() {
            tracing::warn!(file = %path.display(), "not an ESP replay floor file (its first 16 bytes are not the header); starting it anew");
        }
        file.set_len(FIRST + u64::from(table.next) * RECORD as u64)
            .and_then(|()| file.write_all_at(MAGIC, 0))
            .map_err(|e| format!("cannot write it: {e}"))?;
        Ok(Store {
            file: Some(file),
            table: Mutex::new(table),
            dirty: AtomicBool::new(true),
        })
    }

    /// Writes what changed since the last sync to disk.
    fn sync(&self) {
        if let Some(file) = &self.file {
            if self.dirty.swap(false, Ordering::Relaxed) {
                if let Err(e) = file.sync_data() {
                    tracing::debug!("syncing the ESP replay floors: {e}");
                }
            }
        }
    }
}

fn sync_loop(floors: Weak<Store>) {
    loop {
        std::thread::sleep(SYNC_EVERY);
        let Some(floors) = floors.upgrade() else {
            return;
        };
        floors.sync();
    }
}

fn addr_bytes(ip: IpAddr) -> (u8, [u8; 16]) {
    match ip {
        IpAddr::V4(v4) => (4, v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) => (6, v6.octets()),
    }
}

fn addr_from(family: u8, bytes: &[u8]) -> Option<IpAddr> {
    let octets: [u8; 16] = bytes.try_into().ok()?;
    let v6 = Ipv6Addr::from(octets);
    match family {
        4 => v6.to_ipv4_mapped().map(IpAddr::V4),
        6 => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

/// FNV-1a: enough to tell a torn or overwritten record from a written one.
fn check(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// One record: VNI, epoch, SPI, the two address families, source, destination, floor, check.
fn encode(key: &FloorKey, floor: u64) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    let (src_family, src) = addr_bytes(key.id.src);
    let (dst_family, dst) = addr_bytes(key.id.dst);
    r[0..4].copy_from_slice(&key.vni.to_be_bytes());
    r[4..8].copy_from_slice(&key.id.epoch.0.to_be_bytes());
    r[8..12].copy_from_slice(&key.id.spi.get().to_be_bytes());
    r[12] = src_family;
    r[13] = dst_family;
    r[16..32].copy_from_slice(&src);
    r[32..48].copy_from_slice(&dst);
    r[48..56].copy_from_slice(&floor.to_be_bytes());
    let sum = check(&r[..56]);
    r[56..60].copy_from_slice(&sum.to_be_bytes());
    r
}

/// Why a record was skipped.
fn decode_record(r: &[u8]) -> Result<Option<(FloorKey, u64)>, &'static str> {
    if r.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    let word = |at: usize| u32::from_be_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]]);
    if word(56) != check(&r[..56]) {
        return Err("its check does not match (torn or overwritten)");
    }
    let spi = Spi::new(word(8)).ok_or("its SPI is reserved")?;
    let src = addr_from(r[12], &r[16..32]).ok_or("its source address is malformed")?;
    let dst = addr_from(r[13], &r[32..48]).ok_or("its destination address is malformed")?;
    let mut floor = [0u8; 8];
    floor.copy_from_slice(&r[48..56]);
    let key = FloorKey {
        vni: word(0),
        id: SaId {
            epoch: KeyEpoch(word(4)),
            spi,
            src,
            dst,
        },
    };
    Ok(Some((key, u64::from_be_bytes(floor))))
}

fn decode(data: &[u8], table: &mut Table, path: &Path) {
    let records = data.get(FIRST as usize..).unwrap_or_default();
    for (index, r) in records.chunks_exact(RECORD).take(MAX_FLOORS).enumerate() {
        let index = index as u32;
        table.next = index + 1;
        match decode_record(r) {
            Ok(Some((key, floor))) => {
                let previous = table.slots.insert(
                    key,
                    Slot {
                        index,
                        floor,
                        used: 0,
                    },
                );
                // A key twice (cannot be written so): keep the higher floor, free the other.
                if let Some(p) = previous {
                    table.free.push(p.index);
                    if let Some(s) = table.slots.get_mut(&key) {
                        s.floor = s.floor.max(p.floor);
                    }
                }
            }
            Ok(None) => table.free.push(index),
            Err(reason) => {
                tracing::warn!(
                    file = %path.display(),
                    offset = FIRST + u64::from(index) * RECORD as u64,
                    "ESP replay floor record skipped: {reason}"
                );
                table.free.push(index);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key(spi: u32, vni: u32) -> FloorKey {
        FloorKey {
            vni,
            id: SaId {
                epoch: KeyEpoch(3),
                spi: Spi::new(spi).unwrap(),
                src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                dst: "fd00::1".parse().unwrap(),
            },
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vxnet-floors-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

    /// The floors in `d` opened again once the last instance let go of the file (its sync
    /// thread may hold it for the moment of a sync).
    fn reopen(d: &Path) -> ReplayFloors {
        for _ in 0..100 {
            let floors = ReplayFloors::at(d, LOCAL);
            if floors.store().file.is_some() {
                return floors;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the floor file stays locked");
    }

    #[test]
    fn floors_survive_a_reopen_and_stay_above_everything_accepted() {
        let d = dir("reopen");
        let floors = ReplayFloors::at(&d, LOCAL);
        let a = floors.for_sa(key(0x1000, 42), 0);
        assert_eq!(a.start(), 0);
        let mut now = 0;
        let mut top = 0;
        for seq in 100..20_000u64 {
            // A fast sender: 1000 packets a millisecond.
            now = seq / 1000;
            floors.accepted(&a, seq, now);
            assert!(floors.floor(&a.key) >= seq, "floor below an accepted {seq}");
            top = seq;
        }
        let b = floors.for_sa(key(0x2000, 42), now);
        floors.accepted(&b, 7, now + 1000);
        let written = floors.floor(&a.key);
        assert!(written - top <= MAX_MARGIN);
        drop(floors);
        let again = reopen(&d);
        assert_eq!(again.for_sa(key(0x1000, 42), 0).start(), written);
        assert_eq!(
            again.for_sa(key(0x2000, 42), 0).start(),
            8,
            "an idle SA: margin 1"
        );
        assert_eq!(again.for_sa(key(0x1000, 43), 0).start(), 0, "another VNI");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_slow_sa_steps_on_its_top_and_a_fast_one_widens_its_margin() {
        let floors = ReplayFloors::in_memory();
        let sa = floors.for_sa(key(0x1000, 1), 0);
        for (i, seq) in (1..10u64).enumerate() {
            floors.accepted(&sa, seq, 1000 * (i as u64 + 1));
            assert!(floors.floor(&sa.key) <= seq + 1);
        }
        let mut seq = 100;
        for _ in 0..30 {
            seq = floors.floor(&sa.key) + 1;
            floors.accepted(&sa, seq, 20_000);
        }
        assert_eq!(floors.floor(&sa.key) - seq, MAX_MARGIN);
    }

    #[test]
    fn a_corrupt_record_is_skipped_and_the_others_kept() {
        let d = dir("corrupt");
        let floors = ReplayFloors::at(&d, LOCAL);
        for spi in [0x1000, 0x2000, 0x3000] {
            let sa = floors.for_sa(key(spi, 9), 0);
            floors.accepted(&sa, 500, 10_000);
        }
        drop(floors);
        let path = d.join(format!("esp-replay-{LOCAL}"));
        let mut data = std::fs::read(&path).unwrap();
        data[FIRST as usize + RECORD + 50] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        let again = reopen(&d);
        let kept: Vec<u64> = [0x1000, 0x2000, 0x3000]
            .iter()
            .map(|spi| again.for_sa(key(*spi, 9), 0).start())
            .collect();
        assert_eq!(kept, [501, 0, 501]);
        // The skipped slot is reused.
        let sa = again.for_sa(key(0x4000, 9), 0);
        again.accepted(&sa, 9, 0);
        assert_eq!(lock(&again.store().table).next, 3);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_second_engine_on_the_same_file_keeps_its_floors_in_memory() {
        let d = dir("locked");
        let first = ReplayFloors::at(&d, LOCAL);
        let second = ReplayFloors::at(&d, LOCAL);
        assert!(first.store().file.is_some());
        assert!(second.store().file.is_none());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_full_file_gives_the_least_recently_stepped_slot_away() {
        let floors = ReplayFloors::in_memory();
        let at = |spi: u32| u64::from(spi) * 1000;
        for spi in 0..MAX_FLOORS as u32 {
            let sa = floors.for_sa(key(0x1000 + spi, 1), at(spi));
            floors.accepted(&sa, 5, at(spi) + 1000);
        }
        let sa = floors.for_sa(key(0x100_0000, 1), at(5000));
        floors.accepted(&sa, 5, at(5001));
        assert_eq!(floors.floor(&key(0x1000, 1)), 0, "the oldest went");
        assert_eq!(floors.floor(&key(0x1001, 1)), 6);
        assert_eq!(lock(&floors.store().table).slots.len(), MAX_FLOORS);
    }
}
