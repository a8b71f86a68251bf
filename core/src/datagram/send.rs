//! How a driver sends the core's datagrams from a socket: the rule both drivers follow, for
//! sends of one datagram or of a batch (`sendmmsg`).

use std::fmt::Display;
use std::io;

use super::Transmit;

/// Sends `ts` in order with `send` until all of them are gone or the socket is full, and
/// returns how many are gone: fewer than `ts.len()` only when the socket would block (the
/// rest wait, in order, for room).
///
/// `send` sends datagrams from the front of the slice it is given (one, or a batch by one
/// system call) and returns how many went, or the first one's error. A datagram whose send
/// fails with anything but `WouldBlock` is logged and dropped, and the rest go on: its
/// handler has returned already, and one peer's unreachable address must not hold the
/// others' answers.
///
/// ```
/// use std::io;
/// use easynet_core::datagram::{Transmit, send_in_order};
///
/// let to: std::net::SocketAddr = "127.0.0.1:9000".parse()?;
/// let ts: Vec<Transmit> = (0..5u8).map(|i| Transmit { to, data: vec![i].into() }).collect();
/// let mut room = 3;
/// let gone = send_in_order(&ts, |batch| {
///     if room == 0 {
///         return Err(io::ErrorKind::WouldBlock.into());
///     }
///     let n = batch.len().min(room);
///     room -= n;
///     Ok(n)
/// });
/// assert_eq!(gone, 3); // the last two wait for room
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn send_in_order<A: Display>(
    ts: &[Transmit<A>],
    mut send: impl FnMut(&[Transmit<A>]) -> io::Result<usize>,
) -> usize {
    let mut gone = 0;
    while gone < ts.len() {
        match send(&ts[gone..]) {
            Ok(n) => gone += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                // ARCHITECTURE.md, datagrams.
                tracing::warn!(peer = %ts[gone].to, error = %e, "datagram send failed");
                gone += 1;
            }
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transmits(n: u8) -> Vec<Transmit> {
        let to = "127.0.0.1:9000".parse().unwrap();
        (0..n)
            .map(|i| Transmit {
                to,
                data: vec![i].into(),
            })
            .collect()
    }

    #[test]
    fn a_failed_datagram_is_dropped_and_the_rest_go_on() {
        let ts = transmits(6);
        let mut sent = Vec::new();
        // Batches of up to 4; datagram 2 fails (as `sendmmsg` does: the batch stops before
        // it, and the next call reports its error).
        let gone = send_in_order(&ts, |batch| {
            if batch[0].data[0] == 2 {
                return Err(io::ErrorKind::ConnectionRefused.into());
            }
            let n = batch.iter().take(4).take_while(|t| t.data[0] != 2).count();
            sent.extend(batch[..n].iter().map(|t| t.data[0]));
            Ok(n)
        });
        assert_eq!(gone, 6);
        assert_eq!(sent, [0, 1, 3, 4, 5]);
    }

    #[test]
    fn a_full_socket_stops_it_in_order() {
        let ts = transmits(5);
        let mut room = 2;
        let mut sent = Vec::new();
        let gone = send_in_order(&ts, |batch| {
            if room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            sent.push(batch[0].data[0]);
            room -= 1;
            Ok(1)
        });
        assert_eq!((gone, sent), (2, vec![0, 1]));
        assert_eq!(send_in_order(&ts[..0], |_| unreachable!()), 0);
    }
}
