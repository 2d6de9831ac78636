//! vxnet's CNI plugin driven by real clients, on three hosts (network namespaces) running the
//! engines of one cluster with a real etcd: cnitool (the CNI project's own client) against
//! vxnet-cni and against the stock `bridge` plugin as the control, podman (CNI backend, runc)
//! with --network/--name/--network-alias across hosts, containerd's `ctr run --cni`,
//! `vxnet attach` beside CNI endpoints, and a crash (engine killed, namespaces gone without
//! DEL) cleaned up by GC. One cluster, one image and one sandbox per host are shared by every
//! case: the set-up is the slow part, so it runs once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_lab;

use std::path::Path;
use std::time::Duration;

use cluster_lab::{stderr, stdout, ClusterLab, ENGINES};
use serde_json::{json, Value};
use vxnet_tests::containers::{busybox_image, cnitool, Sandbox};
use vxnet_tests::{have_tool, must, run, vxnet_bin, wait_for};

const NET: &str = "blue";
const IMAGE: &str = "localhost/vxnet-busybox:latest";

/// Every endpoint of `NET` the cluster lists, as seen from host `i`.
fn endpoints(c: &ClusterLab, i: usize) -> Vec<Value> {
    let list = c.engine(i).json(&format!("endpoints --network {NET}"));
    list.get("endpoints")
        .and_then(Value::as_array)
        .or_else(|| list.as_array())
        .cloned()
        .unwrap_or_default()
}

fn endpoint_by<'a>(eps: &'a [Value], key: &str, value: &str) -> Option<&'a Value> {
    eps.iter().find(|e| e[key] == value)
}

fn ip_of(ep: &Value) -> String {
    ep["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

/// cnitool COMMAND NET NETNS against the conflists in `conf_dir` and plugins in `bin_dir`, in
/// host `i`'s namespace; its output (the result for add).
fn cnitool_run(
    c: &ClusterLab,
    i: usize,
    sandbox: &Sandbox,
    cmd: &str,
    net: &str,
    ns: &str,
) -> String {
    c.lab.host(i).must(&format!(
        "NETCONFPATH={} CNI_PATH={}:/usr/lib/cni {} {cmd} {net} /run/netns/{ns}",
        sandbox.cni_conf.display(),
        sandbox.cni_bin.display(),
        cnitool().display()
    ))
}

/// The parts of a result whose shape both plugins share: the keys at the top, of the address
/// entry, and of the interface the address is on, which must be the one in the sandbox.
fn shape(result: &Value, netns: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let ip = &result["ips"][0];
    let iface = &result["interfaces"][ip["interface"].as_u64().unwrap() as usize];
    assert_eq!(
        iface["sandbox"], netns,
        "the address is on the container's interface"
    );
    assert_eq!(iface["name"], "eth0");
    let mut top = keys(result);
    top.retain(|k| k != "dns");
    let mut iface_keys = keys(iface);
    iface_keys.retain(|k| k != "mtu");
    (top, keys(ip), iface_keys)
}

#[test]
fn cni_real_clients_on_a_three_host_cluster() {
    let test = "cni_real_clients";
    let Some(mut c) = ClusterLab::new("cnirt", 4) else {
        return;
    };
    for tool in ["podman", "runc", "containerd", "ctr", "nsenter", "busybox"] {
        if !have_tool(test, tool) {
            return;
        }
    }
    assert!(
        Path::new("/usr/lib/cni/bridge").exists(),
        "containernetworking-plugins"
    );
    c.blue_mesh();
    let image = busybox_image(&c.lab.dir.join("image"), IMAGE);
    let sandboxes: Vec<Sandbox> = (0..ENGINES)
        .map(|i| {
            let s = Sandbox::new(&c.lab.dir.join(format!("sandbox{i}")), &c.lab.host(i).ns);
            s.install_cni(NET, &c.engine(i).control);
            s
        })
        .collect();
    let gateway0 = c.overlay_ip(0, NET);

    // --- cnitool: vxnet-cni and the stock bridge plugin give results of the same shape. ---
    let ns_a = format!("{}ca", c.lab.id);
    let ns_b = format!("{}cb", c.lab.id);
    must(&format!("ip netns add {ns_a} && ip netns add {ns_b}"));
    let cleanup_ns = scopeguard(format!("ip netns del {ns_a}; ip netns del {ns_b}"));
    std::fs::write(
        sandboxes[0].cni_conf.join("20-control.conflist"),
        json!({"cniVersion": "1.0.0", "name": "control", "plugins": [{
            "type": "bridge", "bridge": "cnictl0", "isGateway": true,
            "ipam": {"type": "host-local", "subnet": "10.99.0.0/24",
                     "dataDir": c.lab.dir.join("host-local"),
                     "routes": [{"dst": "0.0.0.0/0"}]}}]})
        .to_string(),
    )
    .unwrap();
    let control: Value =
        serde_json::from_str(&cnitool_run(&c, 0, &sandboxes[0], "add", "control", &ns_b)).unwrap();
    let ours: Value =
        serde_json::from_str(&cnitool_run(&c, 0, &sandboxes[0], "add", NET, &ns_a)).unwrap();
    assert_eq!(ours["cniVersion"], "1.0.0");
    assert_eq!(ours["ips"][0]["gateway"], gateway0.as_str());
    assert_eq!(
        ours["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": gateway0})
    );
    let a_ip = ours["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(a_ip.starts_with("10.1.0."), "{ours}");
    assert_eq!(
        shape(&ours, &format!("/run/netns/{ns_a}")),
        shape(&control, &format!("/run/netns/{ns_b}")),
        "vxnet: {ours}\nbridge: {control}"
    );
    cnitool_run(&c, 0, &sandboxes[0], "check", NET, &ns_a);
    cnitool_run(&c, 0, &sandboxes[0], "check", "control", &ns_b);
    // The container reaches its gateway and the other hosts over the overlay.
    for dst in [gateway0.clone(), c.overlay_ip(1, NET), c.overlay_ip(2, NET)] {
        let ok = wait_for(Duration::from_secs(5), || {
            run(&format!("ip netns exec {ns_a} ping -c1 -W1 {dst}"))
                .status
                .success()
        });
        assert!(ok, "cnitool's container cannot reach {dst}");
    }
    cnitool_run(&c, 0, &sandboxes[0], "del", NET, &ns_a);
    cnitool_run(&c, 0, &sandboxes[0], "del", "control", &ns_b);
    // DEL again (idempotent), and the namespace has no interface left but lo.
    cnitool_run(&c, 0, &sandboxes[0], "del", NET, &ns_a);
    assert!(!must(&format!("ip -n {ns_a} -o link")).contains("eth0"));
    assert!(endpoint_by(&endpoints(&c, 0), "address", &format!("{a_ip}/24")).is_none());
    std::fs::remove_file(sandboxes[0].cni_conf.join("20-control.conflist")).unwrap();

    // --- podman on three hosts: names, aliases, pings across hosts by address. ---
    for (i, s) in sandboxes.iter().enumerate() {
        s.podman_load(&image);
        s.must(&format!(
            "podman run -d --name web{i} --network {NET} --network-alias www{i} {IMAGE} sleep 600"
        ));
    }
    let eps = endpoints(&c, 0);
    let web: Vec<Value> = (0..ENGINES)
        .map(|i| {
            let ep = endpoint_by(&eps, "name", &format!("web{i}"))
                .unwrap_or_else(|| panic!("no endpoint web{i} in {eps:?}"))
                .clone();
            assert!(
                ep["aliases"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(format!("www{i}"))),
                "{ep}"
            );
            ep
        })
        .collect();
    for i in 0..ENGINES {
        let to = ip_of(&web[(i + 1) % ENGINES]);
        let ok = wait_for(Duration::from_secs(10), || {
            sandboxes[i]
                .sh(&format!("podman exec web{i} ping -c1 -W1 {to}"))
                .status
                .success()
        });
        assert!(ok, "web{i} cannot ping {to}");
    }
    // podman rm releases the address and the record, here and in the cluster's view.
    sandboxes[2].must("podman rm -f -t 0 web2");
    let gone = wait_for(Duration::from_secs(5), || {
        (0..ENGINES).all(|i| endpoint_by(&endpoints(&c, i), "name", "web2").is_none())
    });
    assert!(gone, "web2 still listed: {:?}", endpoints(&c, 0));

    // --- containerd: ctr run --cni attaches and, with --rm in the foreground, detaches. ---
    let ctr_dir = c.lab.dir.join("containerd");
    std::fs::create_dir_all(&ctr_dir).unwrap();
    let config = ctr_dir.join("config.toml");
    std::fs::write(
        &config,
        "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
    )
    .unwrap();
    let containerd = sandboxes[1].spawn(
        &ctr_dir.join("containerd.log"),
        &format!("containerd --config {}", config.display()),
    );
    let ctr = "ctr --address /run/containerd/containerd.sock";
    assert!(
        wait_for(Duration::from_secs(10), || sandboxes[1]
            .sh(&format!("{ctr} version"))
            .status
            .success()),
        "containerd did not start"
    );
    sandboxes[1].must(&format!(
        "{ctr} images import --no-unpack=false {}",
        image.display()
    ));
    let web0 = ip_of(&web[0]);
    let out = sandboxes[1].sh(&format!(
        "{ctr} run --cni --rm {IMAGE} ctr1 sh -c 'ip -4 addr show eth0; ping -c1 -W2 {web0}'"
    ));
    assert!(
        out.status.success(),
        "ctr run: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("inet 10.1.0."), "{}", stdout(&out));
    let eps = endpoints(&c, 1);
    assert!(
        !eps.iter().any(|e| e["container_id"] == "ctr1"),
        "ctr1 left its endpoint: {eps:?}"
    );

    // --- vxnet attach on host 2 and CNI endpoints on hosts 0 and 1: all reach all. ---
    let ns_p = format!("{}cp", c.lab.id);
    must(&format!("ip netns add {ns_p}"));
    let _cleanup_p = scopeguard(format!("ip netns del {ns_p}"));
    let plain = c.engine(2).json(&format!(
        "attach --network {NET} --netns {ns_p} --name plain"
    ));
    let plain_ip = ip_of(&plain);
    for (i, peer) in [(0usize, ip_of(&web[1])), (1, web0.clone())] {
        let ok = wait_for(Duration::from_secs(10), || {
            sandboxes[i]
                .sh(&format!("podman exec web{i} ping -c1 -W1 {plain_ip}"))
                .status
                .success()
                && sandboxes[i]
                    .sh(&format!("podman exec web{i} ping -c1 -W1 {peer}"))
                    .status
                    .success()
        });
        assert!(ok, "web{i} cannot reach plain ({plain_ip}) or {peer}");
    }
    for peer in [web0.clone(), ip_of(&web[1])] {
        assert!(
            run(&format!("ip netns exec {ns_p} ping -c1 -W2 {peer}"))
                .status
                .success(),
            "plain cannot reach {peer}"
        );
    }

    // --- A crash: host 1's engine killed, its containers' namespaces gone without DEL. ---
    let node1 = c.cluster_info(1).unwrap().node_id;
    drop(containerd);
    let mut sandboxes = sandboxes.into_iter();
    let (s0, s1, s2) = (
        sandboxes.next().unwrap(),
        sandboxes.next().unwrap(),
        sandboxes.next().unwrap(),
    );
    run(&format!("kill -9 {}", c.engine(1).proc.pid()));
    s1.crash();
    c.start(1, "h1b", "", "");
    // GC from the runtime's side: no attachment of host 1 is valid any more.
    let conf = json!({"cniVersion": "1.1.0", "name": NET, "type": "vxnet-cni",
                      "control": c.engine(1).control, "cni.dev/valid-attachments": []});
    let gc = c.lab.host(1).sh(&format!(
        "echo '{conf}' | CNI_COMMAND=GC CNI_PATH=/usr/lib/cni {}",
        vxnet_bin().with_file_name("vxnet-cni").display()
    ));
    assert!(gc.status.success(), "GC: {}{}", stdout(&gc), stderr(&gc));
    let clean = wait_for(Duration::from_secs(10), || {
        (0..ENGINES).all(|i| !endpoints(&c, i).iter().any(|e| e["node"] == node1.as_str()))
    });
    assert!(
        clean,
        "host 1's endpoints left after GC: {:?}",
        endpoints(&c, 0)
    );
    // Nor in the store: no record, and no claim but the host's own address.
    let left = c.store_keys(&format!("node/{node1}/"));
    assert!(
        left.keys().all(|k| k.starts_with("addrs/")
            || k.starts_with("macs/")
            || k.starts_with("cursors/"))
            && left.keys().filter(|k| k.starts_with("addrs/")).count() == 1,
        "{left:?}"
    );

    // --- Host removal: host 2's engine dies with `plain` attached; `cluster rm` frees all. ---
    let node2 = c.cluster_info(2).unwrap().node_id;
    let mut engine2 = c.engines[2].take().unwrap();
    engine2.proc.child.kill().unwrap();
    engine2.proc.child.wait().unwrap();
    let rm = format!("cluster rm {node2}");
    let removed = wait_for(Duration::from_secs(20), || c.cli(0, &rm).status.success());
    assert!(removed, "cluster rm {node2}: {}", stderr(&c.cli(0, &rm)));
    assert!(c.store_keys(&format!("node/{node2}/")).is_empty());
    let eps = endpoints(&c, 0);
    assert!(
        !eps.iter().any(|e| e["node"] == node2.as_str()),
        "host 2's endpoints listed after its removal: {eps:?}"
    );
    drop((s0, s2, cleanup_ns));
}

/// Runs `cmd` when dropped (namespaces the test made outside the lab).
struct Guard(String);

fn scopeguard(cmd: String) -> Guard {
    Guard(cmd)
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = run(&self.0);
    }
}
