//! AES-256-GCM seal/open in place (12-byte AAD, as ESP with ESN) and HKDF-SHA256 in ring and
//! aws-lc-rs, per packet size. Each figure is the best of 40 batches: on a shared machine the
//! minimum is what the code costs, the rest is other processes' time slices.

use std::hint::black_box;
use std::time::Instant;

const SIZES: [usize; 4] = [64, 512, 1400, 9000];
const KEY: [u8; 32] = [7; 32];
const AAD: [u8; 12] = [1; 12];

fn best_ns(mut f: impl FnMut(), per_batch: u32) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..40 {
        let t = Instant::now();
        for _ in 0..per_batch {
            f();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / f64::from(per_batch));
    }
    best
}

fn nonce_bytes(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// The two crates share ring's API, so one macro measures both.
macro_rules! measure {
    ($krate:ident, $size:expr, $per:expr) => {{
        use $krate::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &KEY).unwrap());
        let mut buf = vec![0u8; $size];
        let mut counter = 0u64;
        let seal = best_ns(
            || {
                counter += 1;
                let nonce = Nonce::assume_unique_for_key(nonce_bytes(counter));
                let tag = key.seal_in_place_separate_tag(nonce, Aad::from(AAD), &mut buf);
                let _ = black_box(tag.unwrap());
            },
            $per,
        );
        let mut sealed = vec![0u8; $size];
        let nonce = || Nonce::assume_unique_for_key(nonce_bytes(3));
        let tag = key.seal_in_place_separate_tag(nonce(), Aad::from(AAD), &mut sealed);
        sealed.extend_from_slice(tag.unwrap().as_ref());
        let mut work = sealed.clone();
        let open = best_ns(
            || {
                work.copy_from_slice(&sealed);
                let plain = key.open_in_place(nonce(), Aad::from(AAD), &mut work);
                black_box(plain.unwrap().len());
            },
            $per,
        );
        (seal, open)
    }};
}

macro_rules! hkdf {
    ($krate:ident) => {{
        use $krate::hkdf::{KeyType, Salt, HKDF_SHA256};
        struct Len;
        impl KeyType for Len {
            fn len(&self) -> usize {
                36
            }
        }
        best_ns(
            || {
                let prk = Salt::new(HKDF_SHA256, b"vxnet").extract(black_box(&KEY));
                let info = [&AAD[..]];
                let mut out = [0u8; 36];
                prk.expand(&info, Len).unwrap().fill(&mut out).unwrap();
                black_box(out);
            },
            2000,
        )
    }};
}

fn main() {
    println!("| size | ring seal | ring open | aws-lc-rs seal | aws-lc-rs open |");
    println!("|---|---|---|---|---|");
    for size in SIZES {
        let per = if size > 2000 { 300 } else { 2000 };
        let (rs, ro) = measure!(ring, size, per);
        let (a_s, ao) = measure!(aws_lc_rs, size, per);
        println!("| {size} B | {rs:.0} ns | {ro:.0} ns | {a_s:.0} ns | {ao:.0} ns |");
    }
    println!(
        "| HKDF-SHA256 extract + expand 36 B | {:.0} ns | | {:.0} ns | |",
        hkdf!(ring),
        hkdf!(aws_lc_rs)
    );
}
