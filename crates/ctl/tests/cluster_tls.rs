//! A secured store: etcd serving clients over TLS only (client certificates required, made
//! here with openssl) with authentication enabled. The `--store-*` options are given once, kept in
//! the state dir (0600), and every later command works without them; a wrong password or a
//! missing CA is one clear error; a plain store gets a warning.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use cluster_support::*;

#[test]
fn tls_store_with_a_password_is_used_from_the_state_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(pki) = TestPki::make(tmp.path()) else {
        return;
    };
    if !require("etcd", "the cluster tests") || !require("etcdctl", "the cluster tests") {
        return;
    }
    let etcd = EtcdServer::start_tls(
        &tmp.path().join("etcd"),
        "127.0.0.1".parse().unwrap(),
        free_port(),
        free_port(),
        pki.server.clone(),
    );
    let url = etcd.url();
    assert!(url.starts_with("https://"), "{url}");
    let https = vec![format!("https://{}", etcd.endpoints()[0])];
    let ctl = |args: &[&str]| {
        let mut all: Vec<String> = pki.etcdctl_flags();
        all.extend(args.iter().map(|s| s.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        etcdctl(&https, &all)
    };
    // Authentication on: a root user, and a vxnet user allowed the /vxnet/ prefix only.
    ctl(&["user", "add", "root", "--new-user-password", "rootpw"]);
    ctl(&["user", "grant-role", "root", "root"]);
    ctl(&["role", "add", "vxnet"]);
    ctl(&[
        "role",
        "grant-permission",
        "vxnet",
        "--prefix=true",
        "readwrite",
        "/vxnet/",
    ]);
    ctl(&["user", "add", "vxnet-user", "--new-user-password", "s3cret"]);
    ctl(&["user", "grant-role", "vxnet-user", "vxnet"]);
    ctl(&["auth", "enable"]);

    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let bad_pw = tmp.path().join("bad-pw");
    std::fs::write(&bad_pw, "guess\n").unwrap();
    let (ca, cert, key) = (
        pki.ca.to_str().unwrap(),
        pki.client_cert.to_str().unwrap(),
        pki.client_key.to_str().unwrap(),
    );
    let tls_flags = ["--store-ca", ca, "--store-cert", cert, "--store-key", key];

    // A wrong password, and https without the CA: one error line each, nothing saved.
    let bad = state_dir(tmp.path(), "bad");
    let mut args = vec!["cluster", "init", "--store", &url];
    args.extend(tls_flags);
    args.extend(["--store-user", "vxnet-user", "--store-password-file"]);
    let mut wrong = args.clone();
    wrong.push(bad_pw.to_str().unwrap());
    assert_cli_error(&run(&bad, &wrong), "the store refused access");
    assert!(!bad.join("state.json").exists());
    assert_cli_error(
        &run(&bad, &["cluster", "init", "--store", &url]),
        "needs --store-ca",
    );

    // The manager: everything given once.
    let m = state_dir(tmp.path(), "m");
    args.push(pw.to_str().unwrap());
    args.push("--json");
    let init = run(&m, &args);
    let out = json(&init);
    assert!(
        !stderr(&init).contains("plain http"),
        "a secured store is not warned about: {}",
        stderr(&init)
    );
    for f in [
        "state.json",
        "store-ca.pem",
        "store-cert.pem",
        "store-key.pem",
        "store-password",
    ] {
        let mode = std::fs::metadata(m.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let state = std::fs::read_to_string(m.join("state.json")).unwrap();
    assert!(!state.contains("s3cret"), "{state}");
    // Later commands need no store options.
    json(&run(&m, &["network", "create", "blue", "--json"]));
    let st = json(&run(&m, &["cluster", "status", "--json"]));
    assert_eq!(st["store"], "healthy", "{st}");

    // A worker joins with the token (which says https), its CA and certificate, and the
    // password from the environment.
    let w = state_dir(tmp.path(), "w");
    let token = out["worker_token"].as_str().unwrap();
    let mut join = vxnet();
    join.args(["cluster", "join", token])
        .args(tls_flags)
        .args(["--store-user", "vxnet-user", "--json", "--state-dir"])
        .arg(&w)
        .env("VXNET_STORE_PASSWORD", "s3cret")
        .env_remove("VXNET_STATE_DIR");
    json(&join.output().unwrap());
    let ls = json(&run(&w, &["network", "ls", "--json"]));
    assert_eq!(ls[0]["name"], "blue", "{ls}");
    // And registers the way an engine does, over TLS, with no options.
    let wp = WatchProc::spawn(&w, "127.0.0.111", 3);
    assert!(
        wp.wait(Duration::from_secs(5), |v| network_names(v) == ["blue"]
            && alive_members(v).len() == 1)
            .is_some(),
        "{:?}; stderr:\n{}",
        wp.latest(),
        wp.stderr()
    );
    drop(wp);

    // A plain store still works, with a warning.
    let Some(plain) = Etcd::start() else { return };
    let p = state_dir(tmp.path(), "p");
    let o = run(&p, &["cluster", "init", "--store", &plain.url(), "--json"]);
    json(&o);
    assert!(
        stderr(&o).contains("plain http without authentication"),
        "{}",
        stderr(&o)
    );
}
