//! [`RawChunks`]: no framing, each chunk of received bytes is one frame.

use bytes::BytesMut;

use super::{Framing, OwnedFrame, OwnedPayload, ParseError, SerializeError};

/// No framing: whatever bytes are buffered form one frame; nothing is added on send.
///
/// Useful for byte echo and proxies. Message boundaries are not preserved by TCP, so a
/// message may arrive split or merged with the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawChunks {
    _priv: (),
}

impl RawChunks {
    /// Raw chunks.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl Framing for RawChunks {
    type State = ();

    fn decode(&self, _: &mut (), src: &mut BytesMut) -> Result<Option<BytesMut>, ParseError> {
        if src.is_empty() {
            return Ok(None);
        }
        Ok(Some(src.split()))
    }

    fn encode_start(&self, dst: &mut BytesMut) -> usize {
        dst.len()
    }

    fn encode_end(&self, _: &mut BytesMut, _: usize) -> Result<(), SerializeError> {
        Ok(())
    }

    fn is_transparent(&self) -> bool {
        true
    }

    fn encode_owned(
        &self,
        payload: OwnedPayload,
        _dst: &mut BytesMut,
    ) -> Result<Option<OwnedFrame>, SerializeError> {
        Ok(Some(OwnedFrame::new(payload)))
    }
}
