//! The cluster and network subcommands against a real etcd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::os::unix::fs::PermissionsExt;

use cluster_support::*;

#[test]
fn init_join_rotate_tokens() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (m, w1, w2, w3) = (
        tmp.path().join("m"),
        tmp.path().join("w1"),
        tmp.path().join("w2"),
        tmp.path().join("w3"),
    );

    // Human output: both tokens.
    let out = run(
        &m,
        &[
            "cluster",
            "init",
            "--store",
            &etcd.url(),
            "--local",
            "10.9.0.1",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let tokens: Vec<&str> = text
        .split_whitespace()
        .filter(|w| w.starts_with("VXNET-1-"))
        .collect();
    assert_eq!(tokens.len(), 2, "{text}");
    let manager = tokens[0].to_owned();
    let worker = tokens[1].to_owned();
    assert!(manager.contains("-M-") && worker.contains("-W-"));

    // A second init into the same state dir is refused; so is an explicit existing cluster id.
    let cid = worker.split('-').nth(2).unwrap().to_owned();
    assert_cli_error(
        &run(&m, &["cluster", "init", "--store", &etcd.url()]),
        "already belongs",
    );
    let other = tmp.path().join("other");
    assert_cli_error(
        &run(
            &other,
            &[
                "cluster",
                "init",
                "--store",
                &etcd.url(),
                "--cluster-id",
                &cid,
            ],
        ),
        "already exists",
    );

    // The store holds hashes, never the secrets.
    let secret = worker.split('-').nth(3).unwrap();
    let dump = std::process::Command::new("etcdctl")
        .args([
            "--endpoints",
            &etcd.endpoints()[0],
            "get",
            "--prefix",
            "/vxnet/",
        ])
        .output();
    if let Ok(d) = dump {
        assert!(!String::from_utf8_lossy(&d.stdout).contains(secret));
    }

    let out = run(&w1, &["cluster", "join", &worker, "--local", "10.9.0.2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::fs::metadata(w1.join("state.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let mode = std::fs::metadata(&w1).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);

    // Wrong secret: same shape, different hex.
    let mut parts: Vec<String> = worker.splitn(6, '-').map(str::to_owned).collect();
    parts[3] = "0".repeat(parts[3].len());
    let forged = parts.join("-");
    assert_cli_error(&run(&w2, &["cluster", "join", &forged]), "wrong or revoked");
    assert!(!w2.join("state.json").exists());
    assert_cli_error(
        &run(&w2, &["cluster", "join", "VXNET-garbage"]),
        "malformed join token",
    );

    // Workers may not rotate; managers may, and the old worker token is refused afterwards.
    assert_cli_error(&run(&w1, &["cluster", "rotate"]), "manager");
    let rot = json(&run(&m, &["cluster", "rotate", "--worker", "--json"]));
    let new_worker = rot["worker_token"].as_str().unwrap().to_owned();
    assert!(rot["manager_token"].is_null());
    assert_cli_error(&run(&w2, &["cluster", "join", &worker]), "wrong or revoked");
    let out = run(&w2, &["cluster", "join", &new_worker]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The manager token was not rotated and still works.
    let out = run(&w3, &["cluster", "join", &manager]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Status from a worker lists every joined node; nobody is running, so none is alive.
    let st = json(&run(&w1, &["cluster", "status", "--json"]));
    assert_eq!(st["store"], "healthy");
    let members = st["view"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 4);
    assert!(members.iter().all(|m| m["alive"] == false));
    assert!(members.iter().any(|m| m["vtep"] == "10.9.0.2"));

    // The firewall takes its peers from the cluster when no --peer is given.
    let out = run(
        &m,
        &["firewall", "apply", "--backend", "nftables", "--dry-run"],
    );
    let plan = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(plan.contains("elements = { 10.9.0.1, 10.9.0.2 }"), "{plan}");
    // Plain networks only: the VXLAN port alone.
    assert!(plan.contains("udp dport 4789 ip saddr"), "{plan}");
    assert!(!plan.contains("4500"), "{plan}");

    // An encrypted network in the cluster: the ESP port opens too, in every backend.
    let out = run(&m, &["network", "create", "vault", "--encrypted"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        &m,
        &["firewall", "apply", "--backend", "nftables", "--dry-run"],
    );
    let plan = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        plan.contains("udp dport { 4789, 4500 } ip saddr @peers4 accept"),
        "{plan}"
    );
    let out = run(
        &m,
        &[
            "firewall",
            "apply",
            "--backend",
            "ufw",
            "--dry-run",
            "--esp-port",
            "4501",
        ],
    );
    let plan = stdout(&out);
    assert!(
        plan.contains("ufw allow proto udp from 10.9.0.2 to any port 4789")
            && plan.contains("ufw allow proto udp from 10.9.0.2 to any port 4501"),
        "{plan}"
    );
    let report = json(&run(
        &m,
        &[
            "firewall",
            "apply",
            "--backend",
            "firewalld",
            "--dry-run",
            "--json",
        ],
    ));
    assert_eq!(report["esp_port"], 4500, "{report}");
    let commands = report["commands"].to_string();
    assert!(commands.contains(r#"port=\"4500\""#), "{commands}");
}

#[test]
fn networks_create_ls_rm() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    let init = json(&run(
        &m,
        &["cluster", "init", "--store", &etcd.url(), "--json"],
    ));
    let w = tmp.path().join("w");
    assert!(run(
        &w,
        &["cluster", "join", init["worker_token"].as_str().unwrap()]
    )
    .status
    .success());

    let blue = json(&run(&m, &["network", "create", "blue", "--json"]));
    assert_eq!(blue["vni"], 4096);
    let red = json(&run(
        &m,
        &[
            "network",
            "create",
            "red",
            "--vni",
            "42",
            "--subnet",
            "10.42.0.0/24",
            "--json",
        ],
    ));
    assert_eq!(red["vni"], 42);
    assert_eq!(red["subnet"], "10.42.0.0/24");
    let green = json(&run(&m, &["network", "create", "green", "--json"]));
    assert_eq!(green["vni"], 4097);

    assert_cli_error(&run(&m, &["network", "create", "blue"]), "already taken");
    assert_cli_error(
        &run(&m, &["network", "create", "pink", "--vni", "42"]),
        "VNI 42 is already taken",
    );
    assert_cli_error(
        &run(&m, &["network", "create", "x", "--vni", "16777216"]),
        "out of range",
    );
    assert_cli_error(
        &run(&m, &["network", "create", "y", "--subnet", "bogus"]),
        "invalid subnet",
    );
    assert_cli_error(&run(&w, &["network", "create", "z"]), "manager");

    // Every node sees the same list.
    let ls_m = json(&run(&m, &["network", "ls", "--json"]));
    let ls_w = json(&run(&w, &["network", "ls", "--json"]));
    assert_eq!(ls_m, ls_w);
    assert_eq!(ls_m.as_array().unwrap().len(), 3);

    assert!(run(&m, &["network", "rm", "green"]).status.success());
    assert_cli_error(&run(&m, &["network", "rm", "green"]), "no network");
    // The freed VNI can be reused.
    let again = json(&run(&m, &["network", "create", "teal", "--json"]));
    assert_eq!(again["vni"], 4097);
}

#[test]
fn concurrent_auto_vni_is_unique() {
    let Some(etcd) = Etcd::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    assert!(run(&m, &["cluster", "init", "--store", &etcd.url()])
        .status
        .success());
    let children: Vec<_> = (0..8)
        .map(|i| {
            vxnet()
                .args([
                    "network",
                    "create",
                    &format!("n{i}"),
                    "--json",
                    "--state-dir",
                ])
                .arg(&m)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut vnis: Vec<u64> = children
        .into_iter()
        .map(|c| {
            json(&c.wait_with_output().unwrap())["vni"]
                .as_u64()
                .unwrap()
        })
        .collect();
    vnis.sort();
    assert_eq!(vnis, (4096..4104).collect::<Vec<u64>>());
    // Same name raced from two processes: exactly one wins.
    let racers: Vec<_> = (0..2)
        .map(|_| {
            vxnet()
                .args(["network", "create", "dup", "--state-dir"])
                .arg(&m)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let ok = racers
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.success())
        .filter(|s| *s)
        .count();
    assert_eq!(ok, 1);
}

/// `vxnet run` in cluster mode refuses bad flag combinations with one error line before it
/// joins, touches the state dir or creates anything (no etcd needed: nothing gets that far).
#[test]
fn run_cluster_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = "etcd://127.0.0.1:1";
    let cases: [(&[&str], &str); 8] = [
        (
            &[
                "--store",
                store,
                "--network",
                "a",
                "--network",
                "b",
                "--dev",
                "x",
            ],
            "--dev needs exactly one --network",
        ),
        (
            &["--store", store, "--address", "10.1.0.1/24"],
            "--address needs exactly one --network",
        ),
        (
            &["--store", store, "--vni", "5", "--dev", "x"],
            "--vni and --config are for static networks",
        ),
        (
            &["--store", store, "--network", "a/b"],
            "invalid network name",
        ),
        (
            &["--vni", "5", "--dev", "x", "--no-publish-macs"],
            "--no-publish-macs is for cluster mode",
        ),
        (
            &["--vni", "5", "--dev", "x", "--firewall"],
            "--firewall is for cluster mode",
        ),
        (&["--token", "VXNET-garbage"], "malformed join token"),
        (&["--store", store], "no cluster state in"),
    ];
    for (args, msg) in cases {
        let mut all = vec!["run", "--local", "127.0.0.1", "--control"];
        let control = tmp.path().join("c.sock");
        let control = control.to_str().unwrap();
        all.push(control);
        all.extend_from_slice(args);
        let out = run(&state, &all);
        assert_cli_error(&out, msg);
        assert!(!state.exists(), "{args:?} left a state dir");
        assert!(
            !tmp.path().join("c.sock").exists(),
            "{args:?} left a socket"
        );
    }
    let out = run(
        &state,
        &[
            "run",
            "--store",
            store,
            "--local",
            "127.0.0.1",
            "--lease-ttl",
            "1",
        ],
    );
    assert_cli_error(&out, "--lease-ttl");

    // --firewall on a host without nft (an empty PATH here): refused before joining.
    let out = vxnet()
        .args([
            "run",
            "--store",
            store,
            "--local",
            "127.0.0.1",
            "--firewall",
        ])
        .arg("--control")
        .arg(tmp.path().join("c.sock"))
        .arg("--state-dir")
        .arg(&state)
        .env_remove("VXNET_STATE_DIR")
        .env("PATH", tmp.path())
        .output()
        .unwrap();
    assert_cli_error(&out, "--firewall needs nft");
    assert!(!state.exists(), "--firewall refusal left a state dir");
    assert!(!tmp.path().join("c.sock").exists());
}
