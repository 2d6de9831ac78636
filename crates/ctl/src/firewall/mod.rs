//! Host firewall management: open the VXLAN UDP port to the cluster's member addresses only.
//!
//! Three backends, each producing exact commands ([`Command`]) so `--dry-run` can print what would
//! run: nftables (an own `inet vxnet` table, see [`nftables`]), ufw and firewalld (their CLIs).
//! Detection refuses when ufw and firewalld are both active, since they fight over the same
//! netfilter hooks and the overlay breaks in ways that are hard to see. While `vxnet run` serves
//! a cluster, [`sync`] keeps an applied nftables table in step with the members. [`bypass`] says
//! which outbound chains the local engine's tunnel-GSO path passes by.

mod bypass;
pub mod cli;
pub mod firewalld;
pub mod nftables;
pub mod sync;
pub mod ufw;

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::process::Stdio;

pub const DEFAULT_PORT: u16 = 4789;
pub use vxnet_encap::esp::DEFAULT_ESP_PORT;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ufw and firewalld are both active; they conflict and break the overlay — disable one of them first")]
    Conflict,
    #[error("no firewall backend found (need nft, an active ufw or a running firewalld)")]
    NoBackend,
    #[error("no peer addresses: give --peer IP or join a cluster whose members have addresses")]
    NoPeers,
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {what}: {detail}")]
    Parse { what: String, detail: String },
    #[error(transparent)]
    Cluster(#[from] vxnet_cluster::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Nftables,
    Ufw,
    Firewalld,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Nftables => "nftables",
            Backend::Ufw => "ufw",
            Backend::Firewalld => "firewalld",
        })
    }
}

/// One external command, with optional standard input (nft reads its ruleset from stdin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub program: String,
    pub args: Vec<String>,
    pub stdin: Option<String>,
}

impl Command {
    pub fn new(program: &str, args: &[&str]) -> Command {
        Command {
            program: program.to_owned(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            stdin: None,
        }
    }

    /// The command line as a shell would need it, for messages and `--dry-run`.
    pub fn line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs the command, returning its stdout; a non-zero exit is an error with its stderr.
    pub fn run(&self) -> Result<String> {
        let mut child = std::process::Command::new(&self.program)
            .args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                cmd: self.line(),
                source,
            })?;
        if let (Some(input), Some(mut pipe)) = (&self.stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .map_err(|source| Error::Spawn {
                    cmd: self.line(),
                    source,
                })?;
        }
        let out = child.wait_with_output().map_err(|source| Error::Spawn {
            cmd: self.line(),
            source,
        })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Failed {
                cmd: self.line(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', "; "),
            })
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.stdin {
            None => f.write_str(&self.line()),
            Some(input) => write!(f, "{} <<'EOF'\n{}EOF", self.line(), input),
        }
    }
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What detection found on the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Probe {
    pub nft: bool,
    pub ufw_active: bool,
    pub firewalld_active: bool,
}

impl Probe {
    /// Asks the host: `nft --version`, `ufw status`, `firewall-cmd --state`. Missing tools count as
    /// inactive.
    pub fn detect() -> Probe {
        let out = |p: &str, a: &[&str]| Command::new(p, a).run().ok();
        Probe {
            nft: out("nft", &["--version"]).is_some(),
            ufw_active: out("ufw", &["status"]).is_some_and(|s| s.contains("Status: active")),
            firewalld_active: out("firewall-cmd", &["--state"])
                .is_some_and(|s| s.trim() == "running"),
        }
    }
}

/// Picks the backend: the requested one, else firewalld, ufw, nftables in that order (a managed
/// firewall owns the ruleset, so rules must go through it). Both managers active is refused even
/// when a backend was named.
pub fn choose_backend(probe: Probe, requested: Option<Backend>) -> Result<Backend> {
    if probe.ufw_active && probe.firewalld_active {
        return Err(Error::Conflict);
    }
    if let Some(b) = requested {
        return Ok(b);
    }
    if probe.firewalld_active {
        Ok(Backend::Firewalld)
    } else if probe.ufw_active {
        Ok(Backend::Ufw)
    } else if probe.nft {
        Ok(Backend::Nftables)
    } else {
        Err(Error::NoBackend)
    }
}

/// One UDP port open to some peers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Open {
    pub port: u16,
    pub peers: Vec<IpAddr>,
}

/// The peers open now for `port` in `current` (none if it is not there).
fn open_to(current: &[Open], port: u16) -> &[IpAddr] {
    current
        .iter()
        .find(|o| o.port == port)
        .map_or(&[][..], |o| o.peers.as_slice())
}

/// What `backend` has open on this host: for nftables every port of vxnet's table, for ufw and
/// firewalld (whose rules are per port) the ports of `ports` that have rules.
pub fn list(backend: Backend, ports: &[u16]) -> Result<Vec<Open>> {
    let sorted = |mut peers: Vec<IpAddr>| {
        peers.sort();
        peers.dedup();
        peers
    };
    if backend == Backend::Nftables {
        let (peers, open) = nftables::list()?;
        let peers = sorted(peers);
        return Ok(open
            .into_iter()
            .map(|port| Open {
                port,
                peers: peers.clone(),
            })
            .collect());
    }
    let status = match backend {
        Backend::Ufw => ufw::status_cmd().run()?,
        _ => firewalld::list_cmd().run()?,
    };
    let mut out = Vec::new();
    for &port in ports {
        let peers = match backend {
            Backend::Ufw => ufw::parse_status(&status, port),
            _ => firewalld::parse_rules(&status, port),
        };
        if !peers.is_empty() {
            out.push(Open {
                port,
                peers: sorted(peers),
            });
        }
    }
    Ok(out)
}

/// The commands that make the firewall open exactly `ports` to exactly `peers`. `current` is what
/// is open now (for ufw/firewalld, which change rule by rule; a port open now but no longer
/// wanted, such as the ESP port once no network is encrypted, is closed); nftables replaces its
/// table atomically.
pub fn apply_plan(
    backend: Backend,
    ports: &[u16],
    peers: &[IpAddr],
    current: &[Open],
) -> Vec<Command> {
    if backend == Backend::Nftables {
        return vec![nftables::apply_cmd(ports, peers)];
    }
    let closed = current.iter().filter(|o| !ports.contains(&o.port));
    let plan = ports
        .iter()
        .map(|&port| (port, peers, open_to(current, port)))
        .chain(closed.map(|o| (o.port, &[][..], o.peers.as_slice())));
    let mut cmds = Vec::new();
    for (port, wanted, now) in plan {
        match backend {
            Backend::Ufw => cmds.extend(ufw::sync(port, wanted, now)),
            _ => cmds.extend(firewalld::sync(port, wanted, now)),
        }
    }
    if backend == Backend::Firewalld {
        // One reload at the end, not one per port.
        cmds.retain(|c| c.args != ["--reload"]);
        if !cmds.is_empty() {
            cmds.push(Command::new("firewall-cmd", &["--reload"]));
        }
    }
    cmds
}

pub fn remove_plan(backend: Backend, current: &[Open]) -> Vec<Command> {
    match backend {
        Backend::Nftables => vec![nftables::remove_cmd()],
        _ => apply_plan(backend, &[], &[], current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection() {
        let p = |nft, ufw_active, firewalld_active| Probe {
            nft,
            ufw_active,
            firewalld_active,
        };
        assert!(matches!(
            choose_backend(p(true, true, true), None),
            Err(Error::Conflict)
        ));
        assert!(matches!(
            choose_backend(p(true, true, true), Some(Backend::Nftables)),
            Err(Error::Conflict)
        ));
        assert_eq!(
            choose_backend(p(true, true, false), None).unwrap(),
            Backend::Ufw
        );
        assert_eq!(
            choose_backend(p(true, false, true), None).unwrap(),
            Backend::Firewalld
        );
        assert_eq!(
            choose_backend(p(true, false, false), None).unwrap(),
            Backend::Nftables
        );
        assert!(matches!(
            choose_backend(p(false, false, false), None),
            Err(Error::NoBackend)
        ));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("10.0.0.1"), "10.0.0.1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
