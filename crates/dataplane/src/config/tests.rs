//! The configuration's parsers and checks.

use super::*;

#[test]
fn ports_are_refused_with_the_real_range() {
    assert_eq!(parse_port("4789"), Ok(4789));
    assert_eq!(parse_port("65535"), Ok(65535));
    for bad in ["0", "65536", "99999999999999999999999"] {
        let e = parse_port(bad).unwrap_err();
        assert!(
            e.contains(&format!("port {bad}")) && e.contains("1-65535"),
            "{e}"
        );
    }
    let e = parse_port("x1").unwrap_err();
    assert!(
        e.contains("not a port number") && e.contains("1-65535"),
        "{e}"
    );
}

#[test]
fn file_with_two_networks() {
    let v = parse_file(
        r#"
        local = "10.0.0.1"
        port = 4789
        [[network]]
        name = "blue"
        vni = 42
        dev = "vx42"
        address = "10.1.0.1/24"
        remotes = ["10.0.0.2", "10.0.0.3"]
        [[network]]
        vni = 43
        dev = "vx43"
        mtu = 1400
        "#,
    )
    .unwrap();
    assert_eq!(v.networks.len(), 2);
    assert_eq!(v.networks[0].remotes.len(), 2);
    assert_eq!(v.networks[1].name, "vni43");
    assert_eq!(v.networks[1].mtu, Some(1400));
}

#[test]
fn unknown_keys_and_bad_values_are_one_line_errors() {
    let e = parse_file("[[network]]\nvni = 42\ndev = \"vx42\"\nremote = [\"x\"]\n").unwrap_err();
    assert!(e.contains("unknown field `remote`"), "{e}");
    assert!(!e.contains('\n'));
    let e = parse_file("[[network]]\nvni = 16777216\ndev = \"vx\"\n").unwrap_err();
    assert!(e.contains("out of range"), "{e}");
    let e =
        parse_file("[[network]]\nvni = 1\ndev = \"vx\"\naddress = \"10.1.0.1/33\"\n").unwrap_err();
    assert!(!e.contains('\n'), "{e}");
    // Found by the config_file fuzz target: a key with a carriage return in it.
    let e = parse_file("\"a\\rb\\u001b[2J\" = 1\n").unwrap_err();
    assert!(e.contains("unknown field `a\\rb\\u{1b}[2J`"), "{e}");
    assert!(!e.contains(['\r', '\u{1b}']), "{e:?}");
}

#[test]
fn key_file_encrypts_the_network_relative_to_the_config_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("vxnet-config-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("blue.key");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.join("net.toml");
    std::fs::write(
        &config,
        "esp_port = 4501\n[[network]]\nvni = 42\ndev = \"vx42\"\nkey_file = \"blue.key\"\n\
         [[network]]\nvni = 43\ndev = \"vx43\"\n",
    )
    .unwrap();
    let v = load_file(&config).unwrap();
    assert_eq!(v.esp_port, Some(4501));
    let ring = v.networks[0].encryption.as_ref().unwrap();
    assert_eq!(ring.send_key().unwrap().to_hex(), "ab".repeat(32));
    assert!(v.networks[1].encryption.is_none());
    std::fs::write(
        &config,
        "[[network]]\nvni = 42\ndev = \"vx42\"\nkey_file = \"nope.key\"\n",
    )
    .unwrap();
    let e = load_file(&config).unwrap_err().to_string();
    assert!(e.contains("nope.key does not exist"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn engine_with(networks: Vec<NetworkConfig>) -> EngineConfig {
    EngineConfig {
        local: "10.0.0.1".parse().unwrap(),
        port: 4789,
        esp_port: DEFAULT_ESP_PORT,
        bind_esp: false,
        networks,
        ageing_secs: DEFAULT_AGEING_SECS,
        learning: true,
        max_fdb: DEFAULT_MAX_FDB,
        accept_any: false,
        control: PathBuf::from("/tmp/x.sock"),
        control_group: None,
        threads: 2,
        offloads: true,
        tunnel_gso: true,
        tuning: crate::tuning::Tuning::default(),
        state_dir: None,
    }
}

fn net(name: &str, vni: u32, dev: &str) -> NetworkConfig {
    NetworkConfig::plain(name, Vni::new(vni).unwrap(), dev)
}

#[test]
fn out_of_range_values_name_their_range() {
    let message = |c: EngineConfig| c.validate().unwrap_err().to_string();
    let one = || vec![net("blue", 42, "vx42")];
    let mut c = engine_with(one());
    c.port = 0;
    assert_eq!(message(c), "port 0 is out of range (valid: 1-65535)");
    let mut c = engine_with(one());
    c.threads = 300;
    assert_eq!(message(c), "threads 300 is out of range (valid: 1-256)");
    let mut c = engine_with(one());
    c.threads = 0;
    assert!(message(c).contains("valid: 1-256"));
    let mut c = engine_with(one());
    c.ageing_secs = 0;
    assert!(message(c).starts_with("ageing 0 is out of range"));
    let mut c = engine_with(one());
    c.max_fdb = 0;
    assert!(message(c).starts_with("max-fdb 0 is out of range"));
    for mtu in [0, 67, u32::MAX] {
        let mut n = net("blue", 42, "vx42");
        n.mtu = Some(mtu);
        assert_eq!(
            message(engine_with(vec![n])),
            format!("mtu of network blue {mtu} is out of range (valid: 68-65535)")
        );
    }
    let mut c = engine_with(one());
    c.local = "0.0.0.0".parse().unwrap();
    assert!(message(c).contains("unspecified"));
    // Typed values built in code (not parsed from a flag or file) are checked too.
    let mut c = engine_with(one());
    c.tuning.srcport = crate::tuning::SourcePortRange { min: 80, max: 90 };
    assert_eq!(
        message(c),
        "srcport 80-90 is out of range (valid: MIN-MAX within 1024-65535, MIN <= MAX)"
    );
    let mut c = engine_with(one());
    c.tuning.bum_rate = Some(0);
    assert_eq!(
        message(c),
        "bum-rate 0 is out of range (valid: 1-100000000)"
    );
    let mut c = engine_with(one());
    c.tuning.outer.tos = vxnet_encap::outer::TosPolicy::Fixed(3);
    assert!(message(c).contains("valid: 0-252 with the ECN bits 0"));
    let mut n = net("blue", 42, "vx42");
    n.bum_rate = Some(100_000_001);
    assert_eq!(
        message(engine_with(vec![n])),
        "bum_rate of network blue 100000001 is out of range (valid: 1-100000000)"
    );
}

#[test]
fn a_bad_pool_says_what_is_wrong_with_it() {
    let message = |n: NetworkConfig| engine_with(vec![n]).validate().unwrap_err().to_string();
    let mut n = net("blue", 42, "vx42");
    n.address = Some("10.1.0.1/24".parse().unwrap());
    n.pool = Some("10.9.0.0/24".parse().unwrap());
    assert_eq!(
        message(n.clone()),
        "network blue: pool 10.9.0.0/24 needs a bridge (--bridge, bridge =)"
    );
    // With a bridge, only the subnet is wrong: the message says so, not "needs a bridge".
    n.bridge = Some("br-blue".into());
    assert_eq!(
        message(n.clone()),
        "network blue: pool 10.9.0.0/24 must lie inside the network's address subnet (10.1.0.0/24)"
    );
    n.address = None;
    assert!(message(n.clone()).contains("(no address)"));
    n.address = Some("10.9.0.1/16".parse().unwrap());
    engine_with(vec![n]).validate().unwrap();
}

#[test]
fn duplicate_names_vnis_and_devices_are_refused() {
    let message = |n: Vec<NetworkConfig>| engine_with(n).validate().unwrap_err().to_string();
    assert_eq!(
        message(vec![net("blue", 42, "vx42"), net("blue", 43, "vx43")]),
        "network name \"blue\" is configured twice"
    );
    assert!(message(vec![net("a", 42, "vx42"), net("b", 42, "vx43")]).contains("VNI 42"));
    // Unnamed networks are named after their VNI ("vni42"): the VNI is what was given twice,
    // not the name the user never wrote.
    assert_eq!(
        message(vec![net("vni42", 42, "vx42"), net("vni42", 42, "vx43")]),
        "VNI 42 is configured twice"
    );
    assert!(message(vec![net("a", 42, "vx42"), net("b", 43, "vx42")]).contains("vx42"));
    assert!(message(vec![net("a b", 42, "vx42")]).contains("not valid"));
    engine_with(vec![net("a", 42, "vx42"), net("b", 43, "vx43")])
        .validate()
        .unwrap();
}

#[test]
fn tuning_keys() {
    let v = parse_file(
        "df = \"inherit\"\nttl = 9\ntos = \"inherit\"\nsrcport = \"50000-50999\"\nbum_rate = 500\n[[network]]\nvni = 1\ndev = \"vx\"\nbum_rate = 10\n",
    )
    .unwrap();
    assert_eq!(v.tuning.df, Some(vxnet_encap::outer::DfPolicy::Inherit));
    assert_eq!(v.tuning.srcport.map(|r| r.len()), Some(1000));
    assert_eq!(v.tuning.bum_rate, Some(500));
    assert_eq!(v.networks[0].bum_rate, Some(10));
    let e = parse_file("tos = 3\n").unwrap_err();
    assert!(e.contains("ECN") && !e.contains('\n'), "{e}");
    let e = parse_file("[[network]]\nvni = 1\ndev = \"vx\"\nbum_rate = 0\n").unwrap_err();
    assert!(e.contains("1-100000000"), "{e}");
}

#[test]
fn remotes_resolve_and_families_must_match() {
    let local: IpAddr = "10.0.0.1".parse().unwrap();
    assert_eq!(
        resolve_remote("10.0.0.2", local).unwrap(),
        "10.0.0.2".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        resolve_address("localhost", local).unwrap(),
        "127.0.0.1".parse::<IpAddr>().unwrap()
    );
    // ... which is no VTEP: frames sent there would loop back into this host.
    assert!(matches!(
        resolve_remote("localhost", local),
        Err(ConfigError::ResolvedUnusable { source, .. }) if matches!(*source, ConfigError::Invalid(_))
    ));
    assert!(matches!(
        resolve_remote("10.0.0.1", local),
        Err(ConfigError::Invalid(_))
    ));
    assert!(matches!(
        resolve_remote("fd00::2", local),
        Err(ConfigError::FamilyMismatch { .. })
    ));
    assert!(matches!(
        resolve_remote("no-such-host.invalid", local),
        Err(ConfigError::UnresolvableRemote { .. })
    ));
}

#[test]
fn a_remote_host_name_is_named_when_its_address_is_refused() {
    // Before: "remote 127.0.0.1 is not a usable VTEP address: loopback", without the name given.
    let e = resolve_remote("localhost", "10.0.0.1".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("remote \"localhost\": ")
            && e.contains("127.0.0.1")
            && e.contains("loopback"),
        "{e}"
    );
    let e = resolve_remote("127.0.0.1", "10.0.0.1".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert_eq!(e, "remote 127.0.0.1 is not a usable VTEP address: loopback");
}
