#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every port-typed flag refuses 0 and anything above 65535 with the range a port really has
//! (1-65535), in one `error:` line, before anything is touched.

use std::process::Command;

#[test]
fn every_port_flag_names_the_real_range() {
    let cases = [
        "run --port",
        "run --esp-port",
        "explain --port",
        "firewall list --dry-run --port",
    ];
    for case in cases {
        for value in ["65536", "0"] {
            let mut args: Vec<&str> = case.split(' ').collect();
            args.push(value);
            let out = Command::new(env!("CARGO_BIN_EXE_vxnet"))
                .args(&args)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{case} {value}: exited 0");
            let first = stderr.lines().next().unwrap_or_default();
            assert!(first.starts_with("error: "), "{case} {value}: {stderr}");
            assert!(
                first.contains(&format!("port {value}")) && first.contains("1-65535"),
                "{case} {value}: should name the value and the range 1-65535: {stderr}"
            );
            assert!(
                !first.contains("0..=65535"),
                "{case} {value}: names the u16 range: {stderr}"
            );
        }
    }
}
