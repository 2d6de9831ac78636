//! firewalld backend: one permanent rich rule per member, then a reload to make them live.

use std::net::IpAddr;

use super::Command;

pub fn rich_rule(ip: &IpAddr, port: u16) -> String {
    let family = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
    format!(
        r#"rule family="{family}" source address="{ip}" port port="{port}" protocol="udp" accept"#
    )
}

pub fn list_cmd() -> Command {
    Command::new("firewall-cmd", &["--permanent", "--list-rich-rules"])
}

/// Adds missing members' rules, removes stale ones, and reloads if anything changed.
pub fn sync(port: u16, peers: &[IpAddr], current: &[IpAddr]) -> Vec<Command> {
    let mut cmds: Vec<Command> = peers
        .iter()
        .filter(|p| !current.contains(p))
        .map(|p| {
            Command::new(
                "firewall-cmd",
                &[
                    "--permanent",
                    &format!("--add-rich-rule={}", rich_rule(p, port)),
                ],
            )
        })
        .collect();
    cmds.extend(current.iter().filter(|c| !peers.contains(c)).map(|c| {
        Command::new(
            "firewall-cmd",
            &[
                "--permanent",
                &format!("--remove-rich-rule={}", rich_rule(c, port)),
            ],
        )
    }));
    if !cmds.is_empty() {
        cmds.push(Command::new("firewall-cmd", &["--reload"]));
    }
    cmds
}

/// Reads peers back from `--list-rich-rules` output (only udp rules for `port`).
pub fn parse_rules(out: &str, port: u16) -> Vec<IpAddr> {
    let attr = |line: &str, name: &str| -> Option<String> {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let len = line[start..].find('"')?;
        Some(line[start..start + len].to_owned())
    };
    out.lines()
        .filter(|l| attr(l, "port").as_deref() == Some(&port.to_string()))
        .filter(|l| {
            attr(l, "protocol").as_deref() == Some("udp") && l.trim_end().ends_with("accept")
        })
        .filter_map(|l| attr(l, "source address")?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_parse() {
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let plan = sync(4789, &[ip], &[]);
        assert_eq!(plan.len(), 2);
        assert_eq!(
            plan[0].line(),
            r#"firewall-cmd --permanent '--add-rich-rule=rule family="ipv4" source address="10.0.0.2" port port="4789" protocol="udp" accept'"#
        );
        assert_eq!(parse_rules(&rich_rule(&ip, 4789), 4789), vec![ip]);
        assert!(parse_rules(&rich_rule(&ip, 4789), 8472).is_empty());
    }
}
