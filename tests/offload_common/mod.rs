//! The topology the offload tests share: two vxnet engines and a kernel vxlan device on one
//! underlay LAN, all in VNI 42.
//!
//! ```text
//!  host 0: vxnet "a"   10.1.0.1   (the engine under test: its env/flags vary per test)
//!  host 1: vxnet "b"   10.1.0.2   (default flags: every offload the kernel grants)
//!  host 2: kernel vx0  10.1.0.3
//! ```
//! a floods to b and the kernel; b and the kernel flood to a only (they never talk to each other).
//! Every underlay port does GRO like a real NIC ([`Lab::enable_underlay_gro`]), so datagrams
//! from the kernel's vxlan reach a UDP_GRO socket in batches too. Both engines run the socket
//! path (`--no-tunnel-gso`): these tests are about vxnet's own segmentation, UDP GSO and GRO;
//! tests/tunnel_gso.rs covers the tunnel path.
#![allow(dead_code)]

pub mod datagrams;

use std::net::SocketAddr;

use vxnet_tests::*;

pub const MB: u64 = 1 << 20;
pub const VNI: u32 = 42;
pub const A: usize = 0;
pub const B: usize = 1;
pub const KERNEL: usize = 2;

pub struct Trio {
    pub lab: Lab,
    pub a: Vxnet,
    pub b: Vxnet,
}

/// Inner address of host `i`.
pub fn inner(i: usize) -> String {
    format!("10.1.0.{}", i + 1)
}

pub fn addr(i: usize, port: u16) -> SocketAddr {
    format!("{}:{port}", inner(i)).parse().unwrap()
}

/// Builds the trio on an underlay of `mtu`; `a` gets `env_a` and `args_a` on top of the basics.
pub fn trio(
    test: &str,
    family: Family,
    mtu: u32,
    env_a: &[(&str, &str)],
    args_a: &str,
) -> Option<Trio> {
    trio_with_mtus(test, family, [mtu; 3], env_a, args_a)
}

/// [`trio`] with an underlay MTU per host (a, b, kernel), set before anything starts.
pub fn trio_with_mtus(
    test: &str,
    family: Family,
    mtus: [u32; 3],
    env_a: &[(&str, &str)],
    args_a: &str,
) -> Option<Trio> {
    let lab = Lab::lan_with_mtu(test, 3, family, mtus[0])?;
    for (i, mtu) in mtus.into_iter().enumerate() {
        if mtu != mtus[0] {
            lab.set_underlay_mtu(i, mtu);
        }
    }
    for i in [A, B, KERNEL] {
        lab.enable_underlay_gro(i);
    }
    let u = |i: usize| lab.host(i).underlay;
    lab.host(KERNEL)
        .kernel_vxlan("vx0", 42, &[u(A)], "10.1.0.3/24");
    let a = lab.vxnet_with_env(
        A,
        "a",
        env_a,
        &format!(
            "--vni 42 --dev vx42 --local {} --remote {} --remote {} --address 10.1.0.1/24 --no-tunnel-gso {args_a}",
            u(A),
            u(B),
            u(KERNEL)
        ),
    );
    let b = lab.vxnet(
        B,
        "b",
        &format!(
            "--vni 42 --dev vx42 --local {} --remote {} --address 10.1.0.2/24 --no-tunnel-gso",
            u(B),
            u(A)
        ),
    );
    Some(Trio { lab, a, b })
}

impl Trio {
    pub fn host(&self, i: usize) -> &Host {
        self.lab.host(i)
    }

    /// Pings `to`'s inner address from host `from`, panicking with both engines' logs on failure.
    pub fn ping(&self, from: usize, to: usize) {
        assert!(
            self.host(from).ping(&inner(to), 3),
            "ping {from} -> {to} failed\na: {}\nb: {}",
            self.a.proc.log_text(),
            self.b.proc.log_text()
        );
    }

    /// A byte-checked TCP transfer of `len` bytes from host `from` to host `to` on `port`.
    pub fn transfer(&self, from: usize, to: usize, port: u16, len: u64) {
        let what = format!("{} MB {from} -> {to}", len / MB);
        let elapsed = transfer_checked(&what, self.host(from), self.host(to), addr(to, port), len);
        eprintln!(
            "{what}: {elapsed:.2?}, {:.2} Gbit/s",
            (len * 8) as f64 / elapsed.as_secs_f64() / 1e9
        );
    }

    /// Every drop counter of both engines is zero except those in `allowed`.
    pub fn assert_no_drops(&self, allowed: &[DropReason]) {
        for (name, v) in [("a", &self.a), ("b", &self.b)] {
            let stats = v.stats();
            for scope in [&stats.networks[0].drops, &stats.drops] {
                for (reason, count) in scope {
                    if !allowed.contains(reason) {
                        assert_eq!(*count, 0, "{name}: drops.{reason} in {stats:?}");
                    }
                }
            }
        }
    }
}

/// Whether the kernel can hand UDP superframes to a TAP (TUN_F_USO4/6, Linux 6.2+).
pub fn kernel_has_uso() -> bool {
    let release = must("uname -r");
    let mut v = release
        .trim()
        .split(['.', '-'])
        .map(|x| x.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 2)
}

/// [`trio`] on a 1500-byte IPv4 underlay with USO turned off in `a`
/// (`VXNET_DISABLE_OFFLOADS=uso`), which then must not claim it.
pub fn trio_without_uso(test: &str) -> Option<Trio> {
    let t = trio(
        test,
        Family::V4,
        1500,
        &[("VXNET_DISABLE_OFFLOADS", "uso")],
        "",
    )?;
    let offloads = t.a.offloads();
    assert!(!offloads.contains(&Offload::Uso), "{offloads:?}");
    Some(t)
}

/// Whether engine `vx` can take UDP superframes on its TAP (to cut them or to write coalesced
/// datagrams), checking that it claims USO exactly where the kernel grants it (Linux 6.2+; before,
/// a TAP write of a `GSO_UDP_L4` frame is EINVAL).
pub fn uso_granted(vx: &Vxnet) -> bool {
    let (offloads, kernel) = (vx.offloads(), kernel_has_uso());
    assert_eq!(
        offloads.contains(&Offload::Uso),
        kernel,
        "kernel has USO: {kernel}, engine claims {offloads:?}"
    );
    kernel
}

/// The offloads an engine with everything on reports: `base` plus USO where the kernel has it,
/// sorted like [`Vxnet::offloads`].
pub fn with_uso(base: &[Offload]) -> Vec<Offload> {
    let mut v = base.to_vec();
    if kernel_has_uso() {
        v.push(Offload::Uso);
    }
    v.sort();
    v
}
