//! [`EventSet`]: what `serve_notify` signals once the server is up.

/// Something `serve_notify` sets once the server is serving (EasyNetwork's
/// `SupportsEventSet`). `set` must be idempotent.
///
/// ```
/// use easynet_common::EventSet;
///
/// let (tx, rx) = std::sync::mpsc::channel();
/// tx.set();
/// assert!(rx.try_recv().is_ok());
/// ```
pub trait EventSet: Send + Sync {
    /// Signals the event.
    fn set(&self);
}

impl EventSet for () {
    fn set(&self) {}
}

#[cfg(feature = "tokio")]
impl EventSet for tokio::sync::watch::Sender<bool> {
    fn set(&self) {
        self.send_replace(true);
    }
}

#[cfg(feature = "tokio")]
impl EventSet for tokio::sync::Notify {
    fn set(&self) {
        self.notify_one();
    }
}

#[cfg(feature = "tokio")]
impl EventSet for tokio::sync::mpsc::UnboundedSender<()> {
    fn set(&self) {
        let _ = self.send(());
    }
}

impl EventSet for std::sync::mpsc::Sender<()> {
    fn set(&self) {
        let _ = self.send(());
    }
}

impl EventSet for std::sync::atomic::AtomicBool {
    fn set(&self) {
        self.store(true, std::sync::atomic::Ordering::Release);
    }
}

impl<T: EventSet + ?Sized> EventSet for std::sync::Arc<T> {
    fn set(&self) {
        (**self).set();
    }
}

impl<T: EventSet + ?Sized> EventSet for &T {
    fn set(&self) {
        (**self).set();
    }
}
