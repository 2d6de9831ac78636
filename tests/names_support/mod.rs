//! What the names tests share: a DNS and ARP probe and fake resolvers (`nettool.py`,
//! standard-library Python), resolver files under /etc/netns removed even when a test fails,
//! `dig`, and checks made inside containers with their own resolver ([`inside`]).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vxnet_tests::{run, Host, Lab, Proc};

pub mod inside;

const NETTOOL: &str = include_str!("nettool.py");

/// `nettool.py` written into the lab's directory.
pub fn nettool(dir: &Path) -> PathBuf {
    let path = dir.join("nettool.py");
    std::fs::write(&path, NETTOOL).unwrap();
    path
}

/// A resolver for `example.test` (`nettool.py upstream`) on host `at`'s underlay address, and
/// it as the resolver of each host in `hosts` (their namespaces' resolv.conf), so the engines
/// started there afterwards forward outside names to it and never out of the lab.
pub fn fake_upstream(lab: &Lab, at: usize, hosts: Range<usize>, etc: &mut EtcNetns) -> Proc {
    let tool = nettool(&lab.dir);
    let upstream = lab.host(at).underlay;
    let resolver = lab.spawn(
        at,
        &lab.dir.join("upstream.log"),
        &format!("python3 {} upstream {upstream}", tool.display()),
    );
    for i in hosts {
        etc.resolver(
            &lab.host(i).ns,
            &format!("nameserver {upstream}\noptions timeout:1 attempts:1\n"),
        );
    }
    resolver
}

/// Directories under /etc/netns this test made (resolvers for `ip netns exec`), removed on
/// drop whatever happened.
#[derive(Default)]
pub struct EtcNetns(Vec<PathBuf>);

impl EtcNetns {
    /// Makes `ip netns exec NS` (and so an engine started in NS) use `text` as resolv.conf.
    pub fn resolver(&mut self, ns: &str, text: &str) {
        let dir = Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), text).unwrap();
        self.0.push(dir);
    }

    /// A directory `vxnet attach` may create, to be removed at the end too.
    pub fn expect(&mut self, ns: &str) {
        self.0.push(Path::new("/etc/netns").join(ns));
    }
}

impl Drop for EtcNetns {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A namespace by name, for `sh`/`must`.
pub fn ns(name: &str) -> Host {
    Host {
        ns: name.to_string(),
        underlay: std::net::IpAddr::from([0, 0, 0, 0]),
        index: 0,
    }
}

/// `dig ARGS` in namespace `ns` (its /etc/netns resolver when it has one): one try, 2 s.
pub fn dig(ns_name: &str, args: &str) -> String {
    let out = ns(ns_name).sh(&format!("dig +tries=1 +time=2 {args}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The addresses `dig +short NAME` prints (A records only).
pub fn addresses(ns_name: &str, name: &str) -> Vec<String> {
    let mut v: Vec<String> = dig(ns_name, &format!("+short {name}"))
        .lines()
        .map(str::trim)
        .filter(|l| l.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// The status dig reports (NOERROR, NXDOMAIN, SERVFAIL, ...), or "" without an answer.
pub fn status(ns_name: &str, args: &str) -> String {
    let text = dig(ns_name, args);
    text.split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("")
        .to_string()
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A probe polling a DNS server from inside a namespace until names appear (or vanish).
pub struct Watch {
    child: std::process::Child,
}

impl Watch {
    /// Starts `nettool.py wait SERVER MODE TIMEOUT NAMES` in `ns_name`.
    pub fn start(
        tool: &Path,
        ns_name: &str,
        server: &str,
        mode: &str,
        timeout: Duration,
        names: &[String],
    ) -> Watch {
        let enter = ["ip", "netns", "exec", ns_name].map(String::from);
        Watch::start_in(&enter, tool, server, mode, timeout, names)
    }

    /// [`Watch::start`] in the network namespace the command `enter` runs its arguments in
    /// (e.g. `nsenter --net=/proc/PID/ns/net`, a container's).
    pub fn start_in(
        enter: &[String],
        tool: &Path,
        server: &str,
        mode: &str,
        timeout: Duration,
        names: &[String],
    ) -> Watch {
        let child = Command::new(&enter[0])
            .args(&enter[1..])
            .arg("python3")
            .arg(tool)
            .args(["wait", server, mode, &timeout.as_secs_f64().to_string()])
            .args(names)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Watch { child }
    }

    /// Name -> the Unix time it appeared (vanished); names that timed out are missing.
    pub fn finish(self) -> HashMap<String, f64> {
        let out = self.child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let name = words.next()?.to_string();
                let at: f64 = words.next()?.parse().ok()?;
                Some((name, at))
            })
            .collect()
    }
}

/// The `p`-th percentile (nearest rank) of `samples`.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The name service's counters of an engine (`vxnet name ls --json`).
pub fn dns_counters(engine: &vxnet_tests::Vxnet) -> HashMap<String, u64> {
    let report = engine.json("name ls");
    report["counters"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

/// `ip netns exec NS python3 nettool.py ARGS`, its stdout.
pub fn tool_in(tool: &Path, ns_name: &str, args: &str) -> String {
    let out = run(&format!(
        "ip netns exec {ns_name} python3 {} {args}",
        tool.display()
    ));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An attached endpoint's address (from `vxnet attach --json`), without the prefix length.
pub fn address_of(endpoint: &serde_json::Value) -> String {
    let cidr = endpoint["address"].as_str().unwrap();
    cidr.split('/').next().unwrap().to_string()
}
