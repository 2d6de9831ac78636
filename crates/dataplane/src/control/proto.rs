//! Messages on the control socket. Shared by the engine (server) and `vxnet` (client).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::limits::MAX_REQUEST_BYTES;
use crate::counters::{DropReason, TrafficSnapshot};
pub use crate::crypto::EspSnapshot;
use crate::fdb::FdbRow;
use crate::offload::Offload;
pub use crate::state::{ClusterInfo, SourcePortReport};

/// One request: a JSON object on one line, `{"cmd": "fdb_add", ...}`.
///
/// The `fdb` requests follow `bridge fdb` (iproute2) for a vxlan device; `mac`
/// 00:00:00:00:00:00 is the flood (head-end replication) entry, which has several destinations.
/// Unknown fields are refused: a misspelt `dst` on `fdb_del` would otherwise delete the whole
/// entry instead of one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    FdbShow {
        vni: Option<u32>,
    },
    /// A new static entry, refused if the MAC has one (learned or static), as `bridge fdb add`;
    /// for the flood entry, its first destination.
    FdbAdd {
        mac: String,
        dst: IpAddr,
        vni: Option<u32>,
    },
    /// Another destination of the flood entry (`bridge fdb append`); one it has is no change.
    FdbAppend {
        mac: String,
        dst: IpAddr,
        vni: Option<u32>,
    },
    /// A static entry whatever the MAC had (`bridge fdb replace`); not for the flood entry.
    FdbReplace {
        mac: String,
        dst: IpAddr,
        vni: Option<u32>,
    },
    /// Removes the entry, or with `dst` only that destination (`bridge fdb del ... dst IP`).
    FdbDel {
        mac: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dst: Option<IpAddr>,
        vni: Option<u32>,
    },
    Peers,
    Stats,
    Networks,
    /// Re-read `--config` and apply it, as SIGHUP does (static mode).
    Reload,
    /// The SAs of the encrypted networks (`vxnet sa show`); with `keys`, their key material.
    SaShow {
        #[serde(default)]
        keys: bool,
    },
    /// Attach a network namespace to a bridge-mode network (`vxnet attach`, CNI ADD).
    Attach(AttachRequest),
    /// Detach endpoints (`vxnet detach`, CNI DEL); gone already is fine.
    Detach(DetachRequest),
    /// The endpoints attached here (static mode) or in the cluster (cluster mode).
    Endpoints {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
    /// Release this host's endpoints of `network` that carry a container id not in `valid`
    /// (CNI GC).
    EndpointGc(GcRequest),
    /// Whether attach requests can be served now (CNI STATUS).
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
    /// A name for addresses of a network (`vxnet name add`), answered by its DNS service.
    NameAdd {
        network: String,
        name: String,
        #[serde(default)]
        aliases: Vec<String>,
        addresses: Vec<IpAddr>,
        /// With a MAC, ARP/ND for the addresses is answered by the engine.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
    },
    /// Removes a name added with `name_add`.
    NameRm {
        network: String,
        name: String,
    },
    /// Every name of a network (or of all), with where it comes from, and the DNS counters.
    NameLs {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
}

impl Request {
    /// Whether it is an `fdb` request (`show`, `add`, `append`, `replace`, `del`), answered by
    /// [`super::fdb::handle`] against the forwarding state; the rest are answered elsewhere. A
    /// match with every variant, so that a new request has to say which it is.
    pub fn is_fdb(&self) -> bool {
        match self {
            Request::FdbShow { .. }
            | Request::FdbAdd { .. }
            | Request::FdbAppend { .. }
            | Request::FdbReplace { .. }
            | Request::FdbDel { .. } => true,
            Request::Peers
            | Request::Stats
            | Request::SaShow { .. }
            | Request::Networks
            | Request::Reload
            | Request::Attach(_)
            | Request::Detach(_)
            | Request::Endpoints { .. }
            | Request::EndpointGc(_)
            | Request::Status { .. }
            | Request::NameAdd { .. }
            | Request::NameRm { .. }
            | Request::NameLs { .. } => false,
        }
    }
}

/// The answer to `name_ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameReport {
    pub names: Vec<crate::names::NameRow>,
    /// The DNS service's counters (all networks together), by name.
    pub counters: BTreeMap<String, u64>,
}

/// `attach`: everything optional but the network and the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    pub network: String,
    /// `/run/netns/NAME` or `/proc/PID/ns/net` (any path to a network namespace).
    pub netns: String,
    /// The interface inside the namespace [default: eth0].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// CIDR; the prefix must be the network's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// `detach`: the endpoints of `network` matching every key given (at least one of
/// `container_id`, `netns`, `name`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachRequest {
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
}

/// One attachment a runtime still uses (CNI `cni.dev/valid-attachments`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    pub network: String,
    #[serde(default)]
    pub valid: Vec<Attachment>,
}

/// An attached endpoint: the reply to `attach`, an element of `endpoints`, and the record kept
/// in the state dir (and, in cluster mode, in the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Stable: derived from the network, the container id (or namespace) and `ifname`.
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub network: String,
    /// CIDR, with the network's prefix.
    pub address: ipnet::IpNet,
    pub gateway: IpAddr,
    pub mac: String,
    /// The interface inside the namespace.
    pub ifname: String,
    pub netns: String,
    /// The host serving it: the cluster node id, or the engine's VTEP address in static mode.
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Unix seconds.
    pub since: u64,
    pub mtu: u32,
    /// The host-side veth (a port of the network's bridge).
    #[serde(default)]
    pub host_ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
}

/// Resolver settings for the endpoint (filled once the network has names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    pub nameservers: Vec<IpAddr>,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub search: Vec<String>,
}

/// The reply to `endpoints`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointList {
    pub endpoints: Vec<Endpoint>,
}

/// The reply to `endpoint_gc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub released: Vec<Endpoint>,
}

/// The reply to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// `ready` or `degraded`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One security association, as `ip xfrm state` lists one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaRow {
    pub network: String,
    pub vni: u32,
    /// `out` (this engine seals with it) or `in` (it opens with it).
    pub direction: String,
    /// `0x` and 8 hex digits, as Wireshark's ESP SA table takes it.
    pub spi: String,
    /// The sending VTEP's configured address.
    pub src: IpAddr,
    /// The receiving VTEP's configured address.
    pub dst: IpAddr,
    /// Where the peer is reached (out) or was last heard from (in): behind a NAT, not `dst`/`src`.
    pub endpoint: Option<SocketAddr>,
    /// The network key's epoch the SA was derived from.
    pub epoch: u32,
    /// `rfc4106(gcm(aes))`: AES-256-GCM, 16-byte ICV, 8-byte explicit IV (= the sequence number).
    pub algorithm: String,
    /// Extended (64-bit) sequence numbers: always on.
    pub esn: bool,
    /// Out: the sequence number of the next packet. In: the highest accepted (0 before any).
    pub seq: u64,
    /// Anti-replay window in packets (in only; 0 for out).
    pub replay_window: u64,
    pub packets: u64,
    pub bytes: u64,
    /// The worker that owns it (out only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<usize>,
    /// With `--keys` only: the RFC 4106 key material, AES key then 4-byte salt, `0x` and 72 hex
    /// digits (what Wireshark's ESP SA table and `ip xfrm` take).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// What a reload changed. Networks named by their name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Recreated (settings that need a new TAP changed) or, for remotes only, updated live.
    pub changed: Vec<String>,
    /// Networks that could not be applied (the others were); each with its reason.
    pub failed: Vec<String>,
    /// Engine-wide settings that changed in the file but take effect on restart only.
    pub needs_restart: Vec<String>,
}

/// Control-socket connections refused or cut short, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlStats {
    /// Peers that are neither root, the engine's user nor in `--control-group`.
    pub refused: u64,
    /// Requests longer than the cap (64 KiB).
    pub oversized: u64,
    /// Exchanges not completed within the deadline (5 s).
    pub timed_out: u64,
    /// Connections closed to make room for a newer one (more than 64 open).
    pub evicted: u64,
    /// Failed accepts (e.g. the engine at its fd limit), each followed by a back-off pause.
    pub accept_errors: u64,
}

/// Why a request line was refused; sent back as the reply's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request larger than {MAX_REQUEST_BYTES} bytes (the control socket's limit)")]
    TooLong,
    #[error("bad request: not UTF-8")]
    NotUtf8,
    #[error("bad request: {0}")]
    Json(String),
}

/// Decodes one request line (its newline may be included). The server stops reading at the cap
/// (see [`limits`](super::limits)); the check here keeps the decoder bounded on its own.
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    if line.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLong);
    }
    let text = std::str::from_utf8(line).map_err(|_| RequestError::NotUtf8)?;
    serde_json::from_str(text)
        .map_err(|e| RequestError::Json(crate::text::printable(&e.to_string())))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Reply {
    Ok { data: serde_json::Value },
    Error { message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbTable {
    pub vni: u32,
    pub dev: String,
    pub entries: Vec<FdbRow>,
    /// All-zeros entries: every VTEP that BUM traffic is replicated to.
    pub flood: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRow {
    pub address: IpAddr,
    /// VNIs that flood to or accept from this peer.
    pub vnis: Vec<u32>,
    #[serde(flatten)]
    pub traffic: TrafficSnapshot,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStats {
    pub name: String,
    pub vni: u32,
    pub dev: String,
    #[serde(flatten)]
    pub traffic: TrafficSnapshot,
    pub flooded: u64,
    pub learned: u64,
    pub moved: u64,
    pub fdb_full: u64,
    pub fdb_entries: usize,
    pub drops: BTreeMap<DropReason, u64>,
    /// Offload work done (zero while the offload is off): TSO and USO superframes segmented and
    /// their segments, UDP GSO sends, UDP GRO reads of several datagrams, coalesced superframes
    /// written to the TAP and the segments merged into them.
    #[serde(default)]
    pub tso_superframes: u64,
    #[serde(default)]
    pub tso_segments: u64,
    #[serde(default)]
    pub uso_superframes: u64,
    #[serde(default)]
    pub uso_segments: u64,
    #[serde(default)]
    pub gso_batches: u64,
    #[serde(default)]
    pub gro_batches: u64,
    #[serde(default)]
    pub coalesced_superframes: u64,
    #[serde(default)]
    pub coalesced_segments: u64,
    /// Superframes written to the TAP from coalesced inner UDP datagrams (USO TAPs) and the
    /// datagrams merged into them.
    #[serde(default)]
    pub udp_coalesced_superframes: u64,
    #[serde(default)]
    pub udp_coalesced_datagrams: u64,
    /// Inner checksums a kernel VTEP on this machine left partial, completed by vxnet.
    #[serde(default)]
    pub partial_checksums: u64,
    /// Coalesced superframes the TAP refused and vxnet wrote again segment by segment: for a
    /// short last segment, and of equal segments.
    #[serde(default)]
    pub tap_refused_short_tail: u64,
    #[serde(default)]
    pub tap_refused_gso: u64,
    /// Datagrams from a kernel VTEP on this machine that carried a whole inner superframe
    /// (UDP-tunnel GSO through a veth), written to the TAP unsplit ...
    #[serde(default)]
    pub tunnel_superframes: u64,
    /// ... and the segments they stand for.
    #[serde(default)]
    pub tunnel_segments: u64,
    /// Frames the kernel dropped in front of the engine: the TAP's queue towards vxnet was
    /// full (the device's `tx_dropped`; the engine read too slowly). Not in `drops`, which
    /// counts what the engine itself dropped.
    #[serde(default)]
    pub tap_queue_drops: u64,
    /// ICMP frag-needed / packet-too-big replies written into the TAP for frames larger than
    /// the path to their VTEP (the frames themselves count as `drops.too_big`).
    #[serde(default)]
    pub too_big_replies: u64,
    /// ARP requests / neighbour solicitations from the TAP answered from the neighbour table
    /// (or, for an endpoint on this host, left to it on the bridge), those flooded because the
    /// address is not in it, and replies dropped for claiming a
    /// recorded address with another MAC; and the table's size.
    #[serde(default)]
    pub neighbor_answered: u64,
    #[serde(default)]
    pub neighbor_flooded: u64,
    #[serde(default)]
    pub neighbor_spoofed: u64,
    #[serde(default)]
    pub neighbor_entries: usize,
    /// Encrypted networks only: packets encrypted and decrypted, SAs, key epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub esp: Option<EspSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    pub networks: Vec<NetworkStats>,
    /// Drops not attributable to one network (bad VXLAN header, unknown VNI, truncated).
    pub drops: BTreeMap<DropReason, u64>,
    pub workers: usize,
    /// Times the workers were started again because one was gone (its thread ended by the
    /// kernel, or it stopped on an error) without being asked to.
    #[serde(default)]
    pub worker_restarts: u64,
    /// Offloads in use, e.g. "tap-vnet-hdr", "udp-gso", "udp-gro".
    pub offloads: Vec<Offload>,
    /// The cluster this engine belongs to; absent in static mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
    /// The control socket's refusals.
    #[serde(default)]
    pub control: ControlStats,
    /// The source-port sockets: range, budget, open now, bound, evicted, idle-closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ports: Option<SourcePortReport>,
    /// The transmit path of TCP superframes: `tunnel-gso` (whole, through an underlay TAP)
    /// when the start-up probe succeeded, else `socket` (segmented, through UDP sockets).
    #[serde(default)]
    pub tx_path: String,
    /// What the tunnel-GSO path did; absent when it is not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_gso: Option<crate::underlay::TunnelGsoReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub name: String,
    pub vni: u32,
    pub dev: String,
    pub mtu: u32,
    pub address: Option<String>,
    pub local: IpAddr,
    pub port: u16,
    pub flood: Vec<IpAddr>,
    pub learning: bool,
    pub allow_vlan: bool,
    /// ESP-in-UDP (AES-256-GCM) on this network.
    #[serde(default)]
    pub encrypted: bool,
    /// The UDP port its ESP-in-UDP packets use (encrypted networks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub esp_port: Option<u16>,
    /// The cluster this engine belongs to; absent in static mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_bounded_checked_and_strict() {
        let del =
            parse_request(b"{\"cmd\":\"fdb_del\",\"mac\":\"00:00:00:00:00:00\",\"vni\":42}\n");
        assert_eq!(
            del,
            Ok(Request::FdbDel {
                mac: "00:00:00:00:00:00".into(),
                dst: None,
                vni: Some(42)
            })
        );
        let typo = br#"{"cmd":"fdb_del","mac":"00:00:00:00:00:00","dest":"10.0.0.3","vni":42}"#;
        assert!(
            matches!(parse_request(typo), Err(RequestError::Json(m)) if m.contains("unknown field `dest`"))
        );
        assert_eq!(parse_request(b"\xff\n"), Err(RequestError::NotUtf8));
        let long = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert_eq!(parse_request(&long), Err(RequestError::TooLong));
        assert!(parse_request(br#"{"cmd":"reboot"}"#).is_err());
        // A message quoting the request stays one line.
        let Err(RequestError::Json(m)) = parse_request(br#"{"cmd":"a\nb\u001b"}"#) else {
            panic!("accepted");
        };
        assert!(
            m.contains(r"a\nb\u{1b}") && !m.contains(['\n', '\u{1b}']),
            "{m:?}"
        );
    }
}
