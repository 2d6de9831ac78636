//! Messages on the control socket. Shared by the engine (server) and `vxnet` (client).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::counters::{DropReason, TrafficSnapshot};
pub use crate::crypto::EspSnapshot;
use crate::fdb::FdbRow;
pub use crate::state::{ClusterInfo, SourcePortReport};

use crate::offload::Offload;
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    FdbShow {
        vni: Option<u32>,
    },
    FdbAdd {
        mac: String,
        dst: IpAddr,
        vni: Option<u32>,
    },
    FdbDel {
        mac: String,
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
    /// Inner checksums a kernel VTEP on this machine left partial, completed by vxnet.
    #[serde(default)]
    pub partial_checksums: u64,
    /// Datagrams from a kernel VTEP on this machine that carried a whole inner superframe
    /// (UDP-tunnel GSO through a veth), written to the TAP unsplit ...
    #[serde(default)]
    pub tunnel_superframes: u64,
    /// ... and the segments they stand for.
    #[serde(default)]
    pub tunnel_segments: u64,
    /// ICMP frag-needed / packet-too-big replies written into the TAP for frames larger than
    /// the path to their VTEP (the frames themselves count as `drops.too_big`).
    #[serde(default)]
    pub too_big_replies: u64,
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
    /// The cluster this engine belongs to; absent in static mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
}
