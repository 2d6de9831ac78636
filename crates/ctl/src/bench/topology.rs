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

/// Carries the mixed pair (vxnet on host a, the sender; kernel vxlan on b).
pub const MIXED: Underlay = Underlay {
    dev: "eth1",
    addrs: ["192.168.251.1", "192.168.251.2"],
};

/// Carries the mixed pair the other way round (kernel vxlan on host a, the sender; vxnet on b).
pub const MIXED_REVERSE: Underlay = Underlay {
    dev: "eth2",
    addrs: ["192.168.252.1", "192.168.252.2"],
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
    }
    Ok(Topology { ns, dir })
}
