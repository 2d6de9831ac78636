#![allow(clippy::unwrap_used, clippy::expect_used)]
//! GRO: segments coalesced back into superframes, and the fast path agreeing with the full checks.

mod offload_support;

use offload_support::*;

#[test]
fn corrupted_segment_is_not_coalesced() {
    for v6 in [false, true] {
        let spec = if v6 { Spec::v6() } else { Spec::v4() };
        let mut frames = four_segments(spec);
        let n = frames[2].len();
        frames[2][n - 5] ^= 0x40; // payload bit flip: only the TCP checksum can see it
        let mut co = Coalescer::default();
        let got = coalesce_all(&mut co, &frames);
        let shape: Vec<_> = got.iter().map(|(w, b)| (*w, b.len())).collect();
        // [0,1] merged, 2 as-is (after them: same flow), 3 alone.
        assert_eq!(shape.len(), 3, "{shape:?}");
        assert!(got[0].0 && VirtioNetHdr::parse(&got[0].1).unwrap().gso_size == 1000);
        assert_eq!(got[1], (false, frames[2].clone()));
        assert_eq!(&got[2].1[..10], &[0; 10]);
        assert_eq!(co.stats().bad_checksum, 1);
        assert_eq!(co.stats().passed_through, 1);
    }
    // A bad IPv4 header checksum is caught too.
    let mut frames = four_segments(Spec::v4());
    frames[0][22] ^= 1; // TTL
    let mut co = Coalescer::default();
    assert_eq!(
        co.push(&frames[0]),
        Push::PassThrough(Reject::BadIpv4Checksum)
    );
}

#[test]
fn out_of_order_and_foreign_segments_are_not_merged() {
    let frames = four_segments(Spec::v4());
    let mut swapped = frames.clone();
    swapped.swap(1, 2);
    let mut co = Coalescer::default();
    let got = coalesce_all(&mut co, &swapped);
    // 0 | 2 | 1 | 3: no two are contiguous in this order except none; 1 and 3 are not either.
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|(w, b)| *w && b[..10] == [0; 10]));

    // Interleaving another flow: each superframe holds one flow only.
    let other = four_segments(Spec {
        sport: 40001,
        ..Spec::v4()
    });
    let mixed = vec![
        frames[0].clone(),
        frames[1].clone(),
        other[0].clone(),
        other[1].clone(),
        frames[2].clone(),
        frames[3].clone(),
    ];
    let got = coalesce_all(&mut co, &mixed);
    assert_eq!(got.len(), 3);
    for (w, b) in &got {
        assert!(*w);
        let hdr = VirtioNetHdr::parse(b).unwrap();
        assert_eq!(hdr.gso_type, VirtioNetHdr::GSO_TCPV4);
        assert_eq!(b.len(), 10 + 66 + 2000);
    }
    assert_eq!(u16::from_be_bytes([got[1].1[44], got[1].1[45]]), 40001);
}

#[test]
fn pure_ack_of_another_flow_does_not_break_a_superframe() {
    let frames = four_segments(Spec::v4());
    let ack = tcp_frame(
        Spec {
            sport: 5555,
            psh: false,
            ..Spec::v4()
        },
        &[],
    );
    let mut co = Coalescer::default();
    assert_eq!(co.push(&frames[0]), Push::Absorbed);
    assert_eq!(co.push(&ack), Push::PassThrough(Reject::NoPayload));
    assert_eq!(co.push(&frames[1]), Push::Absorbed);
    // A pure ACK of the *same* flow must not overtake the data: flush first.
    let same_ack = tcp_frame(
        Spec {
            psh: false,
            ..Spec::v4()
        },
        &[],
    );
    assert_eq!(co.push(&same_ack), Push::Flush);
    assert!(co.finish().is_some());
    assert_eq!(co.push(&same_ack), Push::PassThrough(Reject::NoPayload));
    assert!(co.finish().is_none());
}

#[test]
fn short_tail_policy() {
    let payload = payload_of(2500, 4);
    let frames = segment_and_check(Spec::v4(), &payload, 1000, 1000);
    let mut co = Coalescer::new(CoalesceConfig {
        short_tail: false,
        ..CoalesceConfig::default()
    });
    let got = coalesce_all(&mut co, &frames);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1.len(), 10 + 66 + 2000);
    assert_eq!(&got[1].1[10..], &frames[2][..]);
    let mut co = Coalescer::default();
    let got = coalesce_all(&mut co, &frames);
    assert_eq!(got.len(), 1);
    check_superframe(&got[0].1, &tcp_frame(Spec::v4(), &payload), false, 1000);
}

#[test]
fn changed_timestamp_and_ip_id_rules() {
    let mut frames = four_segments(Spec::v4());
    // TSval of segment 2 changes: identical-options rule ends the superframe there.
    let mut ts_changed = frames.clone();
    for f in &mut ts_changed[2..] {
        f[34 + 20 + 7] = 8;
        fix_tcp_checksum_v4(f);
    }
    let mut co = Coalescer::default();
    let got = coalesce_all(&mut co, &ts_changed);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1.len(), 10 + 66 + 2000);
    assert_eq!(got[1].1.len(), 10 + 66 + 2000);

    // Fixed IPv4 ID with DF: merged.
    for f in &mut frames {
        f[18..20].copy_from_slice(&7u16.to_be_bytes());
        refresh_ipv4_checksum(f);
    }
    let got = coalesce_all(&mut co, &frames);
    assert_eq!(got.len(), 1);
    // An ID that jumps: not merged.
    frames[1][18..20].copy_from_slice(&99u16.to_be_bytes());
    refresh_ipv4_checksum(&mut frames[1]);
    let got = coalesce_all(&mut co, &frames);
    assert_eq!(got.len(), 3);
}

#[test]
fn vlan_tagged_superframe_segments_and_coalesces() {
    let payload = payload_of(3000, 11);
    let plain = tcp_frame(Spec::v4(), &payload);
    let mut tagged = plain[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x2A]);
    tagged.extend_from_slice(&plain[12..]);
    let hdr = VirtioNetHdr {
        flags: VirtioNetHdr::FLAG_NEEDS_CSUM,
        gso_type: VirtioNetHdr::GSO_TCPV4,
        gso_size: 1448,
        csum_start: 38,
        csum_offset: 16,
        hdr_len: 0,
    };
    let (res, out) = segment(&hdr, &tagged, 1448);
    assert_eq!(res.segments, 3);
    let frames: Vec<Vec<u8>> = inner_frames(&res, &out)
        .iter()
        .map(|f| f.to_vec())
        .collect();
    let mut co = Coalescer::default();
    let got = coalesce_all(&mut co, &frames);
    assert_eq!(got.len(), 1);
    let hdr = VirtioNetHdr::parse(&got[0].1).unwrap();
    assert_eq!((hdr.csum_start, hdr.hdr_len), (38, 38 + 32));
    let mut sf = got[0].1[10..].to_vec();
    complete_checksum(&mut sf, hdr.csum_start, hdr.csum_offset).unwrap();
    assert_eq!(sf, tagged);
}

#[test]
fn coalescer_reuses_its_buffer_and_rejects_when_full() {
    // 60 segments of 1000 bytes exceed neither limit; 70 exceed max_segments (64).
    let payload = payload_of(70 * 1000, 1);
    let spec = Spec {
        ts: false,
        ..Spec::v4()
    };
    let mut frames = Vec::new();
    for chunk in 0..70u32 {
        let s = Spec {
            seq: BASE_SEQ.wrapping_add(chunk * 1000),
            psh: false,
            ..spec
        };
        let mut f = tcp_frame(s, &payload[chunk as usize * 1000..][..1000]);
        f[18..20].copy_from_slice(&BASE_ID.wrapping_add(chunk as u16).to_be_bytes());
        refresh_ipv4_checksum(&mut f);
        frames.push(f);
    }
    let mut co = Coalescer::default();
    let got = coalesce_all(&mut co, &frames);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1.len(), 10 + 54 + 64 * 1000);
    assert_eq!(got[1].1.len(), 10 + 54 + 6 * 1000);
}

#[test]
fn fast_path_agrees_with_full_checks() {
    for v6 in [false, true] {
        let spec = if v6 { Spec::v6() } else { Spec::v4() };
        for &len in &SIZES {
            assert_fast_path_agrees(&segment_and_check(spec, &payload_of(len, 3), 1448, 1398));
        }
    }
    // Every header byte of a middle segment changed in turn (checksums left stale or fixed
    // up), plus truncation and padding: whichever path decides, the writes are the same.
    let frames = four_segments(Spec::v4());
    for at in 0..66 {
        for fix in [false, true] {
            let mut f = frames.clone();
            f[2][at] ^= 0x21;
            if fix {
                refresh_ipv4_checksum(&mut f[2]);
                fix_tcp_checksum_v4(&mut f[2]);
            }
            assert_fast_path_agrees(&f);
        }
    }
    let mut cut = frames.clone();
    cut[2].truncate(500);
    assert_fast_path_agrees(&cut);
    let mut padded = frames.clone();
    padded[2].extend_from_slice(&[0; 6]);
    assert_fast_path_agrees(&padded);
}

#[test]
fn fused_checksum_agrees_with_reference_on_segments() {
    // Odd MSS: chunks start at odd payload offsets; each segment must still verify.
    let payload = payload_of(10_001, 77);
    segment_and_check(Spec::v4(), &payload, 1448, 1001);
    segment_and_check(Spec::v6(), &payload, 1447, 1500);
    let _ = Sum::new();
}
