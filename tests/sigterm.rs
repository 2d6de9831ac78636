//! Test 7 of issue 3: SIGTERM while a TCP transfer flows through the engine. It exits 0 within a
//! couple of seconds and removes its TAP and control socket; the other engine is unaffected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use vxnet_tests::{start_transfer, wait_for, Family, Lab, Vxnet};

/// Asserts a clean stop of `engine` (running in `ns`) within `limit`.
fn stops_cleanly(lab: &Lab, host: usize, engine: &mut Vxnet, limit: Duration) {
    let status = engine.proc.terminate(limit);
    let log = engine.proc.log_text();
    let status = status.unwrap_or_else(|| panic!("no exit within {limit:?} of SIGTERM:\n{log}"));
    assert!(
        status.success(),
        "exit status {status} after SIGTERM:\n{log}"
    );
    assert!(
        !lab.host(host).sh("ip link show vx42").status.success(),
        "TAP vx42 still exists after exit"
    );
    assert!(
        !engine.control.exists(),
        "control socket {} left behind",
        engine.control.display()
    );
}

#[test]
fn sigterm_mid_transfer_exits_cleanly() {
    let Some(lab) = Lab::lan("sigterm", 2, Family::V4) else {
        return;
    };
    let (h0, h1) = (lab.host(0).clone(), lab.host(1).clone());
    let mut engines: Vec<Vxnet> = [(0, &h0, &h1, "10.1.0.1"), (1, &h1, &h0, "10.1.0.2")]
        .into_iter()
        .map(|(i, me, other, addr)| {
            lab.vxnet(
                i,
                &format!("vx{i}"),
                &format!(
                    "--vni 42 --dev vx42 --local {} --remote {} --address {addr}/24",
                    me.underlay, other.underlay
                ),
            )
        })
        .collect();
    assert!(h0.ping("10.1.0.2", 2), "no overlay connectivity");

    // Far more than can pass before the SIGTERM: the transfer is certainly still running.
    let target: SocketAddr = "10.1.0.2:5002".parse().unwrap();
    let transfer = start_transfer("the long transfer", &h0, &h1, target, 1 << 40);
    let flowing = wait_for(Duration::from_secs(10), || {
        engines[1].network(42).traffic.rx_bytes > 20 << 20
    });
    assert!(flowing, "the transfer never got going");

    // The sending side first: its workers are busy reading the TAP and sending.
    stops_cleanly(&lab, 0, &mut engines[0], Duration::from_secs(3));
    // The other engine kept running and still answers.
    assert!(matches!(engines[1].proc.child.try_wait(), Ok(None)));
    assert!(engines[1].ctl("stats").status.success());
    stops_cleanly(&lab, 1, &mut engines[1], Duration::from_secs(3));

    // The transfer threads are blocked on a dead path (they time out on their own); the lab's
    // drop removes the namespaces under them.
    drop(transfer);
}
