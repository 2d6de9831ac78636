//! nftables backend: everything lives in vxnet's own `inet vxnet` table, so it never edits rules
//! it does not own and `remove` is just deleting the table. The input chain is hooked at
//! priority `filter - 1` so it runs before the usual `filter` chains: member addresses are
//! accepted there, and VXLAN from anyone else is dropped. (An accept in one base chain does not
//! bypass drops in other tables; this table guarantees "members only", not "open through
//! everything".)

use std::net::IpAddr;

use super::{Command, Error, Result};

pub const TABLE: &str = "vxnet";

fn elements(peers: &[IpAddr], v4: bool) -> String {
    let list: Vec<String> = peers
        .iter()
        .filter(|p| p.is_ipv4() == v4)
        .map(ToString::to_string)
        .collect();
    if list.is_empty() {
        String::new()
    } else {
        format!("\n\t\telements = {{ {} }}", list.join(", "))
    }
}

/// The `udp dport` match for `ports`: one port, or an anonymous set of them.
fn dport(ports: &[u16]) -> String {
    match ports {
        [port] => port.to_string(),
        _ => {
            let list: Vec<String> = ports.iter().map(ToString::to_string).collect();
            format!("{{ {} }}", list.join(", "))
        }
    }
}

/// The whole ruleset script. `table …; delete table …` first makes it idempotent: the table is
/// created if missing, then replaced atomically in one nft transaction. `ports`: the VXLAN port,
/// and the ESP-in-UDP port when a network is encrypted.
pub fn ruleset(ports: &[u16], peers: &[IpAddr]) -> String {
    let port = dport(ports);
    format!(
        "table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
\tset peers4 {{
\t\ttype ipv4_addr{v4}
\t}}
\tset peers6 {{
\t\ttype ipv6_addr{v6}
\t}}
\tchain input {{
\t\ttype filter hook input priority filter - 1; policy accept;
\t\tudp dport {port} ip saddr @peers4 accept
\t\tudp dport {port} ip6 saddr @peers6 accept
\t\tudp dport {port} counter drop
\t}}
}}
",
        v4 = elements(peers, true),
        v6 = elements(peers, false),
    )
}

pub fn apply_cmd(ports: &[u16], peers: &[IpAddr]) -> Command {
    Command {
        stdin: Some(ruleset(ports, peers)),
        ..Command::new("nft", &["-f", "-"])
    }
}

/// Deletes the table; creating it first makes removal succeed when nothing was applied.
pub fn remove_cmd() -> Command {
    Command {
        stdin: Some(format!("table inet {TABLE}\ndelete table inet {TABLE}\n")),
        ..Command::new("nft", &["-f", "-"])
    }
}

/// Replaces the elements of both sets in one nft transaction, leaving the table, its chain and
/// its counters as they are. A table that is missing (or lacks a set) fails the whole script, so
/// nothing half-applied is left behind.
pub fn set_peers_script(peers: &[IpAddr]) -> String {
    let mut script = String::new();
    for (set, v4) in [("peers4", true), ("peers6", false)] {
        script.push_str(&format!("flush set inet {TABLE} {set}\n"));
        let list: Vec<String> = peers
            .iter()
            .filter(|p| p.is_ipv4() == v4)
            .map(ToString::to_string)
            .collect();
        // `add element … { }` is a syntax error: an empty set is just the flush.
        if !list.is_empty() {
            script.push_str(&format!(
                "add element inet {TABLE} {set} {{ {} }}\n",
                list.join(", ")
            ));
        }
    }
    script
}

pub fn set_peers_cmd(peers: &[IpAddr]) -> Command {
    Command {
        stdin: Some(set_peers_script(peers)),
        ..Command::new("nft", &["-f", "-"])
    }
}

/// `-t` (terse) leaves out set elements: only whether the table exists matters.
pub fn probe_cmd() -> Command {
    Command::new("nft", &["-t", "list", "table", "inet", TABLE])
}

/// Whether an nft error means "no such table" (or no nft at all), rather than a real failure.
pub fn is_absent(e: &Error) -> bool {
    match e {
        Error::Failed { stderr, .. } => stderr.contains("No such file"),
        Error::Spawn { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// Whether vxnet's table is on this host (someone applied the nftables firewall).
pub fn present() -> Result<bool> {
    match probe_cmd().run() {
        Ok(_) => Ok(true),
        Err(e) if is_absent(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Member addresses in the applied table and the UDP ports it opens to them; nothing when there
/// is no table.
pub fn list() -> Result<(Vec<IpAddr>, Vec<u16>)> {
    match Command::new("nft", &["-j", "list", "table", "inet", TABLE]).run() {
        Ok(out) => Ok((parse_json(&out)?, parse_ports(&out)?)),
        Err(Error::Failed { stderr, .. }) if stderr.contains("No such file") => {
            Ok((Vec::new(), Vec::new()))
        }
        Err(e) => Err(e),
    }
}

/// The UDP destination ports of the table's accept rules, from `nft -j list table` output:
/// `"right": 4789` or `"right": {"set": [4500, 4789]}`.
pub fn parse_ports(out: &str) -> Result<Vec<u16>> {
    let doc: serde_json::Value = serde_json::from_str(out).map_err(|e| Error::Parse {
        what: "nft -j output".into(),
        detail: e.to_string(),
    })?;
    let mut ports = Vec::new();
    let rules = doc
        .get("nftables")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("rule"))
        .filter(|r| r.get("table").and_then(|t| t.as_str()) == Some(TABLE));
    for rule in rules {
        let matches = rule
            .get("expr")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("match"));
        for m in matches {
            let field = m.pointer("/left/payload/field").and_then(|f| f.as_str());
            if field != Some("dport") {
                continue;
            }
            let right = m.get("right");
            let values = match right.and_then(|r| r.get("set")) {
                Some(set) => set.as_array().cloned().unwrap_or_default(),
                None => right.cloned().into_iter().collect(),
            };
            ports.extend(
                values
                    .iter()
                    .filter_map(|v| v.as_u64())
                    .filter_map(|v| u16::try_from(v).ok()),
            );
        }
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// Extracts the elements of `peers4`/`peers6` from `nft -j list table` output.
pub fn parse_json(out: &str) -> Result<Vec<IpAddr>> {
    let bad = |detail: String| Error::Parse {
        what: "nft -j output".into(),
        detail,
    };
    let doc: serde_json::Value = serde_json::from_str(out).map_err(|e| bad(e.to_string()))?;
    let items = doc
        .get("nftables")
        .and_then(|v| v.as_array())
        .ok_or_else(|| bad("no nftables array".into()))?;
    let mut peers = Vec::new();
    for set in items.iter().filter_map(|i| i.get("set")) {
        let ours = set.get("table").and_then(|t| t.as_str()) == Some(TABLE)
            && matches!(
                set.get("name").and_then(|n| n.as_str()),
                Some("peers4" | "peers6")
            );
        if !ours {
            continue;
        }
        for e in set
            .get("elem")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(ip) = e.as_str().and_then(|s| s.parse().ok()) {
                peers.push(ip);
            }
        }
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_lists_only_peers() {
        let peers: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        let r = ruleset(&[4789], &peers);
        assert!(r.contains("elements = { 10.0.0.2 }"));
        assert!(r.contains("elements = { fd00::2 }"));
        assert!(r.contains("udp dport 4789 ip saddr @peers4 accept"));
        assert!(r.contains("priority filter - 1"));
        assert!(!ruleset(&[4789], &[]).contains("elements"));
        let both = ruleset(&[4789, 4500], &peers);
        assert!(both.contains("udp dport { 4789, 4500 } ip saddr @peers4 accept"));
    }

    #[test]
    fn set_peers_script_flushes_and_refills_both_sets() {
        let peers: Vec<IpAddr> = vec![
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
            "fd00::2".parse().unwrap(),
        ];
        assert_eq!(
            set_peers_script(&peers),
            "flush set inet vxnet peers4\n\
             add element inet vxnet peers4 { 10.0.0.2, 10.0.0.3 }\n\
             flush set inet vxnet peers6\n\
             add element inet vxnet peers6 { fd00::2 }\n"
        );
        // No members of a family: that set is emptied, never given an empty element list.
        let v4: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap()];
        let s = set_peers_script(&v4);
        assert!(s.contains("flush set inet vxnet peers6\n"), "{s}");
        assert!(!s.contains("peers6 {"), "{s}");
        assert_eq!(
            set_peers_script(&[]),
            "flush set inet vxnet peers4\nflush set inet vxnet peers6\n"
        );
        // Only the sets: the table (and its counters) is never deleted or re-created.
        assert!(!s.contains("table") && !s.contains("delete"), "{s}");
        let cmd = set_peers_cmd(&v4);
        assert_eq!(cmd.line(), "nft -f -");
        assert_eq!(cmd.stdin.as_deref(), Some(s.as_str()));
    }

    #[test]
    fn absence_is_told_from_failure() {
        let failed = |stderr: &str| Error::Failed {
            cmd: probe_cmd().line(),
            status: "exit status: 1".into(),
            stderr: stderr.into(),
        };
        assert!(is_absent(&failed(
            "Error: No such file or directory; list table inet vxnet"
        )));
        assert!(!is_absent(&failed("Error: Operation not permitted")));
        let spawn = |kind| Error::Spawn {
            cmd: "nft".into(),
            source: std::io::Error::from(kind),
        };
        assert!(is_absent(&spawn(std::io::ErrorKind::NotFound)));
        assert!(!is_absent(&spawn(std::io::ErrorKind::PermissionDenied)));
    }

    #[test]
    fn parses_nft_json() {
        let out = r#"{"nftables":[{"metainfo":{}},{"table":{"family":"inet","name":"vxnet"}},
            {"set":{"family":"inet","name":"peers4","table":"vxnet","type":"ipv4_addr","elem":["10.0.0.2","10.0.0.3"]}},
            {"set":{"family":"inet","name":"peers6","table":"vxnet","type":"ipv6_addr"}}]}"#;
        let p = parse_json(out).unwrap();
        assert_eq!(p.len(), 2);
    }
}
