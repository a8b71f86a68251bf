//! [`LengthPrefixed`]: frames behind a big-endian length prefix, with a maximum.

use bytes::{Buf, BufMut, BytesMut};

use super::{ConfigError, Framing, OwnedFrame, OwnedPayload, ParseError, SerializeError};

/// Width of the length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PrefixWidth {
    /// 2 bytes, big-endian: frames up to 65 535 bytes.
    U16,
    /// 4 bytes, big-endian.
    U32,
}

impl PrefixWidth {
    /// Size of the prefix in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            PrefixWidth::U16 => 2,
            PrefixWidth::U32 => 4,
        }
    }

    /// Largest length the prefix can carry.
    pub const fn max_len(self) -> usize {
        match self {
            PrefixWidth::U16 => u16::MAX as usize,
            PrefixWidth::U32 => u32::MAX as usize,
        }
    }
}

/// Length-prefixed framing: a big-endian length, then that many payload bytes.
///
/// A prefix that announces more than `max` bytes gives one [`ParseError::FrameTooLarge`]
/// and the frame's bytes are skipped as they arrive; the next frame decodes normally.
///
/// ```
/// use bytes::{Buf, BufMut, BytesMut};
/// use easynet_core::protocol::{Framing, LengthPrefixed, PrefixWidth};
///
/// let framing = LengthPrefixed::new(PrefixWidth::U16, 1024).unwrap();
/// let mut state = Default::default();
/// let mut buf = BytesMut::from(&b"\x00\x03abc"[..]);
/// assert_eq!(&framing.decode(&mut state, &mut buf).unwrap().unwrap()[..], b"abc");
/// assert!(LengthPrefixed::new(PrefixWidth::U16, 70_000).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthPrefixed {
    width: PrefixWidth,
    max: usize,
}

/// Per-connection state of [`LengthPrefixed`].
#[derive(Debug, Default)]
pub struct LengthState {
    /// Payload bytes of an oversized frame still to skip.
    skip: usize,
}

impl LengthPrefixed {
    /// Frames with a `width` prefix and at most `max` payload bytes.
    ///
    /// Fails if `max` is 0 or does not fit in the prefix.
    pub const fn new(width: PrefixWidth, max: usize) -> Result<Self, ConfigError> {
        if max == 0 {
            return Err(ConfigError::Zero {
                what: "maximum frame length",
            });
        }
        if max > width.max_len() {
            return Err(ConfigError::MaxExceedsPrefix {
                max,
                width_bytes: width.bytes(),
            });
        }
        Ok(Self { width, max })
    }

    /// The prefix width.
    pub const fn width(&self) -> PrefixWidth {
        self.width
    }

    /// The maximum payload length.
    pub const fn max(&self) -> usize {
        self.max
    }
}

impl Framing for LengthPrefixed {
    type State = LengthState;

    fn decode(
        &self,
        state: &mut LengthState,
        src: &mut BytesMut,
    ) -> Result<Option<BytesMut>, ParseError> {
        if state.skip > 0 {
            let n = state.skip.min(src.len());
            src.advance(n);
            state.skip -= n;
            if state.skip > 0 {
                return Ok(None);
            }
        }
        let header = self.width.bytes();
        let Some(prefix) = src.get(..header) else {
            return Ok(None);
        };
        let len = prefix
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        if len > self.max {
            src.advance(header);
            let n = len.min(src.len());
            src.advance(n);
            state.skip = len - n;
            return Err(ParseError::FrameTooLarge {
                limit: self.max,
                got: len,
            });
        }
        if src.len() < header + len {
            src.reserve(header + len - src.len());
            return Ok(None);
        }
        src.advance(header);
        Ok(Some(src.split_to(len)))
    }

    fn encode_start(&self, dst: &mut BytesMut) -> usize {
        let mark = dst.len();
        dst.put_bytes(0, self.width.bytes());
        mark
    }

    fn encode_end(&self, dst: &mut BytesMut, mark: usize) -> Result<(), SerializeError> {
        let header = self.width.bytes();
        let len = dst.len() - mark - header;
        if len > self.max {
            return Err(SerializeError::TooLarge {
                limit: self.max,
                got: len,
            });
        }
        let be = (len as u64).to_be_bytes();
        dst[mark..mark + header].copy_from_slice(&be[8 - header..]);
        Ok(())
    }

    /// The prefix goes to `dst`, the payload follows as it is (no copy).
    fn encode_owned(
        &self,
        payload: OwnedPayload,
        dst: &mut BytesMut,
    ) -> Result<Option<OwnedFrame>, SerializeError> {
        let len = payload.len();
        if len > self.max {
            return Err(SerializeError::TooLarge {
                limit: self.max,
                got: len,
            });
        }
        let be = (len as u64).to_be_bytes();
        dst.extend_from_slice(&be[8 - self.width.bytes()..]);
        Ok(Some(OwnedFrame::new(payload)))
    }
}
