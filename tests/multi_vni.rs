//! Several networks in one process, sharing one UDP port, with the same inner IP plan.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vxnet_tests::*;

#[test]
fn two_vnis_with_the_same_ip_plan_stay_isolated() {
    let Some(lab) = Lab::lan("multi_vni", 2, Family::V4) else {
        return;
    };
    let mut engines = Vec::new();
    for i in 0..2 {
        let peer = lab.host(1 - i).underlay;
        let config = lab.dir.join(format!("h{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "local = \"{}\"\n\
                 [[network]]\nname = \"blue\"\nvni = 100\ndev = \"blue\"\naddress = \"10.1.0.{n}/24\"\nremotes = [\"{peer}\"]\n\
                 [[network]]\nname = \"red\"\nvni = 200\ndev = \"red\"\naddress = \"10.1.0.{n}/24\"\nremotes = [\"{peer}\"]\n",
                lab.host(i).underlay,
                n = i + 1
            ),
        )
        .unwrap();
        engines.push(lab.vxnet(
            i,
            &format!("h{i}"),
            &format!("--config {}", config.display()),
        ));
    }
    // Same address on both TAPs: route the /24 through "blue" only on host 0 so pings use it.
    lab.host(0).must("ip route del 10.1.0.0/24 dev red");
    lab.host(1).must("ip route del 10.1.0.0/24 dev red");
    assert!(lab.host(0).ping("10.1.0.2", 3));
    let blue_rx = engines[1].network(100).traffic.rx_packets;
    let red_rx = engines[1].network(200).traffic.rx_packets;
    assert!(blue_rx >= 3, "blue carried nothing");
    // Red may have seen IPv6 ND/MLD chatter of its own, but none of blue's pings: host 1's red
    // TAP never answered an ICMP echo.
    let red_mac_seen_on_blue = engines[0].json("fdb show --vni 100");
    let red_mac = lab
        .host(1)
        .must("cat /sys/class/net/red/address")
        .trim()
        .to_string();
    assert!(
        !red_mac_seen_on_blue.to_string().contains(&red_mac),
        "red's MAC leaked into blue's FDB: {red_mac_seen_on_blue}"
    );
    // Now swap: red only.
    lab.host(0)
        .must("ip route del 10.1.0.0/24 dev blue && ip route add 10.1.0.0/24 dev red");
    lab.host(1)
        .must("ip route del 10.1.0.0/24 dev blue && ip route add 10.1.0.0/24 dev red");
    lab.host(0).must("ip neigh flush dev blue");
    assert!(lab.host(0).ping("10.1.0.2", 3));
    assert!(engines[1].network(200).traffic.rx_packets >= red_rx + 3);
    let networks = engines[0].json("networks");
    assert_eq!(networks.as_array().unwrap().len(), 2);
    // Both served from one UDP port.
    assert_eq!(networks[0]["port"], networks[1]["port"]);
}
