//! Endpoints in static mode: namespaces ("containers") attached to a bridge-mode network on two
//! hosts reach each other, the gateway and the other host across the overlay; attach is
//! idempotent; every bad request is one `error:` line that leaves nothing behind; an engine
//! killed with SIGKILL or stopped with SIGTERM leaves bridge and endpoints in place and forwards
//! again when restarted; `--cleanup` removes what vxnet made.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use vxnet_tests::cli::assert_cli_error;
use vxnet_tests::{run, transfer_checked, vxnet_bin, Bridged, Family, Host, Lab, Vxnet};

/// Two bridged networks: `blue` (/24, each host its own pool) and `tiny` (/30: one address
/// besides the gateway).
const NETWORKS: [Bridged<'static>; 2] = [
    Bridged {
        name: "blue",
        vni: 42,
        address: ["10.1.0.1/24", "10.1.0.2/24"],
        pool: Some(["10.1.0.128/25", "10.1.0.64/26"]),
    },
    Bridged {
        name: "tiny",
        vni: 43,
        address: ["10.3.0.1/30", "10.3.0.2/30"],
        pool: None,
    },
];

fn engine(lab: &Lab, i: usize, extra: &str) -> Vxnet {
    lab.bridged_engine(i, &NETWORKS, extra)
}

fn ns(name: &str) -> Host {
    Host {
        ns: name.to_string(),
        underlay: IpAddr::from([0, 0, 0, 0]),
        index: 0,
    }
}

/// Interface names in `ns`, sorted.
fn links(ns_name: &str) -> Vec<String> {
    let out = ns(ns_name).must("ip -o link show | cut -d: -f2 | cut -d@ -f1");
    let mut v: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
    v.sort();
    v
}

fn endpoints(e: &Vxnet) -> Vec<Value> {
    e.json("endpoints")["endpoints"].as_array().unwrap().clone()
}

#[test]
fn static_endpoints_forward_survive_restarts_and_refuse_bad_input() {
    let Some(mut lab) = Lab::lan("ep_static", 2, Family::V4) else {
        return;
    };
    let c0 = lab.container("c0");
    let c1 = lab.container("c1");
    let c2 = lab.container("c2");
    let c3 = lab.container("c3");
    let h0 = lab.host(0).ns.clone();
    let mut a = engine(&lab, 0, "");
    let b = engine(&lab, 1, "");

    let web = a.json(&format!(
        "attach --network blue --netns {c0} --name web --alias www"
    ));
    assert_eq!(web["address"], "10.1.0.129/24", "{web}");
    assert_eq!(web["gateway"], "10.1.0.1");
    assert_eq!(web["mtu"], 1450);
    assert_eq!(web["aliases"], serde_json::json!(["www"]));
    let db = b.json(&format!(
        "attach --network blue --netns /run/netns/{c1} --name db --address 10.1.0.70/24"
    ));
    assert_eq!(db["address"], "10.1.0.70/24");
    // Every port of the bridge and the container's end carry the overlay MTU.
    let host_if = web["host_ifname"].as_str().unwrap().to_string();
    for dev in ["vb42", "vx42", &host_if] {
        let line = lab.host(0).must(&format!("ip -o link show {dev}"));
        assert!(line.contains("mtu 1450"), "{line}");
    }
    assert!(ns(&c0).must("ip -o link show eth0").contains("mtu 1450"));
    assert!(lab
        .host(0)
        .must(&format!("ip -o link show {host_if}"))
        .contains("master vb42"));
    assert!(ns(&c0)
        .must("ip route")
        .contains("default via 10.1.0.1 dev eth0"));
    assert!(ns(&c0).ping("10.1.0.1", 3), "gateway");
    assert!(ns(&c0).ping("10.1.0.70", 5), "endpoint across hosts");
    assert!(ns(&c1).ping("10.1.0.129", 3), "and back");
    assert!(ns(&c0).ping("10.1.0.2", 3), "the other host's bridge");
    // A container's TCP superframes cross the bridge into the TAP whole (the engine sends each
    // as one tunnel superframe, or segments it itself): a TAP port capped below what the bridge
    // and the veths allow made the bridge cut each one in software first.
    // (segments sent inside superframes, segments sent in all)
    let in_superframes = |v: &Vxnet| {
        let report = v.stats();
        let net = report.networks.iter().find(|n| n.vni == 42).unwrap();
        let tunnel = report.tunnel_gso.map_or(0, |t| t.segments);
        (net.tso_segments + tunnel, net.traffic.tx_packets)
    };
    let before = in_superframes(&a);
    let to_db = std::net::SocketAddr::new("10.1.0.70".parse().unwrap(), 5201);
    transfer_checked("c0 to db", &ns(&c0), &ns(&c1), to_db, 4 << 20);
    let after = in_superframes(&a);
    let (whole, sent) = (after.0 - before.0, after.1 - before.1);
    // Measured: 3002 of 3004 whole; with the cap 425 of 3004.
    assert!(
        whole * 10 > sent * 8,
        "superframes from the bridge were cut: {whole} of {sent} segments came in superframes"
    );

    // The same namespace and interface again: the same endpoint, nothing new.
    let again = a.json(&format!(
        "attach --network blue --netns {c0} --name web --alias www"
    ));
    assert_eq!(again, web);
    assert_eq!(endpoints(&a).len(), 1);

    // The tiny network's one free address goes to c2; c3 then finds it exhausted.
    let tiny = a.json(&format!("attach --network tiny --netns {c2}"));
    assert_eq!(tiny["address"], "10.3.0.2/30");

    let records = lab.dir.join("state0/endpoints.json");
    let snapshot = || {
        (
            links(&h0),
            links(&c2),
            links(&c3),
            endpoints(&a),
            std::fs::read_to_string(&records).unwrap(),
        )
    };
    let before = snapshot();
    let bad: &[(String, &str)] = &[
        (
            format!("attach --network blue --netns {}nope", lab.id),
            "no network namespace at",
        ),
        (
            "attach --network blue --pid 999999999".into(),
            "no network namespace at /proc/999999999/ns/net",
        ),
        (
            format!("attach --network blue --netns {c3} --name web"),
            "name web is already taken in network blue",
        ),
        (
            format!("attach --network blue --netns {c3} --name WWW"),
            "already taken",
        ),
        (
            format!("attach --network blue --netns {c3} --address 10.9.0.5/24"),
            "outside the network's subnet",
        ),
        (
            format!("attach --network blue --netns {c3} --address 10.1.0.129/24"),
            "address 10.1.0.129 is already taken in network blue",
        ),
        (
            format!("attach --network blue --netns {c3} --address 10.1.0.1/24"),
            "gateway",
        ),
        (
            format!("attach --network tiny --netns {c3}"),
            "no free address left in network tiny",
        ),
        (
            format!("attach --network green --netns {c3}"),
            "network green is not served by this engine",
        ),
        // Hostile: the engine's own namespace, a file that is no namespace, an interface the
        // namespace has, a name the kernel would cut, a MAC that is not unicast.
        (
            "attach --network blue --netns /proc/self/ns/net".into(),
            "the engine's own network namespace",
        ),
        (
            "attach --network blue --netns /dev/null".into(),
            "is not a network namespace",
        ),
        (
            format!("attach --network blue --netns {c3} --ifname lo"),
            "interface lo already exists in the namespace",
        ),
        (
            format!("attach --network blue --netns {c3} --ifname ../eth0"),
            "invalid interface name",
        ),
        (
            format!("attach --network blue --netns {c3} --name a.b"),
            "is not valid",
        ),
        (
            format!("attach --network blue --netns {c3} --mac 01:00:5e:00:00:01"),
            "not a unicast MAC",
        ),
    ];
    for (args, message) in bad {
        let out = a.ctl(args);
        assert_cli_error(&out, message);
        assert_eq!(snapshot(), before, "`{args}` left something behind");
    }
    // No engine at the control path.
    let out = run(&format!(
        "{} attach --network blue --netns {c3} --control {}",
        vxnet_bin().display(),
        lab.dir.join("nothing.sock").display()
    ));
    assert_cli_error(&out, "no vxnet engine at");

    // SIGKILL: the TAP goes with the process, the bridge and the endpoint stay ...
    a.proc.child.kill().unwrap();
    let _ = a.proc.child.wait();
    assert!(lab
        .host(0)
        .must("ip -o link show master vb42")
        .contains(&host_if));
    assert!(links(&c0).contains(&"eth0".to_string()));
    // ... and forward again once the engine is back.
    let mut a = engine(&lab, 0, "");
    assert!(ns(&c0).ping("10.1.0.70", 10), "after kill -9 and restart");
    assert_eq!(endpoints(&a), vec![web.clone(), tiny.clone()]);

    // A detach by name, then again (gone is fine).
    let detached = b.json("detach --network blue --name db");
    assert_eq!(detached["released"][0]["name"], "db");
    assert!(!links(&c1).contains(&"eth0".to_string()));
    assert!(b.json("detach --network blue --name db")["released"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(endpoints(&b).is_empty());

    // SIGTERM keeps everything too; a run with --cleanup removes it all when it stops.
    a.proc.terminate(Duration::from_secs(10)).unwrap();
    assert!(links(&h0).contains(&"vb42".to_string()));
    let mut a = engine(&lab, 0, "--cleanup");
    assert!(ns(&c0).ping("10.1.0.2", 10), "after SIGTERM and restart");
    a.proc.terminate(Duration::from_secs(10)).unwrap();
    let left = links(&h0);
    assert!(
        !left
            .iter()
            .any(|l| l.starts_with("vb4") || l.starts_with("vxe")),
        "{left:?}"
    );
    assert_eq!(links(&c0), ["lo"]);
    assert_eq!(links(&c2), ["lo"]);
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(&records).unwrap()).unwrap();
    assert!(kept["endpoints"].as_array().unwrap().is_empty(), "{kept}");
    assert!(Path::new(&records).exists());
}
