//! Running a [`StreamSim`]: rounds until idle, the virtual clock, shutdown.

use std::task::Context;
use std::time::{Duration, Instant};

use super::client::{client_step, drop_contained};
use super::{Client, MAX_ROUNDS, StreamSim};
use crate::handler::Service;
use crate::protocol::{StreamClientProtocol, StreamServerProtocol};
use crate::server;
use crate::sim::net::{Ctx, step};
use crate::sim::{Event, Traced};

impl<S, P> StreamSim<S, P>
where
    S: Service,
    P: StreamServerProtocol + StreamClientProtocol,
{
    /// Runs until nothing more happens without the clock moving: every byte that can
    /// move moves, every handler runs, due timers fire, woken async handlers resume.
    ///
    /// # Panics
    /// If the server never settles (a handler that loops for ever, say).
    pub fn run_until_idle(&mut self) {
        self.logged(|sim| {
            for _ in 0..MAX_ROUNDS {
                if !sim.round() {
                    return;
                }
            }
            panic!("the simulation does not settle (a handler in a busy loop?)");
        });
    }

    /// One round over every connection; true if anything happened.
    fn round(&mut self) -> bool {
        let mut progress = false;
        let mut events = Vec::new();
        let mut closed = Vec::new();
        // Every wakeable session is polled each round, so the waker need not record anything.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for (&client, pair) in self.pairs.iter_mut() {
            let mut trace = |e: Event| events.push(e);
            let mut ctx = Ctx {
                now: self.now,
                faults: &self.faults,
                chance: &mut self.chance,
                client,
                trace: &mut trace,
            };
            if let Some(server) = pair.server.as_deref_mut() {
                // Polled every round: it registers the waker (pushers, async handlers).
                if server.wakeable() && server.poll_wake(&mut cx).is_ready() {
                    server.resume(self.now);
                    progress = true;
                }
                progress |= step(
                    server,
                    &mut pair.server_end,
                    &mut pair.to_server,
                    &mut pair.to_client,
                    &mut ctx,
                    None,
                );
            } else if !pair.server_end.is_done() {
                // The handler factory failed: the driver drops the connection.
                pair.server_end.closed = Some(crate::stream::CloseHow::Abort);
                pair.to_client.reset = true;
                progress = true;
            }
            // The client keeps a receive armed and collects what it gets.
            if let Client::Speaking(conn) = &mut pair.client
                && !pair.client_end.is_done()
                && !conn.is_receiving()
            {
                conn.recv(self.now, None);
            }
            progress |= client_step(pair, &mut ctx);
            if let Client::Speaking(conn) = &mut pair.client {
                while let Some(r) = conn.poll_received(self.now) {
                    pair.replies.push_back(r);
                    conn.recv(self.now, None);
                    progress = true;
                }
            }
            if pair.server_end.is_done() && !pair.counted {
                pair.counted = true;
                closed.push(pair.conn);
                if let Some(session) = pair.server.take() {
                    drop_contained(session);
                }
            }
        }
        for e in events {
            self.record(e);
        }
        for conn in closed {
            self.machine.closed(conn);
            progress = true;
        }
        if self.machine.poll_timeout().is_some_and(|t| t <= self.now) {
            self.machine.handle_timeout(self.now);
        }
        progress | self.process_events()
    }

    /// Does what the server machine says; true if it said anything.
    pub(super) fn process_events(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.machine.poll_event() {
            any = true;
            match event {
                server::Event::StopAccepting => self.accepting = false,
                server::Event::Shutdown { deadline } => {
                    self.record(Event::Shutdown);
                    for pair in self.pairs.values_mut() {
                        if let Some(server) = pair.server.as_deref_mut() {
                            server.shutdown(self.now, deadline);
                        }
                    }
                }
                server::Event::Teardown => {
                    server::run_teardown(&*self.service);
                    self.record(Event::Teardown);
                    self.machine.teardown_done();
                }
                server::Event::Stopped => self.record(Event::Stopped),
            }
        }
        any
    }

    /// The next instant something is due: a receive timeout, a linger, a handshake or
    /// shutdown deadline. `None` if nothing will happen without a client acting.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pairs
            .values()
            .flat_map(|p| [p.server_end.timer, p.client_end.timer])
            .flatten()
            .chain(self.machine.poll_timeout())
            .min()
    }

    /// Moves the virtual clock forward by `d`, firing every deadline on the way in order
    /// (each followed by [`run_until_idle`](Self::run_until_idle)). Returns at once.
    pub fn advance(&mut self, d: Duration) {
        let target = crate::deadline_after(self.now, d);
        self.run_until_idle();
        while let Some(next) = self.next_deadline().filter(|&t| t <= target) {
            self.now = self.now.max(next);
            self.run_until_idle();
        }
        self.now = target;
        self.run_until_idle();
    }

    /// Jumps to the next deadline and fires it; returns how far the clock moved, or
    /// `None` if nothing is due.
    pub fn advance_to_next_deadline(&mut self) -> Option<Duration> {
        self.run_until_idle();
        let next = self.next_deadline()?;
        let moved = next.saturating_duration_since(self.now);
        self.now = self.now.max(next);
        self.run_until_idle();
        Some(moved)
    }

    /// Begins a graceful shutdown, as `shutdown()` on a driver's server does: accepting
    /// stops, every connection is told the one deadline; then runs until idle (the clock
    /// does not move).
    pub fn begin_shutdown(&mut self) {
        self.machine.shutdown(self.now);
        self.logged(|sim| sim.process_events());
        self.run_until_idle();
    }

    /// A whole graceful shutdown: [`begin_shutdown`](Self::begin_shutdown), then the clock
    /// moves from deadline to deadline until the run is over (at the latest at the
    /// shutdown deadline).
    pub fn shutdown(&mut self) {
        self.begin_shutdown();
        while !self.is_stopped() {
            if self.advance_to_next_deadline().is_none() {
                break;
            }
        }
    }

    /// Closes the server, as `close()` does: accepting stops at once, connections are
    /// served to their end, then teardown runs.
    pub fn close_server(&mut self) {
        self.machine.close();
        self.logged(|sim| sim.process_events());
        self.run_until_idle();
    }

    pub(super) fn record(&mut self, event: Event) {
        self.trace.push(Traced {
            at: self.now - self.start,
            event,
        });
    }
}
