//! Three vxnet hosts: flooding before learning, unicast after, ageing, and static entries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use vxnet_tests::*;

fn three_hosts(test: &str, extra: &str) -> Option<(Lab, Vec<Vxnet>)> {
    let lab = Lab::lan(test, 3, Family::V4)?;
    let mut engines = Vec::new();
    for i in 0..3 {
        // No IPv6 on new devices: ND/MLD chatter would teach MACs before the test means to.
        lab.host(i)
            .must("sysctl -qw net.ipv6.conf.default.disable_ipv6=1");
        let local = lab.host(i).underlay;
        let remotes: String = (0..3)
            .filter(|j| *j != i)
            .map(|j| format!(" --remote {}", lab.host(j).underlay))
            .collect();
        engines.push(lab.vxnet(
            i,
            &format!("h{i}"),
            &format!(
                "--vni 42 --dev vx42 --local {local}{remotes} --address 10.1.0.{}/24 {extra}",
                i + 1
            ),
        ));
    }
    Some((lab, engines))
}

fn macs(engine: &Vxnet) -> Vec<(String, String, String)> {
    let fdb = engine.json("fdb show");
    fdb[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["mac"].as_str().unwrap().to_string(),
                e["dst"].as_str().unwrap().to_string(),
                e["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn unknown_unicast_floods_then_learned_unicast_goes_to_one_host() {
    let Some((lab, e)) = three_hosts("learning", "") else {
        return;
    };
    let (h1, h2) = (lab.host(1).underlay, lab.host(2).underlay);
    let mac2 = lab
        .host(2)
        .must("cat /sys/class/net/vx42/address")
        .trim()
        .to_string();

    // Host 0 learns nothing yet. A static neighbour entry makes host 0 send IP unicast to host
    // 2's MAC without ARP: the frame is unknown unicast, so it must be flooded to both peers.
    lab.host(0).must(&format!(
        "ip neigh replace 10.1.0.3 lladdr {mac2} dev vx42 nud permanent"
    ));
    let tx1_before = e[0].peer(h1).tx_packets;
    lab.host(0).sh("ping -c 1 -W 1 10.1.0.3");
    assert!(
        e[0].peer(h1).tx_packets > tx1_before,
        "unknown unicast not flooded to host 1"
    );
    assert!(e[0].network(42).flooded >= 1);

    // Host 2 answered: host 0 learned mac2 behind host 2.
    assert!(
        wait_for(Duration::from_secs(3), || macs(&e[0])
            .iter()
            .any(|(m, d, _)| *m == mac2 && *d == h2.to_string())),
        "mac2 not learned: {:?}",
        macs(&e[0])
    );
    // Now unicast goes only to host 2: host 1's counter stands still over 20 pings.
    let to_h1 = e[0].peer(h1).tx_packets;
    let to_h2 = e[0].peer(h2).tx_packets;
    assert!(lab.host(0).ping("10.1.0.3", 20));
    assert_eq!(
        e[0].peer(h1).tx_packets,
        to_h1,
        "learned unicast leaked to host 1"
    );
    assert!(e[0].peer(h2).tx_packets >= to_h2 + 20);
    // Host 1 received nothing of it either.
    let fdb_text = e[0].ctl("fdb show");
    let text = String::from_utf8_lossy(&fdb_text.stdout);
    assert!(
        text.contains(&format!("{mac2} dev vx42 dst {h2} vni 42 self age")),
        "{text}"
    );
}

#[test]
fn learned_entries_age_out_and_static_entries_survive_and_win() {
    let Some((lab, e)) = three_hosts("ageing", "--ageing 2") else {
        return;
    };
    let h1 = lab.host(1).underlay;
    let h2 = lab.host(2).underlay;
    let mac1 = lab
        .host(1)
        .must("cat /sys/class/net/vx42/address")
        .trim()
        .to_string();
    // A static entry for a MAC that will never speak, and one for host 1's MAC pointing at the
    // wrong VTEP (host 2): learning must not overwrite it.
    let out = e[0].ctl("fdb add 02:00:00:00:00:99 --dst 10.0.0.3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(e[0]
        .ctl(&format!("fdb add {mac1} --dst {h2}"))
        .status
        .success());

    // Host 0's replies follow the static entry to the wrong VTEP, so this ping may fail; what
    // matters is that host 1's traffic reached host 0 and did not overwrite the entry.
    let rx_before = e[0].peer(h1).rx_packets;
    lab.host(1).sh("ping -c 2 -i 0.2 -W 1 10.1.0.1");
    assert!(e[0].peer(h1).rx_packets > rx_before);
    let entries = macs(&e[0]);
    assert!(
        entries.contains(&(mac1.clone(), h2.to_string(), "static".into())),
        "{entries:?}"
    );
    // Host 2's MAC (from its ARP/flood traffic or a ping) gets learned, then ages out.
    assert!(lab.host(2).ping("10.1.0.1", 1));
    let mac2 = lab
        .host(2)
        .must("cat /sys/class/net/vx42/address")
        .trim()
        .to_string();
    assert!(macs(&e[0])
        .iter()
        .any(|(m, _, k)| *m == mac2 && k == "learned"));
    assert!(
        wait_for(Duration::from_secs(6), || !macs(&e[0])
            .iter()
            .any(|(m, _, _)| *m == mac2)),
        "learned entry did not age out: {:?}",
        macs(&e[0])
    );
    let entries = macs(&e[0]);
    assert!(
        entries
            .iter()
            .any(|(m, _, k)| m == "02:00:00:00:00:99" && k == "static"),
        "{entries:?}"
    );
    assert!(entries.contains(&(mac1.clone(), h2.to_string(), "static".into())));
    // Deleting works, and the MAC is learned at its true VTEP again.
    assert!(e[0].ctl(&format!("fdb del {mac1}")).status.success());
    assert!(lab.host(1).ping("10.1.0.1", 1));
    assert!(macs(&e[0]).contains(&(mac1, h1.to_string(), "learned".into())));
    // Deleting a missing entry is one clear error.
    let out = e[0].ctl("fdb del 02:00:00:00:00:42");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: no entry for 02:00:00:00:00:42")
    );
}

fn ctl_ok(engine: &Vxnet, args: &str) {
    let out = engine.ctl(args);
    assert!(
        out.status.success(),
        "vxnet {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ctl_refused(engine: &Vxnet, args: &str, message: &str) {
    let out = engine.ctl(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "vxnet {args} was accepted");
    assert!(
        stderr.starts_with(&format!("error: {message}")) && stderr.lines().count() == 1,
        "vxnet {args}: {stderr}"
    );
}

#[test]
fn one_flood_destination_is_deleted_and_broadcasts_reach_only_the_other() {
    let Some(lab) = Lab::lan("flooddel", 3, Family::V4) else {
        return;
    };
    let h = |i: usize| lab.host(i).underlay;
    // Host 0 floods only where its flood entry says (no --remote); hosts 1 and 2 accept it.
    let mut e = Vec::new();
    for i in 0..3 {
        lab.host(i)
            .must("sysctl -qw net.ipv6.conf.default.disable_ipv6=1");
        let remote = if i == 0 {
            String::new()
        } else {
            format!(" --remote {}", h(0))
        };
        e.push(lab.vxnet(
            i,
            &format!("h{i}"),
            &format!(
                "--vni 42 --dev vx42 --local {}{remote} --address 10.1.0.{}/24 --max-fdb 2",
                h(i),
                i + 1
            ),
        ));
    }
    let zero = "00:00:00:00:00:00";
    ctl_ok(&e[0], &format!("fdb add {zero} --dst {}", h(1)));
    // As `bridge fdb`: add refuses an existing entry, append adds a destination (twice is no
    // change), and --max-fdb caps appended destinations and static entries.
    ctl_refused(
        &e[0],
        &format!("fdb add {zero} --dst {}", h(2)),
        &format!("{zero} exists (floods to {})", h(1)),
    );
    ctl_ok(&e[0], &format!("fdb append {zero} --dst {}", h(2)));
    ctl_ok(&e[0], &format!("fdb append {zero} --dst {}", h(2)));
    ctl_refused(
        &e[0],
        &format!("fdb append {zero} --dst 10.0.0.250"),
        "the flood entry holds its limit of 2 appended destinations (--max-fdb) in VNI 42",
    );
    ctl_ok(&e[0], "fdb add 02:00:00:00:00:01 --dst 10.0.0.250");
    ctl_ok(&e[0], "fdb add 02:00:00:00:00:02 --dst 10.0.0.250");
    ctl_refused(
        &e[0],
        "fdb add 02:00:00:00:00:03 --dst 10.0.0.250",
        "the FDB holds its limit of 2 static entries (--max-fdb) in VNI 42",
    );
    // A configured remote is part of the flood entry but not an fdb entry to delete.
    ctl_refused(
        &e[1],
        &format!("fdb del {zero} --dst {}", h(0)),
        &format!("{} is a configured remote of VNI 42", h(0)),
    );

    let broadcasts = |n: u32| {
        lab.host(0)
            .sh(&format!("ping -b -c {n} -i 0.2 -W 1 10.1.0.255"));
    };
    let sent = |peer: usize| e[0].peer(h(peer)).tx_packets;
    let received = |host: usize| e[host].peer(h(0)).rx_packets;
    let before = [sent(1), sent(2), received(1), received(2)];
    broadcasts(3);
    assert!(sent(1) >= before[0] + 3 && sent(2) >= before[1] + 3);
    assert!(received(1) >= before[2] + 3 && received(2) >= before[3] + 3);

    ctl_ok(&e[0], &format!("fdb del {zero} --dst {}", h(1)));
    ctl_refused(
        &e[0],
        &format!("fdb del {zero} --dst {}", h(1)),
        &format!("VNI 42 does not flood to {}", h(1)),
    );
    let fdb = e[0].json("fdb show");
    assert_eq!(fdb[0]["flood"], serde_json::json!([h(2).to_string()]));
    let before = [sent(1), sent(2), received(1), received(2)];
    broadcasts(5);
    assert!(sent(2) >= before[1] + 5 && received(2) >= before[3] + 5);
    assert_eq!(sent(1), before[0], "flooded to the deleted destination");
    assert_eq!(received(1), before[2], "host 1 still receives the floods");

    // Without --dst the whole (appended) flood entry goes, and then there is nothing to delete.
    ctl_ok(&e[0], &format!("fdb del {zero}"));
    ctl_refused(
        &e[0],
        &format!("fdb del {zero}"),
        "no flood destinations were added with fdb add/append in VNI 42",
    );
}
