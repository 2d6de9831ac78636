//! ufw and firewalld through `--dry-run`: the exact commands, without running them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

mod firewall_support;
use firewall_support::{firewall_args, ok};

fn vxnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vxnet"))
        .args(args)
        .env("VXNET_STATE_DIR", "/nonexistent-vxnet-test")
        .output()
        .unwrap()
}

/// `firewall apply --backend BACKEND --dry-run` with `rest`: its stdout, which must succeed.
fn dry_run(backend: &str, rest: &[&str]) -> String {
    ok(&vxnet(&firewall_args(
        "apply",
        backend,
        &[&["--dry-run"], rest].concat(),
    )))
}

/// A dry run is only meaningful where the tool is absent: it then plans from an empty current
/// state. True (and says SKIP) where `prog` is installed.
fn installed(prog: &str) -> bool {
    let present = Command::new(prog).arg("--version").output().is_ok();
    if present {
        eprintln!("SKIP: {prog} installed; the dry-run plan would depend on its live rules");
    }
    present
}

#[test]
fn ufw_dry_run() {
    if installed("ufw") {
        return;
    }
    let out = dry_run("ufw", &["--peer", "10.0.0.2", "--peer", "10.0.0.3"]);
    assert_eq!(
        out,
        "ufw allow proto udp from 10.0.0.2 to any port 4789\nufw allow proto udp from 10.0.0.3 to any port 4789\n"
    );
    let out = dry_run("ufw", &["--port", "8472", "--peer", "fd00::2"]);
    assert_eq!(out, "ufw allow proto udp from fd00::2 to any port 8472\n");
}

#[test]
fn firewalld_dry_run() {
    if installed("firewall-cmd") {
        return;
    }
    let out = dry_run("firewalld", &["--peer", "10.0.0.2"]);
    assert_eq!(
        out,
        "firewall-cmd --permanent '--add-rich-rule=rule family=\"ipv4\" source address=\"10.0.0.2\" port port=\"4789\" protocol=\"udp\" accept'\nfirewall-cmd --reload\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&dry_run("firewalld", &["--json", "--peer", "fd00::2"])).unwrap();
    assert_eq!(json["backend"], "firewalld");
    assert_eq!(json["dry_run"], true);
    assert!(json["commands"][0]
        .as_str()
        .unwrap()
        .contains(r#"family="ipv6" source address="fd00::2""#));
}

#[test]
fn bad_backend_is_one_error_line() {
    let o = vxnet(&[
        "firewall",
        "apply",
        "--backend",
        "iptables",
        "--peer",
        "10.0.0.2",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("iptables"),
        "{err}"
    );
}

/// A static configuration with an encrypted network (`key_file`) opens its `esp_port` too.
#[test]
fn config_with_an_encrypted_network_opens_its_esp_port() {
    if installed("ufw") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("blue.key");
    let out = vxnet(&["key", "generate", "--out", key.to_str().unwrap()]);
    assert!(out.status.success());
    let config = dir.path().join("vxnet.toml");
    std::fs::write(
        &config,
        "esp_port = 4600\n[[network]]\nvni = 42\ndev = \"vx42\"\nkey_file = \"blue.key\"\n",
    )
    .unwrap();
    let out = dry_run(
        "ufw",
        &["--config", config.to_str().unwrap(), "--peer", "10.0.0.2"],
    );
    assert_eq!(
        out,
        "ufw allow proto udp from 10.0.0.2 to any port 4789\nufw allow proto udp from 10.0.0.2 to any port 4600\n"
    );
    // Without an encrypted network, the VXLAN port only.
    std::fs::write(&config, "[[network]]\nvni = 42\ndev = \"vx42\"\n").unwrap();
    let out = dry_run(
        "ufw",
        &["--config", config.to_str().unwrap(), "--peer", "10.0.0.2"],
    );
    assert_eq!(out, "ufw allow proto udp from 10.0.0.2 to any port 4789\n");
}
