//! ufw backend: one `ufw allow proto udp from IP to any port P` rule per member.

use std::net::IpAddr;

use super::Command;

fn rule(verb: &[&str], ip: &IpAddr, port: u16) -> Command {
    let (ip, port) = (ip.to_string(), port.to_string());
    let mut args: Vec<&str> = verb.to_vec();
    args.extend(["proto", "udp", "from", &ip, "to", "any", "port", &port]);
    Command::new("ufw", &args)
}

pub fn allow(ip: &IpAddr, port: u16) -> Command {
    rule(&["allow"], ip, port)
}

pub fn delete(ip: &IpAddr, port: u16) -> Command {
    rule(&["delete", "allow"], ip, port)
}

pub fn status_cmd() -> Command {
    Command::new("ufw", &["status"])
}

/// Adds rules for new peers and deletes those for addresses that are no longer members.
pub fn sync(port: u16, peers: &[IpAddr], current: &[IpAddr]) -> Vec<Command> {
    let adds = peers
        .iter()
        .filter(|p| !current.contains(p))
        .map(|p| allow(p, port));
    let dels = current
        .iter()
        .filter(|c| !peers.contains(c))
        .map(|c| delete(c, port));
    adds.chain(dels).collect()
}

/// Reads peers from `ufw status` lines such as `4789/udp   ALLOW   10.0.0.2`.
pub fn parse_status(out: &str, port: u16) -> Vec<IpAddr> {
    let want = format!("{port}/udp");
    out.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            match cols.as_slice() {
                [to, action, from, ..] if *to == want && action.starts_with("ALLOW") => {
                    from.parse().ok()
                }
                // `ALLOW IN` is two words in verbose output.
                [to, "ALLOW", "IN", from, ..] if *to == want => from.parse().ok(),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_parse() {
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            allow(&ip, 4789).line(),
            "ufw allow proto udp from 10.0.0.2 to any port 4789"
        );
        let out = "Status: active\n\nTo                         Action      From\n--                         ------      ----\n4789/udp                   ALLOW       10.0.0.2\n22/tcp                     ALLOW       Anywhere\n";
        assert_eq!(parse_status(out, 4789), vec![ip]);
        let other: IpAddr = "10.0.0.9".parse().unwrap();
        let plan = sync(4789, &[ip], &[other]);
        assert_eq!(plan.len(), 2);
        assert!(plan[1].line().starts_with("ufw delete allow"));
    }
}
