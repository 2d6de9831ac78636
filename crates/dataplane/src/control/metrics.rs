//! `vxnet run --metrics ADDR:PORT`: the engine's counters in the Prometheus text format
//! (version 0.0.4), served over plain HTTP at `/metrics` for a scraper.
//!
//! The exposition is rendered from the same snapshot `vxnet stats` uses, so the two never
//! disagree. The HTTP side is deliberately tiny (one GET per connection, then close): a scrape
//! endpoint needs nothing more, and it keeps a web framework off the engine.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::server::stats;
use crate::state::EngineState;

/// Packets and frames dropped, by reason.
const DROPS: &str = "vxnet_dropped_packets_total";

/// Longest request head accepted; a scraper's GET is a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8192;
/// A client that does not finish its request in this time is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Escapes a label value (Prometheus text format: backslash, double quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes a `# HELP`/`# TYPE` header once per metric family.
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", label(val));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// The whole exposition for the engine as it is now.
pub(crate) fn render(state: &EngineState) -> String {
    let report = stats(state);
    let forwarder = state.forwarder();
    let mut out = Exposition {
        text: String::new(),
    };
    out.family(
        "vxnet_build_info",
        "gauge",
        "Always 1; the version of the running engine in its label.",
    );
    out.sample(
        "vxnet_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    let networks: Vec<(String, String, &crate::control::proto::NetworkStats)> = report
        .networks
        .iter()
        .map(|n| (n.name.clone(), n.vni.to_string(), n))
        .collect();

    type Field = fn(&crate::control::proto::NetworkStats) -> u64;
    let per_network: [(&str, &str, &str, Field); 30] = [
        (
            "vxnet_rx_frames_total",
            "counter",
            "Inner Ethernet frames received from peers and delivered to the TAP.",
            |n| n.traffic.rx_packets,
        ),
        (
            "vxnet_rx_bytes_total",
            "counter",
            "Bytes of the inner Ethernet frames received and delivered to the TAP (no outer, VXLAN or ESP header).",
            |n| n.traffic.rx_bytes,
        ),
        (
            "vxnet_tx_frames_total",
            "counter",
            "Inner Ethernet frames sent to peers (each flood copy counts).",
            |n| n.traffic.tx_packets,
        ),
        (
            "vxnet_tx_bytes_total",
            "counter",
            "Bytes of the inner Ethernet frames sent to peers (no outer, VXLAN or ESP header; each flood copy counts).",
            |n| n.traffic.tx_bytes,
        ),
        (
            "vxnet_flooded_frames_total",
            "counter",
            "Frames replicated to every flood peer (broadcast, multicast, unknown unicast).",
            |n| n.flooded,
        ),
        (
            "vxnet_learned_macs_total",
            "counter",
            "MAC addresses learned from received traffic.",
            |n| n.learned,
        ),
        (
            "vxnet_moved_macs_total",
            "counter",
            "Learned MAC addresses that moved to another VTEP.",
            |n| n.moved,
        ),
        (
            "vxnet_fdb_full_macs_total",
            "counter",
            "MACs not learned because the FDB was at its limit.",
            |n| n.fdb_full,
        ),
        (
            "vxnet_fdb_entries",
            "gauge",
            "Entries in the forwarding database (static and learned).",
            |n| n.fdb_entries as u64,
        ),
        (
            "vxnet_tso_superframes_total",
            "counter",
            "TCP superframes from the TAP segmented at the inner MSS.",
            |n| n.tso_superframes,
        ),
        (
            "vxnet_tso_segments_total",
            "counter",
            "Segments cut from TCP superframes.",
            |n| n.tso_segments,
        ),
        (
            "vxnet_uso_superframes_total",
            "counter",
            "UDP superframes from the TAP split into datagrams.",
            |n| n.uso_superframes,
        ),
        (
            "vxnet_uso_segments_total",
            "counter",
            "Datagrams cut from UDP superframes.",
            |n| n.uso_segments,
        ),
        (
            "vxnet_gso_batches_total",
            "counter",
            "UDP_SEGMENT sends (several VXLAN datagrams in one send).",
            |n| n.gso_batches,
        ),
        (
            "vxnet_gro_batches_total",
            "counter",
            "UDP GRO reads that delivered several VXLAN datagrams at once.",
            |n| n.gro_batches,
        ),
        (
            "vxnet_coalesced_superframes_total",
            "counter",
            "Superframes written to the TAP from coalesced inner TCP segments.",
            |n| n.coalesced_superframes,
        ),
        (
            "vxnet_coalesced_segments_total",
            "counter",
            "Inner TCP segments merged into superframes.",
            |n| n.coalesced_segments,
        ),
        (
            "vxnet_udp_coalesced_superframes_total",
            "counter",
            "Superframes written to the TAP from coalesced inner UDP datagrams.",
            |n| n.udp_coalesced_superframes,
        ),
        (
            "vxnet_udp_coalesced_datagrams_total",
            "counter",
            "Inner UDP datagrams merged into superframes.",
            |n| n.udp_coalesced_datagrams,
        ),
        (
            "vxnet_partial_checksum_frames_total",
            "counter",
            "Inner checksums a kernel VTEP on this machine left partial, completed by vxnet.",
            |n| n.partial_checksums,
        ),
        (
            "vxnet_tap_refused_short_tail_total",
            "counter",
            "Superframes with a short last segment the TAP refused, written again segment by segment.",
            |n| n.tap_refused_short_tail,
        ),
        (
            "vxnet_tap_refused_gso_total",
            "counter",
            "Superframes of equal segments the TAP refused, written again segment by segment.",
            |n| n.tap_refused_gso,
        ),
        (
            "vxnet_tunnel_superframes_total",
            "counter",
            "Datagrams from a kernel VTEP on this machine carrying a whole inner superframe (UDP-tunnel GSO), written to the TAP unsplit.",
            |n| n.tunnel_superframes,
        ),
        (
            "vxnet_tunnel_segments_total",
            "counter",
            "Segments those tunnel superframes stand for.",
            |n| n.tunnel_segments,
        ),
        (
            "vxnet_tap_queue_dropped_frames_total",
            "counter",
            "Frames the kernel dropped in front of the engine because the TAP's queue towards it was full (the device's tx_dropped).",
            |n| n.tap_queue_drops,
        ),
        (
            "vxnet_too_big_reply_packets_total",
            "counter",
            "ICMP frag-needed / packet-too-big replies written into the TAP for frames larger than the path to their VTEP.",
            |n| n.too_big_replies,
        ),
        (
            "vxnet_neighbor_answered_frames_total",
            "counter",
            "ARP requests and IPv6 neighbour solicitations from the TAP for addresses in the neighbour table, not flooded: answered from the table, or, for an endpoint on this host, left to it on the bridge.",
            |n| n.neighbor_answered,
        ),
        (
            "vxnet_neighbor_flooded_frames_total",
            "counter",
            "ARP requests and neighbour solicitations for addresses not in the neighbour table, flooded.",
            |n| n.neighbor_flooded,
        ),
        (
            "vxnet_neighbor_spoofed_frames_total",
            "counter",
            "ARP replies and neighbour advertisements from the TAP claiming a recorded address for another MAC, dropped.",
            |n| n.neighbor_spoofed,
        ),
        (
            "vxnet_neighbor_entries",
            "gauge",
            "Addresses in the neighbour table (endpoints and hosts of the network's records).",
            |n| n.neighbor_entries as u64,
        ),
    ];

    for (name, kind, help, field) in per_network {
        out.family(name, kind, help);
        for (net, vni, n) in &networks {
            out.sample(name, &[("network", net), ("vni", vni)], field(n));
        }
    }

    type EspField = fn(&crate::crypto::EspSnapshot) -> u64;
    let per_encrypted: [(&str, &str, &str, EspField); 6] = [
        (
            "vxnet_esp_encrypted_packets_total",
            "counter",
            "Packets sealed as ESP-in-UDP (AES-256-GCM) and sent (encrypted networks).",
            |e| e.encrypted,
        ),
        (
            "vxnet_esp_decrypted_packets_total",
            "counter",
            "ESP packets that authenticated and were decrypted.",
            |e| e.decrypted,
        ),
        (
            "vxnet_esp_sas_established_total",
            "counter",
            "Inbound SAs learnt from their first authenticated packet.",
            |e| e.sas_established,
        ),
        (
            "vxnet_esp_endpoint_changes_total",
            "counter",
            "Peer endpoints moved by authenticated packets (NAT rebinding, roaming).",
            |e| e.endpoint_changes,
        ),
        ("vxnet_esp_inbound_sas", "gauge", "Inbound SAs held.", |e| {
            e.inbound_sas as u64
        }),
        (
            "vxnet_esp_outbound_sas",
            "gauge",
            "Outbound SAs of the running workers.",
            |e| e.outbound_sas as u64,
        ),
    ];
    for (name, kind, help, field) in per_encrypted {
        out.family(name, kind, help);
        for (net, vni, n) in &networks {
            if let Some(esp) = &n.esp {
                out.sample(name, &[("network", net), ("vni", vni)], field(esp));
            }
        }
    }

    out.family(
        DROPS,
        "counter",
        "Datagrams from peers and frames from the TAP dropped, by network and reason (network \"\" = before a network was known).",
    );
    for (net, vni, n) in &networks {
        for (reason, count) in &n.drops {
            out.sample(
                DROPS,
                &[("network", net), ("vni", vni), ("reason", reason.name())],
                *count,
            );
        }
    }
    for (reason, count) in &report.drops {
        out.sample(
            DROPS,
            &[("network", ""), ("vni", ""), ("reason", reason.name())],
            *count,
        );
    }

    let peers = forwarder.peers.snapshot();
    type PeerField = fn(&crate::counters::TrafficSnapshot) -> u64;
    let per_peer: [(&str, &str, PeerField); 4] = [
        (
            "vxnet_peer_rx_frames_total",
            "Inner Ethernet frames received from the peer VTEP.",
            |t| t.rx_packets,
        ),
        (
            "vxnet_peer_rx_bytes_total",
            "Bytes of the inner Ethernet frames received from the peer VTEP (no outer, VXLAN or ESP header).",
            |t| t.rx_bytes,
        ),
        (
            "vxnet_peer_tx_frames_total",
            "Inner Ethernet frames sent to the peer VTEP.",
            |t| t.tx_packets,
        ),
        (
            "vxnet_peer_tx_bytes_total",
            "Bytes of the inner Ethernet frames sent to the peer VTEP (no outer, VXLAN or ESP header).",
            |t| t.tx_bytes,
        ),
    ];
    for (name, help, field) in per_peer {
        out.family(name, "counter", help);
        for (address, traffic) in &peers {
            out.sample(name, &[("peer", &address.to_string())], field(traffic));
        }
    }

    out.family(
        "vxnet_control_refused_connections_total",
        "counter",
        "Control-socket connections refused or cut short, by reason.",
    );
    let control = &report.control;
    for (reason, count) in [
        ("permission", control.refused),
        ("oversized", control.oversized),
        ("timeout", control.timed_out),
        ("evicted", control.evicted),
        ("accept_error", control.accept_errors),
    ] {
        out.sample(
            "vxnet_control_refused_connections_total",
            &[("reason", reason)],
            count,
        );
    }
    out.family("vxnet_workers", "gauge", "Forwarding threads.");
    out.sample("vxnet_workers", &[], report.workers as u64);
    out.family(
        "vxnet_worker_restarts_total",
        "counter",
        "Times the workers were started again because one was gone without being asked to stop (its thread ended by the kernel, or an error).",
    );
    out.sample("vxnet_worker_restarts_total", &[], report.worker_restarts);
    out.family(
        "vxnet_offload_in_use",
        "gauge",
        "Offloads the kernel accepted and the engine uses (1 per offload).",
    );
    for offload in &report.offloads {
        out.sample("vxnet_offload_in_use", &[("offload", offload.name())], 1);
    }
    out.family(
        "vxnet_tx_path_info",
        "gauge",
        "The transmit path of TCP superframes (1 for the one in use): tunnel-gso or socket.",
    );
    out.sample(
        "vxnet_tx_path_info",
        &[("path", report.tx_path.as_str())],
        1,
    );
    if let Some(t) = &report.tunnel_gso {
        for (name, help, value) in [
            (
                "vxnet_tunnel_gso_superframes_total",
                "TCP superframes sent whole through an underlay TAP.",
                t.superframes,
            ),
            (
                "vxnet_tunnel_gso_segments_total",
                "Segments those superframes stand for (made by the kernel or the NIC).",
                t.segments,
            ),
            (
                "vxnet_tunnel_gso_bytes_total",
                "Inner Ethernet frame bytes sent through the tunnel-GSO path.",
                t.bytes,
            ),
            (
                "vxnet_tunnel_gso_fallbacks_total",
                "Superframes sent by the socket path instead (no path to the VTEP, too big, neighbour check).",
                t.fallbacks,
            ),
            (
                "vxnet_tunnel_gso_refused_total",
                "Underlay TAP writes the kernel refused.",
                t.refused,
            ),
            (
                "vxnet_tunnel_gso_path_changes_total",
                "Times a VTEP's underlay device, next hop or path changed.",
                t.path_changes,
            ),
            (
                "vxnet_tunnel_gso_redirects_restored_total",
                "Underlay TAP redirects found removed and put back.",
                t.redirects_restored,
            ),
        ] {
            out.family(name, "counter", help);
            out.sample(name, &[], value);
        }
    }
    if let Some(ports) = &report.source_ports {
        let range = [("range", ports.info.range.as_str())];
        let c = &ports.counters;
        for (name, kind, help, value) in [
            (
                "vxnet_source_port_sockets",
                "gauge",
                "Source-port sockets open (one per port in use).",
                c.open,
            ),
            (
                "vxnet_source_port_sockets_max",
                "gauge",
                "Most source-port sockets open at once (the file-descriptor budget).",
                ports.info.max_open as u64,
            ),
            (
                "vxnet_source_port_sockets_bound_total",
                "counter",
                "Source-port sockets bound.",
                c.bound,
            ),
            (
                "vxnet_source_port_sockets_evicted_total",
                "counter",
                "Source-port sockets closed to stay within the budget.",
                c.evicted,
            ),
            (
                "vxnet_source_port_sockets_idle_closed_total",
                "counter",
                "Source-port sockets closed after no flow used them for a while.",
                c.idle_closed,
            ),
            (
                "vxnet_source_port_busy_total",
                "counter",
                "Hashed source ports held by another program (the flow used a nearby port).",
                c.port_busy,
            ),
        ] {
            out.family(name, kind, help);
            out.sample(name, &range, value);
        }
    }
    // The families are always declared (a static engine has no samples for them), so a
    // dashboard's store-health panels find their metrics on every engine.
    out.family(
        "vxnet_cluster_store_healthy",
        "gauge",
        "1 while the cluster store is reachable; 0 while forwarding on the last known state.",
    );
    if let Some(cluster) = &report.cluster {
        out.sample(
            "vxnet_cluster_store_healthy",
            &[("cluster", &cluster.cluster_id), ("node", &cluster.node_id)],
            u64::from(cluster.store_healthy),
        );
    }
    out.family(
        "vxnet_cluster_members_alive",
        "gauge",
        "Cluster members registered under a live lease.",
    );
    if let Some(cluster) = &report.cluster {
        out.sample(
            "vxnet_cluster_members_alive",
            &[("cluster", &cluster.cluster_id)],
            cluster.members_alive as u64,
        );
    }
    out.text
}

/// The response to one request head: status line, content type and body.
pub(crate) fn respond(head: &str, state: &EngineState) -> (&'static str, &'static str, String) {
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(state),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "vxnet serves /metrics only\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET /metrics\n".to_string(),
        ),
    }
}

/// Serves scrapes until the runtime stops.
pub(crate) async fn serve(listener: TcpListener, state: Arc<EngineState>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, Arc::clone(&state)));
            }
            Err(e) => {
                tracing::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, state: Arc<EngineState>) {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let (status, content_type, body) = respond(&String::from_utf8_lossy(&head), &state);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn samples_carry_labels_in_order() {
        let mut out = Exposition {
            text: String::new(),
        };
        out.family("m", "counter", "help");
        out.sample("m", &[("network", "web"), ("vni", "42")], 7);
        out.sample("m", &[], 1);
        assert_eq!(
            out.text,
            "# HELP m help\n# TYPE m counter\nm{network=\"web\",vni=\"42\"} 7\nm 1\n"
        );
    }
}
