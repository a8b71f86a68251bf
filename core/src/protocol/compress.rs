//! What `Zlib` and `Zstd` share: the bounded output buffer that
//! stops a decompression bomb at the size limit.

use super::{ConfigError, DeserializeError};

/// Checks a decompressed-size limit given to a compression wrapper.
pub(super) fn check_limit(limit: usize) -> Result<usize, ConfigError> {
    if limit == 0 {
        return Err(ConfigError::Zero {
            what: "decompressed size limit",
        });
    }
    Ok(limit)
}

/// The output of one decompression, never allocated past `limit + 1` bytes: the byte past the
/// limit is how an over-limit payload is told apart from one of exactly `limit` bytes.
pub(super) struct Bounded {
    pub(super) buf: Vec<u8>,
    limit: usize,
}

impl Bounded {
    /// An empty output; the first allocation guesses from the compressed size.
    pub(super) fn new(compressed_len: usize, limit: usize) -> Self {
        let first = compressed_len
            .saturating_mul(4)
            .max(256)
            .min(limit.saturating_add(1));
        Self {
            buf: Vec::with_capacity(first),
            limit,
        }
    }

    /// Makes room for more output: doubles the capacity, never past `limit + 1`. Fails once
    /// the output holds more than `limit` bytes.
    pub(super) fn grow(&mut self) -> Result<(), DeserializeError> {
        self.check()?;
        if self.buf.len() == self.buf.capacity() {
            let target = self
                .buf
                .capacity()
                .saturating_mul(2)
                .max(256)
                .min(self.limit.saturating_add(1));
            self.buf.reserve_exact(target - self.buf.len());
        }
        Ok(())
    }

    /// The output, without a copy.
    pub(super) fn into_bytes(self) -> bytes::BytesMut {
        bytes::Bytes::from(self.buf).into()
    }

    /// Fails if the output holds more than `limit` bytes.
    pub(super) fn check(&self) -> Result<(), DeserializeError> {
        if self.buf.len() > self.limit {
            return Err(DeserializeError::TooLarge {
                limit: self.limit,
                got: self.buf.len(),
            });
        }
        Ok(())
    }
}
