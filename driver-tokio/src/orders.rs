//! A server run's shutdown orders as one branch of a connection task's wait.
//!
//! The run sends each connection its shutdown deadline on a `watch` channel
//! ([`ShutdownOrders`](crate::shell::ShutdownOrders)). [`Orders`] compares the channel's
//! version at every wait and polls its `changed()` future only through [`Relayed`]: to
//! register the task's waker, and again after any wake-up.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::watch;

use crate::relay::Relayed;

/// A future that resolves at the next order after the one `rx` had seen.
type Changed = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Ready when an order came that the caller has not looked at (through [`Orders::rx`]), or
/// when the server is gone.
pub(crate) struct Orders {
    /// Where the caller reads the orders from.
    pub(crate) rx: watch::Receiver<Option<Instant>>,
    /// Makes `changed` (the channel's own in the driver, a test double in the tests).
    make: fn(&watch::Receiver<Option<Instant>>) -> Changed,
    changed: Relayed<Changed>,
}

impl Orders {
    pub(crate) fn new(rx: watch::Receiver<Option<Instant>>) -> Self {
        Self::with(rx, next_order)
    }

    fn with(
        rx: watch::Receiver<Option<Instant>>,
        make: fn(&watch::Receiver<Option<Instant>>) -> Changed,
    ) -> Self {
        let changed = Relayed::new(make(&rx));
        Self { rx, make, changed }
    }

    /// After the caller looked at an order: wait for the next one.
    pub(crate) fn rearm(&mut self) {
        self.changed = Relayed::new((self.make)(&self.rx));
    }
}

impl Future for Orders {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if !matches!(this.rx.has_changed(), Ok(false)) {
            return Poll::Ready(());
        }
        this.changed.poll(cx)
    }
}

/// Resolves at the next shutdown order after what `seen` has seen, or when the server is
/// gone.
fn next_order(seen: &watch::Receiver<Option<Instant>>) -> Changed {
    let mut rx = seen.clone();
    // Outside tokio's task budget: a poll that returns `Pending` has registered the waker
    // ([`Relayed`] counts on it), never "budget spent, try again".
    Box::pin(tokio::task::unconstrained(async move {
        let _ = rx.changed().await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::tests::{Count, held, reset_held, wake_held};
    use std::sync::Arc;
    use std::task::Waker;

    fn held_changed(_: &watch::Receiver<Option<Instant>>) -> Changed {
        Box::pin(held())
    }

    fn poll(orders: &mut Orders, task: &Arc<Count>) -> Poll<()> {
        let waker = Waker::from(task.clone());
        Pin::new(orders).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_spurious_wake_up_registers_again() {
        // The lost second signal of tests/example_signals.rs (1 run in 5 before): the
        // channel woke a waiter that had registered during the first order's wake-up; the
        // next wait did not poll `changed` again, so the second order woke nobody.
        reset_held();
        let (tx, rx) = watch::channel(None);
        let mut orders = Orders::with(rx, held_changed);
        let task = Arc::new(Count::default());
        assert!(poll(&mut orders, &task).is_pending());
        assert!(wake_held(false), "registered at the first wait");
        assert_eq!(task.get(), 1);
        assert!(poll(&mut orders, &task).is_pending(), "no order yet");
        tx.send_replace(Some(Instant::now()));
        assert!(
            wake_held(true),
            "registered again after the spurious wake-up"
        );
        assert_eq!(task.get(), 2);
        assert!(poll(&mut orders, &task).is_ready());
    }

    #[tokio::test]
    async fn the_channel_orders_and_a_gone_server_wake_the_task() {
        let (tx, rx) = watch::channel(None);
        let mut orders = Orders::new(rx);
        let task = Arc::new(Count::default());
        assert!(poll(&mut orders, &task).is_pending());
        assert!(poll(&mut orders, &task).is_pending());
        tx.send_replace(Some(Instant::now()));
        assert_eq!(task.get(), 1);
        assert!(poll(&mut orders, &task).is_ready());
        // The caller looks at the order, then waits for the next one.
        assert!(orders.rx.borrow_and_update().is_some());
        orders.rearm();
        assert!(
            poll(&mut orders, &task).is_pending(),
            "the order was looked at"
        );
        drop(tx);
        assert_eq!(task.get(), 2, "the sender's drop wakes the task");
        assert!(poll(&mut orders, &task).is_ready());
    }
}
