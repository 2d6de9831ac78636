//! Engine configuration: from `vxnet run` flags or a TOML file with one `[[network]]` table per
//! network. Unknown keys are errors, so a typo never silently changes behaviour.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use thiserror::Error;
use vxnet_encap::{MacAddr, Vni};

use crate::keyring::{load_key_file, KeyFileError, KeyRing};
use crate::tuning::{check_bum_rate, FileTuning, TextOrNumber, Tuning};

pub use crate::validate::ValidationError;
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

/// The file form. Every key is optional except the networks, so a file can hold only networks
/// and take the rest from flags.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    local: Option<IpAddr>,
    port: Option<u16>,
    esp_port: Option<u16>,
    ageing: Option<u64>,
    learning: Option<bool>,
    max_fdb: Option<usize>,
    accept_any: Option<bool>,
    control: Option<PathBuf>,
    control_group: Option<String>,
    threads: Option<usize>,
    offloads: Option<bool>,
    df: Option<String>,
    ttl: Option<TextOrNumber>,
    tos: Option<TextOrNumber>,
    srcport: Option<String>,
    bum_rate: Option<u64>,
    min_pmtu: Option<u64>,
    busy_poll: Option<u64>,
    #[serde(default)]
    network: Vec<FileNetwork>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNetwork {
    name: Option<String>,
    vni: u32,
    dev: String,
    address: Option<IpNet>,
    #[serde(default)]
    remotes: Vec<String>,
    mtu: Option<u32>,
    #[serde(default)]
    allow_vlan: bool,
    mac: Option<String>,
    bum_rate: Option<u64>,
    /// A network key file (`vxnet key generate`): the network is encrypted. Relative paths are
    /// taken from the config file's directory.
    key_file: Option<PathBuf>,
    bridge: Option<String>,
    pool: Option<IpNet>,
    /// `[[network.host]]` tables: name, aliases, addresses, mac.
    #[serde(default)]
    host: Vec<crate::names::HostEntry>,
}

/// Values from a config file, to be overridden by explicit flags.
#[derive(Debug, Default)]
pub struct FileValues {
    pub local: Option<IpAddr>,
    pub port: Option<u16>,
    pub esp_port: Option<u16>,
    pub ageing_secs: Option<u64>,
    pub learning: Option<bool>,
    pub max_fdb: Option<usize>,
    pub accept_any: Option<bool>,
    pub control: Option<PathBuf>,
    pub control_group: Option<String>,
    pub threads: Option<usize>,
    pub offloads: Option<bool>,
    /// `df`, `ttl`, `tos`, `srcport`, `bum_rate`, `min_pmtu`, `busy_poll`.
    pub tuning: FileTuning,
    pub networks: Vec<NetworkConfig>,
}

/// Reads and parses a config file, and the key files its networks name.
pub fn load_file(path: &Path) -> Result<FileValues, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_file_with_keys(&text, base).map_err(|e| match e {
        FileError::Parse(message) => ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        },
        FileError::Key(e) => ConfigError::Key(e),
    })
}

enum FileError {
    Parse(String),
    Key(KeyFileError),
}

/// Parses the TOML text; the error is a one-line message. Networks with a `key_file` are an
/// error here (reading keys is [`load_file`]'s, which knows where the file is).
pub fn parse_file(text: &str) -> Result<FileValues, String> {
    match parse_file_with_keys(text, Path::new(".")) {
        Ok(v) => Ok(v),
        Err(FileError::Parse(m)) => Err(m),
        Err(FileError::Key(e)) => Err(e.to_string()),
    }
}

fn parse_file_with_keys(text: &str, base: &Path) -> Result<FileValues, FileError> {
    // A carriage return in a key, say, must not break the one line (or rewrite the terminal).
    parse_toml(text, base).map_err(|e| match e {
        FileError::Parse(message) => FileError::Parse(crate::text::printable(&message)),
        key => key,
    })
}

fn parse_toml(text: &str, base: &Path) -> Result<FileValues, FileError> {
    let file: FileConfig =
        toml::from_str(text).map_err(|e| FileError::Parse(one_line(&e.to_string())))?;
    let mut networks = Vec::with_capacity(file.network.len());
    for n in file.network {
        let vni = Vni::new(n.vni).map_err(|e| FileError::Parse(e.to_string()))?;
        let mac = n
            .mac
            .as_deref()
            .map(parse_unicast_mac)
            .transpose()
            .map_err(FileError::Parse)?;
        let encryption = match &n.key_file {
            Some(file) => Some(KeyRing::single(
                load_key_file(&base.join(file)).map_err(FileError::Key)?,
            )),
            None => None,
        };
        let bum_rate = n
            .bum_rate
            .map(check_bum_rate)
            .transpose()
            .map_err(FileError::Parse)?;
        networks.push(NetworkConfig {
            name: n.name.unwrap_or_else(|| format!("vni{vni}")),
            vni,
            dev: n.dev,
            address: n.address,
            remotes: n.remotes,
            mtu: n.mtu,
            allow_vlan: n.allow_vlan,
            mac,
            bum_rate,
            encryption,
            bridge: n.bridge,
            pool: n.pool,
            hosts: n.host,
        });
    }
    let tuning = FileTuning::parse(
        file.df.as_deref(),
        file.ttl.as_ref(),
        file.tos.as_ref(),
        file.srcport.as_deref(),
        file.bum_rate,
        file.min_pmtu,
        file.busy_poll,
    )
    .map_err(FileError::Parse)?;
    Ok(FileValues {
        local: file.local,
        port: file.port,
        esp_port: file.esp_port,
        ageing_secs: file.ageing,
        learning: file.learning,
        max_fdb: file.max_fdb,
        accept_any: file.accept_any,
        control: file.control,
        control_group: file.control_group,
        threads: file.threads,
        offloads: file.offloads,
        tuning,
        networks,
    })
}

/// toml's messages span several lines with a source excerpt; errors here are one line.
fn one_line(message: &str) -> String {
    let mut parts = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = parts.next().unwrap_or("invalid TOML").to_string();
    match parts.next_back() {
        Some(last) if last != first => format!("{first}: {last}"),
        _ => first,
    }
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
        crate::validate::unique_names(&self.networks)?;
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
    let ip = resolve_address(remote, local)?;
    crate::validate::destination("remote", ip, local)?;
    Ok(ip)
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
mod tests {
    use super::*;

    #[test]
    fn ports_are_refused_with_the_real_range() {
        assert_eq!(parse_port("4789"), Ok(4789));
        assert_eq!(parse_port("65535"), Ok(65535));
        for bad in ["0", "65536", "99999999999999999999999"] {
            let e = parse_port(bad).unwrap_err();
            assert!(
                e.contains(&format!("port {bad}")) && e.contains("1-65535"),
                "{e}"
            );
        }
        let e = parse_port("x1").unwrap_err();
        assert!(
            e.contains("not a port number") && e.contains("1-65535"),
            "{e}"
        );
    }

    #[test]
    fn file_with_two_networks() {
        let v = parse_file(
            r#"
            local = "10.0.0.1"
            port = 4789
            [[network]]
            name = "blue"
            vni = 42
            dev = "vx42"
            address = "10.1.0.1/24"
            remotes = ["10.0.0.2", "10.0.0.3"]
            [[network]]
            vni = 43
            dev = "vx43"
            mtu = 1400
            "#,
        )
        .unwrap();
        assert_eq!(v.networks.len(), 2);
        assert_eq!(v.networks[0].remotes.len(), 2);
        assert_eq!(v.networks[1].name, "vni43");
        assert_eq!(v.networks[1].mtu, Some(1400));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_one_line_errors() {
        let e =
            parse_file("[[network]]\nvni = 42\ndev = \"vx42\"\nremote = [\"x\"]\n").unwrap_err();
        assert!(e.contains("unknown field `remote`"), "{e}");
        assert!(!e.contains('\n'));
        let e = parse_file("[[network]]\nvni = 16777216\ndev = \"vx\"\n").unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = parse_file("[[network]]\nvni = 1\ndev = \"vx\"\naddress = \"10.1.0.1/33\"\n")
            .unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        // Found by the config_file fuzz target: a key with a carriage return in it.
        let e = parse_file("\"a\\rb\\u001b[2J\" = 1\n").unwrap_err();
        assert!(e.contains("unknown field `a\\rb\\u{1b}[2J`"), "{e}");
        assert!(!e.contains(['\r', '\u{1b}']), "{e:?}");
    }

    #[test]
    fn key_file_encrypts_the_network_relative_to_the_config_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vxnet-config-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("blue.key");
        std::fs::write(&key, "ab".repeat(32)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = dir.join("net.toml");
        std::fs::write(
            &config,
            "esp_port = 4501\n[[network]]\nvni = 42\ndev = \"vx42\"\nkey_file = \"blue.key\"\n\
             [[network]]\nvni = 43\ndev = \"vx43\"\n",
        )
        .unwrap();
        let v = load_file(&config).unwrap();
        assert_eq!(v.esp_port, Some(4501));
        let ring = v.networks[0].encryption.as_ref().unwrap();
        assert_eq!(ring.send_key().unwrap().to_hex(), "ab".repeat(32));
        assert!(v.networks[1].encryption.is_none());
        std::fs::write(
            &config,
            "[[network]]\nvni = 42\ndev = \"vx42\"\nkey_file = \"nope.key\"\n",
        )
        .unwrap();
        let e = load_file(&config).unwrap_err().to_string();
        assert!(e.contains("nope.key does not exist"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn engine_with(networks: Vec<NetworkConfig>) -> EngineConfig {
        EngineConfig {
            local: "10.0.0.1".parse().unwrap(),
            port: 4789,
            esp_port: DEFAULT_ESP_PORT,
            bind_esp: false,
            networks,
            ageing_secs: DEFAULT_AGEING_SECS,
            learning: true,
            max_fdb: DEFAULT_MAX_FDB,
            accept_any: false,
            control: PathBuf::from("/tmp/x.sock"),
            control_group: None,
            threads: 2,
            offloads: true,
            tunnel_gso: true,
            tuning: crate::tuning::Tuning::default(),
            state_dir: None,
        }
    }

    fn net(name: &str, vni: u32, dev: &str) -> NetworkConfig {
        NetworkConfig {
            name: name.to_string(),
            vni: Vni::new(vni).unwrap(),
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

    #[test]
    fn out_of_range_values_name_their_range() {
        let message = |c: EngineConfig| c.validate().unwrap_err().to_string();
        let one = || vec![net("blue", 42, "vx42")];
        let mut c = engine_with(one());
        c.port = 0;
        assert_eq!(message(c), "port 0 is out of range (valid: 1-65535)");
        let mut c = engine_with(one());
        c.threads = 300;
        assert_eq!(message(c), "threads 300 is out of range (valid: 1-256)");
        let mut c = engine_with(one());
        c.threads = 0;
        assert!(message(c).contains("valid: 1-256"));
        let mut c = engine_with(one());
        c.ageing_secs = 0;
        assert!(message(c).starts_with("ageing 0 is out of range"));
        let mut c = engine_with(one());
        c.max_fdb = 0;
        assert!(message(c).starts_with("max-fdb 0 is out of range"));
        for mtu in [0, 67, u32::MAX] {
            let mut n = net("blue", 42, "vx42");
            n.mtu = Some(mtu);
            assert_eq!(
                message(engine_with(vec![n])),
                format!("mtu of network blue {mtu} is out of range (valid: 68-65535)")
            );
        }
        let mut c = engine_with(one());
        c.local = "0.0.0.0".parse().unwrap();
        assert!(message(c).contains("unspecified"));
        // Typed values built in code (not parsed from a flag or file) are checked too.
        let mut c = engine_with(one());
        c.tuning.srcport = crate::tuning::SourcePortRange { min: 80, max: 90 };
        assert_eq!(
            message(c),
            "srcport 80-90 is out of range (valid: MIN-MAX within 1024-65535, MIN <= MAX)"
        );
        let mut c = engine_with(one());
        c.tuning.bum_rate = Some(0);
        assert_eq!(
            message(c),
            "bum-rate 0 is out of range (valid: 1-100000000)"
        );
        let mut c = engine_with(one());
        c.tuning.outer.tos = vxnet_encap::outer::TosPolicy::Fixed(3);
        assert!(message(c).contains("valid: 0-252 with the ECN bits 0"));
        let mut n = net("blue", 42, "vx42");
        n.bum_rate = Some(100_000_001);
        assert_eq!(
            message(engine_with(vec![n])),
            "bum_rate of network blue 100000001 is out of range (valid: 1-100000000)"
        );
    }

    #[test]
    fn duplicate_names_vnis_and_devices_are_refused() {
        let message = |n: Vec<NetworkConfig>| engine_with(n).validate().unwrap_err().to_string();
        assert_eq!(
            message(vec![net("blue", 42, "vx42"), net("blue", 43, "vx43")]),
            "network name \"blue\" is configured twice"
        );
        assert!(message(vec![net("a", 42, "vx42"), net("b", 42, "vx43")]).contains("VNI 42"));
        assert!(message(vec![net("a", 42, "vx42"), net("b", 43, "vx42")]).contains("vx42"));
        assert!(message(vec![net("a b", 42, "vx42")]).contains("not valid"));
        engine_with(vec![net("a", 42, "vx42"), net("b", 43, "vx43")])
            .validate()
            .unwrap();
    }

    #[test]
    fn tuning_keys() {
        let v = parse_file(
            "df = \"inherit\"\nttl = 9\ntos = \"inherit\"\nsrcport = \"50000-50999\"\nbum_rate = 500\n[[network]]\nvni = 1\ndev = \"vx\"\nbum_rate = 10\n",
        )
        .unwrap();
        assert_eq!(v.tuning.df, Some(vxnet_encap::outer::DfPolicy::Inherit));
        assert_eq!(v.tuning.srcport.map(|r| r.len()), Some(1000));
        assert_eq!(v.tuning.bum_rate, Some(500));
        assert_eq!(v.networks[0].bum_rate, Some(10));
        let e = parse_file("tos = 3\n").unwrap_err();
        assert!(e.contains("ECN") && !e.contains('\n'), "{e}");
        let e = parse_file("[[network]]\nvni = 1\ndev = \"vx\"\nbum_rate = 0\n").unwrap_err();
        assert!(e.contains("1-100000000"), "{e}");
    }

    #[test]
    fn remotes_resolve_and_families_must_match() {
        let local: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            resolve_remote("10.0.0.2", local).unwrap(),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            resolve_address("localhost", local).unwrap(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        // ... which is no VTEP: frames sent there would loop back into this host.
        assert!(matches!(
            resolve_remote("localhost", local),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            resolve_remote("10.0.0.1", local),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            resolve_remote("fd00::2", local),
            Err(ConfigError::FamilyMismatch { .. })
        ));
        assert!(matches!(
            resolve_remote("no-such-host.invalid", local),
            Err(ConfigError::UnresolvableRemote { .. })
        ));
    }
}
