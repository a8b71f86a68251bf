//! [`Lines`]: frames separated by LF, CR or CRLF, with a length limit.

use bytes::BytesMut;

use super::{ConfigError, DEFAULT_LIMIT, Framing, ParseError, SerializeError};

/// The byte sequence that ends a line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Separator {
    /// `\n`
    #[default]
    Lf,
    /// `\r`
    Cr,
    /// `\r\n`; a lone `\n` is part of the line.
    CrLf,
}

/// Line framing. TODO(helper): implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lines {
    separator: Separator,
    limit: usize,
}

/// Per-connection state of [`Lines`].
#[derive(Debug, Default)]
pub struct LineState {
    _todo: (),
}

impl Lines {
    /// LF-separated lines of at most [`DEFAULT_LIMIT`] bytes.
    pub const fn new() -> Self {
        Self {
            separator: Separator::Lf,
            limit: DEFAULT_LIMIT,
        }
    }

    /// Sets the separator.
    pub const fn separator(mut self, separator: Separator) -> Self {
        self.separator = separator;
        self
    }

    /// Sets the limit of one line in bytes, separator excluded; fails on 0.
    pub const fn limit(mut self, limit: usize) -> Result<Self, ConfigError> {
        if limit == 0 {
            return Err(ConfigError::Zero { what: "line limit" });
        }
        self.limit = limit;
        Ok(self)
    }
}

impl Default for Lines {
    fn default() -> Self {
        Self::new()
    }
}

impl Framing for Lines {
    type State = LineState;

    fn decode(&self, _: &mut LineState, _: &mut BytesMut) -> Result<Option<BytesMut>, ParseError> {
        todo!()
    }

    fn encode_start(&self, dst: &mut BytesMut) -> usize {
        dst.len()
    }

    fn encode_end(&self, _: &mut BytesMut, _: usize) -> Result<(), SerializeError> {
        todo!()
    }
}
