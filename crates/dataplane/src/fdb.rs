//! The forwarding database: inner MAC → remote VTEP, one table per network.
//!
//! Forwarding threads look MACs up on every frame, so the table is papaya's lock-free hash map:
//! a lookup never waits for a learner. Refreshing a known MAC (the common case on receive) is one
//! atomic store on the entry, not a map write; only a new or moved MAC inserts.
//!
//! Time is passed in as [`Millis`] since the engine started, so the table is testable without a
//! clock.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use vxnet_encap::MacAddr;

/// Milliseconds since the engine started.
pub type Millis = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Configured (`vxnet fdb add` or the cluster store): never ages, never overwritten by learning.
    Static,
    Learned,
}

#[derive(Debug)]
pub(crate) struct FdbEntry {
    dst: IpAddr,
    kind: EntryKind,
    last_seen: AtomicU64,
}

impl FdbEntry {
    pub(crate) fn dst(&self) -> IpAddr {
        self.dst
    }
}

/// What learning did with a received frame's source MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Known at this VTEP already: the age was reset.
    Refreshed,
    New,
    /// The MAC now sits behind another VTEP.
    Moved {
        from: IpAddr,
    },
    /// A static entry holds the MAC; learning never overrides it.
    StaticKept,
    /// The table is full (`--max-fdb`): not learned; frames to it will be flooded.
    Full,
    /// Broadcast, multicast or all-zero source: never learned.
    NotLearnable,
}

/// One row of `vxnet fdb show`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FdbRow {
    pub mac: String,
    pub dst: IpAddr,
    pub kind: EntryKind,
    /// Seconds since the entry last saw traffic (learned entries only).
    pub age_secs: Option<u64>,
}

/// Keyed by [`MacAddr::to_u64`]: the six octets in a `u64` hash faster than an array.
type Map = papaya::HashMap<u64, FdbEntry, foldhash::fast::RandomState>;

#[derive(Debug)]
pub struct Fdb {
    map: Map,
    learned: AtomicUsize,
    max_learned: usize,
}

impl Fdb {
    pub fn new(max_learned: usize) -> Self {
        Fdb {
            map: papaya::HashMap::builder()
                .hasher(foldhash::fast::RandomState::default())
                .capacity(max_learned.min(4096))
                .build(),
            learned: AtomicUsize::new(0),
            max_learned,
        }
    }

    /// The VTEP behind `mac`, if known. Lock-free.
    pub fn lookup(&self, mac: MacAddr) -> Option<IpAddr> {
        self.map.pin().get(&mac.to_u64()).map(FdbEntry::dst)
    }

    pub fn learn(&self, now: Millis, mac: MacAddr, from: IpAddr) -> Learned {
        if !mac.is_unicast() {
            return Learned::NotLearnable;
        }
        let map = self.map.pin();
        let k = mac.to_u64();
        if let Some(entry) = map.get(&k) {
            if entry.kind == EntryKind::Static {
                return Learned::StaticKept;
            }
            if entry.dst == from {
                entry.last_seen.store(now, Ordering::Relaxed);
                return Learned::Refreshed;
            }
            let previous = entry.dst;
            map.insert(k, Self::entry(from, EntryKind::Learned, now));
            return Learned::Moved { from: previous };
        }
        if self.learned.load(Ordering::Relaxed) >= self.max_learned {
            return Learned::Full;
        }
        match map.try_insert(k, Self::entry(from, EntryKind::Learned, now)) {
            Ok(_) => {
                self.learned.fetch_add(1, Ordering::Relaxed);
                Learned::New
            }
            // Another worker learned it in the meantime; theirs is as good as ours.
            Err(_) => Learned::Refreshed,
        }
    }

    fn entry(dst: IpAddr, kind: EntryKind, now: Millis) -> FdbEntry {
        FdbEntry {
            dst,
            kind,
            last_seen: AtomicU64::new(now),
        }
    }

    /// Adds or replaces a static entry (it replaces a learned one for the same MAC).
    pub fn add_static(&self, mac: MacAddr, dst: IpAddr) {
        let map = self.map.pin();
        let old = map.insert(mac.to_u64(), Self::entry(dst, EntryKind::Static, 0));
        if matches!(old, Some(e) if e.kind == EntryKind::Learned) {
            self.learned.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Removes an entry of either kind; returns whether there was one.
    pub(crate) fn remove(&self, mac: MacAddr) -> bool {
        match self.map.pin().remove(&mac.to_u64()) {
            Some(e) => {
                if e.kind == EntryKind::Learned {
                    self.learned.fetch_sub(1, Ordering::Relaxed);
                }
                true
            }
            None => false,
        }
    }

    /// Drops learned entries idle for at least `ageing`; returns how many.
    pub(crate) fn age_out(&self, now: Millis, ageing: Millis) -> usize {
        let map = self.map.pin();
        let mut removed = 0;
        for (k, e) in map.iter() {
            let idle = now.saturating_sub(e.last_seen.load(Ordering::Relaxed));
            if e.kind == EntryKind::Learned && idle >= ageing {
                // Only remove the entry we judged idle: a concurrent move replaced it otherwise.
                if map
                    .remove_if(k, |_, current| std::ptr::eq(current, e))
                    .ok()
                    .flatten()
                    .is_some()
                {
                    self.learned.fetch_sub(1, Ordering::Relaxed);
                    removed += 1;
                }
            }
        }
        removed
    }

    #[cfg(test)]
    fn learned_count(&self) -> usize {
        self.learned.load(Ordering::Relaxed)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Destinations of static entries: they are known peers and may send to us.
    pub(crate) fn static_destinations(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .map
            .pin()
            .iter()
            .filter(|(_, e)| e.kind == EntryKind::Static)
            .map(|(_, e)| e.dst)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    pub fn rows(&self, now: Millis) -> Vec<FdbRow> {
        let mut rows: Vec<FdbRow> = self
            .map
            .pin()
            .iter()
            .map(|(k, e)| FdbRow {
                mac: MacAddr::from_u64(*k).to_string(),
                dst: e.dst,
                kind: e.kind,
                age_secs: (e.kind == EntryKind::Learned)
                    .then(|| now.saturating_sub(e.last_seen.load(Ordering::Relaxed)) / 1000),
            })
            .collect();
        rows.sort_by(|a, b| a.mac.cmp(&b.mac));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, last])
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn learn_refresh_move_and_age() {
        let fdb = Fdb::new(100);
        assert_eq!(fdb.learn(0, mac(1), ip(2)), Learned::New);
        assert_eq!(fdb.lookup(mac(1)), Some(ip(2)));
        assert_eq!(fdb.learn(500, mac(1), ip(2)), Learned::Refreshed);
        assert_eq!(
            fdb.learn(600, mac(1), ip(3)),
            Learned::Moved { from: ip(2) }
        );
        assert_eq!(fdb.lookup(mac(1)), Some(ip(3)));
        assert_eq!(fdb.learned_count(), 1);
        // Idle 999 ms of a 1000 ms ageing: stays. Idle 1000: goes.
        assert_eq!(fdb.age_out(1599, 1000), 0);
        assert_eq!(fdb.age_out(1600, 1000), 1);
        assert_eq!(fdb.lookup(mac(1)), None);
        assert_eq!(fdb.learned_count(), 0);
    }

    #[test]
    fn static_entries_never_age_and_are_not_overwritten() {
        let fdb = Fdb::new(100);
        fdb.add_static(mac(1), ip(9));
        assert_eq!(fdb.learn(0, mac(1), ip(2)), Learned::StaticKept);
        assert_eq!(fdb.lookup(mac(1)), Some(ip(9)));
        assert_eq!(fdb.age_out(u64::MAX, 1), 0);
        assert_eq!(fdb.lookup(mac(1)), Some(ip(9)));
        assert_eq!(fdb.static_destinations(), vec![ip(9)]);
        assert!(fdb.remove(mac(1)));
        assert!(!fdb.remove(mac(1)));
    }

    #[test]
    fn group_and_zero_sources_are_not_learned() {
        let fdb = Fdb::new(100);
        assert_eq!(
            fdb.learn(0, MacAddr::BROADCAST, ip(2)),
            Learned::NotLearnable
        );
        assert_eq!(
            fdb.learn(0, MacAddr([0x01, 0, 0x5e, 0, 0, 1]), ip(2)),
            Learned::NotLearnable
        );
        assert_eq!(fdb.learn(0, MacAddr::ZERO, ip(2)), Learned::NotLearnable);
        assert!(fdb.is_empty());
    }

    #[test]
    fn full_table_refuses_new_macs_but_keeps_refreshing_old_ones() {
        let fdb = Fdb::new(2);
        assert_eq!(fdb.learn(0, mac(1), ip(2)), Learned::New);
        assert_eq!(fdb.learn(0, mac(2), ip(2)), Learned::New);
        assert_eq!(fdb.learn(0, mac(3), ip(2)), Learned::Full);
        assert_eq!(fdb.learn(1, mac(1), ip(2)), Learned::Refreshed);
        // Static entries do not count against the learning limit.
        fdb.add_static(mac(4), ip(5));
        assert_eq!(fdb.learned_count(), 2);
        // Ageing frees room.
        assert_eq!(fdb.age_out(10_000, 1000), 2);
        assert_eq!(fdb.learn(10_000, mac(3), ip(2)), Learned::New);
    }

    #[test]
    fn rows_show_kind_and_age() {
        let fdb = Fdb::new(10);
        fdb.learn(1000, mac(1), ip(2));
        fdb.add_static(mac(2), ip(3));
        let rows = fdb.rows(6000);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].mac, "02:00:00:00:00:01");
        assert_eq!(rows[0].age_secs, Some(5));
        assert_eq!(rows[1].kind, EntryKind::Static);
        assert_eq!(rows[1].age_secs, None);
    }
}
