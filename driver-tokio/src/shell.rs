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

    /// One whole run: begins it (binding first if needed), hands `serve` the run's cancel
    /// token and its sockets (the tasks own them, so `close` really closes them), ends it.
    pub(crate) async fn run<F, Fut>(
        &self,
        bind: impl FnOnce() -> Result<Vec<Arc<L>>, ServerError>,
        serve: F,
    ) -> Result<(), ServerError>
    where
        F: FnOnce(CancellationToken, Vec<Arc<L>>) -> Fut,
        Fut: std::future::Future<Output = Result<(), ServerError>>,
    {
        let mut run = self.begin_run(bind)?;
        let sockets = std::mem::take(&mut run.sockets);
        let result = serve(run.cancel.clone(), sockets).await;
        self.end_run(run);
        result
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

/// What every tokio server has around its `core` (a stream or datagram core with a
/// `shell`): `Clone`, `Debug`, `builder`, `activate`, the state queries, `close`,
/// `shutdown`, `serve_forever`. The server's own impl provides `fn bind(&self)`.
macro_rules! server_methods {
    ($server:ident, $builder:ident, $settings:ident, $proto:ident) => {
        impl<S, P> Clone for $server<S, P> {
            fn clone(&self) -> Self {
                Self {
                    core: self.core.clone(),
                    cfg: self.cfg.clone(),
                    _protocol: std::marker::PhantomData,
                }
            }
        }

        impl<S, P> std::fmt::Debug for $server<S, P> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($server))
                    .field("config", &self.cfg)
                    .finish_non_exhaustive()
            }
        }

        impl<S: Service, P: $proto> $server<S, P> {
            /// Starts building a server for `protocol`, making handlers with `service`.
            pub fn builder(protocol: P, service: S) -> $builder<S, P> {
                $builder {
                    service,
                    protocol,
                    cfg: $settings::default(),
                }
            }

            /// Binds the sockets; idempotent. Fails with [`ServerError::Closed`] after
            /// `close`. Datagrams or connections that arrive before serving wait in the
            /// kernel.
            pub async fn activate(&self) -> Result<(), ServerError> {
                self.core.shell.activate(|| self.bind())
            }

            /// True while the sockets are bound (after activation, until close).
            pub fn is_listening(&self) -> bool {
                self.core.shell.is_listening()
            }

            /// True while `serve_forever` is accepting or receiving.
            pub fn is_serving(&self) -> bool {
                self.core.shell.is_serving()
            }

            /// Closes the sockets for good. A stream server serves the connections it
            /// accepted until they end and a running `serve_forever` returns then; a
            /// datagram server's run returns at once. Idempotent.
            pub fn close(&self) {
                self.core.shell.close();
            }

            /// Stops a running `serve_forever`: stops accepting, lets connections answer
            /// what they have read and close (reset at the shutdown timeout), then
            /// returns. The sockets stay bound, so the server can serve again. Without a
            /// run it returns at once.
            pub async fn shutdown(&self) {
                self.core.shell.shutdown(self.core.shutdown_timeout).await;
            }

            /// Serves until [`shutdown`](Self::shutdown) (or until closed and every
            /// connection ended). Activates first if needed; sets `is_up` once serving.
            pub async fn serve_forever(&self, is_up: impl EventSet) -> Result<(), ServerError> {
                self.core.serve_forever(|| self.bind(), is_up).await
            }
        }
    };
}
pub(crate) use server_methods;
