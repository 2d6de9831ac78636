//! `vxnet explain --keys` on what a real encrypted pair of engines puts on the wire: two `vxnet
//! run --key-file` hosts ping, tcpdump captures the ESP-in-UDP datagrams on the receiver, and the
//! keys come from the receiver's own `vxnet sa show --json --keys`, the file a user has. tshark,
//! given the same keys as Wireshark's SA table, decodes the same inner pings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use vxnet_tests::*;

#[test]
fn engine_capture_decrypts_with_the_keys_sa_show_prints() {
    let test = "explain_esp_engine";
    let Some(lab) = Lab::lan(test, 2, Family::V4) else {
        return;
    };
    if !have_tool(test, "tcpdump") {
        return;
    }
    let key = lab.dir.join("net.key");
    let generated = run(&format!("{} key generate", vxnet_bin().display()));
    assert!(generated.status.success());
    std::fs::write(&key, &generated.stdout).unwrap();
    // The engine refuses a key file others can read.
    let mut perms = std::fs::metadata(&key).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&key, perms).unwrap();
    let (a, b) = (lab.host(0).underlay, lab.host(1).underlay);
    let engine = |i: usize, local, remote, address: &str| {
        lab.vxnet(
            i,
            &format!("h{i}"),
            &format!(
                "--vni 42 --dev vx42 --local {local} --remote {remote} --address {address} \
                 --key-file {}",
                key.display()
            ),
        )
    };
    let _e0 = engine(0, a, b, "10.1.0.1/24");
    let e1 = engine(1, b, a, "10.1.0.2/24");

    let dump = Capture::file(&lab, 1, "esp", "eth0", "udp port 4500");
    assert!(lab.host(0).ping("10.1.0.2", 3));
    let pcap = dump.finish();

    // The receiver's SAs: its inbound ones opened the requests, its outbound ones sealed the
    // replies.
    let listing = e1.ctl("sa show --json --keys");
    assert!(listing.status.success());
    let keys = lab.dir.join("keys.json");
    std::fs::write(&keys, &listing.stdout).unwrap();
    let out = Command::new(vxnet_bin())
        .args(["explain", "--json", "--pcap"])
        .arg(&pcap)
        .arg("--keys")
        .arg(&keys)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packets = doc["packets"].as_array().unwrap();
    let summaries: Vec<&str> = packets
        .iter()
        .map(|p| p["summary"].as_str().unwrap())
        .collect();
    for p in packets {
        assert_eq!(p["esp"]["state"], "decrypted", "{}", p["esp"]["detail"]);
        assert_eq!(p["vni"], 42);
        // vxnet's senders put the full sequence number in the IV.
        assert_eq!(p["esp"]["sequence_high_from"], "iv");
    }
    for want in ["ICMPv4 echo request", "ICMPv4 echo reply"] {
        let n = summaries.iter().filter(|s| s.contains(want)).count();
        assert!(n >= 3, "{want}: {summaries:#?}");
    }

    let esp_sa: String = serde_json::from_slice::<Value>(&listing.stdout).unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|sa| {
            format!(
                "\"IPv4\",\"*\",\"*\",\"{}\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"{}\",\"NULL\",\"\"\n",
                sa["spi"].as_str().unwrap(),
                sa["key"].as_str().unwrap()
            )
        })
        .collect();
    if have_tool(test, "tshark") {
        let icmp = tshark_icmp(&lab.dir, &pcap, &esp_sa);
        assert_eq!(
            icmp,
            summaries.iter().filter(|s| s.contains("ICMPv4")).count()
        );
    }
}

/// How many ICMP packets tshark decodes from `pcap` with `esp_sa` as its ESP SA table.
fn tshark_icmp(dir: &Path, pcap: &Path, esp_sa: &str) -> usize {
    let config = dir.join("xdg");
    std::fs::create_dir_all(config.join("wireshark")).unwrap();
    std::fs::write(config.join("wireshark/esp_sa"), esp_sa).unwrap();
    let out = Command::new("tshark")
        .env("XDG_CONFIG_HOME", &config)
        .arg("-r")
        .arg(pcap)
        .args(["-o", "esp.enable_encryption_decode:TRUE", "-Y", "icmp"])
        .args(["-T", "fields", "-e", "vxlan.vni"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().all(|l| l == "42"), "{text}");
    text.lines().count()
}
