//! Engine configuration: from `vxnet run` flags or a TOML file with one `[[network]]` table per
//! network. Unknown keys are errors, so a typo never silently changes behaviour.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use ipnet::IpNet;
use thiserror::Error;
use vxnet_encap::{MacAddr, Vni};

use crate::keyring::{KeyFileError, KeyRing};
use crate::tuning::Tuning;

mod file;

pub use crate::validate::ValidationError;
pub use file::{load_file, parse_file, FileValues};
pub use vxnet_encap::esp::DEFAULT_ESP_PORT;

pub const DEFAULT_CONTROL_PATH: &str = "/run/vxnet/vxnet.sock";
pub const DEFAULT_AGEING_SECS: u64 = 300;
pub const DEFAULT_MAX_FDB: usize = 16384;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub name: String,
    pub vni: Vni,
    pub dev: String,
    pub address: Option<IpNet>,
    /// Peer VTEPs as given: IP addresses or host names, resolved at start.
    pub remotes: Vec<String>,
    pub mtu: Option<u32>,
    pub allow_vlan: bool,
    /// The TAP's MAC; the kernel picks a random one when absent. A stable MAC spares peers a
    /// stale ARP entry (and a static FDB entry) when the engine restarts.
    pub mac: Option<MacAddr>,
    /// Storm control: broadcast, multicast and unknown-unicast frames taken from the TAP for
    /// flooding, per second; the engine's default ([`Tuning::bum_rate`]) when `None`.
    pub bum_rate: Option<u32>,
    /// Encrypted network (ESP-in-UDP, AES-256-GCM): the keys it accepts and sends with. An
    /// encrypted network accepts only authenticated packets; `None` is plain VXLAN.
    pub encryption: Option<KeyRing>,
    /// Bridge mode: a Linux bridge of this name holds the TAP and the attached endpoints'
    /// veths, and carries `address` (created if missing; kept across restarts).
    pub bridge: Option<String>,
    /// Bridge mode, static: the part of the subnet this host hands to endpoints (hosts sharing
    /// a subnet without a cluster need disjoint pools); `None`: the whole subnet.
    pub pool: Option<IpNet>,
    /// Named hosts of the network (`[[network.host]]`): answered by its name service, and with
    /// a MAC, their ARP/ND answered by the engine.
    pub hosts: Vec<crate::names::HostEntry>,
}

impl NetworkConfig {
    /// A plain network: its name, VNI and TAP, and nothing else (no address, remotes, MTU, MAC,
    /// encryption, bridge or hosts). Tests start from it and set what they look at; the
    /// engine's own front ends (flags, file, cluster) name every field, so a new one is not
    /// forgotten there.
    pub fn plain(name: &str, vni: Vni, dev: &str) -> NetworkConfig {
        NetworkConfig {
            name: name.to_string(),
            vni,
            dev: dev.to_string(),
            address: None,
            remotes: Vec::new(),
            mtu: None,
            allow_vlan: false,
            mac: None,
            bum_rate: None,
            encryption: None,
            bridge: None,
            pool: None,
            hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    pub local: IpAddr,
    pub port: u16,
    /// UDP port of encrypted networks (RFC 3948 ESP-in-UDP), sent to and received on.
    pub esp_port: u16,
    /// Bind `esp_port` at start even when no network is encrypted (it was asked for by name:
    /// `--esp-port`/`esp_port`), e.g. so that ESP from a peer that encrypts a network this host
    /// serves in plaintext is heard and counted. Otherwise only encrypted networks bind it.
    pub bind_esp: bool,
    pub networks: Vec<NetworkConfig>,
    pub ageing_secs: u64,
    pub learning: bool,
    pub max_fdb: usize,
    pub accept_any: bool,
    pub control: PathBuf,
    /// Group (name or gid) whose members may use the control socket too (mode 0660); without
    /// it only root and the engine's own user may (mode 0600).
    pub control_group: Option<String>,
    pub threads: usize,
    /// TAP virtio-net offloads and UDP GSO/GRO (each probed at start).
    pub offloads: bool,
    /// Send TCP superframes whole through an underlay TAP where the start-up probe finds the
    /// kernel can (tunnel GSO); needs `offloads`.
    pub tunnel_gso: bool,
    /// Outer header policy, source-port range, default storm-control rate.
    pub tuning: Tuning,
    /// Where the engine keeps what must outlive it (the replay floors of encrypted networks'
    /// inbound SAs); `None` keeps it in memory (tests, `vxnet demo`).
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("no network configured (give --vni and --dev, or [[network]] tables in --config)")]
    NoNetworks,
    #[error("VNI {0} is configured twice")]
    DuplicateVni(Vni),
    #[error("device {0} is configured twice")]
    DuplicateDev(String),
    #[error("cannot resolve remote {remote:?}")]
    UnresolvableRemote { remote: String },
    /// A host name given as a remote, resolved to an address that cannot be one: named, so the
    /// line says which of the given remotes it was.
    #[error("remote {name:?}: {source}")]
    ResolvedUnusable {
        name: String,
        source: Box<ConfigError>,
    },
    #[error("remote {remote} is {remote_family} but the local address {local} is not")]
    FamilyMismatch {
        remote: IpAddr,
        local: IpAddr,
        remote_family: &'static str,
    },
    #[error(transparent)]
    Invalid(#[from] crate::validate::ValidationError),
    #[error(transparent)]
    Key(#[from] KeyFileError),
}

impl EngineConfig {
    /// A complete static configuration: at least one network, and consistent.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.networks.is_empty() {
            return Err(ConfigError::NoNetworks);
        }
        self.check_consistency()
    }

    /// Consistent, but possibly without networks yet (they may be added at run time, e.g. by
    /// the cluster control plane).
    pub(crate) fn check_consistency(&self) -> Result<(), ConfigError> {
        crate::validate::engine(self)?;
        for n in &self.networks {
            crate::validate::network(n)?;
        }
        // VNIs and devices before names: an unnamed network is named after its VNI, so a VNI
        // given twice would otherwise be reported as a name ("vni42") the user never wrote.
        for (i, n) in self.networks.iter().enumerate() {
            for other in &self.networks[..i] {
                if other.vni == n.vni {
                    return Err(ConfigError::DuplicateVni(n.vni));
                }
                if other.dev == n.dev {
                    return Err(ConfigError::DuplicateDev(n.dev.clone()));
                }
            }
        }
        crate::validate::unique_names(&self.networks)?;
        Ok(())
    }
}

/// A MAC for a TAP: a unicast address (a group address cannot be a station's).
pub fn parse_unicast_mac(text: &str) -> Result<MacAddr, String> {
    let mac: MacAddr = text
        .parse()
        .map_err(|e: vxnet_encap::MacParseError| e.to_string())?;
    if !mac.is_unicast() {
        return Err(format!("{mac} is not a unicast MAC address"));
    }
    Ok(mac)
}

/// A UDP port given as a flag: 1-65535 (0 would let the kernel pick a random one). Said with the
/// real range, not the one of the integer type (`--port 65536` and `--port 0` alike).
pub fn parse_port(text: &str) -> Result<u16, String> {
    let range = &crate::validate::PORT;
    let out_of_range = || {
        format!(
            "port {text} is out of range (valid: {}-{})",
            range.start(),
            range.end()
        )
    };
    let value: u64 = text.trim().parse().map_err(|_| {
        if !text.is_empty() && text.trim().bytes().all(|b| b.is_ascii_digit()) {
            out_of_range()
        } else {
            format!(
                "{text:?} is not a port number (valid: {}-{})",
                range.start(),
                range.end()
            )
        }
    })?;
    u16::try_from(value)
        .ok()
        .filter(|port| range.contains(port))
        .ok_or_else(out_of_range)
}

/// Resolves a remote given as an address or a host name to a unicast address of the local
/// family that is not the local VTEP itself.
pub fn resolve_remote(remote: &str, local: IpAddr) -> Result<IpAddr, ConfigError> {
    let checked = resolve_address(remote, local).and_then(|ip| {
        crate::validate::destination("remote", ip, local)?;
        Ok(ip)
    });
    match checked {
        Err(e @ ConfigError::UnresolvableRemote { .. }) => Err(e),
        Err(e) if remote.parse::<IpAddr>().is_err() => Err(ConfigError::ResolvedUnusable {
            name: remote.to_string(),
            source: Box::new(e),
        }),
        other => other,
    }
}

fn resolve_address(remote: &str, local: IpAddr) -> Result<IpAddr, ConfigError> {
    if let Ok(ip) = remote.parse::<IpAddr>() {
        return check_family(ip, local);
    }
    let candidates: Vec<SocketAddr> = (remote, 0)
        .to_socket_addrs()
        .map_err(|_| ConfigError::UnresolvableRemote {
            remote: remote.to_string(),
        })?
        .collect();
    let same_family = candidates
        .iter()
        .find(|a| a.is_ipv4() == local.is_ipv4())
        .or(candidates.first())
        .ok_or_else(|| ConfigError::UnresolvableRemote {
            remote: remote.to_string(),
        })?;
    check_family(same_family.ip(), local)
}

fn check_family(remote: IpAddr, local: IpAddr) -> Result<IpAddr, ConfigError> {
    if remote.is_ipv4() != local.is_ipv4() {
        return Err(ConfigError::FamilyMismatch {
            remote,
            local,
            remote_family: if remote.is_ipv4() { "IPv4" } else { "IPv6" },
        });
    }
    Ok(remote)
}

#[cfg(test)]
mod tests;
