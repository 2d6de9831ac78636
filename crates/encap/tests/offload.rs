#![allow(clippy::unwrap_used, clippy::expect_used)]
//! TSO segmentation and GRO coalescing, checked against etherparse (an independent decoder).

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TcpHeader, TransportSlice};
use proptest::prelude::*;
use vxnet_encap::checksum::{self, pseudo_header_v4, pseudo_header_v6, Sum};
use vxnet_encap::offload::{
    complete_checksum, prepare_for_wire, required_output_len, CoalesceConfig, Coalescer, Emit,
    Push, Reject, Segmented, VirtioNetHdr, WirePlan, MAX_GSO_SEGMENTS, MAX_UDP_GSO_PAYLOAD,
    VIRTIO_NET_HDR_LEN,
};
use vxnet_encap::{Layer, OffloadError, Vni};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const V4_A: [u8; 4] = [10, 0, 0, 1];
const V4_B: [u8; 4] = [10, 0, 0, 2];
const V6_A: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_B: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const BASE_SEQ: u32 = 0xFFFF_F000; // wraps inside a 64 KB superframe
const BASE_ID: u16 = 0xFFF0; // wraps too
const TIMESTAMPS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9];

fn vni() -> Vni {
    Vni::new(0x123456).unwrap()
}

#[derive(Clone, Copy)]
struct Spec {
    v6: bool,
    seq: u32,
    sport: u16,
    psh: bool,
    fin: bool,
    cwr: bool,
    ts: bool,
}

impl Spec {
    fn v4() -> Self {
        Spec {
            v6: false,
            seq: BASE_SEQ,
            sport: 40000,
            psh: true,
            fin: false,
            cwr: false,
            ts: true,
        }
    }
    fn v6() -> Self {
        Spec {
            v6: true,
            ..Self::v4()
        }
    }
}

/// An Ethernet + IP + TCP frame with valid checksums; IPv4 gets DF and ID `BASE_ID`.
fn tcp_frame(spec: Spec, payload: &[u8]) -> Vec<u8> {
    let mut th = TcpHeader::new(spec.sport, 5201, spec.seq, 502);
    th.ack = true;
    th.acknowledgment_number = 0x0102_0304;
    th.psh = spec.psh;
    th.fin = spec.fin;
    th.cwr = spec.cwr;
    if spec.ts {
        th.set_options_raw(&TIMESTAMPS).unwrap();
    }
    let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
    let mut out = Vec::new();
    if spec.v6 {
        eth.ipv6(V6_A, V6_B, 64)
            .tcp_header(th)
            .write(&mut out, payload)
            .unwrap();
    } else {
        eth.ipv4(V4_A, V4_B, 64)
            .tcp_header(th)
            .write(&mut out, payload)
            .unwrap();
        out[18..20].copy_from_slice(&BASE_ID.to_be_bytes());
        out[20..22].copy_from_slice(&0x4000u16.to_be_bytes());
        refresh_ipv4_checksum(&mut out);
    }
    out
}

fn refresh_ipv4_checksum(frame: &mut [u8]) {
    frame[24..26].fill(0);
    let c = checksum::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

fn payload_of(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

fn l4_offset(v6: bool) -> usize {
    if v6 {
        54
    } else {
        34
    }
}

/// What a TAP read returns: the TCP checksum field holds the pseudo-header sum (NEEDS_CSUM).
fn tap_superframe(spec: Spec, payload: &[u8], gso_size: u16) -> (VirtioNetHdr, Vec<u8>) {
    let mut frame = tcp_frame(spec, payload);
    let l4 = l4_offset(spec.v6);
    let tcp_len = (frame.len() - l4) as u32;
    let pseudo = if spec.v6 {
        pseudo_header_v6(V6_A.into(), V6_B.into(), 6, tcp_len)
    } else {
        pseudo_header_v4(V4_A.into(), V4_B.into(), 6, tcp_len)
    };
    frame[l4 + 16..l4 + 18].copy_from_slice(&pseudo.fold().to_be_bytes());
    let hdr = VirtioNetHdr {
        flags: VirtioNetHdr::FLAG_NEEDS_CSUM,
        gso_type: if spec.v6 {
            VirtioNetHdr::GSO_TCPV6
        } else {
            VirtioNetHdr::GSO_TCPV4
        },
        hdr_len: 9999, // deliberately wrong: must not be trusted
        gso_size,
        csum_start: l4 as u16,
        csum_offset: 16,
    };
    (hdr, frame)
}

fn segment(hdr: &VirtioNetHdr, frame: &[u8], mss: usize) -> (Segmented, Vec<u8>) {
    let need = required_output_len(hdr, frame, mss).unwrap();
    let mut out = vec![0u8; need];
    let res = prepare_for_wire(hdr, frame, vni(), mss, &mut out).unwrap();
    assert_eq!(res.total_len, need);
    (res, out)
}

/// The inner frames of a segmentation result, VXLAN header checked and stripped.
fn inner_frames<'a>(res: &Segmented, out: &'a [u8]) -> Vec<&'a [u8]> {
    let mut v = Vec::new();
    let mut at = 0;
    while at < res.total_len {
        let end = (at + res.segment_size).min(res.total_len);
        let seg = &out[at..end];
        assert_eq!(&seg[..8], &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        v.push(&seg[8..]);
        at = end;
    }
    assert_eq!(v.len(), res.segments);
    v
}

struct Decoded {
    seq: u32,
    fin: bool,
    psh: bool,
    cwr: bool,
    ip_id: Option<u16>,
    payload: Vec<u8>,
}

/// Decodes with etherparse and asserts both checksums.
fn decode_verified(frame: &[u8]) -> Decoded {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
        panic!("not TCP")
    };
    let (expected, ip_id) = match p.net.as_ref().unwrap() {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
            assert_eq!(h.total_len() as usize, frame.len() - 14);
            (
                tcp.calc_checksum_ipv4(h.source(), h.destination()).unwrap(),
                Some(h.identification()),
            )
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            assert_eq!(h.payload_length() as usize, frame.len() - 54);
            (
                tcp.calc_checksum_ipv6(h.source(), h.destination()).unwrap(),
                None,
            )
        }
        NetSlice::Arp(_) => panic!("arp"),
    };
    assert_eq!(tcp.checksum(), expected, "TCP checksum");
    Decoded {
        seq: tcp.sequence_number(),
        fin: tcp.fin(),
        psh: tcp.psh(),
        cwr: tcp.cwr(),
        ip_id,
        payload: tcp.payload().to_vec(),
    }
}

/// Segments, checks every segment, returns the inner frames (owned).
fn segment_and_check(spec: Spec, payload: &[u8], gso_size: u16, mss: usize) -> Vec<Vec<u8>> {
    let (hdr, frame) = tap_superframe(spec, payload, gso_size);
    let (res, out) = segment(&hdr, &frame, mss);
    let seg_payload = mss.min(gso_size as usize);
    let expected_segments = payload.len().div_ceil(seg_payload).max(1);
    assert_eq!(res.segments, expected_segments);
    let frames = inner_frames(&res, &out);
    let hdr_len = frame.len() - payload.len();
    if res.segments > 1 {
        assert_eq!(res.segment_size, 8 + hdr_len + seg_payload);
    }
    let mut joined = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let d = decode_verified(f);
        let last = i + 1 == frames.len();
        assert_eq!(d.seq, spec.seq.wrapping_add((i * seg_payload) as u32));
        assert_eq!(d.fin, spec.fin && last);
        assert_eq!(d.psh, spec.psh && last);
        assert_eq!(d.cwr, spec.cwr && i == 0);
        if !spec.v6 {
            assert_eq!(d.ip_id, Some(BASE_ID.wrapping_add(i as u16)));
        }
        if !last {
            assert_eq!(d.payload.len(), seg_payload);
        }
        joined.extend_from_slice(&d.payload);
    }
    assert_eq!(joined, payload);
    frames.into_iter().map(<[u8]>::to_vec).collect()
}

fn coalesce_all(co: &mut Coalescer, frames: &[Vec<u8>]) -> Vec<(bool, Vec<u8>)> {
    let mut got = Vec::new();
    co.coalesce(frames.iter().map(Vec::as_slice), |e| match e {
        Emit::Write(b) => got.push((true, b.to_vec())),
        Emit::AsIs(b) => got.push((false, b.to_vec())),
    });
    got
}

/// Checks a coalesced write against the original superframe and returns its header.
fn check_superframe(write: &[u8], original: &[u8], v6: bool, gso_size: usize) -> VirtioNetHdr {
    let hdr = VirtioNetHdr::parse(write).unwrap();
    let mut sf = write[VIRTIO_NET_HDR_LEN..].to_vec();
    let l4 = l4_offset(v6);
    assert_eq!(hdr.flags, VirtioNetHdr::FLAG_NEEDS_CSUM);
    assert_eq!(
        hdr.gso_type,
        if v6 {
            VirtioNetHdr::GSO_TCPV6
        } else {
            VirtioNetHdr::GSO_TCPV4
        }
    );
    assert_eq!(hdr.csum_start as usize, l4);
    assert_eq!(hdr.csum_offset, 16);
    assert_eq!(hdr.gso_size as usize, gso_size);
    let tcp_hlen = ((sf[l4 + 12] >> 4) * 4) as usize;
    assert_eq!(hdr.hdr_len as usize, l4 + tcp_hlen);
    // The field holds the folded, uncomplemented pseudo-header sum ...
    let tcp_len = (sf.len() - l4) as u32;
    let pseudo = if v6 {
        pseudo_header_v6(V6_A.into(), V6_B.into(), 6, tcp_len)
    } else {
        pseudo_header_v4(V4_A.into(), V4_B.into(), 6, tcp_len)
    };
    assert_eq!(
        u16::from_be_bytes([sf[l4 + 16], sf[l4 + 17]]),
        pseudo.fold()
    );
    // ... so completing it as the kernel would gives back the original frame exactly.
    complete_checksum(&mut sf, hdr.csum_start, hdr.csum_offset).unwrap();
    assert_eq!(sf, original);
    hdr
}

const SIZES: [usize; 9] = [1, 100, 1397, 1398, 1399, 2796, 2797, 44 * 1398, 62_000];

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

fn four_segments(spec: Spec) -> Vec<Vec<u8>> {
    segment_and_check(spec, &payload_of(4 * 1000, 7), 1000, 1000)
}

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

fn fix_tcp_checksum_v4(f: &mut [u8]) {
    f[34 + 16..34 + 18].fill(0);
    let sum =
        pseudo_header_v4(V4_A.into(), V4_B.into(), 6, (f.len() - 34) as u32).add_bytes(&f[34..]);
    f[34 + 16..34 + 18].copy_from_slice(&sum.finish().to_be_bytes());
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

/// Writes `frame` chunk by chunk through an `out_len`-byte buffer and returns the chunks
/// concatenated, checking each chunk's layout on the way.
fn write_in_chunks(
    hdr: &VirtioNetHdr,
    frame: &[u8],
    mss: usize,
    out_len: usize,
    max_segments: usize,
) -> Vec<u8> {
    let mut plan = WirePlan::new(hdr, frame, mss).unwrap();
    let total_segments = plan.segments();
    let mut out = vec![0u8; out_len];
    let mut joined = Vec::new();
    let mut segments = 0;
    let mut stride = None;
    while let Some(res) = plan
        .write_next(frame, vni(), &mut out, max_segments)
        .unwrap()
    {
        assert!(res.segments >= 1 && res.segments <= max_segments.max(1));
        assert!(res.total_len <= out_len);
        segments += res.segments;
        assert_eq!(plan.remaining(), total_segments - segments);
        if plan.remaining() > 0 {
            // A chunk that is not the last holds only full-size segments.
            assert_eq!(res.total_len, res.segments * res.segment_size);
            assert_eq!(*stride.get_or_insert(res.segment_size), res.segment_size);
        }
        joined.extend_from_slice(&out[..res.total_len]);
    }
    assert_eq!(segments, total_segments);
    assert_eq!(joined.len(), plan.total_len());
    // Done means done.
    assert_eq!(
        plan.write_next(frame, vni(), &mut out, max_segments),
        Ok(None)
    );
    joined
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

/// Ethernet + IP + UDP with `payload`, as a TAP hands a USO superframe over: NEEDS_CSUM with
/// the pseudo-header sum of the whole datagram in the checksum field, GSO_UDP_L4.
fn tap_uso_superframe(v6: bool, payload: &[u8], gso_size: u16) -> (VirtioNetHdr, Vec<u8>) {
    let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
    let mut frame = Vec::new();
    if v6 {
        eth.ipv6(V6_A, V6_B, 64)
            .udp(40000, 5301)
            .write(&mut frame, payload)
            .unwrap();
    } else {
        eth.ipv4(V4_A, V4_B, 64)
            .udp(40000, 5301)
            .write(&mut frame, payload)
            .unwrap();
        frame[18..20].copy_from_slice(&BASE_ID.to_be_bytes());
        refresh_ipv4_checksum(&mut frame);
    }
    let l4 = l4_offset(v6);
    let udp_len = (frame.len() - l4) as u32;
    let pseudo = if v6 {
        pseudo_header_v6(V6_A.into(), V6_B.into(), 17, udp_len)
    } else {
        pseudo_header_v4(V4_A.into(), V4_B.into(), 17, udp_len)
    };
    frame[l4 + 6..l4 + 8].copy_from_slice(&pseudo.fold().to_be_bytes());
    let hdr = VirtioNetHdr {
        flags: VirtioNetHdr::FLAG_NEEDS_CSUM,
        gso_type: VirtioNetHdr::GSO_UDP_L4,
        hdr_len: 7, // deliberately wrong: must not be trusted
        gso_size,
        csum_start: l4 as u16,
        csum_offset: 6,
    };
    (hdr, frame)
}

/// Segments a USO superframe and checks every datagram with etherparse: both checksums, the
/// lengths, incrementing IPv4 IDs, `gso_size` payload bytes each but the last, in order.
fn uso_segment_and_check(v6: bool, payload: &[u8], gso_size: u16) -> usize {
    let (hdr, frame) = tap_uso_superframe(v6, payload, gso_size);
    let (res, out) = segment(&hdr, &frame, 1398);
    assert_eq!(
        res.segments,
        payload.len().div_ceil(gso_size as usize).max(1)
    );
    let mut joined = Vec::new();
    let frames = inner_frames(&res, &out);
    for (i, f) in frames.iter().enumerate() {
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let Some(TransportSlice::Udp(udp)) = &p.transport else {
            panic!("not UDP")
        };
        let expected = match p.net.as_ref().unwrap() {
            NetSlice::Ipv4(ip) => {
                let h = ip.header();
                assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
                assert_eq!(h.total_len() as usize, f.len() - 14);
                assert_eq!(h.identification(), BASE_ID.wrapping_add(i as u16));
                udp.to_header()
                    .calc_checksum_ipv4_raw(h.source(), h.destination(), udp.payload())
                    .unwrap()
            }
            NetSlice::Ipv6(ip) => {
                let h = ip.header();
                assert_eq!(h.payload_length() as usize, f.len() - 54);
                udp.to_header()
                    .calc_checksum_ipv6_raw(h.source(), h.destination(), udp.payload())
                    .unwrap()
            }
            NetSlice::Arp(_) => panic!("arp"),
        };
        assert_eq!(udp.checksum(), expected, "UDP checksum of datagram {i}");
        assert_eq!(udp.length() as usize, 8 + udp.payload().len());
        if i + 1 < frames.len() {
            assert_eq!(udp.payload().len(), gso_size as usize);
        }
        joined.extend_from_slice(udp.payload());
    }
    assert_eq!(joined, payload);
    res.segments
}

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

/// The coalescer's one-comparison fast path must decide exactly like the full checks.
fn assert_fast_path_agrees(frames: &[Vec<u8>]) {
    let mut fast = Coalescer::default();
    let mut full = Coalescer::default();
    full.set_fast_path(false);
    let a = coalesce_all(&mut fast, frames);
    let b = coalesce_all(&mut full, frames);
    assert_eq!(a, b);
    assert_eq!(fast.stats(), full.stats());
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

#[test]
fn fused_checksum_agrees_with_reference_on_segments() {
    // Odd MSS: chunks start at odd payload offsets; each segment must still verify.
    let payload = payload_of(10_001, 77);
    segment_and_check(Spec::v4(), &payload, 1448, 1001);
    segment_and_check(Spec::v6(), &payload, 1447, 1500);
    let _ = Sum::new();
}
