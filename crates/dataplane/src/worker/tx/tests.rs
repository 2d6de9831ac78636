//! The planning rules of [`super`], without root: frames in, plans and counted drops out.

use std::net::IpAddr;

use vxnet_encap::{MacAddr, Vni};

use vxnet_encap::outer::OuterPolicy;

use super::super::fixtures::{self, PORT};
use super::super::source_ports::SourcePortConfig;
use super::*;
use crate::tuning::SourcePortRange;

const LOCAL: &str = "10.0.0.1";
const PEERS: [&str; 2] = ["10.0.0.2", "10.0.0.3"];
const MTU: u32 = 1450;
const SENDER: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const KNOWN: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

fn forwarder() -> Forwarder {
    fixtures::forwarder(LOCAL, &PEERS, MTU)
}

/// A plan over the default srcport range (nothing is bound: planning only picks slots).
fn tx_plan(fwd: &Forwarder, vnet_hdr: bool) -> TxPlan {
    let pool = SourcePorts::new(SourcePortConfig {
        local: LOCAL.parse().unwrap(),
        range: SourcePortRange::default(),
        listen_port: PORT,
        policy: OuterPolicy::default(),
        cap: 64,
        send_buffer: 0,
        fallback_mtu: 1500,
        min_pmtu: 1280,
    });
    TxPlan::new(fwd, vnet_hdr, Arc::new(pool), Instant::now())
}

fn drops(forwarder: &Forwarder, reason: DropReason) -> u64 {
    forwarder.networks()[0].drops.get(reason)
}

/// An Ethernet frame to `dst` carrying IPv4/TCP with `payload` bytes.
fn tcp_frame(dst: [u8; 6], payload: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&SENDER);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 20 + payload) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[10, 1, 0, 1, 10, 1, 0, 2]);
    f.extend_from_slice(&[0x30, 0x39, 0x13, 0x89, 0, 0, 0, 1, 0, 0, 0, 0]);
    f.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend((0..payload).map(|i| i as u8));
    f
}

fn read_frame(tx: &mut TxPlan, frame: &[u8]) -> usize {
    tx.frame_buf().unwrap()[..frame.len()].copy_from_slice(frame);
    frame.len()
}

/// Puts `frame` behind a TSO virtio-net header (gso_size `mss`) into the raw buffer.
fn read_superframe(tx: &mut TxPlan, frame: &[u8], mss: u16) -> usize {
    let hdr = VirtioNetHdr {
        flags: VirtioNetHdr::FLAG_NEEDS_CSUM,
        gso_type: VirtioNetHdr::GSO_TCPV4,
        hdr_len: 54,
        gso_size: mss,
        csum_start: 34,
        csum_offset: 16,
    };
    let raw = tx.raw_buf();
    raw[..VIRTIO_NET_HDR_LEN].copy_from_slice(&hdr.to_bytes());
    raw[VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + frame.len()].copy_from_slice(frame);
    VIRTIO_NET_HDR_LEN + frame.len()
}

fn vxlan() -> Encapsulation {
    Encapsulation::vxlan(Vni::new(42).unwrap())
}

#[test]
fn a_broadcast_is_wrapped_in_place_and_flooded() {
    let fwd = forwarder();
    let mut tx = tx_plan(&fwd, false);
    let frame = tcp_frame([0xff; 6], 100);
    let len = read_frame(&mut tx, &frame);
    assert!(tx.plan_frame(&fwd, 0, &vxlan(), len));
    let [planned] = *tx.planned() else {
        panic!("one send planned: {:?}", tx.planned());
    };
    assert_eq!(planned.dest, None, "flooded");
    assert_eq!(
        (planned.buf, planned.start, planned.end),
        (0, 0, HEADROOM + frame.len())
    );
    assert_eq!((planned.segments, planned.segment_size), (1, None));
    assert!(planned.socket < SourcePortRange::default().len() * 2);
    let (bufs, _) = tx.parts();
    let wrapped = &bufs[0][planned.start..planned.end];
    assert_eq!(
        wrapped[..8],
        [0x08, 0, 0, 0, 0, 0, 42, 0],
        "VXLAN header, VNI 42"
    );
    assert_eq!(&wrapped[8..], &frame[..]);
    assert_eq!(fwd.networks()[0].events.flooded.load(Ordering::Relaxed), 1);
}

#[test]
fn a_known_destination_goes_to_its_vtep_from_the_flows_port() {
    let fwd = forwarder();
    let vtep: IpAddr = PEERS[1].parse().unwrap();
    fwd.networks()[0]
        .fdb
        .add_static(MacAddr(KNOWN), vtep)
        .unwrap();
    let mut tx = tx_plan(&fwd, false);
    let frame = tcp_frame(KNOWN, 10);
    for _ in 0..2 {
        let len = read_frame(&mut tx, &frame);
        assert!(tx.plan_frame(&fwd, 0, &vxlan(), len));
    }
    let [first, second] = *tx.planned() else {
        panic!("two sends planned: {:?}", tx.planned());
    };
    assert_eq!(first.dest, Some(SocketAddr::new(vtep, PORT)));
    assert_eq!((first.buf, second.buf), (0, 1), "one buffer per frame");
    assert_eq!(
        first.socket, second.socket,
        "one flow keeps its source port"
    );
    assert_eq!(
        first.socket,
        tx.source_ports.slot_for(flow_hash(&frame), first.outer.df)
    );
}

#[test]
fn drops_are_counted_and_plan_nothing() {
    let fwd = forwarder();
    let mut tx = tx_plan(&fwd, false);
    let runt = [0xffu8; 13];
    let len = read_frame(&mut tx, &runt);
    assert!(!tx.plan_frame(&fwd, 0, &vxlan(), len));
    let oversize = tcp_frame([0xff; 6], MTU as usize);
    let len = read_frame(&mut tx, &oversize);
    assert!(!tx.plan_frame(&fwd, 0, &vxlan(), len));
    assert!(tx.planned().is_empty());
    assert_eq!(drops(&fwd, DropReason::Runt), 1);
    assert_eq!(drops(&fwd, DropReason::Oversize), 1);
    // No buffer was used up by the drops.
    let len = read_frame(&mut tx, &tcp_frame([0xff; 6], 10));
    assert!(tx.plan_frame(&fwd, 0, &vxlan(), len));
    assert_eq!(tx.planned()[0].buf, 0);
}

#[test]
fn a_superframe_is_cut_into_gso_runs_at_the_mss() {
    let fwd = forwarder();
    let mut tx = tx_plan(&fwd, true);
    let mss = (MTU as usize - IPV4_TCP_HEADERS) as u16;
    let frame = tcp_frame([0xff; 6], 10 * mss as usize + 7);
    let len = read_superframe(&mut tx, &frame, mss);
    assert!(tx.plan_offloaded(&fwd, 0, len, true, |_, _| panic!("no flush")));
    let planned = tx.planned();
    let segments: usize = planned.iter().map(|p| p.segments).sum();
    assert_eq!(segments, 11, "ten full segments and a short one");
    assert!(planned.iter().any(|p| p.segments > 1), "{planned:?}");
    for p in planned.iter().filter(|p| p.segments > 1) {
        let size = p.segment_size.expect("a run has a segment size") as usize;
        assert_eq!(size, VXLAN_HEADER_LEN + 54 + mss as usize);
        assert_eq!((p.end - p.start).div_ceil(size), p.segments);
    }
    let events = &fwd.networks()[0].events;
    assert_eq!(events.tso_superframes.load(Ordering::Relaxed), 1);
    assert_eq!(events.tso_segments.load(Ordering::Relaxed), 11);
    assert!(events.gso_batches.load(Ordering::Relaxed) >= 1);
}

#[test]
fn without_gso_every_segment_is_its_own_send() {
    let fwd = forwarder();
    let mut tx = tx_plan(&fwd, true);
    let mss = (MTU as usize - IPV4_TCP_HEADERS) as u16;
    let frame = tcp_frame([0xff; 6], 5 * mss as usize);
    let len = read_superframe(&mut tx, &frame, mss);
    assert!(tx.plan_offloaded(&fwd, 0, len, false, |_, _| panic!("no flush")));
    let planned = tx.planned();
    assert_eq!(planned.len(), 5);
    assert!(planned
        .iter()
        .all(|p| p.segments == 1 && p.segment_size.is_none()));
    assert_eq!(
        fwd.networks()[0].events.gso_batches.load(Ordering::Relaxed),
        0
    );
}

#[test]
fn a_superframe_that_outgrows_the_buffers_sends_the_plan_so_far() {
    let fwd = forwarder();
    let mut tx = tx_plan(&fwd, true);
    // 60 plain frames take 60 of the BATCH buffers ...
    let plain = tcp_frame([0xff; 6], 100);
    let none = VirtioNetHdr::from_bytes([0; VIRTIO_NET_HDR_LEN]);
    for _ in 0..60 {
        let raw = tx.raw_buf();
        raw[..VIRTIO_NET_HDR_LEN].copy_from_slice(&none.to_bytes());
        raw[VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + plain.len()].copy_from_slice(&plain);
        let len = VIRTIO_NET_HDR_LEN + plain.len();
        assert!(tx.plan_offloaded(&fwd, 0, len, true, |_, _| panic!("no flush yet")));
    }
    // ... and a superframe at MSS 64 (938 segments, MAX_CHUNK_SEGMENTS per buffer) needs 8.
    let frame = tcp_frame([0xff; 6], 60_000);
    let len = read_superframe(&mut tx, &frame, 64);
    let mut flushed = Vec::new();
    assert!(tx.plan_offloaded(&fwd, 0, len, true, |bufs, plan| {
        assert_eq!(bufs.len(), BATCH);
        flushed.push(plan.iter().map(|p| p.segments).sum::<usize>());
    }));
    let segments = 60_000usize.div_ceil(64);
    let first_part = (BATCH - 60) * MAX_CHUNK_SEGMENTS;
    assert_eq!(flushed, [60 + first_part]);
    let left: usize = tx.planned().iter().map(|p| p.segments).sum();
    assert_eq!(left, segments - first_part);
    assert_eq!(
        tx.planned()[0].buf,
        0,
        "planning went on from the first buffer"
    );
}

#[test]
fn a_bad_virtio_net_header_is_a_counted_drop() {
    let fwd = forwarder();
    let mut tx = tx_plan(&fwd, true);
    // Shorter than a virtio-net header.
    assert!(!tx.plan_offloaded(&fwd, 0, 4, true, |_, _| {}));
    assert_eq!(drops(&fwd, DropReason::Runt), 1);
    // A GSO type the segmenter does not know.
    let frame = tcp_frame([0xff; 6], 3000);
    let len = read_superframe(&mut tx, &frame, 1000);
    tx.raw_buf()[1] = 0x42;
    assert!(!tx.plan_offloaded(&fwd, 0, len, true, |_, _| {}));
    assert_eq!(drops(&fwd, DropReason::BadOffload), 1);
    assert!(tx.planned().is_empty());
}
