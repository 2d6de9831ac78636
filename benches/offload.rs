#![allow(clippy::unwrap_used, clippy::expect_used)]
//! TAP offload hot paths: TSO segmentation of a 64 KB TCPv4 superframe at MSS 1398 (fused copy +
//! checksum vs copy then checksum), GRO coalescing of 44 segments, and a 64 KB memcpy yardstick.
//!
//! `cargo bench --bench offload -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vxnet_encap::checksum::{self, pseudo_header_v4};
use vxnet_encap::offload::{
    prepare_for_wire, prepare_for_wire_with, required_output_len, Coalescer, CopyMode, Merge,
    Segmented, UdpCoalescer, VirtioNetHdr,
};
use vxnet_encap::Vni;

const MSS: usize = 1398;

/// Ethernet + IPv4 (DF) + TCP with timestamps + `payload_len` bytes, checksums valid.
fn tcp_v4_frame(payload_len: usize) -> Vec<u8> {
    let tcp_len = 32 + payload_len;
    let mut f = vec![0u8; 14 + 20 + tcp_len];
    f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut f[34..];
    tcp[0..4].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
    tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
    tcp[8..12].copy_from_slice(&2000u32.to_be_bytes());
    tcp[12] = 8 << 4;
    tcp[13] = 0x18; // ACK|PSH
    tcp[14..16].copy_from_slice(&502u16.to_be_bytes());
    tcp[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]);
    for (i, b) in tcp[32..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31);
    }
    let sum = pseudo_header_v4(
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        6,
        tcp_len as u32,
    )
    .add_bytes(tcp);
    tcp[16..18].copy_from_slice(&sum.finish().to_be_bytes());
    f
}

/// Ethernet + IPv4 (DF, ID `id`) + UDP + `payload_len` bytes, checksums valid: datagram `id` of
/// a connected socket's flow.
fn udp_v4_frame(payload_len: usize, id: u16) -> Vec<u8> {
    let udp_len = 8 + payload_len;
    let mut f = vec![0u8; 14 + 20 + udp_len];
    f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp = &mut f[34..];
    udp[0..4].copy_from_slice(&[0x9c, 0x40, 0x14, 0xb5]);
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    for (i, b) in udp[8..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31) ^ id as u8;
    }
    let sum = pseudo_header_v4(
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        17,
        udp_len as u32,
    )
    .add_bytes(udp);
    let c = match sum.finish() {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f
}

fn tso_hdr() -> VirtioNetHdr {
    VirtioNetHdr {
        flags: VirtioNetHdr::FLAG_NEEDS_CSUM,
        gso_type: VirtioNetHdr::GSO_TCPV4,
        hdr_len: 66,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    }
}

fn bench(c: &mut Criterion) {
    let vni = Vni::new(42).unwrap();
    let hdr = tso_hdr();
    // 64 KB superframe: the largest IPv4 TCP packet with timestamps (65535 - 52 bytes payload).
    let frame = tcp_v4_frame(65_535 - 52);
    let mut out = vec![0u8; required_output_len(&hdr, &frame, MSS).unwrap()];

    let mut g = c.benchmark_group("segment_64k_v4_mss1398");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("fused_copy_csum", |b| {
        b.iter(|| prepare_for_wire(&hdr, black_box(&frame), vni, MSS, &mut out).unwrap())
    });
    g.bench_function("copy_then_csum", |b| {
        b.iter(|| {
            prepare_for_wire_with(
                &hdr,
                black_box(&frame),
                vni,
                MSS,
                &mut out,
                CopyMode::CopyThenSum,
            )
            .unwrap()
        })
    });
    g.finish();

    // 44 segments of 1398 bytes (one UDP GRO read's worth), decapsulated.
    let sf = tcp_v4_frame(44 * MSS);
    let mut seg_out = vec![0u8; required_output_len(&hdr, &sf, MSS).unwrap()];
    let res: Segmented = prepare_for_wire(&hdr, &sf, vni, MSS, &mut seg_out).unwrap();
    assert_eq!(res.segments, 44);
    let frames: Vec<&[u8]> = seg_out[..res.total_len]
        .chunks(res.segment_size)
        .map(|s| &s[8..])
        .collect();
    let mut co = Coalescer::default();
    let mut g = c.benchmark_group("coalesce_44x1398_v4");
    g.throughput(Throughput::Bytes((44 * MSS) as u64));
    g.bench_function("coalesce", |b| {
        b.iter(|| {
            let mut written = 0;
            co.coalesce(frames.iter().copied(), |e| {
                if let vxnet_encap::offload::Emit::Write(w) = e {
                    written += w.len();
                }
            });
            assert!(written > 44 * MSS);
            written
        })
    });
    g.finish();

    // 64 datagrams of 18 bytes (60-byte frames: iperf3 -l 18 would make them; -l 64 gives 106),
    // one UDP GRO read of small frames, decapsulated.
    for payload in [18, 64] {
        let frames: Vec<Vec<u8>> = (0..64).map(|i| udp_v4_frame(payload, 0x100 + i)).collect();
        let mut co = UdpCoalescer::default();
        let mut g = c.benchmark_group(format!("coalesce_udp_64x{payload}_v4"));
        g.throughput(Throughput::Elements(64));
        g.bench_function("coalesce", |b| {
            b.iter(|| {
                let mut writes = 0;
                co.coalesce(frames.iter().map(Vec::as_slice), |_| writes += 1);
                assert_eq!(writes, 1);
                writes
            })
        });
        g.finish();
    }

    let src = vec![0x5Au8; 65_536];
    let mut dst = vec![0u8; 65_536];
    let mut g = c.benchmark_group("yardstick_64k");
    g.throughput(Throughput::Bytes(65_536));
    g.bench_function("memcpy", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&src)))
    });
    g.bench_function("checksum", |b| {
        b.iter(|| checksum::checksum(black_box(&src)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
