#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Receive classification of one UDP GRO read: 44 VXLAN datagrams of one TCP flow (1472 bytes
//! each, MTU 1450 inside), classified one by one (`from_wire`) and as a run (`from_wire_run`,
//! what the worker does: the VNI lookup, peer check and learning are done once per run).
//!
//! `cargo bench --bench wire -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vxnet_dataplane::forward::{Forwarder, WireAction, WireRun};
use vxnet_dataplane::network::{Network, NetworkSettings};
use vxnet_encap::encap::encapsulate_to_vec;
use vxnet_encap::{Encapsulation, Vni};

const SEGMENTS: usize = 44;
const DATAGRAM: usize = 1472;

fn bench(c: &mut Criterion) {
    let local: IpAddr = "10.0.0.1".parse().unwrap();
    let peer: IpAddr = "10.0.0.2".parse().unwrap();
    let network = Arc::new(Network::new(
        NetworkSettings {
            name: "bench".into(),
            vni: Vni::new(42).unwrap(),
            dev: "vx42".into(),
            mtu: 1450,
            allow_vlan: false,
            learning: true,
            max_fdb: 1024,
            bum_rate: None,
        },
        local,
        4789,
        vec![peer],
    ));
    let fwd = Forwarder::new(vec![network], local, 4789, false);
    let mut inner = vec![0x5au8; DATAGRAM - 8];
    inner[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    inner[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    inner[12..14].copy_from_slice(&[0x08, 0x00]);
    let one = encapsulate_to_vec(&inner, &Encapsulation::vxlan(Vni::new(42).unwrap())).unwrap();
    let read: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(SEGMENTS * DATAGRAM)
        .collect();
    let source = SocketAddr::new(peer, 50000);

    let mut g = c.benchmark_group("wire_gro_read_44x1472");
    g.throughput(Throughput::Elements(SEGMENTS as u64));
    g.bench_function("from_wire_each", |b| {
        b.iter(|| {
            let mut delivered = 0;
            for d in black_box(&read).chunks(DATAGRAM) {
                if let WireAction::Deliver { .. } = fwd.from_wire(1, source, d) {
                    delivered += 1;
                }
            }
            assert_eq!(delivered, SEGMENTS);
        })
    });
    let mut run = WireRun::default();
    g.bench_function("from_wire_run", |b| {
        b.iter(|| {
            let mut delivered = 0;
            for d in black_box(&read).chunks(DATAGRAM) {
                if let WireAction::Deliver { .. } = fwd.from_wire_run(1, source, d, &mut run) {
                    delivered += 1;
                }
            }
            fwd.end_run(&mut run);
            assert_eq!(delivered, SEGMENTS);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
