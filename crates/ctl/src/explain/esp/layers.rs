//! The layers of an ESP-in-UDP packet, field by field, with offsets from `vxnet-encap`'s `field`
//! modules (`esp::wire::field`, `wire::udp::field`) so they are the data plane's.

use vxnet_encap::esp::wire::{field, NEXT_HEADER_UDP, TRAILER_LEN};
use vxnet_encap::esp::{EspPacket, ICV_LEN};
use vxnet_encap::wire::{udp, UdpPacket};

use crate::explain::checksum::Check;
use crate::explain::fields::one;
use crate::explain::model::{hex16, Layer, LayerBuilder, LayerKind};
use crate::explain::outer::vxlan_udp_fields;

/// The outer UDP header of an ESP-in-UDP datagram (RFC 3948 §2.1).
pub(super) fn outer_udp(header: &[u8], offset: usize, check: Check) -> Layer {
    use udp::field;
    let v = UdpPacket::new_unchecked(header);
    let mut b = LayerBuilder::new("outer UDP", LayerKind::OuterUdp, offset, header.len());
    b.noted(
        "source port",
        field::SRC_PORT,
        v.src_port(),
        match v.src_port() {
            vxnet_encap::esp::DEFAULT_ESP_PORT => {
                "the sender's ESP-in-UDP socket; a NAT on the way may rewrite it"
            }
            _ => "the sender's port as this capture saw it (a NAT may have rewritten it)",
        },
    )
    .noted(
        "destination port",
        field::DST_PORT,
        v.dst_port(),
        match v.dst_port() {
            vxnet_encap::esp::DEFAULT_ESP_PORT => {
                "UDP-encapsulated ESP (RFC 3948), IANA's NAT-T port"
            }
            _ => "UDP-encapsulated ESP on a configured port (vxnet run --esp-port), or a reply to a peer behind NAT",
        },
    )
    .noted(
        "length",
        field::LENGTH,
        v.len_field(),
        "UDP header + ESP packet (SPI to ICV)",
    )
    .checked("checksum", field::CHECKSUM, hex16(v.checksum()), check);
    b.finish()
}

/// SPI, sequence number and IV: what travels in clear in front of the ciphertext.
pub(super) fn header(esp: &[u8], offset: usize, seq_note: &str) -> Layer {
    let p = EspPacket::new_unchecked(esp);
    let spi = p.spi();
    let mut b = LayerBuilder::new(
        "ESP header",
        LayerKind::Esp,
        offset,
        vxnet_encap::esp::ESP_HEADER_LEN,
    );
    b.noted(
        "SPI",
        field::SPI,
        format!("{spi:#010x}"),
        format!(
            "Security Parameters Index: names the SA, and so the key, at the receiver; in vxnet's \
             layout the top 2 bits are the key epoch's tag ({}), the rest random per sender start",
            spi >> 30
        ),
    )
    .noted(
        "sequence number",
        field::SEQUENCE,
        p.sequence_low(),
        seq_note,
    )
    .noted(
        "IV",
        field::IV,
        format!("{:#018x}", p.iv()),
        "explicit IV (RFC 4106): nonce = 4-byte salt ‖ IV, never repeated under one key; \
         vxnet's senders put the full 64-bit sequence number here",
    );
    b.finish()
}

/// The ciphertext when it could not be opened: one opaque field.
pub(super) fn opaque(len: usize, offset: usize, why: &str) -> Layer {
    let mut b = LayerBuilder::new(
        "ESP encrypted payload",
        LayerKind::EspEncrypted,
        offset,
        len,
    );
    b.noted(
        "ciphertext",
        0..len,
        format!("{len} bytes"),
        format!(
            "AES-256-GCM: the VXLAN packet's UDP header, VXLAN header and inner frame, then \
             padding, pad length and next header; {why}"
        ),
    );
    b.finish()
}

/// The decrypted trailer: padding, pad length, next header (`trailer` ends at the ICV).
pub(super) fn trailer(trailer: &[u8], offset: usize) -> Layer {
    let pad = trailer.len() - TRAILER_LEN;
    let mut b = LayerBuilder::new(
        "ESP trailer (decrypted)",
        LayerKind::EspTrailer,
        offset,
        trailer.len(),
    );
    if pad > 0 {
        b.noted(
            "padding",
            0..pad,
            hex::encode(&trailer[..pad]),
            "RFC 4303's default 1, 2, 3, …: pad length and next header end on a 4-byte boundary",
        );
    }
    let next = trailer[pad + 1];
    b.noted(
        "pad length",
        one(pad),
        trailer[pad],
        "bytes of padding before it (0-3)",
    )
    .noted(
        "next header",
        one(pad + 1),
        next,
        if next == NEXT_HEADER_UDP {
            "17 = UDP: transport mode over the VXLAN UDP packet"
        } else {
            "not UDP (17): not a VXLAN packet vxnet sent"
        },
    );
    b.finish()
}

pub(super) fn icv(icv: &[u8], offset: usize, verdict: &str) -> Layer {
    let mut b = LayerBuilder::new("ESP ICV", LayerKind::Esp, offset, ICV_LEN);
    b.noted("ICV", 0..icv.len(), hex::encode(icv), verdict);
    b.finish()
}

/// The VXLAN packet's own UDP header, now inside the ESP payload.
pub(super) fn inner_udp(header: &[u8], offset: usize) -> Layer {
    use udp::field;
    let v = UdpPacket::new_unchecked(header);
    let mut b = LayerBuilder::new(
        "VXLAN UDP (decrypted)",
        LayerKind::OuterUdp,
        offset,
        header.len(),
    );
    b.noted(
        "source port",
        field::SRC_PORT,
        v.src_port(),
        "the sender's hash of the inner flow, as in plain VXLAN (hidden from the underlay now)",
    );
    vxlan_udp_fields(&mut b, &v).noted(
        "checksum",
        field::CHECKSUM,
        hex16(v.checksum()),
        if v.checksum() == 0 {
            "zero: none; the ICV covers every byte (RFC 3948 §3.1.2 lets a receiver skip it)"
        } else {
            "not checked: in transport mode behind a NAT it need not match the outer addresses"
        },
    );
    b.finish()
}
