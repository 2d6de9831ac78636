//! Issue 14, NAT: host A sits behind a masquerading NAT (nftables, source ports rewritten too)
//! and host B has no route back to A's own address at all. Over an encrypted network B learns
//! A's endpoint (the NAT's address and port) from A's authenticated packets, as WireGuard roams,
//! and traffic flows both ways; A's NAT keepalives (RFC 3948, one 0xFF byte) reach B through the
//! NAT.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod esp_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use vxnet_tests::*;

/// Three namespaces A — NAT — B, removed (with whatever runs in them) on drop.
struct NatLab {
    names: Vec<String>,
    dir: PathBuf,
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for ns in self.names.iter().rev() {
            let _ = run(&format!("ip netns pids {ns} | xargs -r kill -9"));
            let _ = run(&format!("ip netns del {ns}"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl NatLab {
    fn sh(&self, ns: usize, cmd: &str) -> String {
        let out = run(&format!(
            "ip netns exec {} sh -c '{}'",
            self.names[ns],
            cmd.replace('\'', "'\\''")
        ));
        assert!(
            out.status.success(),
            "[{}] {cmd}: {}",
            self.names[ns],
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn vxnet(&self, ns: usize, name: &str, args: &str) -> Vxnet {
        Vxnet::launch(
            &["ip", "netns", "exec", &self.names[ns]],
            self.dir.join(format!("{name}.sock")),
            self.dir.join(format!("{name}.log")),
            args,
        )
    }
}

const A: &str = "10.77.1.2";
const NAT_INSIDE: &str = "10.77.1.1";
const NAT_OUTSIDE: &str = "10.77.2.1";
const B: &str = "10.77.2.2";

fn nat_lab(test: &str) -> Option<NatLab> {
    if !privileged(test) || !have_tool(test, "nft") || !have_tool(test, "tcpdump") {
        return None;
    }
    let id = format!("vxnat{}", std::process::id());
    let dir = std::env::temp_dir().join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let lab = NatLab {
        names: ["a", "r", "b"].iter().map(|n| format!("{id}{n}")).collect(),
        dir,
    };
    for ns in &lab.names {
        must(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
    }
    let (a, r, b) = (&lab.names[0], &lab.names[1], &lab.names[2]);
    must(&format!(
        "ip link add eth0 netns {a} type veth peer name in0 netns {r} && \
         ip link add eth0 netns {b} type veth peer name out0 netns {r} && \
         ip -n {a} addr add {A}/24 dev eth0 && ip -n {a} link set eth0 up && \
         ip -n {a} route add default via {NAT_INSIDE} && \
         ip -n {r} addr add {NAT_INSIDE}/24 dev in0 && ip -n {r} link set in0 up && \
         ip -n {r} addr add {NAT_OUTSIDE}/24 dev out0 && ip -n {r} link set out0 up && \
         ip -n {b} addr add {B}/24 dev eth0 && ip -n {b} link set eth0 up && \
         ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1"
    ));
    // Masquerade with source ports rewritten into 20000-20999: what B sees of A is neither A's
    // address nor its port.
    lab.sh(
        1,
        "nft add table ip vxnat && \
         nft add chain ip vxnat post { type nat hook postrouting priority srcnat \\; } && \
         nft add rule ip vxnat post oifname out0 meta l4proto udp masquerade to :20000-20999 && nft add rule ip vxnat post oifname out0 masquerade",
    );
    Some(lab)
}

#[test]
fn a_host_behind_a_masquerading_nat_works_both_ways() {
    let Some(lab) = nat_lab("esp_nat") else {
        return;
    };
    let key = lab.dir.join("net.key");
    let out = run(&format!(
        "{} key generate --out {}",
        vxnet_bin().display(),
        key.display()
    ));
    assert!(out.status.success());
    // B captures what arrives from the NAT, keepalives included.
    let dump = Capture::file_in(&lab.names[2], &lab.dir, "b", "eth0", "udp port 4500");
    let args = |local: &str, remote: &str, address: &str| {
        format!(
            "--vni 42 --dev vx42 --local {local} --remote {remote} --address {address}/24 --key-file {} --threads 1",
            key.display()
        )
    };
    let b = lab.vxnet(2, "b", &args(B, A, "10.1.0.2"));
    let a = lab.vxnet(0, "a", &args(A, B, "10.1.0.1"));
    // A → B first: it opens the NAT mapping and teaches B the endpoint ...
    assert!(
        run(&format!(
            "ip netns exec {} ping -c 3 -i 0.2 -W 2 10.1.0.2",
            lab.names[0]
        ))
        .status
        .success(),
        "A -> B: {}\n{}",
        a.proc.log_text(),
        b.proc.log_text()
    );
    // ... then B → A, which B can only reach through it.
    assert!(
        run(&format!(
            "ip netns exec {} ping -c 3 -i 0.2 -W 2 10.1.0.1",
            lab.names[2]
        ))
        .status
        .success(),
        "B -> A: {}",
        b.proc.log_text()
    );
    let sas = b.json("sa show");
    let inbound: Vec<_> = sas
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["direction"] == "in")
        .collect();
    assert!(!inbound.is_empty(), "{sas}");
    for sa in &inbound {
        assert_eq!(sa["src"], A, "the SA names A's configured VTEP: {sa}");
        let endpoint: std::net::SocketAddr = sa["endpoint"].as_str().unwrap().parse().unwrap();
        assert_eq!(endpoint.ip().to_string(), NAT_OUTSIDE, "{sa}");
        assert!((20000..21000).contains(&endpoint.port()), "{sa}");
    }
    let esp = b.network(42).esp.unwrap();
    assert!(esp.endpoint_changes >= 1 && esp.decrypted > 0, "{esp:?}");
    assert!(b.proc.log_text().contains("peer endpoint moved"));
    // A TCP transfer both ways through the NAT.
    let (ha, hb) = (
        Host {
            ns: lab.names[0].clone(),
            underlay: A.parse().unwrap(),
            index: 0,
        },
        Host {
            ns: lab.names[2].clone(),
            underlay: B.parse().unwrap(),
            index: 1,
        },
    );
    transfer_checked(
        "A -> B",
        &ha,
        &hb,
        "10.1.0.2:5201".parse().unwrap(),
        4 << 20,
    );
    transfer_checked(
        "B -> A",
        &hb,
        &ha,
        "10.1.0.1:5202".parse().unwrap(),
        4 << 20,
    );
    std::thread::sleep(Duration::from_millis(300));
    let pcap = dump.finish();
    let keepalives = esp_common::udp_datagrams(&pcap)
        .into_iter()
        .filter(|d| d.payload == [0xFF] && (20000..21000).contains(&d.src_port))
        .count();
    assert!(keepalives >= 1, "A's keepalive crossed the NAT");
    let _ = Path::new(&lab.dir);
}
