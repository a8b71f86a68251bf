//! [`Zlib`]: a serializer wrapper that zlib-compresses what its inner serializer makes
//! (feature `zlib`, `flate2` with its pure-Rust `miniz_oxide` backend).
//!
//! Each payload is one complete zlib stream (RFC 1950), compressed and decompressed in one go.
//! Decompression stops at a size limit, so a small frame cannot expand into gigabytes.

use bytes::BytesMut;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::compress::{Bounded, check_limit};
use super::{ConfigError, DEFAULT_LIMIT, Decode, DeserializeError, Encode, SerializeError};

/// zlib around an inner serializer `S`: compresses what `S` makes, decompresses before `S`
/// parses.
///
/// A payload that decompresses past [`limit`](Zlib::limit) bytes is a
/// [`DeserializeError::TooLarge`]; a corrupt, truncated or trailing-garbage payload is a
/// [`DeserializeError::Decompress`]. Both are recoverable parse errors.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use easynet_core::protocol::{Decode, DeserializeError, Encode, RawBytes, Zlib};
///
/// let zlib = Zlib::new(RawBytes).with_limit(1024).unwrap().with_level(9).unwrap();
/// let mut out = BytesMut::new();
/// zlib.encode(&Bytes::from(vec![b'a'; 1000]), &mut out).unwrap();
/// assert!(out.len() < 100);
/// let back: Bytes = zlib.decode(out).unwrap();
/// assert_eq!(back.len(), 1000);
///
/// // Past the limit: a typed error, and nothing past the limit was allocated.
/// let mut bomb = BytesMut::new();
/// zlib.encode(&Bytes::from(vec![0; 1 << 20]), &mut bomb).unwrap();
/// let err = Decode::<Bytes>::decode(&zlib, bomb).unwrap_err();
/// assert!(matches!(err, DeserializeError::TooLarge { limit: 1024, .. }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zlib<S> {
    inner: S,
    level: u32,
    limit: usize,
}

impl<S> Zlib<S> {
    /// Default compression level (zlib's own default).
    pub const DEFAULT_LEVEL: u32 = 6;

    /// Level [`DEFAULT_LEVEL`](Self::DEFAULT_LEVEL), decompressed payloads of at most
    /// [`DEFAULT_LIMIT`] bytes.
    pub const fn new(inner: S) -> Self {
        Self {
            inner,
            level: Self::DEFAULT_LEVEL,
            limit: DEFAULT_LIMIT,
        }
    }

    /// Sets the compression level, 0 (store) to 9 (smallest).
    pub fn with_level(mut self, level: u32) -> Result<Self, ConfigError> {
        if level > 9 {
            return Err(ConfigError::OutOfRange {
                what: "zlib compression level",
                min: 0,
                max: 9,
                got: level as i64,
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
    pub fn level(&self) -> u32 {
        self.level
    }

    /// The largest decompressed payload accepted, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl<T, S: Encode<T>> Encode<T> for Zlib<S> {
    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), SerializeError> {
        // The one intermediate buffer: the inner payload. Compressed bytes go into `dst`.
        let mut raw = BytesMut::new();
        self.inner.encode(item, &mut raw)?;
        deflate(&raw, Compression::new(self.level), dst)
    }
}

impl<T, S: Decode<T>> Decode<T> for Zlib<S> {
    fn decode(&self, payload: BytesMut) -> Result<T, DeserializeError> {
        let raw = inflate(&payload, self.limit)?;
        self.inner.decode(raw)
    }
}

/// Appends the zlib stream of `raw` to `dst`.
fn deflate(raw: &[u8], level: Compression, dst: &mut BytesMut) -> Result<(), SerializeError> {
    let start = dst.len();
    let mut z = Compress::new(level, true);
    // zlib's compressBound: enough for one pass in practice; the loop covers the rest.
    let mut room = raw.len() + raw.len() / 1000 + 64;
    loop {
        let written = dst.len();
        dst.resize(written + room, 0);
        let consumed = z.total_in() as usize;
        let before = z.total_out();
        let status = z
            .compress(&raw[consumed..], &mut dst[written..], FlushCompress::Finish)
            .map_err(|e| SerializeError::Compress(std::io::Error::other(e)));
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                dst.truncate(start);
                return Err(e);
            }
        };
        dst.truncate(written + (z.total_out() - before) as usize);
        if status == Status::StreamEnd {
            return Ok(());
        }
        room = room.max(1024);
    }
}

/// Decompresses one whole zlib stream of at most `limit` bytes.
fn inflate(payload: &[u8], limit: usize) -> Result<BytesMut, DeserializeError> {
    let mut z = Decompress::new(true);
    let mut out = Bounded::new(payload.len(), limit);
    loop {
        let consumed = z.total_in() as usize;
        let produced = out.buf.len();
        let status = z
            .decompress_vec(&payload[consumed..], &mut out.buf, FlushDecompress::None)
            .map_err(corrupt)?;
        out.check()?;
        if status == Status::StreamEnd {
            if (z.total_in() as usize) < payload.len() {
                return Err(corrupt("trailing bytes after the zlib stream"));
            }
            return Ok(out.into_bytes());
        }
        if out.buf.len() == out.buf.capacity() {
            out.grow()?;
        } else if z.total_in() as usize == consumed && out.buf.len() == produced {
            return Err(corrupt("truncated zlib stream"));
        }
    }
}

/// A corrupt-input error for [`DeserializeError::Decompress`].
fn corrupt(msg: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> DeserializeError {
    DeserializeError::Decompress(std::io::Error::new(std::io::ErrorKind::InvalidData, msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RawBytes;
    use bytes::Bytes;

    fn enc(z: &Zlib<RawBytes>, data: &[u8]) -> BytesMut {
        let mut out = BytesMut::from(&b"head"[..]);
        z.encode(&Bytes::copy_from_slice(data), &mut out).unwrap();
        assert_eq!(&out[..4], b"head");
        out.split_off(4)
    }

    fn dec(z: &Zlib<RawBytes>, payload: &[u8]) -> Result<Bytes, DeserializeError> {
        z.decode(BytesMut::from(payload))
    }

    #[test]
    fn round_trips_at_every_level_and_size() {
        for level in [0, 1, 6, 9] {
            let z = Zlib::new(RawBytes).with_level(level).unwrap();
            for len in [0, 1, 100, 5000, 64 * 1024] {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
                assert_eq!(&dec(&z, &enc(&z, &data)).unwrap()[..], &data[..]);
            }
        }
    }

    #[test]
    fn reads_what_other_zlib_encoders_write() {
        // Python: zlib.compress(b"hello")
        let py = b"x\x9c\xcbH\xcd\xc9\xc9\x07\x00\x06,\x02\x15";
        assert_eq!(&dec(&Zlib::new(RawBytes), py).unwrap()[..], b"hello");
    }

    #[test]
    fn limit_is_exact_and_bomb_is_a_typed_error() {
        let z = Zlib::new(RawBytes).with_limit(1000).unwrap();
        assert_eq!(dec(&z, &enc(&z, &[1; 1000])).unwrap().len(), 1000);
        let bomb = enc(&z, &vec![0; 8 << 20]);
        assert!(bomb.len() < 16 * 1024);
        match dec(&z, &bomb) {
            Err(DeserializeError::TooLarge { limit: 1000, got }) => assert_eq!(got, 1001),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tiny_and_huge_limits_work() {
        let one = Zlib::new(RawBytes).with_limit(1).unwrap();
        assert_eq!(&dec(&one, &enc(&one, b"a")).unwrap()[..], b"a");
        assert!(matches!(
            dec(&one, &enc(&one, b"ab")),
            Err(DeserializeError::TooLarge { limit: 1, got: 2 })
        ));
        let max = Zlib::new(RawBytes).with_limit(usize::MAX).unwrap();
        assert_eq!(&dec(&max, &enc(&max, b"ab")).unwrap()[..], b"ab");
    }

    #[test]
    fn corrupt_truncated_and_trailing_input_are_typed_errors() {
        let z = Zlib::new(RawBytes);
        let good = enc(&z, b"hello hello hello");
        let truncated = &good[..good.len() - 3];
        let mut trailing = good.to_vec();
        trailing.push(0);
        let mut flipped = good.to_vec();
        flipped[good.len() - 1] ^= 0xff; // bad checksum
        for bad in [&b""[..], b"not zlib at all", truncated, &trailing, &flipped] {
            assert!(
                matches!(dec(&z, bad), Err(DeserializeError::Decompress(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn settings_are_validated() {
        assert!(matches!(
            Zlib::new(RawBytes).with_limit(0),
            Err(ConfigError::Zero { .. })
        ));
        assert!(matches!(
            Zlib::new(RawBytes).with_level(10),
            Err(ConfigError::OutOfRange { got: 10, .. })
        ));
    }
}
