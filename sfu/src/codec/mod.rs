//! Video payload formats the bridge must understand to switch layers per receiver: the VP8
//! payload descriptor ([`vp8`], RFC 7741), the VP9 payload descriptor ([`vp9`], RFC 9628), the
//! AV1 dependency descriptor RTP header extension ([`av1_dd`]) and H.264 keyframe detection
//! ([`h264`], RFC 6184).
//!
//! Parsers take `&[u8]` and return small `Copy` values (except an attached AV1 template
//! structure, which is parsed once per keyframe into `Vec`s). Rewriters work in place, keeping
//! every field's width, so a payload never changes length. Nothing here allocates per packet or
//! panics on network input. See `docs/codecs.md`.

pub mod av1_dd;
pub mod h264;
pub mod vp8;
pub mod vp9;

/// Why a payload or header extension could not be parsed or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input ends before the field named.
    #[error("truncated {what}")]
    Truncated {
        /// The field that did not fit.
        what: &'static str,
    },
    /// A reserved value or a combination the specification forbids.
    #[error("reserved or invalid value in {what}")]
    Reserved {
        /// The offending field.
        what: &'static str,
    },
    /// A value outside what the format (or this implementation's documented bound) allows.
    #[error("{what} out of range")]
    OutOfRange {
        /// The offending field.
        what: &'static str,
    },
    /// An AV1 dependency descriptor needs a template structure and none is known.
    #[error("no frame dependency structure known")]
    NoStructure,
    /// An AV1 dependency descriptor names a template the structure does not have.
    #[error("template id {template_id} not in the frame dependency structure")]
    UnknownTemplate {
        /// The frame's `frame_dependency_template_id`.
        template_id: u8,
    },
    /// The descriptor given to a rewriter does not describe the payload (different layout).
    #[error("descriptor does not match the payload")]
    Mismatch,
    /// An output buffer is too small.
    #[error("output buffer too short: need {need} bytes, have {have}")]
    BufferTooShort {
        /// Bytes needed (at least).
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

/// A fixed-capacity list stored inline (no allocation), for bounded per-packet lists.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FixedList<T: Copy + Default, const N: usize> {
    len: u8,
    items: [T; N],
}

impl<T: Copy + Default, const N: usize> Default for FixedList<T, N> {
    fn default() -> Self {
        Self {
            len: 0,
            items: [T::default(); N],
        }
    }
}

impl<T: Copy + Default + std::fmt::Debug, const N: usize> std::fmt::Debug for FixedList<T, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<T: Copy + Default, const N: usize> FixedList<T, N> {
    /// The capacity.
    pub const CAPACITY: usize = N;

    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a list from a slice, or `None` if it has more than `N` items.
    pub fn from_slice(items: &[T]) -> Option<Self> {
        let mut l = Self::default();
        for &i in items {
            if !l.push(i) {
                return None;
            }
        }
        Some(l)
    }

    /// Appends `item`; returns `false` (and drops it) when full.
    pub fn push(&mut self, item: T) -> bool {
        let i = usize::from(self.len);
        match self.items.get_mut(i) {
            Some(slot) if i < u8::MAX as usize => {
                *slot = item;
                self.len += 1;
                true
            }
            _ => false,
        }
    }

    /// The items.
    pub fn as_slice(&self) -> &[T] {
        // `len` only grows in `push`, which checks it against `N`.
        &self.items[..usize::from(self.len)]
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T: Copy + Default, const N: usize> std::ops::Deref for FixedList<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

/// Returns `&mut buf[..need]` or `BufferTooShort`.
pub(crate) fn out_buf(buf: &mut [u8], need: usize) -> Result<&mut [u8], CodecError> {
    let have = buf.len();
    buf.get_mut(..need).ok_or(CodecError::BufferTooShort { need, have })
}
