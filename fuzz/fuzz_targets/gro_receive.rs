//! See `gro_receive_checks.rs`: the properties, shared with the stable seed run in
//! `crates/dataplane/tests/fuzz_seeds.rs`.
#![no_main]

#[path = "gro_receive_checks.rs"]
mod gro_receive_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = gro_receive_checks::check(data);
});
