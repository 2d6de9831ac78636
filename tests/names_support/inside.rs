//! Name checks made inside a container with the container's own resolver: busybox's `nslookup`
//! and `ping` read the container's /etc/resolv.conf (podman's, written from the CNI result's
//! `dns`, or the one `vxnet attach` put under /etc/netns for `ip netns exec`), so a check
//! passes only when the resolver the runtime was given leads to the network's DNS service.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::Output;

use vxnet_tests::containers::Sandbox;

use super::ns;

/// A container of a test and how to run commands in it.
pub enum Container<'a> {
    /// Started by podman in `sandbox`: `podman exec`.
    Podman { sandbox: &'a Sandbox, name: String },
    /// A namespace attached with `vxnet attach`: `ip netns exec`.
    Attached { netns: String },
}

impl Container<'_> {
    /// `script` (no single quotes) run by `sh` inside the container.
    pub fn sh(&self, script: &str) -> Output {
        assert!(!script.contains('\''), "{script}");
        match self {
            Container::Podman { sandbox, name } => {
                sandbox.sh(&format!("podman exec {name} sh -c '{script}'"))
            }
            Container::Attached { netns } => ns(netns).sh(script),
        }
    }

    /// The command prefix that runs the machine's programs in the container's network
    /// namespace (not its file system), for probes written in Python.
    pub fn enter(&self) -> Vec<String> {
        match self {
            Container::Podman { sandbox, name } => {
                let pid = sandbox.must(&format!("podman inspect -f '{{{{.State.Pid}}}}' {name}"));
                vec![
                    "nsenter".into(),
                    format!("--net=/proc/{}/ns/net", pid.trim()),
                ]
            }
            Container::Attached { netns } => {
                ["ip", "netns", "exec", netns].map(String::from).to_vec()
            }
        }
    }

    /// The container's /etc/resolv.conf: its nameservers in order, and its search domains.
    pub fn resolver(&self) -> (Vec<String>, Vec<String>) {
        let out = self.sh("cat /etc/resolv.conf");
        let text = String::from_utf8_lossy(&out.stdout);
        let (mut servers, mut search) = (Vec::new(), Vec::new());
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => servers.extend(words.map(String::from)),
                Some("search") => search.extend(words.map(String::from)),
                _ => {}
            }
        }
        (servers, search)
    }
}

/// What one command made inside a container gave.
#[derive(Debug, Default)]
pub struct Lookup {
    /// Its exit status was 0.
    pub ok: bool,
    /// The IPv4 addresses of an answer, sorted.
    pub addresses: Vec<String>,
    /// The names of a PTR answer.
    pub names: Vec<String>,
    pub nxdomain: bool,
    /// Its output, for the failure messages.
    pub text: String,
}

/// What [`look_up`] found: each query's answer, and each ping.
pub struct Answers {
    pub lookups: HashMap<String, Lookup>,
    pub pings: HashMap<String, Lookup>,
}

/// `nslookup` of each of `queries` (type A, or PTR for an address) with the container's
/// resolver (busybox asks a name without a dot only with the search domains appended), then
/// one `ping` by each of `pings`; in one shell, since a `podman exec` costs far more than the
/// queries.
pub fn look_up(c: &Container<'_>, queries: &[String], pings: &[String]) -> Answers {
    let script = format!(
        "for q in {}; do case $q in *[a-z]*) t=-type=a;; *) t=;; esac; \
         o=$(busybox nslookup $t $q 2>&1); echo \"== query $q $?\"; echo \"$o\"; done; \
         for p in {}; do o=$(busybox ping -c 1 -W 2 $p 2>&1); echo \"== ping $p $?\"; \
         echo \"$o\"; done",
        queries.join(" "),
        pings.join(" ")
    );
    let out = c.sh(&script);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut found = Answers {
        lookups: HashMap::new(),
        pings: HashMap::new(),
    };
    let mut current: Option<&mut Lookup> = None;
    for line in text.lines() {
        let header = line
            .strip_prefix("== ")
            .map(|h| h.split(' ').collect::<Vec<_>>());
        if let Some(&[kind, what, status]) = header.as_deref() {
            let map = match kind {
                "query" => &mut found.lookups,
                _ => &mut found.pings,
            };
            let l = map.entry(what.to_string()).or_default();
            l.ok = status == "0";
            current = Some(l);
            continue;
        }
        let Some(l) = current.as_deref_mut() else {
            continue;
        };
        l.text.push_str(line);
        l.text.push('\n');
        // busybox prints `Address: IP` for an answer (the server's own line carries `:53`),
        // `... name = NAME` for a PTR, and `server can't find ...: NXDOMAIN`.
        if let Some(a) = line.strip_prefix("Address:").map(str::trim) {
            if a.parse::<Ipv4Addr>().is_ok() {
                l.addresses.push(a.to_string());
            }
        }
        if let Some((_, name)) = line.split_once("name = ") {
            l.names.push(name.trim().to_string());
        }
        l.nxdomain |= line.contains("NXDOMAIN");
    }
    for l in found.lookups.values_mut() {
        l.addresses.sort();
    }
    let complete = queries.iter().all(|q| found.lookups.contains_key(q))
        && pings.iter().all(|p| found.pings.contains_key(p));
    assert!(
        complete,
        "output incomplete: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    found
}
