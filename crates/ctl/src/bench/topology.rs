//! The underlay every pair runs on: two namespaces (hosts a and b) joined by veth pairs: one
//! shared by the kernel and the vxnet pair, one for each direction of the mixed pair (a kernel
//! vxlan device binds port 4789 on every address of its namespace, so each mixed pair's kernel
//! end gets a namespace address of its own to pair with). Every veth keeps the offloads it ships
//! with: vxnet takes what a same-host kernel VTEP sends through them (partial checksums, whole
//! UDP-tunnel GSO superframes) as it is.
//! Links are created straight inside the namespaces, so deleting the namespaces removes them.

use std::path::PathBuf;

use crate::netns::{ip, Cleanup, NetnsError};

/// One veth pair between the hosts: device name (the same on both ends) and the two addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Underlay {
    pub dev: &'static str,
    pub addrs: [&'static str; 2],
}

pub(super) const UNDERLAY_PREFIX: u8 = 24;

/// An Ethernet underlay.
pub(super) const DEFAULT_MTU: u32 = 1500;
/// The least that leaves an IPv6-capable overlay (1280) room for the 50-byte wrap.
pub(super) const MIN_MTU: i64 = 1330;
/// The largest jumbo frame switches commonly carry.
pub(super) const MAX_MTU: i64 = 9216;

/// Carries the kernel pair and the vxnet pair.
pub(super) const SHARED: Underlay = Underlay {
    dev: "eth0",
    addrs: ["192.168.250.1", "192.168.250.2"],
};

/// Carries the mixed pair (vxnet on host a, the sender; kernel vxlan on b).
pub(super) const MIXED: Underlay = Underlay {
    dev: "eth1",
    addrs: ["192.168.251.1", "192.168.251.2"],
};

/// Carries the mixed pair the other way round (kernel vxlan on host a, the sender; vxnet on b).
pub(super) const MIXED_REVERSE: Underlay = Underlay {
    dev: "eth2",
    addrs: ["192.168.252.1", "192.168.252.2"],
};

#[derive(Debug)]
pub(super) struct Topology {
    /// Host a (the senders) and host b (the receivers).
    pub ns: [String; 2],
    /// Control sockets, logs, captured tool output.
    pub dir: PathBuf,
    /// Of every veth.
    pub mtu: u32,
}

/// Names unique to this process, so concurrent runs (tests, a user's run) never collide.
pub(super) fn names() -> ([String; 2], PathBuf) {
    let pid = std::process::id();
    (
        [format!("vxbench-{pid}-a"), format!("vxbench-{pid}-b")],
        std::env::temp_dir().join(format!("vxbench-{pid}")),
    )
}

pub(super) fn build(cleanup: &Cleanup, mtu: u32) -> Result<Topology, NetnsError> {
    let (ns, dir) = names();
    cleanup.make_dir(&dir)?;
    for name in &ns {
        cleanup.add_namespace(name)?;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
    }
    let mtu_text = mtu.to_string();
    for link in [SHARED, MIXED, MIXED_REVERSE] {
        ip(&[
            "link", "add", link.dev, "netns", &ns[0], "mtu", &mtu_text, "type", "veth", "peer",
            "name", link.dev, "netns", &ns[1], "mtu", &mtu_text,
        ])?;
        for (name, addr) in ns.iter().zip(link.addrs) {
            let cidr = format!("{addr}/{UNDERLAY_PREFIX}");
            ip(&["-n", name, "addr", "add", &cidr, "dev", link.dev])?;
            ip(&["-n", name, "link", "set", link.dev, "up"])?;
        }
    }
    Ok(Topology { ns, dir, mtu })
}

/// A device's MTU as its namespace sees it (`ip -o link show` prints `… mtu N …`).
pub(super) fn link_mtu(ns: &str, dev: &str) -> Result<u32, NetnsError> {
    let out = ip(&["-n", ns, "-o", "link", "show", "dev", dev])?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_mtu(&text)
        .ok_or_else(|| NetnsError::Setup(format!("no MTU for {dev} in {ns} in `{}`", text.trim())))
}

fn parse_mtu(line: &str) -> Option<u32> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_is_read_from_ip_link_output() {
        let line = "7: vx43: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 8950 qdisc fq_codel state UNKNOWN \\    link/ether 1a:2b:3c:4d:5e:6f brd ff:ff:ff:ff:ff:ff";
        assert_eq!(parse_mtu(line), Some(8950));
        assert_eq!(parse_mtu("7: vx43: <UP> qdisc noop"), None);
        assert_eq!(parse_mtu("7: vx43: <UP> mtu"), None);
    }
}
