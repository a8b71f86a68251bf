//! What comes in: bytes read (copied or in place), the end of input, errors, the
//! deadlines' expiry, and requests decoded for the handler.

use super::*;

impl<P: StreamProtocol, R: Role<P>> Connection<P, R> {
    /// Bytes read from the socket.
    pub fn handle_read(&mut self, now: Instant, data: &[u8]) {
        if !data.is_empty() {
            self.idle.touch(now);
        }
        match &mut self.phase {
            Phase::Closed(_) | Phase::Fin { .. } => return,
            Phase::Lingering(l) => {
                l.heard |= !data.is_empty();
                return; // after FIN, input is dropped unread
            }
            _ => {}
        }
        // First, so that a switch back to small reads can let the big buffer go.
        self.note_read(data.len());
        self.counts.bytes_in += data.len() as u64;
        #[cfg(feature = "tls")]
        self.flush_plaintext();
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_mut() {
            let res = tls.read_ciphertext(data, &mut self.rbuf);
            tls.write_ciphertext(&mut self.wbuf);
            self.tls_pending = 0;
            if let Err(err) = res {
                if matches!(self.phase, Phase::Handshaking { .. }) {
                    self.counts.handshake_failures += 1;
                    if R::SERVER {
                        // A client can fail handshakes at will: a budget per peer host.
                        if let Some(suppressed) = self.log_budget(now) {
                            tracing::warn!(conn = %self.info.id, peer = %self.info.peer, error = %err, suppressed, "error during TLS handshake");
                        }
                    } else {
                        // The client's connect returns it.
                        tracing::debug!(peer = %self.info.peer, error = %err, "error during TLS handshake");
                    }
                    self.handshake_error = Some(Box::new(match err {
                        crate::tls::TlsError::Rustls(e) => HandshakeError::Tls(e),
                        crate::tls::TlsError::NotTls(b) => HandshakeError::NotTls(b),
                        crate::tls::TlsError::Io(e) => HandshakeError::Io(e),
                    }));
                } else {
                    tracing::debug!(conn = %self.info.id, peer = %self.info.peer, error = %err, "TLS error");
                }
                self.rbuf.clear();
                self.fail(now);
                return;
            }
            if let Phase::Handshaking { .. } = self.phase
                && !tls.is_handshaking()
            {
                self.phase = Phase::Open;
                self.ready = true;
                self.info.tls = Some(tls.info());
            }
            if tls.peer_closed() {
                self.eof = true;
            }
            if matches!(self.phase, Phase::Closing { .. }) {
                self.rbuf.clear(); // data after we closed is dropped
            }
            return;
        }
        if matches!(self.phase, Phase::Open) && !self.eof {
            self.rbuf.extend_from_slice(data);
        }
    }

    /// A large answer's own buffer, once its bytes are taken (rustls copies them into its
    /// records), becomes the receive buffer when that is empty and smaller: the next large
    /// read lands in it. Echoing large messages then allocates no buffer per request, and
    /// the heap does not grow and shrink by one each time (which the allocator may hand
    /// back to the system, to be faulted in again).
    #[cfg(feature = "tls")]
    pub(super) fn recycle(&mut self, body: crate::protocol::OwnedPayload) {
        use crate::protocol::OwnedPayload;
        if !self.large_reads || !self.rbuf.is_empty() {
            return;
        }
        let room = match &body {
            OwnedPayload::Vec(v) => v.capacity(),
            OwnedPayload::Shared(b) => b.len(),
        };
        // Not an outsized one: a connection keeps at most two reads' worth.
        if room <= self.rbuf.capacity() || room > 2 * self.config.max_read_size() {
            return;
        }
        if let Ok(mut buf) = body.into_bytes().try_into_mut() {
            buf.clear();
            self.rbuf = buf;
        }
    }

    /// Chooses how the next read is done (see [`read_buffer`](Self::read_buffer)) and how
    /// large it is ([`read_size`](Self::read_size)).
    fn note_read(&mut self, n: usize) {
        if n >= self.read_size {
            // The read was filled: more is likely waiting. Fewer, larger reads.
            self.read_size = (self.read_size * 2).min(self.config.max_read_size());
        }
        if n >= self.config.read_size / 4 {
            self.large_reads = true;
            self.small_reads = 0;
        } else if self.large_reads {
            self.small_reads += 1;
            if self.small_reads >= SMALL_READS_TO_COPY {
                self.large_reads = false;
                self.read_size = self.config.read_size;
                if self.rbuf.is_empty() {
                    // Small messages again: do not keep a read-sized buffer for them.
                    self.rbuf = BytesMut::new();
                }
            }
        }
    }

    /// The receive buffer, with room for one read, when the driver may read straight into
    /// it: a plain open connection that read at least a quarter of the configured read size
    /// lately (until four small reads in a row). That saves a copy per read for bulk
    /// transfers and pipelined requests; small reads go through [`handle_read`](Self::handle_read) so that an
    /// idle connection does not keep a read-sized buffer. After reading, call
    /// [`handle_read_in_place`](Self::handle_read_in_place).
    pub fn read_buffer(&mut self) -> Option<&mut BytesMut> {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return None;
        }
        if !self.large_reads || !matches!(self.phase, Phase::Open) || self.eof {
            return None;
        }
        self.rbuf.reserve(self.read_size);
        Some(&mut self.rbuf)
    }

    /// Bytes the driver reads next: [`StreamConfig::read_size`], larger while reads fill it
    /// (up to [`StreamConfig::max_read_size`]), back to it once reads are small again.
    pub fn read_size(&self) -> usize {
        self.read_size
    }

    /// `n` bytes were read into [`read_buffer`](Self::read_buffer); 0 means end of stream.
    pub fn handle_read_in_place(&mut self, now: Instant, n: usize) {
        self.counts.bytes_in += n as u64;
        if n == 0 {
            self.handle_eof(now);
        } else {
            self.idle.touch(now);
        }
        self.note_read(n);
    }

    /// The peer closed its write side (read returned 0).
    pub fn handle_eof(&mut self, now: Instant) {
        let _ = now;
        self.eof = true;
        if !self.closing {
            self.end_because(CloseReason::ByPeer);
        }
        if let Phase::Handshaking { .. } = self.phase {
            self.handshake_error
                .get_or_insert_with(|| Box::new(HandshakeError::Eof));
            self.closing = true;
            self.phase = Phase::Closed(CloseHow::Abort);
        }
    }

    /// Reading or writing failed (reset, broken pipe): nothing more can be sent.
    pub fn handle_io_error(&mut self, now: Instant) {
        let _ = now;
        self.end_because(CloseReason::Reset);
        self.eof = true;
        self.closing = true;
        self.clear_writes();
        if !self.is_closed() {
            self.phase = Phase::Closed(CloseHow::Abort);
        }
    }

    /// A deadline may have passed: the handshake's, the idle timeout's or the close's.
    /// Receive deadlines are reported by [`poll_received`](Self::poll_received).
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Handshaking { .. } | Phase::Open) && self.idle.expired(now) {
            self.idle_expired(now);
        }
        match self.phase {
            Phase::Handshaking { deadline } if now >= deadline => {
                tracing::debug!(conn = %self.info.id, peer = %self.info.peer, "TLS handshake timed out");
                self.counts.handshake_failures += 1;
                self.end_because(CloseReason::Timeout);
                self.handshake_error = Some(Box::new(HandshakeError::Timeout(
                    self.config.tls_handshake_timeout,
                )));
                self.closing = true;
                self.clear_writes();
                self.phase = Phase::Closed(CloseHow::Abort);
            }
            Phase::Closing { deadline, .. } if now >= deadline => {
                self.end_because(CloseReason::Timeout);
                self.clear_writes();
                self.phase = Phase::Closed(CloseHow::Abort);
            }
            // The peer did not finish in time; everything we wrote went out at least.
            Phase::Lingering(l) if now >= l.deadline => {
                self.phase = Phase::Closed(CloseHow::Graceful);
            }
            Phase::Open if self.shutdown.is_some_and(|d| now >= d) => {
                tracing::debug!(conn = %self.info.id, peer = %self.info.peer, "still open at the shutdown deadline");
                self.end_because(CloseReason::Shutdown);
                self.closing = true;
                self.clear_writes();
                self.phase = Phase::Closed(CloseHow::Abort);
            }
            _ => {}
        }
    }

    /// Nothing came for [`StreamConfig::idle_timeout`]: a handshake is dropped; an open
    /// connection ends as at a server shutdown of its own (reading stops, what was read is
    /// answered, then a graceful close by `now + shutdown_timeout`).
    fn idle_expired(&mut self, now: Instant) {
        tracing::debug!(conn = %self.info.id, peer = %self.info.peer, "idle timeout: closing");
        // Counted as a timeout, whatever the close that follows says.
        self.end_because(CloseReason::Timeout);
        if let Phase::Handshaking { .. } = self.phase {
            self.counts.handshake_failures += 1;
            self.closing = true;
            self.clear_writes();
            self.phase = Phase::Closed(CloseHow::Abort);
            return;
        }
        let deadline = self.close_deadline(now);
        self.shutdown = Some(self.shutdown.map_or(deadline, |d| d.min(deadline)));
    }

    /// Arms a receive: the next [`poll_received`](Self::poll_received) returns a message, a
    /// parse error, or a timeout once `timeout` has passed.
    /// A timeout the clock cannot add (`Duration::MAX`) means no deadline.
    pub fn recv(&mut self, now: Instant, timeout: Option<Duration>) {
        self.recv = Recv::Armed {
            deadline: timeout.and_then(|t| now.checked_add(t)),
        };
    }

    /// Disarms the receive (a dropped async receive), so no stale deadline stays behind.
    pub fn cancel_recv(&mut self) {
        self.recv = Recv::Idle;
    }

    /// True while a receive is armed.
    pub fn is_receiving(&self) -> bool {
        matches!(self.recv, Recv::Armed { .. })
    }

    /// What the armed receive got, if anything yet. Complete messages already buffered come
    /// first, even after EOF; then a timeout if the deadline has passed.
    pub fn poll_received(&mut self, now: Instant) -> Option<Received<R::Incoming>> {
        let Recv::Armed { deadline } = self.recv else {
            return None;
        };
        if !self.ready || self.is_closed() {
            return None;
        }
        let (protocol, decoder, rbuf) = (&self.protocol, &mut self.decoder, &mut self.rbuf);
        let decoded = match catch_unwind(AssertUnwindSafe(|| R::decode(protocol, decoder, rbuf))) {
            Ok(decoded) => decoded,
            Err(panic) => {
                // The user's framing or serializer panicked: its state is unknown, so this
                // one connection ends; the server goes on.
                self.counts.handler_panics += 1;
                if let Some(suppressed) = self.log_budget(now) {
                    tracing::error!(conn = %self.info.id, peer = %self.info.peer, error = %panic_message("decoder", panic), suppressed, "exception occurred during processing of request");
                }
                self.recv = Recv::Idle;
                self.rbuf.clear();
                self.fail(now);
                return None;
            }
        };
        let received = match decoded {
            Ok(Some(item)) => {
                self.counts.requests += 1;
                Received::Request(item)
            }
            Err(err) => {
                self.counts.parse_errors += 1;
                Received::ParseError(err)
            }
            Ok(None) => match deadline {
                Some(d) if now >= d && !self.is_input_finished() => Received::Timeout,
                _ => return None,
            },
        };
        self.recv = Recv::Idle;
        Some(received)
    }

    /// True when the driver should read from the socket.
    pub fn wants_read(&self) -> bool {
        match self.phase {
            Phase::Handshaking { .. } => true,
            Phase::Open => {
                self.is_receiving()
                    && !self.eof
                    && self.shutdown.is_none()
                    && self.queued() < self.config.write_high_water
            }
            Phase::Closing {
                await_close_notify, ..
            } => await_close_notify && !self.eof,
            Phase::Lingering(_) => !self.eof,
            Phase::Fin { .. } | Phase::Closed(_) => false,
        }
    }
}
