#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Runs the committed seed corpora of the engine's fuzz targets (`fuzz/seeds/<target>`) through
//! the targets' own checks, so stable CI exercises the same properties without cargo-fuzz.

use std::path::PathBuf;

#[path = "../../../fuzz/fuzz_targets/config_file_checks.rs"]
mod config_file_checks;
#[path = "../../../fuzz/fuzz_targets/control_request_checks.rs"]
mod control_request_checks;
#[path = "../../../fuzz/fuzz_targets/gro_receive_checks.rs"]
mod gro_receive_checks;

/// Every seed of `target`, with its file name.
fn seeds(target: &str, at_least: usize) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= at_least,
        "seed corpus missing: {} files in {}",
        out.len(),
        dir.display()
    );
    out
}

/// Cuts where truncation bites: every prefix of the first 96 bytes, then every 37th.
fn prefixes(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    (0..data.len())
        .filter(|cut| *cut < 96 || cut % 37 == 0)
        .map(move |cut| &data[..cut])
}

#[test]
fn gro_receive_seeds_pass_the_fuzz_checks() {
    let mut total = gro_receive_checks::Reached::default();
    for (name, data) in seeds("gro_receive", 20) {
        let reached = gro_receive_checks::check(&data);
        eprintln!("{name}: {reached:?}");
        total += reached;
        for prefix in prefixes(&data) {
            gro_receive_checks::check(prefix);
        }
    }
    // The seeds are what the fuzzer starts from: each path must be reached by at least one.
    let gro_receive_checks::Reached {
        delivered,
        dropped,
        superframes,
        udp_superframes,
        partial_completed,
        tunnel_whole,
        tunnel_segments,
    } = total;
    assert!(delivered > 0 && dropped > 0, "{total:?}");
    assert!(superframes > 0 && partial_completed > 0, "{total:?}");
    assert!(udp_superframes > 0, "{total:?}");
    assert!(tunnel_whole > 0 && tunnel_segments > 0, "{total:?}");
}

/// Every seed of `target`, and its prefixes, through `check`.
fn run_seeds(target: &str, at_least: usize, check: fn(&[u8])) {
    for (_, data) in seeds(target, at_least) {
        check(&data);
        for prefix in prefixes(&data) {
            check(prefix);
        }
    }
}

#[test]
fn config_file_seeds_pass_the_fuzz_checks() {
    run_seeds("config_file", 15, config_file_checks::check);
}

#[test]
fn control_request_seeds_pass_the_fuzz_checks() {
    run_seeds("control_request", 8, control_request_checks::check);
}
