//! Re-reading `--config` while the engine runs (SIGHUP, `vxnet reload`): the new file is
//! checked in full first (parse, ranges, duplicates, remotes), and only a valid one is applied:
//! networks added, removed, or changed live, the others untouched. An invalid file keeps the
//! running state and says why. Engine-wide settings (address, port, threads …) cannot change
//! under running workers; a change to them is reported as needing a restart.

use std::net::IpAddr;

use crate::config::{resolve_remote, EngineConfig, NetworkConfig};
use crate::control::proto::ReloadReport;
use crate::engine::EngineControl;

/// Produces the configuration as it would be at start now (flags and file, re-read).
pub(crate) type ConfigSource = Box<dyn FnMut() -> Result<EngineConfig, String> + Send>;

/// The reload state of a static-mode engine: where its configuration comes from and what of
/// it is applied.
pub(crate) struct Reloader {
    source: ConfigSource,
    applied: EngineConfig,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

/// How one network differs between the applied and the new configuration.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Same,
    /// Only the remotes and/or the keys of an encrypted network: the flood list, allow-list and
    /// key ring are replaced in place, the TAP and the traffic keep going.
    Live,
    /// Anything a TAP is built with (VNI, device, MTU, address, MAC, VLAN policy) or its
    /// storm-control bucket (`bum_rate`): recreated.
    Rebuild,
}

fn change(old: &NetworkConfig, new: &NetworkConfig) -> Change {
    // Encryption on or off changes the TAP's MTU (and what the network accepts): a rebuild.
    // Another key for a network that stays encrypted does not.
    let same_kind = old.encryption.is_some() == new.encryption.is_some();
    let with_live_changes = NetworkConfig {
        remotes: new.remotes.clone(),
        encryption: new.encryption.clone(),
        hosts: new.hosts.clone(),
        ..old.clone()
    };
    if old == new {
        Change::Same
    } else if same_kind && with_live_changes == *new {
        Change::Live
    } else {
        Change::Rebuild
    }
}

/// Engine-wide settings that differ, as `what old -> new`.
fn restart_only(old: &EngineConfig, new: &EngineConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut diff = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{what} {a} -> {b}"));
        }
    };
    diff("local", old.local.to_string(), new.local.to_string());
    diff("port", old.port.to_string(), new.port.to_string());
    diff(
        "esp-port",
        old.esp_port.to_string(),
        new.esp_port.to_string(),
    );
    diff(
        "ageing",
        old.ageing_secs.to_string(),
        new.ageing_secs.to_string(),
    );
    diff(
        "learning",
        old.learning.to_string(),
        new.learning.to_string(),
    );
    diff("max-fdb", old.max_fdb.to_string(), new.max_fdb.to_string());
    diff(
        "accept-any",
        old.accept_any.to_string(),
        new.accept_any.to_string(),
    );
    diff(
        "control",
        old.control.display().to_string(),
        new.control.display().to_string(),
    );
    diff(
        "control-group",
        format!("{:?}", old.control_group),
        format!("{:?}", new.control_group),
    );
    diff("threads", old.threads.to_string(), new.threads.to_string());
    diff(
        "offloads",
        old.offloads.to_string(),
        new.offloads.to_string(),
    );
    // The outer-header policy and the source-port range shape the source-port sockets every
    // worker shares; the top-level bum_rate is the default networks were opened with.
    let (a, b) = (&old.tuning, &new.tuning);
    diff("df", a.outer.df.to_string(), b.outer.df.to_string());
    diff("ttl", a.outer.ttl.to_string(), b.outer.ttl.to_string());
    diff("tos", a.outer.tos.to_string(), b.outer.tos.to_string());
    diff("srcport", a.srcport.to_string(), b.srcport.to_string());
    let rate = |r: Option<u32>| r.map_or_else(|| "off".to_string(), |r| r.to_string());
    diff("bum-rate", rate(a.bum_rate), rate(b.bum_rate));
    diff("min-pmtu", a.min_pmtu.to_string(), b.min_pmtu.to_string());
    diff(
        "busy-poll",
        a.busy_poll_us.to_string(),
        b.busy_poll_us.to_string(),
    );
    out
}

impl Reloader {
    pub(crate) fn new(applied: EngineConfig, source: ConfigSource) -> Reloader {
        Reloader { source, applied }
    }

    /// Re-reads the configuration and applies it. `Err` (nothing changed) when the new one is
    /// invalid; otherwise what changed, with the networks that failed to apply.
    pub(crate) fn reload(&mut self, control: &EngineControl) -> Result<ReloadReport, String> {
        let new = (self.source)()?;
        new.validate().map_err(|e| e.to_string())?;
        // Every remote resolves before anything changes (a name that no longer resolves makes
        // the file invalid, not half applied). Against the running local address: that is the
        // one sockets are bound to.
        let local = self.applied.local;
        let mut remotes: Vec<Vec<IpAddr>> = Vec::with_capacity(new.networks.len());
        for network in &new.networks {
            remotes.push(
                network
                    .remotes
                    .iter()
                    .map(|r| resolve_remote(r, local))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("network {}: {e}", network.name))?,
            );
        }

        let mut report = ReloadReport {
            needs_restart: restart_only(&self.applied, &new),
            ..ReloadReport::default()
        };
        let mut served: Vec<NetworkConfig> = Vec::with_capacity(new.networks.len());
        let find = |list: &[NetworkConfig], name: &str| list.iter().position(|n| n.name == name);

        // Removed and rebuilt networks go first, so a VNI or device moving from one network to
        // another is free when the other is added.
        let mut to_add: Vec<NetworkConfig> = Vec::new();
        for old in &self.applied.networks {
            let Some(i) = find(&new.networks, &old.name) else {
                // Gone from the file: for good, bridge and endpoints too.
                match control.forget_network(&old.name) {
                    Ok(_) => report.removed.push(old.name.clone()),
                    Err(e) => {
                        report.failed.push(format!("{}: {e}", old.name));
                        served.push(old.clone());
                    }
                }
                continue;
            };
            let next = &new.networks[i];
            match change(old, next) {
                Change::Same => served.push(old.clone()),
                Change::Live => {
                    control.set_static_remotes(&old.name, remotes[i].clone());
                    if old.hosts != next.hosts {
                        control.set_hosts(&old.name, next.hosts.clone());
                    }
                    if let Some(ring) = &next.encryption {
                        if old.encryption.as_ref() != Some(ring) {
                            if let Err(e) = control.set_key_ring(&old.name, ring.clone()) {
                                report.failed.push(format!("{}: {e}", old.name));
                                served.push(old.clone());
                                continue;
                            }
                        }
                    }
                    report.changed.push(old.name.clone());
                    served.push(next.clone());
                }
                Change::Rebuild => match control.remove_network(&old.name) {
                    Ok(_) => to_add.push(next.clone()),
                    Err(e) => {
                        report.failed.push(format!("{}: {e}", old.name));
                        served.push(old.clone());
                    }
                },
            }
        }
        for next in &new.networks {
            if find(&self.applied.networks, &next.name).is_none() {
                to_add.push(next.clone());
            }
        }
        for next in to_add {
            let rebuilt = find(&self.applied.networks, &next.name).is_some();
            match control.add_network(next.clone()) {
                Ok(()) if rebuilt => {
                    report.changed.push(next.name.clone());
                    served.push(next);
                }
                Ok(()) => {
                    report.added.push(next.name.clone());
                    served.push(next);
                }
                Err(e) => report.failed.push(format!("{}: {e}", next.name)),
            }
        }
        // Engine-wide values stay as running; the networks are what is served now.
        self.applied.networks = served;
        Ok(report)
    }
}

/// The log lines of one reload.
pub(crate) fn log_outcome(trigger: &str, outcome: &Result<ReloadReport, String>) {
    match outcome {
        Err(e) => {
            tracing::error!("{trigger}: configuration not reloaded, the running one stays: {e}")
        }
        Ok(r) => {
            tracing::info!(
                added = ?r.added,
                removed = ?r.removed,
                changed = ?r.changed,
                "{trigger}: configuration reloaded"
            );
            for failed in &r.failed {
                tracing::error!("{trigger}: network {failed}");
            }
            for setting in &r.needs_restart {
                tracing::warn!("{trigger}: {setting} takes effect on restart only");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn net(name: &str, vni: u32) -> NetworkConfig {
        NetworkConfig {
            remotes: vec!["10.0.0.2".into()],
            ..NetworkConfig::plain(name, vni.try_into().unwrap(), &format!("vx{name}"))
        }
    }

    #[test]
    fn remotes_and_keys_change_in_place_the_rest_rebuilds() {
        use crate::keyring::KeyRing;
        use vxnet_encap::esp::NetworkKey;
        let a = net("a", 1);
        assert_eq!(change(&a, &a.clone()), Change::Same);
        let mut enc = a.clone();
        enc.encryption = Some(KeyRing::single(NetworkKey::from_bytes([1; 32])));
        assert_eq!(change(&a, &enc), Change::Rebuild, "encryption turned on");
        assert_eq!(change(&enc, &a), Change::Rebuild, "encryption turned off");
        let mut rekeyed = enc.clone();
        rekeyed.encryption = Some(KeyRing::single(NetworkKey::from_bytes([2; 32])));
        rekeyed.remotes.push("10.0.0.3".into());
        assert_eq!(change(&enc, &rekeyed), Change::Live, "new key, same TAP");
        let mut b = a.clone();
        b.remotes.push("10.0.0.3".into());
        assert_eq!(change(&a, &b), Change::Live);
        b.mtu = Some(1400);
        assert_eq!(change(&a, &b), Change::Rebuild);
        let mut c = a.clone();
        c.vni = 2u32.try_into().unwrap();
        assert_eq!(change(&a, &c), Change::Rebuild);
        let mut d = a.clone();
        d.bum_rate = Some(1000);
        assert_eq!(change(&a, &d), Change::Rebuild);
    }

    #[test]
    fn outer_header_and_source_port_changes_need_a_restart() {
        let old = EngineConfig {
            local: "10.0.0.1".parse().unwrap(),
            port: 4789,
            esp_port: crate::config::DEFAULT_ESP_PORT,
            bind_esp: false,
            networks: vec![net("a", 1)],
            ageing_secs: 300,
            learning: true,
            max_fdb: 16384,
            accept_any: false,
            control: "/tmp/x.sock".into(),
            control_group: None,
            threads: 1,
            offloads: true,
            tunnel_gso: true,
            tuning: crate::tuning::Tuning::default(),
            state_dir: None,
        };
        assert!(restart_only(&old, &old.clone()).is_empty());
        let mut new = old.clone();
        new.tuning.outer.df = vxnet_encap::outer::DfPolicy::Inherit;
        new.tuning.srcport = "50000-50999".parse().unwrap();
        new.tuning.bum_rate = Some(500);
        assert_eq!(
            restart_only(&old, &new),
            [
                "df set -> inherit",
                "srcport 49152-65535 -> 50000-50999",
                "bum-rate off -> 500"
            ]
        );
    }
}
