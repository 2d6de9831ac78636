//! Network byte order: the one place a header word is read from or written to bytes.
//!
//! Reads are checked: a word that runs past the end of the buffer is `None`, never a panic, so
//! code that walks a frame of unknown length (the flow hash, capture decoding) can ask for a field
//! and decide itself what a missing one means. The header views read through these too, after
//! their `check_len`, where `None` cannot happen.

/// The big-endian `u16` at `bytes[at..at + 2]`, or `None` when the buffer ends before it.
#[inline]
pub fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    word(bytes, at).map(u16::from_be_bytes)
}

/// The big-endian `u32` at `bytes[at..at + 4]`, or `None` when the buffer ends before it.
#[inline]
pub fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    word(bytes, at).map(u32::from_be_bytes)
}

/// Stores `value` big-endian at `bytes[at..at + 2]`; false (nothing written) when it does not fit.
#[inline]
pub fn set_be16(bytes: &mut [u8], at: usize, value: u16) -> bool {
    set_word(bytes, at, value.to_be_bytes())
}

/// Stores `value` big-endian at `bytes[at..at + 4]`; false (nothing written) when it does not fit.
#[inline]
pub fn set_be32(bytes: &mut [u8], at: usize, value: u32) -> bool {
    set_word(bytes, at, value.to_be_bytes())
}

#[inline]
fn word<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

#[inline]
fn set_word<const N: usize>(bytes: &mut [u8], at: usize, word: [u8; N]) -> bool {
    match at.checked_add(N).and_then(|end| bytes.get_mut(at..end)) {
        Some(field) => {
            field.copy_from_slice(&word);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_big_endian_and_checked() {
        let b = [0x12, 0x34, 0x56, 0x78, 0x9a];
        assert_eq!(be16(&b, 0), Some(0x1234));
        assert_eq!(be16(&b, 3), Some(0x789a));
        assert_eq!(be16(&b, 4), None);
        assert_eq!(be16(&b, usize::MAX), None);
        assert_eq!(be32(&b, 1), Some(0x3456_789a));
        assert_eq!(be32(&b, 2), None);
        assert_eq!(be32(&[], 0), None);
    }

    #[test]
    fn writes_fit_or_leave_the_buffer_alone() {
        let mut b = [0u8; 5];
        assert!(set_be16(&mut b, 3, 0xbeef));
        assert!(set_be32(&mut b, 0, 0x0102_0304));
        assert_eq!(b, [1, 2, 3, 4, 0xef]);
        assert!(!set_be16(&mut b, 4, 0xffff));
        assert!(!set_be32(&mut b, 2, u32::MAX));
        assert!(!set_be16(&mut b, usize::MAX, 0));
        assert_eq!(b, [1, 2, 3, 4, 0xef]);
    }
}
