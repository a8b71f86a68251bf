//! [`Zstd`]: a serializer wrapper that zstd-compresses what its inner serializer makes
//! (feature `zstd`, the `zstd` crate over the reference C library).
//!
//! Each payload is one complete zstd frame, compressed in one go (so the frame header carries
//! the content size and the window fits the content) and decompressed as a stream into a
//! buffer that stops at the size limit. The decoder's window is capped near the limit too, so
//! a header asking for a huge window is rejected instead of allocated.

use std::io::Read;

use ::zstd::bulk::Compressor;
use ::zstd::stream::read::Decoder;
use bytes::BytesMut;

use super::compress::{Bounded, check_limit};
use super::{ConfigError, DEFAULT_LIMIT, Decode, DeserializeError, Encode, SerializeError};

/// zstd around an inner serializer `S`: compresses what `S` makes, decompresses before `S`
/// parses.
///
/// A payload that decompresses past [`limit`](Zstd::limit) bytes is a
/// [`DeserializeError::TooLarge`]; a corrupt or truncated payload, or one whose window is
/// larger than the limit needs, is a [`DeserializeError::Decompress`]. Both are recoverable
/// parse errors.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use easynet_core::protocol::{Decode, DeserializeError, Encode, RawBytes, Zstd};
///
/// let zstd = Zstd::new(RawBytes).with_limit(1024).unwrap().with_level(19).unwrap();
/// let mut out = BytesMut::new();
/// zstd.encode(&Bytes::from(vec![b'a'; 1000]), &mut out).unwrap();
/// assert!(out.len() < 100);
/// let back: Bytes = zstd.decode(out).unwrap();
/// assert_eq!(back.len(), 1000);
///
/// let mut bomb = BytesMut::new();
/// zstd.encode(&Bytes::from(vec![0; 1 << 20]), &mut bomb).unwrap();
/// let err = Decode::<Bytes>::decode(&zstd, bomb).unwrap_err();
/// assert!(matches!(err, DeserializeError::TooLarge { limit: 1024, got: 1048576 }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zstd<S> {
    inner: S,
    level: i32,
    limit: usize,
}

/// zstd's smallest window (1 KiB) and the largest its decoder accepts by default (128 MiB).
const WINDOW_LOG_MIN: u32 = 10;
const WINDOW_LOG_MAX: u32 = 27;

impl<S> Zstd<S> {
    /// Default compression level (zstd's own default).
    pub const DEFAULT_LEVEL: i32 = ::zstd::DEFAULT_COMPRESSION_LEVEL;

    /// Level [`DEFAULT_LEVEL`](Self::DEFAULT_LEVEL), decompressed payloads of at most
    /// [`DEFAULT_LIMIT`] bytes.
    pub const fn new(inner: S) -> Self {
        Self {
            inner,
            level: Self::DEFAULT_LEVEL,
            limit: DEFAULT_LIMIT,
        }
    }

    /// Sets the compression level; zstd accepts negative (fastest) levels up to 22.
    pub fn with_level(mut self, level: i32) -> Result<Self, ConfigError> {
        let range = ::zstd::compression_level_range();
        if !range.contains(&level) {
            return Err(ConfigError::OutOfRange {
                what: "zstd compression level",
                min: (*range.start()).into(),
                max: (*range.end()).into(),
                got: level.into(),
            });
        }
        self.level = level;
        Ok(self)
    }

    /// Sets the largest decompressed payload accepted, in bytes; fails if 0.
    pub fn with_limit(mut self, limit: usize) -> Result<Self, ConfigError> {
        self.limit = check_limit(limit)?;
        Ok(self)
    }

    /// The inner serializer.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The compression level.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// The largest decompressed payload accepted, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The largest window the decoder allocates: the limit rounded up to a power of two, as a
    /// frame's window never needs to be larger than its content.
    fn window_log_max(&self) -> u32 {
        let log = usize::BITS - (self.limit - 1).leading_zeros();
        log.clamp(WINDOW_LOG_MIN, WINDOW_LOG_MAX)
    }
}

impl<T, S: Encode<T>> Encode<T> for Zstd<S> {
    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), SerializeError> {
        // The one intermediate buffer: the inner payload. The frame is written into `dst`.
        let mut raw = BytesMut::new();
        self.inner.encode(item, &mut raw)?;
        let start = dst.len();
        dst.resize(start + ::zstd::zstd_safe::compress_bound(raw.len()), 0);
        let res = Compressor::new(self.level)
            .and_then(|mut c| c.compress_to_buffer(&raw[..], &mut dst[start..]));
        match res {
            Ok(written) => {
                dst.truncate(start + written);
                Ok(())
            }
            Err(e) => {
                dst.truncate(start);
                Err(SerializeError::Compress(e))
            }
        }
    }
}

impl<T, S: Decode<T>> Decode<T> for Zstd<S> {
    fn decode(&self, payload: BytesMut) -> Result<T, DeserializeError> {
        let raw = self.decompress(&payload)?;
        self.inner.decode(raw)
    }
}

impl<S> Zstd<S> {
    fn decompress(&self, payload: &[u8]) -> Result<BytesMut, DeserializeError> {
        // A frame that declares its size is refused before any work when over the limit.
        if let Ok(Some(size)) = ::zstd::zstd_safe::get_frame_content_size(payload)
            && size > self.limit as u64
        {
            return Err(DeserializeError::TooLarge {
                limit: self.limit,
                got: usize::try_from(size).unwrap_or(usize::MAX),
            });
        }
        let mut decoder = Decoder::with_buffer(payload).map_err(DeserializeError::Decompress)?;
        decoder
            .window_log_max(self.window_log_max())
            .map_err(DeserializeError::Decompress)?;
        let mut out = Bounded::new(payload.len(), self.limit);
        let mut filled = 0;
        loop {
            if filled == out.buf.capacity() {
                out.buf.truncate(filled);
                out.grow()?;
            }
            // The reader API writes into initialised bytes: zero the spare room once.
            out.buf.resize(out.buf.capacity(), 0);
            match decoder.read(&mut out.buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DeserializeError::Decompress(e)),
            }
        }
        out.buf.truncate(filled);
        Ok(out.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RawBytes;
    use bytes::Bytes;

    fn enc(z: &Zstd<RawBytes>, data: &[u8]) -> BytesMut {
        let mut out = BytesMut::from(&b"head"[..]);
        z.encode(&Bytes::copy_from_slice(data), &mut out).unwrap();
        assert_eq!(&out[..4], b"head");
        out.split_off(4)
    }

    fn dec(z: &Zstd<RawBytes>, payload: &[u8]) -> Result<Bytes, DeserializeError> {
        z.decode(BytesMut::from(payload))
    }

    #[test]
    fn round_trips_at_several_levels_and_sizes() {
        for level in [-5, 1, 3, 19] {
            let z = Zstd::new(RawBytes).with_level(level).unwrap();
            for len in [0, 1, 100, 5000, 64 * 1024] {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
                assert_eq!(&dec(&z, &enc(&z, &data)).unwrap()[..], &data[..]);
            }
        }
    }

    #[test]
    fn limit_is_exact_and_bomb_is_a_typed_error() {
        let z = Zstd::new(RawBytes).with_limit(100_000).unwrap();
        assert_eq!(dec(&z, &enc(&z, &[1; 100_000])).unwrap().len(), 100_000);
        // A bomb made by a peer with no limit: the frame is far smaller than its content.
        let big = Zstd::new(RawBytes).with_limit(usize::MAX >> 1).unwrap();
        let bomb = enc(&big, &vec![0; 8 << 20]);
        assert!(bomb.len() < 16 * 1024);
        // Its header declares 8 MiB: refused before decompressing anything.
        assert!(matches!(
            dec(&z, &bomb),
            Err(DeserializeError::TooLarge {
                limit: 100_000,
                got: 8388608
            })
        ));
        // A streamed frame (no content size, window of its own) still stops at the limit.
        let mut w = ::zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        w.include_contentsize(false).unwrap();
        for _ in 0..8 {
            std::io::Write::write_all(&mut w, &[0; 1 << 20]).unwrap();
        }
        let streamed = w.finish().unwrap();
        assert!(matches!(
            ::zstd::zstd_safe::get_frame_content_size(&streamed),
            Ok(None)
        ));
        let small = Zstd::new(RawBytes).with_limit(1 << 22).unwrap();
        assert!(matches!(
            dec(&small, &streamed),
            Err(DeserializeError::TooLarge {
                limit: 4194304,
                got: 4194305
            })
        ));
    }

    #[test]
    fn tiny_and_huge_limits_work() {
        let one = Zstd::new(RawBytes).with_limit(1).unwrap();
        assert_eq!(&dec(&one, &enc(&one, b"a")).unwrap()[..], b"a");
        assert!(matches!(
            dec(&one, &enc(&one, b"ab")),
            Err(DeserializeError::TooLarge { limit: 1, got: 2 })
        ));
        let max = Zstd::new(RawBytes).with_limit(usize::MAX).unwrap();
        assert_eq!(&dec(&max, &enc(&max, b"ab")).unwrap()[..], b"ab");
    }

    #[test]
    fn corrupt_and_truncated_input_are_typed_errors() {
        let z = Zstd::new(RawBytes);
        let good = enc(&z, b"hello hello hello hello");
        let truncated = &good[..good.len() - 3];
        let mut trailing = good.to_vec();
        trailing.extend_from_slice(b"junk");
        for bad in [&b""[..], b"not zstd at all", truncated, &trailing] {
            assert!(
                matches!(dec(&z, bad), Err(DeserializeError::Decompress(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn settings_are_validated() {
        assert!(matches!(
            Zstd::new(RawBytes).with_limit(0),
            Err(ConfigError::Zero { .. })
        ));
        assert!(matches!(
            Zstd::new(RawBytes).with_level(23),
            Err(ConfigError::OutOfRange { got: 23, .. })
        ));
    }
}
