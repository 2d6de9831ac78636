#![allow(clippy::unwrap_used, clippy::expect_used)]
//! UDP GRO: datagrams of one flow coalesced into `GSO_UDP_L4` superframes, every reason not to
//! merge, and the round trip (cut back as the kernel does, byte for byte the datagrams sent).

mod offload_support;

use offload_support::udp::*;
use offload_support::*;
use proptest::prelude::*;

fn merge(frames: &[Vec<u8>]) -> (UdpCoalescer, Vec<(bool, Vec<u8>)>) {
    let mut co = UdpCoalescer::default();
    let writes = coalesce_all(&mut co, frames);
    (co, writes)
}

/// (superframe?, datagrams) per write: a superframe's count from its payload and `gso_size`.
fn shape(writes: &[(bool, Vec<u8>)]) -> Vec<(bool, usize)> {
    writes
        .iter()
        .map(|(w, b)| match VirtioNetHdr::parse(b) {
            Ok(h) if *w && h.gso_type == VirtioNetHdr::GSO_UDP_L4 => {
                let payload = b.len() - VIRTIO_NET_HDR_LEN - h.hdr_len as usize;
                (true, payload.div_ceil(h.gso_size as usize))
            }
            _ => (false, 1),
        })
        .collect()
}

#[test]
fn a_flow_merges_and_splits_back_byte_for_byte() {
    for v6 in [false, true] {
        for (count, size, last) in [(2, 18, 18), (5, 1000, 1000), (64, 18, 7), (10, 1400, 1)] {
            let frames = flow(v6, count, size, last);
            let (co, writes) = merge(&frames);
            assert_eq!(shape(&writes), [(true, count)], "v6 {v6} {count}x{size}");
            let hdr = VirtioNetHdr::parse(&writes[0].1).unwrap();
            assert_eq!(hdr.gso_size as usize, size);
            assert_eq!(delivered(&writes), frames);
            assert_eq!(co.stats().superframes, 1);
            assert_eq!(co.stats().merged_segments, count as u64);
            assert!(!co.is_pending());
        }
    }
}

#[test]
fn vxnets_own_uso_split_gives_the_datagrams_back_too() {
    // The TAP -> wire path cuts the same superframes (what a vxnet peer would send on).
    for v6 in [false, true] {
        let frames = flow(v6, 20, 700, 300);
        let (_, writes) = merge(&frames);
        let hdr = VirtioNetHdr::parse(&writes[0].1).unwrap();
        let (res, out) = segment(&hdr, &writes[0].1[VIRTIO_NET_HDR_LEN..], 1398);
        let got: Vec<Vec<u8>> = inner_frames(&res, &out)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(got, frames);
    }
}

#[test]
fn limits_end_a_superframe() {
    // 64 datagrams at most (UDP_MAX_SEGMENTS of older kernels; newer ones allow 128).
    let frames = flow(false, 100, 18, 18);
    let (_, writes) = merge(&frames);
    assert_eq!(shape(&writes), [(true, 64), (true, 36)]);
    assert_eq!(delivered(&writes), frames);
    // 65535 bytes of IP packet: 20 + 8 + 45 * 1400 fits, a 47th does not.
    let frames = flow(true, 60, 1400, 1400);
    let (_, writes) = merge(&frames);
    assert_eq!(shape(&writes), [(true, 46), (true, 14)]);
    assert_eq!(delivered(&writes), frames);
    // A configured lower limit.
    let mut co = UdpCoalescer::new(CoalesceConfig {
        max_segments: 3,
        ..CoalesceConfig::default()
    });
    let frames = flow(false, 7, 100, 100);
    let writes = coalesce_all(&mut co, &frames);
    assert_eq!(shape(&writes), [(true, 3), (true, 3), (false, 1)]);
    assert_eq!(delivered(&writes), frames);
    assert_eq!(co.stats().singles, 1);
}

#[test]
fn a_short_datagram_is_the_last() {
    let mut frames = flow(false, 4, 500, 200);
    frames.push(udp_frame(Dgram::v4(4), &payload_of(500, 4)));
    let (_, writes) = merge(&frames);
    assert_eq!(shape(&writes), [(true, 4), (false, 1)]);
    assert_eq!(delivered(&writes), frames);
    // Without short tails it goes alone (and so does the longer one after it).
    let mut co = UdpCoalescer::new(CoalesceConfig {
        short_tail: false,
        ..CoalesceConfig::default()
    });
    let writes = coalesce_all(&mut co, &frames);
    assert_eq!(shape(&writes), [(true, 3), (false, 1), (false, 1)]);
    assert_eq!(delivered(&writes), frames);
    // A longer one never joins.
    let frames = vec![
        udp_frame(Dgram::v4(0), &payload_of(100, 0)),
        udp_frame(Dgram::v4(1), &payload_of(100, 1)),
        udp_frame(Dgram::v4(2), &payload_of(101, 2)),
        udp_frame(Dgram::v4(3), &payload_of(101, 3)),
    ];
    let (_, writes) = merge(&frames);
    assert_eq!(shape(&writes), [(true, 2), (true, 2)]);
    assert_eq!(delivered(&writes), frames);
}

/// What a case's reject must be.
type Expected = fn(Reject) -> bool;

/// Each frame, alone, is passed through for its reason (and counted).
#[test]
fn every_reject_reason() {
    let ok = || udp_frame(Dgram::v4(0), &payload_of(100, 9));
    let mut options = ok();
    // IHL 6 with a 4-byte NOP option, lengths and checksum fixed.
    options.splice(34..34, [1, 1, 1, 1]);
    options[14] = 0x46;
    options[17] += 4;
    refresh_v4_header_checksum(&mut options, 24);
    let mut bad_ip = ok();
    bad_ip[22] ^= 1; // TTL, checksum left
    let mut bad_udp = ok();
    let n = bad_udp.len();
    bad_udp[n - 1] ^= 0x10;
    let mut no_checksum = ok();
    no_checksum[40..42].fill(0);
    let mut short_udp_len = ok();
    short_udp_len[38..40].copy_from_slice(&50u16.to_be_bytes());
    let mut fragment = ok();
    fragment[20..22].copy_from_slice(&0x2000u16.to_be_bytes()); // MF
    refresh_ipv4_checksum(&mut fragment);
    let tcp = tcp_frame(Spec::v4(), &payload_of(100, 1));
    let cases: Vec<(Vec<u8>, Expected)> = vec![
        (options, |r| r == Reject::Ipv4Options),
        (udp_frame(Dgram::v4(0), &[]), |r| r == Reject::NoPayload),
        (bad_ip, |r| r == Reject::BadIpv4Checksum),
        (bad_udp, |r| r == Reject::BadUdpChecksum),
        (no_checksum, |r| r == Reject::NoUdpChecksum),
        (short_udp_len, |r| matches!(r, Reject::Malformed(_))),
        (fragment, |r| r == Reject::Malformed(OffloadError::Fragment)),
        (tcp, |r| {
            r == Reject::Malformed(OffloadError::NotUdp { protocol: 6 })
        }),
        (ok()[..40].to_vec(), |r| {
            matches!(r, Reject::Malformed(OffloadError::Truncated { .. }))
        }),
    ];
    for (i, (frame, expected)) in cases.iter().enumerate() {
        let mut co = UdpCoalescer::default();
        match co.push(frame) {
            Push::PassThrough(r) => assert!(expected(r), "case {i}: {r:?}"),
            other => panic!("case {i}: {other:?}"),
        }
        assert!(!co.is_pending());
        assert_eq!(co.stats().passed_through, 1);
    }
    let mut co = UdpCoalescer::new(CoalesceConfig {
        max_ip_len: 100,
        ..CoalesceConfig::default()
    });
    assert_eq!(
        co.push(&ok()),
        Push::PassThrough(Reject::TooLong { ip_len: 128 })
    );
    let mut co = UdpCoalescer::default();
    for frame in [&cases[2].0, &cases[3].0] {
        co.push(frame);
    }
    assert_eq!(co.stats().bad_checksum, 2);
}

fn refresh_v4_header_checksum(frame: &mut [u8], at: usize) {
    frame[at..at + 2].fill(0);
    let ihl = usize::from(frame[14] & 0xf) * 4;
    let c = checksum::checksum(&frame[14..14 + ihl]);
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn header_differences_end_a_superframe() {
    // Each change to the third datagram must keep it out of the first two's superframe.
    type Change = fn(&mut Vec<u8>);
    let changes: [(&str, Change); 7] = [
        ("IPv4 ID not first + 2", |f| f[19] = f[19].wrapping_add(1)),
        ("IPv4 ID repeated", |f| f[19] = f[19].wrapping_sub(1)),
        ("TTL", |f| f[22] -= 1),
        ("TOS", |f| f[15] = 0x10),
        ("DF", |f| f[20] = 0),
        ("destination MAC", |f| f[0] ^= 2),
        ("destination port", |f| f[37] ^= 1),
    ];
    for (what, change) in changes {
        let mut frames = flow(false, 4, 300, 300);
        change(&mut frames[2]);
        refresh_ipv4_checksum(&mut frames[2]);
        let c = udp_checksum_of(&frames[2]);
        frames[2][40..42].copy_from_slice(&c.to_be_bytes());
        let (_, writes) = merge(&frames);
        let got = shape(&writes);
        assert_eq!(got[0], (true, 2), "{what}: {got:?}");
        assert_eq!(delivered(&writes), frames, "{what}");
    }
    // IPv6: traffic class, flow label, hop limit, address.
    let changes: [(&str, Change); 4] = [
        ("traffic class", |f| f[14] |= 1),
        ("flow label", |f| f[17] ^= 1),
        ("hop limit", |f| f[21] -= 1),
        ("source address", |f| f[37] ^= 4),
    ];
    for (what, change) in changes {
        let mut frames = flow(true, 4, 300, 300);
        change(&mut frames[2]);
        let c = udp_checksum_of(&frames[2]);
        frames[2][60..62].copy_from_slice(&c.to_be_bytes());
        let (_, writes) = merge(&frames);
        let got = shape(&writes);
        assert_eq!(got[0], (true, 2), "{what}: {got:?}");
        assert_eq!(delivered(&writes), frames, "{what}");
    }
}

#[test]
fn an_unmergeable_datagram_of_the_flow_does_not_overtake_it() {
    // A corrupt and a checksum-less datagram of the pending flow go out after it, in order;
    // a datagram of another flow that cannot merge may pass.
    let mut frames = flow(false, 6, 200, 200);
    let n = frames[2].len();
    frames[2][n - 1] ^= 1;
    frames[4][40..42].fill(0);
    let (co, writes) = merge(&frames);
    assert_eq!(
        shape(&writes),
        [(true, 2), (false, 1), (false, 1), (false, 1), (false, 1)]
    );
    assert_eq!(delivered(&writes), frames);
    assert_eq!(co.stats().bad_checksum, 1);
    // A fragment (of which flow, unknown) flushes too.
    let mut frames = flow(false, 3, 200, 200);
    frames[1][20..22].copy_from_slice(&0x2000u16.to_be_bytes());
    refresh_ipv4_checksum(&mut frames[1]);
    let (_, writes) = merge(&frames);
    assert_eq!(writes[1], (false, frames[1].clone()));
    assert_eq!(delivered(&writes), frames);
    // Another flow's bad datagram passes the pending superframe.
    let mut co = UdpCoalescer::default();
    let frames = flow(false, 2, 200, 200);
    let mut other = udp_frame(
        Dgram {
            sport: 1,
            ..Dgram::v4(0)
        },
        &[1; 50],
    );
    other[40..42].fill(0);
    assert_eq!(co.push(&frames[0]), Push::Absorbed);
    assert_eq!(co.push(&other), Push::PassThrough(Reject::NoUdpChecksum));
    assert_eq!(co.push(&frames[1]), Push::Absorbed);
}

#[test]
fn interleaved_flows_each_get_their_own_superframes() {
    let a = flow(false, 4, 100, 100);
    let b: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            udp_frame(
                Dgram {
                    sport: 7,
                    ..Dgram::v4(i)
                },
                &payload_of(100, 50 + i as u8),
            )
        })
        .collect();
    let frames = vec![
        a[0].clone(),
        a[1].clone(),
        b[0].clone(),
        b[1].clone(),
        a[2].clone(),
        a[3].clone(),
        b[2].clone(),
        b[3].clone(),
    ];
    let (_, writes) = merge(&frames);
    assert_eq!(shape(&writes), [(true, 2); 4]);
    assert_eq!(delivered(&writes), frames);
}

#[test]
fn tagged_frames_merge() {
    let frames: Vec<Vec<u8>> = flow(false, 3, 100, 100)
        .into_iter()
        .map(|mut f| {
            f.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
            f
        })
        .collect();
    let mut co = UdpCoalescer::default();
    let writes = coalesce_all(&mut co, &frames);
    assert_eq!(writes.len(), 1);
    let hdr = VirtioNetHdr::parse(&writes[0].1).unwrap();
    assert_eq!((hdr.csum_start, hdr.hdr_len), (38, 46));
    assert_eq!(co.stats().merged_segments, 3);
}

fn flow_strategy() -> impl Strategy<Value = (bool, usize, usize, usize)> {
    (any::<bool>(), 1usize..80, 1usize..1400, 1usize..1400)
        .prop_map(|(v6, count, size, last)| (v6, count, size, last.min(size)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any flow comes back whole and in order; only the kernel's limits split it.
    #[test]
    fn round_trip((v6, count, size, last) in flow_strategy()) {
        let frames = flow(v6, count, size, last);
        let (co, writes) = merge(&frames);
        prop_assert_eq!(delivered(&writes), frames.clone());
        let merged: u64 = shape(&writes).iter().filter(|s| s.0).map(|s| s.1 as u64).sum();
        prop_assert_eq!(co.stats().merged_segments + co.stats().singles, count as u64);
        prop_assert_eq!(co.stats().merged_segments, merged);
        assert_udp_fast_path_agrees(&frames);
    }

    /// Damaged, reordered and foreign frames among a flow: what reaches the host is exactly
    /// what was sent, each flow in its order (another flow's frame may pass a pending
    /// superframe), and the fast path agrees with the full checks.
    #[test]
    fn mixed_traffic_is_delivered_as_sent(
        v6 in any::<bool>(),
        edits in proptest::collection::vec((0usize..40, 0u8..6), 0..12),
    ) {
        let mut frames = flow(v6, 40, 64, 64);
        let l4 = l4_offset(v6);
        for (i, edit) in edits {
            let f = &mut frames[i];
            match edit {
                0 => { let n = f.len(); f[n - 1] ^= 0x80 }        // corrupt payload
                1 => f[l4 + 6..l4 + 8].fill(0),                     // no checksum (v6: corrupt)
                2 => f.truncate(f.len() - 1),                       // cut short
                3 => frames.swap(i, (i + 1) % 40),                  // reordered
                4 => *f = tcp_frame(if v6 { Spec::v6() } else { Spec::v4() }, &[1; 30]),
                _ => *f = udp_frame(Dgram { v6, sport: 9, index: 0 }, &[2; 64]),
            }
        }
        let (_, writes) = merge(&frames);
        let got = delivered(&writes);
        prop_assert_eq!(got.len(), frames.len());
        // Protocol and source port: the flow (damaged datagrams keep them), TCP, the other UDP.
        let key = |f: &Vec<u8>| if v6 { (f[20], f[54]) } else { (f[23], f[34]) };
        for k in frames.iter().map(key) {
            let sent: Vec<_> = frames.iter().filter(|f| key(f) == k).collect();
            let came: Vec<_> = got.iter().filter(|f| key(f) == k).collect();
            prop_assert_eq!(came, sent);
        }
        assert_udp_fast_path_agrees(&frames);
    }
}
