//! The file form of the configuration (`vxnet run --config FILE`): TOML with one `[[network]]`
//! table per network, unknown keys refused, read into [`FileValues`] that explicit flags
//! override.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use vxnet_encap::Vni;

use super::{parse_unicast_mac, ConfigError, NetworkConfig};
use crate::keyring::{load_key_file, KeyFileError, KeyRing};
use crate::tuning::{check_bum_rate, FileTuning, TextOrNumber};

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
