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
    let etcd = etcd_tls(&tmp.path().join("etcd"), pki.server.clone());
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

/// A single etcd member on 127.0.0.1 serving clients over TLS with `tls`.
fn etcd_tls(dir: &std::path::Path, tls: ServerTls) -> EtcdServer {
    EtcdServer::start_tls(
        dir,
        "127.0.0.1".parse().unwrap(),
        free_port(),
        free_port(),
        tls,
    )
}

/// Signs `name.csr` (made by [`TestPki::make`]'s CA in `dir`) into `out` with a validity that
/// ended on 2020-01-02 (`openssl ca`, the one openssl command that takes explicit dates).
fn sign_expired(dir: &std::path::Path, name: &str, out: &str) {
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
         default_md = sha256\npolicy = p\ncopy_extensions = copy\nunique_subject = no\n\
         [p]\ncommonName = supplied\n",
    )
    .unwrap();
    let cmd = format!(
        "touch index.txt && (test -f serial || echo 1000 > serial) && \
         openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in {name}.csr \
           -extfile {name}.ext -notext -startdate 20200101000000Z -enddate 20200102000000Z -out {out}"
    );
    let o = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Each TLS fault is one error line naming it: no client certificate where etcd asks for one,
/// an expired client certificate (and when), a key that is not the certificate's, an expired
/// server certificate (and when).
#[test]
fn tls_faults_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(pki) = TestPki::make(tmp.path()) else {
        return;
    };
    if !require("etcd", "the cluster tests") {
        return;
    }
    sign_expired(tmp.path(), "client", "client-expired.pem");
    sign_expired(tmp.path(), "server", "server-expired.pem");
    let etcd = etcd_tls(&tmp.path().join("etcd"), pki.server.clone());
    let url = etcd.url();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (ca, cert, key) = (path(&pki.ca), path(&pki.client_cert), path(&pki.client_key));
    let expired = path(&tmp.path().join("client-expired.pem"));
    let wrong_key = path(&pki.server.key);
    let init = |name: &str, extra: &[&str]| {
        let dir = state_dir(tmp.path(), name);
        let mut args = vec!["cluster", "init", "--store", &url, "--store-ca", &ca];
        args.extend(extra);
        run(&dir, &args)
    };
    assert_cli_error(
        &init("nocert", &[]),
        "etcd asks for a client certificate (it runs with --client-cert-auth) and none was given",
    );
    assert_cli_error(
        &init("expired", &["--store-cert", &expired, "--store-key", &key]),
        "the client certificate (--store-cert), CN=vxnet-client, expired on 2020-01-02 00:00:00 UTC",
    );
    assert_cli_error(
        &init("mismatch", &["--store-cert", &cert, "--store-key", &wrong_key]),
        "the client key (--store-key) does not match the client certificate (--store-cert, CN=vxnet-client)",
    );
    drop(etcd);

    // etcd itself serving with an expired certificate.
    let mut server = pki.server.clone();
    server.cert = tmp.path().join("server-expired.pem");
    let etcd = etcd_tls(&tmp.path().join("etcd-expired"), server);
    let dir = state_dir(tmp.path(), "server-expired");
    let url = etcd.url();
    let o = run(
        &dir,
        &[
            "cluster",
            "init",
            "--store",
            &url,
            "--store-ca",
            &ca,
            "--store-cert",
            &cert,
            "--store-key",
            &key,
        ],
    );
    assert_cli_error(
        &o,
        "etcd's server certificate expired on 2020-01-02 00:00:00 UTC",
    );
}
