#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Bad input on the command line: bare `vxnet` and bare groups print their usage (exit 2, as
//! clap does), unknown subcommands, missing arguments and wrong values are one `error:` line
//! carrying clap's nearest valid choice and the usage, and every named value completes in every
//! shell.

use std::process::{Command, Output};

fn vxnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vxnet"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn bare_vxnet_and_bare_groups_print_usage() {
    for group in [
        &[][..],
        &["fdb"],
        &["cluster"],
        &["network"],
        &["firewall"],
        &["key"],
        &["sa"],
    ] {
        let out = vxnet(group);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{group:?}: {err}");
        let usage = format!(
            "Usage: {}",
            ["vxnet"]
                .iter()
                .chain(group)
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(err.contains(&usage), "{group:?}: {err}");
        assert!(err.contains("Commands:"), "{group:?}: {err}");
        assert!(!err.starts_with("error:"), "{group:?}: {err}");
    }
}

/// One `error:` line, exit 2, holding every piece of `says`.
fn refused(args: &[&str], says: &[&str]) {
    let out = vxnet(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    for piece in says {
        assert!(err.contains(piece), "{args:?}: {piece:?} not in {err}");
    }
}

#[test]
fn usage_errors_name_the_nearest_choice_and_the_usage() {
    // Unknown subcommands: clap's suggestion.
    refused(&["stat"], &["'stat'", "'stats'", "usage: vxnet"]);
    refused(&["fdb", "sho"], &["'sho'", "'show'", "usage: vxnet fdb"]);
    refused(&["cluster", "stauts"], &["'status'"]);
    // Unknown flag: the similar one.
    refused(&["stats", "--jsn"], &["--jsn", "--json"]);
    // Missing arguments: named, with the usage.
    refused(
        &["fdb", "add", "02:00:00:00:00:01"],
        &["--dst", "usage: vxnet fdb add"],
    );
    refused(&["key", "check"], &["<FILE>", "usage: vxnet key check"]);
    // Wrong value types and values.
    refused(&["fdb", "show", "--vni", "blue"], &["'blue'", "--vni"]);
    refused(
        &["run", "--df", "sett"],
        &["'sett'", "set, unset or inherit"],
    );
    refused(&["run", "--ttl", "forever"], &["'forever'", "--ttl"]);
    refused(
        &["firewall", "apply", "--backend", "nftable"],
        &["'nftable'", "nftables"],
    );
}

#[test]
fn a_bare_run_names_everything_a_network_needs() {
    // An empty state dir, so no saved cluster membership turns it into cluster mode.
    let dir = std::env::temp_dir().join(format!("vxnet-bare-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = vxnet(&["run", "--state-dir", dir.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // Before: "--local is required" alone, then "no network configured" on the next try.
    for piece in [
        "error: no network configured",
        "--vni",
        "--dev",
        "--local",
        "--config",
    ] {
        assert!(err.contains(piece), "{piece:?} not in {err}");
    }
}

#[test]
fn demo_and_bench_refuse_bad_prefixes_and_subnets() {
    for cmd in ["demo", "bench"] {
        refused(
            &[cmd, "--subnet", "10.0.0/24"],
            &["'10.0.0/24'", "--subnet", "not an IPv4 subnet"],
        );
        refused(&[cmd, "--subnet", "fd00::/64"], &["not an IPv4 subnet"]);
        refused(&[cmd, "--subnet", "10.9.0.0/30"], &["too small"]);
        refused(
            &[cmd, "--prefix", "fourteen-bytes"],
            &["'fourteen-bytes'", "--prefix", "at most 13"],
        );
        refused(&[cmd, "--prefix", "a/b"], &["'a/b'", "letters, digits"]);
    }
    // Nothing to move is no demo (before, "0 bytes ... 0.00 Gbit/s, every byte checked"). The
    // bad --prefix after it keeps a demo from running should the check be missing.
    refused(
        &["demo", "--megabytes", "0", "--prefix", "a/b"],
        &["'0'", "--megabytes", "1..="],
    );
    // The bench cuts its subnet into 8 blocks: a /28 is too small for it, not for the demo.
    refused(&["bench", "--subnet", "10.9.0.0/28"], &["too small", "/27"]);
}

/// The completion script for `shell`.
fn script(shell: &str) -> String {
    let out = vxnet(&["completions", shell]);
    assert!(out.status.success(), "{shell}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn named_values_complete_in_every_shell() {
    let bash = script("bash");
    for values in [
        "set unset inherit",
        "auto inherit",
        "nftables ufw firewalld",
    ] {
        assert!(bash.contains(values), "bash: {values}");
    }
    let zsh = script("zsh");
    for values in [
        "(set unset inherit)",
        "(auto inherit)",
        "(nftables ufw firewalld)",
    ] {
        assert!(zsh.contains(values), "zsh: {values}");
    }
    let fish = script("fish");
    let line = |flag: &str| {
        fish.lines()
            .find(|l| l.contains("__fish_vxnet_using_subcommand run") && l.contains(flag))
            .unwrap_or_else(|| panic!("fish: no line for run {flag}"))
            .to_owned()
    };
    let df = line("-l df");
    for value in ["set", "unset", "inherit"] {
        assert!(
            df.contains(&format!("{value}\\t")) || df.contains(value),
            "fish --df: {df}"
        );
    }
    assert!(df.contains("unset") && df.contains("inherit"), "{df}");
    let ttl = line("-l ttl");
    assert!(ttl.contains("auto") && ttl.contains("inherit"), "{ttl}");
}

#[test]
fn options_that_do_not_go_together_exit_2_like_other_usage_errors() {
    let dir = std::env::temp_dir().join(format!("vxnet-usage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state_dir = dir.to_str().unwrap();
    let cases: [&[&str]; 2] = [
        &["run", "--vni", "42", "--state-dir", state_dir],
        &["explain", "--keys", "/nonexistent/keys.toml"],
    ];
    for args in cases {
        let out = vxnet(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    // What a command meets rather than how it was asked stays 1: a capture that is not there.
    let out = vxnet(&["explain", "--pcap", "/nonexistent/capture.pcap"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
