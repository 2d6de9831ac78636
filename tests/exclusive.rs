//! Issue 13: one engine per underlay address:port and per TAP. A second `vxnet run` on the
//! same address and port (SO_REUSEPORT would have let it in and split the first one's traffic)
//! or on the same TAP (TUNSETIFF would have added queues to the first one's device) gets one
//! `error:` line, and the first engine loses nothing. A persistent TAP another process has
//! open is refused the same way; one nobody has open is still used.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

use vxnet_tests::{vxnet_bin, Family, Host, Lab};

/// Runs a second engine with `args` (bounded: before the fix it started and ran) and returns
/// its one error line.
fn refused(lab: &Lab, host: &Host, case: &str, args: &str) -> String {
    let out = host.sh(&format!(
        "timeout 10 {} run --control {} {args}",
        vxnet_bin().display(),
        lab.dir.join(format!("{case}.sock")).display()
    ));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && out.status.code() != Some(124),
        "{case}: the second engine ran (status {:?}): {stderr}",
        out.status
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{case}: {stderr}");
    assert!(lines[0].starts_with("error: "), "{case}: {stderr}");
    lines[0].to_string()
}

/// Every ping of `count` answered.
fn no_loss(host: &Host, target: &str, count: u32) {
    let out = host.must(&format!("ping -c {count} -i 0.05 -W 1 {target}"));
    assert!(
        out.contains(&format!("{count} received")),
        "loss on the first engine's overlay:\n{out}"
    );
}

#[test]
fn second_engine_on_the_same_port_or_tap_is_refused() {
    let Some(lab) = Lab::lan("exclusive_port_tap", 2, Family::V4) else {
        return;
    };
    let (h0, h1) = (lab.host(0).clone(), lab.host(1).clone());
    let args = |me: &Host, other: &Host, n: u8| {
        format!(
            "--vni 42 --dev vx42 --threads 2 --local {} --remote {} --address 10.1.0.{n}/24",
            me.underlay, other.underlay
        )
    };
    let _e0 = lab.vxnet(0, "first", &args(&h0, &h1, 1));
    let _e1 = lab.vxnet(1, "peer", &args(&h1, &h0, 2));
    no_loss(&h0, "10.1.0.2", 5);

    let line = refused(
        &lab,
        &h0,
        "same_port",
        &format!(
            "--vni 43 --dev vx43 --threads 2 --local {} --remote {}",
            h0.underlay, h1.underlay
        ),
    );
    assert!(
        line.contains(&format!("{}:4789", h0.underlay)) && line.contains("another vxnet engine"),
        "{line}"
    );
    assert!(
        !h0.sh("ip link show vx43").status.success(),
        "TAP vx43 left behind"
    );

    let line = refused(
        &lab,
        &h0,
        "same_tap",
        &format!(
            "--vni 42 --dev vx42 --threads 2 --port 4790 --local {}",
            h0.underlay
        ),
    );
    assert!(
        line.contains("vx42") && line.contains("in use by another vxnet engine"),
        "{line}"
    );
    // Before, the second engine split the port's traffic (100% loss seen) or the TAP's queues.
    no_loss(&h0, "10.1.0.2", 20);
    assert!(h0.sh("ip link show vx42").status.success());
}

#[test]
fn persistent_tap_held_by_another_process_is_refused() {
    let Some(lab) = Lab::lan("exclusive_foreign_tap", 1, Family::V4) else {
        return;
    };
    let h = lab.host(0).clone();
    h.must("ip tuntap add vxp0 mode tap multi_queue && ip tuntap add vxp1 mode tap multi_queue");
    // A process holding one queue of vxp0 (as a VM would), until its stdin closes.
    let script = r#"
import fcntl, os, struct, sys
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", b"vxp0", 0x0002 | 0x1000 | 0x0100))
print("attached", flush=True)
sys.stdin.read()
"#;
    let mut holder = Command::new("ip")
        .args(["netns", "exec", &h.ns, "python3", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "attached");

    let error = refused(
        &lab,
        &h,
        "foreign_tap",
        &format!("--vni 42 --dev vxp0 --threads 2 --local {}", h.underlay),
    );
    // Before: "using existing persistent TAP" and the holder's traffic split with the engine.
    assert!(
        error.contains("vxp0") && error.contains("another process"),
        "{error}"
    );
    assert!(
        h.sh("ip link show vxp0").status.success(),
        "persistent TAP removed"
    );

    // A persistent TAP nobody holds is still used, and left in place on exit.
    let mut engine = lab.vxnet(
        0,
        "persistent",
        &format!("--vni 43 --dev vxp1 --threads 2 --local {}", h.underlay),
    );
    assert!(engine
        .proc
        .log_text()
        .contains("using existing persistent TAP"));
    engine
        .proc
        .terminate(std::time::Duration::from_secs(3))
        .unwrap();
    assert!(h.sh("ip link show vxp1").status.success());
    drop(holder.stdin.take());
    let _ = holder.wait();
}
