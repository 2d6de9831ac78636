//! A superframe the coalescers made from real segments, refused and cut back: every segment
//! comes out byte for byte as it went in. (No kernel this project runs on refuses these writes,
//! so the refusal is an error value here; what the cut writes is checked against the frames.)

use std::io::{self, IoSlice};

use etherparse::PacketBuilder;
use vxnet_encap::offload::{CoalesceConfig, Coalescer, Merge, Push, UdpCoalescer, ZERO_VNET_HDR};

use super::{refusal, write_segments, Refusal};

const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn payload(len: usize, salt: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + salt) as u8).collect()
}

/// Gives an IPv4 frame the ID `id` (the coalescers merge consecutive IDs only) and a correct
/// header checksum again.
fn set_ipv4_id(frame: &mut [u8], id: u16) {
    frame[18..20].copy_from_slice(&id.to_be_bytes());
    frame[24..26].fill(0);
    let sum = frame[14..34]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let folded = (folded & 0xffff) + (folded >> 16);
    frame[24..26].copy_from_slice(&(!(folded as u16)).to_be_bytes());
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
