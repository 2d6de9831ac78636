//! A kernel vxlan peer on the same machine with its offloads as shipped (no `ethtool tx off`).
//! Its veth never completes what the kernel left for a NIC, so vxnet's socket gets:
//! - small inner TCP segments (ACKs, the tail of a write) whose checksum is only the
//!   pseudo-header sum: vxnet completes them (`partial_checksums`);
//! - whole 64 KB inner TCP superframes in one VXLAN datagram (UDP-tunnel GSO): vxnet writes them
//!   to the TAP unsplit with a TSO virtio-net header, or cuts them when the TAP has none
//!   (`tunnel_superframes`).
//!
//! Without either, TCP between the two stalls; here every byte is checked both ways.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use vxnet_tests::*;

const MB: u64 = 1 << 20;

/// Host 0 runs vxnet (with `extra` flags), host 1 a kernel vxlan device with its offloads as
/// shipped, VNI 42; both ends' addresses settled and pinged. Returns vxnet's overlay address and
/// the kernel's.
fn kernel_peer(
    test: &str,
    family: Family,
    extra: &str,
) -> Option<(Lab, Vxnet, &'static str, &'static str)> {
    let lab = Lab::lan(test, 2, family)?;
    let (a, b) = (lab.host(0).underlay, lab.host(1).underlay);
    let (vx_ip, kernel_ip, prefix) = match family {
        Family::V4 => ("10.1.0.1", "10.1.0.2", 24),
        Family::V6 => ("fd01::1", "fd01::2", 64),
    };
    // The kernel peer exactly as it ships: TX checksum offload and TSO stay on.
    lab.host(1).must(&format!(
        "ip link add vx0 type vxlan id 42 dstport 4789 local {b} remote {a} dev eth0 && \
         ip addr add {kernel_ip}/{prefix} dev vx0 nodad && ip link set vx0 up"
    ));
    let vx = lab.vxnet(
        0,
        "a",
        &format!("--vni 42 --dev vx42 --local {a} --remote {b} --address {vx_ip}/{prefix} {extra}"),
    );
    if matches!(family, Family::V6) {
        // vxnet's address goes through duplicate address detection; until it ends, binding the
        // receiver to it fails (EADDRNOTAVAIL), which the loaded parallel suite once hit.
        let settled = wait_for(Duration::from_secs(5), || {
            lab.host(0)
                .sh("ip -6 addr show dev vx42 tentative")
                .stdout
                .is_empty()
        });
        assert!(settled, "{vx_ip} stayed tentative (DAD) for 5 s");
    }
    assert!(lab.host(0).ping(kernel_ip, 2), "vxnet → kernel ping");
    Some((lab, vx, vx_ip, kernel_ip))
}

fn kernel_peer_with_default_offloads(test: &str, family: Family, extra: &str) {
    let Some((lab, vx, vx_ip, kernel_ip)) = kernel_peer(test, family, extra) else {
        return;
    };
    let to_vxnet = SocketAddr::new(vx_ip.parse().unwrap(), 5001);
    transfer_checked(
        "kernel → vxnet",
        lab.host(1),
        lab.host(0),
        to_vxnet,
        32 * MB,
    );
    let superframes = vx.network(42).tunnel_superframes;
    let segments = vx.network(42).tunnel_segments;
    assert!(
        superframes > 0,
        "no UDP-tunnel GSO superframe seen from the kernel peer (are its offloads off?)"
    );
    assert!(
        segments > superframes,
        "{superframes} tunnel superframes stand for only {segments} segments"
    );

    let to_kernel = SocketAddr::new(kernel_ip.parse().unwrap(), 5002);
    transfer_checked(
        "vxnet → kernel",
        lab.host(0),
        lab.host(1),
        to_kernel,
        32 * MB,
    );

    assert!(
        vx.network(42).partial_checksums > 0,
        "the kernel peer's partial checksums (its ACKs) were not seen"
    );
    for reason in [
        DropReason::TapWrite,
        DropReason::BadOffload,
        DropReason::Oversize,
        DropReason::Truncated,
    ] {
        assert_eq!(vx.drops(Some(42), reason), 0, "{reason} drops");
    }
}

#[test]
fn kernel_peer_with_default_offloads_ipv4() {
    kernel_peer_with_default_offloads("partial_csum_v4", Family::V4, "");
}

#[test]
fn kernel_peer_with_default_offloads_ipv4_without_vxnet_offloads() {
    kernel_peer_with_default_offloads("partial_csum_v4_nooff", Family::V4, "--no-offloads");
}

#[test]
fn kernel_peer_with_default_offloads_ipv6() {
    kernel_peer_with_default_offloads("partial_csum_v6", Family::V6, "");
}

/// The kernel peer's datagrams that carry TCP segments sent on this host reach vxnet's socket
/// in `sk_buff`s the kernel's hardened usercopy will not copy from: when the engine asked for
/// the drop count on every datagram (SO_RXQ_OVFL), once its socket had overflowed each such
/// read hit a kernel BUG (`mm/usercopy.c`) that killed the worker thread, and TCP from the
/// kernel side stopped for good (`vxnet bench --udp 64`, after the flood).
#[test]
fn tcp_from_a_kernel_peer_after_a_socket_overflow() {
    // One worker, so the socket that overflows is the one the TCP flow reaches.
    let Some((lab, vx, vx_ip, _)) = kernel_peer("overflow_kernel_tcp", Family::V4, "--threads 1")
    else {
        return;
    };
    let sender = in_netns(&lab.host(1).ns, || {
        std::net::UdpSocket::bind("0.0.0.0:0").unwrap()
    })
    .join()
    .unwrap();
    let target = SocketAddr::new(lab.host(0).underlay, 4789);
    // With the engine stopped its 16 MB receive buffer fills and the rest is dropped.
    must(&format!("kill -STOP {}", vx.proc.pid()));
    for _ in 0..30_000 {
        sender.send_to(&[0u8; 1000], target).unwrap();
    }
    must(&format!("kill -CONT {}", vx.proc.pid()));
    assert!(
        wait_for(Duration::from_secs(10), || {
            vx.drops(None, DropReason::SocketOverflow) > 1000
        }),
        "the overflow was not counted"
    );
    let to_vxnet = SocketAddr::new(vx_ip.parse().unwrap(), 5003);
    transfer_checked(
        "kernel → vxnet after an overflow",
        lab.host(1),
        lab.host(0),
        to_vxnet,
        16 * MB,
    );
    assert!(lab.host(1).ping(vx_ip, 2), "kernel → vxnet ping afterwards");
}
