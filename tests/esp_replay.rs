//! The anti-replay window under attack: a holder of the network key seals one packet numbered far
//! ahead (2^64 - 2) on another peer's live SA; it is dropped and counted (esp_beyond_window), the
//! window does not move, and the peer's traffic goes on. And ESP captured on the wire before the
//! receiver restarts (killed, -9) is refused after it (esp_replay), while the sender's traffic,
//! on the same SA, still flows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod esp_common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use esp_common::{key_file, udp_datagrams};
use vxnet_dataplane::control::proto::SaRow;
use vxnet_encap::esp::{KeyEpoch, NetworkKey, SaId, SealSa, Spi, ESP_HEADER_LEN, MAX_TAILROOM};
use vxnet_tests::{in_netns, wait_for, Capture, Family, Lab, Vxnet};

const ESP_PORT: u16 = 4500;

fn start(lab: &Lab, i: usize, name: &str, key: &Path) -> Vxnet {
    let (me, peer) = (lab.host(i).underlay, lab.host(1 - i).underlay);
    lab.vxnet(
        i,
        name,
        &format!(
            "--vni 42 --dev vx42 --local {me} --remote {peer} --address 10.1.0.{}/24 --key-file {} --state-dir {}",
            i + 1,
            key.display(),
            lab.dir.join(format!("{name}-state")).display()
        ),
    )
}

/// `vxnet stats --json`'s engine-wide plus per-network drop count for `reason`, by name (a
/// reason the engine does not know reads as 0).
fn drops_named(engine: &Vxnet, reason: &str) -> u64 {
    let stats = engine.json("stats");
    let mut n = stats["drops"][reason].as_u64().unwrap_or(0);
    for network in stats["networks"].as_array().into_iter().flatten() {
        n += network["drops"][reason].as_u64().unwrap_or(0);
    }
    n
}

fn ping_all(lab: &Lab, from: usize, target: &str, count: u32) -> String {
    let out = lab
        .host(from)
        .sh(&format!("ping -c {count} -i 0.1 -W 2 {target}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn no_loss(text: &str, count: u32) -> bool {
    text.contains(&format!("{count} received, 0% packet loss"))
}

/// Sends each of `datagrams` to `to` from inside host `from`'s namespace.
fn send_from(lab: &Lab, from: usize, to: SocketAddr, datagrams: Vec<Vec<u8>>) {
    in_netns(&lab.host(from).ns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for d in datagrams {
            socket.send_to(&d, to).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .join()
    .unwrap();
}

#[test]
fn a_key_holder_cannot_jump_another_peers_window() {
    let Some(lab) = Lab::lan("esp_beyond", 2, Family::V4) else {
        return;
    };
    let key = key_file(&lab, "net.key");
    let a = start(&lab, 0, "a", &key);
    let b = start(&lab, 1, "b", &key);
    assert!(no_loss(&ping_all(&lab, 0, "10.1.0.2", 3), 3));
    // A's SA to B as B knows it.
    let sas: Vec<SaRow> = serde_json::from_value(b.json("sa show")).unwrap();
    let sa = sas
        .iter()
        .find(|s| s.direction == "in" && s.src == lab.host(0).underlay)
        .expect("B has an inbound SA from A");
    let spi = u32::from_str_radix(sa.spi.trim_start_matches("0x"), 16).unwrap();
    let id = SaId {
        epoch: KeyEpoch(sa.epoch),
        spi: Spi::new(spi).unwrap(),
        src: sa.src,
        dst: sa.dst,
    };
    let network = NetworkKey::from_hex(&std::fs::read_to_string(&key).unwrap()).unwrap();
    // What the attacker (any key holder) seals: a harmless VXLAN frame numbered 2^64 - 2.
    let mut forger = SealSa::new(&network, id, u64::MAX - 1);
    let mut vxlan = vec![0u8; 8];
    vxlan.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 42, 0]);
    vxlan.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x77, 0x02, 0, 0, 0, 0, 0x78, 0x08, 0x00]);
    vxlan.resize(8 + 8 + 60, 0);
    let len = vxlan.len() as u16;
    vxlan[..8].copy_from_slice(&[0xc0, 0x00, 0x12, 0xb5, (len >> 8) as u8, len as u8, 0, 0]);
    let mut buf = vec![0u8; ESP_HEADER_LEN];
    buf.extend_from_slice(&vxlan);
    let payload = ESP_HEADER_LEN..buf.len();
    buf.resize(buf.len() + MAX_TAILROOM, 0);
    let sealed = forger.seal_in_place(&mut buf, payload).unwrap();
    assert_eq!(sealed.seq, u64::MAX - 1);
    let forged = buf[sealed.packet].to_vec();
    let to = SocketAddr::new(lab.host(1).underlay, ESP_PORT);
    send_from(&lab, 0, to, vec![forged]);
    assert!(
        wait_for(Duration::from_secs(5), || drops_named(
            &b,
            "esp_beyond_window"
        ) == 1),
        "the forged packet is counted as esp_beyond_window: {}",
        b.json("stats")
    );
    // A's genuine packets still pass: the window did not move.
    let text = ping_all(&lab, 0, "10.1.0.2", 20);
    assert!(no_loss(&text, 20), "after the forged packet:\n{text}");
    let sas: Vec<SaRow> = serde_json::from_value(b.json("sa show")).unwrap();
    let top = sas
        .iter()
        .find(|s| s.direction == "in" && s.spi == sa.spi)
        .unwrap()
        .seq;
    assert!(top < u64::MAX / 2, "the window moved to {top}");
    drop(a);
}

/// The ESP packets decrypted on `engine`'s encrypted networks.
fn decrypted(engine: &Vxnet) -> u64 {
    let stats = engine.json("stats");
    stats["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| n["esp"]["decrypted"].as_u64().unwrap_or(0))
        .sum()
}

/// An Ethernet frame carrying an IPv4 ICMP echo request (what `ping` sends).
fn is_echo_request(frame: &[u8]) -> bool {
    frame.len() >= 14 + 20 + 8 && frame[12..14] == [0x08, 0x00] && frame[14 + 9] == 1 && {
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        frame.get(14 + ihl) == Some(&8)
    }
}

#[test]
fn esp_captured_before_a_receiver_restart_is_refused_after_it() {
    let Some(lab) = Lab::lan("esp_restart", 2, Family::V4) else {
        return;
    };
    let key = key_file(&lab, "net.key");
    let a = start(&lab, 0, "a", &key);
    let mut b = start(&lab, 1, "b", &key);
    // Traffic from A to B, captured on B's underlay as an attacker on the path would.
    let capture = Capture::file(
        &lab,
        1,
        "esp",
        "eth0",
        &format!("udp dst port 4500 and dst host {}", lab.host(1).underlay),
    );
    assert!(no_loss(&ping_all(&lab, 0, "10.1.0.2", 10), 10));
    let captured: Vec<Vec<u8>> = udp_datagrams(&capture.finish())
        .into_iter()
        .filter(|d| d.dst_port == ESP_PORT && d.payload.len() >= ESP_HEADER_LEN)
        .map(|d| d.payload)
        .collect();
    assert!(
        captured.len() >= 10,
        "captured {} ESP packets",
        captured.len()
    );

    // B dies without a word and comes back with the same state dir.
    b.proc.child.kill().unwrap();
    b.proc.child.wait().unwrap();
    drop(b);
    let b = start(&lab, 1, "b", &key);
    // What B's TAP is handed while the replay runs. A's own host may still send on its own
    // (an IPv6 router solicitation or MLD report of a TAP a few seconds old), and such genuine
    // traffic, numbered above the floor, is rightly delivered: so the test looks for the
    // replayed frames themselves (the pings' echo requests), not at a count of decryptions.
    let delivered = Capture::start(&lab, 1, "delivered", "vx42", 256, 1000, "");
    let to = SocketAddr::new(lab.host(1).underlay, ESP_PORT);
    send_from(&lab, 0, to, captured.clone());
    assert!(
        wait_for(Duration::from_secs(5), || drops_named(&b, "esp_replay")
            >= captured.len() as u64),
        "every replayed packet is dropped as esp_replay ({} sent): {}",
        captured.len(),
        b.json("stats")
    );
    let frames = delivered.frames();
    let echo_requests = frames.iter().filter(|f| is_echo_request(f)).count();
    assert_eq!(
        echo_requests,
        0,
        "a replayed ping reached B's TAP ({} ESP packets decrypted, {} frames delivered)",
        decrypted(&b),
        frames.len()
    );

    // A's traffic goes on, on the same SA: at most the floor's margin of it is refused.
    assert!(
        wait_for(Duration::from_secs(10), || lab.host(0).ping("10.1.0.2", 1)),
        "no ping through after the restart: {}",
        b.json("stats")
    );
    let text = ping_all(&lab, 0, "10.1.0.2", 20);
    assert!(no_loss(&text, 20), "after the restart:\n{text}");
    let text = ping_all(&lab, 1, "10.1.0.1", 5);
    assert!(no_loss(&text, 5), "from the restarted host:\n{text}");
    drop(a);
}
