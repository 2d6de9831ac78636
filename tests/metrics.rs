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
    let _b = lab.vxnet(
        1,
        "b",
        &format!(
            "--vni 42 --dev vx42 --local {} --remote {} --address 10.1.0.2/24",
            h1.underlay, h0.underlay
        ),
    );
    assert!(h0.ping("10.1.0.2", 3));

    let (status, body) = get(&h0.ns, "127.0.0.1:9109", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        body.contains("# TYPE vxnet_tx_packets_total counter"),
        "{body}"
    );
    let tx = sample(
        &body,
        "vxnet_tx_packets_total{network=\"vni42\",vni=\"42\"}",
    )
    .expect("per-network tx sample");
    let rx = sample(
        &body,
        "vxnet_rx_packets_total{network=\"vni42\",vni=\"42\"}",
    )
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
    ] {
        let series = format!("vxnet_{key}_total{{network=\"vni42\",vni=\"42\"}}");
        let scraped = sample(&body, &series).unwrap_or_else(|| panic!("{series} in {body}"));
        assert!(value >= scraped, "{series}");
    }
    let peer = format!("vxnet_peer_tx_packets_total{{peer=\"{}\"}}", h1.underlay);
    assert!(sample(&body, &peer).unwrap() >= 3, "{body}");
    let stats = a.stats();
    for offload in &stats.offloads {
        let series = format!("vxnet_offload_in_use{{offload=\"{offload}\"}}");
        assert_eq!(sample(&body, &series), Some(1), "{series} in {body}");
    }
    assert_eq!(sample(&body, "vxnet_workers"), Some(stats.workers as u64));
    assert_eq!(
        sample(&body, "vxnet_control_refused_total{reason=\"oversized\"}"),
        Some(stats.control.oversized)
    );

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
