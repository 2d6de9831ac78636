//! etcd authentication with the cluster's own roles: `cluster init` given etcd's root identity
//! lays out roles and users, a node joins by request and gets its own etcd user (the token holds
//! only its join user's password, never root's), and a worker's user cannot change networks,
//! rotate tokens or remove nodes — refused by etcd, whatever its state dir says — while it still
//! joins, registers, heals and leaves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::path::Path;
use std::time::{Duration, Instant};

use cluster_support::*;

fn node_id(dir: &Path) -> String {
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    st["node_id"].as_str().unwrap().to_string()
}

fn join(dir: &Path, token: &str) -> std::process::Output {
    run(dir, &["cluster", "join", token, "--json"])
}

fn set_role(dir: &Path, role: &str) {
    let path = dir.join("state.json");
    let mut st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    st["role"] = role.into();
    std::fs::write(&path, serde_json::to_vec(&st).unwrap()).unwrap();
}

fn wait_for(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn worker_credentials_are_limited_by_etcd() {
    if !require("etcdctl", "the cluster tests") {
        return;
    }
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let http: Vec<String> = etcd
        .endpoints()
        .iter()
        .map(|e| format!("http://{e}"))
        .collect();
    etcdctl(
        &http,
        &["user", "add", "root", "--new-user-password", "rootpw"],
    );
    etcdctl(&http, &["auth", "enable"]);
    let root = |args: &[&str]| {
        let mut all = vec!["--user", "root:rootpw"];
        all.extend(args);
        etcdctl(&http, &all)
    };
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "rootpw\n").unwrap();

    // The manager holds the admin identity; the tokens do not.
    let m = state_dir(tmp.path(), "m");
    let url = etcd.url();
    let init = json(&run(
        &m,
        &[
            "cluster",
            "init",
            "--store",
            &url,
            "--store-user",
            "root",
            "--store-password-file",
            pw.to_str().unwrap(),
            "--json",
        ],
    ));
    let cid = init["cluster_id"].as_str().unwrap().to_string();
    let worker_token = init["worker_token"].as_str().unwrap().to_string();
    let manager_token = init["manager_token"].as_str().unwrap().to_string();
    for t in [&worker_token, &manager_token] {
        // Cluster id, secret, role and store: no etcd identity.
        let parsed = vxnet_cluster::token::Token::parse(t).unwrap();
        assert!(
            parsed.auth && parsed.endpoints == etcd.endpoints(),
            "{parsed:?}"
        );
        assert!(!t.contains("rootpw"));
    }
    let roles = root(&["role", "list"]);
    for r in ["manager", "worker", "joiner"] {
        assert!(roles.contains(&format!("vxnet-{cid}-{r}")), "{roles}");
    }

    // Without a manager engine running nobody admits; with one, the worker joins and keeps
    // only its own user's password.
    let _manager = WatchProc::spawn(&m, "127.0.0.121", 3);
    let w = state_dir(tmp.path(), "w");
    json(&join(&w, &worker_token));
    let wid = node_id(&w);
    let user = format!("vxnet-{cid}-node-{wid}");
    let state = std::fs::read_to_string(w.join("state.json")).unwrap();
    assert!(state.contains(&user), "{state}");
    let wpw = std::fs::read_to_string(w.join("store-password")).unwrap();
    assert_ne!(wpw.trim(), "rootpw");
    for f in ["state.json", "store-password"] {
        let text = std::fs::read_to_string(w.join(f)).unwrap();
        assert!(!text.contains("rootpw"), "{f}: {text}");
    }

    // It serves networks and registers, and heals its member record.
    json(&run(&m, &["network", "create", "blue", "--json"]));
    json(&run(
        &m,
        &["network", "create", "sec", "--encrypted", "--json"],
    ));
    let wp = WatchProc::spawn(&w, "127.0.0.122", 3);
    let both = |v: &serde_json::Value| {
        network_names(v) == ["blue", "sec"]
            && alive_members(v).contains(&wid)
            && alive_members(v).len() == 2
    };
    assert!(
        wp.wait(Duration::from_secs(10), both).is_some(),
        "{:?}; stderr:\n{}",
        wp.latest(),
        wp.stderr()
    );
    root(&["del", &format!("/vxnet/{cid}/members/{wid}")]);
    assert!(
        wait_for(Duration::from_secs(6), || root(&[
            "get",
            &format!("/vxnet/{cid}/members/{wid}")
        ])
        .contains(&wid)),
        "the worker re-asserts its member record; stderr:\n{}",
        wp.stderr()
    );

    // Its etcd user may write MAC and address records, not networks or tokens.
    let as_user = |cred: &str, args: &[&str]| {
        std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", http.join(",")))
            .args(["--user", cred])
            .args(args)
            .output()
            .unwrap()
    };
    let worker_cred = format!("{user}:{}", wpw.trim());
    let as_worker = |args: &[&str]| as_user(&worker_cred, args);
    // Its own records live under its own prefix; every other node's (and the old layout's
    // shared `macs/` and `ipam/`) are out of its reach.
    let own = format!("/vxnet/{cid}/node/{wid}/addrs/blue/10.9.0.9");
    let ok = as_worker(&["put", &own, "{}"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    as_worker(&["del", &own]);
    let others = [
        "ipam/blue/10.9.0.9".to_string(),
        "macs/4096/02:00:00:00:00:01".to_string(),
        "node/0000/macs/4096/02:00:00:00:00:01".to_string(),
        // A prefix grant on `node/<id>` without the slash would let it write here.
        format!("node/{wid}0/addrs/blue/10.9.0.9"),
    ];
    for key in ["networks/red", "vni/77", "meta", "keys/blue"]
        .map(str::to_string)
        .iter()
        .chain(&others)
    {
        let o = as_worker(&["put", &format!("/vxnet/{cid}/{key}"), "{}"]);
        assert!(
            !o.status.success() && stderr(&o).contains("permission denied"),
            "{key}: {}",
            stderr(&o)
        );
    }

    // The worker token's join user can write a request but not read any back, and a request
    // for the manager role with the worker secret is refused by the admitting manager.
    let secret = vxnet_cluster::token::Token::parse(&worker_token)
        .unwrap()
        .secret;
    let joiner = format!("vxnet-{cid}-join-worker:{secret}");
    let requests = format!("/vxnet-join/{cid}/");
    let o = as_user(&joiner, &["get", "--prefix", &requests]);
    assert!(stderr(&o).contains("permission denied"), "{}", stderr(&o));
    let forged = serde_json::json!({
        "node_id": "f0f0f0", "role": "manager", "secret": secret, "password": "guess",
    });
    let o = as_user(
        &joiner,
        &["put", &format!("{requests}f0f0f0"), &forged.to_string()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(wait_for(Duration::from_secs(5), || root(&[
        "get", "--prefix", &requests
    ])
    .is_empty()));
    assert!(root(&["get", &format!("/vxnet/{cid}/nodes/f0f0f0")]).is_empty());
    assert!(!root(&["user", "list"]).contains("f0f0f0"));

    // A second worker that is not running, to try removing.
    let w2 = state_dir(tmp.path(), "w2");
    json(&join(&w2, &worker_token));
    let w2id = node_id(&w2);

    // The worker claims to be a manager: etcd refuses every manager action.
    set_role(&w, "manager");
    for args in [
        vec!["network", "create", "red"],
        vec!["network", "rm", "blue", "--force"],
        vec!["cluster", "rotate"],
        vec!["cluster", "rm", &w2id],
        vec!["network", "rotate-key", "sec"],
    ] {
        assert_cli_error(&run(&w, &args), "permission denied");
    }
    set_role(&w, "worker");
    let ls = json(&run(&m, &["network", "ls", "--json"]));
    assert_eq!(ls.as_array().unwrap().len(), 2, "{ls}");
    assert!(root(&["get", &format!("/vxnet/{cid}/nodes/{w2id}")]).contains(&w2id));

    // A manager that joined with the manager token may change networks but not rotate (that
    // changes etcd passwords: the admin identity's).
    let m2 = state_dir(tmp.path(), "m2");
    json(&join(&m2, &manager_token));
    json(&run(&m2, &["network", "create", "green", "--json"]));
    assert_cli_error(&run(&m2, &["cluster", "rotate"]), "permission denied");

    // Rotation on the admin manager: etcd refuses the old token, the new one joins.
    let rotated = json(&run(&m, &["cluster", "rotate", "--worker", "--json"]));
    let new_token = rotated["worker_token"].as_str().unwrap();
    let w3 = state_dir(tmp.path(), "w3");
    assert_cli_error(&join(&w3, &worker_token), "join token refused");
    json(&join(&w3, new_token));
    // A manager joining again as a worker loses the manager role in etcd too.
    json(&join(&m2, new_token));
    set_role(&m2, "manager");
    assert_cli_error(
        &run(&m2, &["network", "create", "yellow"]),
        "permission denied",
    );

    // Removing a node removes its etcd user: its credentials stop working.
    json(&run(&m, &["cluster", "rm", &w2id, "--json"]));
    assert_cli_error(&run(&w2, &["network", "ls"]), "refused access");

    // The worker leaves with its own credentials; its user goes soon after.
    drop(wp);
    assert!(wait_for(Duration::from_secs(6), || {
        run(&w, &["cluster", "leave", "--json"]).status.success()
    }));
    assert!(
        wait_for(Duration::from_secs(10), || !root(&["user", "list"])
            .contains(&user)),
        "{}",
        root(&["user", "list"])
    );
}
