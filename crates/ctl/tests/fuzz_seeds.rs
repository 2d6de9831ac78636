#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Runs the committed seed corpus of the store-record fuzz target (`fuzz/seeds/store_records`)
//! through the target's own checks, so stable CI exercises the same properties: the record
//! checks of `vxnet-cluster` and the engine link of this crate, which turns a view into what the
//! engine is told.

#[path = "../../../fuzz/fuzz_targets/store_records_checks.rs"]
mod store_records_checks;

#[test]
fn store_record_seeds_pass_the_fuzz_checks() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/seeds/store_records"
    );
    let mut seeds = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        store_records_checks::check(&data);
        for cut in 0..data.len() {
            store_records_checks::check(&data[..cut]);
        }
        seeds += 1;
    }
    assert!(seeds >= 8, "seed corpus missing: {seeds} files in {dir}");
}
