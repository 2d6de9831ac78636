#![allow(clippy::unwrap_used, clippy::expect_used)]
//! USO: UDP superframes cut into datagrams of gso_size; property tests of the offloads.

mod offload_support;

use offload_support::*;
use proptest::prelude::*;

#[test]
fn uso_superframes_become_datagrams_of_gso_size() {
    for v6 in [false, true] {
        for (len, gso) in [
            (1, 1200),
            (1200, 1200),
            (1201, 1200),
            (48_000, 1200),
            (65_000, 1000),
        ] {
            uso_segment_and_check(v6, &payload_of(len, len as u8), gso);
        }
        // Tiny datagrams: far more than one UDP GSO send may carry.
        assert_eq!(uso_segment_and_check(v6, &payload_of(9_000, 3), 60), 150);
    }
}

#[test]
fn uso_datagram_boundaries_are_never_recut() {
    // A gso_size the underlay cannot carry is refused, not split smaller: the datagrams are
    // the application's. MSS 1398 allows inner IP packets of 1438 bytes: 1410 payload bytes.
    let (hdr, frame) = tap_uso_superframe(false, &payload_of(5000, 1), 1410);
    assert!(WirePlan::new(&hdr, &frame, 1398).is_ok());
    let (hdr, frame) = tap_uso_superframe(false, &payload_of(5000, 1), 1411);
    assert_eq!(
        WirePlan::new(&hdr, &frame, 1398).unwrap_err(),
        OffloadError::SegmentTooBig {
            ip_len: 1439,
            max: 1438
        }
    );
    let plan = WirePlan::new(
        &VirtioNetHdr {
            gso_size: 1000,
            ..hdr
        },
        &frame,
        1398,
    )
    .unwrap();
    assert!(plan.is_uso() && !plan.is_tso());
    assert_eq!(
        WirePlan::new(
            &VirtioNetHdr {
                csum_start: 30,
                ..hdr
            },
            &frame,
            1398
        )
        .unwrap_err(),
        OffloadError::CsumStartMismatch {
            csum_start: 30,
            tcp_offset: 34
        }
    );
    assert_eq!(
        WirePlan::new(&VirtioNetHdr { gso_size: 0, ..hdr }, &frame, 1398).unwrap_err(),
        OffloadError::GsoSizeZero
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn uso_round_trip_and_chunking(
        len in 0usize..65_000,
        // Up to what MSS 1398 carries over IPv6 (1438 - 40 - 8).
        gso_size in 1u16..=1390,
        v6 in any::<bool>(),
        extra in 0usize..70_000,
        max_segments in 1usize..200,
    ) {
        let payload = payload_of(len, gso_size as u8);
        uso_segment_and_check(v6, &payload, gso_size);
        let (hdr, frame) = tap_uso_superframe(v6, &payload, gso_size);
        let (_, one_shot) = segment(&hdr, &frame, 1398);
        let stride = 8 + l4_offset(v6) + 8 + gso_size as usize;
        let chunked = write_in_chunks(&hdr, &frame, 1398, stride + extra, max_segments);
        prop_assert_eq!(chunked, one_shot);
    }

    /// Chunk by chunk through any buffer that holds a segment, with any per-chunk cap, the
    /// output is byte for byte the one-shot output, for any gso_size down to tiny ones.
    #[test]
    fn chunked_writes_equal_one_shot(
        len in 0usize..65_000,
        gso_size in 1u16..1500,
        v6 in any::<bool>(),
        extra in 0usize..80_000,
        max_segments in 1usize..200,
    ) {
        let spec = if v6 { Spec::v6() } else { Spec::v4() };
        let payload = payload_of(len, gso_size as u8);
        let (hdr, frame) = tap_superframe(spec, &payload, gso_size);
        let (_, one_shot) = segment(&hdr, &frame, 1398);
        let hl = frame.len() - payload.len();
        let stride = 8 + hl + (gso_size as usize).min(1398);
        let chunked = write_in_chunks(&hdr, &frame, 1398, stride + extra, max_segments);
        prop_assert_eq!(chunked, one_shot);
    }

    #[test]
    fn fast_path_agrees_on_mutations(
        flips in proptest::collection::vec((0usize..4, 0usize..90, 1u8..=255, any::<bool>()), 1..4),
        v6 in any::<bool>(),
    ) {
        let spec = if v6 { Spec::v6() } else { Spec::v4() };
        let mut frames = four_segments(spec);
        for (i, at, bits, fix) in flips {
            let at = at.min(frames[i].len() - 1);
            frames[i][at] ^= bits;
            if fix && !v6 {
                refresh_ipv4_checksum(&mut frames[i]);
                fix_tcp_checksum_v4(&mut frames[i]);
            }
        }
        assert_fast_path_agrees(&frames);
    }

    #[test]
    fn segment_coalesce_round_trip(len in 0usize..60_000, mss in 1000usize..1500, v6 in any::<bool>(), salt in any::<u8>()) {
        let spec = if v6 { Spec::v6() } else { Spec::v4() };
        let payload = payload_of(len, salt);
        let frames = segment_and_check(spec, &payload, 1448, mss);
        let mut co = Coalescer::default();
        let got = coalesce_all(&mut co, &frames);
        let original = tcp_frame(spec, &payload);
        if len == 0 {
            // A bare ACK|PSH without payload is never merged.
            prop_assert_eq!(got, vec![(false, original)]);
        } else if frames.len() == 1 {
            prop_assert_eq!(&got[0].1[10..], &original[..]);
        } else {
            prop_assert_eq!(got.len(), 1);
            check_superframe(&got[0].1, &original, v6, mss.min(1448));
        }
    }

    #[test]
    fn arbitrary_input_never_panics(
        frame in proptest::collection::vec(any::<u8>(), 0..300),
        hdr in proptest::array::uniform10(any::<u8>()),
        mss in 0usize..2000,
        out_len in 0usize..4000,
    ) {
        let hdr = VirtioNetHdr::from_bytes(hdr);
        let mut out = vec![0u8; out_len];
        let _ = prepare_for_wire(&hdr, &frame, vni(), mss, &mut out);
        let _ = required_output_len(&hdr, &frame, mss);
        let mut f = frame.clone();
        let _ = complete_checksum(&mut f, hdr.csum_start, hdr.csum_offset);
        let mut co = Coalescer::default();
        let _ = co.push(&frame);
        let _ = co.push(&frame);
        let _ = co.finish();
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..6),
        cut in 0usize..4000,
        hdr in proptest::array::uniform10(any::<u8>()),
        v6 in any::<bool>(),
    ) {
        let spec = if v6 { Spec::v6() } else { Spec::v4() };
        let (good_hdr, mut frame) = tap_superframe(spec, &payload_of(3000, 1), 1448);
        for (at, b) in flips {
            if at < frame.len() { frame[at] ^= b; }
        }
        frame.truncate(cut.max(1));
        let mut out = vec![0u8; 8000];
        for h in [good_hdr, VirtioNetHdr::from_bytes(hdr)] {
            if let Ok(res) = prepare_for_wire(&h, &frame, vni(), 700, &mut out) {
                prop_assert!(res.total_len <= out.len());
            }
        }
        let mut co = Coalescer::default();
        let frames = four_segments(spec);
        let _ = co.push(&frames[0]);
        let _ = co.push(&frame);
        let _ = co.push(&frames[1]);
        let _ = co.finish();
    }
}
