//! UDP datagrams read in place, in batches (`recvmmsg`/`sendmmsg` on Linux), on both drivers:
//! the buffer a datagram was read into is reused once it is let go, so answers sent from it
//! and requests a handler keeps must never see a later datagram's bytes, and each peer gets
//! its answers in its order whatever a batch mixes (issue 16).

#![cfg(all(feature = "tokio", feature = "mio"))]

mod support;

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use easynet::handler::{ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received};
use easynet::protocol::Datagram;
use support::drivers::{self, Running};

const LIMIT: Duration = Duration::from_secs(10);

type Kept = Arc<Mutex<Vec<Bytes>>>;

/// Echoes each datagram by value (its answer shares the datagram's buffer) and keeps the
/// ones whose first byte is a multiple of 7.
struct Keep(Kept);

impl DatagramHandler for Keep {
    type Request = Bytes;
    type Response = Bytes;

    fn handle(&mut self, cx: &mut DatagramContext<'_, Bytes>, r: Received<Bytes>) -> HandlerResult {
        if let Received::Request(data) = r {
            if data[0] % 7 == 0 {
                self.0.lock().unwrap().push(data.clone());
            }
            cx.send(data)?;
        }
        Ok(Next::Close)
    }
}

fn mio(kept: Kept) -> Running {
    drivers::mio_udp_on(
        Datagram::raw(),
        move |_: &ConnInfo| Keep(kept.clone()),
        None,
    )
}

fn tokio(kept: Kept) -> Running {
    drivers::tokio_udp_on(
        Datagram::raw(),
        move |_: &ConnInfo| Keep(kept.clone()),
        None,
    )
}

fn peer(server: &Running) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(server.addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s
}

/// One peer, one at a time and then in bursts of 10 (read in one turn); datagrams of many
/// sizes, some kept.
fn answers_and_kept_requests_keep_their_bytes(start: fn(Kept) -> Running) {
    let kept = Kept::default();
    let server = start(kept.clone());
    let client = peer(&server);
    let datagram = |i: u8| vec![i; 1 + usize::from(i) * 37];
    let mut buf = vec![0u8; 65536];
    for i in 0..100u8 {
        client.send(&datagram(i)).unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(buf[..n], datagram(i), "answer {i}");
    }
    for burst in (100..200u8).step_by(10) {
        for i in burst..burst + 10 {
            client.send(&datagram(i)).unwrap();
        }
        for i in burst..burst + 10 {
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(buf[..n], datagram(i), "answer {i}");
        }
    }
    server.stop();
    let kept = kept.lock().unwrap();
    let want: Vec<_> = (0..200u8).filter(|i| i % 7 == 0).map(datagram).collect();
    assert_eq!(kept.iter().map(|d| d.to_vec()).collect::<Vec<_>>(), want);
}

/// Three peers' bursts, interleaved: each gets every answer, in its order.
fn bursts_from_several_peers_are_answered_in_each_peers_order(start: fn(Kept) -> Running) {
    let kept = Kept::default();
    let server = start(kept.clone());
    let peers: Vec<UdpSocket> = (0..3).map(|_| peer(&server)).collect();
    // Byte 0: the peer times 8 (only peer 0's, 0, is a multiple of 7: its datagrams are
    // kept and hold the buffer meanwhile); byte 1: its sequence number.
    let datagram = |p: u8, i: u8| vec![p * 8, i, p ^ i];
    for round in 0..4u8 {
        for i in 0..25u8 {
            for (p, s) in peers.iter().enumerate() {
                s.send(&datagram(p as u8, round * 25 + i)).unwrap();
            }
        }
        let mut buf = [0u8; 16];
        for (p, s) in peers.iter().enumerate() {
            for i in 0..25u8 {
                let n = s.recv(&mut buf).unwrap();
                assert_eq!(buf[..n], datagram(p as u8, round * 25 + i), "peer {p}");
            }
        }
    }
    server.stop();
    assert_eq!(kept.lock().unwrap().len(), 100, "all of peer 0's kept");
}

#[test]
fn mio_answers_and_kept_requests_keep_their_bytes() {
    answers_and_kept_requests_keep_their_bytes(mio);
}

#[test]
fn tokio_answers_and_kept_requests_keep_their_bytes() {
    answers_and_kept_requests_keep_their_bytes(tokio);
}

#[test]
fn mio_bursts_from_several_peers_are_answered_in_each_peers_order() {
    bursts_from_several_peers_are_answered_in_each_peers_order(mio);
}

#[test]
fn tokio_bursts_from_several_peers_are_answered_in_each_peers_order() {
    bursts_from_several_peers_are_answered_in_each_peers_order(tokio);
}
