//! The cluster lab the cluster tests share: hosts 0..3 run vxnet engines, host 3 runs a real
//! etcd, and host 0 has initialised the cluster (the manager).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[allow(unused_imports)] // Each test file uses its own subset.
pub use vxnet_tests::cli::{assert_cli_error, stderr, stdout};
pub use vxnet_tests::etcd;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use etcd::EtcdServer;
use serde_json::Value;
use vxnet_dataplane::ClusterInfo;
use vxnet_tests::{have_tool, vxnet_bin, wait_for, Family, Lab, Vxnet};

/// Hosts 0..3 run vxnet; host 3 (10.0.0.4) runs etcd (and plays the outsider in one test).
pub const ENGINES: usize = 3;
pub const ETCD_HOST: usize = 3;

pub struct ClusterLab {
    // Field order is drop order: engines leave first, then etcd stops, then the namespaces go.
    pub engines: Vec<Option<Vxnet>>,
    pub etcd: EtcdServer,
    pub lab: Lab,
    pub url: String,
    pub worker_token: String,
    pub ttl: u32,
}

impl ClusterLab {
    /// The LAN, etcd, and a cluster initialised on host 0 (the manager). `None` = skip.
    pub fn new(test: &str, ttl: u32) -> Option<ClusterLab> {
        ClusterLab::new_with(test, ttl, false)
    }

    /// Like [`ClusterLab::new`], with etcd authentication on and the cluster initialised with
    /// etcd's root identity, so it has its own etcd roles and workers join by request.
    pub fn new_authenticated(test: &str, ttl: u32) -> Option<ClusterLab> {
        ClusterLab::new_with(test, ttl, true)
    }

    fn new_with(test: &str, ttl: u32, auth: bool) -> Option<ClusterLab> {
        let lab = Lab::lan(test, ENGINES + 1, Family::V4)?;
        if !have_tool(test, "etcd") {
            return None;
        }
        for i in 0..ENGINES {
            // TAPs and bridges created later inherit this: no IPv6 autoconfiguration chatter,
            // and no IGMP reports for link-local groups (a bridge joins 224.0.0.106, the
            // multicast snoopers' group), so the only floods are the ones a test causes.
            lab.host(i).must(
                "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 \
                 net.ipv4.igmp_link_local_mcast_reports=0",
            );
        }
        let etcd_ns = lab.host(ETCD_HOST).ns.clone();
        let etcd = EtcdServer::start(
            &lab.dir.join("etcd"),
            &["ip", "netns", "exec", &etcd_ns],
            lab.host(ETCD_HOST).underlay,
            2379,
            2380,
        );
        let url = etcd.url();
        let mut c = ClusterLab {
            engines: (0..ENGINES).map(|_| None).collect(),
            etcd,
            lab,
            url,
            worker_token: String::new(),
            ttl,
        };
        let mut identity = String::new();
        if auth {
            let ctl = format!("etcdctl --endpoints=http://{}:2379", c.underlay(ETCD_HOST));
            let etcd_host = c.lab.host(ETCD_HOST);
            etcd_host.must(&format!("{ctl} user add root --new-user-password rootpw"));
            etcd_host.must(&format!("{ctl} auth enable"));
            let pw = c.lab.dir.join("root-password");
            std::fs::write(&pw, "rootpw\n").unwrap();
            identity = format!("--store-user root --store-password-file {}", pw.display());
        }
        let init = c.cli_json(
            0,
            &format!(
                "cluster init --store {} --local {} {identity}",
                c.url,
                c.underlay(0)
            ),
        );
        c.worker_token = init["worker_token"].as_str().unwrap().to_string();
        Some(c)
    }

    pub fn underlay(&self, i: usize) -> IpAddr {
        self.lab.host(i).underlay
    }

    pub fn state_dir(&self, i: usize) -> PathBuf {
        self.lab.dir.join(format!("state{i}"))
    }

    /// `vxnet ARGS --state-dir <host i's>` inside host i.
    pub fn cli(&self, i: usize, args: &str) -> Output {
        self.lab.host(i).sh(&format!(
            "{} {args} --state-dir {}",
            vxnet_bin().display(),
            self.state_dir(i).display()
        ))
    }

    pub fn cli_json(&self, i: usize, args: &str) -> Value {
        let out = self.cli(i, &format!("{args} --json"));
        assert!(out.status.success(), "vxnet {args}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Starts host i's engine: the manager with --store, workers with the token. `extra` is
    /// appended (e.g. `--no-publish-macs`); `name` names its log and control socket.
    pub fn start(&mut self, i: usize, name: &str, join: &str, extra: &str) {
        let args = format!(
            "--local {} --state-dir {} --lease-ttl {} {join} {extra}",
            self.underlay(i),
            self.state_dir(i).display(),
            self.ttl
        );
        let v = self.lab.vxnet(i, name, &args);
        self.engines[i] = Some(v);
    }

    /// First start: host 0 by store address, the others with the worker token.
    pub fn join(&mut self, i: usize, extra: &str) {
        let join = if i == 0 {
            format!("--store {}", self.url)
        } else {
            format!("--token {}", self.worker_token)
        };
        self.start(i, &format!("h{i}"), &join, extra);
    }

    /// Stops host i's engine with SIGTERM (it leaves the cluster: lease revoked) and checks it
    /// exits cleanly.
    pub fn terminate(&mut self, i: usize) {
        let mut engine = self.engines[i].take().unwrap();
        let status = engine.proc.terminate(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "host {i}'s engine did not stop cleanly ({status:?}): {}",
            engine.proc.log_text()
        );
    }

    pub fn engine(&self, i: usize) -> &Vxnet {
        self.engines[i].as_ref().expect("engine running")
    }

    /// Host i's entry for network `name` in `vxnet networks --json`, if served.
    pub fn served(&self, i: usize, name: &str) -> Option<Value> {
        let nets = self.engine(i).json("networks");
        nets.as_array()?.iter().find(|n| n["name"] == name).cloned()
    }

    pub fn flood(&self, i: usize, name: &str) -> Vec<String> {
        self.served(i, name)
            .map(|n| {
                n["flood"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until host i serves `name` with exactly `peers` as its flood list.
    pub fn wait_peers(&self, i: usize, name: &str, peers: &[usize], timeout: Duration) {
        let mut want: Vec<String> = peers
            .iter()
            .map(|p| self.underlay(*p).to_string())
            .collect();
        want.sort();
        let ok = wait_for(timeout, || {
            let mut got = self.flood(i, name);
            got.sort();
            got == want
        });
        assert!(
            ok,
            "host {i}: network {name} flood list {:?}, want {want:?}; log:\n{}",
            self.flood(i, name),
            self.engine(i).proc.log_text()
        );
    }

    /// Network "blue" (10.1.0.0/24) created, every host joined and flooding to all the others.
    pub fn blue_mesh(&mut self) {
        self.create("blue", "--subnet 10.1.0.0/24");
        for i in 0..ENGINES {
            self.join(i, "");
        }
        self.wait_full_mesh("blue", Duration::from_secs(5));
    }

    /// Waits until every host floods `name` to all the others.
    pub fn wait_full_mesh(&self, name: &str, timeout: Duration) {
        for i in 0..ENGINES {
            let others: Vec<usize> = (0..ENGINES).filter(|p| *p != i).collect();
            self.wait_peers(i, name, &others, timeout);
        }
    }

    /// Host i's overlay address on `name` (allocated from the subnet), without the prefix.
    pub fn overlay_ip(&self, i: usize, name: &str) -> String {
        let net = self.served(i, name).expect("network served");
        let addr = net["address"].as_str().expect("an allocated address");
        addr.split('/').next().unwrap().to_string()
    }

    /// What host `i`'s engine reports of its cluster (`None`: not in cluster mode).
    pub fn cluster_info(&self, i: usize) -> Option<ClusterInfo> {
        self.engine(i).stats().cluster
    }

    /// The cluster's keys under `<sub>` (relative to `/vxnet/<cluster_id>/`, `sub` stripped) and
    /// their values as etcd holds them, read with etcdctl in etcd's namespace.
    pub fn store_keys(&self, sub: &str) -> BTreeMap<String, String> {
        let out = self.lab.host(ETCD_HOST).must(&format!(
            "etcdctl --endpoints {} get --prefix /vxnet/",
            self.etcd.endpoints()[0]
        ));
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter_map(|kv| {
                let rest = kv[0].splitn(4, '/').nth(3)?;
                Some((rest.strip_prefix(sub)?.to_string(), kv.get(1)?.to_string()))
            })
            .collect()
    }

    pub fn create(&self, name: &str, extra: &str) -> Value {
        self.cli_json(0, &format!("network create {name} {extra}"))
    }
}

/// Pings once with a 1 s deadline until it succeeds or `timeout` passes.
pub fn ping_until(lab: &Lab, from: usize, to: &str, timeout: Duration) -> bool {
    wait_for(timeout, || {
        lab.host(from)
            .sh(&format!("ping -c 1 -W 1 {to}"))
            .status
            .success()
    })
}
