//! Issue 14, bad input: a missing, short, unreadable or group-readable key file (`--key-file`
//! or `key_file` in `--config`) makes `vxnet run` print exactly one `error:` line naming the
//! file and the problem, exit non-zero, and create nothing (no TAP, no control socket).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use vxnet_tests::{refuses_to_start, Family, Host, Lab};

const DEV: &str = "vxkeyerr0";

/// `vxnet run ARGS` must refuse with one `error:` line naming `must_name`.
fn refuses(lab: &Lab, host: &Host, case: &str, args: &str, must_name: &[&str]) {
    refuses_to_start(lab, host, case, "", args, DEV, must_name);
}

fn key_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn bad_key_files_fail_cleanly_with_one_error_line() {
    let Some(lab) = Lab::lan("esp_key_errors", 1, Family::V4) else {
        return;
    };
    let h = lab.host(0).clone();
    let base = format!("--vni 42 --dev {DEV} --local {}", h.underlay);
    let good = "ab".repeat(32) + "\n";

    let missing = lab.dir.join("missing.key");
    refuses(
        &lab,
        &h,
        "missing",
        &format!("{base} --key-file {}", missing.display()),
        &["missing.key", "does not exist"],
    );
    let short = key_file(&lab.dir, "short.key", "abcd\n", 0o600);
    refuses(
        &lab,
        &h,
        "short",
        &format!("{base} --key-file {}", short.display()),
        &["short.key", "64 hex digits"],
    );
    let open = key_file(&lab.dir, "open.key", &good, 0o640);
    refuses(
        &lab,
        &h,
        "group_readable",
        &format!("{base} --key-file {}", open.display()),
        &["open.key", "0640", "chmod 600"],
    );
    // Root reads any mode, so "unreadable" is a path that cannot be read as a file.
    refuses(
        &lab,
        &h,
        "unreadable",
        &format!("{base} --key-file {}", lab.dir.display()),
        &["not a regular file"],
    );

    // The same loader for `key_file` in a config file, relative to the file's directory.
    let config = lab.dir.join("keys.toml");
    std::fs::write(
        &config,
        format!(
            "local = \"{}\"\n[[network]]\nvni = 42\ndev = \"{DEV}\"\nkey_file = \"short.key\"\n",
            h.underlay
        ),
    )
    .unwrap();
    refuses(
        &lab,
        &h,
        "config_short",
        &format!("--config {}", config.display()),
        &["short.key", "64 hex digits"],
    );
    refuses(
        &lab,
        &h,
        "key_file_without_vni",
        &format!("--local {} --key-file {}", h.underlay, short.display()),
        &["--key-file"],
    );
    refuses(
        &lab,
        &h,
        "esp_port_is_vxlan_port",
        &format!("{base} --esp-port 4789"),
        &["esp-port 4789"],
    );
}
