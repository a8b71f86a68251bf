//! Property tests of the per-peer queue machine: random operation sequences never panic and
//! keep its invariants, checked against a simple model.

mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use easynet_core::datagram::{Arrival, DatagramConfig, PeerEvent, PeerTable, Recv, RoutineState};
use proptest::prelude::*;
use support::clock::Clock;

const PEERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Arrive(usize),
    /// The peer's routine asks for its next datagram, timeout in ms (`None`: none).
    Recv(usize, Option<u64>),
    Finish(usize),
    /// Advance the clock; fire the timers only if `fire` (a late driver otherwise).
    Advance(u64, bool),
    Shutdown,
}

fn op() -> impl Strategy<Value = Op> {
    let peer = 0..PEERS;
    prop_oneof![
        6 => peer.clone().prop_map(Op::Arrive),
        3 => (peer.clone(), proptest::option::weighted(0.8, prop_oneof![Just(0u64), 1u64..50]))
            .prop_map(|(p, t)| Op::Recv(p, t)),
        2 => peer.prop_map(Op::Finish),
        2 => (0u64..80, proptest::bool::weighted(0.8)).prop_map(|(ms, f)| Op::Advance(ms, f)),
        1 => Just(Op::Shutdown),
    ]
}

/// What the model expects of one peer.
#[derive(Debug, Default)]
struct ModelPeer {
    next_seq: u32,
    arrived: Vec<u32>,
    delivered: Vec<u32>,
    dropped: Vec<u32>,
    pending: VecDeque<u32>,
    active: bool,
    waiting: bool,
}

impl ModelPeer {
    fn deliver(&mut self, item: u32) {
        assert_eq!(self.pending.pop_front(), Some(item), "FIFO order");
        self.delivered.push(item);
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 5000 + i as u16))
}

fn index(peer: SocketAddr) -> usize {
    usize::from(peer.port() - 5000)
}

/// Applies timer and shutdown events to the model.
fn drain_events(table: &mut PeerTable<u32>, model: &mut [ModelPeer]) {
    while let Some(event) = table.poll_event() {
        match event {
            PeerEvent::Timeout { peer } => {
                let m = &mut model[index(peer)];
                assert!(
                    m.active && m.waiting,
                    "timeout for a routine that was not waiting"
                );
                assert!(m.pending.is_empty());
                m.waiting = false;
            }
            PeerEvent::Evicted { peer, .. } => {
                let m = &mut model[index(peer)];
                assert!(!m.active && m.pending.is_empty(), "evicted a busy peer");
            }
            PeerEvent::Closed { peer } => {
                assert!(
                    model[index(peer)].waiting,
                    "closed event for a routine not waiting"
                );
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
}

fn run(max_pending: usize, ops: Vec<Op>) {
    let mut clock = Clock::new();
    let config = DatagramConfig::default()
        .with_max_pending(max_pending)
        .with_idle_timeout(Duration::from_millis(100));
    let mut table: PeerTable<u32> = PeerTable::new(config).unwrap();
    let mut model: Vec<ModelPeer> = (0..PEERS).map(|_| ModelPeer::default()).collect();
    let mut closed = false;

    for op in ops {
        let now = clock.now();
        match op {
            Op::Arrive(i) => {
                let seq = model[i].next_seq;
                model[i].next_seq += 1;
                model[i].arrived.push(seq);
                let arrival = table.arrive(now, addr(i), seq);
                // A late deadline fires before the arrival is judged.
                drain_events(&mut table, &mut model);
                let m = &mut model[i];
                match arrival {
                    Arrival::Start(x) => {
                        assert!(!closed && !m.active, "second routine started");
                        assert!(m.pending.is_empty());
                        assert_eq!(x, seq);
                        m.delivered.push(x);
                        m.active = true;
                    }
                    Arrival::Deliver(x) => {
                        assert!(m.active && m.waiting);
                        assert_eq!(x, seq);
                        m.delivered.push(x);
                        m.waiting = false;
                    }
                    Arrival::Queued => {
                        assert!(m.active && !m.waiting);
                        assert!(m.pending.len() < max_pending);
                        m.pending.push_back(seq);
                    }
                    Arrival::Dropped(x) => {
                        assert!(m.active && !m.waiting);
                        assert_eq!(m.pending.len(), max_pending, "dropped below the bound");
                        assert_eq!(x, seq);
                        m.dropped.push(x);
                    }
                    Arrival::Closed(x) => {
                        assert!(closed);
                        m.dropped.push(x);
                    }
                }
            }
            Op::Recv(i, timeout) => {
                let timeout = timeout.map(Duration::from_millis);
                let result = table.recv(now, addr(i), timeout);
                let m = &mut model[i];
                match result {
                    Err(_) => assert!(!closed && (!m.active || m.waiting)),
                    Ok(Recv::Ready(x)) => {
                        assert!(m.active && !m.waiting);
                        m.deliver(x);
                    }
                    Ok(Recv::Timeout) => {
                        assert!(m.active && m.pending.is_empty());
                        assert_eq!(timeout, Some(Duration::ZERO));
                    }
                    Ok(Recv::Waiting) => {
                        assert!(m.active && !m.waiting && m.pending.is_empty());
                        assert_ne!(timeout, Some(Duration::ZERO));
                        m.waiting = true;
                    }
                    Ok(Recv::Closed) => assert!(closed),
                }
            }
            Op::Finish(i) => {
                let result = table.finish(now, addr(i));
                let m = &mut model[i];
                match result {
                    Err(_) => assert!(!closed && !m.active),
                    Ok(Some(x)) => {
                        assert!(m.active);
                        m.deliver(x);
                        m.waiting = false;
                    }
                    Ok(None) => {
                        assert!(closed || (m.active && m.pending.is_empty()));
                        m.active = false;
                        m.waiting = false;
                    }
                }
            }
            Op::Advance(ms, fire) => {
                let now = clock.advance_ms(ms);
                if fire {
                    table.handle_timeout(now);
                    drain_events(&mut table, &mut model);
                    // Nothing due is left behind.
                    assert!(table.poll_timeout().is_none_or(|t| t > now));
                }
            }
            Op::Shutdown => {
                table.shutdown(now);
                drain_events(&mut table, &mut model);
                closed = true;
                for m in &mut model {
                    m.dropped.extend(m.pending.drain(..));
                    m.active = false;
                    m.waiting = false;
                }
            }
        }
        check(&table, &model, max_pending);
    }
}

fn check(table: &PeerTable<u32>, model: &[ModelPeer], max_pending: usize) {
    let mut arrived = 0u64;
    let mut delivered = 0u64;
    let mut queued = 0usize;
    for (i, m) in model.iter().enumerate() {
        arrived += m.arrived.len() as u64;
        delivered += m.delivered.len() as u64;
        queued += m.pending.len();
        // Delivery order is arrival order minus drops (and minus what still waits).
        let mut expected: Vec<u32> = m
            .arrived
            .iter()
            .copied()
            .filter(|x| !m.dropped.contains(x))
            .collect();
        expected.truncate(expected.len() - m.pending.len());
        assert_eq!(m.delivered, expected, "peer {i} delivery order");
        match table.peer(addr(i)) {
            Some(p) => {
                assert!(p.queued <= max_pending, "queue over its bound");
                assert_eq!(p.queued, m.pending.len());
                // The table's idea of the one routine matches the model's.
                let (active, waiting) = match p.routine {
                    RoutineState::Idle => (false, false),
                    RoutineState::Running => (true, false),
                    RoutineState::Waiting { .. } => (true, true),
                };
                assert_eq!((active, waiting), (m.active, m.waiting), "peer {i} routine");
                if !active {
                    assert_eq!(p.queued, 0, "idle peer with a queue");
                }
            }
            None => assert!(!m.active && m.pending.is_empty(), "busy peer forgotten"),
        }
    }
    let stats = table.stats();
    assert_eq!(stats.queued, queued);
    assert_eq!(
        stats.dropped,
        arrived - delivered - queued as u64,
        "drop count"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn peer_table_keeps_its_invariants(
        max_pending in 1usize..4,
        ops in proptest::collection::vec(op(), 0..120),
    ) {
        run(max_pending, ops);
    }
}
