//! `vxnet run --metrics ADDR:PORT`: a Prometheus scrape agrees with `vxnet stats`, unknown paths
//! get 404, and a port in use is one error line with nothing left behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use vxnet_tests::*;

/// One HTTP GET from inside namespace `ns`; returns (status line, body).
fn get(ns: &str, addr: &'static str, path: &'static str) -> (String, String) {
    http_get(ns, addr, path)
}

/// The value of the sample whose name-and-labels part is exactly `series`.
fn sample(body: &str, series: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn scrape_matches_stats_and_bad_port_fails_cleanly() {
    let Some(lab) = Lab::lan("metrics_scrape", 2, Family::V4) else {
        return;
    };
    let (h0, h1) = (lab.host(0), lab.host(1));
    let a = lab.vxnet(
        0,
        "a",
        &format!(
            "--vni 42 --dev vx42 --local {} --remote {} --address 10.1.0.1/24 --metrics 127.0.0.1:9109",
            h0.underlay, h1.underlay
        ),
    );
    let b = lab.vxnet(
        1,
        "b",
        &format!(
            "--vni 42 --dev vx42 --local {} --remote {} --address 10.1.0.2/24",
            h1.underlay, h0.underlay
        ),
    );
    // No IPv6 on the overlay: its neighbour discovery would add stray frames to the counts.
    for h in [h0, h1] {
        h.must("sysctl -qw net.ipv6.conf.vx42.disable_ipv6=1");
    }
    assert!(h0.ping("10.1.0.2", 3));
    same_bytes_on_both_ends(h0, h1, &a, &b);

    let (status, body) = get(&h0.ns, "127.0.0.1:9109", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        body.contains("# TYPE vxnet_tx_frames_total counter"),
        "{body}"
    );
    let tx = sample(&body, "vxnet_tx_frames_total{network=\"vni42\",vni=\"42\"}")
        .expect("per-network tx sample");
    let rx = sample(&body, "vxnet_rx_frames_total{network=\"vni42\",vni=\"42\"}")
        .expect("per-network rx sample");
    assert!(tx >= 3 && rx >= 3, "3 echoes each way at least: {body}");
    // Taken after the scrape, so counters can only have grown.
    let net = a.network(42);
    assert!(net.traffic.tx_packets >= tx);
    for (key, value) in [
        ("gso_batches", net.gso_batches),
        ("gro_batches", net.gro_batches),
        ("tso_segments", net.tso_segments),
        ("coalesced_segments", net.coalesced_segments),
        ("udp_coalesced_datagrams", net.udp_coalesced_datagrams),
    ] {
        let series = format!("vxnet_{key}_total{{network=\"vni42\",vni=\"42\"}}");
        let scraped = sample(&body, &series).unwrap_or_else(|| panic!("{series} in {body}"));
        assert!(value >= scraped, "{series}");
    }
    let peer = format!("vxnet_peer_tx_frames_total{{peer=\"{}\"}}", h1.underlay);
    assert!(sample(&body, &peer).unwrap() >= 3, "{body}");
    let stats = a.stats();
    let networks = String::from_utf8(a.ctl("networks").stdout).unwrap();
    assert!(networks.contains(" plain "), "{networks}");
    let version = format!(
        "vxnet_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&body, &version), Some(1), "{body}");
    // Every counter names its unit.
    for line in body.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut words = line.split_whitespace().skip(2);
        let (name, kind) = (words.next().unwrap(), words.next().unwrap());
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{name}");
            assert!(
                ![
                    "vxnet_drops_total",
                    "vxnet_flooded_total",
                    "vxnet_learned_total"
                ]
                .contains(&name),
                "{name} without a unit"
            );
        }
    }
    // The help says what a byte is.
    assert!(
        body.contains("# HELP vxnet_peer_tx_bytes_total Bytes of the inner Ethernet frames"),
        "{body}"
    );
    for offload in &stats.offloads {
        let series = format!("vxnet_offload_in_use{{offload=\"{offload}\"}}");
        assert_eq!(sample(&body, &series), Some(1), "{series} in {body}");
    }
    assert_eq!(sample(&body, "vxnet_workers"), Some(stats.workers as u64));
    // Counted by worker_gone; always exported, so an alert finds it on every engine.
    assert_eq!(
        sample(&body, "vxnet_worker_restarts_total"),
        Some(stats.worker_restarts)
    );
    // The transmit path: tunnel GSO is the default where the probe succeeds (it does on a veth).
    assert_eq!(stats.tx_path, "tunnel-gso", "{}", a.proc.log_text());
    assert_eq!(
        sample(&body, "vxnet_tx_path_info{path=\"tunnel-gso\"}"),
        Some(1),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "vxnet_control_refused_connections_total{reason=\"oversized\"}"
        ),
        Some(stats.control.oversized)
    );

    dashboard_queries_name_exported_metrics(&body);

    let (status, _) = get(&h0.ns, "127.0.0.1:9109", "/other");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // The port is taken by engine a: a second engine fails with one line and leaves no TAP.
    let out = h0.sh(&format!(
        "{} run --vni 43 --dev vx43 --local {} --port 4790 --control {} --metrics 127.0.0.1:9109",
        vxnet_bin().display(),
        h0.underlay,
        lab.dir.join("c.sock").display()
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("127.0.0.1:9109"), "{stderr}");
    assert!(
        !h0.sh("ip link show vx43").status.success(),
        "TAP left behind"
    );
    assert!(
        !lab.dir.join("c.sock").exists(),
        "control socket left behind"
    );
}

/// One definition of bytes: ten 1000-byte pings add the same inner-frame bytes (14 + 20 + 8 +
/// 1000 = 1042 each way per echo) to the sender's network and peer transmit counters and the
/// receiver's network and peer receive counters, with neither the VXLAN header nor anything
/// else on top.
fn same_bytes_on_both_ends(h0: &Host, h1: &Host, a: &Vxnet, b: &Vxnet) {
    let snapshot = || {
        (
            a.network(42).traffic,
            a.peer(h1.underlay),
            b.network(42).traffic,
            b.peer(h0.underlay),
        )
    };
    let before = snapshot();
    let out = h0.sh("ping -c 10 -i 0.05 -W 2 -s 1000 -q 10.1.0.2");
    assert!(out.status.success(), "{out:?}");
    // Let the last reply land before reading.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let after = snapshot();
    let frame = 1042;
    let sent = after.0.tx_bytes - before.0.tx_bytes;
    assert!(
        sent >= 10 * frame && sent < 10 * frame + 200,
        "a's network sent {sent} bytes for 10 frames of {frame}"
    );
    assert_eq!(
        after.1.tx_bytes - before.1.tx_bytes,
        sent,
        "a's peer counter"
    );
    assert_eq!(
        after.2.rx_bytes - before.2.rx_bytes,
        sent,
        "b's network counter"
    );
    assert_eq!(
        after.3.rx_bytes - before.3.rx_bytes,
        sent,
        "b's peer counter"
    );
    let echoed = after.2.tx_bytes - before.2.tx_bytes;
    assert_eq!(after.0.rx_bytes - before.0.rx_bytes, echoed, "a received");
    assert_eq!(after.1.rx_bytes - before.1.rx_bytes, echoed, "a's peer rx");
    assert_eq!(after.3.tx_bytes - before.3.tx_bytes, echoed, "b's peer tx");
}

/// Every query of the Grafana dashboard in `contrib/` (panels and variables) names only metric
/// families this engine declares, so no panel stays empty for a misspelt or renamed metric.
fn dashboard_queries_name_exported_metrics(body: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana/vxnet.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");
    let mut named = 0;
    for query in &queries {
        let words = query.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        for metric in words.filter(|w| w.starts_with("vxnet_")) {
            named += 1;
            assert!(
                body.contains(&format!("# TYPE {metric} ")),
                "the dashboard queries {metric}, which the engine does not export ({query})"
            );
        }
    }
    assert!(named >= queries.len(), "{queries:?}");
}

/// The `expr` of every target and the `query` of every variable, anywhere in the document.
fn collect_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v.as_str()) {
                    ("expr", Some(q)) => out.push(q.to_owned()),
                    ("query", Some(q)) if q.contains("vxnet_") => out.push(q.to_owned()),
                    _ => collect_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

/// An engine in a namespace whose `/sys` was not remounted (`nsenter`, or the engines `vxnet
/// demo` and `bench` run on a thread) reads its TAP's `tx_dropped` in its own namespace: the
/// sysfs it sees is the host's, which has no such TAP (the count read 0).
#[test]
fn tap_queue_drops_are_read_in_the_engines_namespace() {
    let Some(lab) = Lab::lan("tap_drops", 2, Family::V4) else {
        return;
    };
    let (h0, h1) = (lab.host(0).clone(), lab.host(1).clone());
    let engine = Vxnet::launch(
        &["nsenter", &format!("--net=/run/netns/{}", h0.ns), "--"],
        lab.dir.join("e0.sock"),
        lab.dir.join("e0.log"),
        &format!(
            "--vni 42 --dev vx42 --local {} --remote {} --address 10.1.0.1/24",
            h0.underlay, h1.underlay
        ),
    );
    assert_eq!(engine.network(42).tap_queue_drops, 0);

    // The engine stopped, datagrams to an overlay neighbour fill the TAP's queue; the rest are
    // the TAP's tx_dropped.
    h0.must("ip neigh replace 10.1.0.99 lladdr 02:00:00:00:00:99 dev vx42 nud permanent");
    must(&format!("kill -STOP {}", engine.proc.pid()));
    in_netns(&h0.ns, || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..20_000 {
            let _ = socket.send_to(&[0u8; 100], "10.1.0.99:9");
        }
    })
    .join()
    .unwrap();
    must(&format!("kill -CONT {}", engine.proc.pid()));
    // `ip netns exec` remounts /sys: this is the namespace's own count.
    let dropped: u64 = h0
        .must("cat /sys/class/net/vx42/statistics/tx_dropped")
        .trim()
        .parse()
        .unwrap();
    assert!(dropped > 1000, "only {dropped} frames dropped by the TAP");
    assert_eq!(engine.network(42).tap_queue_drops, dropped);
}
