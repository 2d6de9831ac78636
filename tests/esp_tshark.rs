//! Issue 14: an implementation of ESP and AES-GCM that is not ours checks ours, live. Two vxnet
//! engines share a network key; the keys `vxnet sa show --json --keys` reports on both go into
//! tshark's ESP SA table, and tshark capturing live on the receiver's underlay decrypts the
//! ESP-in-UDP datagrams and dissects what is inside: the VXLAN header, the inner ICMP echo and
//! the inner TCP segments of a transfer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod esp_common;

use std::process::Command;
use std::time::Duration;

use esp_common::key_file;
use serde_json::Value;
use vxnet_tests::*;

#[test]
fn tshark_decrypts_a_live_capture_with_the_keys_vxnet_reports() {
    let test = "esp_tshark";
    let Some(lab) = Lab::lan(test, 2, Family::V4) else {
        return;
    };
    if !have_tool(test, "tshark") {
        return;
    }
    let key = key_file(&lab, "net.key");
    // A UDP_SEGMENT send crosses a veth as one superpacket, which a capture shows as one frame
    // (tshark would dissect its first datagram only): have the kernel cut it before the wire,
    // as a NIC would.
    for i in 0..2 {
        lab.host(i)
            .must("ethtool -K eth0 tx-udp-segmentation off >/dev/null");
    }
    let engines: Vec<Vxnet> = (0..2)
        .map(|i| {
            lab.vxnet(
                i,
                &format!("h{i}"),
                &format!(
                    "--vni 42 --dev vx42 --local {} --remote {} --address 10.1.0.{}/24 --key-file {} --threads 1",
                    lab.host(i).underlay,
                    lab.host(1 - i).underlay,
                    i + 1,
                    key.display()
                ),
            )
        })
        .collect();
    // The SAs exist once traffic flowed: each side's outbound one, and its peer's inbound one.
    assert!(lab.host(0).ping("10.1.0.2", 2));
    let mut table = String::new();
    for e in &engines {
        let sas: Value = e.json("sa show --keys");
        for sa in sas
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["direction"] == "out")
        {
            table.push_str(&format!(
                "\"IPv4\",\"*\",\"*\",\"{}\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"{}\",\"NULL\",\"\"\n",
                sa["spi"].as_str().unwrap(),
                sa["key"].as_str().unwrap()
            ));
        }
    }
    assert_eq!(table.lines().count(), 2, "{table}");
    let xdg = lab.dir.join("xdg");
    std::fs::create_dir_all(xdg.join("wireshark")).unwrap();
    std::fs::write(xdg.join("wireshark/esp_sa"), &table).unwrap();

    // Live: tshark on host 1's eth0, printing the inner protocols of what it decrypted.
    let log = lab.dir.join("tshark.out");
    let mut tshark = lab.spawn_with_env(
        1,
        &log,
        &[("XDG_CONFIG_HOME", xdg.to_str().unwrap())],
        "tshark -i eth0 -l -n -o esp.enable_encryption_decode:TRUE -f 'udp port 4500' \
         -Y 'vxlan' -T fields -E separator=, -e esp.spi -e vxlan.vni -e icmp.type -e tcp.dstport -e tcp.len",
    );
    let capturing = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Capturing on"))
    });
    assert!(capturing, "tshark did not start: {}", tshark.log_text());
    // "Capturing on" comes a moment before the capture does.
    std::thread::sleep(Duration::from_millis(500));
    assert!(lab.host(0).ping("10.1.0.2", 3));
    transfer_checked(
        "TCP over ESP",
        lab.host(0),
        lab.host(1),
        "10.1.0.2:5201".parse().unwrap(),
        1 << 20,
    );
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-INT", &tshark.pid().to_string()])
        .status();
    tshark.terminate(Duration::from_secs(5));
    let out = std::fs::read_to_string(&log).unwrap();
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|r| r.len() == 5)
        .collect();
    let echo_requests = rows.iter().filter(|r| r[1] == "42" && r[2] == "8").count();
    let echo_replies = rows.iter().filter(|r| r[1] == "42" && r[2] == "0").count();
    let tcp_data = rows
        .iter()
        .filter(|r| r[1] == "42" && r[3] == "5201" && r[4].parse::<u32>().is_ok_and(|n| n > 0))
        .count();
    assert!(
        echo_requests >= 3 && echo_replies >= 3,
        "inner ICMP decoded by tshark: {echo_requests} requests, {echo_replies} replies\n{out}"
    );
    let tail: Vec<&str> = out.lines().rev().take(4).collect();
    assert!(
        tcp_data > 50,
        "inner TCP decoded by tshark: {tcp_data} segments of {} rows; {tail:?}",
        rows.len()
    );
}
