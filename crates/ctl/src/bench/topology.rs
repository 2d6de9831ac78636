//! The underlay every pair runs on: two namespaces (hosts a and b) joined by veth pairs: one
//! shared by the kernel and the vxnet pair, one for each direction of the mixed pair (a kernel
//! vxlan device binds port 4789 on every address of its namespace, so each mixed pair's kernel
//! end gets a namespace address of its own to pair with). Every veth keeps the offloads it ships
//! with: vxnet takes what a same-host kernel VTEP sends through them (partial checksums, whole
//! UDP-tunnel GSO superframes) as it is.
//! Links are created straight inside the namespaces, so deleting the namespaces removes them.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::netns::addressing::Subnet;
use crate::netns::{ip, Cleanup, NetnsError};

/// One veth pair between the hosts: device name (the same on both ends) and the block of
/// `--subnet` its two addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Underlay {
    pub dev: &'static str,
    pub block: usize,
}

/// `--subnet` is cut into this many blocks: one per underlay, then one per pair's overlay.
pub(super) const BLOCKS: u32 = 8;
pub(super) const DEFAULT_SUBNET: &str = "192.168.250.0/24";

/// An Ethernet underlay.
pub(super) const DEFAULT_MTU: u32 = 1500;
/// The least that leaves an IPv6-capable overlay (1280) room for the 50-byte wrap.
pub(super) const MIN_MTU: i64 = 1330;
/// The largest jumbo frame switches commonly carry.
pub(super) const MAX_MTU: i64 = 9216;

/// Carries the kernel pair and the vxnet pair.
pub(super) const SHARED: Underlay = Underlay {
    dev: "eth0",
    block: 0,
};

/// Carries the mixed pair (vxnet on host a, the sender; kernel vxlan on b).
pub(super) const MIXED: Underlay = Underlay {
    dev: "eth1",
    block: 1,
};

/// Carries the mixed pair the other way round (kernel vxlan on host a, the sender; vxnet on b).
pub(super) const MIXED_REVERSE: Underlay = Underlay {
    dev: "eth2",
    block: 2,
};

#[derive(Debug)]
pub(super) struct Topology {
    /// Host a (the senders) and host b (the receivers).
    pub ns: [String; 2],
    /// Control sockets, logs, captured tool output.
    pub dir: PathBuf,
    /// Of every veth.
    pub mtu: u32,
    /// Where every underlay and overlay address comes from.
    pub subnet: Subnet,
}

impl Topology {
    /// Host `i`'s (0 = a, 1 = b) address on `underlay`.
    pub(super) fn underlay_addr(&self, underlay: Underlay, i: usize) -> Ipv4Addr {
        self.subnet.host(underlay.block, i)
    }
}

/// The namespaces `PREFIX-a` and `PREFIX-b`.
pub(super) fn names(prefix: &str) -> [String; 2] {
    [format!("{prefix}-a"), format!("{prefix}-b")]
}

/// Every underlay the pairs use.
pub(super) const ALL: [Underlay; 3] = [SHARED, MIXED, MIXED_REVERSE];

/// Hosts a and b joined by a veth pair for each of `links`.
pub(super) fn build(
    cleanup: &Cleanup,
    prefix: &str,
    subnet: Subnet,
    mtu: u32,
    links: &[Underlay],
) -> Result<Topology, NetnsError> {
    let ns = names(prefix);
    for name in &ns {
        cleanup.add_namespace(name)?;
    }
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    cleanup.make_dir(&dir)?;
    let topo = Topology {
        ns,
        dir,
        mtu,
        subnet,
    };
    let mtu_text = mtu.to_string();
    let ns = &topo.ns;
    for link in links {
        ip(&[
            "link", "add", link.dev, "netns", &ns[0], "mtu", &mtu_text, "type", "veth", "peer",
            "name", link.dev, "netns", &ns[1], "mtu", &mtu_text,
        ])?;
        for (i, name) in ns.iter().enumerate() {
            let cidr = topo.subnet.cidr(link.block, i);
            ip(&["-n", name, "addr", "add", &cidr, "dev", link.dev])?;
            ip(&["-n", name, "link", "set", link.dev, "up"])?;
        }
    }
    Ok(topo)
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
