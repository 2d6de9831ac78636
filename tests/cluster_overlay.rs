//! Cluster mode end to end: `vxnet run --store/--token` engines in three namespaces on one LAN,
//! with a real etcd in a fourth namespace of the same LAN (10.0.0.4, reachable by the test hosts
//! only). Networks created on one host are served on the others live, a killed host drops out of
//! the peers and rejoins from its state dir, forwarding survives an etcd outage, wrong tokens and
//! non-members are refused, and published MACs make unicast flood-free. (The firewall that
//! follows hosts joining and leaving: `cluster_firewall`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_lab;

use std::time::{Duration, Instant};

use cluster_lab::{ping_until, stderr, stdout, ClusterLab, ENGINES, ETCD_HOST};
use serde_json::Value;
use vxnet_tests::{vxnet_bin, wait_for, DropReason};

/// (transmitted, received) from ping's summary line.
fn ping_counts(text: &str) -> (u64, u64) {
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in {text:?}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

#[test]
fn three_hosts_serve_a_network_created_on_one() {
    let Some(mut c) = ClusterLab::new("three_hosts_serve_a_network_created_on_one", 10) else {
        return;
    };
    for i in 0..ENGINES {
        c.join(i, "");
    }
    // Without networks yet: each engine is a live member with nothing to serve.
    for i in 0..ENGINES {
        assert!(c.engine(i).json("networks").as_array().unwrap().is_empty());
        assert!(wait_for(Duration::from_secs(5), || c
            .cluster_info(i)
            .is_some_and(|info| info.members_alive == 3)));
    }

    let t0 = Instant::now();
    let def = c.create("blue", "--subnet 10.1.0.0/24");
    c.wait_full_mesh("blue", Duration::from_secs(5));
    let served_after = t0.elapsed();
    let ips: Vec<String> = (0..ENGINES).map(|i| c.overlay_ip(i, "blue")).collect();
    // Every pair, concurrently, as soon as each host serves the network.
    std::thread::scope(|s| {
        for (from, to) in [(0, 1), (1, 2), (2, 0)] {
            let (lab, ip) = (&c.lab, &ips[to]);
            s.spawn(move || {
                assert!(
                    ping_until(lab, from, ip, Duration::from_secs(10)),
                    "host {from} cannot ping {ip}"
                );
            });
        }
    });
    let flowing_after = t0.elapsed();
    eprintln!(
        "TIMING network create -> served on 3 hosts {:.0} ms, -> ping on all pairs {:.0} ms",
        served_after.as_secs_f64() * 1e3,
        flowing_after.as_secs_f64() * 1e3
    );

    // Addresses are distinct hosts of the subnet, the TAP is vx-<name>, VNI as created.
    let mut unique = ips.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{ips:?}");
    for i in 0..ENGINES {
        let n = c.served(i, "blue").unwrap();
        assert_eq!(n["dev"], "vx-blue");
        assert_eq!(n["vni"], def["vni"]);
        assert!(n["address"].as_str().unwrap().ends_with("/24"));
        for (j, ip) in ips.iter().enumerate() {
            if i != j {
                assert!(c.lab.host(i).ping(ip, 2), "host {i} -> {ip}");
            }
        }
    }

    // All hosts see the same networks, and the members serving them.
    let ls: Vec<Value> = (0..ENGINES).map(|i| c.cli_json(i, "network ls")).collect();
    assert_eq!(ls[0], ls[1]);
    assert_eq!(ls[1], ls[2]);
    assert_eq!(ls[0].as_array().unwrap().len(), 1);
    let status = c.cli_json(2, "cluster status");
    let serving = status["view"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["alive"] == true && m["networks"][0] == "blue")
        .count();
    assert_eq!(serving, 3, "{status}");

    // SIGTERM leaves at once (revokes the lease): gone from the peers long before its 10 s TTL.
    let t = Instant::now();
    c.terminate(2);
    for i in [0, 1] {
        c.wait_peers(i, "blue", &[1 - i], Duration::from_secs(3));
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // A network still served is not removed without --force; with it, it stops being served
    // everywhere (TAP gone).
    let out = c.cli(0, "network rm blue");
    assert!(
        !out.status.success() && stderr(&out).contains("still served"),
        "{}",
        stderr(&out)
    );
    let out = c.cli(0, "network rm blue --force");
    assert!(out.status.success(), "{}", stderr(&out));
    for i in [0, 1] {
        assert!(
            wait_for(Duration::from_secs(5), || c.served(i, "blue").is_none()),
            "host {i} still serves blue"
        );
        assert!(!c.lab.host(i).sh("ip link show vx-blue").status.success());
        assert!(!c.lab.host(i).sh("ip link show vb-blue").status.success());
    }
}

#[test]
fn killed_host_leaves_the_peers_and_rejoins_from_its_state() {
    let Some(mut c) = ClusterLab::new("killed_host_leaves_the_peers_and_rejoins", 3) else {
        return;
    };
    c.blue_mesh();
    let ip2 = c.overlay_ip(2, "blue");
    let ip0 = c.overlay_ip(0, "blue");
    assert!(ping_until(&c.lab, 0, &ip2, Duration::from_secs(5)));
    let dev2 = c.served(2, "blue").unwrap()["dev"]
        .as_str()
        .unwrap()
        .to_string();
    let mac2 = tap_mac(&c, 2, &dev2);

    // SIGKILL: no chance to leave; the lease (3 s) has to expire.
    let mut victim = c.engines[2].take().unwrap();
    let t0 = Instant::now();
    victim.proc.child.kill().unwrap();
    victim.proc.child.wait().unwrap();
    for i in [0, 1] {
        c.wait_peers(i, "blue", &[1 - i], Duration::from_secs(10));
        let peers = c.engine(i).peers();
        let listed = peers
            .iter()
            .any(|p| p.address == c.underlay(2) && !p.vnis.is_empty());
        assert!(!listed, "host {i} still lists host 2 for a VNI: {peers:?}");
    }
    let gone = t0.elapsed();
    eprintln!("TIMING SIGKILLed host gone from peers after {gone:?} (lease 3 s)");
    assert!(
        gone >= Duration::from_secs(1),
        "gone before its lease could expire: {gone:?}"
    );
    assert!(!c.lab.host(0).ping(&ip2, 1));

    // Restart with the same state dir and no token, no cluster flags at all: it rejoins with
    // the same address.
    c.start(2, "h2-restarted", "", "");
    c.wait_full_mesh("blue", Duration::from_secs(10));
    assert_eq!(
        c.overlay_ip(2, "blue"),
        ip2,
        "address not kept across restart"
    );
    // Its TAP has the same MAC (derived from node and network), so the others' ARP entries are
    // still right: they reach it without it speaking first.
    assert_eq!(
        tap_mac(&c, 2, &dev2),
        mac2,
        "TAP MAC changed across restart"
    );
    assert!(ping_until(&c.lab, 0, &ip2, Duration::from_secs(5)));
    assert!(c.lab.host(1).ping(&ip2, 2));
    assert!(c.lab.host(2).ping(&ip0, 2));
}

#[test]
fn forwarding_survives_an_etcd_outage_and_resyncs() {
    let Some(mut c) = ClusterLab::new("forwarding_survives_an_etcd_outage", 3) else {
        return;
    };
    c.blue_mesh();
    let ip1 = c.overlay_ip(1, "blue");
    assert!(ping_until(&c.lab, 0, &ip1, Duration::from_secs(5)));
    // A healthy status first, so the degraded one below has a cached view to show.
    assert_eq!(c.cli_json(0, "cluster status")["store"], "healthy");

    // 20 s of pings at 5/s across the whole outage and recovery.
    let log = c.lab.dir.join("ping.log");
    let mut ping = c
        .lab
        .spawn(0, &log, &format!("ping -i 0.2 -c 100 -W 1 {ip1}"));
    std::thread::sleep(Duration::from_secs(1));

    let down = Instant::now();
    c.etcd.kill();
    for i in 0..ENGINES {
        assert!(
            wait_for(Duration::from_secs(8), || c
                .cluster_info(i)
                .is_some_and(|info| !info.store_healthy)),
            "host {i} did not notice the outage: {:?}",
            c.cluster_info(i)
        );
    }
    let st = c.cli_json(1, "cluster status");
    assert_eq!(st["store"], "degraded", "{st}");
    let human = stdout(&c.cli(0, "cluster status"));
    assert!(human.contains("DEGRADED"), "{human}");
    // The last view keeps serving: peers unchanged.
    c.wait_peers(0, "blue", &[1, 2], Duration::from_secs(1));
    // A member change while the store is away: host 2 stops (its leave cannot reach etcd).
    c.terminate(2);
    while down.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    c.etcd.restart();
    let back = Instant::now();
    for i in [0, 1] {
        assert!(
            wait_for(Duration::from_secs(10), || c
                .cluster_info(i)
                .is_some_and(|info| info.store_healthy)),
            "host {i} did not reconnect: {}",
            c.engine(i).proc.log_text()
        );
        // Host 2's lease expires after the store returns: the change is picked up.
        c.wait_peers(i, "blue", &[1 - i], Duration::from_secs(10));
    }
    eprintln!(
        "TIMING resynchronised, host 2 dropped {:?} after etcd returned",
        back.elapsed()
    );
    // And a change made now reaches the running engines too.
    c.create("late", "--subnet 10.2.0.0/24");
    for i in [0, 1] {
        c.wait_peers(i, "late", &[1 - i], Duration::from_secs(5));
    }
    assert_eq!(c.cli_json(0, "cluster status")["store"], "healthy");

    let status = ping.child.wait().unwrap();
    let (sent, received) = ping_counts(&ping.log_text());
    eprintln!("outage pings: {received}/{sent} (exit {status})");
    assert_eq!(sent, 100);
    assert!(
        sent - received <= 1,
        "{} of {sent} pings lost across the outage",
        sent - received
    );
    let late_ip = c.overlay_ip(1, "late");
    assert!(ping_until(&c.lab, 0, &late_ip, Duration::from_secs(5)));
}

#[test]
fn wrong_token_and_non_members_are_refused() {
    let Some(mut c) = ClusterLab::new("wrong_token_and_non_members_are_refused", 10) else {
        return;
    };
    let def = c.create("blue", "--subnet 10.1.0.0/24");
    let vni: u32 = def["vni"].as_u64().unwrap().try_into().unwrap();

    // A forged secret, and a real token revoked by rotation: both refused before anything exists.
    let mut forged = c.worker_token.clone();
    let secret_at = forged.match_indices('-').nth(2).unwrap().0 + 1;
    let flipped = if &forged[secret_at..secret_at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    forged.replace_range(secret_at..secret_at + 1, flipped);
    let old = c.worker_token.clone();
    let rotated = c.cli_json(0, "cluster rotate --worker");
    c.worker_token = rotated["worker_token"].as_str().unwrap().to_string();
    for (what, token) in [("forged", &forged), ("revoked", &old)] {
        let state = c.lab.dir.join(format!("state-{what}"));
        let control = c.lab.dir.join(format!("{what}.sock"));
        let out = c.lab.host(2).sh(&format!(
            "{} run --token {token} --local {} --state-dir {} --control {}",
            vxnet_bin().display(),
            c.underlay(2),
            state.display(),
            control.display()
        ));
        assert!(!out.status.success(), "{what} token accepted");
        let err = stderr(&out);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{what}: {err}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains("refused"),
            "{err}"
        );
        assert!(!state.exists(), "{what}: state dir left behind");
        assert!(!control.exists(), "{what}: control socket left behind");
        let links = c.lab.host(2).must("ip -o link show");
        assert_eq!(
            links.lines().count(),
            2,
            "{what}: devices left behind: {links}"
        );
    }
    let status = c.cli_json(0, "cluster status");
    assert_eq!(
        status["view"]["members"].as_array().unwrap().len(),
        1,
        "{status}"
    );

    // Members 0 and 1 serve blue; host 3 (not a member) sends VXLAN on blue's VNI with the
    // kernel's vxlan driver: host 0 drops it as not_peer and counts it.
    c.join(0, "");
    c.join(1, "");
    c.wait_peers(0, "blue", &[1], Duration::from_secs(5));
    c.wait_peers(1, "blue", &[0], Duration::from_secs(5));
    let ip0 = c.overlay_ip(0, "blue");
    let ip1 = c.overlay_ip(1, "blue");
    assert!(ping_until(&c.lab, 1, &ip0, Duration::from_secs(5)));
    let before = c.engine(0).drops(Some(vni), DropReason::NotPeer);
    let rx_before = c.engine(0).network(vni).traffic.rx_packets;
    let outsider = c.lab.host(ETCD_HOST);
    outsider.must(&format!(
        "ip link add vxbad type vxlan id {vni} remote {} local {} dstport 4789 dev eth0 && \
         ip addr add 10.1.0.250/24 dev vxbad && ip link set vxbad up",
        c.underlay(0),
        outsider.underlay
    ));
    assert!(!outsider.ping(&ip0, 3), "a non-member reached the overlay");
    let dropped = c.engine(0).drops(Some(vni), DropReason::NotPeer) - before;
    assert!(dropped >= 1, "no not_peer drop counted");
    assert_eq!(
        c.engine(0).network(vni).traffic.rx_packets,
        rx_before,
        "non-member traffic delivered"
    );
    let peers = c.engine(0).peers();
    assert!(
        !peers
            .iter()
            .any(|p| p.address == outsider.underlay && !p.vnis.is_empty()),
        "{peers:?}"
    );
    // Members still talk.
    assert!(c.lab.host(0).ping(&ip1, 2));
}

/// The TAP MAC of `dev` in host i.
fn tap_mac(c: &ClusterLab, i: usize, dev: &str) -> String {
    c.lab
        .host(i)
        .must(&format!("cat /sys/class/net/{dev}/address"))
        .trim()
        .to_string()
}

/// Serves blue on hosts 0 and 1 with `extra` flags and static ARP entries both ways (so no ARP
/// broadcast hides what unicast does); returns (ip0, ip1).
fn pair_with_static_arp(c: &mut ClusterLab, round: &str, extra: &str) -> (String, String) {
    for i in [0, 1] {
        let join = if i == 0 {
            format!("--store {}", c.url)
        } else {
            String::new()
        };
        c.start(i, &format!("h{i}-{round}"), &join, extra);
    }
    c.wait_peers(0, "blue", &[1], Duration::from_secs(5));
    c.wait_peers(1, "blue", &[0], Duration::from_secs(5));
    let ips = (c.overlay_ip(0, "blue"), c.overlay_ip(1, "blue"));
    let macs = [tap_mac(c, 0, "vb-blue"), tap_mac(c, 1, "vb-blue")];
    c.lab.host(0).must(&format!(
        "ip neigh replace {} lladdr {} dev vb-blue nud permanent",
        ips.1, macs[1]
    ));
    c.lab.host(1).must(&format!(
        "ip neigh replace {} lladdr {} dev vb-blue nud permanent",
        ips.0, macs[0]
    ));
    ips
}

fn static_macs(c: &ClusterLab, i: usize) -> Vec<String> {
    let tables = c.engine(i).json("fdb show");
    tables
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["entries"].as_array().unwrap().clone())
        .filter(|e| e["kind"] == "static")
        .map(|e| e["mac"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn published_macs_make_unicast_flood_free() {
    let Some(mut c) = ClusterLab::new("published_macs_make_unicast_flood_free", 10) else {
        return;
    };
    let vni: u32 = c.create("blue", "--subnet 10.1.0.0/24")["vni"]
        .as_u64()
        .unwrap()
        .try_into()
        .unwrap();
    // Host 1 joins once so that later starts resume without the token.
    let out = c.cli(
        1,
        &format!("cluster join {} --local {}", c.worker_token, c.underlay(1)),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // Publishing on (the default): each side installs the other's TAP MAC as a static entry.
    let (_, ip1) = pair_with_static_arp(&mut c, "on", "");
    let mac1 = tap_mac(&c, 1, "vb-blue");
    assert!(
        wait_for(Duration::from_secs(5), || static_macs(&c, 0)
            .contains(&mac1)),
        "host 1's MAC not installed on host 0: {:?}",
        static_macs(&c, 0)
    );
    let mac0 = tap_mac(&c, 0, "vb-blue");
    assert!(
        wait_for(Duration::from_secs(5), || static_macs(&c, 1)
            .contains(&mac0)),
        "host 0's MAC not installed on host 1: {:?}",
        static_macs(&c, 1)
    );
    let floods = flooded(&c, vni);
    assert!(c.lab.host(0).ping(&ip1, 10));
    let after = flooded(&c, vni);
    assert_eq!(after, floods, "unicast was flooded with published MACs");
    eprintln!(
        "MACs published: floods during 10 pings: {:?}",
        [after[0] - floods[0], after[1] - floods[1]]
    );

    for i in [0, 1] {
        c.terminate(i);
    }

    // Publishing off: nothing installed, the first packet to the unknown MAC is flooded.
    let (_, ip1) = pair_with_static_arp(&mut c, "off", "--no-publish-macs");
    assert!(static_macs(&c, 0).is_empty(), "{:?}", static_macs(&c, 0));
    let floods = flooded(&c, vni);
    assert!(c.lab.host(0).ping(&ip1, 10));
    let after = flooded(&c, vni);
    eprintln!(
        "MACs not published: floods during 10 pings: {:?}",
        [after[0] - floods[0], after[1] - floods[1]]
    );
    assert!(after[0] > floods[0], "no flood without published MACs");
}

/// Frames hosts 0 and 1 have flooded on `vni` so far.
fn flooded(c: &ClusterLab, vni: u32) -> [u64; 2] {
    [
        c.engine(0).network(vni).flooded,
        c.engine(1).network(vni).flooded,
    ]
}
