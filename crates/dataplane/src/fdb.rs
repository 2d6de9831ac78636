//! The forwarding database: inner MAC → remote VTEP, one table per network.
//!
//! Forwarding threads look MACs up on every frame, so the table is papaya's lock-free hash map:
//! a lookup never waits for a learner. Refreshing a known MAC (the common case on receive) is one
//! atomic operation on the entry, not a map write; only a new or moved MAC inserts.
//!
//! Entries are immutable but for their age, so a lookup sees a whole entry or none. Every change
//! that depends on what is there (a move, a static entry replacing a learned one, ageing) is one
//! atomic map operation against the entry it judged, so concurrent learners, control requests
//! and the ageing sweep cannot undo each other: learning never overwrites a static entry, a
//! sweep removes only the idle entry it looked at, and the counts of learned and static
//! entries stay exact (`tests/fdb_concurrency.rs` checks all of it under load).
//!
//! Time is passed in as [`Millis`] since the engine started, so the table is testable without a
//! clock.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use papaya::{Compute, Operation};
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

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EntryKind::Static => "static",
            EntryKind::Learned => "learned",
        })
    }
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

    /// Seen at `now`. Workers pass the time of their own batch, which may be older than another
    /// worker's: the age only ever moves forward, or an entry in use could age out early.
    fn touch(&self, now: Millis) {
        if self.last_seen.load(Ordering::Relaxed) < now {
            self.last_seen.fetch_max(now, Ordering::Relaxed);
        }
    }

    fn idle(&self, now: Millis) -> Millis {
        now.saturating_sub(self.last_seen.load(Ordering::Relaxed))
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

/// Why a static change was refused; the control socket adds the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FdbError {
    /// `fdb add` of a MAC that has an entry, as `bridge fdb add` (EEXIST).
    // In parentheses: the control socket appends " in VNI N", which must not read as where
    // `fdb replace` would act.
    #[error("{mac} has an entry already (dst {dst}, {kind}; fdb replace changes it)")]
    Exists {
        mac: MacAddr,
        dst: IpAddr,
        kind: EntryKind,
    },
    #[error("the FDB holds its limit of {max} static entries (--max-fdb)")]
    Full { max: usize },
    #[error("no entry for {mac}")]
    NotFound { mac: MacAddr },
    /// `fdb del MAC --dst IP` naming another destination than the entry's.
    #[error("{mac} goes to {dst}, not {asked}")]
    OtherDestination {
        mac: MacAddr,
        dst: IpAddr,
        asked: IpAddr,
    },
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

/// Takes one of `max` slots of `count`, or none when all are taken. Reserving before inserting
/// keeps a limit exact when several threads insert at once.
fn reserve(count: &AtomicUsize, max: usize) -> bool {
    count
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

fn release(count: &AtomicUsize) {
    count.fetch_sub(1, Ordering::Relaxed);
}

#[derive(Debug)]
pub struct Fdb {
    map: Map,
    learned: AtomicUsize,
    statics: AtomicUsize,
    /// `--max-fdb`: the limit of learned entries, and separately of static ones, so that MACs
    /// learned from the overlay cannot crowd out configured ones (nor the other way round).
    max: usize,
}

impl Fdb {
    /// A table of at most `max` learned and `max` static entries.
    pub fn new(max: usize) -> Self {
        Fdb {
            map: papaya::HashMap::builder()
                .hasher(foldhash::fast::RandomState::default())
                .capacity(max.min(4096))
                .build(),
            learned: AtomicUsize::new(0),
            statics: AtomicUsize::new(0),
            max,
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
        // Each pass that does not return saw the entry change under it (another worker, the
        // control socket or the sweep got there first): look again. Every such change completed,
        // so this ends.
        loop {
            match map.get(&k) {
                Some(e) if e.kind == EntryKind::Static => return Learned::StaticKept,
                Some(e) if e.dst == from => {
                    e.touch(now);
                    return Learned::Refreshed;
                }
                Some(_) => {
                    // Replace only a learned entry elsewhere: a static entry installed meanwhile
                    // stays, a move to `from` meanwhile is a refresh next time round.
                    let moved = map.compute(k, |current| match current {
                        Some((_, e)) if e.kind == EntryKind::Learned && e.dst != from => {
                            Operation::Insert(Self::entry(from, EntryKind::Learned, now))
                        }
                        _ => Operation::Abort(()),
                    });
                    if let Compute::Updated { old: (_, old), .. } = moved {
                        return Learned::Moved { from: old.dst };
                    }
                }
                None => {
                    if !reserve(&self.learned, self.max) {
                        return Learned::Full;
                    }
                    if map
                        .try_insert(k, Self::entry(from, EntryKind::Learned, now))
                        .is_ok()
                    {
                        return Learned::New;
                    }
                    release(&self.learned);
                }
            }
        }
    }

    fn entry(dst: IpAddr, kind: EntryKind, now: Millis) -> FdbEntry {
        FdbEntry {
            dst,
            kind,
            last_seen: AtomicU64::new(now),
        }
    }

    /// `fdb add`: a static entry for a MAC that has none (as `bridge fdb add`, which refuses an
    /// existing entry, learned or static, with EEXIST).
    pub fn add_static(&self, mac: MacAddr, dst: IpAddr) -> Result<(), FdbError> {
        let map = self.map.pin();
        let exists = |e: &FdbEntry| FdbError::Exists {
            mac,
            dst: e.dst,
            kind: e.kind,
        };
        if let Some(e) = map.get(&mac.to_u64()) {
            return Err(exists(e));
        }
        if !reserve(&self.statics, self.max) {
            return Err(FdbError::Full { max: self.max });
        }
        match map.try_insert(mac.to_u64(), Self::entry(dst, EntryKind::Static, 0)) {
            Ok(_) => Ok(()),
            Err(occupied) => {
                release(&self.statics);
                Err(exists(occupied.current))
            }
        }
    }

    /// `fdb replace` (and the cluster's MACs): makes `mac` a static entry to `dst`, whatever was
    /// there. Returns the destination and kind it replaced.
    pub fn replace_static(
        &self,
        mac: MacAddr,
        dst: IpAddr,
    ) -> Result<Option<(IpAddr, EntryKind)>, FdbError> {
        let map = self.map.pin();
        let k = mac.to_u64();
        loop {
            let was_static = matches!(map.get(&k), Some(e) if e.kind == EntryKind::Static);
            // A learned entry or none becomes a static entry: that needs a slot.
            if !was_static && !reserve(&self.statics, self.max) {
                return Err(FdbError::Full { max: self.max });
            }
            let replaced = map.compute(k, |current| {
                match (current.map(|(_, e)| e.kind), was_static) {
                    (Some(EntryKind::Static), true) | (Some(EntryKind::Learned) | None, false) => {
                        Operation::Insert(Self::entry(dst, EntryKind::Static, 0))
                    }
                    _ => Operation::Abort(()),
                }
            });
            match replaced {
                Compute::Inserted(..) => return Ok(None),
                Compute::Updated { old: (_, old), .. } => {
                    if old.kind == EntryKind::Learned {
                        release(&self.learned);
                    }
                    return Ok(Some((old.dst, old.kind)));
                }
                Compute::Removed(..) | Compute::Aborted(()) => {
                    // It became static, or stopped being static, meanwhile: judge again.
                    if !was_static {
                        release(&self.statics);
                    }
                }
            }
        }
    }

    fn forget(&self, kind: EntryKind) {
        match kind {
            EntryKind::Learned => release(&self.learned),
            EntryKind::Static => release(&self.statics),
        }
    }

    /// Removes an entry of either kind; returns whether there was one.
    pub(crate) fn remove(&self, mac: MacAddr) -> bool {
        match self.map.pin().remove(&mac.to_u64()) {
            Some(e) => {
                self.forget(e.kind);
                true
            }
            None => false,
        }
    }

    /// `fdb del MAC --dst IP`: removes the entry only if it goes to `dst`; returns its kind.
    pub fn remove_to(&self, mac: MacAddr, dst: IpAddr) -> Result<EntryKind, FdbError> {
        match self.map.pin().remove_if(&mac.to_u64(), |_, e| e.dst == dst) {
            Ok(Some((_, e))) => {
                self.forget(e.kind);
                Ok(e.kind)
            }
            Ok(None) => Err(FdbError::NotFound { mac }),
            Err((_, e)) => Err(FdbError::OtherDestination {
                mac,
                dst: e.dst,
                asked: dst,
            }),
        }
    }

    /// Drops learned entries idle for at least `ageing`; returns how many.
    pub(crate) fn age_out(&self, now: Millis, ageing: Millis) -> usize {
        let map = self.map.pin();
        let mut removed = 0;
        for (k, e) in map.iter() {
            if e.kind != EntryKind::Learned || e.idle(now) < ageing {
                continue;
            }
            // Only the entry judged idle, and only if no worker refreshed it meanwhile: a move
            // replaced it otherwise.
            let idle = |_: &u64, current: &FdbEntry| {
                std::ptr::eq(current, e) && current.idle(now) >= ageing
            };
            if let Ok(Some(_)) = map.remove_if(k, idle) {
                release(&self.learned);
                removed += 1;
            }
        }
        removed
    }

    pub(crate) fn learned_count(&self) -> usize {
        self.learned.load(Ordering::Relaxed)
    }

    pub fn static_count(&self) -> usize {
        self.statics.load(Ordering::Relaxed)
    }

    /// The limit of learned entries, and separately of static ones (`--max-fdb`).
    pub fn limit(&self) -> usize {
        self.max
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
                age_secs: (e.kind == EntryKind::Learned).then(|| e.idle(now) / 1000),
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
        fdb.add_static(mac(1), ip(9)).unwrap();
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
        fdb.add_static(mac(4), ip(5)).unwrap();
        assert_eq!(fdb.learned_count(), 2);
        // Ageing frees room.
        assert_eq!(fdb.age_out(10_000, 1000), 2);
        assert_eq!(fdb.learn(10_000, mac(3), ip(2)), Learned::New);
    }

    #[test]
    fn rows_show_kind_and_age() {
        let fdb = Fdb::new(10);
        fdb.learn(1000, mac(1), ip(2));
        fdb.add_static(mac(2), ip(3)).unwrap();
        let rows = fdb.rows(6000);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].mac, "02:00:00:00:00:01");
        assert_eq!(rows[0].age_secs, Some(5));
        assert_eq!(rows[1].kind, EntryKind::Static);
        assert_eq!(rows[1].age_secs, None);
    }

    #[test]
    fn add_refuses_an_existing_entry_as_bridge_fdb_add_does() {
        let fdb = Fdb::new(10);
        fdb.learn(0, mac(1), ip(2));
        assert_eq!(
            fdb.add_static(mac(1), ip(3)),
            Err(FdbError::Exists {
                mac: mac(1),
                dst: ip(2),
                kind: EntryKind::Learned
            })
        );
        fdb.add_static(mac(2), ip(3)).unwrap();
        assert!(matches!(
            fdb.add_static(mac(2), ip(3)),
            Err(FdbError::Exists {
                kind: EntryKind::Static,
                ..
            })
        ));
        // Nothing changed, and the counts are right.
        assert_eq!(fdb.lookup(mac(1)), Some(ip(2)));
        assert_eq!((fdb.learned_count(), fdb.static_count()), (1, 1));
    }

    #[test]
    fn replace_turns_a_learned_entry_static_and_moves_a_static_one() {
        let fdb = Fdb::new(10);
        fdb.learn(0, mac(1), ip(2));
        assert_eq!(
            fdb.replace_static(mac(1), ip(3)),
            Ok(Some((ip(2), EntryKind::Learned)))
        );
        assert_eq!((fdb.learned_count(), fdb.static_count()), (0, 1));
        assert_eq!(
            fdb.replace_static(mac(1), ip(4)),
            Ok(Some((ip(3), EntryKind::Static)))
        );
        assert_eq!(fdb.replace_static(mac(2), ip(4)), Ok(None));
        assert_eq!(fdb.lookup(mac(1)), Some(ip(4)));
        assert_eq!(fdb.learn(1, mac(1), ip(2)), Learned::StaticKept);
        assert_eq!((fdb.learned_count(), fdb.static_count()), (0, 2));
    }

    #[test]
    fn static_entries_have_their_own_limit() {
        let fdb = Fdb::new(2);
        fdb.add_static(mac(1), ip(2)).unwrap();
        fdb.replace_static(mac(2), ip(2)).unwrap();
        assert_eq!(
            fdb.add_static(mac(3), ip(2)),
            Err(FdbError::Full { max: 2 })
        );
        assert_eq!(
            fdb.replace_static(mac(3), ip(2)),
            Err(FdbError::Full { max: 2 })
        );
        // A learned entry does not become static in a full table either ...
        assert_eq!(fdb.learn(0, mac(4), ip(2)), Learned::New);
        assert_eq!(
            fdb.replace_static(mac(4), ip(3)),
            Err(FdbError::Full { max: 2 })
        );
        assert_eq!(fdb.lookup(mac(4)), Some(ip(2)));
        // ... but a static one can move, and learning still has its own room.
        assert_eq!(
            fdb.replace_static(mac(1), ip(9)),
            Ok(Some((ip(2), EntryKind::Static)))
        );
        assert_eq!(fdb.learn(0, mac(5), ip(2)), Learned::New);
        assert_eq!(fdb.learn(0, mac(6), ip(2)), Learned::Full);
        // Deleting frees a slot.
        assert!(fdb.remove(mac(2)));
        fdb.add_static(mac(3), ip(2)).unwrap();
        assert_eq!((fdb.learned_count(), fdb.static_count()), (2, 2));
    }

    #[test]
    fn delete_with_a_destination_removes_only_a_matching_entry() {
        let fdb = Fdb::new(10);
        fdb.add_static(mac(1), ip(2)).unwrap();
        fdb.learn(0, mac(2), ip(3));
        assert_eq!(
            fdb.remove_to(mac(1), ip(9)),
            Err(FdbError::OtherDestination {
                mac: mac(1),
                dst: ip(2),
                asked: ip(9)
            })
        );
        assert_eq!(fdb.lookup(mac(1)), Some(ip(2)));
        assert_eq!(fdb.remove_to(mac(1), ip(2)), Ok(EntryKind::Static));
        assert_eq!(fdb.remove_to(mac(2), ip(3)), Ok(EntryKind::Learned));
        assert_eq!(
            fdb.remove_to(mac(2), ip(3)),
            Err(FdbError::NotFound { mac: mac(2) })
        );
        assert_eq!(
            (fdb.learned_count(), fdb.static_count(), fdb.len()),
            (0, 0, 0)
        );
    }

    #[test]
    fn an_older_timestamp_never_makes_an_entry_older() {
        // Workers pass the time of their own batch; a slow one must not age a fresh entry.
        let fdb = Fdb::new(10);
        fdb.learn(0, mac(1), ip(2));
        assert_eq!(fdb.learn(5000, mac(1), ip(2)), Learned::Refreshed);
        assert_eq!(fdb.learn(1000, mac(1), ip(2)), Learned::Refreshed);
        assert_eq!(fdb.age_out(5999, 1000), 0, "aged by the older timestamp");
        assert_eq!(fdb.age_out(6000, 1000), 1);
    }
}
