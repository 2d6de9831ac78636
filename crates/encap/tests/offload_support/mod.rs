//! What the offload tests share: frames built with etherparse, TAP superframes, segmentation
//! checked against etherparse (an independent decoder), coalescing helpers.
// Each test file uses its own part of this (and of the imports it passes on).
#![allow(dead_code, unused_imports)]

pub use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TcpHeader, TransportSlice};
pub use vxnet_encap::checksum::{self, pseudo_header_v4, pseudo_header_v6, Sum};
pub use vxnet_encap::offload::{
    complete_checksum, prepare_for_wire, required_output_len, CoalesceConfig, Coalescer, Emit,
    Merge, Push, Reject, Segmented, UdpCoalescer, VirtioNetHdr, WirePlan, MAX_GSO_SEGMENTS,
    MAX_UDP_GSO_PAYLOAD, VIRTIO_NET_HDR_LEN,
};
pub use vxnet_encap::{Layer, OffloadError, Vni};

pub const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const V4_A: [u8; 4] = [10, 0, 0, 1];
pub const V4_B: [u8; 4] = [10, 0, 0, 2];
pub const V6_A: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const V6_B: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const BASE_SEQ: u32 = 0xFFFF_F000; // wraps inside a 64 KB superframe
pub const BASE_ID: u16 = 0xFFF0; // wraps too
pub const TIMESTAMPS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9];

pub fn vni() -> Vni {
    Vni::new(0x123456).unwrap()
}

#[derive(Clone, Copy)]
pub struct Spec {
    pub v6: bool,
    pub seq: u32,
    pub sport: u16,
    pub psh: bool,
    pub fin: bool,
    pub cwr: bool,
    pub ts: bool,
}

impl Spec {
    pub fn v4() -> Self {
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
    pub fn v6() -> Self {
        Spec {
            v6: true,
            ..Self::v4()
        }
    }
}

/// An Ethernet + IP + TCP frame with valid checksums; IPv4 gets DF and ID `BASE_ID`.
pub fn tcp_frame(spec: Spec, payload: &[u8]) -> Vec<u8> {
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

pub fn refresh_ipv4_checksum(frame: &mut [u8]) {
    frame[24..26].fill(0);
    let c = checksum::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

pub fn payload_of(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

pub fn l4_offset(v6: bool) -> usize {
    if v6 {
        54
    } else {
        34
    }
}

/// What a TAP read returns: the TCP checksum field holds the pseudo-header sum (NEEDS_CSUM).
pub fn tap_superframe(spec: Spec, payload: &[u8], gso_size: u16) -> (VirtioNetHdr, Vec<u8>) {
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

pub fn segment(hdr: &VirtioNetHdr, frame: &[u8], mss: usize) -> (Segmented, Vec<u8>) {
    let need = required_output_len(hdr, frame, mss).unwrap();
    let mut out = vec![0u8; need];
    let res = prepare_for_wire(hdr, frame, vni(), mss, &mut out).unwrap();
    assert_eq!(res.total_len, need);
    (res, out)
}

/// The inner frames of a segmentation result, VXLAN header checked and stripped.
pub fn inner_frames<'a>(res: &Segmented, out: &'a [u8]) -> Vec<&'a [u8]> {
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

pub struct Decoded {
    pub seq: u32,
    pub fin: bool,
    pub psh: bool,
    pub cwr: bool,
    pub ip_id: Option<u16>,
    pub payload: Vec<u8>,
}

/// Decodes with etherparse and asserts both checksums.
pub fn decode_verified(frame: &[u8]) -> Decoded {
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
pub fn segment_and_check(spec: Spec, payload: &[u8], gso_size: u16, mss: usize) -> Vec<Vec<u8>> {
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

/// Runs `frames` through a coalescer: every TAP write, `true` for a coalescer write (header
/// included), `false` for a frame to write as-is.
pub fn coalesce_all(co: &mut impl Merge, frames: &[Vec<u8>]) -> Vec<(bool, Vec<u8>)> {
    let mut got = Vec::new();
    co.coalesce(frames.iter().map(Vec::as_slice), |e| match e {
        Emit::Write(b) => got.push((true, b.to_vec())),
        Emit::AsIs(b) => got.push((false, b.to_vec())),
    });
    got
}

/// Checks a coalesced write against the original superframe and returns its header.
pub fn check_superframe(write: &[u8], original: &[u8], v6: bool, gso_size: usize) -> VirtioNetHdr {
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

pub const SIZES: [usize; 9] = [1, 100, 1397, 1398, 1399, 2796, 2797, 44 * 1398, 62_000];

pub fn four_segments(spec: Spec) -> Vec<Vec<u8>> {
    segment_and_check(spec, &payload_of(4 * 1000, 7), 1000, 1000)
}

pub fn fix_tcp_checksum_v4(f: &mut [u8]) {
    f[34 + 16..34 + 18].fill(0);
    let sum =
        pseudo_header_v4(V4_A.into(), V4_B.into(), 6, (f.len() - 34) as u32).add_bytes(&f[34..]);
    f[34 + 16..34 + 18].copy_from_slice(&sum.finish().to_be_bytes());
}

/// Writes `frame` chunk by chunk through an `out_len`-byte buffer and returns the chunks
/// concatenated, checking each chunk's layout on the way.
pub fn write_in_chunks(
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

/// Ethernet + IP + UDP with `payload`, as a TAP hands a USO superframe over: NEEDS_CSUM with
/// the pseudo-header sum of the whole datagram in the checksum field, GSO_UDP_L4.
pub fn tap_uso_superframe(v6: bool, payload: &[u8], gso_size: u16) -> (VirtioNetHdr, Vec<u8>) {
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
pub fn uso_segment_and_check(v6: bool, payload: &[u8], gso_size: u16) -> usize {
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

/// The coalescer's one-comparison fast path must decide exactly like the full checks.
pub fn assert_fast_path_agrees(frames: &[Vec<u8>]) {
    let mut fast = Coalescer::default();
    let mut full = Coalescer::default();
    full.set_fast_path(false);
    let a = coalesce_all(&mut fast, frames);
    let b = coalesce_all(&mut full, frames);
    assert_eq!(a, b);
    assert_eq!(fast.stats(), full.stats());
}
pub mod udp;
