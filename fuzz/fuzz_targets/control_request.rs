//! See `control_request_checks.rs`: the properties, shared with the stable seed run in
//! `crates/dataplane/tests/fuzz_seeds.rs`.
#![no_main]

#[path = "control_request_checks.rs"]
mod control_request_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    control_request_checks::check(data);
});
