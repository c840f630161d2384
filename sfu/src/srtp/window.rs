//! A sliding window of SRTP packet indices (RFC 3711 §3.3.2): the highest index seen and which
//! of the `WIDTH` below it were seen, from which the ROC of a new sequence number is estimated
//! (Appendix A). Inbound it is the replay window (128 packets, libsrtp's default); outbound it
//! records which indices were used, so no index is ever encrypted twice (64 packets).

/// The bit set of a window: `u64` or `u128`.
pub(super) trait Bits: Copy + std::fmt::Debug {
    /// Packets tracked below the highest.
    const WIDTH: u64;
    const NONE: Self;
    const ALL: Self;
    /// `self << n`, zero when `n` ≥ `WIDTH`.
    fn shifted(self, n: u64) -> Self;
    fn with(self, bit: u64) -> Self;
    fn has(self, bit: u64) -> bool;
}

macro_rules! bits {
    ($t:ty) => {
        impl Bits for $t {
            const WIDTH: u64 = <$t>::BITS as u64;
            const NONE: Self = 0;
            const ALL: Self = <$t>::MAX;
            fn shifted(self, n: u64) -> Self {
                if n >= Self::WIDTH {
                    0
                } else {
                    self << n
                }
            }
            fn with(self, bit: u64) -> Self {
                self | (1 << bit)
            }
            fn has(self, bit: u64) -> bool {
                self & (1 << bit) != 0
            }
        }
    };
}
bits!(u64);
bits!(u128);

/// Highest index `top` and the `B::WIDTH` below it (bit `d` set = `top - d` seen); anything
/// older than the window counts as seen.
#[derive(Debug, Clone, Copy)]
pub(super) struct IndexWindow<B: Bits> {
    pub top: u64,
    pub bits: B,
}

impl<B: Bits> IndexWindow<B> {
    /// `first` seen, nothing else.
    pub fn new(first: u64) -> Self {
        Self {
            top: first,
            bits: B::NONE.with(0),
        }
    }

    /// Everything up to `top` seen.
    pub fn all_seen(top: u64) -> Self {
        Self { top, bits: B::ALL }
    }

    /// Whether `index` was not seen yet (and is not older than the window).
    pub fn fresh(&self, index: u64) -> bool {
        if index > self.top {
            return true;
        }
        let d = self.top - index;
        d < B::WIDTH && !self.bits.has(d)
    }

    /// Record `index` as seen.
    pub fn mark(&mut self, index: u64) {
        if index > self.top {
            self.bits = self.bits.shifted(index - self.top).with(0);
            self.top = index;
        } else if self.top - index < B::WIDTH {
            self.bits = self.bits.with(self.top - index);
        }
    }

    /// RFC 3711 Appendix A: the packet index for `seq`, guessing the ROC from the highest index.
    /// `None` for a packet from before the first ROC (the index would be negative) or past the
    /// 32-bit ROC (§3.3.1: the session must be rekeyed).
    pub fn estimate(&self, seq: u16) -> Option<u64> {
        let roc = self.top >> 16;
        let s_l = (self.top & 0xffff) as i32;
        let s = i32::from(seq);
        let v = if s_l < 0x8000 {
            if s - s_l > 0x8000 {
                roc.checked_sub(1)?
            } else {
                roc
            }
        } else if s_l - 0x8000 > s {
            roc + 1
        } else {
            roc
        };
        (v <= u64::from(u32::MAX)).then_some((v << 16) | u64::from(seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_widths_track_the_same_way() {
        fn check<B: Bits>() {
            let mut w = IndexWindow::<B>::new(1000);
            assert!(!w.fresh(1000));
            assert!(w.fresh(1001) && w.fresh(999));
            w.mark(1000 + B::WIDTH + 72);
            assert!(!w.fresh(1000), "older than the window");
            assert!(w.fresh(1000 + B::WIDTH + 71));
            w.mark(1000 + B::WIDTH + 71);
            assert!(!w.fresh(1000 + B::WIDTH + 71));
            let all = IndexWindow::<B>::all_seen(50);
            assert!((0..=50).all(|i| !all.fresh(i)) && all.fresh(51));
        }
        check::<u64>();
        check::<u128>();
    }
}
