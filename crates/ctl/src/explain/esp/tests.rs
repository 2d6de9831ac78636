//! The ESP explanation on packets sealed by the data plane's `SealSa`: decrypted, opaque, wrong
//! key, replayed, truncated, and the high sequence bits as a receiver infers them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};

use etherparse::PacketBuilder;
use vxnet_encap::esp::transport::{seal_vxlan, VxlanPorts, HEADROOM};
use vxnet_encap::esp::{KeyEpoch, NetworkKey, SaId, SealSa, Spi, MAX_TAILROOM};
use vxnet_encap::Vni;

use super::keys::KeyTable;
use super::{EspContext, EspState};
use crate::explain::decode::{explain_frame, LinkType, Skip};
use crate::explain::example::{encrypted_packet, inner_frame};
use crate::explain::model::{LayerKind, Packet};

fn sa(seq: u64) -> SealSa {
    let epoch = KeyEpoch(1);
    SealSa::new(
        &NetworkKey::from_bytes([9; 32]),
        SaId {
            epoch,
            spi: Spi::for_epoch(epoch, 0x77_7777),
            src: IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2)),
        },
        seq,
    )
}

/// One Ethernet/IPv4/UDP 4500 frame holding an ESP packet sealed by `sa`.
fn sealed_frame(sa: &mut SealSa) -> Vec<u8> {
    let inner = inner_frame().unwrap();
    let frame = HEADROOM..HEADROOM + inner.len();
    let mut buf = vec![0u8; frame.end + MAX_TAILROOM];
    buf[frame.clone()].copy_from_slice(&inner);
    let ports = VxlanPorts {
        src: 50_000,
        dst: 4789,
    };
    let sealed = seal_vxlan(sa, &mut buf, frame, Vni::new(7).unwrap(), ports).unwrap();
    let builder = PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4([10, 9, 0, 1], [10, 9, 0, 2], 64)
        .udp(4500, 4500);
    let mut out = Vec::new();
    builder.write(&mut out, &buf[sealed.packet]).unwrap();
    out
}

fn table_for(sa: &SealSa) -> KeyTable {
    KeyTable::single(sa.id().spi, sa.key_material().clone(), "test SA")
}

fn explain(ctx: &mut EspContext, frame: &[u8]) -> Result<Packet, Skip> {
    explain_frame(
        1,
        LinkType::Ethernet,
        frame,
        frame.len(),
        &[4789, 8472],
        ctx,
    )
}

#[test]
fn decrypted_packet_continues_into_vxlan_and_the_inner_frame() {
    let mut tx = sa(5);
    let frame = sealed_frame(&mut tx);
    let mut ctx = EspContext::new(vec![4500], Some(table_for(&tx)));
    let p = explain(&mut ctx, &frame).unwrap();
    let esp = p.esp.as_ref().unwrap();
    assert_eq!(esp.state, EspState::Decrypted, "{}", esp.detail);
    assert_eq!((esp.sequence, esp.sequence_high_from), (5, "iv"));
    assert_eq!(p.vni, Some(7));
    let names: Vec<&str> = p.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "outer Ethernet",
            "outer IPv4",
            "outer UDP",
            "ESP header",
            "VXLAN UDP (decrypted)",
            "VXLAN",
            "inner Ethernet",
            "inner IPv4",
            "inner ICMPv4",
            "payload",
            "ESP trailer (decrypted)",
            "ESP ICV"
        ]
    );
    // The layers tile the frame, and the decrypted bytes differ from the wire only in between.
    let mut at = 0;
    for l in &p.layers {
        assert_eq!(l.offset, at, "{}", l.name);
        at += l.len;
    }
    assert_eq!(at, frame.len());
    let plain = p.decrypted_bytes.as_ref().unwrap();
    assert_eq!(plain[..58], frame[..58]);
    assert_eq!(plain[frame.len() - 16..], frame[frame.len() - 16..]);
    assert_ne!(plain[58..frame.len() - 16], frame[58..frame.len() - 16]);
    let inner = inner_frame().unwrap();
    assert_eq!(plain[74..74 + inner.len()], inner[..]);
    // 20-byte example payload + 42 of headers: 62 + 16 = 78; 78 + 2 = 80 is aligned, no padding.
    assert_eq!(esp.pad_len, Some(0));
    assert_eq!(esp.overhead_over_plain_vxlan, Some(42));
    assert_eq!(p.overhead, 50 + 42);
}

#[test]
fn without_a_key_the_payload_is_opaque_and_the_high_bits_are_tracked_per_spi() {
    let mut tx = sa((3 << 32) - 1);
    let frames: Vec<Vec<u8>> = (0..3).map(|_| sealed_frame(&mut tx)).collect();
    let mut ctx = EspContext::new(vec![4500], None);
    let mut seen = Vec::new();
    for f in &frames {
        // A sender whose IV is not the sequence number: the high half must be inferred.
        let mut f = f.clone();
        f[50..58].copy_from_slice(&[0xEE; 8]);
        let p = explain(&mut ctx, &f).unwrap();
        let esp = p.esp.unwrap();
        assert_eq!(esp.state, EspState::Opaque);
        assert_eq!(p.vni, None);
        assert!(p.layers.iter().any(|l| l.kind == LayerKind::EspEncrypted));
        assert!(p.remarks.iter().any(|r| r.contains("opaque")));
        seen.push((esp.sequence_high_from, esp.sequence));
    }
    // From 0, as a receiver starts: the low halves 0xffffffff, 0, 1 read as 2^32 - 1, then the
    // next block (Appendix A2 case A: below the window's bottom means the sender moved on).
    assert_eq!(
        seen,
        [
            ("inferred", 0xFFFF_FFFF),
            ("inferred", 1 << 32),
            ("inferred", (1 << 32) + 1)
        ]
    );
}

#[test]
fn a_wrong_key_says_the_icv_does_not_verify_and_a_replay_is_named() {
    let mut tx = sa(40);
    let frame = sealed_frame(&mut tx);
    // The same SA derived from another network key: the key a user mixed up.
    let wrong = KeyTable::single(
        tx.id().spi,
        NetworkKey::from_bytes([8; 32]).derive(tx.id()),
        "wrong",
    );
    let mut ctx = EspContext::new(vec![4500], Some(wrong));
    let p = explain(&mut ctx, &frame).unwrap();
    let esp = p.esp.unwrap();
    assert_eq!(esp.state, EspState::IcvMismatch);
    assert!(esp.detail.contains("ICV does not verify"), "{}", esp.detail);
    let icv = p.layers.iter().find(|l| l.name == "ESP ICV").unwrap();
    assert!(icv.fields[0]
        .note
        .as_deref()
        .unwrap()
        .contains("DOES NOT VERIFY"));

    // The right key, the same packet twice: the second is a replay a receiver drops.
    let mut ctx = EspContext::new(vec![4500], Some(table_for(&tx)));
    assert!(explain(&mut ctx, &frame)
        .unwrap()
        .remarks
        .iter()
        .all(|r| !r.contains("replay")));
    let again = explain(&mut ctx, &frame).unwrap();
    assert_eq!(again.esp.unwrap().state, EspState::Decrypted);
    assert!(
        again
            .remarks
            .iter()
            .any(|r| r.contains("already received (replay)")),
        "{:?}",
        again.remarks
    );
}

#[test]
fn truncated_esp_keepalive_and_ike_are_counted_skips() {
    let udp = |payload: &[u8]| {
        let builder = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 9, 0, 1], [10, 9, 0, 2], 64)
            .udp(4500, 4500);
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    };
    let mut ctx = EspContext::new(vec![4500], None);
    let kind = |ctx: &mut EspContext, f: Vec<u8>| explain(ctx, &f).err().unwrap().kind;
    assert_eq!(
        kind(&mut ctx, udp(&[0x12, 0x34, 0x56, 0x78, 0, 0, 0, 1])),
        "not valid ESP: truncated"
    );
    assert!(kind(&mut ctx, udp(&[0xFF])).contains("NAT keepalive"));
    assert!(kind(&mut ctx, udp(&[0, 0, 0, 0, 1, 2, 3])).contains("non-ESP marker"));
    let mut reserved = vec![0u8; 40];
    reserved[3] = 9;
    assert_eq!(
        kind(&mut ctx, udp(&reserved)),
        "not valid ESP: reserved SPI"
    );
    // An IP header that claims more than the capture holds.
    let mut tx = sa(1);
    let mut cut = sealed_frame(&mut tx);
    cut.truncate(cut.len() - 10);
    let skip = explain_frame(
        1,
        LinkType::Ethernet,
        &cut,
        cut.len() + 10,
        &[4789],
        &mut ctx,
    )
    .err()
    .unwrap();
    assert!(skip.kind.contains("snap length"), "{skip:?}");
}

#[test]
fn the_worked_example_is_sealed_by_the_data_plane_and_opens_with_its_own_key() {
    let (bytes, spi, material) = encrypted_packet(4500, &Default::default()).unwrap();
    let mut opaque = EspContext::new(vec![4500], None);
    let p = explain(&mut opaque, &bytes).unwrap();
    assert_eq!(p.esp.unwrap().state, EspState::Opaque);
    let mut ctx = EspContext::new(vec![4500], Some(KeyTable::single(spi, material, "example")));
    let p = explain(&mut ctx, &bytes).unwrap();
    let esp = p.esp.unwrap();
    assert_eq!(esp.state, EspState::Decrypted);
    assert_eq!((esp.sequence_high, esp.sequence_low), (1, 42));
    assert!(p.summary.contains("ICMPv4 echo request"), "{}", p.summary);
}

#[test]
fn vxlan_on_a_port_that_is_also_esp_stays_vxlan() {
    // `--port 4789`-style overlap: a real VXLAN header wins over the ESP reading.
    let plain = crate::explain::example::outer_packet(6000, &Default::default()).unwrap();
    let mut ctx = EspContext::new(vec![4500, 6000], None);
    let p = explain_frame(
        1,
        LinkType::Ethernet,
        &plain,
        plain.len(),
        &[4789, 6000],
        &mut ctx,
    )
    .unwrap();
    assert!(p.esp.is_none());
    assert_eq!(p.vni, Some(42));
    // A reply from port 4500 to a peer behind a NAT (its mapped port) is ESP all the same.
    let mut tx = sa(1);
    let mut reply = sealed_frame(&mut tx);
    reply[36..38].copy_from_slice(&31_000u16.to_be_bytes());
    // The UDP checksum covers the port: zero it (none, over IPv4) rather than fix it.
    reply[40..42].fill(0);
    let p = explain(&mut ctx, &reply).unwrap();
    assert!(p.esp.is_some());
    assert!(p.summary.ends_with(":31000"), "{}", p.summary);
}

#[test]
fn esp_over_an_ipv6_underlay_is_laid_out_and_decrypted() {
    let mut tx = sa(3);
    let v4 = sealed_frame(&mut tx);
    // The same ESP packet (UDP payload of the IPv4 frame) over IPv6, with a real UDP checksum.
    let esp = &v4[14 + 20 + 8..];
    let builder = PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv6([0xfd; 16], [0xfe; 16], 64)
        .udp(4500, 4500);
    let mut frame = Vec::new();
    builder.write(&mut frame, esp).unwrap();
    let mut ctx = EspContext::new(vec![4500], Some(table_for(&tx)));
    let p = explain(&mut ctx, &frame).unwrap();
    assert_eq!(p.esp.as_ref().unwrap().state, EspState::Decrypted);
    assert_eq!(p.layers[1].name, "outer IPv6");
    assert_eq!(p.layers[3].offset, 14 + 40 + 8);
    let udp = &p.layers[2];
    let checksum = udp.fields.iter().find(|f| f.name == "checksum").unwrap();
    assert_eq!(checksum.note.as_deref(), Some("verified"));
    // IPv6 outer: 70 bytes of plain VXLAN overhead plus ESP's.
    assert_eq!(p.overhead, 70 + 42);
}
