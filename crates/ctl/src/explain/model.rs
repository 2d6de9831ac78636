//! The explanation as data: packets → layers → fields, each with its byte offset and length in
//! the captured frame. The text view and the JSON view are both renderings of this.

use serde::Serialize;

use super::checksum::Check;

#[derive(Debug, Clone, Serialize)]
pub(super) struct Explanation {
    pub source: Source,
    pub packets: Vec<Packet>,
    /// Packets of a capture that are not VXLAN, with the reason; empty for the worked example.
    pub skipped: Vec<Skipped>,
    /// The same, counted by kind of reason, most frequent first.
    pub skipped_by_reason: Vec<ReasonCount>,
    /// Set when the capture file ends in the middle of a record: where, and after which packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
    pub overhead: Overhead,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Source {
    WorkedExample {
        story: String,
    },
    Capture {
        path: String,
        format: &'static str,
        total_packets: usize,
        vxlan_ports: Vec<u16>,
        /// UDP ports read as ESP-in-UDP (encrypted VXLAN).
        esp_ports: Vec<u16>,
        /// The `--keys` file, when given.
        #[serde(skip_serializing_if = "Option::is_none")]
        keys: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Packet {
    /// 1-based position in the capture (what Wireshark calls the frame number).
    pub frame: usize,
    pub captured_len: usize,
    /// Seconds since the capture's first frame (`None` for the worked example).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
    /// `None` for an ESP packet that was not decrypted: the VNI is inside the ciphertext.
    pub vni: Option<u32>,
    pub summary: String,
    /// The outer flow, `src:port -> dst:port`: the underlay's view of the packet.
    pub outer_flow: String,
    /// The inner frame in a few words (`172.17.0.2 -> 172.17.0.3 ICMPv4 echo request`), or
    /// `encrypted` for ESP that was not opened.
    pub inner_summary: String,
    /// Bytes VXLAN added in front of the inner payload as far as the underlay MTU is concerned:
    /// outer IP + UDP + VXLAN + inner Ethernet.
    pub overhead: usize,
    pub layers: Vec<Layer>,
    /// What is unusual about the packet as a whole: checksums left to offload or wrong, a
    /// superframe bigger than any wire MTU.
    pub remarks: Vec<String>,
    /// The frame as captured.
    #[serde(serialize_with = "crate::explain::json::hex")]
    pub bytes: Vec<u8>,
    /// An ESP packet that was decrypted: the frame with its ciphertext replaced by the plaintext,
    /// so every layer's offset holds in both.
    #[serde(
        serialize_with = "crate::explain::json::hex_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub decrypted_bytes: Option<Vec<u8>>,
    /// The ESP layer of an encrypted packet: SPI, sequence number, whether it was decrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub esp: Option<super::esp::EspFacts>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Layer {
    pub name: String,
    pub kind: LayerKind,
    pub offset: usize,
    pub len: usize,
    pub fields: Vec<Field>,
}

/// What a layer is, independent of its exact protocol; picks its colour and diagram slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum LayerKind {
    Link,
    OuterIp,
    OuterUdp,
    Vxlan,
    InnerEthernet,
    InnerNetwork,
    InnerTransport,
    Payload,
    Padding,
    /// ESP's clear parts: SPI, sequence number, IV; the ICV.
    Esp,
    /// Ciphertext that was not opened.
    EspEncrypted,
    /// Padding, pad length and next header, once decrypted.
    EspTrailer,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Field {
    pub name: &'static str,
    pub value: Value,
    /// Offset of the field's first byte in the captured frame.
    pub offset: usize,
    /// Bytes the field occupies (bit fields report the bytes that hold them).
    pub len: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// For checksum fields: whether the checksum verifies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
}

/// Numbers stay numbers in JSON; addresses and flags are text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub(super) enum Value {
    Number(u64),
    Text(String),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Number(n)
    }
}
impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Number(n.into())
    }
}
impl From<u16> for Value {
    fn from(n: u16) -> Self {
        Value::Number(n.into())
    }
}
impl From<u8> for Value {
    fn from(n: u8) -> Self {
        Value::Number(n.into())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Skipped {
    pub frame: usize,
    pub reason: String,
    /// The reason without this packet's particulars, for counting (`not IP: ARP`).
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct ReasonCount {
    pub reason: String,
    pub count: usize,
}

/// How many skipped frames a capture lists one by one; the rest are only counted by reason, so a
/// capture of millions of frames keeps explain's memory bounded.
pub(super) const MAX_LISTED_SKIPS: usize = 1000;

/// The frames that were not explained: the first [`MAX_LISTED_SKIPS`] with their reason, and
/// all of them counted by kind of reason.
#[derive(Debug, Default)]
pub(super) struct SkipTally {
    pub listed: Vec<Skipped>,
    pub total: usize,
    /// Count per kind, in order of first appearance.
    counts: Vec<ReasonCount>,
    index: std::collections::HashMap<String, usize>,
}

impl SkipTally {
    pub(super) fn push(&mut self, skipped: Skipped) {
        self.total += 1;
        match self.index.get(&skipped.kind) {
            Some(&i) => self.counts[i].count += 1,
            None => {
                self.index.insert(skipped.kind.clone(), self.counts.len());
                self.counts.push(ReasonCount {
                    reason: skipped.kind.clone(),
                    count: 1,
                });
            }
        }
        if self.listed.len() < MAX_LISTED_SKIPS {
            self.listed.push(skipped);
        }
    }

    /// The counts, most frequent first (ties in order of first appearance).
    pub(super) fn by_reason(&self) -> Vec<ReasonCount> {
        let mut counts = self.counts.clone();
        // Stable: equal counts keep their order of first appearance.
        counts.sort_by_key(|c| std::cmp::Reverse(c.count));
        counts
    }
}

/// `5 not IP: ARP; 3 UDP to port 53, not a VXLAN port`: the counts for one line, the most
/// frequent `limit` kinds and how many packets the rest account for.
pub(super) fn reasons_line(counts: &[ReasonCount], limit: usize) -> String {
    let mut parts: Vec<String> = counts
        .iter()
        .take(limit)
        .map(|c| format!("{} {}", c.count, c.reason))
        .collect();
    let rest: usize = counts.iter().skip(limit).map(|c| c.count).sum();
    if rest > 0 {
        parts.push(format!("{rest} for {} other reasons", counts.len() - limit));
    }
    parts.join("; ")
}

/// The fixed cost of the wrap and what it does to the MTU, from the encap crate's constants.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Overhead {
    pub ipv4: FamilyOverhead,
    pub ipv6: FamilyOverhead,
    /// The outer Ethernet header is not counted: MTUs are measured from the IP header.
    pub outer_ethernet_not_counted: usize,
    /// What ESP-in-UDP adds on top, when the explanation holds encrypted packets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub esp: Option<super::esp::EspOverhead>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct FamilyOverhead {
    pub outer_ip: usize,
    pub udp: usize,
    pub vxlan: usize,
    pub inner_ethernet: usize,
    pub total: usize,
    pub underlay_mtu: usize,
    pub inner_mtu: usize,
}

pub(super) const UNDERLAY_MTU: usize = 1500;

impl Overhead {
    pub(super) fn standard() -> Self {
        use vxnet_encap::wire::{
            ETHERNET_HEADER_LEN, IPV4_HEADER_LEN, IPV6_HEADER_LEN, UDP_HEADER_LEN, VXLAN_HEADER_LEN,
        };
        let family = |outer_ip: usize, total: usize| FamilyOverhead {
            outer_ip,
            udp: UDP_HEADER_LEN,
            vxlan: VXLAN_HEADER_LEN,
            inner_ethernet: ETHERNET_HEADER_LEN,
            total,
            underlay_mtu: UNDERLAY_MTU,
            inner_mtu: UNDERLAY_MTU - total,
        };
        Overhead {
            ipv4: family(IPV4_HEADER_LEN, vxnet_encap::OVERHEAD_IPV4),
            ipv6: family(IPV6_HEADER_LEN, vxnet_encap::OVERHEAD_IPV6),
            outer_ethernet_not_counted: ETHERNET_HEADER_LEN,
            esp: None,
        }
    }

    /// [`Overhead::standard`] with the ESP-in-UDP costs.
    pub(super) fn encrypted() -> Self {
        let mut overhead = Self::standard();
        overhead.esp = Some(super::esp::EspOverhead::standard(
            overhead.ipv4.total,
            overhead.ipv6.total,
            UNDERLAY_MTU,
        ));
        overhead
    }
}

/// Builds a layer's fields against a base offset, so each decoder states offsets relative to its
/// own header exactly as the `field` modules of the wire views do.
pub(super) struct LayerBuilder {
    layer: Layer,
}

impl LayerBuilder {
    pub(super) fn new(name: impl Into<String>, kind: LayerKind, offset: usize, len: usize) -> Self {
        LayerBuilder {
            layer: Layer {
                name: name.into(),
                kind,
                offset,
                len,
                fields: Vec::new(),
            },
        }
    }

    pub(super) fn field(
        &mut self,
        name: &'static str,
        range: std::ops::Range<usize>,
        value: impl Into<Value>,
    ) -> &mut Self {
        self.push(name, range, value.into(), None)
    }

    pub(super) fn noted(
        &mut self,
        name: &'static str,
        range: std::ops::Range<usize>,
        value: impl Into<Value>,
        note: impl Into<String>,
    ) -> &mut Self {
        self.push(name, range, value.into(), Some(note.into()))
    }

    /// A checksum field: its verdict is the note.
    pub(super) fn checked(
        &mut self,
        name: &'static str,
        range: std::ops::Range<usize>,
        value: impl Into<Value>,
        check: Check,
    ) -> &mut Self {
        self.push(name, range, value.into(), Some(check.note()));
        if let Some(field) = self.layer.fields.last_mut() {
            field.check = Some(check);
        }
        self
    }

    fn push(
        &mut self,
        name: &'static str,
        range: std::ops::Range<usize>,
        value: Value,
        note: Option<String>,
    ) -> &mut Self {
        self.layer.fields.push(Field {
            name,
            value,
            offset: self.layer.offset + range.start,
            len: range.len(),
            note,
            check: None,
        });
        self
    }

    pub(super) fn finish(self) -> Layer {
        self.layer
    }
}

pub(super) fn hex16(v: u16) -> String {
    format!("{v:#06x}")
}
