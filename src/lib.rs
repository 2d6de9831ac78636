//! Support code for the netns integration tests in `tests/`: a [`Lab`] builds hosts as network
//! namespaces on a switched underlay, runs processes in them, and on drop stops those processes
//! (by PID, only its own) and deletes every namespace it made, also when a test fails.
//!
//! Tests need root. Outside CI a test without root is skipped with a message; with `CI=true` it
//! fails, so a CI run cannot pass by skipping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod capture;

pub use capture::{read_pcap, Capture};

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether privileged tests can run; `false` means skip. Panics under CI instead of skipping.
pub fn privileged(test: &str) -> bool {
    // SAFETY-free check: effective uid via /proc avoids libc here.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    let tun = Path::new("/dev/net/tun").exists();
    let ip = Command::new("ip").arg("-V").output().is_ok();
    if root && tun && ip {
        return true;
    }
    let why =
        format!("{test}: needs root, /dev/net/tun and iproute2 (root={root}, tun={tun}, ip={ip})");
    if in_ci() {
        panic!("{why}; CI=true, so this is a failure, not a skip");
    }
    eprintln!("SKIPPED {why}");
    false
}

/// Fails (under CI) or skips when a tool is missing.
pub fn have_tool(test: &str, tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let why = format!("{test}: needs `{tool}` (scripts/test.sh installs it)");
        if in_ci() {
            panic!("{why}; CI=true, so this is a failure, not a skip");
        }
        eprintln!("SKIPPED {why}");
    }
    found
}

/// The `vxnet` binary of this build (next to the test executable's deps directory).
pub fn vxnet_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("vxnet");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p vxnet` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

pub fn run(cmd: &str) -> Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

/// Runs `cmd` and panics with its stderr if it fails.
pub fn must(cmd: &str) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` until it is true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

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

/// A process the lab started; stopped on drop (SIGTERM, then SIGKILL) if still running.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.hosts[i].ns,
                "sh",
                "-c",
                &format!("exec {cmd}"),
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Proc {
            child,
            log: log.to_path_buf(),
        }
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
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `vxnet run`.
#[derive(Debug)]
pub struct Vxnet {
    pub proc: Proc,
    pub control: PathBuf,
}

impl Vxnet {
    /// Runs a client subcommand (`fdb show --json`, …) against this engine.
    pub fn ctl(&self, args: &str) -> Output {
        run(&format!(
            "{} {args} --control {}",
            vxnet_bin().display(),
            self.control.display()
        ))
    }

    pub fn json(&self, args: &str) -> serde_json::Value {
        let out = self.ctl(&format!("{args} --json"));
        assert!(
            out.status.success(),
            "vxnet {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn wait_ready(&mut self) {
        let ok = wait_for(Duration::from_secs(5), || {
            self.ctl("networks").status.success()
        });
        assert!(
            ok,
            "control socket never answered: {}",
            self.proc.log_text()
        );
    }

    /// Counter `key` of network `vni` from `vxnet stats --json`.
    pub fn stat(&self, vni: u64, key: &str) -> u64 {
        let stats = self.json("stats");
        stats["networks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["vni"] == vni)
            .map(|n| n[key].as_u64().unwrap_or(0))
            .unwrap()
    }

    pub fn drop_count(&self, vni: Option<u64>, reason: &str) -> u64 {
        let stats = self.json("stats");
        match vni {
            Some(vni) => stats["networks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["vni"] == vni)
                .map(|n| n["drops"][reason].as_u64().unwrap_or(0))
                .unwrap(),
            None => stats["drops"][reason].as_u64().unwrap_or(0),
        }
    }

    /// Counter `key` of network `vni` from `vxnet stats --json`; panics when the key is missing
    /// (where [`Vxnet::stat`] reads 0), so a test asserting a zero cannot pass on a typo.
    pub fn counter(&self, vni: u64, key: &str) -> u64 {
        let stats = self.json("stats");
        let network = stats["networks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["vni"] == vni)
            .unwrap_or_else(|| panic!("no network {vni} in {stats}"))
            .clone();
        let value = if let Some(reason) = key.strip_prefix("drops.") {
            &network["drops"][reason]
        } else {
            &network[key]
        };
        value
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {key} in {network}"))
    }

    /// The offloads the engine reports in use (`vxnet stats --json`), sorted.
    pub fn offloads(&self) -> Vec<String> {
        let mut v: Vec<String> = self.json("stats")["offloads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    /// The offloads named by the start-up log line `offloads in use: a, b` (`none`), sorted.
    pub fn logged_offloads(&self) -> Vec<String> {
        let log = self.proc.log_text();
        let line = log
            .lines()
            .find_map(|l| l.split_once("offloads in use: ").map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no `offloads in use` line in the log: {log}"));
        let mut v: Vec<String> = line
            .split(',')
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty() && o != "none")
            .collect();
        v.sort();
        v
    }

    /// Per-peer counter `key` from `vxnet peers --json`.
    pub fn peer_stat(&self, peer: IpAddr, key: &str) -> u64 {
        let peers = self.json("peers");
        peers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["address"] == peer.to_string())
            .map(|p| p[key].as_u64().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// Runs `f` on a thread inside host namespace `ns` (for Rust TCP senders/receivers in tests).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        vxnet_dataplane::sys::enter_named_netns_for_current_thread(&ns)
            .unwrap_or_else(|e| panic!("entering netns {ns}: {e}"));
        f()
    })
}

/// One HTTP/1.1 GET of `path` from `addr`, from inside namespace `ns`; returns (status line,
/// body).
pub fn http_get(ns: &str, addr: &'static str, path: &'static str) -> (String, String) {
    in_netns(ns, move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_string(), body.to_string())
    })
    .join()
    .unwrap()
}

/// Deterministic pseudo-random bytes, so a receiver can check every byte without a copy.
pub fn pattern_byte(i: u64) -> u8 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8 ^ (i as u8)
}

/// Receives one TCP connection on `addr` inside `ns`, checks `len` bytes against
/// [`pattern_byte`]; returns the number of bytes that matched before the first mismatch/EOF.
pub fn tcp_receive_checked(
    ns: &str,
    addr: std::net::SocketAddr,
    len: u64,
) -> std::thread::JoinHandle<u64> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = in_netns(ns, move || {
        use std::io::Read;
        let listener = std::net::TcpListener::bind(addr).expect("bind receiver");
        ready_tx.send(()).unwrap();
        let (mut stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut pos = 0u64;
        while pos < len {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for (k, b) in buf[..n].iter().enumerate() {
                if *b != pattern_byte(pos + k as u64) {
                    return pos + k as u64;
                }
            }
            pos += n as u64;
        }
        pos
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("receiver ready");
    handle
}

/// Sends `len` pattern bytes to `addr` from inside `ns`; returns the elapsed time.
pub fn tcp_send_pattern(
    ns: &str,
    addr: std::net::SocketAddr,
    len: u64,
) -> std::thread::JoinHandle<Duration> {
    in_netns(ns, move || {
        use std::io::Write;
        let start = Instant::now();
        let mut stream =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        // A path that stops delivering would otherwise block the write until TCP gives up
        // (minutes); the receiver waits 30 s too.
        stream
            .set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut pos = 0u64;
        while pos < len {
            let n = (len - pos).min(buf.len() as u64) as usize;
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern_byte(pos + k as u64);
            }
            stream.write_all(&buf[..n]).expect("send");
            pos += n as u64;
        }
        stream.shutdown(std::net::Shutdown::Write).ok();
        start.elapsed()
    })
}

/// What a `vxnet demo` or `vxnet bench` run named `STEM` (e.g. `vxbench-PID`) may have left:
/// namespaces `STEM-…` and the directory `TMP/STEM`.
pub fn run_leftovers(stem: &str) -> Vec<String> {
    let prefix = format!("{stem}-");
    let mut found: Vec<String> = String::from_utf8_lossy(&run("ip netns list").stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    let dir = std::env::temp_dir().join(stem);
    if dir.exists() {
        found.push(dir.display().to_string());
    }
    found
}

/// On drop, removes whatever [`run_leftovers`] finds for the stem (only that run's names), so a
/// test whose `vxnet demo`/`bench` failed to clean up leaves nothing behind either.
pub struct SweepRun(pub String);

impl Drop for SweepRun {
    fn drop(&mut self) {
        for name in run_leftovers(&self.0) {
            if name.starts_with('/') {
                let _ = std::fs::remove_dir_all(&name);
            } else {
                let _ = run(&format!("ip netns pids {name} | xargs -r kill -9"));
                let _ = run(&format!("ip netns del {name}"));
            }
        }
    }
}

/// Sends SIGINT to `child` and waits up to `timeout` for it to exit, killing it after that.
/// Its exit status, or `None` when it had to be killed.
pub fn interrupt(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    run(&format!("kill -INT {}", child.id()));
    let exited = wait_for(timeout, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for the child");
    exited.then_some(status)
}

/// Moves `len` pattern bytes over TCP from `from` to `to` (listening on `addr`), checks every
/// byte and panics naming `what` when any is wrong or missing; returns the sender's time.
pub fn transfer_checked(
    what: &str,
    from: &Host,
    to: &Host,
    addr: std::net::SocketAddr,
    len: u64,
) -> Duration {
    let rx = tcp_receive_checked(&to.ns, addr, len);
    let elapsed = tcp_send_pattern(&from.ns, addr, len)
        .join()
        .unwrap_or_else(|_| panic!("{what}: sender failed"));
    let got = rx
        .join()
        .unwrap_or_else(|_| panic!("{what}: receiver failed"));
    assert_eq!(
        got, len,
        "{what}: {got} of {len} bytes arrived intact (first bad or missing byte at {got})"
    );
    elapsed
}
