//! Proof that the forwarding core allocates nothing per packet in steady state: a counting global
//! allocator, armed only on this test's thread while it forwards thousands of frames each way.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A counting global allocator is `unsafe impl GlobalAlloc` by definition.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use vxnet_dataplane::forward::{TapAction, WireAction, WireRun};
use vxnet_encap::{encapsulate, Encapsulation, MacAddr, Vni};

struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_forwarding_allocates_nothing() {
    let net = network(42, &["10.0.0.2", "10.0.0.3"]);
    let fwd = forwarder(vec![net], false);
    let peers = [from("10.0.0.2"), from("10.0.0.3")];
    let macs: Vec<MacAddr> = (10..40).map(mac).collect();
    let to_tap: Vec<Vec<u8>> = macs
        .iter()
        .map(|m| vxlan(42, &frame(mac(1), *m, 1000)))
        .collect();
    let from_tap: Vec<Vec<u8>> = macs.iter().map(|m| frame(*m, mac(1), 1000)).collect();
    let mut out = vec![0u8; 8 + 1000];
    let encapsulation = Encapsulation::vxlan(Vni::new(42).unwrap());

    // Warm up: learn every MAC once (insertions allocate, as they may).
    for (i, p) in to_tap.iter().enumerate() {
        assert!(matches!(
            fwd.from_wire(0, peers[i % 2], p),
            WireAction::Deliver { .. }
        ));
    }

    let broadcast = frame(MacAddr::BROADCAST, mac(1), 60);
    let mut run = WireRun::default();
    ARMED.with(|a| a.set(true));
    for round in 0..200u64 {
        for (i, p) in to_tap.iter().enumerate() {
            let action = fwd.from_wire(round, peers[i % 2], p);
            assert!(matches!(action, WireAction::Deliver { .. }));
        }
        // The worker's path: runs of repeated datagrams (a UDP GRO read), counted once per run.
        for (i, p) in to_tap.iter().enumerate() {
            for _ in 0..3 {
                let action = fwd.from_wire_run(round, peers[i % 2], p, &mut run);
                assert!(matches!(action, WireAction::Deliver { .. }));
            }
        }
        fwd.end_run(&mut run);
        for f in &from_tap {
            let action = fwd.from_tap(0, f);
            assert!(matches!(action, TapAction::Unicast(_)));
            out[8..].copy_from_slice(f);
            encapsulate(&mut out, 8, &encapsulation).unwrap();
            fwd.count_sent(0, peers[0].ip(), 1, out.len());
        }
        assert_eq!(fwd.from_tap(0, &broadcast), TapAction::Flood);
    }
    ARMED.with(|a| a.set(false));
    let allocations = ALLOCATIONS.with(Cell::get);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 30,200 forwarded frames"
    );
}
