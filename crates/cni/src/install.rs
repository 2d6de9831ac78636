//! `vxnet cni install`: the plugin binary into the runtimes' plugin directory and exactly one
//! conflist for the network into their configuration directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Value};

use crate::spec::spec_identifier;

/// The binary's name, which the conflist's `"type"` names.
pub const PLUGIN_NAME: &str = "vxnet-cni";
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";

/// The conflist for `network`. The top-level `cniVersion` is 1.0.0 because runtimes built on
/// libcni 1.1 (Debian 12's podman and containerd) know no newer one; `cniVersions` lets a
/// newer runtime pick 1.1.0 (STATUS, GC). The control socket path is in the plugin's entry
/// because runtimes exec the plugin with nothing else.
pub fn conflist(network: &str, control: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": network,
        "plugins": [{
            "type": PLUGIN_NAME,
            "control": control,
            "capabilities": {"aliases": true}
        }]
    })
}

/// `10-vxnet-NET.conflist`: runtimes that read only the first file of the directory
/// (containerd's `ctr`) find it before the usual `87-podman…`/`99-loopback…` files.
pub fn conflist_file_name(network: &str) -> String {
    format!("10-vxnet-{network}.conflist")
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("network name {0:?} cannot name a CNI network (an alphanumeric, then alphanumerics, '_', '.', '-')")]
    BadName(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already configures network {network} with plugin {plugin:?}; remove it first (a network must have one conflist)")]
    Foreign {
        path: PathBuf,
        network: String,
        plugin: String,
    },
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub network: String,
    pub plugin: PathBuf,
    pub conflist: PathBuf,
    /// Earlier vxnet conflists of the network under another file name, removed.
    pub removed: Vec<PathBuf>,
    /// The configuration file that sorts first in the directory: what runtimes that read only
    /// one file (ctr) use. Ours unless another sorts before it.
    pub first: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename: a runtime reading (or
/// exec'ing) the old file at that moment sees it whole, and a failure leaves the old one.
fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io(path)(e)
    })
}

/// The plugin type of a configuration file's JSON (conflist or single config).
fn plugin_type(conf: &Value) -> Option<&str> {
    conf.get("plugins")
        .and_then(|p| p.get(0))
        .unwrap_or(conf)
        .get("type")
        .and_then(Value::as_str)
}

/// The runtimes' configuration files in `dir`, sorted as they read them.
fn config_files(dir: &Path) -> Result<Vec<PathBuf>, InstallError> {
    let mut files = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "conf" || e == "conflist" || e == "json")
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(dir)(e)),
    };
    files.sort();
    Ok(files)
}

/// A network name a conflist can carry.
pub fn check_network_name(network: &str) -> Result<(), InstallError> {
    if spec_identifier(network) {
        Ok(())
    } else {
        Err(InstallError::BadName(network.to_owned()))
    }
}

/// Installs `plugin` (the `vxnet-cni` binary) into `bin_dir` and the conflist of `network`
/// into `conf_dir`, creating both directories. Refuses, before writing anything, when another
/// plugin's configuration already claims the network's name.
pub fn install(
    plugin: &Path,
    network: &str,
    bin_dir: &Path,
    conf_dir: &Path,
    control: &Path,
) -> Result<Installed, InstallError> {
    check_network_name(network)?;
    let target = conf_dir.join(conflist_file_name(network));
    let mut removed = Vec::new();
    for path in config_files(conf_dir)? {
        let Some(conf) = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        else {
            continue;
        };
        if conf.get("name").and_then(Value::as_str) != Some(network) || path == target {
            continue;
        }
        match plugin_type(&conf) {
            Some(PLUGIN_NAME) => removed.push(path),
            other => {
                return Err(InstallError::Foreign {
                    path,
                    network: network.to_owned(),
                    plugin: other.unwrap_or("?").to_owned(),
                })
            }
        }
    }
    let binary = fs::read(plugin).map_err(io(plugin))?;
    fs::create_dir_all(bin_dir).map_err(io(bin_dir))?;
    fs::create_dir_all(conf_dir).map_err(io(conf_dir))?;
    let installed_plugin = bin_dir.join(PLUGIN_NAME);
    replace_file(&installed_plugin, &binary, 0o755)?;
    let mut text = serde_json::to_string_pretty(&conflist(network, control))
        .map_err(|e| io(&target)(e.into()))?;
    text.push('\n');
    replace_file(&target, text.as_bytes(), 0o644)?;
    for old in &removed {
        fs::remove_file(old).map_err(io(old))?;
    }
    let first = config_files(conf_dir)?
        .into_iter()
        .next()
        .unwrap_or_else(|| target.clone());
    Ok(Installed {
        network: network.to_owned(),
        plugin: installed_plugin,
        conflist: target,
        removed,
        first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_has_what_runtimes_need() {
        let c = conflist("blue", Path::new("/run/vxnet/vxnet.sock"));
        assert_eq!(c["name"], "blue");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["cniVersions"], json!(["1.0.0", "1.1.0"]));
        assert_eq!(c["plugins"][0]["type"], PLUGIN_NAME);
        assert_eq!(c["plugins"][0]["control"], "/run/vxnet/vxnet.sock");
        assert_eq!(c["plugins"][0]["capabilities"]["aliases"], true);
        assert_eq!(conflist_file_name("blue"), "10-vxnet-blue.conflist");
    }

    #[test]
    fn install_writes_one_conflist_and_refuses_a_foreign_one() {
        let tmp = tempfile::tempdir().unwrap();
        let plugin = tmp.path().join("src-plugin");
        fs::write(&plugin, b"#!/bin/sh\n").unwrap();
        let (bin, conf) = (tmp.path().join("bin"), tmp.path().join("net.d"));
        let control = Path::new("/run/x.sock");
        fs::create_dir_all(&conf).unwrap();
        // An older vxnet conflist of the network under another name is replaced.
        let old = conf.join("50-blue.conflist");
        fs::write(&old, conflist("blue", control).to_string()).unwrap();
        fs::write(
            conf.join("99-other.conflist"),
            conflist("red", control).to_string(),
        )
        .unwrap();
        let done = install(&plugin, "blue", &bin, &conf, control).unwrap();
        assert_eq!(done.removed, vec![old.clone()]);
        assert!(!old.exists());
        assert_eq!(done.first, conf.join("10-vxnet-blue.conflist"));
        let mode = fs::metadata(bin.join(PLUGIN_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let written: Value = serde_json::from_slice(&fs::read(&done.conflist).unwrap()).unwrap();
        assert_eq!(written, conflist("blue", control));
        // Installing again changes nothing and removes nothing.
        assert!(install(&plugin, "blue", &bin, &conf, control)
            .unwrap()
            .removed
            .is_empty());
        // Another plugin's conflist for the same name: refused, nothing written.
        let foreign = conf.join("20-green.conflist");
        fs::write(
            &foreign,
            json!({"cniVersion": "1.0.0", "name": "green", "plugins": [{"type": "bridge"}]})
                .to_string(),
        )
        .unwrap();
        let e = install(&plugin, "green", &bin, &conf, control).unwrap_err();
        assert!(
            matches!(e, InstallError::Foreign { ref plugin, .. } if plugin == "bridge"),
            "{e}"
        );
        assert!(!conf.join("10-vxnet-green.conflist").exists());
        assert!(matches!(
            install(&plugin, "bad/name", &bin, &conf, control),
            Err(InstallError::BadName(_))
        ));
        let missing = install(Path::new("/nonexistent"), "blue", &bin, &conf, control);
        assert!(matches!(missing, Err(InstallError::Io { .. })));
    }
}
