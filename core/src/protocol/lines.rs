//! [`Lines`]: frames separated by LF, CR or CRLF, with a length limit.

use bytes::{Buf, BufMut, BytesMut};

use super::{
    ConfigError, DEFAULT_LIMIT, Framing, OwnedFrame, OwnedPayload, ParseError, SerializeError,
};

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

impl Separator {
    /// The separator's bytes.
    pub const fn as_bytes(self) -> &'static [u8] {
        match self {
            Separator::Lf => b"\n",
            Separator::Cr => b"\r",
            Separator::CrLf => b"\r\n",
        }
    }

    /// True when `buf` ends with the separator (a byte compare, not a `memcmp` call: this
    /// runs once per line sent).
    fn ends(self, buf: &[u8]) -> bool {
        match self {
            Separator::Lf => buf.last() == Some(&b'\n'),
            Separator::Cr => buf.last() == Some(&b'\r'),
            Separator::CrLf => buf.ends_with(b"\r\n"),
        }
    }

    /// Appends the separator: a store per byte, where `extend_from_slice` of a slice not
    /// known when compiling calls `memcpy` for one byte (once per line sent). Into the
    /// write buffer or an owned line's spare capacity alike.
    fn append_to(self, dst: &mut impl BufMut) {
        match self {
            Separator::Lf => dst.put_u8(b'\n'),
            Separator::Cr => dst.put_u8(b'\r'),
            Separator::CrLf => dst.put_slice(b"\r\n"),
        }
    }

    /// The last byte of the separator: the one to search for.
    const fn last(self) -> u8 {
        match self {
            Separator::Lf | Separator::CrLf => b'\n',
            Separator::Cr => b'\r',
        }
    }

    /// Where the separator ending with the byte at `i` begins, if `i` ends a separator.
    fn start_at(self, buf: &[u8], i: usize) -> Option<usize> {
        match self {
            Separator::Lf | Separator::Cr => Some(i),
            Separator::CrLf => (i > 0 && buf[i - 1] == b'\r').then(|| i - 1),
        }
    }
}

/// Line framing: frames end with a [`Separator`]; a line holds at most `limit` bytes.
///
/// An over-long line gives one [`ParseError::LineTooLong`] as soon as the limit is passed
/// (so memory stays bounded), then the rest of that line is skipped through its separator.
/// On send the separator is appended unless the message already ends with it; a message
/// that holds the separator elsewhere goes out as several lines (both as in EasyNetwork).
///
/// ```
/// use bytes::{Buf, BytesMut};
/// use easynet_core::protocol::{Framing, Lines, ParseError, Separator};
///
/// let lines = Lines::new().separator(Separator::CrLf).limit(4).unwrap();
/// let mut state = Default::default();
/// let mut buf = BytesMut::from(&b"ok\r\ntoo long\r\nnext\r\n"[..]);
/// assert_eq!(&lines.decode(&mut state, &mut buf).unwrap().unwrap()[..], b"ok");
/// assert!(matches!(lines.decode(&mut state, &mut buf), Err(ParseError::LineTooLong { limit: 4, .. })));
/// assert_eq!(&lines.decode(&mut state, &mut buf).unwrap().unwrap()[..], b"next");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lines {
    separator: Separator,
    limit: usize,
}

/// Per-connection state of [`Lines`].
#[derive(Debug, Default)]
pub struct LineState {
    /// Bytes at the front of the buffer already searched without finding a separator.
    scanned: usize,
    /// Skipping the rest of an over-long line.
    discarding: bool,
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

    /// The separator.
    pub const fn get_separator(&self) -> Separator {
        self.separator
    }

    /// The limit of one line in bytes.
    pub const fn get_limit(&self) -> usize {
        self.limit
    }

    /// Finds the next separator at or after `from`: (line end, separator end).
    fn find(&self, buf: &[u8], from: usize) -> Option<(usize, usize)> {
        let last = self.separator.last();
        let mut at = from;
        while let Some(i) = memchr::memchr(last, &buf[at..]) {
            let i = at + i;
            if let Some(start) = self.separator.start_at(buf, i) {
                return Some((start, i + 1));
            }
            at = i + 1;
        }
        None
    }

    /// How many bytes at the end of `buf` may begin a separator and must be kept.
    fn partial_tail(&self, buf: &[u8]) -> usize {
        match self.separator {
            Separator::CrLf if buf.last() == Some(&b'\r') => 1,
            _ => 0,
        }
    }
}

impl Default for Lines {
    fn default() -> Self {
        Self::new()
    }
}

impl Framing for Lines {
    type State = LineState;

    fn decode(
        &self,
        state: &mut LineState,
        src: &mut BytesMut,
    ) -> Result<Option<BytesMut>, ParseError> {
        if state.discarding {
            match self.find(src, 0) {
                Some((_, end)) => {
                    src.advance(end);
                    state.discarding = false;
                    state.scanned = 0;
                }
                None => {
                    let keep = self.partial_tail(src);
                    src.advance(src.len() - keep);
                    return Ok(None);
                }
            }
        }
        // A CRLF split across reads: its '\r' was scanned last time, so step back one byte.
        let from = state.scanned.saturating_sub(1).min(src.len());
        match self.find(src, from) {
            Some((line_end, end)) => {
                state.scanned = 0;
                if line_end > self.limit {
                    src.advance(end);
                    return Err(ParseError::LineTooLong {
                        limit: self.limit,
                        got: line_end,
                    });
                }
                // A large last line takes the buffer itself (its allocation too, so a
                // `String` can be made of it without a copy) unless most of that would be
                // wasted (then the line is copied anyway, and the buffer is better kept for
                // the next read). Small lines are split off: copying them is cheaper than a
                // new buffer for the next read.
                let mut line = if end == src.len() && super::worth_owning(end, src.capacity()) {
                    std::mem::take(src)
                } else {
                    src.split_to(end)
                };
                line.truncate(line_end);
                Ok(Some(line))
            }
            None => {
                let pending = src.len() - self.partial_tail(src);
                if pending > self.limit {
                    let got = src.len();
                    let keep = self.partial_tail(src);
                    src.advance(src.len() - keep);
                    state.discarding = true;
                    state.scanned = 0;
                    return Err(ParseError::LineTooLong {
                        limit: self.limit,
                        got,
                    });
                }
                state.scanned = src.len();
                Ok(None)
            }
        }
    }

    fn encode_start(&self, dst: &mut BytesMut) -> usize {
        dst.len()
    }

    fn encode_end(&self, dst: &mut BytesMut, mark: usize) -> Result<(), SerializeError> {
        // As EasyNetwork: a message that already ends with the separator gets no second one
        // (which the peer would read as an extra empty line).
        if !self.separator.ends(&dst[mark..]) {
            self.separator.append_to(dst);
        }
        Ok(())
    }

    /// The line as it is; the separator (unless it ends the line already) is appended in
    /// its spare capacity, or else follows as the frame's tail. Never copies the payload.
    fn encode_owned(
        &self,
        payload: OwnedPayload,
        _dst: &mut BytesMut,
    ) -> Result<Option<OwnedFrame>, SerializeError> {
        let sep = self.separator.as_bytes();
        if self.separator.ends(payload.as_slice()) {
            return Ok(Some(OwnedFrame::new(payload)));
        }
        Ok(Some(match payload {
            OwnedPayload::Vec(mut v) if v.capacity() - v.len() >= sep.len() => {
                self.separator.append_to(&mut v);
                OwnedFrame::new(OwnedPayload::Vec(v))
            }
            other => OwnedFrame::new(other).with_tail(sep),
        }))
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::{Lines, Separator};
    use crate::protocol::{Stream, StreamClientProtocol, Utf8};

    fn encode(sep: Separator, msg: &str) -> Vec<u8> {
        let proto: Stream<Lines, Utf8, String, String> =
            Stream::new(Lines::new().separator(sep), Utf8::new());
        // A previous message, whose separator ends the buffer.
        let mut out = BytesMut::from(&b"prev\n"[..]);
        proto.encode_request(&msg.to_owned(), &mut out).unwrap();
        out[b"prev\n".len()..].to_vec()
    }

    /// As EasyNetwork's StringLineSerializer (behaviour.md §5.3): the separator is appended
    /// unless the message already ends with it, so one message never adds an empty line.
    /// Found by tests/interop_easynetwork.rs.
    #[test]
    fn a_message_ending_with_the_separator_is_not_followed_by_another() {
        assert_eq!(encode(Separator::Lf, "a\n"), b"a\n");
        assert_eq!(encode(Separator::Lf, "a\n\n"), b"a\n\n");
        assert_eq!(encode(Separator::Lf, "a\r\n"), b"a\r\n");
        assert_eq!(encode(Separator::Cr, "a\r"), b"a\r");
        assert_eq!(encode(Separator::CrLf, "a\r\n"), b"a\r\n");
        // Not the whole separator: appended.
        assert_eq!(encode(Separator::CrLf, "a\r"), b"a\r\r\n");
        assert_eq!(encode(Separator::CrLf, "a\n"), b"a\n\r\n");
        assert_eq!(encode(Separator::Lf, "a"), b"a\n");
        // The separator of the previous message in the buffer does not count.
        assert_eq!(encode(Separator::Lf, ""), b"\n");
    }

    #[test]
    fn each_separator_is_appended_whole() {
        assert_eq!(encode(Separator::Lf, "a"), b"a\n");
        assert_eq!(encode(Separator::Cr, "a"), b"a\r");
        assert_eq!(encode(Separator::CrLf, "a"), b"a\r\n");
    }
}
