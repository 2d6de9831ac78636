//! vxnet against the Linux kernel's own vxlan driver: the reference peer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use vxnet_tests::*;

const MB: u64 = 1 << 20;

/// Host 0 runs vxnet (with `extra` flags), host 1 a kernel vxlan device; overlay 10.1.0.1 ↔
/// 10.1.0.2, VNI 42.
fn kernel_pair(test: &str, family: Family, extra: &str) -> Option<(Lab, Vxnet)> {
    let lab = Lab::lan(test, 2, family)?;
    let (a, b) = (lab.host(0).underlay, lab.host(1).underlay);
    // With TX checksum offload (and so TSO) off, the kernel puts on the veth what a NIC puts
    // on a wire: segmented datagrams, complete inner checksums. The same-host shortcuts it takes
    // with offloads on (partial checksums, whole superframes) are `interop_partial_checksum.rs`.
    lab.host(1).must("ethtool -K eth0 tx off >/dev/null");
    lab.host(1).must(&format!(
        "ip link add vx0 type vxlan id 42 dstport 4789 local {b} remote {a} dev eth0 && \
         ip addr add 10.1.0.2/24 dev vx0 && ip link set vx0 up"
    ));
    let vx = lab.vxnet(
        0,
        "a",
        &format!("--vni 42 --dev vx42 --local {a} --remote {b} --address 10.1.0.1/24 {extra}"),
    );
    Some((lab, vx))
}

/// Pings across the overlay of a [`kernel_pair`] both ways (the first also resolves ARP across
/// it); `over` says more of the underlay in a failure.
fn ping_both_ways(lab: &Lab, over: &str) {
    assert!(
        lab.host(0).ping("10.1.0.2", 3),
        "vxnet → kernel ping{over} failed"
    );
    assert!(
        lab.host(1).ping("10.1.0.1", 3),
        "kernel → vxnet ping{over} failed"
    );
}

#[test]
fn ipv4_ping_arp_bulk_tcp_and_wire_format_against_kernel_vxlan() {
    let test = "ipv4_kernel_interop";
    if !have_tool(test, "tcpdump") || !have_tool(test, "tshark") {
        return;
    }
    let Some((lab, vx)) = kernel_pair(test, Family::V4, "") else {
        return;
    };
    let dump = Capture::start(&lab, 1, "underlay", "eth0", 0, 6, "udp port 4789");

    ping_both_ways(&lab, "");

    // ARP resolved over the overlay: vxnet's host knows the kernel device's MAC.
    let kernel_mac = lab
        .host(1)
        .must("cat /sys/class/net/vx0/address")
        .trim()
        .to_string();
    let neigh = lab.host(0).must("ip neigh show 10.1.0.2 dev vx42");
    assert!(
        neigh.contains(&kernel_mac),
        "ARP entry {neigh:?} lacks {kernel_mac}"
    );
    // And vxnet learned that MAC behind the kernel VTEP.
    let fdb = vx.json("fdb show");
    let entries = fdb[0]["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["mac"] == kernel_mac.as_str() && e["dst"] == "10.0.0.2"),
        "fdb: {fdb}"
    );

    // 64 MB over TCP each way, every byte checked.
    for (from, to, dst) in [(0, 1, "10.1.0.2:5001"), (1, 0, "10.1.0.1:5002")] {
        let addr: SocketAddr = dst.parse().unwrap();
        let elapsed = transfer_checked(
            &format!("64 MB {from}→{to}"),
            lab.host(from),
            lab.host(to),
            addr,
            64 * MB,
        );
        eprintln!(
            "64 MB {from}→{to} in {elapsed:?}: {:.2} Gbit/s",
            (64 * MB * 8) as f64 / elapsed.as_secs_f64() / 1e9
        );
    }

    // The wire, as tshark decodes it: VXLAN, VNI 42, destination port 4789.
    let pcap = dump.finish();
    let fields = must(&format!(
        "tshark -r {} -T fields -e vxlan.vni -e udp.dstport -e vxlan.flags -e ip.src -e udp.srcport 2>/dev/null",
        pcap.display()
    ));
    let lines: Vec<&str> = fields.lines().collect();
    assert!(lines.len() >= 4, "too few packets captured: {fields:?}");
    for line in lines {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols[0], "42", "VNI in {line:?}");
        assert_eq!(cols[1], "4789", "port in {line:?}");
        assert_eq!(cols[2], "0x0800", "flags (I set, rest zero) in {line:?}");
        if cols[3] == "10.0.0.1" {
            // vxnet's packets: source port from the inner flow hash, in the dynamic range.
            let port: u16 = cols[4].parse().unwrap();
            assert!(
                (49152..=65535).contains(&port),
                "vxnet source port {port} in {line:?}"
            );
        }
    }
    assert_eq!(vx.drops(Some(42), DropReason::NotPeer), 0);
}

#[test]
fn ipv6_underlay_against_kernel_vxlan() {
    let Some((lab, vx)) = kernel_pair("ipv6_kernel_interop", Family::V6, "") else {
        return;
    };
    // MTU defaults to underlay − 70 over IPv6.
    assert_eq!(
        lab.host(0).must("cat /sys/class/net/vx42/mtu").trim(),
        "1430"
    );
    ping_both_ways(&lab, " over IPv6");
    let addr: SocketAddr = "10.1.0.2:5003".parse().unwrap();
    transfer_checked("16 MB 0→1", lab.host(0), lab.host(1), addr, 16 * MB);
    assert!(vx.peer(lab.host(1).underlay).rx_packets > 0);
}

/// The same interop with every offload off (`--no-offloads`): plain frames from the TAP, one
/// datagram per frame, no GRO. 16 MB each way, byte-checked, over IPv4 and IPv6 underlays.
fn no_offloads_against_kernel(test: &str, family: Family, ports: [u16; 2]) {
    let Some((lab, vx)) = kernel_pair(test, family, "--no-offloads") else {
        return;
    };
    assert_eq!(vx.stats().offloads, []);
    ping_both_ways(&lab, "");
    for ((from, to, ip), port) in [(0, 1, "10.1.0.2"), (1, 0, "10.1.0.1")]
        .into_iter()
        .zip(ports)
    {
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        transfer_checked(
            &format!("{test} {from}→{to}"),
            lab.host(from),
            lab.host(to),
            addr,
            16 * MB,
        );
    }
    assert_eq!(vx.network(42).tso_superframes, 0);
    assert_eq!(vx.network(42).coalesced_superframes, 0);
    assert_eq!(vx.drops(Some(42), DropReason::BadOffload), 0);
}

#[test]
fn ipv4_no_offloads_against_kernel_vxlan() {
    no_offloads_against_kernel("ipv4_kernel_no_offloads", Family::V4, [5004, 5005]);
}

#[test]
fn ipv6_no_offloads_against_kernel_vxlan() {
    no_offloads_against_kernel("ipv6_kernel_no_offloads", Family::V6, [5006, 5007]);
}
