#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Runs every file of the fuzz seed corpus through the fuzz target's own checks, so the corpus
//! and the properties are exercised on stable without cargo-fuzz.

#[path = "../../../fuzz/fuzz_targets/decap_checks.rs"]
mod decap_checks;

#[test]
fn seed_corpus_passes_the_decap_fuzz_checks() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds/decap");
    let mut seeds = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        decap_checks::check(&data);
        // Every prefix too: truncation is where decoders usually go wrong.
        for cut in 0..data.len() {
            decap_checks::check(&data[..cut]);
        }
        seeds += 1;
    }
    assert!(seeds >= 20, "seed corpus missing: {seeds} files in {dir}");
}

#[test]
fn kernel_packets_are_accepted_by_every_entry_point() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds/decap");
    for fam in ["ipv4", "ipv6"] {
        for i in 1..=4 {
            let read =
                |layer: &str| std::fs::read(format!("{dir}/kernel-{fam}-{i}-{layer}")).unwrap();
            assert!(vxnet_encap::decapsulate_ethernet(&read("ethernet")).is_ok());
            assert!(vxnet_encap::decapsulate_ip(&read("ip")).is_ok());
            assert!(vxnet_encap::decapsulate(&read("vxlan")).is_ok());
        }
    }
}
