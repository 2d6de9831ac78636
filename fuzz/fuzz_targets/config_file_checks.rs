//! `vxnet run --config FILE`: the TOML loader (`vxnet_dataplane::config::parse_file`) and what
//! `vxnet run` does with its values next (defaults under them, `EngineConfig::validate`, and
//! the family check of remotes given as addresses; host names are not resolved here).
//!
//! Properties: nothing panics; a refused file is one non-empty line of error; what is accepted
//! is in range (VNI, unicast MAC) and reads back the same when written out again as TOML; a
//! configuration that validates has at least one thread and no VNI, device or name twice.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use vxnet_dataplane::config::{
    parse_file, resolve_remote, EngineConfig, FileValues, DEFAULT_AGEING_SECS,
    DEFAULT_CONTROL_PATH, DEFAULT_ESP_PORT, DEFAULT_MAX_FDB,
};
use vxnet_encap::Vni;

pub fn check(data: &[u8]) {
    // The loader reads the file into a String: bytes that are not UTF-8 are a read error.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let values = match parse_file(text) {
        Ok(values) => values,
        Err(message) => {
            assert_one_line(&message);
            return;
        }
    };
    for n in &values.networks {
        assert!(n.vni.get() <= Vni::MAX);
        if let Some(mac) = n.mac {
            assert!(mac.is_unicast(), "{mac}");
        }
    }
    let written = render(&values);
    let again = parse_file(&written)
        .unwrap_or_else(|e| panic!("accepted values do not read back: {e}\n{written}"));
    assert_same(&values, &again);

    let config = engine_config(values);
    match config.validate() {
        Ok(()) => {
            assert!(config.threads >= 1);
            for (i, n) in config.networks.iter().enumerate() {
                for other in &config.networks[..i] {
                    assert_ne!(other.vni, n.vni);
                    assert_ne!(other.dev, n.dev);
                    assert_ne!(other.name, n.name);
                }
            }
        }
        Err(e) => assert_one_line(&e.to_string()),
    }
    for n in &config.networks {
        for remote in &n.remotes {
            // Only addresses: a host name would be a DNS query.
            if let Ok(ip) = remote.parse::<IpAddr>() {
                match resolve_remote(remote, config.local) {
                    Ok(resolved) => assert_eq!(resolved, ip),
                    Err(e) => assert_one_line(&e.to_string()),
                }
            }
        }
    }
}

fn assert_one_line(message: &str) {
    assert!(!message.trim().is_empty(), "empty error");
    assert!(
        !message.contains(['\n', '\r']),
        "error spans lines: {message:?}"
    );
}

/// `vxnet run`'s `engine_config` with no flags given: the file's values over the defaults.
fn engine_config(file: FileValues) -> EngineConfig {
    EngineConfig {
        local: file.local.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        port: file.port.unwrap_or(vxnet_encap::DEFAULT_PORT),
        esp_port: file.esp_port.unwrap_or(DEFAULT_ESP_PORT),
        bind_esp: file.esp_port.is_some(),
        networks: file.networks,
        ageing_secs: file.ageing_secs.unwrap_or(DEFAULT_AGEING_SECS),
        learning: file.learning.unwrap_or(true),
        max_fdb: file.max_fdb.unwrap_or(DEFAULT_MAX_FDB),
        accept_any: file.accept_any.unwrap_or(false),
        control: file
            .control
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_PATH)),
        control_group: file.control_group,
        threads: file.threads.unwrap_or(1),
        offloads: file.offloads.unwrap_or(true),
        tunnel_gso: true,
        tuning: vxnet_dataplane::tuning::Tuning {
            outer: vxnet_encap::outer::OuterPolicy {
                df: file.tuning.df.unwrap_or_default(),
                ttl: file.tuning.ttl.unwrap_or_default(),
                tos: file.tuning.tos.unwrap_or_default(),
            },
            srcport: file.tuning.srcport.unwrap_or_default(),
            bum_rate: file.tuning.bum_rate,
            min_pmtu: file
                .tuning
                .min_pmtu
                .unwrap_or(vxnet_dataplane::tuning::DEFAULT_MIN_PMTU),
            busy_poll_us: file
                .tuning
                .busy_poll_us
                .unwrap_or(vxnet_dataplane::tuning::DEFAULT_BUSY_POLL_US),
        },
        state_dir: None,
    }
}

fn assert_same(a: &FileValues, b: &FileValues) {
    assert_eq!(a.local, b.local);
    assert_eq!(a.port, b.port);
    assert_eq!(a.esp_port, b.esp_port);
    assert_eq!(a.ageing_secs, b.ageing_secs);
    assert_eq!(a.learning, b.learning);
    assert_eq!(a.max_fdb, b.max_fdb);
    assert_eq!(a.accept_any, b.accept_any);
    assert_eq!(a.control, b.control);
    assert_eq!(a.control_group, b.control_group);
    assert_eq!(a.threads, b.threads);
    assert_eq!(a.offloads, b.offloads);
    assert_eq!(a.networks, b.networks);
}

/// The values as a config file, every key spelled out.
fn render(v: &FileValues) -> String {
    use toml::Value;
    let int = |n: u64| Value::Integer(i64::try_from(n).expect("TOML integers are i64"));
    let mut top = toml::Table::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            top.insert(key.to_string(), value);
        }
    };
    put("local", v.local.map(|ip| Value::String(ip.to_string())));
    put("port", v.port.map(|p| int(p.into())));
    put("esp_port", v.esp_port.map(|p| int(p.into())));
    put("ageing", v.ageing_secs.map(int));
    put("learning", v.learning.map(Value::Boolean));
    put("max_fdb", v.max_fdb.map(|n| int(n as u64)));
    put("accept_any", v.accept_any.map(Value::Boolean));
    put(
        "control",
        v.control
            .as_ref()
            .map(|p| Value::String(p.to_str().expect("a path read from TOML").to_string())),
    );
    put("control_group", v.control_group.clone().map(Value::String));
    put("threads", v.threads.map(|n| int(n as u64)));
    put("offloads", v.offloads.map(Value::Boolean));
    let networks = v
        .networks
        .iter()
        .map(|n| {
            let mut t = toml::Table::new();
            t.insert("name".into(), Value::String(n.name.clone()));
            t.insert("vni".into(), int(n.vni.get().into()));
            t.insert("dev".into(), Value::String(n.dev.clone()));
            if let Some(a) = n.address {
                t.insert("address".into(), Value::String(a.to_string()));
            }
            let remotes = n.remotes.iter().cloned().map(Value::String).collect();
            t.insert("remotes".into(), Value::Array(remotes));
            if let Some(mtu) = n.mtu {
                t.insert("mtu".into(), int(mtu.into()));
            }
            t.insert("allow_vlan".into(), Value::Boolean(n.allow_vlan));
            if let Some(mac) = n.mac {
                t.insert("mac".into(), Value::String(mac.to_string()));
            }
            Value::Table(t)
        })
        .collect();
    top.insert("network".into(), Value::Array(networks));
    toml::to_string(&top).expect("TOML serialisation")
}
