//! What goes out: answers encoded into the write buffer or queued as they are, and the
//! queue written to the socket (one vectored write, TLS records).

use super::*;

impl<P: StreamProtocol, R: Role<P>> Connection<P, R> {
    /// Encodes and queues one message.
    pub fn send(&mut self, item: &R::Outgoing) -> Result<(), SendError> {
        if self.is_closing() {
            return Err(SendError::Closed);
        }
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            // Gathered with the turn's other answers (`flush_plaintext`).
            let before = self.scratch.len();
            R::encode(&self.protocol, item, &mut self.scratch)?;
            self.gathered(before);
            return Ok(());
        }
        if let Some(bytes) = R::shared(&self.protocol, item).filter(|b| b.len() >= SHARED_MIN) {
            self.queue_chunk(bytes.into());
            return Ok(());
        }
        R::encode(&self.protocol, item, &mut self.wbuf)?;
        Ok(())
    }

    /// Encodes and queues one message, taking it: the same bytes as
    /// [`send`](Self::send), but a large message's own buffer (a `String` line, `Bytes`)
    /// is queued as it is instead of being copied, when the protocol allows
    /// ([`StreamServerProtocol::encode_response_owned`](crate::protocol::StreamServerProtocol::encode_response_owned)).
    pub fn send_owned(&mut self, item: R::Outgoing) -> Result<(), SendError> {
        if self.is_closing() {
            return Err(SendError::Closed);
        }
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            // rustls copies the plaintext into its records anyway, so the frame is gathered
            // as bytes; the owned path still runs, so that a short `String` leaves its
            // allocation for the next line decoded (as without TLS).
            let before = self.scratch.len();
            let frame = R::encode_owned(&self.protocol, item, &mut self.scratch)?;
            self.gathered(before);
            if let Some(frame) = frame {
                let body = frame.body.as_slice();
                if body.len() >= TLS_RECORD {
                    // Its tail with it in one payload: gathering the body's last part
                    // would copy it once more.
                    self.hand_over([body, frame.tail]);
                } else {
                    self.gather(body);
                    self.gather(frame.tail);
                }
                self.recycle(frame.body);
            }
            return Ok(());
        }
        if let Some(frame) = R::encode_owned(&self.protocol, item, &mut self.wbuf)? {
            self.queue_owned(frame);
        }
        Ok(())
    }

    /// Queues a frame whose head is in `wbuf` already: a small body is copied after it
    /// (cheaper than a queue entry), a large one queued as it is; the tail goes after it.
    fn queue_owned(&mut self, frame: OwnedFrame) {
        if frame.body.len() < SHARED_MIN {
            self.wbuf.extend_from_slice(frame.body.as_slice());
            self.wbuf.extend_from_slice(frame.tail);
            return;
        }
        let OwnedFrame { body, tail } = frame;
        self.queue_chunk(body.into()); // after the frame's head
        if !tail.is_empty() {
            // Queued as it is: in the write buffer, the next large answer would split it
            // off into a chunk of its own anyway, at the cost of a shared buffer.
            self.chunked += tail.len();
            self.chunks.push_back(Bytes::from_static(tail).into());
        }
    }

    /// Queues `chunk` as it is, after what the write buffer holds so far (which goes
    /// first, as a chunk of its own).
    pub(super) fn queue_chunk(&mut self, chunk: Chunk) {
        if !self.wbuf.is_empty() {
            let head = self.wbuf.split().freeze();
            self.chunked += head.len();
            self.chunks.push_back(head.into());
        }
        self.chunked += chunk.len();
        self.chunks.push_back(chunk);
    }

    pub(super) fn clear_writes(&mut self) {
        self.chunks.clear();
        self.chunked = 0;
        self.wbuf.clear();
        #[cfg(feature = "tls")]
        {
            self.tls_pending = 0;
            self.scratch.clear();
        }
    }

    /// Counts the plaintext gathered since `before` and hands a record's worth to rustls.
    #[cfg(feature = "tls")]
    fn gathered(&mut self, before: usize) {
        self.tls_pending += self.scratch.len() - before;
        if self.scratch.len() >= TLS_RECORD {
            self.flush_plaintext();
        }
    }

    /// Hands `data` to rustls after what is gathered: a record's worth or more straight
    /// (rustls copies it into its records anyway), less gathered with the turn's other
    /// answers so that they share records.
    #[cfg(feature = "tls")]
    pub(super) fn gather(&mut self, data: &[u8]) {
        if data.len() >= TLS_RECORD {
            self.hand_over([data]);
        } else {
            self.tls_pending += data.len();
            self.scratch.extend_from_slice(data);
            if self.scratch.len() >= TLS_RECORD {
                self.flush_plaintext();
            }
        }
    }

    /// Hands `parts` to rustls as one payload, after what is gathered, without gathering
    /// them: a record's worth or more, which rustls copies into its records anyway.
    #[cfg(feature = "tls")]
    fn hand_over<const N: usize>(&mut self, parts: [&[u8]; N]) {
        self.flush_plaintext();
        self.tls_pending += parts.iter().map(|p| p.len()).sum::<usize>();
        if let Some(tls) = self.tls.as_mut() {
            tls.write_plaintext_vectored(parts);
        }
    }

    /// Gives the gathered answers to rustls (encrypted into records there), before any
    /// ciphertext is taken for the socket.
    #[cfg(feature = "tls")]
    pub(super) fn flush_plaintext(&mut self) {
        if !self.scratch.is_empty()
            && let Some(tls) = self.tls.as_mut()
        {
            tls.write_plaintext(&self.scratch);
            self.scratch.clear();
        }
    }

    /// Under TLS: everything gathered for rustls, and what rustls has to send, as records
    /// in the write buffer.
    #[cfg(feature = "tls")]
    pub(super) fn seal(&mut self) {
        self.flush_plaintext();
        if let Some(tls) = self.tls.as_mut() {
            tls.write_ciphertext(&mut self.wbuf);
            self.tls_pending = 0;
        }
    }

    /// Bytes to write to the socket, in order; empty when nothing is queued.
    pub fn transmit(&mut self) -> &[u8] {
        #[cfg(feature = "tls")]
        self.seal();
        match self.chunks.front() {
            Some(chunk) => chunk,
            None => &self.wbuf,
        }
    }

    /// Writes queued bytes to `out` (the socket) with one write call, instead of
    /// [`transmit`](Self::transmit) + [`advance`](Self::advance). Under TLS the records go
    /// from rustls's buffer straight to `out` (a vectored write, as rustls's `write_tls`)
    /// rather than through the write queue: a copy less per byte sent. Returns the bytes
    /// written, 0 when nothing is queued; `out`'s errors (`WouldBlock`) are returned as
    /// they are, for the driver to handle as it would a failed socket write.
    ///
    /// The core still owns no socket: `out` is any [`io::Write`](std::io::Write).
    pub fn write_to(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<usize> {
        #[cfg(feature = "tls")]
        self.flush_plaintext();
        #[cfg(feature = "tls")]
        if self.chunks.is_empty()
            && self.wbuf.is_empty()
            && !matches!(self.phase, Phase::Closed(_))
            && let Some(tls) = self.tls.as_mut()
        {
            let n = tls.write_tls(out)?;
            self.counts.bytes_out += n as u64;
            self.tls_pending = if tls.wants_write() {
                self.tls_pending.saturating_sub(n)
            } else {
                0
            };
            return Ok(n);
        }
        let n = if self.chunks.is_empty() {
            if self.wbuf.is_empty() {
                return Ok(0);
            }
            out.write(&self.wbuf)?
        } else {
            // Queued chunks and the buffer after them in one vectored write (a large
            // owned line and its separator, pushed frames).
            let mut slices = [std::io::IoSlice::new(&[]); MAX_WRITE_SLICES];
            let mut count = 0;
            for chunk in self.chunks.iter().take(MAX_WRITE_SLICES) {
                slices[count] = std::io::IoSlice::new(chunk);
                count += 1;
            }
            if count < MAX_WRITE_SLICES && !self.wbuf.is_empty() {
                slices[count] = std::io::IoSlice::new(&self.wbuf);
                count += 1;
            }
            if count == 1 {
                out.write(&slices[0])?
            } else {
                out.write_vectored(&slices[..count])?
            }
        };
        // Counted at once (no fold later): a loop may skip the `poll_action` after a write
        // that emptied the queue (`Driven::wants_write`), and the stats stay current.
        self.drain_queue(n);
        if let Some(r) = &self.config.recorder {
            r.add(Counter::BytesOut, n as u64);
        }
        Ok(n)
    }

    /// True when bytes wait to be written to the socket.
    pub fn wants_write(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls
            && (tls.wants_write() || !self.scratch.is_empty())
        {
            return true;
        }
        self.chunked + self.wbuf.len() > 0
    }

    /// `n` bytes of [`transmit`](Self::transmit) were written.
    pub fn advance(&mut self, n: usize) {
        self.counts.bytes_out += n as u64;
        self.drain_queue(n);
    }

    /// Takes `n` written bytes off the write queue.
    fn drain_queue(&mut self, n: usize) {
        let mut n = n;
        // Across chunks too: `write_to` writes several at once.
        while let Some(chunk) = self.chunks.front_mut() {
            let k = n.min(chunk.len());
            chunk.advance(k);
            self.chunked -= k;
            n -= k;
            if !chunk.is_empty() {
                return;
            }
            self.chunks.pop_front();
        }
        if n >= self.wbuf.len() {
            // Emptied: the buffer's start stays where it is, with all its room, so the next
            // answer is appended without reclaiming the space `advance` would skip.
            self.wbuf.clear();
        } else {
            self.wbuf.advance(n);
        }
    }

    /// Bytes queued for the socket (under TLS, ciphertext still in rustls counted by the
    /// plaintext it holds).
    pub fn queued(&self) -> usize {
        #[cfg(feature = "tls")]
        let pending = self.tls_pending;
        #[cfg(not(feature = "tls"))]
        let pending = 0;
        self.chunked + self.wbuf.len() + pending
    }

    /// The answer to [`Action::QueryUnsent`]: how many bytes the kernel still holds for
    /// the peer, `None` if the driver cannot tell (the linger then waits for the peer's
    /// EOF or the deadline only).
    pub fn handle_unsent(&mut self, now: Instant, unsent: Option<usize>) {
        if let Phase::Lingering(linger) = &mut self.phase
            && linger.unsent(now, unsent)
        {
            self.phase = Phase::Closed(CloseHow::Graceful);
        }
    }
}
