//! Frames pushed from outside the handler ([`Pusher`]s): taken into the write queue
//! between the handler's own answers, and a pusher's request to close.

use super::*;

impl<P: StreamProtocol, R: Role<P>> Connection<P, R> {
    /// A [`Pusher`] for this connection: send to it from anywhere (server push). Every
    /// pusher of a connection shares one queue, bounded by
    /// [`write_high_water`](StreamConfig::write_high_water).
    pub fn pusher(&mut self) -> Pusher<R::Outgoing> {
        let limit = self.config.write_high_water;
        let outbox = self
            .outbox
            .get_or_insert_with(|| Arc::new(Outbox::new(limit)))
            .clone();
        if self.is_closing() {
            outbox.close();
        }
        let encoder: Arc<dyn Encoder<R::Outgoing>> =
            Arc::new(RoleEncoder::<P, R>(self.protocol.clone(), PhantomData));
        Pusher::new(outbox, encoder, self.info.clone())
    }

    /// True once a pusher was made: the driver must poll [`poll_push`](Self::poll_push).
    pub fn has_pushers(&self) -> bool {
        self.outbox.is_some()
    }

    /// Ready when pushed frames or a close asked from outside wait; registers the waker.
    pub fn poll_push(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match &self.outbox {
            Some(outbox) => outbox.poll(cx),
            None => std::task::Poll::Pending,
        }
    }

    /// A close asked through a pusher, taken once. Before a graceful one, every frame
    /// pushed before it is queued (past the high-water mark too): it goes out first.
    #[inline]
    pub(crate) fn take_close_asked(&mut self) -> Option<CloseAsked> {
        let how = self.outbox.as_ref().and_then(|o| o.take_close())?;
        if how == CloseAsked::Graceful
            && let Some(outbox) = self.outbox.clone()
            && !self.is_closing()
        {
            outbox.drain(|frame| {
                self.queue_frame(frame);
                Ok(())
            });
        }
        Some(how)
    }

    /// Moves pushed frames into the write queue while it is below its high-water mark.
    pub(super) fn take_pushed(&mut self) {
        let Some(outbox) = self.outbox.clone() else {
            return;
        };
        if self.is_closing() {
            outbox.close();
            return;
        }
        if !outbox.has_frames() {
            return;
        }
        let high_water = self.config.write_high_water;
        outbox.drain(|frame| {
            if self.queued() >= high_water {
                return Err(frame);
            }
            self.queue_frame(frame);
            Ok(())
        });
    }

    /// Queues an encoded frame after what is queued: small frames are copied into the write
    /// buffer so that many go out in one write; large ones are queued as they are (shared,
    /// no copy), as `send` does.
    fn queue_frame(&mut self, frame: Bytes) {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            // After the answers gathered before it (`send`), in order.
            self.gather(&frame);
            return;
        }
        if frame.len() < SHARED_MIN && self.chunks.is_empty() {
            self.wbuf.extend_from_slice(&frame);
            return;
        }
        self.queue_chunk(frame.into());
    }
}

/// Encodes outgoing messages for pushers, by the connection's role.
struct RoleEncoder<P, R>(Arc<P>, PhantomData<fn() -> R>);

impl<P: StreamProtocol, R: Role<P>> Encoder<R::Outgoing> for RoleEncoder<P, R> {
    fn encode(&self, item: &R::Outgoing) -> Result<Bytes, SerializeError> {
        if let Some(frame) = R::shared(&self.0, item) {
            return Ok(frame);
        }
        let mut dst = BytesMut::new();
        R::encode(&self.0, item, &mut dst)?;
        Ok(dst.freeze())
    }
}
