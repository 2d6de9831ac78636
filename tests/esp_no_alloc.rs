//! ESP seals and opens in the caller's buffers: a counting global allocator, armed only while the
//! packet loop runs, sees no allocation over thousands of packets (buffer and key setup before it
//! may allocate; the packet path, including establishing the receiver's SA, may not).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A counting global allocator is `unsafe impl GlobalAlloc` by definition.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use vxnet_encap::esp::transport::{seal_vxlan, VxlanPorts, HEADROOM};
use vxnet_encap::esp::{
    classify, establish, KeyEpoch, NetworkKey, OpenSa, SaId, SealSa, Spi, UdpEncapKind,
    MAX_TAILROOM,
};
use vxnet_encap::{decapsulate, Vni};

/// Counts the test thread's allocations while armed. The switch is per thread: the test
/// harness's own threads (its output and timing) may allocate while the test runs, and are not
/// the packet path.
struct CountWhileArmed;

thread_local! {
    // `const`: reading it never allocates, which an allocator's own check must not.
    static ARMED: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; counting has no effect on it.
unsafe impl GlobalAlloc for CountWhileArmed {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let armed = ARMED.try_with(Cell::get).unwrap_or(false);
        ALLOCATIONS.fetch_add(u64::from(armed), Relaxed);
        // SAFETY: the caller upholds GlobalAlloc::alloc's contract, which System's shares.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System.alloc above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountWhileArmed = CountWhileArmed;

#[test]
fn sealing_and_opening_allocate_nothing() {
    let key = NetworkKey::from_bytes([3; 32]);
    let id = SaId {
        epoch: KeyEpoch(0),
        spi: Spi::for_epoch(KeyEpoch(0), 0xFEED),
        src: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)),
        dst: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 2)),
    };
    let mut tx = SealSa::new(&key, id, 1 << 40);
    let vni = Vni::new(7).unwrap();
    let ports = VxlanPorts {
        src: 40000,
        dst: 4789,
    };
    let mut buf = vec![0u8; HEADROOM + 9000 + MAX_TAILROOM];
    let mut scratch = vec![0u8; buf.len()];
    let mut rx: Option<OpenSa> = None;
    let mut opened = 0u64;

    ARMED.with(|a| a.set(true));
    for i in 0..3000usize {
        let len = [60, 1400, 9000][i % 3];
        let frame = HEADROOM..HEADROOM + len;
        buf[frame.clone()].fill(i as u8);
        let sealed = seal_vxlan(&mut tx, &mut buf, frame, vni, ports).unwrap();
        let packet = &mut buf[sealed.packet];
        assert_eq!(classify(packet), Ok(UdpEncapKind::Esp));
        if rx.is_none() {
            rx = Some(
                establish(
                    packet,
                    [(KeyEpoch(0), &key)],
                    [id.src],
                    id.dst,
                    &mut scratch,
                )
                .unwrap(),
            );
        }
        let sa = rx.as_mut().unwrap();
        let payload = sa.open_in_place(packet).unwrap().payload;
        let decap = decapsulate(&packet[payload][8..]).unwrap();
        assert_eq!(decap.inner.len(), len);
        opened += 1;
    }
    ARMED.with(|a| a.set(false));
    assert_eq!(opened, 3000);
    assert_eq!(
        ALLOCATIONS.load(Relaxed),
        0,
        "allocations on the packet path"
    );
}
