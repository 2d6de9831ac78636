#![allow(clippy::unwrap_used, clippy::expect_used)]
//! TSO: superframes cut into segments (checked against etherparse), and the chunked writer.

mod offload_support;

use offload_support::*;

#[test]
fn segment_then_coalesce_round_trip_v4_and_v6() {
    let mut co = Coalescer::default();
    for v6 in [false, true] {
        for &len in &SIZES {
            let spec = if v6 { Spec::v6() } else { Spec::v4() };
            let payload = payload_of(len, len as u8);
            let frames = segment_and_check(spec, &payload, 1448, 1398);
            let got = coalesce_all(&mut co, &frames);
            let original = tcp_frame(spec, &payload);
            assert_eq!(got.len(), 1, "len {len} v6 {v6}");
            let (is_write, bytes) = &got[0];
            assert!(is_write);
            if frames.len() == 1 {
                // A lone segment goes back untouched behind a zero header.
                assert_eq!(&bytes[..10], &[0; 10]);
                assert_eq!(&bytes[10..], &original[..]);
            } else {
                check_superframe(bytes, &original, v6, 1398);
            }
        }
    }
    let s = co.stats();
    assert_eq!(s.bad_checksum, 0);
    assert_eq!(s.passed_through, 0);
    assert_eq!(s.singles, 2 * 4); // 1, 100, 1397 and 1398 are one segment at MSS 1398
}

#[test]
fn gso_size_smaller_than_mss_wins() {
    let payload = payload_of(5000, 3);
    let frames = segment_and_check(Spec::v4(), &payload, 536, 1398);
    assert_eq!(frames.len(), 10);
}

#[test]
fn fin_psh_last_cwr_first() {
    let spec = Spec {
        fin: true,
        psh: true,
        cwr: true,
        ..Spec::v4()
    };
    let payload = payload_of(5000, 1);
    let frames = segment_and_check(spec, &payload, 1448, 1000);
    // The FIN segment and the CWR segment are not merged; the three in between are.
    let mut co = Coalescer::default();
    let got = coalesce_all(&mut co, &frames);
    let kinds: Vec<_> = got.iter().map(|(w, b)| (*w, b.len())).collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert!(!got[0].0); // CWR: as-is
    assert!(got[1].0); // superframe of segments 1..4
    assert_eq!(VirtioNetHdr::parse(&got[1].1).unwrap().gso_size, 1000);
    assert!(!got[2].0); // FIN: as-is, after the superframe
    assert_eq!(co.stats().superframes, 1);
    assert_eq!(co.stats().merged_segments, 3);
}

#[test]
fn checksum_completion_and_pass_through() {
    // UDP with NEEDS_CSUM: the kernel left the pseudo-header sum in the field.
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(V4_A, V4_B, 64)
        .udp(1234, 53)
        .write(&mut frame, &payload_of(333, 9))
        .unwrap();
    let good = frame.clone();
    let udp_len = (frame.len() - 34) as u32;
    let pseudo = pseudo_header_v4(V4_A.into(), V4_B.into(), 17, udp_len).fold();
    frame[40..42].copy_from_slice(&pseudo.to_be_bytes());
    let hdr = VirtioNetHdr {
        flags: VirtioNetHdr::FLAG_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..Default::default()
    };
    let mut out = vec![0u8; 8 + frame.len()];
    let res = prepare_for_wire(&hdr, &frame, vni(), 1398, &mut out).unwrap();
    assert_eq!(res.segments, 1);
    assert_eq!(res.total_len, 8 + frame.len());
    assert_eq!(&out[8..], &good[..]);

    // No flags: copied unchanged, even if the checksum field is garbage.
    frame[40] ^= 0xFF;
    let res = prepare_for_wire(&VirtioNetHdr::default(), &frame, vni(), 1398, &mut out).unwrap();
    assert_eq!(res.segment_size, res.total_len);
    assert_eq!(&out[8..], &frame[..]);
    assert_eq!(&out[..8], &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);

    // TCP via the GSO path with one segment also gets a full checksum.
    let (mut hdr, tcp) = tap_superframe(Spec::v4(), &payload_of(700, 2), 1448);
    hdr.gso_type = VirtioNetHdr::GSO_NONE;
    let (res, out) = segment(&hdr, &tcp, 1398);
    decode_verified(&out[8..res.total_len]);
}

#[test]
fn gso_batches_respect_udp_limits() {
    let payload = payload_of(65_000, 5);
    let (hdr, frame) = tap_superframe(Spec::v4(), &payload, 1448);
    let (res, _) = segment(&hdr, &frame, 1398);
    assert_eq!(res.segments, 47);
    let batches: Vec<_> = res.batches(MAX_UDP_GSO_PAYLOAD, MAX_GSO_SEGMENTS).collect();
    assert_eq!(batches.len(), 2);
    let mut next = 0;
    for b in &batches {
        assert_eq!(b.range.start, next);
        assert!(b.range.len() <= MAX_UDP_GSO_PAYLOAD);
        assert_eq!(b.range.start % res.segment_size, 0);
        next = b.range.end;
    }
    assert_eq!(next, res.total_len);
    assert_eq!(batches.iter().map(|b| b.segments).sum::<usize>(), 47);
    // Segment-count limit alone.
    let small: Vec<_> = res.batches(usize::MAX, 10).collect();
    assert_eq!(small.len(), 5);
    assert_eq!(small[4].segments, 7);
}

#[test]
fn superframes_capped_at_segments_per_send_take_one_send() {
    use vxnet_encap::offload::segments_per_send;
    assert_eq!(segments_per_send(1450), 44);
    assert_eq!(segments_per_send(9000), 7);
    assert_eq!(segments_per_send(68), 64);
    assert_eq!(segments_per_send(65_535), 1);
    // A superframe of that many full segments (inner MTU 1450: MSS 1398 with timestamps, or
    // 1410 without) is exactly one UDP_SEGMENT send, also behind an 802.1Q tag.
    for (spec, mss) in [(Spec::v4(), 1398), (Spec::v6(), 1378)] {
        let (hdr, frame) = tap_superframe(spec, &payload_of(44 * mss, 2), mss as u16);
        let (res, _) = segment(&hdr, &frame, mss);
        assert_eq!(res.segments, 44);
        let batches: Vec<_> = res.batches(MAX_UDP_GSO_PAYLOAD, MAX_GSO_SEGMENTS).collect();
        assert_eq!(batches.len(), 1, "v6 {}", spec.v6);
    }
}

#[test]
fn malformed_tso_inputs_are_typed_errors() {
    let (hdr, frame) = tap_superframe(Spec::v4(), &payload_of(3000, 1), 1448);
    let mut out = vec![0u8; 70_000];
    let run = |h: &VirtioNetHdr, f: &[u8], mss: usize, out: &mut [u8]| {
        prepare_for_wire(h, f, vni(), mss, out).unwrap_err()
    };
    assert_eq!(
        run(&VirtioNetHdr { gso_size: 0, ..hdr }, &frame, 1398, &mut out),
        OffloadError::GsoSizeZero
    );
    assert_eq!(run(&hdr, &frame, 0, &mut out), OffloadError::MssZero);
    assert_eq!(
        run(
            &VirtioNetHdr {
                gso_type: VirtioNetHdr::GSO_TCPV6,
                ..hdr
            },
            &frame,
            1398,
            &mut out
        ),
        OffloadError::GsoTypeMismatch {
            gso_type: 4,
            ip_version: 4
        }
    );
    assert_eq!(
        run(
            &VirtioNetHdr {
                gso_type: VirtioNetHdr::GSO_UDP,
                ..hdr
            },
            &frame,
            1398,
            &mut out
        ),
        OffloadError::UnsupportedGsoType { gso_type: 3 }
    );
    assert_eq!(
        run(
            &VirtioNetHdr {
                gso_type: VirtioNetHdr::GSO_UDP_L4,
                ..hdr
            },
            &frame,
            1398,
            &mut out
        ),
        OffloadError::NotUdp { protocol: 6 }
    );
    assert_eq!(
        run(
            &VirtioNetHdr {
                csum_start: 30,
                ..hdr
            },
            &frame,
            1398,
            &mut out
        ),
        OffloadError::CsumStartMismatch {
            csum_start: 30,
            tcp_offset: 34
        }
    );
    // More segments than one UDP GSO send carries is not an error (batches split the sends).
    let need = required_output_len(&hdr, &frame, 40).unwrap();
    let mut big = vec![0u8; need];
    let res = prepare_for_wire(&hdr, &frame, vni(), 40, &mut big).unwrap();
    assert!(res.segments > MAX_GSO_SEGMENTS, "{res:?}");
    let need = required_output_len(&hdr, &frame, 1398).unwrap();
    assert_eq!(
        run(&hdr, &frame, 1398, &mut out[..need - 1]),
        OffloadError::OutputTooSmall {
            required: need,
            available: need - 1
        }
    );
    let mut udp = frame.clone();
    udp[23] = 17;
    assert_eq!(
        run(&hdr, &udp, 1398, &mut out),
        OffloadError::NotTcp { protocol: 17 }
    );
    let mut frag = frame.clone();
    frag[20] |= 0x20;
    assert_eq!(run(&hdr, &frag, 1398, &mut out), OffloadError::Fragment);
    let mut arp = frame.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(
        run(&hdr, &arp, 1398, &mut out),
        OffloadError::NotIp { ethertype: 0x0806 }
    );
    let mut doff = frame.clone();
    doff[34 + 12] = 0x40;
    assert!(matches!(
        run(&hdr, &doff, 1398, &mut out),
        OffloadError::BadHeader {
            layer: Layer::InnerTcp,
            ..
        }
    ));
    // Every truncation of the frame is a typed Truncated error naming the layer.
    for cut in 0..frame.len() {
        match run(&hdr, &frame[..cut], 1398, &mut out) {
            OffloadError::Truncated {
                layer,
                required,
                actual,
            } => {
                assert!(required > actual, "cut {cut}");
                let expect = match cut {
                    0..=13 => Layer::InnerEthernet,
                    14..=33 => Layer::InnerIpv4,
                    _ => Layer::InnerIpv4, // total length beyond the cut
                };
                assert_eq!(layer, expect, "cut {cut}");
            }
            other => panic!("cut {cut}: {other:?}"),
        }
    }
    // NEEDS_CSUM offsets outside the frame.
    let bad = VirtioNetHdr {
        flags: VirtioNetHdr::FLAG_NEEDS_CSUM,
        csum_start: 60,
        csum_offset: 6,
        ..Default::default()
    };
    assert_eq!(
        run(&bad, &frame[..64], 1398, &mut out),
        OffloadError::BadChecksumOffsets {
            csum_start: 60,
            csum_offset: 6,
            frame_len: 64
        }
    );
    let mut short = frame[..64].to_vec();
    assert!(complete_checksum(&mut short, 62, 1).is_err());
    assert!(complete_checksum(&mut short, 62, 0).is_ok());
}

#[test]
fn small_mss_superframe_is_split_into_several_gso_sends() {
    // MSS 536 (TCP_MAXSEG 536 with timestamps: 524 payload bytes): 64 KB is 123 segments.
    let payload = payload_of(64_000, 9);
    let frames = segment_and_check(Spec::v4(), &payload, 524, 1398);
    assert_eq!(frames.len(), 123);
    let (hdr, frame) = tap_superframe(Spec::v4(), &payload, 524);
    let (res, _) = segment(&hdr, &frame, 1398);
    let batches: Vec<_> = res.batches(MAX_UDP_GSO_PAYLOAD, MAX_GSO_SEGMENTS).collect();
    assert_eq!(batches.len(), 2);
    assert!(batches.iter().all(|b| b.segments <= MAX_GSO_SEGMENTS));
    assert_eq!(batches.iter().map(|b| b.segments).sum::<usize>(), 123);
    // Through a buffer of one UDP GSO send's worth, the chunks add up to the one-shot output.
    let (_, one_shot) = segment(&hdr, &frame, 1398);
    let chunked = write_in_chunks(&hdr, &frame, 1398, 40_000, MAX_GSO_SEGMENTS);
    assert_eq!(chunked, one_shot);
}

#[test]
fn chunked_writer_refuses_what_it_cannot_do() {
    let (hdr, frame) = tap_superframe(Spec::v4(), &payload_of(10_000, 4), 1000);
    let mut plan = WirePlan::new(&hdr, &frame, 1398).unwrap();
    assert_eq!(plan.segments(), 10);
    assert!(plan.is_tso());
    let stride = 8 + 66 + 1000;
    let mut out = vec![0u8; stride - 1];
    assert_eq!(
        plan.write_next(&frame, vni(), &mut out, 64),
        Err(OffloadError::OutputTooSmall {
            required: stride,
            available: stride - 1
        })
    );
    assert_eq!(
        plan.write_next(&frame[..frame.len() - 1], vni(), &mut out, 64),
        Err(OffloadError::FrameChanged {
            planned: frame.len(),
            actual: frame.len() - 1
        })
    );
    // Nothing was consumed by the refusals.
    assert_eq!(plan.remaining(), 10);
    let mut out = vec![0u8; 3 * stride + 10];
    let res = plan
        .write_next(&frame, vni(), &mut out, 64)
        .unwrap()
        .unwrap();
    assert_eq!((res.segments, res.total_len), (3, 3 * stride));
    // A plain frame is one datagram.
    let plain = tcp_frame(Spec::v4(), &payload_of(100, 1));
    let plan = WirePlan::new(&VirtioNetHdr::default(), &plain, 1398).unwrap();
    assert_eq!((plan.segments(), plan.is_tso()), (1, false));
    assert_eq!(plan.total_len(), 8 + plain.len());
}
