//! The anti-replay window of one inbound SA (RFC 4303 §3.4.3) over 64-bit extended sequence
//! numbers, with the receiver's inference of the unsent high 32 bits (RFC 4303 Appendix A2).
//!
//! The bitmap is a ring of 64-bit words indexed by `seq / 64` (RFC 6479, as WireGuard does): moving
//! the window forward clears the words it passes instead of shifting the whole bitmap, so advancing
//! by one packet costs the same as by a thousand. One word is always being reused, so the window is
//! [`WINDOW`] = 4032 sequence numbers behind the highest one accepted.
//!
//! Use is two-step, as RFC 4303 requires: [`check`](ReplayWindow::check) before decrypting (cheap,
//! rejects duplicates and stale packets without spending an AES pass on them), and
//! [`commit`](ReplayWindow::commit) only after the ICV verified, so a forged packet never moves the
//! window. `commit` repeats the check, so two workers racing with the same packet cannot both win.

use crate::esp::EspError;

const WORDS: usize = 64;
const BITS: u64 = (WORDS as u64) * 64;
/// How far behind the highest accepted sequence number a packet may arrive and still be accepted
/// (RFC 4303 asks for at least 32, recommends 64; reordering across a GSO batch needs far more).
pub const WINDOW: u64 = BITS - 64;
/// How far ahead of the highest accepted sequence number a packet may be. A sender's counter
/// moves by one per packet, so a gap of 2^32 would be four billion packets lost in a row: such a
/// number is refused rather than accepted, since accepting it would move the window past
/// everything the real sender has yet to send (the window's top is then never reachable again,
/// and every later genuine packet is a "replay"). Anyone holding the network key could otherwise
/// seal one packet numbered 2^64 - 1 on another peer's SA and silence it. The bound is also what
/// RFC 4303 Appendix A2's inference can reach (2^32 from the window), so no sender that a
/// receiver without the full number in the IV could follow is refused.
pub const MAX_AHEAD: u64 = 1 << 32;

#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest sequence number accepted so far; 0 while none was (ESP never sends 0).
    top: u64,
    bitmap: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("top", &self.top)
            .field("window", &WINDOW)
            .finish()
    }
}

impl ReplayWindow {
    pub const fn new() -> Self {
        ReplayWindow {
            top: 0,
            bitmap: [0; WORDS],
        }
    }

    /// A window that refuses every sequence number up to and including `floor`, as if all of
    /// them had been received: for an SA whose window a previous run of the receiver kept (see
    /// the data plane's replay store), so that packets it accepted then are not accepted again.
    /// Numbers above `floor` are taken as usual, including late ones within the window of a top
    /// that moved on since.
    pub fn after(floor: u64) -> Self {
        if floor == 0 {
            return Self::new();
        }
        // Every slot of the ring stands for a number at or below `floor`, except the bits of
        // floor's own word above it (numbers still to come).
        let mut bitmap = [u64::MAX; WORDS];
        let (word, bit) = Self::position(floor);
        bitmap[word] = bit | (bit - 1);
        ReplayWindow { top: floor, bitmap }
    }

    /// The highest sequence number accepted, `None` before the first packet.
    pub const fn top(&self) -> Option<u64> {
        if self.top == 0 {
            None
        } else {
            Some(self.top)
        }
    }

    /// RFC 4303 Appendix A2: the full sequence number a received low half most likely belongs to,
    /// given the window. The window covers `[top - WINDOW + 1, top]`; a low half that falls below
    /// the window's bottom within the same 2^32 block is taken to be from the next block (the
    /// sender moved on), one above it within the previous block as a late packet. `None` when the
    /// answer would lie before sequence number 1, i.e. the packet cannot be valid.
    pub fn infer(&self, seq_low: u32) -> Option<u64> {
        let w = WINDOW as u32;
        let top_low = self.top as u32;
        let top_high = (self.top >> 32) as u32;
        let bottom_low = top_low.wrapping_sub(w - 1);
        let high = if top_low >= w - 1 {
            // Case A: the window lies within one block of 2^32.
            if seq_low >= bottom_low {
                Some(top_high)
            } else {
                top_high.checked_add(1)
            }
        } else if seq_low >= bottom_low {
            // Case B: the window spans two blocks, and this one is in the lower of them.
            top_high.checked_sub(1)
        } else {
            Some(top_high)
        };
        let seq = (u64::from(high?) << 32) | u64::from(seq_low);
        (seq != 0).then_some(seq)
    }

    /// Whether `seq` may be accepted: not seen before and not older than the window.
    pub fn check(&self, seq: u64) -> Result<(), EspError> {
        if seq == 0 {
            return Err(EspError::TooOld { seq });
        }
        if seq > self.top {
            if self.top != 0 && seq - self.top > MAX_AHEAD {
                return Err(EspError::BeyondWindow { seq, top: self.top });
            }
            return Ok(());
        }
        if self.top - seq >= WINDOW {
            return Err(EspError::TooOld { seq });
        }
        let (word, bit) = Self::position(seq);
        if self.bitmap[word] & bit != 0 {
            return Err(EspError::Replayed { seq });
        }
        Ok(())
    }

    /// Marks `seq` as received, after its ICV verified, moving the window forward if it is the
    /// new highest. Fails (and changes nothing) if `seq` would not pass [`check`](Self::check) now.
    pub fn commit(&mut self, seq: u64) -> Result<(), EspError> {
        self.check(seq)?;
        if seq > self.top {
            let old_block = self.top / 64;
            let new_block = seq / 64;
            let passed = (new_block - old_block).min(WORDS as u64);
            for i in 1..=passed {
                let word = ((old_block + i) % WORDS as u64) as usize;
                self.bitmap[word] = 0;
            }
            self.top = seq;
        }
        let (word, bit) = Self::position(seq);
        self.bitmap[word] |= bit;
        Ok(())
    }

    fn position(seq: u64) -> (usize, u64) {
        let index = seq % BITS;
        ((index / 64) as usize, 1u64 << (index % 64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn accept(w: &mut ReplayWindow, seq: u64) -> Result<(), EspError> {
        w.check(seq)?;
        w.commit(seq)
    }

    #[test]
    fn in_order_out_of_order_duplicate_and_too_old() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.top(), None);
        assert_eq!(accept(&mut w, 0), Err(EspError::TooOld { seq: 0 }));
        for seq in 1..=10 {
            accept(&mut w, seq).unwrap();
        }
        assert_eq!(accept(&mut w, 5), Err(EspError::Replayed { seq: 5 }));
        accept(&mut w, 100).unwrap();
        accept(&mut w, 50).unwrap();
        assert_eq!(accept(&mut w, 50), Err(EspError::Replayed { seq: 50 }));
        accept(&mut w, 100 + WINDOW).unwrap();
        // 100 is exactly WINDOW behind the top now: out.
        assert_eq!(accept(&mut w, 100), Err(EspError::TooOld { seq: 100 }));
        accept(&mut w, 101).unwrap();
        assert_eq!(w.top(), Some(100 + WINDOW));
    }

    #[test]
    fn a_big_jump_forgets_everything_behind_the_window() {
        let mut w = ReplayWindow::new();
        accept(&mut w, 5).unwrap();
        let top = MAX_AHEAD;
        accept(&mut w, top).unwrap();
        assert_eq!(accept(&mut w, 5), Err(EspError::TooOld { seq: 5 }));
        // Same bitmap slot as 5 in the old window, must not be taken as a duplicate of it.
        accept(&mut w, top - BITS + 5 + 64).unwrap();
    }

    #[test]
    fn a_number_beyond_max_ahead_is_refused_and_moves_nothing() {
        let mut w = ReplayWindow::new();
        // The first packet of an SA may start anywhere (senders draw a random start).
        accept(&mut w, 1 << 61).unwrap();
        for seq in [(1 << 61) + MAX_AHEAD + 1, u64::MAX] {
            assert_eq!(
                accept(&mut w, seq),
                Err(EspError::BeyondWindow { seq, top: 1 << 61 })
            );
            assert_eq!(
                w.commit(seq),
                Err(EspError::BeyondWindow { seq, top: 1 << 61 })
            );
        }
        assert_eq!(w.top(), Some(1 << 61));
        // The real sender's next packets still pass.
        accept(&mut w, (1 << 61) + 1).unwrap();
        accept(&mut w, (1 << 61) + MAX_AHEAD + 1).unwrap();
    }

    #[test]
    fn after_a_floor_everything_up_to_it_is_refused() {
        for floor in [1u64, 63, 64, 65, 127, 5000, (1 << 40) + 17] {
            let mut w = ReplayWindow::after(floor);
            assert_eq!(w.top(), Some(floor));
            for back in 0..(WINDOW + 70).min(floor) {
                let seq = floor - back;
                assert!(
                    accept(&mut w, seq).is_err(),
                    "floor {floor}: {seq} accepted"
                );
            }
            // Above the floor: accepted, and late ones of the new top's window too.
            accept(&mut w, floor + 3).unwrap();
            accept(&mut w, floor + 1).unwrap();
            accept(&mut w, floor + 2).unwrap();
            assert!(accept(&mut w, floor).is_err());
        }
        assert_eq!(ReplayWindow::after(0).top(), None);
    }

    #[test]
    fn commit_refuses_what_check_would() {
        let mut w = ReplayWindow::new();
        w.commit(7).unwrap();
        assert_eq!(w.commit(7), Err(EspError::Replayed { seq: 7 }));
    }

    #[test]
    fn infer_case_a_and_b() {
        let mut w = ReplayWindow::new();
        // Empty window: low halves map to the first block.
        assert_eq!(w.infer(1), Some(1));
        assert_eq!(w.infer(0), None);
        // Near the end of block 0 the sender wraps into block 1.
        accept(&mut w, 0xFFFF_FFF0).unwrap();
        assert_eq!(w.infer(0xFFFF_FFF5), Some(0xFFFF_FFF5));
        assert_eq!(w.infer(3), Some((1 << 32) | 3));
        // Case B: top just past the wrap, window reaches back into block 0.
        accept(&mut w, (1 << 32) | 3).unwrap();
        assert_eq!(w.infer(0xFFFF_FFF1), Some(0xFFFF_FFF1));
        assert_eq!(w.infer(9), Some((1 << 32) | 9));
        // Far below the window in the same block: taken as the next block (A2's choice).
        let mut w = ReplayWindow::new();
        accept(&mut w, (7 << 32) | 0x8000_0000).unwrap();
        assert_eq!(w.infer(0x10), Some((8 << 32) | 0x10));
        assert_eq!(w.infer(0x8000_0001), Some((7 << 32) | 0x8000_0001));
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Relative to the current top: behind (negative) or ahead.
        Offset(i64),
        /// A duplicate of something accepted earlier (index into the accepted list).
        Repeat(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (-(WINDOW as i64) - 200..300i64).prop_map(Op::Offset),
            1 => (-20_000i64..20_000).prop_map(Op::Offset),
            2 => any::<usize>().prop_map(Op::Repeat),
        ]
    }

    proptest! {
        /// Against a model that remembers every accepted number: never a duplicate, every unseen
        /// number inside the window accepted, everything at or beyond the window's edge refused.
        #[test]
        fn matches_the_model(start in 1u64..u64::MAX / 2, ops in proptest::collection::vec(op(), 1..400)) {
            let mut w = ReplayWindow::new();
            let mut seen = BTreeSet::new();
            let mut accepted = Vec::new();
            accept(&mut w, start).unwrap();
            seen.insert(start);
            accepted.push(start);
            let mut top = start;
            for op in ops {
                let seq = match op {
                    Op::Offset(d) => top.saturating_add_signed(d).max(1),
                    Op::Repeat(i) => accepted[i % accepted.len()],
                };
                let result = accept(&mut w, seq);
                let too_old = top - seq.min(top) >= WINDOW;
                if seen.contains(&seq) {
                    prop_assert!(result.is_err(), "duplicate {} accepted", seq);
                } else if too_old {
                    prop_assert_eq!(result, Err(EspError::TooOld { seq }));
                } else {
                    prop_assert_eq!(result, Ok(()), "fresh {} in window refused (top {})", seq, top);
                }
                if result.is_ok() {
                    seen.insert(seq);
                    accepted.push(seq);
                    top = top.max(seq);
                }
                prop_assert_eq!(w.top(), Some(top));
            }
        }

        /// A2 recovers the full number of any packet within the window or up to 2^31 ahead of it.
        #[test]
        fn infer_recovers_the_sequence(top in 1u64..u64::MAX / 2, back in 0u64..WINDOW, ahead in 1u64..(1 << 31)) {
            let mut w = ReplayWindow::new();
            accept(&mut w, top).unwrap();
            if back < top {
                let seq = top - back;
                prop_assert_eq!(w.infer(seq as u32), Some(seq));
            }
            let seq = top + ahead;
            prop_assert_eq!(w.infer(seq as u32), Some(seq));
        }
    }
}
