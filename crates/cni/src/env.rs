//! The `CNI_*` environment: parsed and checked before anything is asked of the engine, so a
//! hostile or buggy runtime gets code 4 instead of an engine acting on a bad value.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::spec::{spec_identifier, Code, PluginError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

/// The attachment a command is about (ADD, DEL, CHECK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub container_id: String,
    pub ifname: String,
    /// Required for ADD and CHECK; DEL may have none (the namespace is already gone).
    pub netns: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    /// Absent for STATUS, GC and VERSION.
    pub target: Option<Target>,
    /// `CNI_ARGS` as key/value pairs, in order.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`: where delegated plugins are looked up.
    pub path: Vec<PathBuf>,
}

fn invalid(msg: impl Into<String>) -> PluginError {
    PluginError::new(Code::InvalidEnvironment, msg)
}

/// Only the command: VERSION must answer without the other variables or a config.
pub fn command(var: &dyn Fn(&str) -> Option<String>) -> Result<Command, PluginError> {
    match var("CNI_COMMAND").as_deref() {
        Some("ADD") => Ok(Command::Add),
        Some("DEL") => Ok(Command::Del),
        Some("CHECK") => Ok(Command::Check),
        Some("STATUS") => Ok(Command::Status),
        Some("GC") => Ok(Command::Gc),
        Some("VERSION") => Ok(Command::Version),
        None | Some("") => Err(invalid(
            "CNI_COMMAND is not set: vxnet-cni is a CNI plugin, run by a container runtime \
             (ADD, DEL, CHECK, STATUS, GC, VERSION)",
        )),
        Some(other) => Err(invalid(format!(
            "unknown CNI_COMMAND {other:?} (ADD, DEL, CHECK, STATUS, GC, VERSION)"
        ))),
    }
}

/// Parses the environment for `command` through `var` (the process environment, or a map in
/// tests).
pub fn parse(var: &dyn Fn(&str) -> Option<String>) -> Result<Env, PluginError> {
    let command = command(var)?;
    let nonempty = |k: &str| var(k).filter(|v| !v.is_empty());
    let target = match command {
        Command::Add | Command::Del | Command::Check => {
            let container_id =
                nonempty("CNI_CONTAINERID").ok_or_else(|| invalid("CNI_CONTAINERID is not set"))?;
            if !spec_identifier(&container_id) || container_id.len() > 1024 {
                return Err(invalid(format!(
                    "CNI_CONTAINERID {container_id:?} is not a container id (an alphanumeric, \
                     then alphanumerics, '_', '.', '-')"
                )));
            }
            let ifname = nonempty("CNI_IFNAME").ok_or_else(|| invalid("CNI_IFNAME is not set"))?;
            check_ifname(&ifname)?;
            let netns = nonempty("CNI_NETNS").map(PathBuf::from);
            if netns.is_none() && command != Command::Del {
                return Err(invalid("CNI_NETNS is not set"));
            }
            Some(Target {
                container_id,
                ifname,
                netns,
            })
        }
        Command::Status | Command::Gc | Command::Version => None,
    };
    Ok(Env {
        command,
        target,
        args: parse_args(&var("CNI_ARGS").unwrap_or_default())?,
        path: var("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect(),
    })
}

/// `CNI_ARGS`: `K=V;K=V` (podman: `IgnoreUnknown=1;K8S_POD_NAME=web1;...`).
fn parse_args(raw: &str) -> Result<Vec<(String, String)>, PluginError> {
    raw.split(';')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(invalid(format!("CNI_ARGS: {kv:?} is not KEY=VALUE"))),
        })
        .collect()
}

/// A Linux interface name: 1-15 bytes, no '/', ':' or whitespace, not "." or "..".
fn check_ifname(name: &str) -> Result<(), PluginError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "CNI_IFNAME {name:?} is not an interface name (1-15 characters, no '/', ':' or spaces)"
        )))
    }
}

/// Checks that `path` is a namespace file (on nsfs, like `/proc/self/ns/net`) and not this
/// process's own network namespace: a runtime that passes a plain file, a directory or the
/// host's namespace gets code 4 and the engine is never asked to put a veth there.
pub fn check_netns(path: &Path) -> Result<(), PluginError> {
    if !path.is_absolute() {
        return Err(invalid(format!(
            "CNI_NETNS {} is not an absolute path",
            path.display()
        )));
    }
    let meta = std::fs::metadata(path).map_err(|e| {
        invalid(format!(
            "CNI_NETNS {}: {}",
            path.display(),
            if e.kind() == std::io::ErrorKind::NotFound {
                "no such namespace".to_owned()
            } else {
                e.to_string()
            }
        ))
    })?;
    let own = std::fs::metadata("/proc/self/ns/net").map_err(|e| {
        PluginError::new(
            Code::Io,
            format!("/proc/self/ns/net: {e} (is /proc mounted?)"),
        )
    })?;
    if meta.dev() != own.dev() {
        return Err(invalid(format!(
            "CNI_NETNS {} is not a network namespace (not a file of the namespace filesystem)",
            path.display()
        )));
    }
    if meta.ino() == own.ino() {
        return Err(invalid(format!(
            "CNI_NETNS {} is the plugin's own (the host's) network namespace",
            path.display()
        )));
    }
    // A /proc/PID/ns/TYPE link says its type; a bind mount (/run/netns/X) does not, and the
    // engine's setns(CLONE_NEWNET) refuses any other type.
    if let Ok(link) = std::fs::read_link(path) {
        if link.to_str().is_some_and(|l| !l.starts_with("net:[")) {
            return Err(invalid(format!(
                "CNI_NETNS {} is a {} namespace, not a network namespace",
                path.display(),
                link.display()
            )));
        }
    }
    Ok(())
}

/// Whether two paths name one file (the same namespace); paths that cannot be read are
/// compared as text.
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

/// The path the engine is given for `netns`. A runtime in a private mount namespace (a
/// sandboxed CI runner; podman with a tmpfs over /run/netns) makes namespace files that the
/// engine, in another mount namespace, cannot see. A file under /proc, or on a mount whose
/// peer group the host's mount namespace (PID 1's) shares (/run/netns as `ip netns` and podman
/// make it on the host), is passed as it is; otherwise the engine gets
/// `/proc/<this pid>/root<netns>`, which resolves in this process's mount namespace while the
/// plugin waits for the reply. A peer group private to the runtime's namespace (podman makes
/// its /run/netns shared even inside one) does not reach the engine.
pub(crate) fn engine_visible(netns: &Path) -> PathBuf {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    if netns.starts_with("/proc")
        || propagates(
            &read("/proc/self/mountinfo"),
            &read("/proc/1/mountinfo"),
            netns,
        )
    {
        netns.to_path_buf()
    } else {
        let relative = netns.strip_prefix("/").unwrap_or(netns);
        Path::new(&format!("/proc/{}/root", std::process::id())).join(relative)
    }
}

/// Whether the mount holding `path` (the last, longest mount point above it) is in a shared
/// peer group according to `mountinfo` (proc(5)) that the mount namespace of `host_mountinfo`
/// takes part in (as a peer or a slave).
fn propagates(mountinfo: &str, host_mountinfo: &str, path: &Path) -> bool {
    let mut best: Option<(usize, Option<&str>)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4) else { continue };
        let point = point.replace("\\040", " ");
        if !path.starts_with(&point) {
            continue;
        }
        let group = fields
            .iter()
            .skip(6)
            .take_while(|f| **f != "-")
            .find_map(|f| f.strip_prefix("shared:"));
        let depth = Path::new(&point).components().count();
        if !matches!(best, Some((d, _)) if d > depth) {
            best = Some((depth, group));
        }
    }
    let Some((_, Some(group))) = best else {
        return false;
    };
    host_mountinfo.lines().any(|line| {
        line.split(' ').skip(6).take_while(|f| *f != "-").any(|f| {
            f.strip_prefix("shared:")
                .or_else(|| f.strip_prefix("master:"))
                == Some(group)
        })
    })
}

/// The runtime's path inside an [`engine_visible`] path (`/proc/PID/root/run/netns/X` is
/// `/run/netns/X`); any other path as it is.
pub(crate) fn runtime_path(engine_path: &Path) -> PathBuf {
    let mut parts = engine_path.components();
    let digits = |c: Option<std::path::Component<'_>>| {
        c.and_then(|c| c.as_os_str().to_str())
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let prefixed = parts.next() == Some(std::path::Component::RootDir)
        && parts.next().is_some_and(|c| c.as_os_str() == "proc")
        && digits(parts.next())
        && parts.next().is_some_and(|c| c.as_os_str() == "root");
    if prefixed {
        Path::new("/").join(parts.as_path())
    } else {
        engine_path.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, PluginError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse(&|k: &str| map.get(k).cloned())
    }

    fn code(r: Result<Env, PluginError>) -> Code {
        r.unwrap_err().code
    }

    #[test]
    fn missing_or_unknown_command_is_code_4() {
        assert_eq!(code(env(&[])), Code::InvalidEnvironment);
        assert_eq!(code(env(&[("CNI_COMMAND", "")])), Code::InvalidEnvironment);
        let e = env(&[("CNI_COMMAND", "ATTACH")]).unwrap_err();
        assert!(e.msg.contains("ATTACH"), "{e}");
    }

    #[test]
    fn attachment_commands_need_their_variables() {
        let full = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web1"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ];
        let ok = env(&full).unwrap();
        assert_eq!(ok.command, Command::Add);
        assert_eq!(ok.args[1], ("K8S_POD_NAME".into(), "web1".into()));
        assert_eq!(ok.path.len(), 2);
        for missing in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"] {
            let partial: Vec<_> = full
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let e = env(&partial).unwrap_err();
            assert_eq!(e.code, Code::InvalidEnvironment);
            assert!(e.msg.contains(missing), "{e}");
        }
        // DEL without a namespace (it is gone) is fine.
        let del: Vec<_> = full
            .iter()
            .copied()
            .filter(|(k, _)| *k != "CNI_NETNS" && *k != "CNI_COMMAND")
            .chain([("CNI_COMMAND", "DEL")])
            .collect();
        assert_eq!(env(&del).unwrap().target.unwrap().netns, None);
        // STATUS and GC need none of them.
        assert!(env(&[("CNI_COMMAND", "GC")]).unwrap().target.is_none());
    }

    #[test]
    fn hostile_values_are_refused() {
        let base = |k: &'static str, v: &'static str| {
            let mut e = vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/run/netns/x"),
            ];
            e.retain(|(key, _)| *key != k);
            e.push((k, v));
            env(&e)
        };
        for (k, v) in [
            ("CNI_IFNAME", "../../x"),
            ("CNI_IFNAME", "averyveryverylongname"),
            ("CNI_IFNAME", "eth 0"),
            ("CNI_IFNAME", ".."),
            ("CNI_CONTAINERID", "-rf"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_ARGS", "K8S_POD_NAME"),
            ("CNI_ARGS", "=x"),
        ] {
            assert_eq!(code(base(k, v)), Code::InvalidEnvironment, "{k}={v}");
        }
    }

    #[test]
    fn engine_paths_map_back_to_runtime_paths() {
        let info = "22 1 0:21 / / rw shared:1 - ext4 /dev/vda rw\n\
                    30 22 0:25 / /run rw shared:5 - tmpfs tmpfs rw\n\
                    40 30 0:30 / /run/netns rw - tmpfs tmpfs rw\n\
                    41 40 0:4 net:[4026532] /run/netns/a rw shared:9 - nsfs nsfs rw\n";
        let host = "1 0 0:21 / / rw shared:1 - ext4 /dev/vda rw\n\
                    2 1 0:4 net:[4026532] /run/netns/a rw master:9 - nsfs nsfs rw\n\
                    3 1 0:25 / /run rw shared:5 - tmpfs tmpfs rw\n";
        assert!(propagates(info, host, Path::new("/run/netns/a")));
        assert!(
            !propagates(info, host, Path::new("/run/netns/b")),
            "private tmpfs"
        );
        assert!(propagates(info, host, Path::new("/run/netnsx")));
        assert!(!propagates("", host, Path::new("/run/netns/a")));
        // A peer group of the runtime's own (podman's shared /run/netns in a private mount
        // namespace) that the host does not take part in.
        let private = "22 1 0:21 / / rw - ext4 /dev/vda rw\n\
                       50 22 0:40 / /run/netns rw shared:77 - tmpfs tmpfs rw\n";
        assert!(!propagates(private, host, Path::new("/run/netns/x")));
        assert!(!propagates(info, "", Path::new("/run/netns/a")));
        assert_eq!(
            engine_visible(Path::new("/proc/9/ns/net")),
            Path::new("/proc/9/ns/net")
        );
        assert_eq!(
            runtime_path(Path::new("/proc/42/root/run/netns/x")),
            Path::new("/run/netns/x")
        );
        for same in [
            "/run/netns/x",
            "/proc/42/ns/net",
            "/proc/self/root/x",
            "/proc//root/x",
        ] {
            assert_eq!(runtime_path(Path::new(same)), Path::new(same));
        }
    }

    #[test]
    fn netns_must_be_another_network_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"").unwrap();
        for (path, says) in [
            (file.as_path(), "not a network namespace"),
            (dir.path(), "not a network namespace"),
            (Path::new("/nonexistent/ns"), "no such namespace"),
            (Path::new("relative/ns"), "absolute"),
            (Path::new("/proc/self/ns/net"), "own"),
            (Path::new("/proc/self/ns/mnt"), "not a network namespace"),
        ] {
            let e = check_netns(path).unwrap_err();
            assert_eq!(e.code, Code::InvalidEnvironment, "{}", path.display());
            assert!(e.msg.contains(says), "{}: {e}", path.display());
        }
    }
}
