//! See `store_records_checks.rs`: the properties, shared with the stable seed run in
//! `crates/ctl/tests/fuzz_seeds.rs`.
#![no_main]

#[path = "store_records_checks.rs"]
mod store_records_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    store_records_checks::check(data);
});
