//! vxnet's CNI plugin driven by real clients, on three hosts (network namespaces) running the
//! engines of one cluster with a real etcd: cnitool (the CNI project's own client) against
//! vxnet-cni and against the stock `bridge` plugin as the control, podman (CNI backend, runc)
//! with --network/--name/--network-alias on two hosts and `vxnet attach` on the third, whose
//! containers find each other by name through the resolvers they were given (see
//! `names_across_runtimes`), containerd's `ctr run --cni`, and a crash (engine killed,
//! namespaces gone without DEL) cleaned up by GC. One cluster, one image and one sandbox per
//! podman host are shared by every case: the set-up is the slow part, so it runs once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_lab;
mod names_support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use cluster_lab::{stderr, stdout, ClusterLab, ENGINES, ETCD_HOST};
use names_support::inside::{look_up, Container};
use names_support::{fake_upstream, nettool, unix_now, EtcNetns, Watch};
use serde_json::{json, Value};
use vxnet_tests::containers::{busybox_image, cnitool, Sandbox};
use vxnet_tests::{have_tool, must, run, vxnet_bin, wait_for};

const NET: &str = "blue";
const IMAGE: &str = "localhost/vxnet-busybox:latest";
/// Hosts whose containers podman starts; the others' are attached with `vxnet attach`.
const PODMAN_HOSTS: usize = 2;
/// The two containers of each host: name and alias prefixes (`web0`, alias `www0`, ...).
const PAIRS: [(&str, &str); 2] = [("web", "www"), ("app", "api")];

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
    // The engines forward outside names to a resolver inside the lab.
    let mut etc = EtcNetns::default();
    let _upstream = fake_upstream(&c.lab, ETCD_HOST, 0..ENGINES, &mut etc);
    c.blue_mesh();
    let image = busybox_image(&c.lab.dir.join("image"), IMAGE);
    let sandboxes: Vec<Sandbox> = (0..PODMAN_HOSTS)
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

    // --- podman on hosts 0 and 1, `vxnet attach` on host 2: two containers each, by name. ---
    let mut containers = Vec::new();
    for (i, s) in sandboxes.iter().enumerate() {
        s.podman_load(&image);
        for (name, alias) in PAIRS {
            s.must(&format!(
                "podman run -d --name {name}{i} --network {NET} --network-alias {alias}{i} \
                 {IMAGE} sleep 600"
            ));
            let name = format!("{name}{i}");
            containers.push((i, name.clone(), Container::Podman { sandbox: s, name }));
        }
    }
    for (name, alias) in PAIRS {
        let name = format!("{name}{PODMAN_HOSTS}");
        let netns = c.lab.container(&name);
        etc.expect(&netns);
        c.engine(PODMAN_HOSTS).json(&format!(
            "attach --network {NET} --netns {netns} --name {name} --alias {alias}{PODMAN_HOSTS}"
        ));
        containers.push((PODMAN_HOSTS, name, Container::Attached { netns }));
    }
    // Every host lists every container with its alias (podman adds the short container ID).
    let listed = |i: usize| {
        let eps = endpoints(&c, i);
        containers.iter().all(|(_, name, _)| {
            endpoint_by(&eps, "name", name).is_some_and(|ep| {
                ep["aliases"]
                    .as_array()
                    .is_some_and(|a| a.contains(&json!(alias_of(name))))
            })
        })
    };
    let all = wait_for(Duration::from_secs(5), || (0..ENGINES).all(listed));
    assert!(
        all,
        "not every host lists every container: {:?}",
        endpoints(&c, 2)
    );
    let eps = endpoints(&c, 0);
    let ips: HashMap<String, String> = containers
        .iter()
        .map(|(_, name, _)| {
            (
                name.clone(),
                ip_of(endpoint_by(&eps, "name", name).unwrap()),
            )
        })
        .collect();
    names_across_runtimes(&mut c, &mut etc, &containers, &ips);

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
    let web0 = &ips["web0"];
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

    // --- A crash: host 1's engine killed, its containers' namespaces gone without DEL. ---
    let node1 = c.cluster_info(1).unwrap().node_id;
    drop((containerd, containers));
    let mut sandboxes = sandboxes.into_iter();
    let (s0, s1) = (sandboxes.next().unwrap(), sandboxes.next().unwrap());
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
    // Nor in the store: no record, and no claim but the host's own addresses (blue and red).
    let left = c.store_keys(&format!("node/{node1}/"));
    assert!(
        left.keys().all(|k| k.starts_with("addrs/")
            || k.starts_with("macs/")
            || k.starts_with("cursors/"))
            && left.keys().filter(|k| k.starts_with("addrs/")).count() == 2,
        "{left:?}"
    );

    // --- Host removal: host 2's engine dies with web2 and app2 attached; `cluster rm` frees
    // all. ---
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
    drop((s0, cleanup_ns));
}

/// The alias a container was given: `web0` → `www0`.
fn alias_of(name: &str) -> String {
    let (kind, host) = name.split_at(3);
    let (_, alias) = PAIRS.iter().find(|(n, _)| *n == kind).unwrap();
    format!("{alias}{host}")
}

type Containers<'a> = [(usize, String, Container<'a>)];

/// Names as the containers see them through the resolver their runtime was given: the host's
/// gateway with the network as search domain; every other container by name, alias and
/// NAME.NETWORK, and a ping by each; an outside name forwarded to the engines' resolver; a
/// container of network red NXDOMAIN; PTR answers with the container's name first. Then a
/// container removed with `podman rm -f`, on every host within a second.
fn names_across_runtimes(
    c: &mut ClusterLab,
    etc: &mut EtcNetns,
    containers: &Containers<'_>,
    ips: &HashMap<String, String>,
) {
    c.create("red", "--subnet 10.2.0.0/24");
    let red = wait_for(Duration::from_secs(5), || {
        c.served(PODMAN_HOSTS, "red").is_some()
    });
    assert!(red, "host {PODMAN_HOSTS} does not serve red");
    let secret = c.lab.container("secret");
    etc.expect(&secret);
    c.engine(PODMAN_HOSTS).json(&format!(
        "attach --network red --netns {secret} --name secret"
    ));
    for (host, name, container) in containers {
        let (servers, search) = container.resolver();
        let gateway = c.overlay_ip(*host, NET);
        assert_eq!(servers.first(), Some(&gateway), "{name}: {servers:?}");
        assert!(search.iter().any(|d| d == NET), "{name}: search {search:?}");
        let others: Vec<&String> = containers
            .iter()
            .map(|(_, n, _)| n)
            .filter(|n| *n != name)
            .collect();
        let forms: Vec<(String, &String)> = others
            .iter()
            .flat_map(|o| [o.to_string(), alias_of(o), format!("{o}.{NET}")].map(|f| (f, *o)))
            .collect();
        let pings: Vec<String> = forms.iter().map(|(f, _)| f.clone()).collect();
        let mut queries = pings.clone();
        queries.extend(["www.example.test", "secret", "secret.red"].map(String::from));
        queries.extend(others.iter().map(|o| ips[*o].clone()));
        let answers = look_up(container, &queries, &pings);
        for (form, target) in &forms {
            let l = &answers.lookups[form];
            assert_eq!(
                l.addresses,
                [ips[*target].clone()],
                "{name}: {form}\n{}",
                l.text
            );
            let ping = &answers.pings[form];
            assert!(ping.ok, "{name}: ping {form}\n{}", ping.text);
        }
        let outside = &answers.lookups["www.example.test"];
        assert_eq!(
            outside.addresses,
            ["192.0.2.53"],
            "{name}\n{}",
            outside.text
        );
        for form in ["secret", "secret.red"] {
            let l = &answers.lookups[form];
            assert!(
                l.nxdomain && l.addresses.is_empty(),
                "{name}: {form}\n{}",
                l.text
            );
        }
        for o in &others {
            let l = &answers.lookups[&ips[*o]];
            let first = l.names.first().and_then(|n| n.split('.').next());
            assert_eq!(first, Some(o.as_str()), "{name}: PTR of {o}\n{}", l.text);
        }
    }
    let from_red = look_up(
        &Container::Attached { netns: secret },
        &["web0".into()],
        &[],
    );
    let l = &from_red.lookups["web0"];
    assert!(
        l.nxdomain && l.addresses.is_empty(),
        "red sees web0\n{}",
        l.text
    );
    removed_everywhere(c, containers, ips);
}

/// `podman rm -f` of host 1's app1 (and of host 0's app0 when a load spike spoilt that
/// round): from it returning, NXDOMAIN for its name, alias and NAME.NETWORK and no ARP answer
/// for its address on every host within a second, probed from each host's web container.
fn removed_everywhere(c: &ClusterLab, containers: &Containers<'_>, ips: &HashMap<String, String>) {
    let tool = nettool(&c.lab.dir);
    let observers: Vec<(String, Vec<String>)> = containers
        .iter()
        .filter(|(_, n, _)| n.starts_with("web"))
        .map(|(h, _, container)| (c.overlay_ip(*h, NET), container.enter()))
        .collect();
    let mut worst = Vec::new();
    for gone in ["app1", "app0"] {
        let items = [
            gone.to_string(),
            alias_of(gone),
            format!("{gone}.{NET}"),
            format!("arp/{}", ips[gone]),
        ];
        let mut rm_started = 0.0;
        let mut probe = |mode: &str| -> Vec<HashMap<String, f64>> {
            let watches: Vec<Watch> = observers
                .iter()
                .map(|(gateway, enter)| {
                    let limit = Duration::from_secs(10);
                    Watch::start_in(enter, &tool, gateway, mode, limit, &items)
                })
                .collect();
            if mode == "vanish" {
                // Each probe has asked once before the removal it times.
                std::thread::sleep(Duration::from_millis(500));
                let Some((_, _, Container::Podman { sandbox, .. })) =
                    containers.iter().find(|(_, n, _)| n == gone)
                else {
                    panic!("{gone} is no podman container");
                };
                rm_started = unix_now();
                sandbox.must(&format!("podman rm -f -t 0 {gone}"));
            }
            watches.into_iter().map(Watch::finish).collect()
        };
        // Known everywhere first, its address answered by ARP too.
        for seen in probe("appear") {
            assert_eq!(seen.len(), items.len(), "{gone} before removal: {seen:?}");
        }
        let seen = probe("vanish");
        let removed = unix_now();
        let mut slowest: f64 = f64::MIN;
        for item in &items {
            for when in &seen {
                slowest = slowest.max(when.get(item).map_or(f64::MAX, |t| t - removed));
            }
        }
        println!(
            "podman rm -f {gone}: NXDOMAIN and no ARP answer on every host {slowest:.3} s after \
             it returned ({:.3} s after it started)",
            slowest + removed - rm_started
        );
        worst.push(slowest);
        let unlisted = wait_for(Duration::from_secs(5), || {
            (0..ENGINES).all(|i| endpoint_by(&endpoints(c, i), "name", gone).is_none())
        });
        assert!(unlisted, "{gone} still listed: {:?}", endpoints(c, 0));
        if slowest < 1.0 {
            break;
        }
    }
    assert!(
        worst.iter().any(|w| *w < 1.0),
        "podman rm -f to gone everywhere: {worst:?} s"
    );
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
