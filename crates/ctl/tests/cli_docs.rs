#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The command-line reference in the repository (`docs/cli.md`) is generated from the clap
//! definitions, and must be current; every subcommand's `--help` shows its defaults; man pages
//! and completions come from the same definitions.

use std::path::Path;
use std::process::Command;

fn docs_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli.md")
}

fn vxnet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vxnet"))
        .args(args)
        .output()
        .unwrap()
}

fn help(args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("--help");
    let out = vxnet(&all);
    assert!(out.status.success(), "vxnet {args:?} --help");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn docs_cli_md_is_generated_from_the_clap_definitions() {
    let generated = vxnet::cli::reference_markdown();
    let path = docs_path();
    if std::env::var_os("VXNET_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/cli.md is out of date with the clap definitions; regenerate it with \
         `VXNET_UPDATE_DOCS=1 cargo test -p vxnet --test cli_docs` and commit it"
    );
    // What the binary prints is what the reference says.
    let run_help = help(&["run"]);
    assert!(
        committed.contains(run_help.trim_end()),
        "vxnet run --help differs"
    );
    for heading in [
        "## `vxnet run`",
        "### `vxnet fdb show`",
        "## `vxnet completions`",
        "## `vxnet man`",
    ] {
        assert!(committed.contains(heading), "{heading}");
    }
}

#[test]
fn help_shows_the_defaults() {
    use vxnet_dataplane::config::{DEFAULT_AGEING_SECS, DEFAULT_CONTROL_PATH, DEFAULT_MAX_FDB};
    // The numbers the engine really uses, so a changed constant fails here until --help says it.
    let run = help(&["run"]);
    for default in [
        format!(
            "[default: {}, or the config file's `port`]",
            vxnet_encap::DEFAULT_PORT
        ),
        format!("[default: {DEFAULT_AGEING_SECS}]"),
        format!("[default: {DEFAULT_MAX_FDB}]"),
        "[default: one per core]".to_owned(),
        format!("[default: {DEFAULT_CONTROL_PATH}]"),
        "[default: /var/lib/vxnet]".to_owned(),
    ] {
        assert!(
            run.contains(&default),
            "vxnet run --help lacks {default}:\n{run}"
        );
    }
    let explain = help(&["explain"]);
    assert!(explain.contains("[default: 10]"), "{explain}");
    let fdb = help(&["fdb", "show"]);
    assert!(fdb.contains("[default: /run/vxnet/vxnet.sock]"), "{fdb}");
}

#[test]
fn man_pages_and_completions() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_docs_man");
    let _ = std::fs::remove_dir_all(&dir);
    let out = vxnet(&["man", "--dir", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "vxnet.1",
        "vxnet-run.1",
        "vxnet-fdb-show.1",
        "vxnet-explain.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap();
        assert!(
            text.starts_with(".ie") && text.contains(".SH NAME"),
            "{page}"
        );
    }
    assert!(
        !dir.join("vxnet-help.1").exists(),
        "clap's help subcommand gets no page"
    );
    let run = std::fs::read_to_string(dir.join("vxnet-run.1")).unwrap();
    assert!(run.contains("vxnet\\-run"), "{run}");

    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = vxnet(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("explain") && script.contains("--vni"),
            "{shell}"
        );
    }
    let out = vxnet(&["completions", "tcsh"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: invalid value 'tcsh'"), "{err}");
}
