#![allow(clippy::unwrap_used, clippy::expect_used)]
//! ESP seal and open per packet, by inner frame size: what encryption costs the packet path.
//!
//! - `seal`: VXLAN header, the VXLAN packet's UDP header, ESP header, padding, AES-256-GCM in
//!   place and ICV (`esp::transport::seal_vxlan`), as a sending worker does per segment.
//! - `open`: replay check, AES-256-GCM verify+decrypt in place, trailer check, window update
//!   (`OpenSa::open_in_place`). Each packet is opened once per window (a replay would be
//!   refused), so a sealed packet is copied in first; `copy` is that copy alone.
//!
//! Measured in this thread's CPU time, not wall time: on the shared 2-core machine other
//! processes' time slices made wall-clock figures of this bench vary five-fold between runs.
//!
//! `cargo bench --bench esp -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nix::time::{clock_gettime, ClockId};
use vxnet_encap::esp::transport::{seal_vxlan, VxlanPorts, HEADROOM};
use vxnet_encap::esp::{EspPacket, KeyEpoch, NetworkKey, OpenSa, SaId, SealSa, Spi, MAX_TAILROOM};
use vxnet_encap::Vni;

const SIZES: [usize; 4] = [64, 512, 1400, 9000];

fn sa_id() -> SaId {
    SaId {
        epoch: KeyEpoch(0),
        spi: Spi::for_epoch(KeyEpoch(0), 0x1234_5678),
        src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
    }
}

/// CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID), in nanoseconds.
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e-3, "µs")
        } else {
            (1e-6, "ms")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(
        &self,
        _: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per_iteration = match *throughput {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => n as f64 * 8.0,
            Throughput::Elements(n) => n as f64,
        };
        // Bits per CPU-nanosecond is Gbit per CPU-second.
        values.iter_mut().for_each(|v| *v = per_iteration / *v);
        match *throughput {
            Throughput::Elements(_) => "G elem/s",
            _ => "Gbit/s",
        }
    }
    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    let key = NetworkKey::from_bytes([0x42; 32]);
    let vni = Vni::new(42).unwrap();
    let ports = VxlanPorts {
        src: 49152,
        dst: 4789,
    };
    let mut group = c.benchmark_group("esp");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let frame = HEADROOM..HEADROOM + size;
        let mut buf = vec![0x5Au8; HEADROOM + size + MAX_TAILROOM];
        let mut tx = SealSa::new(&key, sa_id(), 1);
        group.bench_with_input(BenchmarkId::new("seal", size), &size, |b, _| {
            b.iter(|| {
                let sealed = seal_vxlan(&mut tx, &mut buf, frame.clone(), vni, ports).unwrap();
                black_box(sealed.packet.end)
            })
        });

        // Packets sealed with consecutive sequence numbers; the SPI and sequence fields of a
        // template are rewritten per iteration so every open sees a fresh, valid packet.
        let mut tx = SealSa::new(&key, sa_id(), 1);
        let mut rx = OpenSa::new(&key, sa_id());
        let mut sealed = Vec::new();
        // Few enough to stay in cache, as a just-received datagram is; the window restarts after
        // each round (one SA setup per 64 packets, about 9 ns each).
        let count = 64;
        for _ in 0..count {
            let mut buf = vec![0x5Au8; HEADROOM + size + MAX_TAILROOM];
            let s = seal_vxlan(&mut tx, &mut buf, frame.clone(), vni, ports).unwrap();
            sealed.push(buf[s.packet].to_vec());
        }
        let mut work = sealed[0].clone();
        let mut next = 0usize;
        group.bench_with_input(BenchmarkId::new("open", size), &size, |b, _| {
            b.iter(|| {
                if next == count {
                    // Start again with a fresh window: the same packets are new to it.
                    rx = OpenSa::new(&key, sa_id());
                    next = 0;
                }
                work.copy_from_slice(&sealed[next]);
                next += 1;
                let opened = rx.open_in_place(&mut work).unwrap();
                black_box(opened.payload.end)
            })
        });
        let packet = sealed[0].clone();
        group.bench_with_input(BenchmarkId::new("copy", size), &size, |b, _| {
            b.iter(|| {
                work.copy_from_slice(black_box(&packet));
                black_box(work[0])
            })
        });
        debug_assert!(EspPacket::new_checked(&packet[..]).is_ok());
    }
    group.finish();

    let mut group = c.benchmark_group("esp-setup");
    group.bench_function("derive SA (HKDF-SHA256) + AES-256-GCM key", |b| {
        b.iter(|| black_box(OpenSa::new(&key, black_box(sa_id()))))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench
}
criterion_main!(benches);
