//! Copy and Internet-checksum in one pass.
//!
//! Splitting a superframe touches every payload byte twice (copy, then checksum); doing both in one
//! loop reads the source once while it is in registers. The sum is taken over *native-endian*
//! 64-bit words with end-around carry: the ones'-complement sum is byte-order independent
//! (RFC 1071 §2(B)), so the folded result only needs a byte swap on little-endian hosts.

use crate::checksum::Sum;

/// Copies `src` into `dst` (both must have the same length; otherwise only the common prefix is
/// copied and summed) and returns the checksum of the copied bytes as an unfolded [`Sum`], as
/// [`Sum::add_bytes`] would. Like `add_bytes`, `src` must start at an even offset of the summed
/// packet.
pub fn copy_and_sum(dst: &mut [u8], src: &[u8]) -> Sum {
    let len = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..len], &src[..len]);

    // Two accumulators with end-around carry break the add->carry dependency chain.
    let (mut a, mut b) = (0u64, 0u64);
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (dc, sc) in (&mut d).zip(&mut s) {
        let mut w = [0u8; 16];
        w.copy_from_slice(sc);
        dc.copy_from_slice(&w);
        let lo = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        let hi = u64::from_ne_bytes([w[8], w[9], w[10], w[11], w[12], w[13], w[14], w[15]]);
        let (sa, ca) = a.overflowing_add(lo);
        a = sa + ca as u64;
        let (sb, cb) = b.overflowing_add(hi);
        b = sb + cb as u64;
    }
    let (sum, carry) = a.overflowing_add(b);
    let acc = sum + carry as u64;
    // Fold 64 -> 16 bits in native order, then turn into network order.
    let mut folded = (acc >> 32) + (acc & 0xFFFF_FFFF);
    folded = (folded >> 16) + (folded & 0xFFFF);
    folded = (folded >> 16) + (folded & 0xFFFF);
    folded = (folded >> 16) + (folded & 0xFFFF);
    let folded = u16::from_be(folded as u16);

    let tail_src = s.remainder();
    let tail_dst = d.into_remainder();
    tail_dst.copy_from_slice(tail_src);
    // The tail starts at a multiple of 16, so its own sum can be added to the body's.
    Sum::new().add_u16(folded).add_bytes(tail_src)
}

/// The baseline `copy_and_sum` is benchmarked against: `memcpy`, then a separate checksum pass.
pub fn copy_then_sum(dst: &mut [u8], src: &[u8]) -> Sum {
    let len = dst.len().min(src.len());
    dst[..len].copy_from_slice(&src[..len]);
    Sum::new().add_bytes(&dst[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn fused_matches_separate(data in proptest::collection::vec(proptest::num::u8::ANY, 0..3000), start in 0usize..64) {
            let start = start.min(data.len()) & !1;
            let src = &data[start..];
            let mut dst = vec![0u8; src.len()];
            let sum = copy_and_sum(&mut dst, src);
            proptest::prop_assert_eq!(&dst[..], src);
            proptest::prop_assert_eq!(sum.fold(), Sum::new().add_bytes(src).fold());
            let mut dst2 = vec![0u8; src.len()];
            proptest::prop_assert_eq!(copy_then_sum(&mut dst2, src).fold(), sum.fold());
        }
    }

    #[test]
    fn all_ones_does_not_overflow() {
        let src = vec![0xFFu8; 70_000];
        let mut dst = vec![0u8; src.len()];
        assert_eq!(copy_and_sum(&mut dst, &src).fold(), 0xFFFF);
        assert_eq!(dst, src);
    }
}
