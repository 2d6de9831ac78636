#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `vxnet key generate` / `vxnet key check`: output form, file mode, one-line errors.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn vxnet(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vxnet"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn generate_prints_64_hex_digits_and_differs_each_time() {
    let (ok, first, _) = vxnet(&["key", "generate"]);
    assert!(ok);
    assert_eq!(first.len(), 65, "{first:?}");
    assert!(first.trim_end().bytes().all(|b| b.is_ascii_hexdigit()));
    let (_, second, _) = vxnet(&["key", "generate"]);
    assert_ne!(first, second);
}

#[test]
fn generate_out_then_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.key");
    let path_s = path.to_str().unwrap();
    let (ok, _, err) = vxnet(&["key", "generate", "--out", path_s]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (ok, out, _) = vxnet(&["key", "check", path_s]);
    assert!(ok);
    assert!(out.ends_with(": ok\n"), "{out}");
    // Never overwritten.
    let before = std::fs::read(&path).unwrap();
    let (ok, _, err) = vxnet(&["key", "generate", "--out", path_s]);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: key file") && err.contains("already exists"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn check_reports_missing_open_and_short_files_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open.key");
    std::fs::write(&open, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, "abcdef\n").unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let missing = dir.path().join("missing.key");
    for (path, says) in [
        (&missing, "does not exist"),
        (&open, "accessible by group or others (mode 0644)"),
        (&short, "must be 64 hex digits"),
    ] {
        let (ok, _, err) = vxnet(&["key", "check", path.to_str().unwrap()]);
        assert!(!ok);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: key file") && err.contains(says),
            "{err}"
        );
    }
}

#[test]
fn generate_out_creates_its_missing_folder_owner_only_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etc/vxnet/blue.key");
    let (ok, _, err) = vxnet(&["key", "generate", "--out", path.to_str().unwrap()]);
    assert!(ok, "{err}");
    for folder in [dir.path().join("etc"), dir.path().join("etc/vxnet")] {
        let mode = std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", folder.display());
    }
    let (ok, out, _) = vxnet(&["key", "check", path.to_str().unwrap()]);
    assert!(ok && out.ends_with(": ok\n"), "{out}");

    // A file where the folder should be: one line naming both.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let inside = blocker.join("sub/net.key");
    let (ok, _, err) = vxnet(&["key", "generate", "--out", inside.to_str().unwrap()]);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: cannot create folder") && err.contains(blocker.to_str().unwrap()),
        "{err}"
    );
}
