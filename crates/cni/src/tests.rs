//! The plugin's commands against a scripted engine on a real Unix socket: every parse and error
//! path, and what is asked of the engine. (The real engine, runtimes and namespaces are in the
//! root package's `tests/cni_*.rs`.)

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::plugin::{run, Outcome};

type Script = dyn Fn(&Value) -> Value + Send + Sync;

/// A control socket that answers each request with `script(request)` (a `Reply`) and keeps the
/// requests it got.
struct FakeEngine {
    _dir: tempfile::TempDir,
    path: PathBuf,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl FakeEngine {
    fn start(script: Box<Script>) -> FakeEngine {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vxnet.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut line = String::new();
                if BufReader::new(&stream).read_line(&mut line).is_err() {
                    continue;
                }
                let req: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let reply = script(&req);
                log.lock().unwrap().push(req);
                let _ = writeln!(stream, "{reply}");
            }
        });
        FakeEngine {
            _dir: dir,
            path,
            seen,
        }
    }

    fn cmds(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| r["cmd"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    fn request(&self, cmd: &str) -> Value {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .find(|r| r["cmd"] == cmd)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

fn ok(data: Value) -> Value {
    json!({"status": "ok", "data": data})
}

fn endpoint(netns: &str) -> Value {
    json!({
        "id": "e1", "name": "web1", "aliases": ["www"], "network": "blue",
        "address": "10.77.0.5/24", "gateway": "10.77.0.1", "mac": "02:00:00:00:00:05",
        "ifname": "eth0", "netns": netns, "node": "n1", "container_id": "c1",
        "since": 1, "mtu": 1450, "dns": {"nameservers": ["10.77.0.1"], "domain": "blue.vxnet",
        "search": ["blue.vxnet"]}
    })
}

/// Network `blue` as the engine's `networks` lists it; in cluster mode, on node `node`.
fn blue(node: Option<&str>) -> Value {
    let mut n = json!({
        "name": "blue", "vni": 42, "dev": "vx-blue", "mtu": 1450, "address": "10.77.0.1/24",
        "local": "192.0.2.1", "port": 4789, "flood": [], "learning": false, "allow_vlan": false
    });
    if let Some(node) = node {
        n["cluster"] = json!({"store": "etcd://192.0.2.9:2379", "cluster_id": "c",
            "node_id": node, "store_healthy": true, "members_alive": 1, "revision": 1});
    }
    n
}

/// An engine serving network `blue` as node `n1`, with `endpoints` listed, that attaches by
/// returning `endpoint(netns)`.
fn engine(endpoints: Vec<Value>) -> FakeEngine {
    FakeEngine::start(Box::new(move |req| match req["cmd"].as_str() {
        Some("networks") => ok(json!([blue(Some("n1"))])),
        Some("endpoints") => ok(json!({"endpoints": endpoints.clone()})),
        Some("attach") => ok(endpoint(req["netns"].as_str().unwrap_or_default())),
        Some("detach") => ok(Value::Null),
        Some("endpoint_gc") => ok(json!({"released": []})),
        Some("status") => ok(json!({"state": "ready"})),
        _ => json!({"status": "error", "message": "unknown request"}),
    }))
}

fn conf(control: &Path, extra: Value) -> Vec<u8> {
    let mut c = json!({"cniVersion": "1.1.0", "name": "blue", "type": "vxnet-cni",
                       "control": control});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    serde_json::to_vec(&c).unwrap()
}

fn invoke(vars: &[(&str, &str)], stdin: &[u8]) -> (Outcome, Value) {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let out = run(&|k: &str| map.get(k).cloned(), stdin);
    let json = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    (out, json)
}

/// Asserts the spec's error: non-zero exit, `code`, a `msg` mentioning `says`.
fn assert_error(vars: &[(&str, &str)], stdin: &[u8], code: u32, says: &str) -> Value {
    let (out, json) = invoke(vars, stdin);
    assert_ne!(out.exit, 0, "{}", out.stdout);
    assert_eq!(json["code"], code, "{}", out.stdout);
    assert!(json["cniVersion"].is_string(), "{}", out.stdout);
    let msg = json["msg"].as_str().unwrap_or_default();
    assert!(msg.contains(says), "{msg:?} should mention {says:?}");
    json
}

/// A network namespace other than ours, alive while the child runs (root only; `None` skips
/// outside CI).
struct OtherNetns(Child);

impl OtherNetns {
    fn new(test: &str) -> Option<OtherNetns> {
        let child = Command::new("unshare")
            .args(["--net", "sleep", "60"])
            .stderr(Stdio::null())
            .spawn();
        let ns = child.ok().map(OtherNetns);
        std::thread::sleep(std::time::Duration::from_millis(100));
        let differs = ns.as_ref().is_some_and(|n| {
            let own = std::fs::read_link("/proc/self/ns/net").ok();
            std::fs::read_link(n.path())
                .ok()
                .is_some_and(|l| Some(l) != own)
        });
        if differs {
            return ns;
        }
        let why = format!("{test}: needs root to make a network namespace (unshare --net)");
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true" && v != "1"),
            "{why}; CI=true, so this is a failure"
        );
        eprintln!("SKIPPED {why}");
        None
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.0.id()))
    }
}

impl Drop for OtherNetns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const ADD: [(&str, &str); 4] = [
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c1"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web1"),
];

fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v: Vec<_> = base
        .iter()
        .copied()
        .filter(|(k, _)| !more.iter().any(|(m, _)| m == k))
        .collect();
    v.extend_from_slice(more);
    v
}

#[test]
fn version_answers_without_config_or_engine() {
    let (out, json) = invoke(&[("CNI_COMMAND", "VERSION")], b"");
    assert_eq!(out.exit, 0);
    assert_eq!(json["supportedVersions"], json!(["1.0.0", "1.1.0"]));
    let (_, json) = invoke(&[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(json["cniVersion"], "1.0.0");
}

#[test]
fn bad_environment_and_config_get_spec_codes() {
    let e = engine(vec![]);
    let good = conf(&e.path, json!({}));
    assert_error(&[], &good, 4, "CNI_COMMAND");
    let add = with(&ADD, &[("CNI_NETNS", "/proc/self/ns/net")]);
    assert_error(&add, b"{not json", 6, "not JSON");
    assert_error(&add, b"[1]", 6, "not a JSON object");
    let old = br#"{"cniVersion":"0.4.0","name":"blue","type":"vxnet-cni"}"#;
    let json = assert_error(&add, old, 1, "0.4.0");
    assert_eq!(
        json["cniVersion"], "1.1.0",
        "our newest when theirs is unusable"
    );
    assert_error(
        &add,
        br#"{"name":"blue","type":"vxnet-cni"}"#,
        7,
        "cniVersion",
    );
    assert_error(
        &add,
        br#"{"cniVersion":"1.0.0","name":"blue","type":"vxnet-cni","control":"rel.sock"}"#,
        7,
        "absolute",
    );
    assert_error(
        &add,
        br#"{"cniVersion":"1.0.0","name":"a b","type":"vxnet-cni"}"#,
        7,
        "not a CNI name",
    );
    assert_error(
        &add,
        br#"{"cniVersion":"1.0.0","name":"blue","plugins":[{"type":"vxnet-cni"}]}"#,
        7,
        "conflist",
    );
    let del = with(&ADD, &[("CNI_COMMAND", "DEL")]);
    assert_error(
        &del,
        &conf(&e.path, json!({"ipam": {"subnet": "x"}})),
        7,
        "type",
    );
    // The host's own namespace, a file, a missing one: refused before the engine is asked.
    assert_error(&add, &good, 4, "own");
    assert!(e.cmds().is_empty(), "asked the engine: {:?}", e.cmds());
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("ns");
    std::fs::write(&file, b"").unwrap();
    let file = file.to_str().unwrap();
    assert_error(
        &with(&ADD, &[("CNI_NETNS", file)]),
        &good,
        4,
        "not a network namespace",
    );
    // A hostile IPAM type cannot name a path to exec.
    let json = assert_error(
        &del,
        &conf(&e.path, json!({"ipam": {"type": "../../bin/sh"}})),
        7,
        "not a plugin name",
    );
    assert_eq!(json["cniVersion"], "1.1.0");
}

#[test]
fn add_asks_the_engine_and_returns_the_spec_result() {
    let Some(ns) = OtherNetns::new("add_asks_the_engine") else {
        return;
    };
    let netns = ns.path();
    let netns = netns.to_str().unwrap();
    let e = engine(vec![]);
    let vars = with(&ADD, &[("CNI_NETNS", netns)]);
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "lo0"}],
                      "ips": [{"address": "192.0.2.1/32", "interface": 0}]});
    let stdin = conf(
        &e.path,
        json!({"cniVersion": "1.0.0", "prevResult": prev,
               "runtimeConfig": {"aliases": {"blue": ["www", "bad_alias"], "red": ["x"]}}}),
    );
    let (out, r) = invoke(&vars, &stdin);
    assert_eq!(out.exit, 0, "{}", out.stdout);
    assert_eq!(e.cmds(), ["networks", "endpoints", "attach"]);
    let attach = e.request("attach");
    assert_eq!(attach["network"], "blue");
    assert_eq!(attach["netns"], netns);
    assert_eq!(attach["ifname"], "eth0");
    assert_eq!(attach["name"], "web1");
    assert_eq!(attach["aliases"], json!(["www"]));
    assert_eq!(attach["container_id"], "c1");
    assert!(
        attach.get("address").is_none(),
        "the engine's IPAM by default"
    );
    // The previous plugin's part first, ours after it with its index moved along.
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][0]["name"], "lo0");
    let ours = &r["interfaces"][1];
    assert_eq!(ours["name"], "eth0");
    assert_eq!(ours["sandbox"], netns);
    assert_eq!(ours["mac"], "02:00:00:00:00:05");
    assert!(ours.get("mtu").is_none(), "mtu is 1.1.0's");
    assert_eq!(
        r["ips"][1],
        json!({"address": "10.77.0.5/24", "gateway": "10.77.0.1", "interface": 1})
    );
    assert_eq!(
        r["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.77.0.1"}])
    );
    assert_eq!(r["dns"]["nameservers"], json!(["10.77.0.1"]));

    // 1.1.0: the interface's MTU; a 64-digit container id names the endpoint by its short form.
    let long = "0123456789abcdef".repeat(4);
    let e = engine(vec![]);
    let vars = with(
        &ADD,
        &[
            ("CNI_NETNS", netns),
            ("CNI_ARGS", ""),
            ("CNI_CONTAINERID", &long),
        ],
    );
    let (out, r) = invoke(&vars, &conf(&e.path, json!({})));
    assert_eq!(out.exit, 0, "{}", out.stdout);
    assert_eq!(r["interfaces"][0]["mtu"], 1450);
    assert_eq!(e.request("attach")["name"], "0123456789ab");
}

#[test]
fn add_twice_unknown_network_and_no_engine_are_errors() {
    let Some(ns) = OtherNetns::new("add_twice") else {
        return;
    };
    let netns = ns.path();
    let netns = netns.to_str().unwrap();
    let vars = with(&ADD, &[("CNI_NETNS", netns)]);
    // The same container and interface already attached (on this node): code 101, no attach.
    let e = engine(vec![endpoint(netns)]);
    assert_error(&vars, &conf(&e.path, json!({})), 101, "already has eth0");
    assert_eq!(e.cmds(), ["networks", "endpoints"]);
    // The same container id on another node is another container.
    let mut elsewhere = endpoint("/run/netns/x");
    elsewhere["node"] = json!("n2");
    let e = engine(vec![elsewhere]);
    assert_eq!(invoke(&vars, &conf(&e.path, json!({}))).0.exit, 0);
    // A network the engine does not serve: code 7, naming what it serves.
    let e = engine(vec![]);
    let red = conf(&e.path, json!({"name": "red"}));
    assert_error(&vars, &red, 7, "serves blue");
    assert_eq!(e.cmds(), ["networks"]);
    // No engine: try again later.
    let gone = Path::new("/nonexistent/vxnet.sock");
    assert_error(&vars, &conf(gone, json!({})), 11, "no vxnet engine");
    // The engine refuses (subnet full): its message, code 100.
    let full = FakeEngine::start(Box::new(|req| match req["cmd"].as_str() {
        Some("networks") => ok(json!([blue(None)])),
        Some("endpoints") => ok(json!({"endpoints": []})),
        _ => json!({"status": "error", "message": "network blue: no free address in 10.77.0.0/30"}),
    }));
    assert_error(&vars, &conf(&full.path, json!({})), 100, "no free address");
}

#[test]
fn del_is_idempotent_and_check_compares_with_prev_result() {
    let e = engine(vec![]);
    let del = [
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "eth0"),
    ];
    // No namespace (it is gone): still detached by container and interface.
    let (out, _) = invoke(&del, &conf(&e.path, json!({})));
    assert_eq!((out.exit, out.stdout.as_str()), (0, ""));
    assert_eq!(
        e.request("detach"),
        json!({"cmd": "detach", "network": "blue", "container_id": "c1", "ifname": "eth0"})
    );
    // A network the engine no longer serves has nothing to remove: success.
    let refusing = FakeEngine::start(Box::new(|req| match req["cmd"].as_str() {
        Some("networks") => ok(json!([])),
        _ => json!({"status": "error", "message": "no network blue"}),
    }));
    assert_eq!(invoke(&del, &conf(&refusing.path, json!({}))).0.exit, 0);

    let Some(ns) = OtherNetns::new("check") else {
        return;
    };
    let netns = ns.path();
    let netns = netns.to_str().unwrap();
    let check = with(&ADD, &[("CNI_COMMAND", "CHECK"), ("CNI_NETNS", netns)]);
    assert_error(&check, &conf(&e.path, json!({})), 7, "prevResult");
    let prev = |address: &str| {
        json!({"prevResult": {"cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:05", "sandbox": netns}],
            "ips": [{"address": address, "gateway": "10.77.0.1", "interface": 0}]}})
    };
    let e = engine(vec![endpoint(netns)]);
    let (out, _) = invoke(&check, &conf(&e.path, prev("10.77.0.5/24")));
    assert_eq!((out.exit, out.stdout.as_str()), (0, ""));
    assert_error(
        &check,
        &conf(&e.path, prev("10.77.0.9/24")),
        100,
        "10.77.0.5/24",
    );
    let none = engine(vec![]);
    assert_error(
        &check,
        &conf(&none.path, prev("10.77.0.5/24")),
        3,
        "has no eth0",
    );
}

#[test]
fn status_and_gc() {
    let status = [("CNI_COMMAND", "STATUS")];
    let e = engine(vec![]);
    assert_eq!(invoke(&status, &conf(&e.path, json!({}))).0.exit, 0);
    let gone = Path::new("/nonexistent/vxnet.sock");
    assert_error(&status, &conf(gone, json!({})), 50, "unreachable");
    let degraded = FakeEngine::start(Box::new(|_| {
        ok(json!({"state": "degraded", "reason": "store unreachable"}))
    }));
    assert_error(
        &status,
        &conf(&degraded.path, json!({})),
        51,
        "store unreachable",
    );
    assert_error(
        &status,
        &conf(&e.path, json!({"name": "red"})),
        50,
        "unknown network",
    );

    let gc = [("CNI_COMMAND", "GC")];
    assert_error(&gc, &conf(&e.path, json!({})), 7, "valid-attachments");
    let list = json!({"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]});
    let (out, _) = invoke(&gc, &conf(&e.path, list));
    assert_eq!((out.exit, out.stdout.as_str()), (0, ""));
    assert_eq!(
        e.request("endpoint_gc"),
        json!({"cmd": "endpoint_gc", "network": "blue",
               "valid": [{"container_id": "c1", "ifname": "eth0"}]})
    );
}
