//! What the encrypted-overlay tests share: key files, underlay captures and the ESP packets in
//! them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use vxnet_tests::Lab;

/// A network key file made by `vxnet key generate --out`, mode 0600.
pub fn key_file(lab: &Lab, name: &str) -> PathBuf {
    let path = lab.dir.join(name);
    let out = std::process::Command::new(vxnet_tests::vxnet_bin())
        .args(["key", "generate", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    path
}

/// One UDP datagram of a capture: destination port and payload.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

/// The UDP datagrams (Ethernet/IPv4/UDP) of a pcap file.
pub fn udp_datagrams(pcap: &Path) -> Vec<Datagram> {
    let data = std::fs::read(pcap).unwrap();
    let mut out = Vec::new();
    let mut pos = 24;
    while pos + 16 <= data.len() {
        let incl = u32::from_le_bytes(data[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let frame = &data[pos + 16..(pos + 16 + incl).min(data.len())];
        pos += 16 + incl;
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 17 {
            continue;
        }
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        let udp = &frame[14 + ihl..];
        out.push(Datagram {
            src_port: u16::from_be_bytes([udp[0], udp[1]]),
            dst_port: u16::from_be_bytes([udp[2], udp[3]]),
            payload: udp[8..].to_vec(),
        });
    }
    out
}

/// (SPI, IV) of each ESP packet (not keepalives) among `datagrams` to `port`.
pub fn spis_and_ivs(datagrams: &[Datagram], port: u16) -> Vec<(u32, u64)> {
    datagrams
        .iter()
        .filter(|d| d.dst_port == port && d.payload.len() >= 16)
        .map(|d| {
            let p = &d.payload;
            (
                u32::from_be_bytes(p[0..4].try_into().unwrap()),
                u64::from_be_bytes(p[8..16].try_into().unwrap()),
            )
        })
        .collect()
}
