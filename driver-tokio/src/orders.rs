//! A server run's shutdown orders as one branch of a connection task's wait.
//!
//! The run sends each connection its shutdown deadline on a `watch` channel
//! ([`ShutdownOrders`](crate::shell::ShutdownOrders)). Polling the channel's `changed()`
//! future at every wait costs a lock and a unit of the task's budget, so [`Orders`] polls it
//! only to register the task's waker, and again after it woke the task: a wake-up may be
//! spurious (the channel wakes its waiters shard by shard, so a waiter that registered
//! during another order's wake-up is woken without a new order), and it spends the
//! registration either way, so only a new poll makes the next order wake the task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use tokio::sync::watch;

/// A future that resolves at the next order after the one `rx` had seen.
type Changed = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Ready when an order came that the caller has not looked at (through [`Orders::rx`]), or
/// when the server is gone.
pub(crate) struct Orders {
    /// Where the caller reads the orders from.
    pub(crate) rx: watch::Receiver<Option<Instant>>,
    /// Makes `changed` (the channel's own in the driver, a test double in the tests).
    make: fn(&watch::Receiver<Option<Instant>>) -> Changed,
    changed: Changed,
    /// The waker `changed` holds, once polled: this task's, behind a flag that says it woke.
    relay: Option<Arc<Relay>>,
}

/// Passes `changed`'s wake-up on to the task and remembers that it came.
struct Relay {
    task: Waker,
    woke: AtomicBool,
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woke.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl Orders {
    pub(crate) fn new(rx: watch::Receiver<Option<Instant>>) -> Self {
        Self::with(rx, next_order)
    }

    fn with(
        rx: watch::Receiver<Option<Instant>>,
        make: fn(&watch::Receiver<Option<Instant>>) -> Changed,
    ) -> Self {
        let changed = make(&rx);
        Self {
            rx,
            make,
            changed,
            relay: None,
        }
    }

    /// After an order: wait for the next one.
    pub(crate) fn rearm(&mut self) {
        self.changed = (self.make)(&self.rx);
        self.relay = None;
    }
}

impl Future for Orders {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if !matches!(this.rx.has_changed(), Ok(false)) {
            return Poll::Ready(());
        }
        let relay = match &this.relay {
            Some(r) if r.task.will_wake(cx.waker()) => {
                if !r.woke.swap(false, Ordering::AcqRel) {
                    return Poll::Pending; // still registered: `changed` wakes this task
                }
                r.clone()
            }
            _ => Arc::new(Relay {
                task: cx.waker().clone(),
                woke: AtomicBool::new(false),
            }),
        };
        this.relay = Some(relay.clone());
        let waker = Waker::from(relay);
        if this
            .changed
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
        {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Resolves at the next shutdown order after what `seen` has seen, or when the server is
/// gone.
fn next_order(seen: &watch::Receiver<Option<Instant>>) -> Changed {
    let mut rx = seen.clone();
    // Outside tokio's task budget: a poll that returns `Pending` has registered the waker
    // ([`Orders`] counts on it), never "budget spent, try again".
    Box::pin(tokio::task::unconstrained(async move {
        let _ = rx.changed().await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::sync::atomic::AtomicUsize;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Count {
        fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    thread_local! {
        /// The waker the test double of `changed` holds (one registration, as a `Notify`
        /// waiter: a wake-up spends it).
        static HELD: RefCell<Option<Waker>> = const { RefCell::new(None) };
    }

    /// A `changed` that never resolves by itself: the test wakes what it holds.
    fn held(_: &watch::Receiver<Option<Instant>>) -> Changed {
        Box::pin(std::future::poll_fn(|cx| {
            HELD.with_borrow_mut(|h| *h = Some(cx.waker().clone()));
            Poll::Pending
        }))
    }

    /// Wakes what the test double holds, as the channel does; false when it holds nothing.
    fn wake_held() -> bool {
        HELD.with_borrow_mut(|h| h.take())
            .map(Waker::wake)
            .is_some()
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
        let (tx, rx) = watch::channel(None);
        let mut orders = Orders::with(rx, held);
        let task = Arc::new(Count::default());
        assert!(poll(&mut orders, &task).is_pending());
        assert!(wake_held(), "registered at the first wait");
        assert_eq!(task.get(), 1);
        assert!(poll(&mut orders, &task).is_pending(), "no order yet");
        tx.send_replace(Some(Instant::now()));
        assert!(wake_held(), "registered again after the spurious wake-up");
        assert_eq!(task.get(), 2);
        assert!(poll(&mut orders, &task).is_ready());
    }

    #[test]
    fn waits_in_between_do_not_poll_the_channel() {
        let (_tx, rx) = watch::channel(None);
        let mut orders = Orders::with(rx, held);
        let task = Arc::new(Count::default());
        assert!(poll(&mut orders, &task).is_pending());
        HELD.with_borrow_mut(|h| *h = None);
        assert!(poll(&mut orders, &task).is_pending());
        assert!(!wake_held(), "the second wait did not poll `changed`");
    }

    #[test]
    fn another_task_registers_its_own_waker() {
        let (tx, rx) = watch::channel(None);
        let mut orders = Orders::with(rx, held);
        let (first, second) = (Arc::new(Count::default()), Arc::new(Count::default()));
        assert!(poll(&mut orders, &first).is_pending());
        assert!(poll(&mut orders, &second).is_pending());
        tx.send_replace(Some(Instant::now()));
        assert!(wake_held());
        assert_eq!((first.get(), second.get()), (0, 1));
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
