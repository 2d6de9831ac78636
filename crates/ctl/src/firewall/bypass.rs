//! The tunnel-GSO transmit path and the host's outbound rules.
//!
//! An engine on the tunnel-GSO path writes its VXLAN packets into an underlay TAP whose ingress
//! a tc filter redirects straight out of the underlay device: no output or postrouting hook of
//! the IP stack sees them. vxnet's own rules only open the inbound ports, so they are unaffected;
//! but the host's own output/postrouting chains (an egress allow-list, SNAT of the underlay) do
//! not apply to those packets. `vxnet firewall` asks the local engine which path it uses and
//! says so, naming the chains the packets pass by.

use std::path::Path;

use vxnet_dataplane::control::client::request;
use vxnet_dataplane::control::proto::{Request, StatsReport};

use super::nftables::TABLE;
use super::Command;

/// The underlay TAPs ("TAP>DEV") of the engine at `control` when it sends by the tunnel-GSO
/// path; `None` when it does not, or no engine answers there.
pub(super) fn tunnel_devices(control: &Path) -> Option<Vec<String>> {
    let value = request(control, &Request::Stats).ok()?;
    let report: StatsReport = serde_json::from_value(value).ok()?;
    let tunnel = report.tunnel_gso.filter(|t| t.active)?;
    (report.tx_path == "tunnel-gso").then_some(tunnel.devices)
}

/// The host's chains on the output and postrouting hooks of the IP families, as
/// "FAMILY TABLE CHAIN (hook HOOK)", from `nft -j list chains`; vxnet's own table is left out
/// (it hooks input only). `None` when the ruleset cannot be read.
pub(super) fn outbound_chains() -> Option<Vec<String>> {
    let out = Command::new("nft", &["-j", "list", "chains"]).run().ok()?;
    parse_outbound_chains(&out)
}

fn parse_outbound_chains(json: &str) -> Option<Vec<String>> {
    let doc: serde_json::Value = serde_json::from_str(json).ok()?;
    let items = doc.get("nftables")?.as_array()?;
    let chains = items
        .iter()
        .filter_map(|item| item.get("chain"))
        .filter_map(|c| {
            let field = |k: &str| c.get(k).and_then(|v| v.as_str());
            let (family, table, name, hook) = (
                field("family")?,
                field("table")?,
                field("name")?,
                field("hook")?,
            );
            let ip = matches!(family, "ip" | "ip6" | "inet");
            let outbound = matches!(hook, "output" | "postrouting");
            let ours = family == "inet" && table == TABLE;
            (ip && outbound && !ours).then(|| format!("{family} {table} {name} (hook {hook})"))
        })
        .collect();
    Some(chains)
}

/// The note for an engine on the tunnel path (`devices`) given the host's outbound chains
/// (`None`: unknown); nothing when there is no chain its packets pass by.
pub(super) fn note(devices: &[String], chains: Option<&[String]>) -> Option<String> {
    let passed = match chains {
        Some([]) => return None,
        Some(chains) => format!("these chains do not see them: {}", chains.join(", ")),
        None => "the host's output and postrouting chains (if any) do not see them".to_string(),
    };
    Some(format!(
        "note: the local engine sends TCP superframes by the tunnel-GSO path ({}), past the \
         IP stack's output and postrouting hooks; {passed}. Filter them on the underlay \
         device's netdev egress hook, or run the engine with --no-tunnel-gso",
        devices.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_output_and_postrouting_chains_but_not_ours() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"chain": {"family": "inet", "table": "filter", "name": "output", "handle": 1,
                       "type": "filter", "hook": "output", "prio": 0, "policy": "drop"}},
            {"chain": {"family": "ip", "table": "nat", "name": "POSTROUTING", "handle": 2,
                       "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
            {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 3,
                       "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
            {"chain": {"family": "inet", "table": "vxnet", "name": "input", "handle": 4,
                       "type": "filter", "hook": "input", "prio": -1, "policy": "accept"}},
            {"chain": {"family": "netdev", "table": "eg", "name": "out", "handle": 5,
                       "type": "filter", "hook": "egress", "prio": 0, "policy": "accept"}},
            {"chain": {"family": "inet", "table": "filter", "name": "regular", "handle": 6}}]}"#;
        assert_eq!(
            parse_outbound_chains(json).unwrap(),
            [
                "inet filter output (hook output)",
                "ip nat POSTROUTING (hook postrouting)"
            ]
        );
        assert_eq!(
            parse_outbound_chains(r#"{"nftables": [{"metainfo": {}}]}"#).unwrap(),
            Vec::<String>::new()
        );
        assert!(parse_outbound_chains("not json").is_none());
    }

    #[test]
    fn a_note_only_when_some_chain_is_passed_by() {
        let devices = ["vxgso0>eth0".to_string()];
        assert!(note(&devices, Some(&[])).is_none());
        let chains = ["inet filter output (hook output)".to_string()];
        let text = note(&devices, Some(&chains)).unwrap();
        assert!(text.contains("vxgso0>eth0") && text.contains("inet filter output"));
        assert!(text.contains("--no-tunnel-gso") && text.contains("netdev egress"));
        assert!(note(&devices, None).unwrap().contains("if any"));
    }
}
