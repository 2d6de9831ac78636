//! Keeps vxnet's nftables table in step with the cluster while `vxnet run --store …` serves it.
//! `vxnet firewall apply` opens the port to the members of that moment; a host that joins later
//! would be dropped by everyone else's firewall. So on every membership change the cluster link
//! hands [`FirewallSync::update`] the live members' VTEPs, and the `peers4` and `peers6` sets are
//! set to exactly those (plus `--remote`s), in one nft transaction that leaves the table and its
//! counters alone. This module knows addresses only, not the cluster. The table is only touched when it
//! exists (the user applied the nftables firewall) or `vxnet run --firewall` asked for it;
//! ufw and firewalld rules are not edited live, they only get a notice at start.

use std::net::IpAddr;

use super::{nftables, Probe, Result};

#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// `--remote`s (resolved): always in the sets.
    pub static_peers: Vec<IpAddr>,
    /// `--firewall`: create the table, opening these UDP ports (VXLAN and ESP) to the members,
    /// when it is missing.
    pub create_ports: Vec<u16>,
}

/// What the sets should hold: the members' VTEPs (this host's too, as `vxnet firewall apply`
/// does) and the static peers, sorted and unique.
pub fn wanted(members: &[IpAddr], static_peers: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = members.iter().chain(static_peers).copied().collect();
    out.sort();
    out.dedup();
    out
}

/// Why `--firewall` cannot work here, if it cannot: it needs nft, and a ufw or firewalld that
/// is active filters the port in its own chains, which an accept in vxnet's table does not
/// bypass.
pub fn check_create(probe: Probe) -> Result<(), String> {
    let manager = if probe.firewalld_active {
        Some("firewalld")
    } else if probe.ufw_active {
        Some("ufw")
    } else {
        None
    };
    if let Some(m) = manager {
        return Err(format!(
            "--firewall manages an nftables table, but {m} is active: open the port with `vxnet firewall apply --backend {m}` instead"
        ));
    }
    if !probe.nft {
        return Err("--firewall needs nft (nftables), which was not found".into());
    }
    Ok(())
}

/// The notice for a managed firewall, whose rules vxnet does not follow the members with.
pub fn static_backend_notice(probe: Probe) -> Option<String> {
    let m = if probe.firewalld_active {
        "firewalld"
    } else if probe.ufw_active {
        "ufw"
    } else {
        return None;
    };
    Some(format!(
        "firewall: {m} is active; vxnet does not update its rules as members join or leave — re-run `vxnet firewall apply` after each change"
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// No vxnet table, and not asked to create one: the user's firewall is left alone.
    Absent,
    Created,
    Synced,
}

/// Blocking: spawns nft (a probe, then one transaction).
fn write(peers: &[IpAddr], create_ports: &[u16]) -> Result<Outcome> {
    if nftables::present()? {
        nftables::set_peers_cmd(peers).run()?;
        Ok(Outcome::Synced)
    } else if !create_ports.is_empty() {
        nftables::apply_cmd(create_ports, peers).run()?;
        Ok(Outcome::Created)
    } else {
        Ok(Outcome::Absent)
    }
}

/// Owned by the cluster link; [`FirewallSync::update`] is called with the live members' VTEPs of
/// every cluster view.
#[derive(Debug)]
pub struct FirewallSync {
    opts: SyncOptions,
    /// The peers last written (or found no table for); `None` after a failure, so the next view
    /// retries.
    last: Option<Vec<IpAddr>>,
    absent_logged: bool,
}

impl FirewallSync {
    pub fn new(opts: SyncOptions) -> FirewallSync {
        FirewallSync {
            opts,
            last: None,
            absent_logged: false,
        }
    }

    /// Brings the sets to `members` (plus the static peers) if they changed. Never fails: a
    /// failing nft is one warning, and forwarding is not the firewall's to stop.
    pub async fn update(&mut self, members: &[IpAddr]) {
        let want = wanted(members, &self.opts.static_peers);
        if self.last.as_ref() == Some(&want) {
            return;
        }
        let (peers, create_ports) = (want.clone(), self.opts.create_ports.clone());
        // nft is a child process; the engine's control runtime has one thread to keep free.
        let result = tokio::task::spawn_blocking(move || write(&peers, &create_ports))
            .await
            .unwrap_or_else(|e| {
                Err(super::Error::Parse {
                    what: "the nft task".into(),
                    detail: e.to_string(),
                })
            });
        let n = want.len();
        match result {
            Ok(Outcome::Synced) => {
                tracing::info!(peers = ?want, "firewall: peers set to {n} members")
            }
            Ok(Outcome::Created) => tracing::info!(
                ports = ?self.opts.create_ports,
                peers = ?want,
                "firewall: nftables table created, peers set to {n} members"
            ),
            Ok(Outcome::Absent) => {
                if !self.absent_logged {
                    self.absent_logged = true;
                    tracing::debug!(
                        "firewall: no vxnet nftables table; leaving the firewall alone"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "firewall: could not update the nftables peers; will retry on the next change");
                self.last = None;
                return;
            }
        }
        self.last = Some(want);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_is_members_and_static_peers() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let members = [ip("10.0.0.3"), ip("10.0.0.1"), ip("fd00::2")];
        let statics: Vec<IpAddr> = vec!["10.0.0.9".parse().unwrap(), "10.0.0.1".parse().unwrap()];
        let got: Vec<String> = wanted(&members, &statics)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.0.0.1", "10.0.0.3", "10.0.0.9", "fd00::2"]);
        assert!(wanted(&[], &[]).is_empty());
    }

    #[test]
    fn create_needs_nft_and_no_manager() {
        let p = |nft, ufw_active, firewalld_active| Probe {
            nft,
            ufw_active,
            firewalld_active,
        };
        assert!(check_create(p(true, false, false)).is_ok());
        assert!(check_create(p(false, false, false))
            .unwrap_err()
            .contains("needs nft"));
        assert!(check_create(p(true, true, false))
            .unwrap_err()
            .contains("ufw is active"));
        assert!(check_create(p(true, false, true))
            .unwrap_err()
            .contains("firewalld is active"));
        assert_eq!(static_backend_notice(p(true, false, false)), None);
        assert!(static_backend_notice(p(true, true, false))
            .unwrap()
            .contains("ufw is active"));
    }
}
