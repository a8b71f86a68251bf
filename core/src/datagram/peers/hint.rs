//! [`Hints`]: the slots of recently found peers, by a cheap fold of their address.
//!
//! Several peers taking turns (eight clients, say) miss a cache of the last peer found on
//! every datagram, and then each lookup pays SipHash. A hint is a slot number at a
//! position the address folds to (unkeyed, a multiply per word). It is only a guess: the
//! slot's own address is compared before it is used, so a sender choosing addresses that
//! fold alike only makes its lookups miss, which costs the keyed lookup it would have
//! paid anyway. A hint left by a peer since removed is a miss too: nothing to invalidate.

use std::hash::{Hash, Hasher};

/// Positions: a power of two (the fold's top bits pick one).
const HINTS: usize = 64;

/// Slot numbers by folded address; see the module.
pub(super) struct Hints([usize; HINTS]);

impl Default for Hints {
    fn default() -> Self {
        Self([0; HINTS])
    }
}

impl Hints {
    /// Where `peer`'s hint is.
    #[inline]
    pub(super) fn position<A: Hash>(peer: &A) -> usize {
        let mut fold = Fold(0);
        peer.hash(&mut fold);
        (fold.0 >> (u64::BITS - HINTS.trailing_zeros())) as usize
    }

    /// The slot last found at `position` (any number: the caller checks it).
    #[inline]
    pub(super) fn get(&self, position: usize) -> usize {
        self.0[position]
    }

    #[inline]
    pub(super) fn set(&mut self, position: usize, slot: usize) {
        self.0[position] = slot;
    }
}

/// A multiplicative fold of what is written (the FxHash step): no seed, no finalizer; its
/// top bits spread well enough for hints.
struct Fold(u64);

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl Fold {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(K);
    }
}

impl Hasher for Fold {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_ne_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_ne_bytes(last));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::SocketAddr;

    use super::*;

    /// Clients on one host, ports in a row (as a load generator's are), spread over the
    /// positions: eight of them take eight.
    #[test]
    fn ports_in_a_row_take_their_own_positions() {
        for base in [40_000u16, 51_234, 60_999] {
            let taken: HashSet<usize> = (0..8)
                .map(|i| Hints::position(&SocketAddr::from(([127, 0, 0, 1], base + i))))
                .collect();
            assert_eq!(taken.len(), 8, "ports from {base}");
        }
    }

    #[test]
    fn positions_are_in_range() {
        for port in 0..2_000u16 {
            let v6 = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port));
            assert!(Hints::position(&v6) < HINTS);
        }
    }
}
