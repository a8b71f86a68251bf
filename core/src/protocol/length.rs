//! [`LengthPrefixed`]: frames behind a big-endian length prefix, with a maximum.

use bytes::BytesMut;

use super::{ConfigError, Framing, ParseError, SerializeError};

/// Width of the length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PrefixWidth {
    /// 2 bytes, big-endian: frames up to 65 535 bytes.
    U16,
    /// 4 bytes, big-endian.
    U32,
}

/// Length-prefixed framing. TODO(helper): implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthPrefixed {
    width: PrefixWidth,
    max: usize,
}

/// Per-connection state of [`LengthPrefixed`].
#[derive(Debug, Default)]
pub struct LengthState {
    _todo: (),
}

impl LengthPrefixed {
    /// Frames with a `width` prefix and at most `max` payload bytes.
    ///
    /// Fails if `max` is 0 or does not fit in the prefix.
    pub fn new(width: PrefixWidth, max: usize) -> Result<Self, ConfigError> {
        let _ = (width, max);
        todo!()
    }
}

impl Framing for LengthPrefixed {
    type State = LengthState;

    fn decode(
        &self,
        _: &mut LengthState,
        _: &mut BytesMut,
    ) -> Result<Option<BytesMut>, ParseError> {
        todo!()
    }

    fn encode_start(&self, dst: &mut BytesMut) -> usize {
        dst.len()
    }

    fn encode_end(&self, _: &mut BytesMut, _: usize) -> Result<(), SerializeError> {
        todo!()
    }
}
