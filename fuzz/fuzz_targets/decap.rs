//! Arbitrary bytes into every receive-side entry point of vxnet-encap. The checks live in
//! `decap_checks.rs`, which `crates/encap/tests/fuzz_corpus.rs` also runs over the seed corpus so
//! that stable CI exercises the same properties.
#![no_main]

#[path = "decap_checks.rs"]
mod decap_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    decap_checks::check(data);
});
