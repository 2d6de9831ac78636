//! Encapsulation, decapsulation and flow-hash costs, each next to a plain copy of the same frame
//! as the yardstick. Run: `cargo bench --bench encap -- --warm-up-time 1 --measurement-time 2`.
//!
//! Encap benches write into pre-reserved headroom of one reused buffer: nothing is allocated in
//! the timed loop, and rewriting the same headers each iteration is what the data plane does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use etherparse::{LaxSlicedPacket, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use vxnet_encap::{
    decapsulate, decapsulate_ip, encapsulate, flow, Encapsulation, IpPair, OuterStack, UdpChecksum,
    Vni, MAX_OUTER_LEN,
};

const SIZES: [usize; 4] = [64, 512, 1500, 9000];

/// An inner Ethernet/IPv4/UDP frame of exactly `size` bytes between the example containers.
fn inner_frame(size: usize) -> Vec<u8> {
    let builder =
        PacketBuilder::ethernet2([2, 0x42, 0xac, 0x11, 0, 2], [2, 0x42, 0xac, 0x11, 0, 3])
            .ipv4([172, 17, 0, 2], [172, 17, 0, 3], 64)
            .udp(40_000, 8080);
    let payload = vec![0xa5; size - builder.size(0)];
    let mut frame = Vec::with_capacity(size);
    builder.write(&mut frame, &payload).unwrap();
    assert_eq!(frame.len(), size);
    frame
}

fn vni() -> Vni {
    Vni::new(42).unwrap()
}

fn ipv4_outer() -> Encapsulation {
    let ips = IpPair::V4 {
        src: Ipv4Addr::new(192, 168, 205, 10),
        dst: Ipv4Addr::new(192, 168, 205, 11),
    };
    let outer = OuterStack::new(ips, 50_000, 4789);
    assert_eq!(outer.udp_checksum, UdpChecksum::Zero);
    Encapsulation::with_outer(vni(), outer)
}

fn ipv6_outer() -> Encapsulation {
    let ips = IpPair::V6 {
        src: "fd00:205::10".parse::<Ipv6Addr>().unwrap(),
        dst: "fd00:205::11".parse::<Ipv6Addr>().unwrap(),
    };
    let outer = OuterStack::new(ips, 50_000, 4789);
    assert_eq!(outer.udp_checksum, UdpChecksum::Compute);
    Encapsulation::with_outer(vni(), outer)
}

/// The frame behind `MAX_OUTER_LEN` bytes of headroom, as the data plane reads it from the TAP.
fn with_headroom(frame: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_OUTER_LEN + frame.len()];
    buf[MAX_OUTER_LEN..].copy_from_slice(frame);
    buf
}

fn encap(c: &mut Criterion) {
    let mut group = c.benchmark_group("encap");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let frame = inner_frame(size);
        for (name, encapsulation) in [
            ("vxlan_only", Encapsulation::vxlan(vni())),
            ("ipv4_zero_csum", ipv4_outer()),
            ("ipv6_csum", ipv6_outer()),
        ] {
            let mut buf = with_headroom(&frame);
            group.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.iter(|| {
                    encapsulate(
                        black_box(&mut buf),
                        MAX_OUTER_LEN,
                        black_box(&encapsulation),
                    )
                    .unwrap()
                })
            });
        }
        let mut dst = vec![0u8; size];
        group.bench_with_input(BenchmarkId::new("copy", size), &size, |b, _| {
            b.iter(|| dst.copy_from_slice(black_box(&frame)))
        });
    }
    group.finish();
}

fn encapsulated(frame: &[u8], encapsulation: &Encapsulation) -> Vec<u8> {
    vxnet_encap::encap::encapsulate_to_vec(frame, encapsulation).unwrap()
}

fn decap(c: &mut Criterion) {
    let mut group = c.benchmark_group("decap");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let frame = inner_frame(size);
        let vxlan = encapsulated(&frame, &Encapsulation::vxlan(vni()));
        group.bench_with_input(BenchmarkId::new("vxlan_only", size), &size, |b, _| {
            b.iter(|| decapsulate(black_box(&vxlan)).unwrap().vni)
        });
        let v4 = encapsulated(&frame, &ipv4_outer());
        group.bench_with_input(
            BenchmarkId::new("ipv4_zero_csum_ip", size),
            &size,
            |b, _| b.iter(|| decapsulate_ip(black_box(&v4)).unwrap().vxlan.vni),
        );
        let v6 = encapsulated(&frame, &ipv6_outer());
        group.bench_with_input(BenchmarkId::new("ipv6_csum_ip", size), &size, |b, _| {
            b.iter(|| decapsulate_ip(black_box(&v6)).unwrap().vxlan.vni)
        });
        let mut dst = vec![0u8; size];
        group.bench_with_input(BenchmarkId::new("copy", size), &size, |b, _| {
            b.iter(|| dst.copy_from_slice(black_box(&frame)))
        });
    }
    group.finish();
}

/// The data plane's per-packet wire work for one 1500 B frame, against copying it once.
fn roundtrip(c: &mut Criterion) {
    let mut group = c.benchmark_group("roundtrip_1500");
    let frame = inner_frame(1500);
    group.throughput(Throughput::Bytes(1500));
    let vxlan_only = Encapsulation::vxlan(vni());
    let mut buf = with_headroom(&frame);
    group.bench_function("vxlan_only_encap+decap", |b| {
        b.iter(|| {
            let start = encapsulate(black_box(&mut buf), MAX_OUTER_LEN, &vxlan_only).unwrap();
            decapsulate(black_box(&buf[start..])).unwrap().vni
        })
    });
    let v4 = ipv4_outer();
    let mut buf = with_headroom(&frame);
    group.bench_function("ipv4_encap+decap_ip", |b| {
        b.iter(|| {
            let start = encapsulate(black_box(&mut buf), MAX_OUTER_LEN, &v4).unwrap();
            decapsulate_ip(black_box(&buf[start..])).unwrap().vxlan.vni
        })
    });
    let mut dst = vec![0u8; 1500];
    group.bench_function("copy", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&frame)))
    });
    group.finish();
}

/// The same flow fields (addresses, protocol, ports) read by etherparse, without even hashing
/// them: what the hand-written fixed-offset path is up against.
type FlowFields = ([u8; 4], [u8; 4], u8, u16, u16);

fn etherparse_flow_fields(frame: &[u8]) -> Option<FlowFields> {
    let sliced = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
        return None;
    };
    let h = ip.header();
    let (sport, dport) = match &sliced.transport {
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        _ => (0, 0),
    };
    Some((h.source(), h.destination(), h.protocol().0, sport, dport))
}

fn flow_hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("flow_hash");
    let frame = inner_frame(1500);
    group.bench_function("vxnet_fixed_offsets_hash", |b| {
        b.iter(|| flow::flow_hash(black_box(&frame)))
    });
    group.bench_function("etherparse_sliced_fields_only", |b| {
        b.iter(|| etherparse_flow_fields(black_box(&frame)))
    });
    group.bench_function("etherparse_lax_fields_only", |b| {
        b.iter(|| {
            let s = LaxSlicedPacket::from_ethernet(black_box(&frame)).ok();
            s.map(|s| s.transport.is_some())
        })
    });
    let mut dst = vec![0u8; 1500];
    group.bench_function("copy_1500", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&frame)))
    });
    group.finish();
}

/// Outer IPv4 + UDP (+ VXLAN) headers for a 64 B frame: vxnet's fixed-offset writes against
/// etherparse writing the same headers.
fn outer_headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("outer_headers_ipv4_64B");
    let frame = inner_frame(64);
    let v4 = ipv4_outer();
    let mut buf = with_headroom(&frame);
    group.bench_function("vxnet_hand_written", |b| {
        b.iter(|| encapsulate(black_box(&mut buf), MAX_OUTER_LEN, black_box(&v4)).unwrap())
    });
    // PacketBuilder always writes the payload after the headers and, over IPv4, computes the UDP
    // checksum; that is the API, so this is what using it on the hot path would cost.
    let mut vxlan_payload = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
    vxlan_payload.extend_from_slice(&frame);
    let mut out = vec![0u8; 28 + vxlan_payload.len()];
    group.bench_function("etherparse_packet_builder", |b| {
        b.iter(|| {
            let builder =
                PacketBuilder::ipv4([192, 168, 205, 10], [192, 168, 205, 11], 64).udp(50_000, 4789);
            let mut slice = &mut out[..];
            builder
                .write(&mut slice, black_box(&vxlan_payload))
                .unwrap();
        })
    });
    // Headers only, no payload copy, zero UDP checksum: the fairest etherparse equivalent.
    let mut hdr = [0u8; 28];
    group.bench_function("etherparse_headers_only", |b| {
        b.iter(|| {
            let udp_len = (8 + vxlan_payload.len()) as u16;
            let udp = etherparse::UdpHeader {
                source_port: 50_000,
                destination_port: 4789,
                length: udp_len,
                checksum: 0,
            };
            let ip = etherparse::Ipv4Header::new(
                udp_len,
                64,
                etherparse::IpNumber::UDP,
                [192, 168, 205, 10],
                [192, 168, 205, 11],
            )
            .unwrap();
            let mut slice = &mut hdr[..];
            black_box(&ip).write(&mut slice).unwrap();
            black_box(&udp).write(&mut slice).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, encap, decap, roundtrip, flow_hash, outer_headers);
criterion_main!(benches);
