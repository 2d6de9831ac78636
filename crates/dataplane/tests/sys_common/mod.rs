//! Shared helpers for the `sys_*` integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// True if this test can do privileged network work (root and /dev/net/tun). Otherwise: under
/// `CI=true` the test fails (a CI that silently skips proves nothing); elsewhere it prints why and
/// the caller returns early.
pub fn privileged(test: &str) -> bool {
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let tun = Path::new("/dev/net/tun").exists();
    if root && tun {
        return true;
    }
    let why = if !root {
        "not running as root"
    } else {
        "/dev/net/tun missing"
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: cannot run privileged test under CI=true: {why}");
    }
    eprintln!("SKIP {test}: {why}");
    false
}

/// A TAP name unique to this process and call: `vxt<pid mod 100000><n>` (≤ 15 bytes).
pub fn unique_tap_name() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("vxt{}x{}", std::process::id() % 100_000, n)
}

/// Runs `f` on a fresh thread inside a new anonymous network namespace; everything created there
/// vanishes with it. Panics in `f` are propagated to the test.
pub fn in_private_netns<F: FnOnce() + Send + 'static>(f: F) {
    let handle = std::thread::spawn(move || {
        vxnet_dataplane::sys::unshare_netns_for_current_thread().expect("unshare(CLONE_NEWNET)");
        f();
    });
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Deletes the named link on drop if it still exists, so a failing test never leaves a device
/// behind (normally closing the TAP fds has already removed it).
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        if link_exists(&self.0) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
}

/// Whether a link exists in the calling thread's network namespace.
/// Waits (bounded, 2 s) for a TAP whose last fd closed to disappear. The last close defers
/// the netdev's unregistration (deferred fput, then rtnl, which other tests' namespace work
/// contends for), so "gone" is not instant. True when it is gone.
pub fn link_vanishes(name: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while link_exists(name) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    !link_exists(name)
}

pub fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `ip -j <args>` parsed as JSON (run from the calling thread, so in its namespace).
pub fn ip_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip")
        .arg("-j")
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip -j {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ip -j output is JSON")
}
