//! The `fdb` requests of the control socket, with `bridge fdb` semantics for a vxlan device:
//!
//! | request                    | unicast MAC                          | 00:00:00:00:00:00 (flood)          |
//! |----------------------------|--------------------------------------|------------------------------------|
//! | `add MAC --dst IP`         | new static entry; an existing entry, learned or static, is refused (EEXIST) | its first destination; refused once it floods anywhere |
//! | `append MAC --dst IP`      | refused (one destination per MAC)    | one more destination (one it has: no change) |
//! | `replace MAC --dst IP`     | static entry, whatever was there     | refused (several destinations)     |
//! | `del MAC`                  | removes it, learned or static        | removes every appended destination |
//! | `del MAC --dst IP`         | removes it if it goes to IP          | removes that destination only      |
//!
//! Two deliberate differences from the kernel: `del ... --dst IP` naming a destination the entry
//! does not have is an error (the kernel answers success and changes nothing), and the flood
//! destinations that come from `--remote`/`remotes` or the cluster are shown as part of the
//! flood entry but change only with their source, so deleting one is an error that says where
//! it comes from. Static entries and appended flood destinations are each limited by
//! `--max-fdb`, like learned entries.

use std::net::IpAddr;
use std::sync::Arc;

use vxnet_encap::MacAddr;

use super::proto::{FdbTable, Reply, Request};
use super::server::ok;
use crate::fdb::{FdbError, Millis};
use crate::forward::Forwarder;
use crate::network::Network;

fn done() -> Result<Reply, String> {
    Ok(Reply::Ok {
        data: serde_json::Value::Null,
    })
}

/// The network a request names, or the only one when it names none.
pub(super) fn pick(forwarder: &Forwarder, vni: Option<u32>) -> Result<Arc<Network>, String> {
    let networks = forwarder.networks();
    match vni {
        Some(v) => networks
            .iter()
            .find(|n| n.vni().get() == v)
            .cloned()
            .ok_or_else(|| format!("no network with VNI {v}")),
        None if networks.len() == 1 => Ok(Arc::clone(&networks[0])),
        None if networks.is_empty() => Err("this engine serves no network yet".to_string()),
        None => Err("this engine serves several networks: give --vni".to_string()),
    }
}

/// Answers an `fdb` request against the forwarding state of this moment; any other request is
/// refused (the caller routes those elsewhere).
pub fn handle(forwarder: &Forwarder, now: Millis, request: Request) -> Reply {
    let result = match request {
        Request::FdbShow { vni } => show(forwarder, now, vni),
        Request::FdbAdd { mac, dst, vni } => set(forwarder, vni, &mac, dst, Set::Add),
        Request::FdbAppend { mac, dst, vni } => set(forwarder, vni, &mac, dst, Set::Append),
        Request::FdbReplace { mac, dst, vni } => set(forwarder, vni, &mac, dst, Set::Replace),
        Request::FdbDel { mac, dst, vni } => {
            entry(forwarder, vni, &mac, dst).and_then(|(network, mac)| delete(&network, mac, dst))
        }
        // The others: [`Request::is_fdb`] says which they are.
        _ => Err("not an fdb request".to_string()),
    };
    result.unwrap_or_else(|message| Reply::Error { message })
}

fn show(forwarder: &Forwarder, now: Millis, vni: Option<u32>) -> Result<Reply, String> {
    let networks: Vec<Arc<Network>> = match vni {
        None => forwarder.networks().to_vec(),
        Some(_) => vec![pick(forwarder, vni)?],
    };
    Ok(ok(networks
        .into_iter()
        .map(|n| FdbTable {
            vni: n.vni().get(),
            dev: n.settings.dev.clone(),
            entries: n.fdb.rows(now),
            // Every head-end replication target (remotes, flood entries, cluster), as
            // `bridge fdb show` lists the kernel's remotes as all-zeros entries.
            flood: n.peers().flood.iter().map(|a| a.ip()).collect(),
        })
        .collect::<Vec<_>>()))
}

/// The network and MAC a request names, with its destination checked: of the local family, and
/// one [`validate::destination`](crate::validate::destination) accepts.
fn entry(
    forwarder: &Forwarder,
    vni: Option<u32>,
    mac: &str,
    dst: Option<IpAddr>,
) -> Result<(Arc<Network>, MacAddr), String> {
    let network = pick(forwarder, vni)?;
    let mac = mac.parse::<MacAddr>().map_err(|e| e.to_string())?;
    if !mac.is_zero() && mac.is_multicast() {
        return Err(format!(
            "{mac} is a group address; only unicast MACs or 00:00:00:00:00:00"
        ));
    }
    if let Some(dst) = dst {
        let local = forwarder.local();
        if dst.is_ipv4() != local.is_ipv4() {
            return Err(format!(
                "{dst} is not of the local address family ({local})"
            ));
        }
        crate::validate::destination("fdb destination", dst, local).map_err(|e| e.to_string())?;
    }
    Ok((network, mac))
}

fn fdb_error(network: &Network, e: FdbError) -> String {
    format!("{e} in VNI {}", network.vni())
}

/// Counters for a new destination, so `vxnet peers` lists it before traffic.
fn register(forwarder: &Forwarder, dst: IpAddr) {
    let _ = forwarder.peers.counters(dst);
}

#[derive(Debug, Clone, Copy)]
enum Set {
    Add,
    Append,
    Replace,
}

/// `fdb add|append|replace MAC --dst IP` (the table at the top).
fn set(
    forwarder: &Forwarder,
    vni: Option<u32>,
    mac: &str,
    dst: IpAddr,
    how: Set,
) -> Result<Reply, String> {
    let (network, mac) = entry(forwarder, vni, mac, Some(dst))?;
    let changed = match (how, mac.is_zero()) {
        (Set::Add, true) => return add_flood(forwarder, &network, dst, true),
        (Set::Append, true) => return add_flood(forwarder, &network, dst, false),
        (Set::Add, false) => network.fdb.add_static(mac, dst).map(|_| ()),
        (Set::Replace, false) => network.fdb.replace_static(mac, dst).map(|_| ()),
        (Set::Append, false) => {
            return Err(format!(
                "fdb append adds a destination to the flood entry 00:00:00:00:00:00; \
                 {mac} has one destination (fdb add, fdb replace)"
            ))
        }
        (Set::Replace, true) => {
            return Err(
                "the flood entry 00:00:00:00:00:00 has several destinations: \
                 fdb append and fdb del --dst change it"
                    .to_string(),
            )
        }
    };
    changed.map_err(|e| fdb_error(&network, e))?;
    // A static entry's destination is a peer now.
    network.rebuild_peers();
    register(forwarder, dst);
    done()
}

/// Adds a flood destination; `first` (fdb add) refuses when the network floods anywhere yet.
fn add_flood(
    forwarder: &Forwarder,
    network: &Network,
    dst: IpAddr,
    first: bool,
) -> Result<Reply, String> {
    let limit = network.fdb.limit();
    let local = forwarder.local();
    // Decided inside the update, so concurrent requests cannot both pass the checks.
    let mut refused = None;
    network.update_sources(|s| {
        let flood: Vec<IpAddr> = s
            .configured
            .iter()
            .chain(&s.flood_entries)
            .chain(&s.cluster)
            .copied()
            .filter(|ip| *ip != local)
            .collect();
        if first && !flood.is_empty() {
            let list: Vec<String> = flood.iter().map(IpAddr::to_string).collect();
            refused = Some(format!(
                "00:00:00:00:00:00 exists (floods to {}); fdb append adds a destination",
                list.join(", ")
            ));
        } else if flood.contains(&dst) {
            // Appending a destination it has is no change, as with the kernel.
        } else if s.flood_entries.len() >= limit {
            refused = Some(format!(
                "the flood entry holds its limit of {limit} appended destinations (--max-fdb)"
            ));
        } else {
            s.flood_entries.push(dst);
        }
    });
    if let Some(message) = refused {
        return Err(format!("{message} in VNI {}", network.vni()));
    }
    register(forwarder, dst);
    done()
}

fn delete(network: &Network, mac: MacAddr, dst: Option<IpAddr>) -> Result<Reply, String> {
    if mac.is_zero() {
        return delete_flood(network, dst);
    }
    match dst {
        None if network.fdb.remove(mac) => {}
        None => return Err(fdb_error(network, FdbError::NotFound { mac })),
        Some(dst) => {
            network
                .fdb
                .remove_to(mac, dst)
                .map_err(|e| fdb_error(network, e))?;
        }
    }
    network.rebuild_peers();
    done()
}

fn delete_flood(network: &Network, dst: Option<IpAddr>) -> Result<Reply, String> {
    let vni = network.vni();
    let mut removed = false;
    network.update_sources(|s| {
        let before = s.flood_entries.len();
        match dst {
            None => s.flood_entries.clear(),
            Some(dst) => s.flood_entries.retain(|ip| *ip != dst),
        }
        removed = s.flood_entries.len() < before;
    });
    if removed {
        return done();
    }
    let sources = network.sources();
    Err(match dst {
        None => format!("no flood destinations were added with fdb add/append in VNI {vni}"),
        Some(dst) if sources.configured.contains(&dst) => format!(
            "{dst} is a configured remote of VNI {vni} (--remote, remotes =), \
             not an fdb entry: it changes with the configuration"
        ),
        Some(dst) if sources.cluster.contains(&dst) => format!(
            "{dst} floods as a member of the cluster serving VNI {vni}, not as an fdb entry"
        ),
        Some(dst) => format!("VNI {vni} does not flood to {dst}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::{network, NetworkSpec};
    use vxnet_encap::Vni;

    const ZERO: &str = "00:00:00:00:00:00";
    const LOCAL: &str = "10.0.0.1";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn engine(remotes: &[&str], max_fdb: usize) -> Forwarder {
        let spec = NetworkSpec {
            vni: Vni::new(42).unwrap(),
            mtu: 1450,
            allow_vlan: false,
            learning: true,
            max_fdb,
        };
        let remotes = remotes.iter().map(|r| ip(r)).collect();
        Forwarder::new(
            vec![network(spec, ip(LOCAL), 4789, remotes)],
            ip(LOCAL),
            4789,
            false,
        )
    }

    fn send(fwd: &Forwarder, request: Request) -> Result<(), String> {
        match handle(fwd, 0, request) {
            Reply::Ok { .. } => Ok(()),
            Reply::Error { message } => Err(message),
        }
    }

    fn add(fwd: &Forwarder, mac: &str, dst: &str) -> Result<(), String> {
        let (mac, dst, vni) = (mac.into(), ip(dst), None);
        send(fwd, Request::FdbAdd { mac, dst, vni })
    }

    fn append(fwd: &Forwarder, mac: &str, dst: &str) -> Result<(), String> {
        let (mac, dst, vni) = (mac.into(), ip(dst), None);
        send(fwd, Request::FdbAppend { mac, dst, vni })
    }

    fn replace(fwd: &Forwarder, mac: &str, dst: &str) -> Result<(), String> {
        let (mac, dst, vni) = (mac.into(), ip(dst), None);
        send(fwd, Request::FdbReplace { mac, dst, vni })
    }

    fn del(fwd: &Forwarder, mac: &str, dst: Option<&str>) -> Result<(), String> {
        let (mac, dst, vni) = (mac.into(), dst.map(ip), None);
        send(fwd, Request::FdbDel { mac, dst, vni })
    }

    fn flood(fwd: &Forwarder) -> Vec<IpAddr> {
        fwd.networks()[0]
            .peers()
            .flood
            .iter()
            .map(|a| a.ip())
            .collect()
    }

    fn err_starts(result: Result<(), String>, prefix: &str) {
        match result {
            Err(message) => assert!(message.starts_with(prefix), "{message}"),
            Ok(()) => panic!("accepted; wanted an error starting {prefix:?}"),
        }
    }

    #[test]
    fn flood_entry_is_added_once_appended_to_and_deleted_per_destination() {
        let fwd = engine(&[], 100);
        add(&fwd, ZERO, "10.0.0.2").unwrap();
        err_starts(
            add(&fwd, ZERO, "10.0.0.3"),
            "00:00:00:00:00:00 exists (floods to 10.0.0.2); fdb append",
        );
        append(&fwd, ZERO, "10.0.0.3").unwrap();
        append(&fwd, ZERO, "10.0.0.4").unwrap();
        // Appending a destination it has is no change (as the kernel).
        append(&fwd, ZERO, "10.0.0.3").unwrap();
        assert_eq!(
            flood(&fwd),
            [ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.0.4")]
        );

        del(&fwd, ZERO, Some("10.0.0.3")).unwrap();
        assert_eq!(flood(&fwd), [ip("10.0.0.2"), ip("10.0.0.4")]);
        assert!(!fwd.networks()[0].peers().allows(ip("10.0.0.3")));
        err_starts(
            del(&fwd, ZERO, Some("10.0.0.3")),
            "VNI 42 does not flood to 10.0.0.3",
        );
        del(&fwd, ZERO, None).unwrap();
        assert!(flood(&fwd).is_empty());
        err_starts(del(&fwd, ZERO, None), "no flood destinations");
        err_starts(
            replace(&fwd, ZERO, "10.0.0.2"),
            "the flood entry 00:00:00:00:00:00 has several destinations",
        );
    }

    #[test]
    fn configured_remotes_belong_to_the_flood_entry_but_change_with_the_configuration() {
        let fwd = engine(&["10.0.0.2"], 100);
        err_starts(add(&fwd, ZERO, "10.0.0.3"), "00:00:00:00:00:00 exists");
        append(&fwd, ZERO, "10.0.0.3").unwrap();
        err_starts(
            del(&fwd, ZERO, Some("10.0.0.2")),
            "10.0.0.2 is a configured remote of VNI 42",
        );
        del(&fwd, ZERO, Some("10.0.0.3")).unwrap();
        assert_eq!(flood(&fwd), [ip("10.0.0.2")]);
    }

    #[test]
    fn unicast_entries_follow_bridge_fdb_add_replace_and_del() {
        let fwd = engine(&["10.0.0.2"], 100);
        let fdb = &fwd.networks()[0].fdb;
        let mac = "02:00:00:00:00:07";
        add(&fwd, mac, "10.0.0.7").unwrap();
        assert!(fwd.networks()[0].peers().allows(ip("10.0.0.7")));
        err_starts(
            add(&fwd, mac, "10.0.0.8"),
            // Before: "…, static); fdb replace changes it in VNI 42".
            "02:00:00:00:00:07 has an entry already (dst 10.0.0.7, static; fdb replace changes it) in VNI 42",
        );
        replace(&fwd, mac, "10.0.0.8").unwrap();
        assert_eq!(fdb.lookup(mac.parse().unwrap()), Some(ip("10.0.0.8")));
        err_starts(
            append(&fwd, mac, "10.0.0.9"),
            "fdb append adds a destination",
        );
        err_starts(
            del(&fwd, mac, Some("10.0.0.7")),
            "02:00:00:00:00:07 goes to 10.0.0.8, not 10.0.0.7 in VNI 42",
        );
        del(&fwd, mac, Some("10.0.0.8")).unwrap();
        assert!(!fwd.networks()[0].peers().allows(ip("10.0.0.8")));
        err_starts(
            del(&fwd, mac, None),
            "no entry for 02:00:00:00:00:07 in VNI 42",
        );

        // A learned entry is an entry too: add refuses it, replace makes it static.
        let learned: MacAddr = "02:00:00:00:00:08".parse().unwrap();
        fdb.learn(0, learned, ip("10.0.0.2"));
        err_starts(
            add(&fwd, "02:00:00:00:00:08", "10.0.0.9"),
            "02:00:00:00:00:08 has an entry already (dst 10.0.0.2, learned;",
        );
        replace(&fwd, "02:00:00:00:00:08", "10.0.0.9").unwrap();
        assert_eq!((fdb.learned_count(), fdb.static_count()), (0, 1));
    }

    #[test]
    fn static_entries_and_appended_flood_destinations_are_capped() {
        let fwd = engine(&[], 2);
        add(&fwd, "02:00:00:00:00:01", "10.0.0.7").unwrap();
        add(&fwd, "02:00:00:00:00:02", "10.0.0.7").unwrap();
        err_starts(
            add(&fwd, "02:00:00:00:00:03", "10.0.0.7"),
            "the FDB holds its limit of 2 static entries (--max-fdb) in VNI 42",
        );
        add(&fwd, ZERO, "10.0.0.2").unwrap();
        append(&fwd, ZERO, "10.0.0.3").unwrap();
        err_starts(
            append(&fwd, ZERO, "10.0.0.4"),
            "the flood entry holds its limit of 2 appended destinations (--max-fdb) in VNI 42",
        );
        del(&fwd, "02:00:00:00:00:01", None).unwrap();
        add(&fwd, "02:00:00:00:00:03", "10.0.0.7").unwrap();
    }

    #[test]
    fn bad_destinations_and_macs_are_refused() {
        let fwd = engine(&[], 10);
        let mac = "02:00:00:00:00:01";
        err_starts(
            add(&fwd, mac, "fd00::2"),
            "fd00::2 is not of the local address family",
        );
        err_starts(
            add(&fwd, mac, "224.0.0.1"),
            "fdb destination 224.0.0.1 is not a usable VTEP address: multicast",
        );
        err_starts(
            append(&fwd, ZERO, "0.0.0.0"),
            "fdb destination 0.0.0.0 is not a usable VTEP address: unspecified",
        );
        err_starts(
            add(&fwd, mac, "127.0.0.1"),
            "fdb destination 127.0.0.1 is not a usable VTEP address: loopback",
        );
        err_starts(
            add(&fwd, mac, LOCAL),
            "fdb destination 10.0.0.1 is not a usable VTEP address: it is this engine's own VTEP",
        );
        err_starts(
            add(&fwd, "01:00:5e:00:00:01", "10.0.0.2"),
            "01:00:5e:00:00:01 is a group",
        );
        err_starts(add(&fwd, "02:00:00:00:01", "10.0.0.2"), "");
        let other_vni = Request::FdbDel {
            mac: mac.into(),
            dst: None,
            vni: Some(7),
        };
        err_starts(send(&fwd, other_vni), "no network with VNI 7");
        assert!(fwd.networks()[0].fdb.is_empty());
    }
}
