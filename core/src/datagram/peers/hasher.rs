//! The peer table's hasher: std's keyed SipHash, fed once per key.
//!
//! Peer addresses are chosen by whoever sends datagrams, so the table keeps std's randomly
//! seeded SipHash (no flooding one bucket). What it saves is SipHash's cost per `write`:
//! derived `Hash` impls write a key in small pieces (a `SocketAddr`: its variant, its IP,
//! its port), and each piece goes through SipHash's buffering of partial words. Here the
//! pieces are gathered and SipHash gets them in one `write`. SipHash hashes the
//! concatenation of what it is given, so the hash is the one std computes.

use std::hash::{BuildHasher, DefaultHasher, Hasher, RandomState};

/// Bytes gathered before they go to SipHash: an IPv6 `SocketAddr` writes 34.
const GATHER: usize = 48;

/// std's [`RandomState`], building [`OneWrite`] hashers.
#[derive(Clone, Default)]
pub(crate) struct OneWriteState(RandomState);

impl BuildHasher for OneWriteState {
    type Hasher = OneWrite;

    fn build_hasher(&self) -> OneWrite {
        OneWrite {
            gathered: [0; GATHER],
            len: 0,
            sip: self.0.build_hasher(),
        }
    }
}

/// std's SipHash over the bytes of all the `write`s of one key, given to it at once.
pub(crate) struct OneWrite {
    gathered: [u8; GATHER],
    len: usize,
    sip: DefaultHasher,
}

impl OneWrite {
    /// The bytes of one integer: a copy of known length, inlined.
    #[inline]
    fn gather<const N: usize>(&mut self, bytes: [u8; N]) {
        match self.gathered.get_mut(self.len..self.len + N) {
            Some(room) => {
                room.copy_from_slice(&bytes);
                self.len += N;
            }
            None => self.write(&bytes),
        }
    }
}

impl Hasher for OneWrite {
    fn write(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match self.gathered.get_mut(self.len..end) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len = end;
            }
            // A long key (a Unix path): SipHash takes what was gathered, then the rest.
            None => {
                self.sip.write(&self.gathered[..self.len]);
                self.len = 0;
                self.sip.write(bytes);
            }
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.gather(n.to_ne_bytes());
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.gather(n.to_ne_bytes());
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.gather(n.to_ne_bytes());
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.gather(n.to_ne_bytes());
    }

    #[inline]
    fn write_u128(&mut self, n: u128) {
        self.gather(n.to_ne_bytes());
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.gather(n.to_ne_bytes());
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut sip = self.sip.clone();
        sip.write(&self.gathered[..self.len]);
        sip.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::hash::Hash;
    use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::addr::UnixAddr;

    /// The hash std's own hasher gives `key` with the same seed.
    fn both<T: Hash>(state: &OneWriteState, key: &T) -> (u64, u64) {
        (state.0.hash_one(key), state.hash_one(key))
    }

    fn socket_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(SocketAddr::from),
            (any::<u128>(), any::<u16>(), any::<u32>(), any::<u32>()).prop_map(
                |(ip, port, flow, scope)| {
                    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope))
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn addresses_hash_as_with_std(addr in socket_addr()) {
            let state = OneWriteState::default();
            let (std, ours) = both(&state, &addr);
            prop_assert_eq!(std, ours);
        }

        #[test]
        fn unix_addresses_hash_as_with_std(name in vec(any::<u8>(), 0..300)) {
            let state = OneWriteState::default();
            let (std, ours) = both(&state, &UnixAddr::abstract_name(&name));
            prop_assert_eq!(std, ours);
        }

        /// Any sequence of writes (long ones go straight through) gives std's hash.
        #[test]
        fn any_writes_hash_as_with_std(
            writes in vec(vec(any::<u8>(), 0..80), 0..8),
        ) {
            let state = OneWriteState::default();
            let (mut std, mut ours) = (state.0.build_hasher(), state.build_hasher());
            for w in &writes {
                std.write(w);
                ours.write(w);
            }
            prop_assert_eq!(std.finish(), ours.finish());
        }
    }

    #[test]
    fn seeds_differ_between_tables() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let (a, b) = (OneWriteState::default(), OneWriteState::default());
        assert_ne!(a.hash_one(addr), b.hash_one(addr));
    }
}
