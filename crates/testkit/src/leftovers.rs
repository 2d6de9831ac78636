//! What a `vxnet demo` or `vxnet bench` run may leave behind, and sweeping it up.

use crate::process::run;

/// What a `vxnet demo` or `vxnet bench` run given `--prefix STEM` may have left: namespaces
/// `STEM-…` and its directory `TMP/STEM-PID`.
pub fn run_leftovers(stem: &str) -> Vec<String> {
    let prefix = format!("{stem}-");
    let mut found: Vec<String> = String::from_utf8_lossy(&run("ip netns list").stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
        found.extend(
            dir.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path().display().to_string()),
        );
    }
    found
}

/// On drop, removes whatever [`run_leftovers`] finds for the stem (only that run's names), so a
/// test whose `vxnet demo`/`bench` failed to clean up leaves nothing behind either.
pub struct SweepRun(pub String);

impl Drop for SweepRun {
    fn drop(&mut self) {
        for name in run_leftovers(&self.0) {
            if name.starts_with('/') {
                let _ = std::fs::remove_dir_all(&name);
            } else {
                let _ = run(&format!("ip netns pids {name} | xargs -r kill -9"));
                let _ = run(&format!("ip netns del {name}"));
            }
        }
    }
}
