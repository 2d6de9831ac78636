//! FDB lookups while other threads learn: vxnet's lock-free table against a `Mutex<HashMap>`.
//!
//! Workers look a MAC up for every frame from the TAP while receive paths learn. The figure of
//! merit is lookup time with 0, 1 and 2 learners running flat out on other threads.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vxnet_dataplane::fdb::Fdb;
use vxnet_encap::MacAddr;

const KNOWN: u64 = 1024;

fn mac(i: u64) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x02, b[3], b[4], b[5], b[6], b[7]])
}

fn vtep(i: u64) -> IpAddr {
    IpAddr::from([10, 0, (i >> 8) as u8, i as u8])
}

trait Table: Send + Sync + 'static {
    fn lookup(&self, mac: MacAddr) -> Option<IpAddr>;
    fn learn(&self, now: u64, mac: MacAddr, from: IpAddr);
}

impl Table for Fdb {
    fn lookup(&self, mac: MacAddr) -> Option<IpAddr> {
        Fdb::lookup(self, mac)
    }
    fn learn(&self, now: u64, mac: MacAddr, from: IpAddr) {
        Fdb::learn(self, now, mac, from);
    }
}

struct Locked(Mutex<HashMap<MacAddr, (IpAddr, u64)>>);

impl Table for Locked {
    fn lookup(&self, mac: MacAddr) -> Option<IpAddr> {
        self.0.lock().ok()?.get(&mac).map(|e| e.0)
    }
    fn learn(&self, now: u64, mac: MacAddr, from: IpAddr) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(mac, (from, now));
        }
    }
}

fn run<T: Table>(c: &mut Criterion, name: &str, table: Arc<T>) {
    for i in 0..KNOWN {
        table.learn(0, mac(i), vtep(i));
    }
    let mut group = c.benchmark_group(format!("fdb_lookup/{name}"));
    group.throughput(Throughput::Elements(1));
    for learners in 0..=2usize {
        group.bench_function(format!("{learners}_learners"), |b| {
            b.iter_custom(|iters| {
                let stop = Arc::new(AtomicBool::new(false));
                let threads: Vec<_> = (0..learners)
                    .map(|t| {
                        let table = Arc::clone(&table);
                        let stop = Arc::clone(&stop);
                        std::thread::spawn(move || {
                            // Refreshes, moves between VTEPs and brand-new MACs, in a mix.
                            let mut i = t as u64 * 7919;
                            while !stop.load(Ordering::Relaxed) {
                                let m = i % (KNOWN * 2);
                                table.learn(i, mac(m), vtep(i % 3));
                                i = i.wrapping_add(1);
                            }
                        })
                    })
                    .collect();
                let start = Instant::now();
                for i in 0..iters {
                    black_box(table.lookup(mac(i % KNOWN)));
                }
                let elapsed = start.elapsed();
                stop.store(true, Ordering::Relaxed);
                for t in threads {
                    let _ = t.join();
                }
                elapsed
            })
        });
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    run(c, "papaya", Arc::new(Fdb::new(1 << 20)));
    run(
        c,
        "mutex_hashmap",
        Arc::new(Locked(Mutex::new(HashMap::new()))),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
