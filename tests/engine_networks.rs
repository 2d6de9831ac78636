//! Networks added to and removed from a running engine (what the cluster control plane does when
//! `vxnet network create`/`rm` happens elsewhere): the new network forwards, the others keep
//! forwarding through the change without loss, a removed network's TAP is gone, and the
//! cluster-sourced peers and MACs drive flooding and the allow-list.
//!
//! The engines run in this process, on threads inside the lab's host namespaces; every call
//! that creates devices is made from a thread in the host's namespace, as in `vxnet run`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::time::Duration;

use vxnet_dataplane::control::server::stats;
use vxnet_dataplane::fdb::{EntryKind, FdbRow};
use vxnet_dataplane::{Engine, EngineConfig, EngineControl, EngineError, NetworkConfig};
use vxnet_tests::{in_netns, wait_for, Family, Host, Lab};

fn start_engine(lab: &Lab, i: usize) -> Engine {
    let host = lab.host(i).clone();
    let control = lab.dir.join(format!("engine{i}.sock"));
    in_netns(&host.ns, move || {
        Engine::start(EngineConfig {
            local: host.underlay,
            port: 4789,
            esp_port: 4500,
            bind_esp: false,
            networks: Vec::new(),
            ageing_secs: 300,
            learning: true,
            max_fdb: 1024,
            accept_any: false,
            control,
            control_group: None,
            threads: 2,
            offloads: true,
            tunnel_gso: true,
            tuning: Default::default(),
            state_dir: None,
        })
    })
    .join()
    .unwrap()
    .expect("engine starts without networks")
}

fn network(name: &str, vni: u32, address: &str, remotes: &[IpAddr]) -> NetworkConfig {
    NetworkConfig {
        address: Some(address.parse().unwrap()),
        remotes: remotes.iter().map(|r| r.to_string()).collect(),
        ..NetworkConfig::plain(name, vni.try_into().unwrap(), &format!("vx{name}"))
    }
}

/// Runs a control call on a thread in host `ns`, where the engine's devices live.
fn in_host<T: Send + 'static>(
    ns: &str,
    control: &EngineControl,
    f: impl FnOnce(&EngineControl) -> T + Send + 'static,
) -> T {
    let control = control.clone();
    in_netns(ns, move || f(&control)).join().unwrap()
}

fn tx_packets(engine: &Engine, name: &str) -> u64 {
    let report = stats(engine.state());
    report
        .networks
        .iter()
        .find(|n| n.name == name)
        .map(|n| n.traffic.tx_packets)
        .unwrap_or(0)
}

/// Two hosts on one LAN, each with an engine started without networks.
struct Pair {
    hosts: [Host; 2],
    engines: [Engine; 2],
    controls: [EngineControl; 2],
    /// Each host's peer: the other's underlay address.
    remote: [IpAddr; 2],
    // Dropped last: the engines close their TAPs before the namespaces go.
    _lab: Lab,
}

impl Pair {
    fn new(test: &str) -> Option<Pair> {
        let lab = Lab::lan(test, 2, Family::V4)?;
        let hosts = [lab.host(0).clone(), lab.host(1).clone()];
        for host in &hosts {
            // No IPv6 autoconfiguration chatter (multicast, so flooded) to blur flood counts.
            host.must("sysctl -qw net.ipv6.conf.default.disable_ipv6=1");
        }
        let engines = [start_engine(&lab, 0), start_engine(&lab, 1)];
        let controls = [engines[0].control(), engines[1].control()];
        let remote = [hosts[1].underlay, hosts[0].underlay];
        Some(Pair {
            hosts,
            engines,
            controls,
            remote,
            _lab: lab,
        })
    }

    /// Adds network `name` on both hosts, addressed `PREFIX.{1,2}/24`, with each other as
    /// `--remote` or with no static peers at all.
    fn add_on_both(&self, name: &str, vni: u32, prefix: &str, static_peers: bool) {
        for i in 0..2 {
            let remotes = if static_peers {
                vec![self.remote[i]]
            } else {
                Vec::new()
            };
            let cfg = network(name, vni, &format!("{prefix}.{}/24", i + 1), &remotes);
            in_host(&self.hosts[i].ns, &self.controls[i], move |c| {
                c.add_network(cfg)
            })
            .unwrap();
        }
    }
}

#[test]
fn networks_come_and_go_while_the_engine_runs() {
    let Some(pair) = Pair::new("engine_networks_come_and_go") else {
        return;
    };
    let [h0, h1] = &pair.hosts;
    let (engines, controls) = (&pair.engines, &pair.controls);
    pair.add_on_both("a", 100, "10.61.0", true);
    // A given MAC is the TAP's (engines started by the cluster derive a stable one).
    let mut with_mac = network("m", 101, "10.65.0.1/24", &[]);
    with_mac.mac = Some("02:00:5e:10:20:30".parse().unwrap());
    in_host(&h0.ns, &controls[0], move |c| c.add_network(with_mac)).unwrap();
    assert_eq!(
        h0.must("cat /sys/class/net/vxm/address").trim(),
        "02:00:5e:10:20:30"
    );
    assert_eq!(
        controls[0].local_mac("m").unwrap().to_string(),
        "02:00:5e:10:20:30"
    );
    assert!(in_host(&h0.ns, &controls[0], |c| c.remove_network("m")).unwrap());
    assert!(h0.ping("10.61.0.2", 2), "network a forwards after add");
    let a_sent_before = tx_packets(&engines[0], "a");
    assert!(a_sent_before > 0);

    // Network b is added on both hosts while a ping on network a is running.
    let pinger = {
        let h0 = h0.clone();
        std::thread::spawn(move || h0.sh("ping -c 40 -i 0.05 -W 1 10.61.0.2"))
    };
    std::thread::sleep(Duration::from_millis(300));
    pair.add_on_both("b", 200, "10.62.0", true);
    let ping_a = pinger.join().unwrap();
    let summary = String::from_utf8_lossy(&ping_a.stdout).into_owned();
    assert!(
        summary.contains("40 received"),
        "network a lost packets while b was added: {summary}"
    );
    assert!(h1.ping("10.62.0.1", 2), "network b forwards after add");
    assert!(
        tx_packets(&engines[0], "a") >= a_sent_before + 40,
        "network a's counters survive the worker restart"
    );
    assert_eq!(
        controls[0].network_names(),
        vec!["a".to_string(), "b".to_string()]
    );

    // Duplicates are refused without disturbing anything.
    let dup_vni = network("c", 200, "10.63.0.1/24", &[]);
    let err = in_host(&h0.ns, &controls[0], move |c| c.add_network(dup_vni)).unwrap_err();
    assert!(matches!(err, EngineError::Config(_)), "{err}");
    let dup_name = network("a", 300, "10.63.0.1/24", &[]);
    let err = in_host(&h0.ns, &controls[0], move |c| c.add_network(dup_name)).unwrap_err();
    assert!(matches!(err, EngineError::AlreadyServed(_)), "{err}");
    assert!(
        h0.sh("ip link show vxc").status.code() != Some(0),
        "a refused network leaves no TAP"
    );

    // Removing b on host 1: its TAP goes, b stops, a carries on.
    assert!(in_host(&h1.ns, &controls[1], |c| c.remove_network("b")).unwrap());
    assert!(!in_host(&h1.ns, &controls[1], |c| c.remove_network("b")).unwrap());
    assert!(
        wait_for(Duration::from_secs(2), || !h1
            .sh("ip link show vxb")
            .status
            .success()),
        "the removed network's TAP is gone"
    );
    assert!(!h0.ping("10.62.0.2", 1), "b no longer answers on host 1");
    assert!(
        h0.ping("10.61.0.2", 2),
        "a still forwards after b's removal"
    );
    assert_eq!(controls[1].network_names(), vec!["a".to_string()]);
}

#[test]
fn cluster_peers_and_macs_drive_flooding_and_acceptance() {
    let Some(pair) = Pair::new("engine_networks_cluster_peers") else {
        return;
    };
    let [h0, _] = &pair.hosts;
    let (engines, controls, remote) = (&pair.engines, &pair.controls, pair.remote);
    // No --remote: peers come only from the "cluster".
    pair.add_on_both("c", 300, "10.64.0", false);
    assert!(
        !h0.ping("10.64.0.2", 1),
        "no peers yet: nothing to flood to"
    );
    assert!(!controls[0].set_cluster_peers("nope", vec![remote[0]]));
    for (control, peer) in controls.iter().zip(remote) {
        assert!(control.set_cluster_peers("c", vec![peer]));
    }
    assert!(
        h0.ping("10.64.0.2", 2),
        "cluster peers make the network work"
    );

    // Published MACs become static entries: unicast needs no flooding.
    for i in 0..2 {
        let other_mac = controls[1 - i].local_mac("c").expect("TAP has a MAC");
        assert!(controls[i].set_cluster_macs("c", vec![(other_mac, remote[i])]));
    }
    let other_mac = controls[1].local_mac("c").unwrap();
    let rows = fdb_rows(&engines[0], "c");
    assert!(
        rows.iter().any(|r| r.mac == other_mac.to_string()
            && r.dst == remote[0]
            && r.kind == EntryKind::Static),
        "cluster MAC installed as a static entry: {rows:?}"
    );
    let flooded_before = flooded(&engines[0], "c");
    h0.must("ip neigh flush dev vxc");
    assert!(h0.ping("10.64.0.2", 3));
    // ARP requests are broadcast and still flood; the 3 unicast echoes must not.
    assert!(
        flooded(&engines[0], "c") <= flooded_before + 1,
        "unicast to a published MAC was flooded"
    );

    // The peer leaves: its MACs and address are withdrawn, so nothing reaches it any more.
    for control in controls {
        assert!(control.set_cluster_macs("c", Vec::new()));
        assert!(control.set_cluster_peers("c", Vec::new()));
    }
    assert!(
        !fdb_rows(&engines[0], "c")
            .iter()
            .any(|r| r.kind == EntryKind::Static),
        "withdrawn cluster MACs are removed"
    );
    h0.must("ip neigh flush dev vxc");
    assert!(!h0.ping("10.64.0.2", 1), "withdrawn peers: no path");
}

fn fdb_rows(engine: &Engine, name: &str) -> Vec<FdbRow> {
    engine
        .state()
        .forwarder()
        .networks()
        .iter()
        .find(|n| n.settings.name == name)
        .map(|n| n.fdb.rows(engine.state().now()))
        .unwrap()
}

fn flooded(engine: &Engine, name: &str) -> u64 {
    stats(engine.state())
        .networks
        .iter()
        .find(|n| n.name == name)
        .map(|n| n.flooded)
        .unwrap()
}
