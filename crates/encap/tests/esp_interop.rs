#![allow(clippy::unwrap_used, clippy::expect_used)]
//! ESP checked by implementations that are not ours: tshark (Wireshark's ESP dissector with
//! libgcrypt) decrypts what vxnet sealed, given the key material vxnet reports; scapy (with
//! python3-cryptography) seals a packet that vxnet opens. Both tools are installed by
//! scripts/test.sh; a missing one fails the test rather than skipping it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;

use etherparse::PacketBuilder;
use vxnet_encap::esp::transport::{seal_vxlan, VxlanPorts, HEADROOM};
use vxnet_encap::esp::{KeyEpoch, NetworkKey, OpenSa, SaId, SealSa, Spi, MAX_TAILROOM};
use vxnet_encap::{decapsulate, Vni};

const SRC: [u8; 4] = [192, 0, 2, 1];
const DST: [u8; 4] = [192, 0, 2, 2];
const VNI: u32 = 4242;

fn sa_id() -> SaId {
    SaId {
        epoch: KeyEpoch(1),
        spi: Spi::for_epoch(KeyEpoch(1), 0x00C0_FFEE),
        src: IpAddr::V4(Ipv4Addr::from(SRC)),
        dst: IpAddr::V4(Ipv4Addr::from(DST)),
    }
}

fn network_key() -> NetworkKey {
    NetworkKey::from_hex("8f1e3b5a0c7d9e2f4a6b8c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f")
        .unwrap()
}

/// An inner Ethernet frame carrying an ICMP echo request.
fn icmp_frame(seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 200, 0, 1], [10, 200, 0, 2], 64)
        .icmpv4_echo_request(0x1234, seq)
        .write(&mut frame, payload)
        .unwrap();
    frame
}

/// Outer Ethernet/IPv4/UDP 4500 around an ESP packet, as a capture on the underlay shows it.
fn outer_packet(esp: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xA], [2, 0, 0, 0, 0, 0xB])
        .ipv4(SRC, DST, 64)
        .udp(4500, 4500)
        .write(&mut packet, esp)
        .unwrap();
    packet
}

/// Classic pcap (LINKTYPE_ETHERNET), as tcpdump writes it.
fn pcap(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for word in [0u32, 0, 65535, 1] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    for (i, p) in packets.iter().enumerate() {
        for word in [
            1_700_000_000u32 + i as u32,
            0,
            p.len() as u32,
            p.len() as u32,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(p);
    }
    out
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vxnet-esp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("wireshark")).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn seal_frame(sa: &mut SealSa, frame: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADROOM + frame.len() + MAX_TAILROOM];
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    let ports = VxlanPorts {
        src: 49321,
        dst: 4789,
    };
    let vni = Vni::new(VNI).unwrap();
    let sealed = seal_vxlan(sa, &mut buf, HEADROOM..HEADROOM + frame.len(), vni, ports).unwrap();
    buf[sealed.packet].to_vec()
}

#[test]
fn tshark_decrypts_what_vxnet_sealed() {
    let id = sa_id();
    // One SA whose counter is still below 2^32 and one far beyond it (ESN high half non-zero).
    let mut low = SealSa::new(&network_key(), id, 1);
    let id_high = SaId {
        spi: Spi::for_epoch(KeyEpoch(1), 0x0BAD_CAFE),
        ..id
    };
    let mut high = SealSa::new(&network_key(), id_high, (0x1234 << 32) | 0xFFFF_FFFE);
    let packets = vec![
        outer_packet(&seal_frame(&mut low, &icmp_frame(1, b"vxnet esp one"))),
        outer_packet(&seal_frame(&mut low, &icmp_frame(2, b"vxnet esp two"))),
        outer_packet(&seal_frame(
            &mut high,
            &icmp_frame(3, b"vxnet esp three, beyond 2^32"),
        )),
    ];
    let dir = TempDir::new("tshark");
    let capture = dir.0.join("esp.pcap");
    std::fs::write(&capture, pcap(&packets)).unwrap();
    // Wireshark's ESP SA table, one line per SA, from the key material vxnet reports.
    let sa_line = |sa: &SealSa| {
        format!(
            "\"IPv4\",\"{}\",\"{}\",\"{:#010x}\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"{}\",\"NULL\",\"\"\n",
            sa.id().src,
            sa.id().dst,
            sa.id().spi.get(),
            sa.key_material().to_hex()
        )
    };
    let table = sa_line(&low) + &sa_line(&high);
    std::fs::write(dir.0.join("wireshark/esp_sa"), table).unwrap();

    let output = Command::new("tshark")
        .env("XDG_CONFIG_HOME", &dir.0)
        .args(["-n", "-r"])
        .arg(&capture)
        .args(["-o", "esp.enable_encryption_decode:TRUE"])
        .args(["-T", "fields", "-E", "separator=|", "-E", "occurrence=a"])
        .args([
            "-e",
            "esp.spi",
            "-e",
            "esp.sequence",
            "-e",
            "udp.dstport",
            "-e",
            "vxlan.vni",
        ])
        .args([
            "-e",
            "ip.src",
            "-e",
            "icmp.type",
            "-e",
            "icmp.seq",
            "-e",
            "data.data",
        ])
        .output()
        .expect("tshark must be installed (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tshark failed: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "tshark output:\n{stdout}\n{stderr}");
    let hex = |s: &[u8]| s.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let expected = [
        (low.id().spi.get(), 1u32, 1, "vxnet esp one".as_bytes()),
        (low.id().spi.get(), 2, 2, b"vxnet esp two"),
        (
            high.id().spi.get(),
            0xFFFF_FFFE,
            3,
            b"vxnet esp three, beyond 2^32",
        ),
    ];
    for (line, (spi, seq, icmp_seq, data)) in lines.iter().zip(expected) {
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f[0], format!("{spi:#010x}"), "{line}");
        assert_eq!(f[1], seq.to_string(), "{line}");
        // Outer UDP to 4500, then the decrypted VXLAN packet's own UDP header to 4789.
        assert_eq!(f[2], "4500,4789", "{line}");
        assert_eq!(f[3], VNI.to_string(), "{line}");
        assert_eq!(f[4], "192.0.2.1,10.200.0.1", "{line}");
        assert_eq!(f[5], "8", "ICMP echo request: {line}");
        assert_eq!(f[6], icmp_seq.to_string(), "{line}");
        assert_eq!(f[7], hex(data), "{line}");
    }

    // tshark 4.0 has no extended-sequence-number setting: it checks the ICV over the 8-byte AAD
    // SPI ‖ seq-low and calls ours (over SPI ‖ seq-high ‖ seq-low) incorrect. The value it says
    // it expected must be exactly the non-ESN tag of the same plaintext under the same key and
    // nonce, which pins key, salt, nonce and ciphertext as tshark sees them.
    let verbose = Command::new("tshark")
        .env("XDG_CONFIG_HOME", &dir.0)
        .args(["-n", "-V", "-r"])
        .arg(&capture)
        .args(["-o", "esp.enable_encryption_decode:TRUE"])
        .args(["-o", "esp.enable_authentication_check:TRUE"])
        .output()
        .unwrap();
    let verbose = String::from_utf8_lossy(&verbose.stdout);
    let tshark_expects: Vec<&str> = verbose
        .lines()
        .filter_map(|l| l.split("should be ").nth(1))
        .map(|rest| rest.trim_end_matches(']'))
        .collect();
    assert_eq!(tshark_expects.len(), 3, "{verbose}");
    let mut check = SealSa::new(&network_key(), id, 1);
    let frame = icmp_frame(1, b"vxnet esp one");
    let first = seal_frame(&mut check, &frame);
    assert_eq!(first, esp_of(&packets[0]));
    assert_eq!(tshark_expects[0], hex(&non_esn_tag(&check, &first)));
}

/// The UDP payload of an outer Ethernet/IPv4/UDP packet.
fn esp_of(packet: &[u8]) -> Vec<u8> {
    packet[14 + 20 + 8..].to_vec()
}

/// The tag RFC 4106 gives without ESN (AAD = SPI ‖ 32-bit sequence), for the same packet.
fn non_esn_tag(sa: &SealSa, esp: &[u8]) -> Vec<u8> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let material = sa.key_material();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, material.key()).unwrap());
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&material.salt());
    nonce[4..].copy_from_slice(&esp[8..16]);
    // Decrypt with the ESN AAD (what we sealed with), then re-seal with the 8-byte one.
    let mut aad = [0u8; 12];
    aad[..4].copy_from_slice(&esp[..4]);
    aad[8..].copy_from_slice(&esp[4..8]);
    let mut body = esp[16..].to_vec();
    let plain_len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .unwrap()
        .len();
    body.truncate(plain_len);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&esp[..8]),
            &mut body,
        )
        .unwrap();
    assert_eq!(body, esp[16..esp.len() - 16], "same nonce, same ciphertext");
    tag.as_ref().to_vec()
}

/// scapy seals (its own AES-GCM through python3-cryptography, RFC 4106 with ESN, a random IV
/// rather than vxnet's IV = sequence number, so the receiver has to infer the high half as RFC 4303
/// Appendix A2 says); vxnet opens and finds the VXLAN packet and the ICMP echo inside.
#[test]
fn vxnet_opens_what_scapy_sealed() {
    let id = SaId {
        src: IpAddr::V4(Ipv4Addr::from(DST)),
        dst: IpAddr::V4(Ipv4Addr::from(SRC)),
        ..sa_id()
    };
    let mut rx = OpenSa::new(&network_key(), id);
    let material = rx.key().key_material().to_hex();
    let script = r#"
import os, sys
from scapy.all import Ether, IP, UDP, ICMP, Raw
from scapy.layers.vxlan import VXLAN
from scapy.layers.ipsec import SecurityAssociation, ESP
key, spi, seq = bytes.fromhex(sys.argv[1][2:]), int(sys.argv[2]), int(sys.argv[3])
sa = SecurityAssociation(ESP, spi=spi, crypt_algo='AES-GCM', crypt_key=key, auth_algo='NULL',
                         nat_t_header=UDP(sport=4500, dport=4500), esn_en=True, esn=seq >> 32)
inner = (Ether(src='02:00:00:00:00:02', dst='02:00:00:00:00:01') /
         IP(src='10.200.0.2', dst='10.200.0.1') / ICMP(type=0, id=0x1234, seq=9) / Raw(b'from scapy'))
plain = IP(src='192.0.2.2', dst='192.0.2.1') / UDP(sport=50000, dport=4789) / VXLAN(vni=4242) / inner
sealed = sa.encrypt(plain, seq_num=seq & 0xFFFFFFFF, iv=os.urandom(8))
print(bytes(sealed[UDP].payload).hex())
"#;
    // A sequence number past 2^32, and the receiver's window already there (an SA in mid-life).
    let seq: u64 = (3 << 32) | 17;
    let output = Command::new("/usr/bin/python3")
        .args([
            "-c",
            script,
            &material,
            &id.spi.get().to_string(),
            &seq.to_string(),
        ])
        .output()
        .expect("/usr/bin/python3 must be installed (scripts/test.sh installs scapy)");
    assert!(
        output.status.success(),
        "scapy failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let hex = String::from_utf8(output.stdout).unwrap();
    let hex = hex.trim();
    let mut packet: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();

    // Bring the window to (3 << 32) + 10 with a packet of our own, as if the SA had been running.
    let mut tx = SealSa::new(&network_key(), id, (3 << 32) | 10);
    let mut ours = seal_frame(&mut tx, &icmp_frame(1, b"ours"));
    rx.open_in_place(&mut ours).unwrap();

    let opened = rx.open_in_place(&mut packet).unwrap();
    assert_eq!(opened.seq, seq);
    let udp = &packet[opened.payload];
    assert_eq!(&udp[2..4], &4789u16.to_be_bytes());
    let decap = decapsulate(&udp[8..]).unwrap();
    assert_eq!(decap.vni.get(), VNI);
    let sliced = etherparse::SlicedPacket::from_ethernet(decap.inner).unwrap();
    match sliced.transport {
        Some(etherparse::TransportSlice::Icmpv4(icmp)) => {
            assert_eq!(icmp.type_u8(), 0);
            assert_eq!(icmp.payload(), b"from scapy");
        }
        other => panic!("not ICMP: {other:?}"),
    }
}
