//! Names in static mode, through real resolvers in namespaces: attached endpoints answer by
//! name, alias and NAME.NETWORK, PTR, and `ping NAME` (glibc with the resolv.conf `vxnet attach`
//! wrote); outside names go to the host's resolver, another network's names are NXDOMAIN;
//! `vxnet name add` survives an engine restart; detach takes the name within a second; ARP for
//! a recorded address is answered by the engine and a spoofed reply is not learned; bad queries,
//! a flood and a resolver that never answers leave the service answering everyone else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod names_support;

use std::time::Duration;

use names_support::{
    address_of, addresses, dig, dns_counters, nettool, ns, status, tool_in, unix_now, EtcNetns,
    Watch,
};
use vxnet_tests::{have_tool, wait_for, Bridged, Family, Lab, Vxnet};

/// Two bridged networks, each host with its own pool of each.
const NETWORKS: [Bridged<'static>; 2] = [
    Bridged {
        name: "blue",
        vni: 52,
        address: ["10.52.0.1/24", "10.52.0.2/24"],
        pool: Some(["10.52.0.64/26", "10.52.0.128/26"]),
    },
    Bridged {
        name: "red",
        vni: 53,
        address: ["10.53.0.1/24", "10.53.0.2/24"],
        pool: Some(["10.53.0.64/26", "10.53.0.128/26"]),
    },
];

fn engine(lab: &Lab, i: usize) -> Vxnet {
    lab.bridged_engine(i, &NETWORKS, "")
}

#[test]
fn static_names_resolve_persist_and_refuse_bad_input() {
    let Some(mut lab) = Lab::lan("names_st", 3, Family::V4) else {
        return;
    };
    if !have_tool("names_static", "dig") || !have_tool("names_static", "python3") {
        return;
    }
    let tool = nettool(&lab.dir);
    let mut etc = EtcNetns::default();
    // Host 2 plays the site's resolvers: one that answers example.test, one that never answers.
    let upstream = lab.host(2).underlay.to_string();
    lab.host(2)
        .must("ip addr add 10.0.0.103/24 dev eth0 && sysctl -qw net.ipv6.conf.all.disable_ipv6=1");
    let _answers = lab.spawn(
        2,
        &lab.dir.join("upstream.log"),
        &format!("python3 {} upstream {upstream}", tool.display()),
    );
    let _sink = lab.spawn(
        2,
        &lab.dir.join("sink.log"),
        &format!("python3 {} sink 10.0.0.103", tool.display()),
    );
    etc.resolver(
        &lab.host(0).ns,
        &format!("nameserver {upstream}\noptions timeout:1 attempts:1\n"),
    );
    etc.resolver(
        &lab.host(1).ns,
        "nameserver 10.0.0.103\noptions timeout:1 attempts:1\n",
    );
    let c0 = lab.container("c0");
    let c1 = lab.container("c1");
    let c2 = lab.container("c2");
    let c3 = lab.container("c3");
    for c in [&c0, &c1, &c2, &c3] {
        etc.expect(c);
    }
    let mut a = engine(&lab, 0);
    let b = engine(&lab, 1);

    let web = a.json(&format!(
        "attach --network blue --netns {c0} --name web --alias www"
    ));
    assert_eq!(
        web["dns"],
        serde_json::json!({"nameservers": ["10.52.0.1"], "domain": "blue", "search": ["blue"]}),
        "{web}"
    );
    let resolv = std::fs::read_to_string(format!("/etc/netns/{c0}/resolv.conf")).unwrap();
    assert!(
        resolv.contains("nameserver 10.52.0.1") && resolv.contains("search blue"),
        "{resolv}"
    );
    let api = a.json(&format!("attach --network blue --netns {c1} --name api"));
    let api_ip = address_of(&api);
    let web_ip = address_of(&web);
    let secret = a.json(&format!("attach --network red --netns {c2} --name secret"));
    let secret_ip = address_of(&secret);
    let db = b.json(&format!("attach --network blue --netns {c3} --name db"));
    let db_ip = address_of(&db);
    let db_mac = db["mac"].as_str().unwrap().to_string();

    // Name, alias, NAME.NETWORK, PTR, and a ping by name through glibc's resolver.
    assert_eq!(addresses(&c0, "api"), vec![api_ip.clone()]);
    assert_eq!(addresses(&c0, "api.blue"), vec![api_ip.clone()]);
    assert_eq!(addresses(&c1, "www"), vec![web_ip.clone()]);
    assert_eq!(dig(&c0, &format!("+short -x {api_ip}")).trim(), "api.blue.");
    assert!(
        ns(&c0).sh("ping -c 1 -W 2 api").status.success(),
        "ping api"
    );
    // Outside names go to the host's resolver; another network's names never do.
    assert_eq!(addresses(&c0, "host.example.test"), ["192.0.2.53"]);
    assert_eq!(status(&c0, "secret"), "NXDOMAIN");
    assert_eq!(status(&c0, "secret.red"), "NXDOMAIN");
    assert_eq!(status(&c2, "web"), "NXDOMAIN", "red does not see blue");
    assert_eq!(addresses(&c2, "secret"), vec![secret_ip.clone()]);

    // Static mode has no cluster: host b's endpoint gets a name here by hand, with its MAC
    // so that ARP for it is answered by the engine.
    a.json(&format!(
        "name add --network blue db --address {db_ip} --alias postgres --mac {db_mac}"
    ));
    assert_eq!(addresses(&c0, "postgres"), vec![db_ip.clone()]);
    let before = a.network(52);
    ns(&c0).must(&format!("ip neigh flush all; ping -c 1 -W 2 {db_ip}"));
    let after = a.network(52);
    assert!(
        after.neighbor_answered > before.neighbor_answered,
        "ARP for a recorded address answered by the engine"
    );
    assert_eq!(after.neighbor_flooded, before.neighbor_flooded);
    // A container claiming db's address for its own MAC: dropped, not flooded, not learned.
    let spoofer = ns(&c1)
        .must("cat /sys/class/net/eth0/address")
        .trim()
        .to_string();
    tool_in(&tool, &c1, &format!("arpreply eth0 {db_ip} {spoofer}"));
    assert!(wait_for(Duration::from_secs(3), || a
        .network(52)
        .neighbor_spoofed
        > after.neighbor_spoofed));
    ns(&c0).must(&format!("ip neigh flush all; ping -c 1 -W 2 {db_ip}"));
    let neigh = ns(&c0).must(&format!("ip neigh show {db_ip}"));
    assert!(neigh.contains(&db_mac), "{neigh}");

    // Names added at run time come back after a restart.
    a.proc.terminate(Duration::from_secs(10)).unwrap();
    let a = engine(&lab, 0);
    assert!(
        wait_for(Duration::from_secs(5), || addresses(&c0, "postgres")
            == vec![db_ip.clone()]),
        "added name after restart"
    );
    assert_eq!(
        addresses(&c0, "api"),
        vec![api_ip.clone()],
        "endpoint after restart"
    );
    a.json("name rm --network blue db");
    assert_eq!(status(&c0, "postgres"), "NXDOMAIN");

    // Detach: the name goes at once, and so does the resolver file.
    let watch = Watch::start(
        &tool,
        &c0,
        "10.52.0.1",
        "vanish",
        Duration::from_secs(5),
        &["api".to_string()],
    );
    std::thread::sleep(Duration::from_millis(300));
    let detached = unix_now();
    a.json(&format!("detach --network blue --netns {c1}"));
    let gone = watch.finish();
    let took = gone.get("api").map(|t| t - detached);
    assert!(took.is_some_and(|t| t < 1.0), "api gone after {took:?} s");
    assert!(!std::path::Path::new(&format!("/etc/netns/{c1}/resolv.conf")).exists());

    // Bad input: malformed, 100 questions, a name over 255 bytes; each answered with an error
    // or dropped, and counted.
    let counters = dns_counters(&a);
    let garbage = tool_in(&tool, &c0, "raw 10.52.0.1 00010100000100");
    let mut hundred = String::from("abcd01000064000000000000");
    for _ in 0..100 {
        hundred.push_str("036162630000010001");
    }
    let many = tool_in(&tool, &c0, &format!("raw 10.52.0.1 {hundred}"));
    let mut long = String::from("abce01000001000000000000");
    for _ in 0..5 {
        long.push_str(&format!("3f{}", "61".repeat(63)));
    }
    long.push_str("0000010001");
    let too_long = tool_in(&tool, &c0, &format!("raw 10.52.0.1 {long}"));
    for (what, reply) in [
        ("garbage", &garbage),
        ("100 questions", &many),
        ("long", &too_long),
    ] {
        // Either no reply or FORMERR (rcode 1 in the low nibble of byte 3).
        assert!(
            reply == "none" || reply.get(7..8) == Some("1"),
            "{what}: {reply}"
        );
    }
    let now = dns_counters(&a);
    assert!(now["formerr"] + now["dropped"] >= counters["formerr"] + counters["dropped"] + 3);
    // A flood from one source is cut by the rate limit; another source is still answered.
    let answered: u64 = tool_in(&tool, &c0, "flood 10.52.0.1 3000").parse().unwrap();
    assert!(
        answered < 3000,
        "the flood was not limited: {answered} answered"
    );
    assert!(dns_counters(&a)["rate_limited"] > 0);
    assert_eq!(
        addresses(&c2, "secret"),
        vec![secret_ip.clone()],
        "another source still answered"
    );
    // A resolver that never answers: SERVFAIL within the timeout, local names unaffected.
    let started = std::time::Instant::now();
    assert_eq!(status(&c3, "+time=5 nothing.example.test"), "SERVFAIL");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(dns_counters(&b)["forward_timeouts"] > 0);
    assert_eq!(addresses(&c3, "db"), vec![db_ip.clone()]);
    // More addresses than a 512-byte UDP answer holds: TC set, then the whole answer over TCP.
    let many: Vec<String> = (0..40)
        .map(|i| format!("--address 10.52.0.{}", 150 + i))
        .collect();
    a.json(&format!("name add --network blue many {}", many.join(" ")));
    let udp = dig(&c0, "+noedns +ignore many");
    assert!(udp.contains(" tc"), "{udp}");
    assert_eq!(addresses(&c0, "many").len(), 40);
    drop(a);
    drop(b);
}
