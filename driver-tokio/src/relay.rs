//! [`Relayed`]: a future that a loop's wait polls only when it may have moved on.
//!
//! A loop that waits on the same long-lived futures at every turn (a shutdown channel, a
//! cancellation token) pays for each poll: a `Notify` waiter's poll takes a lock. A future
//! that returned `Pending` has registered the task's waker and can only move on after
//! waking it, so a wait may skip the poll until then. [`Relayed`] passes the future's
//! wake-ups on to the task through a flag and polls it again only after one came (or when
//! the task's waker changed). A wake-up may be spurious and spend the registration (a
//! `watch` channel wakes its waiters shard by shard, so a waiter registered during another
//! send's wake-up is woken too); polling again after every wake-up, not only after the
//! ones that mean something, is what keeps the next one coming.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// A future polled only when it may have moved on (see the module docs).
pub(crate) struct Relayed<F> {
    future: F,
    /// The waker `future` holds, once polled: the task's, behind a flag that says it woke.
    relay: Option<Arc<Relay>>,
}

/// Passes the future's wake-up on to the task and remembers that it came.
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

impl<F: Future + Unpin> Relayed<F> {
    pub(crate) fn new(future: F) -> Self {
        Self {
            future,
            relay: None,
        }
    }

    /// Polls the future if it may have moved on; `Pending` otherwise (the task is woken
    /// when it does). Like any future, not to be polled again once it returned `Ready`.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<F::Output> {
        let relay = match &self.relay {
            Some(r) if r.task.will_wake(cx.waker()) => {
                if !r.woke.swap(false, Ordering::AcqRel) {
                    return Poll::Pending; // still registered: the future wakes this task
                }
                r.clone()
            }
            _ => Arc::new(Relay {
                task: cx.waker().clone(),
                woke: AtomicBool::new(false),
            }),
        };
        self.relay = Some(relay.clone());
        let waker = Waker::from(relay);
        Pin::new(&mut self.future).poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::sync::atomic::AtomicUsize;

    /// A task's waker that counts its wake-ups.
    #[derive(Default)]
    pub(crate) struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Count {
        pub(crate) fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    thread_local! {
        /// The waker the test future holds (one registration, as a `Notify` waiter: a
        /// wake-up spends it), and whether it is ready.
        static HELD: RefCell<(Option<Waker>, bool)> = const { RefCell::new((None, false)) };
    }

    /// A future that registers like a `Notify` waiter; the test wakes what it holds.
    pub(crate) fn held() -> impl Future<Output = ()> + Unpin + Send {
        std::future::poll_fn(|cx| {
            HELD.with_borrow_mut(|(waker, ready)| {
                if *ready {
                    return Poll::Ready(());
                }
                *waker = Some(cx.waker().clone());
                Poll::Pending
            })
        })
    }

    /// Wakes what the test future holds, as a `Notify` does (`ready`: for a reason);
    /// false when it holds nothing.
    pub(crate) fn wake_held(ready: bool) -> bool {
        let waker = HELD.with_borrow_mut(|(waker, r)| {
            *r |= ready;
            waker.take()
        });
        waker.map(Waker::wake).is_some()
    }

    /// Forgets the test future's state.
    pub(crate) fn reset_held() {
        HELD.with_borrow_mut(|h| *h = (None, false));
    }

    fn poll<F: Future + Unpin>(r: &mut Relayed<F>, task: &Arc<Count>) -> Poll<F::Output> {
        let waker = Waker::from(task.clone());
        r.poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn polled_again_only_after_a_wake_up() {
        reset_held();
        let mut r = Relayed::new(held());
        let task = Arc::new(Count::default());
        assert!(poll(&mut r, &task).is_pending());
        HELD.with_borrow_mut(|h| h.0 = None);
        assert!(poll(&mut r, &task).is_pending());
        assert!(!wake_held(false), "the second wait did not poll the future");
    }

    #[test]
    fn a_spurious_wake_up_registers_again() {
        reset_held();
        let mut r = Relayed::new(held());
        let task = Arc::new(Count::default());
        assert!(poll(&mut r, &task).is_pending());
        assert!(wake_held(false), "spurious: nothing to report");
        assert_eq!(task.get(), 1);
        assert!(poll(&mut r, &task).is_pending());
        assert!(
            wake_held(true),
            "registered again after the spurious wake-up"
        );
        assert_eq!(task.get(), 2);
        assert!(poll(&mut r, &task).is_ready());
    }

    #[test]
    fn another_task_registers_its_own_waker() {
        reset_held();
        let mut r = Relayed::new(held());
        let (first, second) = (Arc::new(Count::default()), Arc::new(Count::default()));
        assert!(poll(&mut r, &first).is_pending());
        assert!(poll(&mut r, &second).is_pending());
        assert!(wake_held(true));
        assert_eq!((first.get(), second.get()), (0, 1));
    }
}
