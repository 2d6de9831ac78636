//! See `config_file_checks.rs`: the properties, shared with the stable seed run in
//! `crates/dataplane/tests/fuzz_seeds.rs`.
#![no_main]

#[path = "config_file_checks.rs"]
mod config_file_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    config_file_checks::check(data);
});
