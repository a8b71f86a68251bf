//! [`Hints`]: the slots of recently found peers, by a cheap fold of their address.
//!
//! Several peers taking turns (eight clients, say) miss a cache of the last peer found on
//! every datagram, and then each lookup pays SipHash. A hint is a slot number at a
//! position the address folds to (rustc's FxHash: unkeyed, a multiply per word). It is
//! only a guess: the slot's own address is compared before it is used, so a sender
//! choosing addresses that fold alike only makes its lookups miss, which costs the keyed
//! lookup it would have paid anyway. A hint left by a peer since removed is a miss too:
//! nothing to invalidate.

use std::hash::{Hash, Hasher};

use rustc_hash::FxHasher;

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
        let mut fold = FxHasher::default();
        peer.hash(&mut fold);
        (fold.finish() >> (u64::BITS - HINTS.trailing_zeros())) as usize
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
