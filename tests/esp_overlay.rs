//! Issue 14: two vxnet engines with the same network key carry ping and TCP over ESP-in-UDP
//! (nothing on the VXLAN port), with the TAP MTU less ESP's overhead; plaintext VXLAN, forged,
//! replayed and unknown-SPI ESP are dropped, counted by reason, and teach nothing; a restart with
//! the same key file uses new SPIs and new IVs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod esp_common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use esp_common::{key_file, spis_and_ivs, udp_datagrams};
use vxnet_tests::*;

const ESP_PORT: u16 = 4500;

fn start(lab: &Lab, i: usize, name: &str, key: &std::path::Path) -> Vxnet {
    let local = lab.host(i).underlay;
    let remote = lab.host(1 - i).underlay;
    lab.vxnet(
        i,
        name,
        &format!(
            "--vni 42 --dev vx42 --local {local} --remote {remote} --address 10.1.0.{}/24 --key-file {} --threads 2",
            i + 1,
            key.display()
        ),
    )
}

fn send_from(host: &Host, to: SocketAddr, datagrams: Vec<Vec<u8>>) {
    let local = host.underlay;
    in_netns(&host.ns, move || {
        let socket = UdpSocket::bind(SocketAddr::new(local, 0)).unwrap();
        for d in datagrams {
            socket.send_to(&d, to).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .join()
    .unwrap();
}

fn vxlan(vni: u32, src_mac: [u8; 6]) -> Vec<u8> {
    let mut d = vec![0x08, 0, 0, 0];
    d.extend_from_slice(&vni.to_be_bytes()[1..]);
    d.push(0);
    d.extend_from_slice(&[0xff; 6]);
    d.extend_from_slice(&src_mac);
    d.extend_from_slice(&[0x08, 0x06]);
    d.resize(8 + 60, 0);
    d
}

fn learned(engine: &Vxnet, mac: &str) -> bool {
    engine.json("fdb show")[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["mac"] == mac)
}

#[test]
fn encrypted_pair_accepts_only_authenticated_packets() {
    let Some(lab) = Lab::lan("esp_overlay", 2, Family::V4) else {
        return;
    };
    if !have_tool("esp_overlay", "tcpdump") {
        return;
    }
    let key = key_file(&lab, "net.key");
    let e0 = start(&lab, 0, "h0", &key);
    let e1 = start(&lab, 1, "h1", &key);
    let networks = e0.json("networks");
    assert_eq!(
        networks[0]["mtu"], 1405,
        "1500 - 50 VXLAN - 45 ESP: {networks}"
    );
    assert_eq!(networks[0]["encrypted"], true);
    // Without --state-dir the replay floors go to the default state dir: under test, the one
    // the lab gives each engine (never the host's /var/lib/vxnet).
    assert!(lab.host(0).ping("10.1.0.2", 2), "{}", e0.proc.log_text());
    assert!(
        wait_for(Duration::from_secs(5), || lab
            .dir
            .join("h0.state/esp-replay-10.0.0.1")
            .exists()),
        "{}",
        e0.proc.log_text()
    );
    assert_eq!(networks[0]["esp_port"], 4500, "{networks}");
    let text = String::from_utf8(e0.ctl("networks").stdout).unwrap();
    assert!(text.contains(" encrypted (esp udp/4500) "), "{text}");

    let dump_plain = Capture::file(&lab, 1, "plain", "eth0", "udp port 4789");
    let dump_esp = Capture::file(
        &lab,
        1,
        "esp",
        "eth0",
        "udp port 4500 and src host 10.0.0.1",
    );
    assert!(lab.host(0).ping("10.1.0.2", 3), "{}", e0.proc.log_text());
    transfer_checked(
        "TCP over ESP",
        lab.host(0),
        lab.host(1),
        "10.1.0.2:5201".parse().unwrap(),
        8 << 20,
    );
    let plain = dump_plain.finish();
    let esp = dump_esp.finish();
    assert!(
        udp_datagrams(&plain).is_empty(),
        "nothing may cross in plaintext VXLAN"
    );
    let captured = udp_datagrams(&esp);
    let sealed = spis_and_ivs(&captured, ESP_PORT);
    assert!(sealed.len() > 100, "ESP packets to 4500: {}", sealed.len());
    assert!(
        captured.iter().all(|d| d.src_port == ESP_PORT),
        "sent from the ESP port"
    );

    let s0 = e0.network(42).esp.expect("esp counters");
    let s1 = e1.network(42).esp.expect("esp counters");
    assert!(s0.encrypted > 1000 && s1.decrypted > 1000, "{s0:?} {s1:?}");
    assert!(s1.encrypted > 0 && s0.decrypted > 0, "{s0:?} {s1:?}");
    assert!(
        s1.inbound_sas >= 1 && s1.inbound_sas <= 2,
        "one per sending worker: {s1:?}"
    );

    // `sa show`: SPIs, directions, keys only with --keys.
    let sas = e1.json("sa show");
    let rows = sas.as_array().unwrap();
    assert!(rows.iter().any(|r| r["direction"] == "in"), "{sas}");
    assert!(rows.iter().any(|r| r["direction"] == "out"), "{sas}");
    assert!(
        rows.iter().all(|r| r.get("key").is_none()),
        "no keys without --keys"
    );
    let with_keys = e1.json("sa show --keys");
    for r in with_keys.as_array().unwrap() {
        let key = r["key"].as_str().unwrap();
        assert_eq!(key.len(), 2 + 72, "{r}");
        assert_eq!(r["algorithm"], "rfc4106(gcm(aes))");
        assert!(r["spi"].as_str().unwrap().starts_with("0x"));
    }
    let text = String::from_utf8_lossy(&e1.ctl("sa show").stdout).into_owned();
    assert!(
        text.contains("proto esp spi 0x") && text.contains("replay-window 4032"),
        "{text}"
    );

    // Bad input at h1, all from h0's address (a configured peer), none of it learnt.
    let h0 = lab.host(0).clone();
    let to_vxlan = SocketAddr::new(lab.host(1).underlay, 4789);
    let to_esp = SocketAddr::new(lab.host(1).underlay, ESP_PORT);
    let drops = |reason| e1.drops(Some(42), reason);
    let engine_drops = |reason| e1.drops(None, reason);
    let before_plain = drops(DropReason::Unencrypted);
    send_from(&h0, to_vxlan, vec![vxlan(42, [0x02, 0, 0, 0, 0, 0x91]); 5]);
    // Replays of packets h1 already accepted.
    let replays: Vec<Vec<u8>> = captured
        .iter()
        .filter(|d| d.payload.len() > 100)
        .take(7)
        .map(|d| d.payload.clone())
        .collect();
    assert_eq!(replays.len(), 7);
    let before_replay = drops(DropReason::EspReplay);
    send_from(&h0, to_esp, replays.clone());
    // A known SPI with a flipped ciphertext byte: the ICV fails.
    let mut forged = replays[0].clone();
    let n = forged.len();
    forged[n - 20] ^= 1;
    // ... and a sequence number ahead of the sender's, so it is not refused as a replay first.
    let seq = u64::from_be_bytes(forged[8..16].try_into().unwrap()) + 1_000_000;
    forged[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
    forged[8..16].copy_from_slice(&seq.to_be_bytes());
    let before_auth = drops(DropReason::EspAuth);
    send_from(&h0, to_esp, vec![forged; 3]);
    // SPIs nobody made: a flood of them costs bounded trial decryptions.
    let unknown: Vec<Vec<u8>> = (0..300u32)
        .map(|i| {
            let mut p = vec![0u8; 120];
            p[..4].copy_from_slice(&(0x1000_0000 + i).to_be_bytes());
            p[4..8].copy_from_slice(&1u32.to_be_bytes());
            p
        })
        .collect();
    send_from(&h0, to_esp, unknown);
    assert!(wait_for(Duration::from_secs(5), || {
        drops(DropReason::Unencrypted) >= before_plain + 5
            && drops(DropReason::EspReplay) >= before_replay + 7
            && drops(DropReason::EspAuth) >= before_auth + 3
            && engine_drops(DropReason::EspUnknownSpi)
                + engine_drops(DropReason::EspEstablishLimited)
                >= 300
    }), "drops now: plain {} replay {} auth {} unknown {} limited {} malformed {}/{}; before {before_plain} {before_replay} {before_auth}",
        drops(DropReason::Unencrypted), drops(DropReason::EspReplay), drops(DropReason::EspAuth),
        engine_drops(DropReason::EspUnknownSpi), engine_drops(DropReason::EspEstablishLimited),
        engine_drops(DropReason::EspMalformed), drops(DropReason::EspMalformed));
    assert!(
        engine_drops(DropReason::EspEstablishLimited) > 0,
        "a flood of unknown SPIs is rate-limited"
    );
    assert!(
        !learned(&e1, "02:00:00:00:00:91"),
        "nothing learnt from plaintext"
    );
    assert!(
        e1.proc
            .log_text()
            .contains("plaintext VXLAN for an encrypted network"),
        "{}",
        e1.proc.log_text()
    );
    // Still working after all that.
    assert!(lab.host(1).ping("10.1.0.1", 2));
}

#[test]
fn a_restart_with_the_same_key_uses_new_spis_and_ivs() {
    let Some(lab) = Lab::lan("esp_restart", 2, Family::V4) else {
        return;
    };
    if !have_tool("esp_restart", "tcpdump") {
        return;
    }
    let key = key_file(&lab, "net.key");
    let e1 = start(&lab, 1, "h1", &key);
    let mut runs: Vec<Vec<(u32, u64)>> = Vec::new();
    for round in 0..2 {
        let e0 = start(&lab, 0, &format!("h0-{round}"), &key);
        let dump = Capture::file(
            &lab,
            1,
            &format!("round{round}"),
            "eth0",
            "udp dst port 4500 and src host 10.0.0.1",
        );
        assert!(lab.host(0).ping("10.1.0.2", 3), "{}", e0.proc.log_text());
        let pcap = dump.finish();
        runs.push(spis_and_ivs(&udp_datagrams(&pcap), ESP_PORT));
        let mut e0 = e0;
        e0.proc.terminate(Duration::from_secs(5));
    }
    let spis = |r: &Vec<(u32, u64)>| r.iter().map(|(s, _)| *s).collect::<BTreeSet<_>>();
    let (a, b) = (spis(&runs[0]), spis(&runs[1]));
    assert!(!a.is_empty() && !b.is_empty(), "{runs:?}");
    assert!(a.is_disjoint(&b), "a restart draws new SPIs: {a:x?} {b:x?}");
    let ivs = |r: &Vec<(u32, u64)>| r.iter().map(|(_, iv)| *iv).collect::<BTreeSet<_>>();
    assert!(ivs(&runs[0]).is_disjoint(&ivs(&runs[1])), "and new IVs");
    // Sequence numbers start at a random point, not at 1.
    assert!(
        runs.iter().flatten().all(|(_, iv)| *iv > 1 << 20),
        "{runs:x?}"
    );
    // The receiver took the new SAs.
    assert!(e1.network(42).esp.unwrap().sas_established >= 2);
}

#[test]
fn mixed_peers_both_count_and_say_why() {
    let Some(lab) = Lab::lan("esp_mixed", 2, Family::V4) else {
        return;
    };
    let key = key_file(&lab, "net.key");
    let enc = start(&lab, 0, "encrypted", &key);
    // A plaintext engine listens on the ESP port only when told to (it leaves 4500 to IKE
    // otherwise); told so, it hears the encrypting peer and says why it cannot take its packets.
    let plain = lab.vxnet(
        1,
        "plain",
        &format!(
            "--vni 42 --dev vx42 --esp-port 4500 --local {} --remote {} --address 10.1.0.2/24",
            lab.host(1).underlay,
            lab.host(0).underlay
        ),
    );
    assert!(
        !lab.host(0).ping("10.1.0.2", 2),
        "no plaintext may be accepted"
    );
    assert!(wait_for(Duration::from_secs(5), || {
        enc.drops(Some(42), DropReason::Unencrypted) > 0
            && plain.drops(None, DropReason::EspNoKey) > 0
    }));
    assert!(enc
        .proc
        .log_text()
        .contains("plaintext VXLAN for an encrypted network"));
    assert!(plain
        .proc
        .log_text()
        .contains("no network here is encrypted"));
    let plain_mac = lab.host(1).must("cat /sys/class/net/vx42/address");
    assert!(!learned(&enc, plain_mac.trim()));
}

#[test]
fn a_reload_with_a_new_key_rekeys_without_a_restart() {
    let Some(lab) = Lab::lan("esp_rekey", 2, Family::V4) else {
        return;
    };
    let key = key_file(&lab, "net.key");
    let engines: Vec<Vxnet> = (0..2)
        .map(|i| {
            let config = lab.dir.join(format!("h{i}.toml"));
            std::fs::write(
                &config,
                format!(
                    "local = \"{}\"\nthreads = 2\n[[network]]\nname = \"blue\"\nvni = 42\ndev = \"vx42\"\n\
                     address = \"10.1.0.{}/24\"\nremotes = [\"{}\"]\nkey_file = \"net.key\"\n",
                    lab.host(i).underlay,
                    i + 1,
                    lab.host(1 - i).underlay
                ),
            )
            .unwrap();
            lab.vxnet(i, &format!("h{i}"), &format!("--config {}", config.display()))
        })
        .collect();
    assert!(lab.host(0).ping("10.1.0.2", 2));
    let spis = |e: &Vxnet| -> BTreeSet<String> {
        e.json("sa show")
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["spi"].as_str().unwrap().to_string())
            .collect()
    };
    let before = spis(&engines[1]);
    let tap = lab.host(0).must("cat /sys/class/net/vx42/ifindex");
    // A new key in the same file; both hosts reload.
    std::fs::remove_file(&key).unwrap();
    key_file(&lab, "net.key");
    for e in &engines {
        let out = e.ctl("reload --json");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["changed"][0], "blue", "{report}");
    }
    assert!(lab.host(0).ping("10.1.0.2", 3), "traffic under the new key");
    let after = spis(&engines[1]);
    assert!(
        before.is_disjoint(&after),
        "new SAs: {before:?} {after:?}\n{}\n{}",
        engines[1].json("sa show"),
        engines[1].proc.log_text()
    );
    assert_eq!(
        lab.host(0).must("cat /sys/class/net/vx42/ifindex"),
        tap,
        "the TAP was not recreated"
    );
}
