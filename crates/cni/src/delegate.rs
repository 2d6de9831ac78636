//! Delegated IPAM: the plugin named in the config's `"ipam"` (Debian's host-local, in
//! /usr/lib/cni) is exec'd from `CNI_PATH` with the same environment and configuration, as the
//! spec says; its result carries the address the engine then attaches with.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::spec::{CniResult, Code, PluginError, VersionInfo};

/// An IPAM plugin found in `CNI_PATH`, and the spec version to speak to it.
#[derive(Debug, Clone)]
pub(crate) struct Ipam {
    name: String,
    exe: PathBuf,
    /// The configuration as the runtime gave it, with `cniVersion` set to what the IPAM
    /// plugin speaks: 1.0.0 and 1.1.0 results are the same, so a plugin that stops at 1.0.0
    /// (Debian's host-local) is still usable from a 1.1.0 config.
    conf: Value,
    /// It speaks 1.1.0: GC and STATUS are passed on to it.
    speaks_1_1: bool,
}

fn failed(name: &str, msg: impl std::fmt::Display) -> PluginError {
    PluginError::new(Code::Io, format!("IPAM plugin {name}: {msg}"))
}

impl Ipam {
    /// The IPAM plugin of `conf`, if it names one. Its `type` must be a bare file name: a
    /// config cannot make the plugin exec a path of its choosing.
    pub(crate) fn resolve(conf: &Value, path: &[PathBuf]) -> Result<Option<Ipam>, PluginError> {
        let Some(ipam) = conf.get("ipam").filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let name = ipam
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| PluginError::new(Code::InvalidConfig, "\"ipam\" has no \"type\""))?;
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(PluginError::new(
                Code::InvalidConfig,
                format!("\"ipam\": type {name:?} is not a plugin name"),
            ));
        }
        let exe = path
            .iter()
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                PluginError::new(
                    Code::InvalidConfig,
                    format!(
                        "IPAM plugin {name:?} not found in CNI_PATH ({})",
                        path.iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(":")
                    ),
                )
            })?;
        let ours = conf
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut ipam = Ipam {
            name: name.to_owned(),
            exe,
            conf: conf.clone(),
            speaks_1_1: false,
        };
        let versions: VersionInfo = serde_json::from_value(
            ipam.exec("VERSION", &[], &serde_json::json!({"cniVersion": ours}))?
                .ok_or_else(|| failed(name, "VERSION printed nothing"))?,
        )
        .map_err(|e| failed(name, format!("VERSION: {e}")))?;
        let speaks = |v: &str| versions.supported_versions.iter().any(|s| s == v);
        ipam.speaks_1_1 = speaks("1.1.0");
        let version = if speaks(&ours) {
            ours
        } else if speaks("1.0.0") {
            "1.0.0".to_owned()
        } else {
            return Err(PluginError::new(
                Code::IncompatibleVersion,
                format!(
                    "IPAM plugin {name} speaks {} only; vxnet-cni needs 1.0.0 or 1.1.0",
                    versions.supported_versions.join(", ")
                ),
            ));
        };
        if let Some(obj) = ipam.conf.as_object_mut() {
            obj.insert("cniVersion".into(), version.into());
        }
        Ok(Some(ipam))
    }

    pub(crate) fn speaks_1_1(&self) -> bool {
        self.speaks_1_1
    }

    /// ADD: the IPAM plugin's result (addresses, routes, DNS; no interfaces).
    pub(crate) fn add(&self) -> Result<CniResult, PluginError> {
        let out = self
            .exec("ADD", &[], &self.conf)?
            .ok_or_else(|| failed(&self.name, "ADD printed no result"))?;
        serde_json::from_value(out).map_err(|e| failed(&self.name, format!("ADD result: {e}")))
    }

    /// DEL, CHECK, GC, STATUS: success or the plugin's error. `env` overrides variables (GC
    /// releases an attachment by DEL with its container id and interface).
    pub(crate) fn call(&self, command: &str, env: &[(&str, &str)]) -> Result<(), PluginError> {
        self.exec(command, env, &self.conf).map(drop)
    }

    fn exec(
        &self,
        command: &str,
        env: &[(&str, &str)],
        stdin: &Value,
    ) -> Result<Option<Value>, PluginError> {
        let mut cmd = Command::new(&self.exe);
        cmd.env("CNI_COMMAND", command)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Its logs go where ours go.
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|e| failed(&self.name, e))?;
        let input = serde_json::to_vec(stdin).map_err(|e| failed(&self.name, e))?;
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin that exits without reading its input reports through its exit status.
            let _ = pipe.write_all(&input);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| failed(&self.name, e))?;
        let value: Option<Value> =
            if out.stdout.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                Some(serde_json::from_slice(&out.stdout).map_err(|e| {
                    failed(&self.name, format!("{command}: output is not JSON: {e}"))
                })?)
            };
        if out.status.success() {
            return Ok(value);
        }
        let field = |k: &str| value.as_ref().and_then(|v| v.get(k).cloned());
        let code = field("code")
            .and_then(|c| c.as_u64())
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(999);
        let msg = field("msg")
            .and_then(|m| m.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("exited with {}", out.status));
        let mut err = PluginError::new(
            Code::Delegated(code),
            format!("IPAM plugin {} {command}: {msg}", self.name),
        );
        if let Some(d) = field("details").and_then(|d| d.as_str().map(str::to_owned)) {
            err = err.details(d);
        }
        Err(err)
    }
}
