//! What the TCP and UDP servers share: the lifecycle, the bound sockets and the current run.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use easynet_core::lifecycle::{Activation, Lifecycle};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ServerError;
use crate::conn::now;

struct State<L> {
    lifecycle: Lifecycle,
    sockets: Vec<Arc<L>>,
    run: Option<Run>,
}

struct Run {
    cancel: CancellationToken,
    done: watch::Receiver<bool>,
}

/// A server's lifecycle around its sockets of type `L`.
pub(crate) struct Shell<L> {
    state: Mutex<State<L>>,
    /// Cancelled by `close`: socket tasks drop their sockets.
    pub(crate) closed: CancellationToken,
}

/// A run in progress; [`Shell::end_run`] must follow.
pub(crate) struct RunGuard<L> {
    pub(crate) cancel: CancellationToken,
    pub(crate) sockets: Vec<Arc<L>>,
    done: watch::Sender<bool>,
}

impl<L> Shell<L> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                lifecycle: Lifecycle::new(),
                sockets: Vec::new(),
                run: None,
            }),
            closed: CancellationToken::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<L>> {
        // The state stays consistent across a panic elsewhere: keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds with `bind` unless already bound (idempotent).
    pub(crate) fn activate(
        &self,
        bind: impl FnOnce() -> Result<Vec<Arc<L>>, ServerError>,
    ) -> Result<(), ServerError> {
        let mut state = self.lock();
        match state.lifecycle.activate()? {
            Activation::AlreadyActive => Ok(()),
            Activation::Bind => {
                state.sockets = bind()?;
                state.lifecycle.activated();
                Ok(())
            }
        }
    }

    /// Starts a run (binding first if needed).
    pub(crate) fn begin_run(
        &self,
        bind: impl FnOnce() -> Result<Vec<Arc<L>>, ServerError>,
    ) -> Result<RunGuard<L>, ServerError> {
        let mut state = self.lock();
        if state.lifecycle.begin_serve()? == Activation::Bind {
            match bind() {
                Ok(sockets) => {
                    state.sockets = sockets;
                    state.lifecycle.activated();
                }
                Err(e) => {
                    state.lifecycle.activation_failed();
                    state.lifecycle.stopped();
                    return Err(e);
                }
            }
        }
        let cancel = CancellationToken::new();
        let (done, done_rx) = watch::channel(false);
        state.run = Some(Run {
            cancel: cancel.clone(),
            done: done_rx,
        });
        Ok(RunGuard {
            cancel,
            sockets: state.sockets.clone(),
            done,
        })
    }

    /// The run's setup is done: it is serving.
    pub(crate) fn serving(&self) {
        self.lock().lifecycle.serving();
    }

    /// The run has ended.
    pub(crate) fn end_run(&self, guard: RunGuard<L>) {
        {
            let mut state = self.lock();
            state.lifecycle.stopped();
            state.run = None;
        }
        guard.done.send_replace(true);
    }

    /// Stops the current run, if any, and waits until it has ended.
    pub(crate) async fn shutdown(&self, timeout: Duration) {
        let mut done = {
            let mut state = self.lock();
            let Some(run) = state.run.as_ref() else {
                return;
            };
            let (cancel, done) = (run.cancel.clone(), run.done.clone());
            let _ = state.lifecycle.shutdown(now(), timeout);
            cancel.cancel();
            done
        };
        let _ = done.wait_for(|d| *d).await;
    }

    /// Closes for good (idempotent).
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.lifecycle.close();
        state.sockets.clear();
        self.closed.cancel();
    }

    pub(crate) fn is_listening(&self) -> bool {
        self.lock().lifecycle.is_listening()
    }

    pub(crate) fn is_serving(&self) -> bool {
        self.lock().lifecycle.is_serving()
    }

    /// The bound sockets while listening; empty otherwise.
    pub(crate) fn sockets(&self) -> Vec<Arc<L>> {
        let state = self.lock();
        if state.lifecycle.is_listening() {
            state.sockets.clone()
        } else {
            Vec::new()
        }
    }
}
