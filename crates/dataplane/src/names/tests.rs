//! Where names come from and what the tables make of them.

use std::net::IpAddr;

use vxnet_encap::MacAddr;

use super::*;

fn host(name: &str, aliases: &[&str], addresses: &[&str], mac: Option<&str>) -> HostEntry {
    HostEntry {
        name: name.into(),
        aliases: aliases.iter().map(|a| (*a).into()).collect(),
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        mac: mac.map(|m| m.parse().unwrap()),
        here: false,
    }
}

fn service() -> NameService {
    let names = NameService::new(Some("hosta".into()));
    names.set_network(
        "blue",
        Some("10.7.0.1/24".parse().unwrap()),
        vec![host(
            "db",
            &["postgres"],
            &["10.7.0.5"],
            Some("02:00:00:00:00:05"),
        )],
    );
    names
}

fn lookup(names: &NameService, name: &str) -> Vec<IpAddr> {
    let zones = names.zones();
    zones
        .network("blue")
        .and_then(|n| n.lookup(name))
        .map(<[IpAddr]>::to_vec)
        .unwrap_or_default()
}

#[test]
fn config_added_endpoint_and_host_names_are_all_answered() {
    let names = service();
    names
        .add("blue", host("web", &[], &["10.7.0.9"], None))
        .unwrap();
    names.set_endpoints(
        "blue",
        vec![host(
            "c1",
            &["api"],
            &["10.7.0.20"],
            Some("02:00:00:00:00:20"),
        )],
    );
    for (name, address) in [
        ("db", "10.7.0.5"),
        ("postgres", "10.7.0.5"),
        ("web", "10.7.0.9"),
        ("api", "10.7.0.20"),
        ("hosta", "10.7.0.1"),
    ] {
        assert_eq!(
            lookup(&names, name),
            vec![address.parse::<IpAddr>().unwrap()],
            "{name}"
        );
    }
    let rows = names.list(Some("blue"));
    let sources: Vec<NameSource> = rows.iter().map(|r| r.source).collect();
    assert_eq!(
        sources,
        [
            NameSource::Host,
            NameSource::Config,
            NameSource::Added,
            NameSource::Endpoint
        ]
    );
    names.remove("blue", "web").unwrap();
    assert!(lookup(&names, "web").is_empty());
    assert!(
        matches!(
            names.remove("blue", "db"),
            Err(NameServiceError::NotFound { .. })
        ),
        "config names are not removed at run time"
    );
}

#[test]
fn bad_additions_are_refused_and_change_nothing() {
    let names = service();
    let refused = [
        ("blue", host("bad name", &[], &["10.7.0.9"], None)),
        ("blue", host("ok", &["bad.alias"], &["10.7.0.9"], None)),
        ("blue", host("elsewhere", &[], &["10.8.0.9"], None)),
        ("blue", host("taken", &["POSTGRES"], &["10.7.0.9"], None)),
        ("blue", host("hosta", &[], &["10.7.0.9"], None)),
        ("red", host("nowhere", &[], &["10.7.0.9"], None)),
    ];
    for (network, entry) in refused {
        let name = entry.name.clone();
        assert!(names.add(network, entry).is_err(), "{name}");
    }
    assert_eq!(names.list(None).len(), 2);
    // A hand-written record with another network's address is left out with a warning.
    names.set_endpoints(
        "blue",
        vec![
            host("evil", &[], &["10.8.0.2"], None),
            host("good", &[], &["10.7.0.30"], None),
        ],
    );
    assert!(lookup(&names, "evil").is_empty());
    assert_eq!(lookup(&names, "good").len(), 1);
}

#[test]
fn entries_with_a_mac_feed_the_neighbour_table_of_the_network() {
    use crate::network::{Network, NetworkSettings};
    let names = service();
    let network = std::sync::Arc::new(Network::new(
        NetworkSettings {
            name: "blue".into(),
            vni: vxnet_encap::Vni::new(7).unwrap(),
            dev: "t".into(),
            mtu: 1450,
            allow_vlan: false,
            learning: true,
            max_fdb: 16,
            bum_rate: None,
        },
        "192.0.2.1".parse().unwrap(),
        4789,
        Vec::new(),
    ));
    let forwarder = crate::forward::Forwarder::new(
        vec![std::sync::Arc::clone(&network)],
        "192.0.2.1".parse().unwrap(),
        4789,
        false,
    );
    names.attach(std::sync::Arc::new(forwarder));
    let mac: MacAddr = "02:00:00:00:00:05".parse().unwrap();
    assert_eq!(
        network.neighbors.lookup("10.7.0.5".parse().unwrap()),
        Some(crate::neighbors::Neighbor { mac, here: false })
    );
    names.set_endpoints(
        "blue",
        vec![host("c1", &[], &["10.7.0.20"], Some("02:00:00:00:00:20"))],
    );
    assert_eq!(
        network.neighbors.len(),
        2,
        "the table follows the records at once"
    );
    names.set_endpoints("blue", Vec::new());
    assert_eq!(network.neighbors.lookup("10.7.0.20".parse().unwrap()), None);
}

#[test]
fn added_names_are_kept_in_the_state_dir_and_come_back() {
    let dir = std::env::temp_dir().join(format!("vxnet-names-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let names = service();
    names.keep_in(&dir);
    names
        .add(
            "blue",
            host("web", &["www"], &["10.7.0.9"], Some("02:00:00:00:00:09")),
        )
        .unwrap();
    names
        .add("blue", host("cache", &[], &["10.7.0.10"], None))
        .unwrap();
    names.remove("blue", "cache").unwrap();
    // A restarted engine: a new service, the same state dir.
    let again = service();
    again.keep_in(&dir);
    assert_eq!(
        lookup(&again, "www"),
        vec!["10.7.0.9".parse::<IpAddr>().unwrap()]
    );
    assert!(lookup(&again, "cache").is_empty());
    let added: Vec<NameRow> = again
        .list(Some("blue"))
        .into_iter()
        .filter(|r| r.source == NameSource::Added)
        .collect();
    assert_eq!(added.len(), 1);
    assert_eq!(
        added[0].entry.mac,
        Some("02:00:00:00:00:09".parse().unwrap())
    );
    // Kept while the network is rebuilt; gone with it when it is removed for good.
    again.remove_network("blue");
    again.set_network("blue", Some("10.7.0.1/24".parse().unwrap()), Vec::new());
    assert_eq!(lookup(&again, "web").len(), 1);
    again.forget_network("blue");
    let third = service();
    third.keep_in(&dir);
    assert!(lookup(&third, "web").is_empty());
    // A file that does not decode is no reason not to start.
    std::fs::write(store::path(&dir), b"{not json").unwrap();
    let fourth = service();
    fourth.keep_in(&dir);
    assert_eq!(fourth.list(None).len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn endpoints_set_before_their_network_is_served_are_answered_once_it_is() {
    let names = NameService::new(None);
    names.set_endpoints("green", vec![host("c9", &[], &["10.9.0.9"], None)]);
    assert!(names.list(None).is_empty());
    names.set_network("green", Some("10.9.0.1/24".parse().unwrap()), Vec::new());
    let zones = names.zones();
    assert_eq!(
        zones.network("green").unwrap().lookup("c9").unwrap().len(),
        1
    );
}
