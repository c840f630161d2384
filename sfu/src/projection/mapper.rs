//! Counter arithmetic shared by every rewritten field (RTP seq, picture ID, TL0PICIDX, AV1 frame
//! number): unwrapping an N-bit counter to `i64`, and mapping input values to a gap-free output
//! space that skips the values the projection dropped.

/// Extends an N-bit wrapping counter to `i64`, relative to the highest value seen so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unwrap {
    bits: u32,
    max: Option<i64>,
}

impl Unwrap {
    pub(crate) const fn new(bits: u32) -> Self {
        Self { bits, max: None }
    }

    /// The extended value closest to the highest value seen so far.
    pub(crate) fn extend(&self, v: u32) -> i64 {
        let modulus = 1i64 << self.bits;
        let v = i64::from(v) & (modulus - 1);
        let Some(max) = self.max else { return v };
        let base = max - max.rem_euclid(modulus);
        let mut c = base + v;
        if c - max > modulus / 2 {
            c -= modulus;
        } else if max - c > modulus / 2 {
            c += modulus;
        }
        c
    }

    /// Extends `v` and records it; returns `(extended, is_newest)` where `is_newest` means the
    /// value is higher than every value seen before.
    pub(crate) fn update(&mut self, v: u32) -> (i64, bool) {
        let ext = self.extend(v);
        let newest = self.max.is_none_or(|m| ext > m);
        if newest {
            self.max = Some(ext);
        }
        (ext, newest)
    }
}

/// Truncates an extended value back to its N-bit wire form.
pub(crate) fn wrap(v: i64, bits: u32) -> u32 {
    // Masking keeps the low `bits` bits, which is exactly the wire value; bits <= 32.
    (v & ((1i64 << bits) - 1)) as u32
}

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    /// First dropped input value.
    first: i64,
    /// One past the last dropped input value.
    end: i64,
    /// `input - output` for inputs at or after `end`.
    offset: i64,
}

/// Maps extended input values of one segment (a stretch of forwarding from one encoding) to
/// extended output values: `out = in - offset(in)`, where the offset grows by one for every value
/// that was dropped *when it was the newest value* (so dropped frames leave no gap). Values that
/// were missing at that time (losses) keep their slot, so late arrivals map into it and the
/// receiver sees (and NACKs) real losses. Fixed-size: no allocation. `N` dropped runs are
/// remembered; inputs older than the oldest become unmappable ("too old").
#[derive(Debug, Clone)]
pub(crate) struct DropMapper<const N: usize> {
    /// Inputs below this are unmappable.
    floor: i64,
    /// Offset for inputs in `[floor, runs[0].first)`.
    base_offset: i64,
    runs: [Run; N],
    /// Ring: index of the oldest run and number of runs.
    start: usize,
    len: usize,
    /// Highest input value seen by this mapper.
    head: i64,
    /// Outputs at or above this are refused (the segment ended; later outputs belong to another).
    limit: Option<i64>,
    active: bool,
}

impl<const N: usize> Default for DropMapper<N> {
    fn default() -> Self {
        Self {
            floor: 0,
            base_offset: 0,
            runs: [Run::default(); N],
            start: 0,
            len: 0,
            head: 0,
            limit: None,
            active: false,
        }
    }
}

impl<const N: usize> DropMapper<N> {
    /// Starts a new segment: input `first_in` maps to `first_out`; older inputs are unmappable.
    pub(crate) fn reset(&mut self, first_in: i64, first_out: i64) {
        self.floor = first_in;
        self.base_offset = first_in - first_out;
        self.start = 0;
        self.len = 0;
        self.head = first_in - 1;
        self.limit = None;
        self.active = true;
    }

    /// Ends the segment: outputs at or above `limit` are refused from now on.
    pub(crate) fn freeze(&mut self, limit: i64) {
        if self.active && self.limit.is_none() {
            self.limit = Some(limit);
        }
    }

    fn run(&self, i: usize) -> &Run {
        &self.runs[(self.start + i) % N]
    }

    /// The output for `v`, or `None` if `v` is too old, was itself dropped, or would collide with
    /// a later segment.
    pub(crate) fn map(&self, v: i64) -> Option<i64> {
        if !self.active || v < self.floor {
            return None;
        }
        let mut offset = self.base_offset;
        for i in (0..self.len).rev() {
            let r = self.run(i);
            if v >= r.end {
                offset = r.offset;
                break;
            }
            if v >= r.first {
                return None;
            }
        }
        let out = v - offset;
        match self.limit {
            Some(l) if out >= l => None,
            _ => Some(out),
        }
    }

    /// Records that `v` was forwarded.
    pub(crate) fn advance(&mut self, v: i64) {
        if v > self.head {
            self.head = v;
        }
    }

    /// Records that `v` was dropped. Only a value newer than every value seen shifts later
    /// outputs down; an older one keeps its slot (a gap the receiver may NACK).
    pub(crate) fn drop_value(&mut self, v: i64) {
        if !self.active || v <= self.head || self.limit.is_some() {
            self.advance(v);
            return;
        }
        self.head = v;
        let cur = if self.len == 0 {
            self.base_offset
        } else {
            self.run(self.len - 1).offset
        };
        if self.len > 0 {
            let last = (self.start + self.len - 1) % N;
            if self.runs[last].end == v {
                self.runs[last].end = v + 1;
                self.runs[last].offset += 1;
                return;
            }
        }
        if self.len == N {
            // Forget the oldest run: inputs before its end become too old.
            let old = self.runs[self.start];
            self.floor = old.end;
            self.base_offset = old.offset;
            self.start = (self.start + 1) % N;
            self.len -= 1;
        }
        let idx = (self.start + self.len) % N;
        self.runs[idx] = Run {
            first: v,
            end: v + 1,
            offset: cur + 1,
        };
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unwrapping follows wrap-around in both directions.
    #[test]
    fn unwrap_wraps() {
        let mut u = Unwrap::new(16);
        assert_eq!(u.update(65534), (65534, true));
        assert_eq!(u.update(1), (65537, true));
        assert_eq!(u.update(65535), (65535, false));
        let mut p = Unwrap::new(15);
        assert_eq!(p.update(32767).0, 32767);
        assert_eq!(p.update(0).0, 32768);
        assert_eq!(wrap(32768, 15), 0);
    }

    /// Drops at the head close the gap; a lost value keeps its slot for a late arrival.
    #[test]
    fn mapper_skips_head_drops_keeps_losses() {
        let mut m = DropMapper::<8>::default();
        m.reset(100, 1);
        assert_eq!(m.map(100), Some(1));
        m.advance(100);
        // 101 lost, 102 dropped at head, 103 forwarded.
        m.drop_value(102);
        assert_eq!(m.map(103), Some(3));
        m.advance(103);
        assert_eq!(m.map(101), Some(2));
        assert_eq!(m.map(102), None);
        assert_eq!(m.map(99), None);
        m.drop_value(104);
        m.drop_value(105);
        assert_eq!(m.map(106), Some(4));
        m.freeze(5);
        assert_eq!(m.map(107), None);
    }
}
