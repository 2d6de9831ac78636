//! `vxnet network …`: create (plain or `--encrypted`), list, remove, and rotate an encrypted
//! network's key.

use std::time::Duration;

use clap::{Args, Subcommand};

use vxnet_cluster::keyring::DEFAULT_ROTATION;
use vxnet_cluster::rotation::{self, RotateOptions};
use vxnet_cluster::state::StateDir;
use vxnet_cluster::token::Role;
use vxnet_cluster::{network, node, Error, NetworkDef, Result};

use super::cli::{print_json, runtime, StateDirArg};

#[derive(Debug, Args)]
pub struct NetworkArgs {
    #[command(flatten)]
    pub state: StateDirArg,
    #[command(subcommand)]
    pub cmd: NetworkCmd,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a named overlay network (VNI allocated when not given).
    Create {
        /// The network's name (TAPs serving it are named vx-NAME).
        name: String,
        /// Its VNI [default: the lowest free one from 4096].
        #[arg(long)]
        vni: Option<u32>,
        /// Subnet (CIDR) to give each serving host a stable address from [default: none].
        #[arg(long)]
        subnet: Option<String>,
        /// Encrypt its traffic (ESP-in-UDP, AES-256-GCM) with keys the managers generate, keep in
        /// the store and rotate.
        #[arg(long)]
        encrypted: bool,
        /// How long a key is used to send before the managers rotate it: NUMBER with s, m, h or
        /// d (e.g. 30m, 12h, 1h30m).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "encrypted", default_value = "12h")]
        key_rotation: Duration,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List networks (encrypted ones with their current key epoch, never the key).
    Ls {
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Remove a network (refused while live members serve it, unless --force).
    Rm {
        /// The network's name.
        name: String,
        /// Remove it even while live members serve it (they stop serving it).
        #[arg(long)]
        force: bool,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Manager only: rotate an encrypted network's key now. The new key is sent with only once
    /// every live member serving the network holds it (or after 60 s without an answer).
    RotateKey {
        /// The network's name.
        name: String,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// `30s`, `15m`, `12h`, `1d`, or several of them (`1h30m`); a bare number is seconds.
pub(crate) fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (expected e.g. 90s, 30m, 12h, 1d)");
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// `12h`, `30m`, `1h30m`, `45s`: the shortest text [`parse_duration`] reads back.
fn show_duration(secs: u64) -> String {
    let mut out = String::new();
    let mut rest = secs;
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if rest >= len {
            out.push_str(&format!("{}{unit}", rest / len));
            rest %= len;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// A network as `ls --json` and `create --json` print it: its record plus, when encrypted, the
/// epoch of the key in use (and of a key being rotated in).
fn describe(def: &NetworkDef, epochs: Option<(u32, Option<u32>)>) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(def)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("epoch".into(), epochs.map(|(send, _)| send).into());
        if let Some(pending) = epochs.and_then(|(_, p)| p) {
            obj.insert("pending_epoch".into(), pending.into());
        }
    }
    Ok(v)
}

pub fn run_network(args: NetworkArgs) -> Result<()> {
    let dir = StateDir::new(args.state.state_dir);
    runtime()?.block_on(async move {
        let (store, state) = node::connect(&dir).await?;
        match args.cmd {
            NetworkCmd::Create {
                name,
                vni,
                subnet,
                encrypted,
                key_rotation,
                json,
            } => {
                require_manager(state.role)?;
                let rotation = encrypted.then_some(key_rotation);
                let def =
                    network::create_with(&store, &name, vni, subnet.as_deref(), rotation).await?;
                if encrypted && !state.tls {
                    eprintln!(
                        "warning: the store ({}) is not reached over TLS: the keys of network {name} cross the network in clear between etcd and every host; use an https:// store (--store-ca)",
                        store.endpoints().join(",")
                    );
                }
                if json {
                    let epochs = encrypted.then_some((vxnet_cluster::keyring::FIRST_EPOCH, None));
                    return print_json(&describe(&def, epochs)?);
                }
                if encrypted {
                    println!(
                        "network {} created with VNI {}, encrypted (key epoch {}, rotated every {})",
                        def.name,
                        def.vni,
                        vxnet_cluster::keyring::FIRST_EPOCH,
                        show_duration(key_rotation.as_secs())
                    );
                } else {
                    println!("network {} created with VNI {}", def.name, def.vni);
                }
                Ok(())
            }
            NetworkCmd::Ls { json } => {
                let nets = network::list(&store).await?;
                let epochs = rotation::epochs(&store).await?;
                let epoch_of = |n: &NetworkDef| {
                    n.encrypted
                        .then(|| epochs.get(&n.name).copied())
                        .flatten()
                };
                if json {
                    let out = nets
                        .iter()
                        .map(|n| describe(n, epoch_of(n)))
                        .collect::<Result<Vec<_>>>()?;
                    return print_json(&out);
                }
                println!(
                    "{:<24} {:<9} {:<20} {:<9} EPOCH",
                    "NAME", "VNI", "SUBNET", "ENCRYPTED"
                );
                for n in &nets {
                    let epoch = match epoch_of(n) {
                        Some((send, None)) => send.to_string(),
                        Some((send, Some(p))) => format!("{send} (rotating to {p})"),
                        None if n.encrypted => "? (no valid key record)".into(),
                        None => "-".into(),
                    };
                    println!(
                        "{:<24} {:<9} {:<20} {:<9} {epoch}",
                        n.name,
                        n.vni,
                        n.subnet.as_deref().unwrap_or("-"),
                        if n.encrypted { "yes" } else { "no" },
                    );
                }
                Ok(())
            }
            NetworkCmd::Rm { name, force, json } => {
                require_manager(state.role)?;
                let def = network::remove(&store, &name, force).await?;
                if json {
                    print_json(&def)
                } else {
                    println!("network {} (VNI {}) removed", def.name, def.vni);
                    Ok(())
                }
            }
            NetworkCmd::RotateKey { name, json } => {
                require_manager(state.role)?;
                let done = rotation::rotate(
                    &store,
                    &name,
                    &state.node_id,
                    &RotateOptions::default(),
                )
                .await?;
                if !done.unacknowledged.is_empty() {
                    eprintln!(
                        "warning: switched to the new key without an acknowledgement from live member(s) {} (they may lose traffic until they apply it)",
                        done.unacknowledged.join(", ")
                    );
                }
                if json {
                    return print_json(&done);
                }
                println!(
                    "network {}: key epoch {} -> {} (held by {} live member(s) before the switch)",
                    done.network,
                    done.from,
                    done.to,
                    done.acknowledged.len()
                );
                Ok(())
            }
        }
    })
}

/// Like swarm, only managers change cluster-wide configuration.
fn require_manager(role: Role) -> Result<()> {
    match role {
        Role::Manager => Ok(()),
        other => Err(Error::NotManager(other.to_string())),
    }
}

// Keeps the default in the help text and the cluster crate's constant the same.
const _: () = assert!(DEFAULT_ROTATION.as_secs() == 12 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        for bad in ["", "h", "12x", "1h30", "-5s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(show_duration(5400), "1h30m");
        assert_eq!(show_duration(43_200), "12h");
        assert_eq!(show_duration(0), "0s");
    }
}
