//! The CNI specification's JSON (1.0.0 and 1.1.0, which share every format vxnet uses): the
//! network configuration a runtime passes on stdin, the result, the error and the version reply.
//!
//! Hand-written: the Rust CNI crates on crates.io either target spec 0.4 or bring a plugin
//! framework with its own process handling; these few serde types are all the plugin needs.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The spec versions this plugin speaks, oldest first. 1.1.0 added STATUS, GC, `cniVersions`
/// and a few optional result fields (interface `mtu`, route attributes); the rest is 1.0.0.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];
/// The newest supported version: what errors carry when the config's version is unusable.
pub const LATEST: &str = "1.1.0";

/// The spec's well-known error codes, and vxnet's own (100 and up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion,
    UnsupportedField,
    UnknownContainer,
    InvalidEnvironment,
    Io,
    Decode,
    InvalidConfig,
    TryAgainLater,
    /// STATUS: ADD cannot be served.
    NotReady,
    /// STATUS: ADD cannot be served and existing attachments may have limited connectivity.
    LimitedConnectivity,
    /// The engine refused the request (its message says why: address taken, subnet full, ...).
    EngineRefused,
    /// ADD for a container and interface that already has an endpoint (a runtime must DEL first).
    AlreadyAttached,
    /// A delegated (IPAM) plugin's own code, passed on.
    Delegated(u32),
}

impl Code {
    pub fn number(self) -> u32 {
        match self {
            Code::IncompatibleVersion => 1,
            Code::UnsupportedField => 2,
            Code::UnknownContainer => 3,
            Code::InvalidEnvironment => 4,
            Code::Io => 5,
            Code::Decode => 6,
            Code::InvalidConfig => 7,
            Code::TryAgainLater => 11,
            Code::NotReady => 50,
            Code::LimitedConnectivity => 51,
            Code::EngineRefused => 100,
            Code::AlreadyAttached => 101,
            Code::Delegated(n) => n,
        }
    }
}

/// What a failed command prints on stdout (with a non-zero exit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct PluginError {
    pub code: Code,
    pub msg: String,
    pub details: Option<String>,
}

impl PluginError {
    pub fn new(code: Code, msg: impl Into<String>) -> PluginError {
        PluginError {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> PluginError {
        self.details = Some(details.into());
        self
    }

    /// The spec's error object, in `version`.
    pub fn to_json(&self, version: &str) -> Value {
        let mut obj = Map::new();
        obj.insert("cniVersion".into(), version.into());
        obj.insert("code".into(), self.code.number().into());
        obj.insert("msg".into(), self.msg.clone().into());
        if let Some(d) = &self.details {
            obj.insert("details".into(), d.clone().into());
        }
        Value::Object(obj)
    }
}

/// Checks a `cniVersion`: one of [`SUPPORTED_VERSIONS`], or error code 1.
pub fn check_version(version: &str) -> Result<&'static str, PluginError> {
    SUPPORTED_VERSIONS
        .iter()
        .find(|v| **v == version)
        .copied()
        .ok_or_else(|| {
            PluginError::new(
                Code::IncompatibleVersion,
                format!(
                    "incompatible CNI version {version:?}: vxnet-cni supports {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            )
        })
}

/// One plugin's network configuration as a runtime passes it on stdin (the conflist's entry
/// with the list's `name` and `cniVersion`, plus `runtimeConfig`, `prevResult`, GC's list).
/// Keys vxnet does not know are ignored, as the spec allows (`args` must be).
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// The network's name: the vxnet network the endpoint joins.
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The engine's control socket [default: the engine's default path].
    #[serde(default)]
    pub control: Option<PathBuf>,
    /// A delegated IPAM plugin (`{"type": "host-local", ...}`); absent: the engine's IPAM.
    #[serde(default)]
    pub ipam: Option<Value>,
    #[serde(default)]
    pub dns: Option<Dns>,
    #[serde(default, rename = "runtimeConfig")]
    pub runtime_config: RuntimeConfig,
    #[serde(default, rename = "prevResult")]
    pub prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// Capability arguments (`runtimeConfig`) the plugin declares: `aliases`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    /// Network name to extra names of the container (podman's `--network-alias`).
    #[serde(default)]
    pub aliases: Option<BTreeMap<String, Vec<String>>>,
}

/// One entry of GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The ADD result. Fields vxnet does not produce but a previous plugin did (1.1's `socketPath`,
/// route `table`, ...) are kept in `extra`, so a `prevResult` passes through unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// 1.1.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The namespace path, for an interface inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl CniResult {
    /// Appends `other` (a later plugin's part) to this result: its interfaces after ours with
    /// its `ips[].interface` indices moved along, its routes after ours, and its DNS when it
    /// has one. This is how ADD honours a `prevResult`.
    pub fn extend(&mut self, other: CniResult) {
        let base = self.interfaces.len();
        self.interfaces.extend(other.interfaces);
        self.ips.extend(other.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + base);
            ip
        }));
        self.routes.extend(other.routes);
        if !other.dns.is_empty() {
            self.dns = other.dns;
        }
    }

    /// The result as `version` has it: `mtu` on interfaces is 1.1.0's, left out in 1.0.0.
    pub fn for_version(mut self, version: &str) -> CniResult {
        self.cni_version = version.to_owned();
        if version == "1.0.0" {
            for i in &mut self.interfaces {
                i.mtu = None;
            }
        }
        self
    }
}

/// VERSION's reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

/// Names the spec allows for networks and container ids: an alphanumeric character, then
/// alphanumerics, `_`, `.` or `-`.
pub fn spec_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_checked_exactly() {
        assert_eq!(check_version("1.0.0"), Ok("1.0.0"));
        assert_eq!(check_version("1.1.0"), Ok("1.1.0"));
        for bad in ["0.4.0", "1.2.0", "1.0", "", "v1.0.0"] {
            let e = check_version(bad).unwrap_err();
            assert_eq!(e.code, Code::IncompatibleVersion, "{bad}");
        }
    }

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = PluginError::new(Code::InvalidConfig, "bad").details("why");
        assert_eq!(
            e.to_json("1.0.0"),
            serde_json::json!({"cniVersion": "1.0.0", "code": 7, "msg": "bad", "details": "why"})
        );
        let e = PluginError::new(Code::NotReady, "down");
        assert!(e.to_json(LATEST).get("details").is_none());
    }

    #[test]
    fn prev_result_is_extended_with_indices_moved_and_unknown_fields_kept() {
        let mut prev: CniResult = serde_json::from_value(serde_json::json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "lo", "socketPath": "/x"}],
            "ips": [{"address": "127.0.0.1/8", "interface": 0}],
            "routes": [{"dst": "10.9.0.0/16", "table": 5}]
        }))
        .unwrap();
        let ours: CniResult = serde_json::from_value(serde_json::json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "mtu": 1450,
                            "sandbox": "/run/netns/a"}],
            "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
            "dns": {"nameservers": ["10.1.0.1"]}
        }))
        .unwrap();
        prev.extend(ours);
        let v = serde_json::to_value(prev.for_version("1.0.0")).unwrap();
        assert_eq!(v["interfaces"][0]["socketPath"], "/x");
        assert_eq!(v["ips"][1]["interface"], 1);
        assert_eq!(v["routes"][0]["table"], 5);
        assert_eq!(v["dns"]["nameservers"][0], "10.1.0.1");
        assert!(v["interfaces"][1].get("mtu").is_none(), "1.0.0 has no mtu");
        assert_eq!(v["cniVersion"], "1.0.0");
    }

    #[test]
    fn identifiers_follow_the_spec() {
        assert!(spec_identifier("web1"));
        assert!(spec_identifier("0a.b_c-d"));
        for bad in ["", "-a", ".a", "a/b", "a b", "ä"] {
            assert!(!spec_identifier(bad), "{bad}");
        }
    }
}
