//! A superframe the coalescers made from real segments, refused and cut back: every segment
//! comes out byte for byte as it went in. (No kernel this project runs on refuses these writes,
//! so the refusal is an error value here; what the cut writes is checked against the frames.)

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::sync::atomic::Ordering::Relaxed;

use etherparse::PacketBuilder;
use vxnet_encap::offload::{
    CoalesceConfig, Coalescer, Merge, Push, UdpCoalescer, VirtioNetHdr, VIRTIO_NET_HDR_LEN,
    ZERO_VNET_HDR,
};
use vxnet_encap::wire::Ipv4Packet;

use super::{refusal, write_segments, Refusal};
use crate::worker::fixtures;
use crate::worker::tap_sink::{TapSink, TapWrite};

const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn payload(len: usize, salt: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + salt) as u8).collect()
}

/// Gives an IPv4 frame the ID `id` (the coalescers merge consecutive IDs only) and a correct
/// header checksum again.
fn set_ipv4_id(frame: &mut [u8], id: u16) {
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..34]);
    ip.set_ident(id);
    ip.fill_checksum();
}

/// Segments of one TCP flow over IPv4 (or IPv6) with these payload sizes, PSH on the last.
fn tcp_flow(sizes: &[usize], v6: bool) -> Vec<Vec<u8>> {
    let mut seq = 1_000u32;
    sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
            let ip = if v6 {
                eth.ipv6([0xfd; 16], [0xfe; 16], 64)
            } else {
                eth.ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64)
            };
            let tcp = ip.tcp(40000, 5201, seq, 1000).ack(9);
            let tcp = if i + 1 == sizes.len() { tcp.psh() } else { tcp };
            let mut frame = Vec::new();
            tcp.write(&mut frame, &payload(len, i)).unwrap();
            if !v6 {
                set_ipv4_id(&mut frame, 100 + i as u16);
            }
            seq += len as u32;
            frame
        })
        .collect()
}

/// Datagrams of one UDP flow over IPv4 with these payload sizes.
fn udp_flow(sizes: &[usize]) -> Vec<Vec<u8>> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let mut frame = Vec::new();
            PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
                .ipv4([10, 1, 0, 1], [10, 1, 0, 2], 64)
                .udp(5000, 6000)
                .write(&mut frame, &payload(len, i))
                .unwrap();
            set_ipv4_id(&mut frame, 200 + i as u16);
            frame
        })
        .collect()
}

/// The one superframe a coalescer makes of `frames` (every one must be taken).
fn coalesced(merge: &mut impl Merge, frames: &[Vec<u8>]) -> Vec<u8> {
    for frame in frames {
        assert_eq!(merge.push(frame), Push::Absorbed);
    }
    merge.finish().expect("a superframe").to_vec()
}

/// Cuts `superframe` back and returns every write it made (virtio-net header included).
fn cut(superframe: &[u8]) -> Vec<Vec<u8>> {
    let mut writes = Vec::new();
    let mut scratch = Vec::new();
    let segments = write_segments(superframe, &mut scratch, |parts: &[IoSlice<'_>]| {
        writes.push(parts.iter().flat_map(|p| p.iter().copied()).collect())
    })
    .expect("a superframe the coalescer made cuts");
    assert_eq!(segments, writes.len());
    writes
}

fn behind_zero_header(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .map(|f| [&ZERO_VNET_HDR[..], f].concat())
        .collect()
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

#[test]
fn a_refused_tcp_superframe_with_a_short_tail_comes_back_as_its_segments() {
    for v6 in [false, true] {
        let frames = tcp_flow(&[1000, 1000, 1000, 1000, 300], v6);
        let superframe = coalesced(&mut Coalescer::new(CoalesceConfig::default()), &frames);
        assert_eq!(refusal(&superframe, &einval()), Some(Refusal::ShortTail));
        assert_eq!(cut(&superframe), behind_zero_header(&frames), "v6 {v6}");
    }
}

#[test]
fn a_refused_superframe_of_equal_segments_stops_that_transport() {
    let frames = tcp_flow(&[1200; 6], false);
    let superframe = coalesced(&mut Coalescer::new(CoalesceConfig::default()), &frames);
    assert_eq!(
        refusal(&superframe, &einval()),
        Some(Refusal::Gso { udp: false })
    );
    assert_eq!(cut(&superframe), behind_zero_header(&frames));

    let datagrams = udp_flow(&[64; 40]);
    let superframe = coalesced(
        &mut UdpCoalescer::new(CoalesceConfig::default()),
        &datagrams,
    );
    assert_eq!(
        refusal(&superframe, &einval()),
        Some(Refusal::Gso { udp: true })
    );
    assert_eq!(cut(&superframe), behind_zero_header(&datagrams));
}

#[test]
fn a_refused_udp_superframe_with_a_short_tail_comes_back_as_its_datagrams() {
    let datagrams = udp_flow(&[500, 500, 500, 17]);
    let superframe = coalesced(
        &mut UdpCoalescer::new(CoalesceConfig::default()),
        &datagrams,
    );
    assert_eq!(refusal(&superframe, &einval()), Some(Refusal::ShortTail));
    assert_eq!(cut(&superframe), behind_zero_header(&datagrams));
}

#[test]
fn only_einval_for_a_superframe_is_a_refusal() {
    let frames = tcp_flow(&[1000, 1000, 300], false);
    let superframe = coalesced(&mut Coalescer::new(CoalesceConfig::default()), &frames);
    // A full queue or a TAP gone is no verdict on the header.
    for errno in [libc::EAGAIN, libc::ENOBUFS, libc::EIO, libc::EBADFD] {
        let error = io::Error::from_raw_os_error(errno);
        assert_eq!(refusal(&superframe, &error), None, "errno {errno}");
    }
    // A lone segment (all-zero header) refused is not the coalescer's doing.
    let lone = behind_zero_header(&frames[..1]).remove(0);
    assert_eq!(refusal(&lone, &einval()), None);
    assert_eq!(refusal(&[0u8; 3], &einval()), None);
}

#[test]
fn more_segments_than_one_scratch_chunk_all_come_back_in_order() {
    // 46 datagrams of 1400 bytes through a scratch buffer that holds three at a time: the cut
    // writes chunk after chunk.
    let datagrams = udp_flow(&[1400; 46]);
    let superframe = coalesced(
        &mut UdpCoalescer::new(CoalesceConfig::default()),
        &datagrams,
    );
    let mut writes = Vec::new();
    let mut scratch = vec![0u8; 3 * 1500];
    write_segments(&superframe, &mut scratch, |parts: &[IoSlice<'_>]| {
        writes.push(
            parts
                .iter()
                .flat_map(|p| p.iter().copied())
                .collect::<Vec<u8>>(),
        )
    })
    .unwrap();
    assert_eq!(writes, behind_zero_header(&datagrams));
}

/// A TAP of a kernel like Linux 6.6.44: a GSO write whose last segment is shorter than
/// `gso_size` is refused with EINVAL; every write it takes is recorded.
#[derive(Default)]
struct ShortTailRefusingTap {
    taken: RefCell<Vec<Vec<u8>>>,
    refused: RefCell<usize>,
}

impl TapWrite for ShortTailRefusingTap {
    fn writev(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        let write: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let hdr = VirtioNetHdr::parse(&write).expect("a virtio-net header");
        let payload = write.len() - VIRTIO_NET_HDR_LEN - usize::from(hdr.hdr_len);
        if hdr.gso_size > 0 && !payload.is_multiple_of(usize::from(hdr.gso_size)) {
            *self.refused.borrow_mut() += 1;
            return Err(einval());
        }
        let len = write.len();
        self.taken.borrow_mut().push(write);
        Ok(len)
    }
}

impl ShortTailRefusingTap {
    /// Every frame the TAP took, superframes cut into their segments, in the order written.
    fn frames(&self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        for write in self.taken.borrow().iter() {
            let hdr = VirtioNetHdr::parse(write).unwrap();
            if hdr.gso_kind() == VirtioNetHdr::GSO_NONE {
                frames.push(write[VIRTIO_NET_HDR_LEN..].to_vec());
            } else {
                frames.extend(
                    cut(write)
                        .into_iter()
                        .map(|f| f[VIRTIO_NET_HDR_LEN..].to_vec()),
                );
            }
        }
        frames
    }
}

#[test]
fn a_tap_that_refuses_short_tails_gets_every_frame_once_in_order() {
    let forwarder = fixtures::forwarder("10.0.0.1", &[], 1500);
    let tap = ShortTailRefusingTap::default();
    let taps = [tap];
    let mut sink = TapSink::new(&[true], true);
    // Two bursts of one TCP flow, each ending mid-segment, then one of a UDP flow.
    let tcp = tcp_flow(&[1000, 1000, 1000, 300, 1000, 1000, 1000, 300], false);
    let udp = udp_flow(&[500, 500, 500, 17]);
    for frame in tcp.iter().chain(&udp) {
        sink.deliver(&forwarder, &taps, 0, &mut frame.clone());
    }
    sink.flush_all(&forwarder, &taps);

    // The first short tail was refused and came back cut; none was made after it.
    assert_eq!(*taps[0].refused.borrow(), 1);
    let events = &forwarder.networks()[0].events;
    assert_eq!(events.tap_refused_short_tail.load(Relaxed), 1);
    assert_eq!(events.tap_refused_gso.load(Relaxed), 0);
    // Superframes were still made, of equal segments.
    assert!(events.coalesced_superframes.load(Relaxed) >= 1);
    assert!(events.udp_coalesced_superframes.load(Relaxed) >= 1);
    // Each flow's frames arrived once each, in order, byte for byte.
    let got = taps[0].frames();
    let of_flow = |flow: &[Vec<u8>]| -> Vec<Vec<u8>> {
        got.iter().filter(|f| flow.contains(f)).cloned().collect()
    };
    assert_eq!(got.len(), tcp.len() + udp.len());
    assert_eq!(of_flow(&tcp), tcp);
    assert_eq!(of_flow(&udp), udp);
}
