//! The underlay every pair runs on: two namespaces (hosts a and b) joined by two veth pairs, one
//! shared by the kernel and the vxnet pair, one for the mixed pair (see [`MIXED`] for why).
//! Links are created straight inside the namespaces, so deleting the namespaces removes them.

use std::path::PathBuf;
use std::process::Command;

use crate::netns::{ip, Cleanup, NetnsError};

/// One veth pair between the hosts: device name (the same on both ends) and the two addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Underlay {
    pub dev: &'static str,
    pub addrs: [&'static str; 2],
}

pub const UNDERLAY_PREFIX: u8 = 24;

/// Carries the kernel pair and the vxnet pair.
pub const SHARED: Underlay = Underlay {
    dev: "eth0",
    addrs: ["192.168.250.1", "192.168.250.2"],
};

/// Carries the mixed pair only. The kernel's vxlan leaves the inner TCP checksum partial
/// (CHECKSUM_PARTIAL) for the NIC to complete; a veth never completes it, so vxnet on the other
/// end would receive segments with only the pseudo-header sum and host a's TCP would drop them.
/// TX checksum offload is therefore turned off on host b's end (the kernel-vxlan side) of this
/// link — which makes the kernel compute the checksum in software. A link of its own keeps that
/// cost off the kernel pair, which is measured as the kernel ships.
pub const MIXED: Underlay = Underlay {
    dev: "eth1",
    addrs: ["192.168.251.1", "192.168.251.2"],
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
    for link in [SHARED, MIXED] {
        ip(&[
            "link", "add", link.dev, "netns", &ns[0], "type", "veth", "peer", "name", link.dev,
            "netns", &ns[1],
        ])?;
        for (name, addr) in ns.iter().zip(link.addrs) {
            let cidr = format!("{addr}/{UNDERLAY_PREFIX}");
            ip(&["-n", name, "addr", "add", &cidr, "dev", link.dev])?;
            ip(&["-n", name, "link", "set", link.dev, "up"])?;
        }
    }
    tx_checksum_off(&ns[1], MIXED.dev)?;
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
