#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The FDB under concurrent learners, lookups, ageing and static changes, against an oracle.
//!
//! Every destination a thread writes encodes who wrote it, for which MAC and which version:
//! `fd00:WWMM:MMMM:MMMM:VVVV:VVVV::` (writer W, MAC M, version V, an IPv6 address so that all
//! of it fits). A lookup can therefore check what it got without any lock: an entry for
//! another MAC, a version older than one already seen, an entry that ageing must have removed,
//! or a learned entry where a static one was installed is a failure. Time is the logical clock
//! the FDB takes (`now`): the learners advance it, one tick per round, and a short ageing time
//! makes the ageing thread remove entries while they are being moved and refreshed. The ageing
//! rule is exact: once a sweep at time T has completed, no entry last seen at or before
//! T - ageing that nobody learned again can be found.
//!
//! The work is fixed (rounds, not seconds), so the assertions do not depend on the machine;
//! the whole test takes about a second.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::thread;

use vxnet_dataplane::fuzzing::{
    fdb_age_out, fdb_learned, fdb_len, fdb_remove, EntryKind, Fdb, Learned,
};
use vxnet_encap::MacAddr;

const LEARNERS: u8 = 3;
const READERS: usize = 1;
/// MACs each learner owns and keeps alive (refreshing, and moving to a new version now and then).
const OWNED: u16 = 32;
/// MACs each learner learns once at time 0 and then abandons: ageing must remove them.
const ABANDONED: u16 = 32;
/// MACs every learner learns from its own address, with a timestamp of 0 (a worker far behind
/// the clock): they move between learners all the time while every sweep ages them out.
const ROAMING: u16 = 16;
/// MACs every learner learns from its own address, so they move between learners all the time,
/// while the control thread keeps making them static and deleting them again.
const CONTESTED: u16 = 8;
const ROUNDS: u64 = 5000;
/// Logical ageing time, in clock ticks (learner rounds).
const AGEING: u64 = 2;
/// Room for every MAC: `Full` is tested on its own below.
const MAX: usize = 4096;
/// The writer id of the control thread's static entries.
const CONTROL: u8 = 0xC0;

fn mac(group: u8, owner: u8, i: u16) -> MacAddr {
    let [hi, lo] = i.to_be_bytes();
    MacAddr([0x02, group, owner, 0, hi, lo])
}

fn owned(owner: u8, i: u16) -> MacAddr {
    mac(1, owner, i)
}

fn abandoned(owner: u8, i: u16) -> MacAddr {
    mac(2, owner, i)
}

fn contested(i: u16) -> MacAddr {
    mac(3, 0, i)
}

fn roaming(i: u16) -> MacAddr {
    mac(5, 0, i)
}

fn dst(writer: u8, mac: MacAddr, version: u32) -> IpAddr {
    let m = mac.octets();
    let [v0, v1, v2, v3] = version.to_be_bytes();
    IpAddr::V6(Ipv6Addr::from([
        0xfd, 0x00, writer, m[0], m[1], m[2], m[3], m[4], m[5], v0, v1, v2, v3, 0, 0, 0,
    ]))
}

/// (writer, MAC, version) of a destination written by this test, or None for anything else.
fn decode(ip: IpAddr) -> Option<(u8, MacAddr, u32)> {
    let IpAddr::V6(v6) = ip else {
        return None;
    };
    let b = v6.octets();
    if b[..2] != [0xfd, 0x00] || b[13..] != [0, 0, 0] {
        return None;
    }
    let mac = MacAddr([b[3], b[4], b[5], b[6], b[7], b[8]]);
    Some((b[2], mac, u32::from_be_bytes([b[9], b[10], b[11], b[12]])))
}

struct Shared {
    fdb: Fdb,
    clock: AtomicU64,
    /// Time of the last completed sweep (0 before the first).
    swept: AtomicU64,
    /// Learners that have learned their abandoned MACs.
    abandoned_in: AtomicUsize,
    /// Per contested MAC: odd while the control thread's static entry (version = this value)
    /// is in place, even while it is not. A reader that sees the same odd value before and after
    /// a lookup must find that entry.
    generation: Vec<AtomicU64>,
    learners_done: AtomicUsize,
    stop: AtomicBool,
}

/// Checks one lookup result for `mac`; `seen` is this reader's newest version of it so far.
fn check_entry(mac: MacAddr, found: Option<IpAddr>, seen: &mut u32, owner: u8) {
    let Some(ip) = found else {
        return;
    };
    let (writer, for_mac, version) =
        decode(ip).unwrap_or_else(|| panic!("{mac}: torn or foreign destination {ip}"));
    assert_eq!(for_mac, mac, "{mac}: the entry of another MAC ({ip})");
    if owner != 0 {
        assert_eq!(
            writer, owner,
            "{mac}: written by {writer}, owned by {owner}"
        );
        assert!(
            version >= *seen,
            "{mac}: version {version} after {seen}: a stale entry came back"
        );
        *seen = version;
    }
}

fn learner(shared: &Shared, me: u8, start: &Barrier) {
    start.wait();
    for i in 0..ABANDONED {
        assert_eq!(
            shared
                .fdb
                .learn(0, abandoned(me, i), dst(me, abandoned(me, i), 0)),
            Learned::New
        );
    }
    shared.abandoned_in.fetch_add(1, SeqCst);
    let mut versions = vec![0u32; usize::from(OWNED)];
    for round in 0..ROUNDS {
        let now = shared.clock.fetch_add(1, SeqCst) + 1;
        if round % 64 == 0 {
            // Now and then wait for a sweep, so that ageing interleaves with the rounds
            // however the threads are scheduled.
            while shared.swept.load(SeqCst) < now {
                thread::yield_now();
            }
        }
        for i in 0..OWNED {
            let m = owned(me, i);
            // Every few rounds this MAC moves (a new version); otherwise it is refreshed.
            if (round + u64::from(i)) % 7 == 0 {
                versions[usize::from(i)] += 1;
            }
            shared
                .fdb
                .learn(now, m, dst(me, m, versions[usize::from(i)]));
        }
        for i in 0..ROAMING {
            let m = roaming(i);
            shared.fdb.learn(0, m, dst(me, m, 0));
        }
        for i in 0..CONTESTED {
            let m = contested(i);
            let generation = &shared.generation[usize::from(i)];
            let before = generation.load(SeqCst);
            let outcome = shared.fdb.learn(now, m, dst(me, m, 0));
            if before % 2 == 1 && generation.load(SeqCst) == before {
                assert_eq!(
                    outcome,
                    Learned::StaticKept,
                    "{m}: learned over a static entry"
                );
            }
        }
    }
    shared.learners_done.fetch_add(1, SeqCst);
}

fn reader(shared: &Shared, start: &Barrier) {
    start.wait();
    let mut seen = vec![0u32; usize::from(LEARNERS) * usize::from(OWNED)];
    while !shared.stop.load(SeqCst) {
        for owner in 1..=LEARNERS {
            for i in 0..OWNED {
                let m = owned(owner, i);
                let slot = &mut seen[usize::from(owner - 1) * usize::from(OWNED) + usize::from(i)];
                check_entry(m, shared.fdb.lookup(m), slot, owner);
            }
        }
        // Abandoned at time 0 and never learned again: gone once a sweep at AGEING completed.
        let swept = shared.swept.load(SeqCst);
        let all_in = shared.abandoned_in.load(SeqCst) == usize::from(LEARNERS);
        for owner in 1..=LEARNERS {
            for i in 0..ABANDONED {
                let m = abandoned(owner, i);
                let found = shared.fdb.lookup(m);
                check_entry(m, found, &mut 0, owner);
                if all_in && swept >= AGEING {
                    assert_eq!(
                        found, None,
                        "{m}: idle since 0, still there after the sweep at {swept}"
                    );
                }
            }
        }
        for i in 0..ROAMING {
            let m = roaming(i);
            check_entry(m, shared.fdb.lookup(m), &mut 0, 0);
        }
        for i in 0..CONTESTED {
            let m = contested(i);
            let generation = &shared.generation[usize::from(i)];
            let before = generation.load(SeqCst);
            let found = shared.fdb.lookup(m);
            check_entry(m, found, &mut 0, 0);
            if before % 2 == 1 && generation.load(SeqCst) == before {
                let static_dst = dst(CONTROL, m, before as u32);
                assert_eq!(
                    found,
                    Some(static_dst),
                    "{m}: the static entry was replaced"
                );
            }
        }
        thread::yield_now();
    }
}

/// Sweeps as fast as it can. Starts once the abandoned MACs are in, so the first sweep at
/// AGEING or later must remove them.
fn ager(shared: &Shared, start: &Barrier) {
    start.wait();
    while shared.abandoned_in.load(SeqCst) < usize::from(LEARNERS) {
        thread::yield_now();
    }
    loop {
        let done = shared.learners_done.load(SeqCst) == usize::from(LEARNERS);
        let now = shared.clock.load(SeqCst);
        fdb_age_out(&shared.fdb, now, AGEING);
        shared.swept.store(now, SeqCst);
        if done {
            return;
        }
    }
}

/// Makes the contested MACs static and deletes them again, over and over, while the learners
/// fight over them: after each delete it waits until a learner has the MAC again, so that the
/// static entry lands while learners are moving it. Ends with every one static.
fn control(shared: &Shared, start: &Barrier) {
    start.wait();
    let mut round = 0u64;
    loop {
        let last = shared.learners_done.load(SeqCst) == usize::from(LEARNERS);
        for i in 0..CONTESTED {
            let m = contested(i);
            let generation = &shared.generation[usize::from(i)];
            if round > 0 {
                // Even first: from here on nobody may expect the entry.
                generation.fetch_add(1, SeqCst);
                assert!(fdb_remove(&shared.fdb, m), "{m}: the static entry vanished");
                while shared.fdb.lookup(m).is_none()
                    && shared.learners_done.load(SeqCst) < usize::from(LEARNERS)
                {
                    thread::yield_now();
                }
            }
            let odd = generation.load(SeqCst) + 1;
            shared
                .fdb
                .replace_static(m, dst(CONTROL, m, odd as u32))
                .unwrap();
            generation.store(odd, SeqCst);
        }
        if last {
            return;
        }
        round += 1;
        thread::yield_now();
    }
}

#[test]
fn concurrent_learning_lookups_ageing_and_static_entries_stay_consistent() {
    let shared = Arc::new(Shared {
        fdb: Fdb::new(MAX),
        clock: AtomicU64::new(0),
        swept: AtomicU64::new(0),
        abandoned_in: AtomicUsize::new(0),
        generation: (0..CONTESTED).map(|_| AtomicU64::new(0)).collect(),
        learners_done: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let threads = usize::from(LEARNERS) + READERS + 2;
    let start = Arc::new(Barrier::new(threads));
    let mut handles = Vec::new();
    let spawn = |f: fn(&Shared, &Barrier)| {
        let (shared, start) = (Arc::clone(&shared), Arc::clone(&start));
        thread::spawn(move || f(&shared, &start))
    };
    for me in 1..=LEARNERS {
        let (shared, start) = (Arc::clone(&shared), Arc::clone(&start));
        handles.push(thread::spawn(move || learner(&shared, me, &start)));
    }
    for _ in 0..READERS {
        handles.push(spawn(reader));
    }
    let ager = spawn(ager);
    let control = spawn(control);
    // Learners first (their rounds are the bounded work), then everything else.
    for h in handles.drain(..usize::from(LEARNERS)) {
        h.join().unwrap();
    }
    ager.join().unwrap();
    control.join().unwrap();
    shared.stop.store(true, SeqCst);
    for h in handles {
        h.join().unwrap();
    }

    // Quiescent: the counters agree with the table, and every row is one this test wrote.
    let fdb = &shared.fdb;
    let rows = fdb.rows(shared.clock.load(SeqCst));
    let learned = rows.iter().filter(|r| r.kind == EntryKind::Learned).count();
    assert_eq!(fdb_len(fdb), rows.len());
    assert_eq!(fdb_learned(fdb), learned, "learned-entry counter drifted");
    assert_eq!(
        fdb.static_count(),
        rows.len() - learned,
        "static-entry counter drifted"
    );
    for row in &rows {
        let (_, mac, _) = decode(row.dst).expect("a row this test did not write");
        assert_eq!(mac.to_string(), row.mac);
    }
    for i in 0..CONTESTED {
        let m = contested(i);
        let generation = shared.generation[usize::from(i)].load(SeqCst);
        assert_eq!(generation % 2, 1);
        assert_eq!(fdb.lookup(m), Some(dst(CONTROL, m, generation as u32)));
    }
    // Ageing found the abandoned MACs.
    for owner in 1..=LEARNERS {
        for i in 0..ABANDONED {
            assert_eq!(fdb.lookup(abandoned(owner, i)), None);
        }
    }
}

#[test]
fn a_full_table_admits_exactly_its_limit_under_concurrent_learners() {
    const LIMIT: usize = 100;
    let fdb = Arc::new(Fdb::new(LIMIT));
    let start = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4u8)
        .map(|t| {
            let (fdb, start) = (Arc::clone(&fdb), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                let mut new = 0;
                for i in 0..200u16 {
                    let m = mac(4, t, i);
                    match fdb.learn(0, m, dst(t, m, 0)) {
                        Learned::New => new += 1,
                        Learned::Full => {}
                        other => panic!("{m}: {other:?}"),
                    }
                }
                new
            })
        })
        .collect();
    let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(
        admitted, LIMIT,
        "learners together admitted {admitted} of {LIMIT}"
    );
    assert_eq!(fdb_learned(&fdb), LIMIT);
    assert_eq!(fdb_len(&fdb), LIMIT);
}
