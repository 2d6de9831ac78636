//! The underlay every pair runs on: two namespaces (hosts a and b) joined by veth pairs: one
//! shared by the kernel and the vxnet pair, one for each direction of the mixed pair (see
//! [`MIXED`] for why).
//! Links are created straight inside the namespaces, so deleting the namespaces removes them.

use std::path::PathBuf;
use std::process::Command;

use crate::netns::{ip, Cleanup, NetnsError};

/// One veth pair between the hosts: device name (the same on both ends) and the two addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Underlay {
    pub dev: &'static str,
    pub addrs: [&'static str; 2],
    /// The end (0 = host a, 1 = host b) whose TX checksum offload is turned off: the kernel
    /// vxlan end of a mixed pair (why: [`MIXED`]).
    pub tx_checksum_off: Option<usize>,
}

pub const UNDERLAY_PREFIX: u8 = 24;

/// Carries the kernel pair and the vxnet pair.
pub const SHARED: Underlay = Underlay {
    dev: "eth0",
    addrs: ["192.168.250.1", "192.168.250.2"],
    tx_checksum_off: None,
};

/// Carries the mixed pair (vxnet on host a, the sender; kernel vxlan on b). The kernel's vxlan
/// leaves the inner TCP checksum partial (CHECKSUM_PARTIAL) for the NIC to complete; a veth never
/// completes it, so vxnet on the other end would receive segments with only the pseudo-header sum
/// and its host's TCP would drop them. TX checksum offload is therefore turned off on the
/// kernel-vxlan end of each mixed link, which makes the kernel compute the checksum in software.
/// Links of their own keep that cost off the kernel pair, which is measured as the kernel ships.
pub const MIXED: Underlay = Underlay {
    dev: "eth1",
    addrs: ["192.168.251.1", "192.168.251.2"],
    tx_checksum_off: Some(1),
};

/// Carries the mixed pair the other way round (kernel vxlan on host a, the sender; vxnet on b).
pub const MIXED_REVERSE: Underlay = Underlay {
    dev: "eth2",
    addrs: ["192.168.252.1", "192.168.252.2"],
    tx_checksum_off: Some(0),
};

#[derive(Debug)]
pub struct Topology {
    /// Host a (the senders) and host b (the receivers).
    pub ns: [String; 2],
    /// Control sockets, logs, captured tool output.
    pub dir: PathBuf,
}

/// Names unique to this process, so concurrent runs (tests, a user's run) never collide.
pub fn names() -> ([String; 2], PathBuf) {
    let pid = std::process::id();
    (
        [format!("vxbench-{pid}-a"), format!("vxbench-{pid}-b")],
        std::env::temp_dir().join(format!("vxbench-{pid}")),
    )
}

pub fn build(cleanup: &Cleanup) -> Result<Topology, NetnsError> {
    let (ns, dir) = names();
    cleanup.make_dir(&dir)?;
    for name in &ns {
        cleanup.add_namespace(name)?;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
    }
    for link in [SHARED, MIXED, MIXED_REVERSE] {
        ip(&[
            "link", "add", link.dev, "netns", &ns[0], "type", "veth", "peer", "name", link.dev,
            "netns", &ns[1],
        ])?;
        for (name, addr) in ns.iter().zip(link.addrs) {
            let cidr = format!("{addr}/{UNDERLAY_PREFIX}");
            ip(&["-n", name, "addr", "add", &cidr, "dev", link.dev])?;
            ip(&["-n", name, "link", "set", link.dev, "up"])?;
        }
        if let Some(end) = link.tx_checksum_off {
            tx_checksum_off(&ns[end], link.dev)?;
        }
    }
    Ok(Topology { ns, dir })
}

/// `ethtool -K DEV tx off` inside the namespace (why: [`MIXED`]).
fn tx_checksum_off(ns: &str, dev: &str) -> Result<(), NetnsError> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"])
        .output()
        .map_err(|e| NetnsError::Setup(format!("cannot run ethtool: {e}")))?;
    if !out.status.success() {
        return Err(NetnsError::Setup(format!(
            "`ethtool -K {dev} tx off` in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
