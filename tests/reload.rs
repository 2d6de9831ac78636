//! Issue 13: SIGHUP and `vxnet reload` re-read `--config` in static mode. Networks are added,
//! changed and removed live while the others keep forwarding; an invalid file keeps the
//! running state and says why; SIGHUP without `--config` is logged and ignored. Issue 15's
//! per-network `bum_rate` applies on reload; `df`/`ttl`/`tos`/`srcport` are reported as
//! needing a restart. (Before, SIGHUP
//! killed the engine silently and left its socket file.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use vxnet_tests::{in_netns, must, wait_for, DropReason, Family, Host, Lab, Vxnet};

/// A config file for host `me` with the given `(name, vni, octet)` networks, each flooding to
/// `other` and addressed 10.`octet`.0.(me.index + 1)/24.
fn write_config(path: &Path, me: &Host, other: &Host, networks: &[(&str, u32, u8)]) {
    let mut text = format!("local = \"{}\"\nthreads = 2\n", me.underlay);
    for (name, vni, octet) in networks {
        text.push_str(&format!(
            "[[network]]\nname = \"{name}\"\nvni = {vni}\ndev = \"vx{name}\"\n\
             address = \"10.{octet}.0.{}/24\"\nremotes = [\"{}\"]\n",
            me.index + 1,
            other.underlay
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn names(engine: &Vxnet) -> Vec<String> {
    let mut v: Vec<String> = engine
        .json("networks")
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn hup(engine: &Vxnet) {
    must(&format!("kill -HUP {}", engine.proc.pid()));
}

fn alive(engine: &mut Vxnet) -> bool {
    matches!(engine.proc.child.try_wait(), Ok(None)) && engine.ctl("stats").status.success()
}

#[test]
fn sighup_and_reload_apply_the_config_live() {
    let Some(lab) = Lab::lan("reload_config", 2, Family::V4) else {
        return;
    };
    let (h0, h1) = (lab.host(0).clone(), lab.host(1).clone());
    let configs = [lab.dir.join("h0.toml"), lab.dir.join("h1.toml")];
    let write_both = |networks: &[(&str, u32, u8)]| {
        write_config(&configs[0], &h0, &h1, networks);
        write_config(&configs[1], &h1, &h0, networks);
    };
    write_both(&[("blue", 42, 1)]);
    let mut engines: Vec<Vxnet> = (0..2)
        .map(|i| {
            lab.vxnet(
                i,
                &format!("e{i}"),
                &format!("--config {}", configs[i].display()),
            )
        })
        .collect();
    assert!(h0.ping("10.1.0.2", 2), "blue down at start");

    // Added by SIGHUP on one host and `vxnet reload` on the other.
    write_both(&[("blue", 42, 1), ("red", 43, 2)]);
    hup(&engines[0]);
    let out = engines[1].ctl("reload");
    assert!(
        out.status.success(),
        "reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("added: red"));
    for engine in &engines {
        assert!(
            wait_for(Duration::from_secs(5), || names(engine) == ["blue", "red"]),
            "red not added: {:?}\n{}",
            names(engine),
            engine.proc.log_text()
        );
    }
    assert!(h0.ping("10.2.0.2", 2), "red does not forward");
    assert!(h0.ping("10.1.0.2", 1), "blue disturbed by adding red");

    // An invalid file: the running state stays, the reason is logged and told.
    std::fs::write(
        &configs[0],
        format!(
            "local = \"{}\"\n[[network]]\nname = \"blue\"\nvni = 42\ndev = \"vxblue\"\n\
             [[network]]\nname = \"blue\"\nvni = 44\ndev = \"vxother\"\n",
            h0.underlay
        ),
    )
    .unwrap();
    hup(&engines[0]);
    assert!(
        wait_for(Duration::from_secs(5), || engines[0]
            .proc
            .log_text()
            .contains("configuration not reloaded")),
        "no log line for the invalid file:\n{}",
        engines[0].proc.log_text()
    );
    let out = engines[0].ctl("reload");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "invalid file reloaded");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("\"blue\" is configured twice"), "{stderr}");
    assert!(alive(&mut engines[0]));
    assert_eq!(names(&engines[0]), ["blue", "red"]);
    assert!(h0.ping("10.2.0.2", 1) && h0.ping("10.1.0.2", 1));

    // Red changed (a new MTU needs a new TAP): rebuilt, blue untouched.
    write_both(&[("blue", 42, 1), ("red", 43, 2)]);
    let text = std::fs::read_to_string(&configs[0]).unwrap();
    std::fs::write(
        &configs[0],
        text.replace("dev = \"vxred\"", "dev = \"vxred\"\nmtu = 1400"),
    )
    .unwrap();
    let out = engines[0].ctl("reload");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("changed: red"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(h0.must("ip link show vxred").contains("mtu 1400"));
    assert!(h0.ping("10.2.0.2", 1) && h0.ping("10.1.0.2", 1));

    // Issue 15's keys: a network's bum_rate is its storm-control bucket (red rebuilt with it);
    // df shapes the source-port sockets every network shares, so it waits for a restart and
    // the reload says so.
    let text = std::fs::read_to_string(&configs[0]).unwrap();
    std::fs::write(
        &configs[0],
        format!(
            "df = \"inherit\"\n{}",
            text.replace("mtu = 1400", "mtu = 1400\nbum_rate = 100")
        ),
    )
    .unwrap();
    let out = engines[0].ctl("reload");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("changed: red"), "{stdout}");
    assert!(
        stdout.contains("needs a restart: df set -> inherit"),
        "{stdout}"
    );
    assert!(
        engines[0].proc.log_text().contains("bum_rate=Some(100)"),
        "{}",
        engines[0].proc.log_text()
    );
    assert!(h0.ping("10.2.0.2", 1) && h0.ping("10.1.0.2", 1));

    // Blue removed (its TAP goes), red kept, on both hosts.
    write_both(&[("red", 43, 2)]);
    for engine in &engines {
        let out = engine.ctl("reload");
        assert!(String::from_utf8_lossy(&out.stdout).contains("removed: blue"));
    }
    assert_eq!(names(&engines[0]), ["red"]);
    assert!(
        !h0.sh("ip link show vxblue").status.success(),
        "blue's TAP left"
    );
    assert!(h0.ping("10.2.0.2", 2), "red disturbed by removing blue");
    // No endpoint was ever attached: removing a network leaves no endpoint records in the state
    // dir (before, an empty endpoints.json appeared in /var/lib/vxnet on a plain static host).
    for i in 0..2 {
        let records = lab.dir.join(format!("e{i}.state")).join("endpoints.json");
        assert!(!records.exists(), "{} written", records.display());
    }
    for engine in &mut engines {
        assert!(alive(engine));
    }
}

#[test]
fn sighup_without_config_is_ignored() {
    let Some(lab) = Lab::lan("reload_no_config", 1, Family::V4) else {
        return;
    };
    let h = lab.host(0);
    let mut engine = lab.vxnet(
        0,
        "flags",
        &format!("--vni 42 --dev vx42 --local {}", h.underlay),
    );
    hup(&engine);
    assert!(
        wait_for(Duration::from_secs(5), || engine
            .proc
            .log_text()
            .contains("SIGHUP: no --config")),
        "{}",
        engine.proc.log_text()
    );
    assert!(alive(&mut engine), "SIGHUP stopped the engine");
    assert!(engine.control.exists());
    let out = engine.ctl("reload");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not started with --config"));
}

/// The engine reads the socket's running total of drops (SO_MEMINFO); a reload starts new
/// workers on the same sockets, which counted that whole total again (the counter grew by the
/// socket's past drops at every reload).
#[test]
fn socket_overflows_are_counted_once_across_reloads() {
    let Some(lab) = Lab::lan("reload_overflow", 2, Family::V4) else {
        return;
    };
    let (h0, h1) = (lab.host(0).clone(), lab.host(1).clone());
    let config = lab.dir.join("h0.toml");
    write_config(&config, &h0, &h1, &[("blue", 42, 1)]);
    let engine = lab.vxnet(0, "e0", &format!("--config {}", config.display()));
    let overflows = || engine.drops(None, DropReason::SocketOverflow);
    assert_eq!(overflows(), 0);

    // One sender socket, so SO_REUSEPORT hands every datagram to the same engine socket.
    let sender = in_netns(&h1.ns, || std::net::UdpSocket::bind("0.0.0.0:0").unwrap())
        .join()
        .unwrap();
    let target = std::net::SocketAddr::new(h0.underlay, 4789);
    let send = |count: usize| {
        for _ in 0..count {
            sender.send_to(&[0u8; 1000], target).unwrap();
        }
    };
    // With the engine stopped its 16 MB receive buffer fills (about 7,000 such datagrams) and
    // the rest are dropped.
    must(&format!("kill -STOP {}", engine.proc.pid()));
    send(30_000);
    must(&format!("kill -CONT {}", engine.proc.pid()));
    // The datagrams queued before the buffer filled carry the total of their time (0); the
    // first to arrive once the engine has read them carries the drops.
    let junk = || engine.drops(None, DropReason::NoVniFlag);
    assert!(
        wait_for(Duration::from_secs(10), || junk() > 1000),
        "the queued datagrams were not read"
    );
    std::thread::sleep(Duration::from_millis(500));
    send(10);
    assert!(
        wait_for(Duration::from_secs(5), || overflows() > 0),
        "no overflow counted"
    );
    std::thread::sleep(Duration::from_millis(500));
    let before = overflows();
    assert!(before > 1000, "only {before} overflows");

    // A new network: a new generation of workers on the same sockets.
    write_config(&config, &h0, &h1, &[("blue", 42, 1), ("red", 43, 2)]);
    let out = engine.ctl("reload");
    assert!(
        out.status.success(),
        "reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    send(10);
    std::thread::sleep(Duration::from_millis(500));
    send(10);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        overflows(),
        before,
        "the reload counted old overflows again"
    );
}
