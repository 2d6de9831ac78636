#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The build needs no system `protoc`: `.cargo/config.toml` points PROTOC at `scripts/protoc`,
//! which runs the binary the protoc-bin-vendored-linux-* dependency ships. Checked here with a
//! PATH that holds no protoc, as on a bare machine.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn wrapper() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/protoc")
}

/// A PATH with only what the wrapper itself runs: no protoc anywhere on it.
fn bare_path(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for tool in ["sh", "uname", "dirname", "basename"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no {tool}"));
        symlink(found, dir.join(tool)).unwrap();
    }
    dir
}

fn run(manifest_dir: &Path, path: &Path) -> Output {
    Command::new(path.join("sh"))
        .arg(wrapper())
        .arg("--version")
        .env_clear()
        .env("PATH", path)
        .env("CARGO_MANIFEST_DIR", manifest_dir)
        .env("CARGO_HOME", "/nonexistent")
        .output()
        .unwrap()
}

#[test]
fn cargo_config_points_protoc_at_the_wrapper() {
    // `[env]` in .cargo/config.toml applies to this test's compilation too.
    let protoc = option_env!("PROTOC").unwrap_or("");
    assert!(
        protoc.ends_with("scripts/protoc") || std::env::var_os("PROTOC").is_some(),
        "PROTOC={protoc:?}: .cargo/config.toml's [env] did not apply"
    );
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[test]
fn wrapper_runs_the_vendored_protoc_without_one_on_path() {
    #[cfg(target_arch = "x86_64")]
    let vendored = protoc_bin_vendored_linux_x86_64::protoc_bin_path();
    #[cfg(target_arch = "aarch64")]
    let vendored = protoc_bin_vendored_linux_aarch_64::protoc_bin_path();
    let expected = Command::new(&vendored).arg("--version").output().unwrap();
    assert!(expected.status.success());

    let path = bare_path("protoc_wrapper_vendored");
    // A build script's CARGO_MANIFEST_DIR is the building crate's source, a sibling of the
    // vendored crate in the registry (any sibling will do).
    let crate_dir = vendored.parent().unwrap().parent().unwrap();
    let sibling = crate_dir.parent().unwrap().join("etcd-client-0.0.0");
    let out = run(&sibling, &path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, expected.stdout, "not the vendored protoc");
}

#[test]
fn wrapper_without_any_protoc_says_so_in_one_line() {
    let path = bare_path("protoc_wrapper_none");
    let out = run(Path::new("/nonexistent/etcd-client"), &path);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no protoc found") && err.contains("protobuf-compiler"),
        "{err}"
    );
}
