//! TAP, interface-configuration and offload tests against the real kernel. Privileged: each test
//! runs in its own anonymous network namespace (or, for the sysfs check, in the initial one with
//! a unique name and a cleanup guard).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sys_common;

use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use sys_common::{
    in_private_netns, ip_json, link_exists, link_vanishes, privileged, unique_tap_name, LinkGuard,
};
use vxnet_dataplane::sys::iface;
use vxnet_dataplane::sys::poll::PollSet;
use vxnet_dataplane::sys::tap::{
    tun_features, Offloads, Tap, TapConfig, TapError, TapQueue, VirtioNetHdr, VNET_HDR_LEN,
};
use vxnet_dataplane::sys::udp::{UdpOptions, UdpSocket};

fn cfg(name: &str, vnet_hdr: bool, queues: usize) -> TapConfig {
    TapConfig {
        name: name.to_owned(),
        vnet_hdr,
        queues,
    }
}

#[test]
fn multi_queue_tap_appears_in_sysfs_and_vanishes_on_drop() {
    if !privileged("multi_queue_tap_appears_in_sysfs_and_vanishes_on_drop") {
        return;
    }
    let name = unique_tap_name();
    let _guard = LinkGuard(name.clone());
    let sysfs = format!("/sys/class/net/{name}");
    assert!(!Path::new(&sysfs).exists(), "{name} exists before the test");

    let tap = Tap::open(&cfg(&name, true, 2)).unwrap();
    assert_eq!(tap.name(), name);
    assert!(!tap.existed(), "we created it");
    assert_eq!(tap.queues().len(), 2);
    assert!(Path::new(&sysfs).exists());
    let flags = std::fs::read_to_string(format!("{sysfs}/tun_flags")).unwrap();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 0x0002, 0x0002, "IFF_TAP");
    assert_eq!(flags & 0x1000, 0x1000, "IFF_NO_PI");
    assert_eq!(flags & 0x4000, 0x4000, "IFF_VNET_HDR");
    assert_eq!(flags & 0x0100, 0x0100, "IFF_MULTI_QUEUE");

    // Both queues are nonblocking: empty reads say WouldBlock instead of hanging.
    let mut buf = [0u8; 2048];
    for q in tap.queues() {
        let e = q.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    drop(tap);
    assert!(
        link_vanishes(&name),
        "non-persistent TAP must vanish with its fds"
    );
}

#[test]
fn configure_tap_and_read_back() {
    if !privileged("configure_tap_and_read_back") {
        return;
    }
    in_private_netns(|| {
        let name = unique_tap_name();
        let tap = Tap::open(&cfg(&name, true, 2)).unwrap();
        assert!(link_exists(&name));

        iface::set_mtu(&name, 1400).unwrap();
        assert_eq!(iface::mtu(&name).unwrap(), 1400);
        assert!(!iface::is_up(&name).unwrap());
        iface::set_up(&name, true).unwrap();
        assert!(iface::is_up(&name).unwrap());
        iface::set_ipv4(&name, Ipv4Addr::new(198, 18, 7, 1), 24).unwrap();
        let v6: Ipv6Addr = "fd00:7878::1".parse().unwrap();
        iface::add_ipv6(&name, v6, 64).unwrap();

        // gso_max_segs through rtnetlink; a bad device name is an error naming the device.
        iface::set_gso_max_segs(&name, 44).unwrap();
        let detail = &ip_json(&["-d", "link", "show", "dev", &name])[0];
        assert_eq!(detail["gso_max_segs"], 44, "{detail}");
        let err = iface::set_gso_max_segs("vxnonexist0", 44).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));

        let link = &ip_json(&["link", "show", "dev", &name])[0];
        assert_eq!(link["mtu"], 1400);
        assert_eq!(u64::from(iface::if_index(&name).unwrap()), link["ifindex"]);
        let mac = vxnet_encap::MacAddr(iface::hw_addr(&name).unwrap());
        assert_eq!(link["address"], mac.to_string().as_str());
        assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));

        let addrs = &ip_json(&["addr", "show", "dev", &name])[0]["addr_info"];
        let has =
            |family: &str, local: &str, prefix: u64| {
                addrs.as_array().unwrap().iter().any(|a| {
                    a["family"] == family && a["local"] == local && a["prefixlen"] == prefix
                })
            };
        assert!(has("inet", "198.18.7.1", 24), "{addrs}");
        assert!(has("inet6", "fd00:7878::1", 64), "{addrs}");

        // A second IPv4 set replaces the first (ioctl semantics), with the new prefix.
        iface::set_ipv4(&name, Ipv4Addr::new(198, 18, 8, 1), 16).unwrap();
        let addrs = &ip_json(&["addr", "show", "dev", &name])[0]["addr_info"];
        let v4: Vec<_> = addrs
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["family"] == "inet")
            .collect();
        assert_eq!(v4.len(), 1, "{addrs}");
        assert_eq!(v4[0]["local"], "198.18.8.1");
        assert_eq!(v4[0]["prefixlen"], 16);

        assert_eq!(
            iface::device_for_local_address("198.18.8.1".parse().unwrap()),
            Some((name.clone(), 1400))
        );
        assert_eq!(
            iface::device_for_local_address(v6.into()),
            Some((name.clone(), 1400))
        );

        // Opening the same (still open, multi-queue) device again is refused: TUNSETIFF would
        // add queues to it and split its traffic between two owners.
        let again = Tap::open(&cfg(&name, true, 2)).unwrap_err();
        assert!(matches!(again, TapError::InUse { .. }), "{again}");
        assert!(link_exists(&name), "our first handle still keeps it");

        drop(tap);
        assert!(link_vanishes(&name), "gone once every queue fd is closed");
        let err = iface::mtu(&name).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
    });
}

#[test]
fn bad_names_and_clashes_are_typed_errors() {
    if !privileged("bad_names_and_clashes_are_typed_errors") {
        return;
    }
    in_private_netns(|| {
        let e = Tap::open(&cfg("vxnet-much-too-long0", false, 1)).unwrap_err();
        assert!(matches!(e, TapError::InvalidName(_)), "{e}");
        // `lo` exists but is not a TAP: TUNSETIFF refuses it.
        let e = Tap::open(&cfg("lo", false, 1)).unwrap_err();
        assert!(matches!(e, TapError::Open { .. }), "{e}");
        println!("opening lo as TAP: {e}");
        // A single-queue TAP can't be opened twice.
        let name = unique_tap_name();
        let _t = Tap::open(&cfg(&name, false, 1)).unwrap();
        let e = Tap::open(&cfg(&name, false, 1)).unwrap_err();
        assert!(matches!(e, TapError::InUse { .. }), "{e}");
        println!("second open of single-queue TAP: {e}");
    });
}

#[test]
fn offload_probe_accepts_tso() {
    if !privileged("offload_probe_accepts_tso") {
        return;
    }
    let features = tun_features().unwrap();
    assert!(
        features.tap() && features.vnet_hdr() && features.multi_queue(),
        "{features:?}"
    );
    in_private_netns(|| {
        let name = unique_tap_name();
        let tap = Tap::open(&cfg(&name, true, 1)).unwrap();
        let got = tap.probe_offloads().unwrap();
        println!(
            "offloads accepted: {got} (USO {})",
            if got.contains(Offloads::USO4 | Offloads::USO6) {
                "accepted"
            } else {
                "refused"
            }
        );
        assert!(
            got.contains(Offloads::CSUM | Offloads::TSO4 | Offloads::TSO6),
            "{got}"
        );
        // Explicitly turning them off works too.
        tap.set_offloads(Offloads::NONE).unwrap();

        let plain = Tap::open(&cfg(&unique_tap_name(), false, 1)).unwrap();
        assert_eq!(plain.probe_offloads().unwrap(), Offloads::NONE);
    });
}

/// Reads frames from `q` until `pred` accepts one or the deadline passes.
fn read_until(q: &TapQueue, deadline: Duration, mut pred: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let mut set = PollSet::new();
    let i = set.add(q.as_fd());
    let mut buf = vec![0u8; 65536 + 64];
    let end = Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "expected frame did not arrive");
        set.wait(Some(left)).unwrap();
        if !set.is_ready(i) {
            continue;
        }
        loop {
            match q.read(&mut buf) {
                Ok(n) => {
                    if pred(&buf[..n]) {
                        return buf[..n].to_vec();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("TAP read: {e}"),
            }
        }
    }
}

#[test]
fn frames_carry_vnet_header_both_ways() {
    if !privileged("frames_carry_vnet_header_both_ways") {
        return;
    }
    in_private_netns(|| {
        let name = unique_tap_name();
        let tap = Tap::open(&cfg(&name, true, 1)).unwrap();
        let offloads = tap.probe_offloads().unwrap();
        let q = &tap.queues()[0];
        iface::set_ipv4(&name, Ipv4Addr::new(198, 18, 9, 1), 24).unwrap();
        iface::set_up(&name, true).unwrap();
        let our_mac = iface::hw_addr(&name).unwrap();

        // A datagram to a neighbour in the TAP's subnet (inside this private namespace) makes the
        // kernel ARP for it out of the TAP.
        let sock =
            UdpSocket::bind("198.18.9.1:0".parse().unwrap(), &UdpOptions::default()).unwrap();
        let peer: SocketAddr = "198.18.9.2:7777".parse().unwrap();
        sock.send_to(b"hello through the tap", peer).unwrap();

        let arp = read_until(q, Duration::from_secs(5), |f| {
            f.len() >= VNET_HDR_LEN + 42 && f[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14] == [0x08, 0x06]
        });
        let hdr = VirtioNetHdr::parse(&arp).unwrap();
        assert_eq!(hdr.gso_type, VirtioNetHdr::GSO_NONE);
        assert_eq!(hdr.gso_size, 0);
        let eth = &arp[VNET_HDR_LEN..];
        assert_eq!(&eth[0..6], &[0xff; 6], "broadcast");
        assert_eq!(&eth[6..12], &our_mac);
        assert_eq!(&eth[20..22], &[0, 1], "ARP request");
        assert_eq!(&eth[28..32], &[198, 18, 9, 1], "sender IP");
        assert_eq!(&eth[38..42], &[198, 18, 9, 2], "target IP");

        // Answer it through writev (vnet header + frame, no copy): the kernel then sends the
        // queued datagram to the MAC we claimed.
        let peer_mac = [0x02, 0x00, 0x00, 0x00, 0x09, 0x02];
        let mut reply = Vec::new();
        reply.extend_from_slice(&our_mac);
        reply.extend_from_slice(&peer_mac);
        reply.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
        reply.extend_from_slice(&peer_mac);
        reply.extend_from_slice(&[198, 18, 9, 2]);
        reply.extend_from_slice(&our_mac);
        reply.extend_from_slice(&[198, 18, 9, 1]);
        let vh = VirtioNetHdr::default().to_bytes();
        let n = q
            .writev(&[IoSlice::new(&vh), IoSlice::new(&reply)])
            .unwrap();
        assert_eq!(n, VNET_HDR_LEN + reply.len());

        let udp = read_until(q, Duration::from_secs(5), |f| {
            f.len() > VNET_HDR_LEN + 42
                && f[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14] == [0x08, 0x00]
                && f[VNET_HDR_LEN + 23] == 17
        });
        let hdr = VirtioNetHdr::parse(&udp).unwrap();
        let eth = &udp[VNET_HDR_LEN..];
        assert_eq!(&eth[0..6], &peer_mac);
        assert_eq!(&eth[30..34], &[198, 18, 9, 2]);
        assert!(eth.ends_with(b"hello through the tap"));
        println!("offloads {offloads}; UDP frame vnet header: {hdr:?}");
        if hdr.flags & VirtioNetHdr::FLAG_NEEDS_CSUM != 0 {
            // Partial checksum: offsets count from the Ethernet header.
            assert_eq!(hdr.csum_start, 14 + 20);
            assert_eq!(hdr.csum_offset, 6);
        }

        // Plain write(): a frame addressed to us is accepted whole.
        let mut frame = vh.to_vec();
        frame.extend_from_slice(&reply);
        assert_eq!(q.write(&frame).unwrap(), frame.len());
    });
}
