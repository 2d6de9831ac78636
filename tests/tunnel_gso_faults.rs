//! The tunnel-GSO transmit path under faults: the underlay device gone or changed, the next hop's
//! neighbour entry changed or stale, the route moved to another device, the redirect removed by
//! someone else, a second engine on the host. Each case carries real TCP over the overlay before
//! and after the fault and checks that the traffic continues, that the fault is counted (in
//! `vxnet stats` and on the metrics endpoint) and said in exactly one log line, and that the
//! path recovers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use vxnet_dataplane::underlay::TunnelGsoReport;
use vxnet_tests::*;

const MB: u64 = 1 << 20;

/// vxnet "a" on host 0 sending to vxnet "b" on host 1 through the tunnel path (VNI 42, overlay
/// 10.1.0.0/24, underlay 10.0.0.0/24 on `eth0`); a's metrics on 127.0.0.1:9109 in host 0.
struct Pair {
    a: Vxnet,
    _b: Vxnet,
    lab: Lab,
}

impl Pair {
    fn new(test: &str) -> Option<Pair> {
        let lab = Lab::lan(test, 2, Family::V4)?;
        let (a, b) = lab.vxnet_pair("--metrics 127.0.0.1:9109");
        assert_eq!(a.stats().tx_path, "tunnel-gso", "{}", a.proc.log_text());
        let pair = Pair { a, _b: b, lab };
        pair.carried(5100, "before any fault");
        Some(pair)
    }

    fn h0(&self) -> &Host {
        self.lab.host(0)
    }

    fn tunnel(&self) -> TunnelGsoReport {
        self.a.stats().tunnel_gso.expect("tunnel_gso in stats")
    }

    /// Moves 4 MB over the overlay from host 0 to host 1 (byte-checked) and returns the tunnel
    /// counters before and after.
    fn carry(&self, port: u16, what: &str) -> (TunnelGsoReport, TunnelGsoReport) {
        let before = self.tunnel();
        let addr = SocketAddr::new("10.1.0.2".parse().unwrap(), port);
        transfer_checked(what, self.lab.host(0), self.lab.host(1), addr, 4 * MB);
        (before, self.tunnel())
    }

    /// [`Pair::carry`], and some of it went as whole superframes: the tunnel path is in use.
    fn carried(&self, port: u16, what: &str) -> TunnelGsoReport {
        let (before, after) = self.carry(port, what);
        assert!(
            after.superframes > before.superframes,
            "{what}: no superframe went through the tunnel path: {after:?}\n{}",
            self.a.proc.log_text()
        );
        assert!(after.active && after.refused == 0, "{what}: {after:?}");
        after
    }

    /// Makes `fault` (a shell command on host 0), carries traffic through the tunnel path after
    /// it, and checks that the path changed once more (`changes` in all), said in one line
    /// containing `said`.
    fn path_change(&self, fault: &str, port: u16, changes: u64, said: &str) -> TunnelGsoReport {
        let mark = self.mark();
        self.h0().must(fault);
        let t = self.carried(port, fault);
        assert_eq!(t.path_changes, changes, "{fault}: {t:?}");
        self.said_once(mark, said);
        t
    }

    /// Where a's log is now, for [`Pair::said_once`].
    fn mark(&self) -> usize {
        self.a.proc.log_text().len()
    }

    /// The tunnel-GSO lines a logged since `mark`: there must be exactly one, containing
    /// `text`.
    fn said_once(&self, mark: usize, text: &str) {
        let log = self.a.proc.log_text();
        let lines: Vec<&str> = log[mark..]
            .lines()
            .filter(|l| l.contains("tunnel GSO"))
            .collect();
        assert!(
            lines.len() == 1 && lines[0].contains(text),
            "expected one tunnel GSO line with {text:?}, got {lines:#?}\n{log}"
        );
    }

    /// Neither stats nor the log said anything about the tunnel path since `mark`.
    fn said_nothing(&self, mark: usize) {
        let log = self.a.proc.log_text();
        assert!(
            !log[mark..].lines().any(|l| l.contains("tunnel GSO")),
            "{log}"
        );
    }

    /// Counter `name` on a's metrics endpoint equals what `vxnet stats` says.
    fn metric_agrees(&self, name: &str, stats: u64) {
        let (_, body) = http_get(&self.h0().ns, "127.0.0.1:9109", "/metrics");
        let value = body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{body}"));
        assert_eq!(value, stats, "{name}");
    }

    /// The underlay TAPs of a, from `vxnet stats` ("vxgso0>eth0" …).
    fn taps(&self) -> Vec<(String, String)> {
        self.tunnel()
            .devices
            .iter()
            .map(|d| {
                let (tap, dev) = d.split_once('>').unwrap();
                (tap.to_string(), dev.to_string())
            })
            .collect()
    }

    /// The command that gives host 0 a second port `eth1` (on the same switch) and routes to
    /// host 1 through it.
    fn second_port(&self) -> String {
        format!(
            "ip link add eth1 type veth peer name q0 netns {id}sw && \
             ip -n {id}sw link set q0 master br0 up && ip link set eth1 up && \
             ip route add 10.0.0.2/32 dev eth1 src 10.0.0.1",
            id = self.lab.id
        )
    }
}

#[test]
fn route_moves_to_another_device_and_back() {
    let Some(p) = Pair::new("tgf_route") else {
        return;
    };
    let t = p.path_change(&p.second_port(), 5111, 1, "via eth1");
    assert!(t.devices.iter().any(|d| d.ends_with(">eth1")), "{t:?}");
    p.path_change("ip route del 10.0.0.2/32 dev eth1", 5112, 2, "via eth0");
    p.metric_agrees("vxnet_tunnel_gso_path_changes_total", 2);
}

#[test]
fn underlay_device_disappears() {
    let Some(p) = Pair::new("tgf_gone") else {
        return;
    };
    p.path_change(&p.second_port(), 5121, 1, "via eth1");
    assert_eq!(p.taps().len(), 2, "{:?}", p.taps());
    p.path_change("ip link del eth1", 5122, 2, "via eth0");
    // Its TAP went with it: nothing redirects to a device that is gone.
    assert!(
        wait_for(Duration::from_secs(5), || p
            .h0()
            .must("ip -o link show")
            .matches("vxgso")
            .count()
            == 1),
        "{}",
        p.h0().must("ip -o link show")
    );
    assert_eq!(p.taps().len(), 1, "{:?}", p.taps());
}

#[test]
fn underlay_mtu_changes() {
    let Some(p) = Pair::new("tgf_mtu") else {
        return;
    };
    // Below what the superframes' segments need: they go by the socket path (path-MTU rules
    // there). The route cache is flushed so the inner TCP has not learnt a smaller MTU yet.
    let mark = p.mark();
    p.h0()
        .must("ip link set eth0 mtu 1400 && ip route flush cache");
    let (before, after) = p.carry(5131, "after the underlay MTU shrank");
    assert!(after.fallbacks > before.fallbacks, "{after:?}");
    assert_eq!(after.path_changes, 1, "{after:?}");
    p.said_once(mark, "underlay device eth0 changed: MTU 1400 (was 1500)");

    let grow = "ip link set eth0 mtu 1500 && ip route flush cache";
    let t = p.path_change(grow, 5132, 2, "MTU 1500 (was 1400)");
    p.metric_agrees("vxnet_tunnel_gso_fallbacks_total", t.fallbacks);
}

#[test]
fn underlay_mac_changes() {
    let Some(p) = Pair::new("tgf_mac") else {
        return;
    };
    // The kernel announces the new address (gratuitous ARP) so host 1 answers to it.
    let capture = Capture::start(&p.lab, 1, "mac", "eth0", 96, 3000, "udp dst port 4789");
    p.path_change(
        "sysctl -qw net.ipv4.conf.eth0.arp_notify=1 && ip link set eth0 address 02:00:00:00:aa:01",
        5141,
        1,
        "underlay device eth0 changed: MAC 02:00:00:00:aa:01",
    );
    // The superframes leave with the new source MAC.
    let frames = capture.frames();
    let whole: Vec<&Vec<u8>> = frames
        .iter()
        .filter(|f| f.len() >= 42 && u16::from_be_bytes([f[16], f[17]]) > 1500)
        .collect();
    assert!(!whole.is_empty(), "no superframe captured");
    for f in whole {
        assert_eq!(
            f[6..12],
            [2, 0, 0, 0, 0xaa, 1],
            "source MAC of a superframe"
        );
    }
    p.metric_agrees("vxnet_tunnel_gso_path_changes_total", 1);
}

#[test]
fn neighbour_changes_goes_stale_or_is_flushed() {
    let Some(p) = Pair::new("tgf_neigh") else {
        return;
    };
    // Host 1's MAC changes and it says so: host 0's entry follows, so does the path.
    let mark = p.mark();
    p.lab.host(1).must(
        "sysctl -qw net.ipv4.conf.eth0.arp_notify=1 && ip link set eth0 address 02:00:00:00:bb:02",
    );
    assert!(
        wait_for(Duration::from_secs(5), || p
            .h0()
            .must("ip neigh show 10.0.0.2 dev eth0")
            .contains("02:00:00:00:bb:02")),
        "{}",
        p.h0().must("ip neigh show")
    );
    let t = p.carried(5151, "after the peer's MAC changed");
    assert_eq!(t.path_changes, 1, "{t:?}");
    p.said_once(mark, "via eth0 to 02:00:00:00:bb:02");

    // Stale: still used, and now and then a superframe goes by the socket path so that the
    // kernel confirms the entry again. Nothing to log.
    let mark = p.mark();
    p.h0().must("ip neigh change 10.0.0.2 dev eth0 nud stale");
    let (before, after) = p.carry(5152, "with a stale neighbour entry");
    assert!(after.superframes > before.superframes, "{after:?}");
    assert!(after.fallbacks > before.fallbacks, "{after:?}");
    p.said_nothing(mark);

    // Flushed: the socket path until the kernel has resolved it again, then back; the same
    // MAC as before, so nothing to log either.
    let mark = p.mark();
    p.h0().must("ip neigh flush dev eth0");
    p.carried(5153, "after a neighbour flush");
    assert_eq!(p.tunnel().path_changes, 1);
    p.said_nothing(mark);
}

#[test]
fn redirect_removed_by_someone_else() {
    let Some(p) = Pair::new("tgf_redir") else {
        return;
    };
    let faults = [
        ("tc filter del dev {tap} ingress", "its redirect removed"),
        ("tc qdisc del dev {tap} clsact", "its redirect removed"),
        ("ip link set {tap} down", "set down"),
        ("ip link del {tap}", "deleted"),
    ];
    for (n, (fault, said)) in faults.into_iter().enumerate() {
        let (tap, dev) = p.taps().pop().unwrap();
        assert_eq!(dev, "eth0");
        let restored = p.tunnel().redirects_restored;
        let mark = p.mark();
        let fault = fault.replace("{tap}", &tap);
        p.h0().must(&fault);
        p.carried(5160 + n as u16, &fault);
        let t = p.tunnel();
        assert_eq!(t.redirects_restored, restored + 1, "{fault}: {t:?}");
        p.said_once(mark, &format!("underlay TAP {tap} {said} by someone else"));
        // Whatever TAP serves eth0 now is up and redirected there.
        let (tap, _) = p.taps().pop().unwrap();
        assert!(
            p.h0()
                .must(&format!("tc filter show dev {tap} ingress"))
                .contains("Egress Redirect to device eth0"),
            "{fault}"
        );
        assert!(
            p.h0()
                .must(&format!("ip -o link show {tap}"))
                .contains(",UP"),
            "{fault}"
        );
    }
    p.metric_agrees("vxnet_tunnel_gso_redirects_restored_total", 4);
}

#[test]
fn two_engines_on_one_host_keep_to_their_own_taps() {
    let Some(p) = Pair::new("tgf_two") else {
        return;
    };
    let (u0, u1) = (p.h0().underlay, p.lab.host(1).underlay);
    let overlay = |i: usize, name: &str, local, remote, address: &str| {
        p.lab.vxnet(
            i,
            name,
            &format!(
                "--vni 43 --dev vx43 --port 4790 --local {local} --remote {remote} --address {address}"
            ),
        )
    };
    let mut c = overlay(0, "c", u0, u1, "10.3.0.1/24");
    let _d = overlay(1, "d", u1, u0, "10.3.0.2/24");
    let c_taps = |c: &Vxnet| c.stats().tunnel_gso.expect("tunnel_gso").devices;
    assert_eq!(c.stats().tx_path, "tunnel-gso", "{}", c.proc.log_text());
    let a_taps = p.tunnel().devices;
    assert!(
        c_taps(&c).iter().all(|t| !a_taps.contains(t)),
        "{a_taps:?} {:?}",
        c_taps(&c)
    );
    let to_d = |port| {
        let addr = SocketAddr::new("10.3.0.2".parse().unwrap(), port);
        transfer_checked("overlay 43", p.h0(), p.lab.host(1), addr, 4 * MB);
    };
    to_d(5171);
    p.carried(5172, "overlay 42 beside 43");

    // Someone removes a's redirect: a puts it back, c leaves it alone.
    let (tap, _) = p.taps().pop().unwrap();
    p.h0().must(&format!("tc qdisc del dev {tap} clsact"));
    p.carried(5173, "after a's redirect was removed");
    let c_stats = c.stats().tunnel_gso.unwrap();
    assert_eq!(p.tunnel().redirects_restored, 1);
    assert_eq!(c_stats.redirects_restored, 0, "{c_stats:?}");

    // c stops and its TAPs go with it; a carries on, and does not take them for its own.
    assert!(c.proc.terminate(Duration::from_secs(5)).is_some());
    let mark = p.mark();
    p.carried(5174, "after c stopped");
    p.said_nothing(mark);
    assert_eq!(p.tunnel().redirects_restored, 1);
}
