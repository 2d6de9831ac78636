//! Endpoints in cluster mode, where every network is bridged by default (`vb-blue`): `vxnet attach` on one host publishes the endpoint's record and
//! address claim in etcd under the engine's lease; every host lists it; addresses and names are
//! unique across hosts; an engine killed with SIGKILL takes its endpoints out of the store
//! within the lease TTL, and its restart puts them back (same address) and forwards again; a
//! detach removes record and claim everywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_lab;

use std::time::Duration;

use cluster_lab::{assert_cli_error, ClusterLab, ETCD_HOST};
use serde_json::Value;
use vxnet_tests::{run, wait_for, Host};

const TTL: u32 = 4;

fn endpoints(c: &ClusterLab, i: usize) -> Vec<Value> {
    c.engine(i).json("endpoints --network blue")["endpoints"]
        .as_array()
        .unwrap()
        .clone()
}

fn named<'a>(eps: &'a [Value], name: &str) -> Option<&'a Value> {
    eps.iter().find(|e| e["name"] == name)
}

/// The store's keys under this cluster's `node/` prefix (endpoint records and address claims).
fn node_keys(c: &ClusterLab) -> Vec<String> {
    let out = c.lab.host(ETCD_HOST).must(&format!(
        "etcdctl --endpoints=http://{}:2379 get --prefix /vxnet/ --keys-only",
        c.underlay(ETCD_HOST)
    ));
    out.lines()
        .filter(|l| l.contains("/endpoints/") || l.contains("/addrs/"))
        .map(str::to_owned)
        .collect()
}

/// SIGKILL to host `i`'s engine, waiting until it is gone (a restart must not meet it).
fn kill9(c: &mut ClusterLab, i: usize) {
    let mut engine = c.engines[i].take().unwrap();
    engine.proc.child.kill().unwrap();
    engine.proc.child.wait().unwrap();
}

fn ns(name: &str) -> Host {
    Host {
        ns: name.to_string(),
        underlay: "0.0.0.0".parse().unwrap(),
        index: 0,
    }
}

#[test]
fn cluster_endpoints_are_published_leased_and_reasserted() {
    let Some(mut c) = ClusterLab::new("ep_cluster", TTL) else {
        return;
    };
    c.create("blue", "--subnet 10.1.0.0/24");
    for i in 0..2 {
        c.join(i, "");
    }
    c.wait_peers(0, "blue", &[1], Duration::from_secs(10));
    c.wait_peers(1, "blue", &[0], Duration::from_secs(10));
    let node0 = c.cluster_info(0).unwrap().node_id;
    // Bridged by default: the TAP is a port of vb-blue, which holds the host's address.
    let gw0 = c.overlay_ip(0, "blue");
    assert!(c
        .lab
        .host(0)
        .must("ip -o link show vx-blue")
        .contains("master vb-blue"));
    assert!(c.lab.host(0).must("ip -o addr show vb-blue").contains(&gw0));
    let ca = c.lab.container("ca");
    let cb = c.lab.container("cb");

    let web = c.engine(0).json(&format!(
        "attach --network blue --netns {ca} --name web --alias www"
    ));
    let web_addr = web["address"].as_str().unwrap().to_owned();
    let web_ip = web_addr.split('/').next().unwrap().to_owned();
    assert_eq!(web["node"], node0.as_str(), "{web}");
    assert_eq!(web["gateway"], gw0.as_str(), "{web}");
    // Every host lists it, from the store.
    assert!(
        wait_for(Duration::from_secs(5), || named(&endpoints(&c, 1), "web")
            .is_some_and(
                |e| e["address"] == web_addr.as_str() && e["node"] == node0.as_str()
            )),
        "host 1 does not list web: {:?}",
        endpoints(&c, 1)
    );
    let id = web["id"].as_str().unwrap();
    let keys = node_keys(&c);
    for want in [
        format!("/node/{node0}/endpoints/blue/{id}"),
        format!("/node/{node0}/addrs/blue/{web_ip}"),
    ] {
        assert!(
            keys.iter().any(|k| k.ends_with(&want)),
            "{want} in {keys:?}"
        );
    }

    // Addresses and names are the cluster's, not one host's.
    let engine1 = c.engine(1).control.display().to_string();
    for (args, error) in [
        (
            format!("--address {web_addr}"),
            format!("address {web_ip} is already taken in network blue"),
        ),
        (
            "--name WEB".to_owned(),
            "name WEB is already taken in network blue".to_owned(),
        ),
    ] {
        let out = run(&format!(
            "{} attach --network blue --netns {cb} {args} --control {engine1}",
            vxnet_tests::vxnet_bin().display()
        ));
        assert_cli_error(&out, &error);
    }
    let db = c
        .engine(1)
        .json(&format!("attach --network blue --netns {cb} --name db"));
    assert_ne!(db["address"], web["address"]);
    assert!(ns(&cb).ping(&web_ip, 5), "db cannot reach web");

    // SIGKILL: the lease expires and the endpoint leaves every view and the store.
    kill9(&mut c, 0);
    assert!(
        wait_for(Duration::from_secs(u64::from(TTL) * 4), || named(
            &endpoints(&c, 1),
            "web"
        )
        .is_none()),
        "web still listed after its engine died: {:?}",
        endpoints(&c, 1)
    );
    // Only the host's own address (persistent) is left of it.
    let left: Vec<String> = node_keys(&c)
        .into_iter()
        .filter(|k| k.contains(&format!("/node/{node0}/")))
        .collect();
    assert!(
        left.len() == 1 && left[0].contains("/addrs/blue/"),
        "{left:?}"
    );

    // The restarted engine re-asserts it from its state dir, on the same address, and forwards.
    c.start(0, "h0b", "", "");
    assert!(
        wait_for(Duration::from_secs(15), || named(&endpoints(&c, 1), "web")
            .is_some_and(|e| e["address"] == web_addr.as_str())),
        "web not re-asserted: {:?}\n{}",
        endpoints(&c, 1),
        c.engine(0).proc.log_text()
    );
    assert!(
        ns(&cb).ping(&web_ip, 10),
        "db cannot reach web after the restart"
    );

    // Killed and restarted at once: the records still under the dead engine's lease move to
    // the new one, so they outlive the old lease.
    kill9(&mut c, 0);
    c.start(0, "h0c", "", "");
    std::thread::sleep(Duration::from_secs(u64::from(TTL) * 2 + 1));
    assert!(
        named(&endpoints(&c, 1), "web").is_some_and(|e| e["address"] == web_addr.as_str()),
        "web lost with the old lease: {:?}\n{}",
        endpoints(&c, 1),
        c.engine(0).proc.log_text()
    );

    // Detach: record and claim gone everywhere.
    c.engine(0)
        .json(&format!("detach --network blue --netns {ca}"));
    assert!(
        wait_for(Duration::from_secs(5), || named(&endpoints(&c, 1), "web")
            .is_none()),
        "{:?}",
        endpoints(&c, 1)
    );
    assert!(
        !node_keys(&c)
            .iter()
            .any(|k| k.contains(&format!("/node/{node0}/endpoints/"))
                || k.ends_with(&format!("/addrs/blue/{web_ip}"))),
        "{:?}",
        node_keys(&c)
    );
}
