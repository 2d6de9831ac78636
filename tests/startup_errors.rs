//! Test 6 of issue 3: `vxnet run` refuses bad start-up conditions with exactly one `error:` line
//! on stderr naming the problem, a non-zero exit, and leaves neither its TAP nor its control
//! socket behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use vxnet_tests::{have_tool, in_netns, refuses_to_start, Family, Host, Lab};

const DEV: &str = "vxbad0";

/// Removes `/etc/netns/NS/` (which `ip netns exec` bind-mounts over /etc) however the test ends.
struct EtcNetns(PathBuf);

impl Drop for EtcNetns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `[prefix] vxnet run ARGS` must refuse with one `error:` line naming `must_name`.
fn refuses(lab: &Lab, host: &Host, case: &str, prefix: &str, args: &str, must_name: &[&str]) {
    refuses_to_start(lab, host, case, prefix, args, DEV, must_name);
}

#[test]
fn bad_startup_fails_cleanly_with_one_error_line() {
    let Some(lab) = Lab::lan("startup_errors", 1, Family::V4) else {
        return;
    };
    let h = lab.host(0).clone();
    let base = format!("--vni 42 --dev {DEV} --local {}", h.underlay);

    // Not root: the UDP bind (an unprivileged port) works, the TAP does not.
    if have_tool("startup_errors", "setpriv") {
        refuses(
            &lab,
            &h,
            "not_root",
            "setpriv --reuid=nobody --regid=nogroup --clear-groups",
            &base,
            &["/dev/net/tun"],
        );
    }

    // No /dev/net/tun: hidden by a tmpfs in the private mount namespace `ip netns exec` makes
    // (mounts there do not propagate to the host).
    refuses(
        &lab,
        &h,
        "no_tun",
        "mount -t tmpfs none /dev/net &&",
        &base,
        &["/dev/net/tun"],
    );

    // Port already in use: a socket bound in the same namespace, held for the case's duration.
    let addr = std::net::SocketAddr::new(h.underlay, 4789);
    let holder: UdpSocket = in_netns(&h.ns, move || UdpSocket::bind(addr).unwrap())
        .join()
        .unwrap();
    refuses(&lab, &h, "port_in_use", "", &base, &["4789"]);
    drop(holder);

    // --metrics on a TCP port already taken: refused before any TAP exists, so no "network up"
    // or "engine running" line comes before the error (before, both did).
    let any = std::net::SocketAddr::new(h.underlay, 0);
    let metrics: TcpListener = in_netns(&h.ns, move || TcpListener::bind(any).unwrap())
        .join()
        .unwrap();
    let taken = metrics.local_addr().unwrap();
    refuses(
        &lab,
        &h,
        "metrics_in_use",
        "",
        &format!("{base} --metrics {taken}"),
        &[&taken.to_string(), "metrics"],
    );
    drop(metrics);

    refuses(
        &lab,
        &h,
        "vni_range",
        "",
        &format!("--vni 16777216 --dev {DEV} --local {}", h.underlay),
        &["16777216"],
    );
    refuses(
        &lab,
        &h,
        "group_mac",
        "",
        &format!("{base} --mac 01:00:5e:00:00:01"),
        &["01:00:5e:00:00:01"],
    );
    refuses(
        &lab,
        &h,
        "bad_cidr",
        "",
        &format!("{base} --address 10.1.0.1/33"),
        &["10.1.0.1/33"],
    );

    // Unresolvable remote. Name resolution must not reach any real network: the namespace has no
    // default route (only the lab's isolated bridge), and its resolv.conf points at loopback,
    // where nothing listens.
    assert!(
        h.must("ip route show default").trim().is_empty(),
        "the lab namespace must have no default route"
    );
    let etc = EtcNetns(Path::new("/etc/netns").join(&h.ns));
    std::fs::create_dir_all(&etc.0).unwrap();
    std::fs::write(etc.0.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    refuses(
        &lab,
        &h,
        "unresolvable_remote",
        "",
        &format!("{base} --remote no-such-host.invalid"),
        &["no-such-host.invalid"],
    );
    drop(etc);

    let config = lab.dir.join("unknown-key.toml");
    std::fs::write(
        &config,
        format!(
            "local = \"{}\"\n[[network]]\nvni = 42\ndev = \"{DEV}\"\nremots = [\"10.0.0.2\"]\n",
            h.underlay
        ),
    )
    .unwrap();
    refuses(
        &lab,
        &h,
        "unknown_key",
        "",
        &format!("--config {}", config.display()),
        &["remots"],
    );

    // Values out of range: one line naming the value and the valid range (issue 13). Before,
    // port 0 bound a random port, threads 300 failed with "Argument list too long" and an mtu
    // of 67 with "Invalid argument".
    for (case, extra, words) in [
        ("port_zero", "--port 0", &["port 0", "1-65535"][..]),
        ("threads_300", "--threads 300", &["threads 300", "1-256"]),
        ("mtu_67", "--mtu 67", &["67", "68-65535"]),
        ("mtu_max", "--mtu 4294967295", &["4294967295", "68-65535"]),
        ("ageing_0", "--ageing 0", &["ageing 0", "1-1000000"]),
        ("max_fdb_0", "--max-fdb 0", &["max-fdb 0", "1-1048576"]),
        // Above the underlay (1500) is allowed since path-MTU signalling (issue 15); only an
        // outer packet over 64 KB is not.
        (
            "mtu_over_outer_max",
            "--mtu 65500",
            &["65500", "68-65485", "of them VXLAN)"],
        ),
        ("srcport_low", "--srcport 80-90", &["80-90", "1024"]),
        ("bum_rate_0", "--bum-rate 0", &["0", "1-100000000"]),
        ("tos_ecn", "--tos 3", &["3", "ECN"]),
        ("ttl_256", "--ttl 256", &["256", "1-255"]),
        (
            "remote_loopback",
            "--remote 127.0.0.1",
            &["127.0.0.1", "loopback"],
        ),
        (
            "remote_broadcast",
            "--remote 255.255.255.255",
            &["255.255.255.255", "broadcast"],
        ),
        (
            "remote_multicast",
            "--remote 224.0.0.1",
            &["224.0.0.1", "multicast"],
        ),
        (
            "remote_unspecified",
            "--remote 0.0.0.0",
            &["0.0.0.0", "unspecified"],
        ),
    ] {
        refuses(&lab, &h, case, "", &format!("{base} {extra}"), words);
    }
    refuses(
        &lab,
        &h,
        "remote_self",
        "",
        &format!("{base} --remote {}", h.underlay),
        &[&h.underlay.to_string(), "own VTEP"],
    );
    let config = lab.dir.join("duplicate-names.toml");
    std::fs::write(
        &config,
        format!(
            "local = \"{}\"\n[[network]]\nname = \"blue\"\nvni = 42\ndev = \"{DEV}\"\n\
             [[network]]\nname = \"blue\"\nvni = 43\ndev = \"vxbad1\"\n",
            h.underlay
        ),
    )
    .unwrap();
    refuses(
        &lab,
        &h,
        "duplicate_names",
        "",
        &format!("--config {}", config.display()),
        &["\"blue\"", "twice"],
    );
    let config = lab.dir.join("port-zero.toml");
    std::fs::write(
        &config,
        format!(
            "local = \"{}\"\nport = 0\n[[network]]\nvni = 42\ndev = \"{DEV}\"\nmtu = 0\n",
            h.underlay
        ),
    )
    .unwrap();
    refuses(
        &lab,
        &h,
        "toml_port_zero",
        "",
        &format!("--config {}", config.display()),
        &["port 0", "1-65535"],
    );
    // Issue 15's keys in a file: per network and at the top.
    let config = lab.dir.join("bum-rate.toml");
    std::fs::write(
        &config,
        format!(
            "local = \"{}\"\n[[network]]\nvni = 42\ndev = \"{DEV}\"\nbum_rate = 0\n",
            h.underlay
        ),
    )
    .unwrap();
    refuses(
        &lab,
        &h,
        "toml_bum_rate_zero",
        "",
        &format!("--config {}", config.display()),
        &["bum_rate 0", "1-100000000"],
    );
    let config = lab.dir.join("srcport.toml");
    std::fs::write(
        &config,
        format!(
            "local = \"{}\"\nsrcport = \"60000-50000\"\n[[network]]\nvni = 42\ndev = \"{DEV}\"\n",
            h.underlay
        ),
    )
    .unwrap();
    refuses(
        &lab,
        &h,
        "toml_srcport_reversed",
        "",
        &format!("--config {}", config.display()),
        &["60000-50000", "1024 <= MIN <= MAX <= 65535"],
    );

    // A state dir that is a file: refused before the TAP, naming the path (before, the engine
    // started, warned about names.json, then failed on "reading the endpoint records" alone).
    let not_a_dir = lab.dir.join("state-is-a-file");
    std::fs::write(&not_a_dir, "").unwrap();
    refuses(
        &lab,
        &h,
        "state_dir_file",
        "",
        &format!("{base} --state-dir {}", not_a_dir.display()),
        &[&not_a_dir.display().to_string(), "not a directory"],
    );

    let missing = lab.dir.join("missing.toml");
    refuses(
        &lab,
        &h,
        "missing_config",
        "",
        &format!("--config {}", missing.display()),
        &["missing.toml"],
    );
}
