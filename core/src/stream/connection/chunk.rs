//! [`Chunk`]: one payload queued for the socket as it is (no copy into the write buffer).

use std::ops::Deref;

use bytes::{Buf, Bytes};

use crate::protocol::OwnedPayload;

/// A queued payload: shared bytes, or a message's own buffer (a `String` line) kept as it
/// is: `Bytes` of a vector with spare room (where a line's separator went) would cost an
/// allocation and its free per message. As small as `Bytes` (the queue moves them).
#[derive(Debug)]
pub(super) enum Chunk {
    Shared(Bytes),
    Owned(Vec<u8>),
}

impl Chunk {
    #[inline]
    pub(super) fn advance(&mut self, n: usize) {
        match self {
            Chunk::Shared(b) => b.advance(n),
            Chunk::Owned(v) if n >= v.len() => v.clear(),
            // A partial write, rare: then the `Bytes` (and its allocation) after all.
            Chunk::Owned(v) => {
                let mut b = Bytes::from(std::mem::take(v));
                b.advance(n);
                *self = Chunk::Shared(b);
            }
        }
    }
}

impl Deref for Chunk {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Shared(b) => b,
            Chunk::Owned(v) => v,
        }
    }
}

impl From<Bytes> for Chunk {
    #[inline]
    fn from(b: Bytes) -> Self {
        Chunk::Shared(b)
    }
}

impl From<OwnedPayload> for Chunk {
    #[inline]
    fn from(p: OwnedPayload) -> Self {
        match p {
            OwnedPayload::Vec(v) => Chunk::Owned(v),
            OwnedPayload::Shared(b) => Chunk::Shared(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Chunk;

    #[test]
    fn a_chunk_is_no_larger_than_bytes() {
        assert_eq!(size_of::<Chunk>(), size_of::<bytes::Bytes>());
    }
}
