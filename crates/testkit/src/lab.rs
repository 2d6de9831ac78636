//! A [`Lab`]: hosts as network namespaces on a switched underlay, processes started in them,
//! and on drop every namespace it made deleted again, also when a test fails.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::engine::Vxnet;
use crate::process::{must, privileged, run, vxnet_bin, wait_for, Proc};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// A host of the lab: a namespace with one underlay interface `eth0`.
#[derive(Debug, Clone)]
pub struct Host {
    pub ns: String,
    pub underlay: IpAddr,
    /// Inner (overlay) address used by the test, e.g. 10.1.0.1.
    pub index: usize,
}

impl Host {
    /// `ip netns exec NS sh -c CMD`.
    pub fn sh(&self, cmd: &str) -> Output {
        run(&format!(
            "ip netns exec {} sh -c '{}'",
            self.ns,
            cmd.replace('\'', "'\\''")
        ))
    }

    pub fn must(&self, cmd: &str) -> String {
        let out = self.sh(cmd);
        assert!(
            out.status.success(),
            "[{}] `{cmd}` failed: {}{}",
            self.ns,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ping(&self, target: &str, count: u32) -> bool {
        self.sh(&format!("ping -c {count} -i 0.2 -W 2 {target}"))
            .status
            .success()
    }

    /// A kernel vxlan device `dev` (VNI `vni`, port 4789, on `eth0`) flooding to every address
    /// in `remotes`, with overlay address `address` (CIDR), up. TX checksum offload (and with it
    /// TSO) goes off on `eth0` first, so the kernel puts on the veth what a NIC puts on a wire:
    /// segmented datagrams with complete inner checksums, the interop these tests are about. A
    /// same-host peer with its offloads on is `tests/interop_partial_checksum.rs`.
    pub fn kernel_vxlan(&self, dev: &str, vni: u32, remotes: &[IpAddr], address: &str) {
        self.must("ethtool -K eth0 tx off >/dev/null");
        self.kernel_vxlan_as_shipped(dev, vni, remotes, address);
    }

    /// [`kernel_vxlan`](Self::kernel_vxlan) with the underlay's offloads as the kernel ships
    /// them: over a veth its datagrams then carry what it leaves for a NIC (inner checksums
    /// holding only the pseudo-header sum, whole tunnel superframes).
    pub fn kernel_vxlan_as_shipped(&self, dev: &str, vni: u32, remotes: &[IpAddr], address: &str) {
        self.must(&format!(
            "ip link add {dev} type vxlan id {vni} dstport 4789 local {} dev eth0",
            self.underlay
        ));
        for remote in remotes {
            self.must(&format!(
                "bridge fdb append 00:00:00:00:00:00 dev {dev} dst {remote}"
            ));
        }
        self.must(&format!(
            "ip addr add {address} dev {dev} && ip link set {dev} up"
        ));
    }

    /// Counter `field` of the `Ip:` (or, for IPv6 underlays, `Ip6`) statistics of this
    /// namespace, e.g. `FragCreates`, `ReasmReqds` (from /proc/net/snmp and /proc/net/snmp6).
    pub fn ip_stat(&self, field: &str) -> u64 {
        if let Some(v6) = field.strip_prefix("Ip6") {
            let text = self.must("cat /proc/net/snmp6");
            return text
                .lines()
                .filter_map(|l| l.split_once(char::is_whitespace))
                .find(|(k, _)| k.strip_prefix("Ip6") == Some(v6))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {field} in /proc/net/snmp6"));
        }
        let text = self.must("cat /proc/net/snmp");
        let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
        let (names, values) = (ip.next().unwrap_or(""), ip.next().unwrap_or(""));
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(k, _)| *k == field)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no Ip: {field} in /proc/net/snmp"))
    }
}

/// Namespaces and files of one test. Everything is removed on drop.
#[derive(Debug)]
pub struct Lab {
    pub id: String,
    pub dir: PathBuf,
    namespaces: Vec<String>,
    pub hosts: Vec<Host>,
    pub family: Family,
}

impl Lab {
    /// A LAN of `hosts` namespaces on one bridge (in a "switch" namespace). Underlay addresses
    /// 10.0.0.(i+1)/24 or fd00::(i+1)/64 on `eth0`. `None` when the test must be skipped.
    pub fn lan(test: &str, hosts: usize, family: Family) -> Option<Lab> {
        Self::lan_with_mtu(test, hosts, family, 1500)
    }

    pub fn lan_with_mtu(test: &str, hosts: usize, family: Family, mtu: u32) -> Option<Lab> {
        let mut lab = Lab::empty(test, family)?;
        let id = lab.id.clone();
        let switch = format!("{id}sw");
        lab.add_ns(&switch);
        must(&format!(
            "ip -n {switch} link add br0 type bridge && ip -n {switch} link set br0 up && ip -n {switch} link set lo up"
        ));
        for i in 0..hosts {
            let ns = format!("{id}h{i}");
            lab.add_ns(&ns);
            let underlay: IpAddr = match family {
                Family::V4 => format!("10.0.0.{}", i + 1).parse().unwrap(),
                Family::V6 => format!("fd00::{}", i + 1).parse().unwrap(),
            };
            let prefix = if family == Family::V4 { 24 } else { 64 };
            must(&format!(
                "ip link add eth0 netns {ns} mtu {mtu} type veth peer name p{i} netns {switch} mtu {mtu} && \
                 ip -n {switch} link set p{i} master br0 up && \
                 ip -n {ns} link set lo up && ip -n {ns} link set eth0 up && \
                 ip -n {ns} addr add {underlay}/{prefix} dev eth0 nodad"
            ));
            lab.hosts.push(Host {
                ns,
                underlay,
                index: i,
            });
        }
        Some(lab)
    }

    /// Two hosts in different subnets behind a router namespace, each on its own link of MTU
    /// `mtus[i]` (both ends): host i is 10.0.{i+1}.2/24 (fd0{i+1}::2/64), the router .1 (::1)
    /// on each, forwarding. A path between hosts of different MTUs is how a router's ICMP
    /// frag-needed / packet-too-big comes about. `None` when the test must be skipped.
    pub fn routed(test: &str, family: Family, mtus: [u32; 2]) -> Option<Lab> {
        let mut lab = Lab::empty(test, family)?;
        let id = lab.id.clone();
        let router = format!("{id}rt");
        lab.add_ns(&router);
        must(&format!(
            "ip -n {router} link set lo up && \
             ip netns exec {router} sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1"
        ));
        for (i, mtu) in mtus.into_iter().enumerate() {
            let ns = format!("{id}h{i}");
            lab.add_ns(&ns);
            let (host, gateway, prefix) = match family {
                Family::V4 => (format!("10.0.{}.2", i + 1), format!("10.0.{}.1", i + 1), 24),
                Family::V6 => (format!("fd0{}::2", i + 1), format!("fd0{}::1", i + 1), 64),
            };
            must(&format!(
                "ip link add eth0 netns {ns} mtu {mtu} type veth peer name r{i} netns {router} mtu {mtu} && \
                 ip -n {router} addr add {gateway}/{prefix} dev r{i} nodad && ip -n {router} link set r{i} up && \
                 ip -n {ns} link set lo up && ip -n {ns} link set eth0 up && \
                 ip -n {ns} addr add {host}/{prefix} dev eth0 nodad && \
                 ip -n {ns} route add default via {gateway}"
            ));
            lab.hosts.push(Host {
                ns,
                underlay: host.parse().unwrap(),
                index: i,
            });
        }
        Some(lab)
    }

    /// A lab with a fresh id and directory and no namespace yet; `None` when the test must be
    /// skipped.
    fn empty(test: &str, family: Family) -> Option<Lab> {
        if !privileged(test) {
            return None;
        }
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let id = format!("vxt{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        Some(Lab {
            id,
            dir,
            namespaces: Vec::new(),
            hosts: Vec::new(),
            family,
        })
    }

    fn add_ns(&mut self, name: &str) {
        must(&format!("ip netns add {name}"));
        self.namespaces.push(name.to_string());
    }

    /// A bare network namespace (a stand-in container) named `<lab id><suffix>`, loopback
    /// down, deleted with the lab (before the hosts).
    pub fn container(&mut self, suffix: &str) -> String {
        let name = format!("{}{suffix}", self.id);
        self.add_ns(&name);
        name
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Sets host `i`'s underlay MTU (its `eth0` and its port on the switch), e.g. to put one
    /// jumbo-frame host on a LAN of 1500-byte hosts.
    pub fn set_underlay_mtu(&self, i: usize, mtu: u32) {
        must(&format!(
            "ip -n {}sw link set p{i} mtu {mtu} && ip -n {} link set eth0 mtu {mtu}",
            self.id, self.hosts[i].ns
        ));
    }

    /// Makes host `i`'s underlay receive like a NIC with GRO: `eth0` gets GRO (which puts the
    /// veth in NAPI mode) and its switch-side peer stops offering TSO (a veth only hands frames
    /// to NAPI/GRO when its peer does not do TSO). Without this a veth delivers every UDP
    /// datagram singly, so a UDP_GRO socket only ever sees batches built by a local UDP GSO send.
    pub fn enable_underlay_gro(&self, i: usize) {
        must(&format!(
            "ip netns exec {}sw ethtool -K p{i} tso off >/dev/null && \
             ip netns exec {} ethtool -K eth0 gro on >/dev/null",
            self.id, self.hosts[i].ns
        ));
    }

    /// vxnet on hosts 0 ("a", with `args_a` added) and 1 ("b"), VNI 42 on `vx42`, each
    /// flooding to the other, overlay addresses 10.1.0.1/24 and 10.1.0.2/24.
    pub fn vxnet_pair(&self, args_a: &str) -> (Vxnet, Vxnet) {
        let (u0, u1) = (self.host(0).underlay, self.host(1).underlay);
        let a = self.vxnet(
            0,
            "a",
            &format!(
                "--vni 42 --dev vx42 --local {u0} --remote {u1} --address 10.1.0.1/24 {args_a}"
            ),
        );
        let b = self.vxnet(
            1,
            "b",
            &format!("--vni 42 --dev vx42 --local {u1} --remote {u0} --address 10.1.0.2/24"),
        );
        (a, b)
    }

    /// Starts `vxnet ARGS` in host `i`'s namespace with a control socket in the lab dir.
    /// Waits until the control socket answers (or the process exits, which panics with its log).
    pub fn vxnet(&self, i: usize, name: &str, args: &str) -> Vxnet {
        self.vxnet_with_env(i, name, &[], args)
    }

    /// [`Lab::vxnet`] with extra environment variables for the engine (e.g.
    /// `VXNET_DISABLE_OFFLOADS`), set on that process only.
    pub fn vxnet_with_env(&self, i: usize, name: &str, env: &[(&str, &str)], args: &str) -> Vxnet {
        let control = self.dir.join(format!("{name}.sock"));
        let log = self.dir.join(format!("{name}.log"));
        let proc = self.spawn_with_env(
            i,
            &log,
            env,
            &format!(
                "{} run --control {} {args}",
                vxnet_bin().display(),
                control.display()
            ),
        );
        let mut v = Vxnet { proc, control };
        let up = wait_for(Duration::from_secs(10), || {
            v.control.exists() || matches!(v.proc.child.try_wait(), Ok(Some(_)))
        });
        if !up || !v.control.exists() {
            panic!("vxnet {name} did not start: {}", v.proc.log_text());
        }
        v.wait_ready();
        v
    }

    /// Starts a shell command in host `i`'s namespace; its output goes to `log`.
    pub fn spawn(&self, i: usize, log: &Path, cmd: &str) -> Proc {
        self.spawn_with_env(i, log, &[], cmd)
    }

    /// [`Lab::spawn`] with extra environment variables for the command.
    pub fn spawn_with_env(&self, i: usize, log: &Path, env: &[(&str, &str)], cmd: &str) -> Proc {
        Proc::spawn_in(&self.hosts[i].ns, log, env, cmd)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            // Kill stragglers started in the namespace by tests through `ip netns exec`
            // (e.g. a tcpdump left behind by a failed assertion): only processes inside OUR
            // namespaces, identified by the kernel, never by name.
            let _ = run(&format!("ip netns pids {ns} | xargs -r kill -9"));
            let _ = run(&format!("ip netns del {ns}"));
            // `vxnet attach --netns NAME` writes /etc/netns/NAME/resolv.conf, and only `vxnet
            // detach` removes it; `ip netns del` does not. The name is this lab's own.
            let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(ns));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
