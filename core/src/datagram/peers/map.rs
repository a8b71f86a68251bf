//! [`PeerMap`]: the peers of a table by address, recently found ones kept at hand.
//!
//! A peer often sends several datagrams in a row, and each datagram looks its peer up
//! more than once (its arrival, then what its routine asks next); several peers also take
//! turns. The entries live in a slab, found through an index keyed with std's SipHash
//! ([`OneWriteState`]; addresses are chosen by senders, so the hash stays keyed). A hint
//! by a cheap fold of the address ([`Hints`]) is tried first and, when its slot holds
//! that address, the address is not hashed with SipHash at all. A slot keeps its address,
//! so a slot freed or reused since is simply a miss: nothing to invalidate.

use std::collections::HashMap;
use std::hash::Hash;

use super::hasher::OneWriteState;
use super::hint::Hints;

/// Peers `V` by address `A`; see the module.
pub(super) struct PeerMap<A, V> {
    index: HashMap<A, usize, OneWriteState>,
    slots: Vec<Option<(A, V)>>,
    /// Vacant slots of `slots`, reused first.
    free: Vec<usize>,
    /// Slots of recent lookups (any index: they are checked).
    hints: Hints,
}

impl<A, V> Default for PeerMap<A, V> {
    fn default() -> Self {
        Self {
            index: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            hints: Hints::default(),
        }
    }
}

impl<A: Hash + Eq + Clone, V> PeerMap<A, V> {
    /// The slot of `peer`, whose hint it becomes.
    #[inline]
    fn find(&mut self, peer: &A) -> Option<usize> {
        let (at, slot) = self.lookup(peer);
        let slot = slot?;
        self.hints.set(at, slot);
        Some(slot)
    }

    /// The slot of `peer`, read only.
    #[inline]
    fn find_ref(&self, peer: &A) -> Option<usize> {
        self.lookup(peer).1
    }

    /// `peer`'s hint position and its slot: the hint's when that slot holds `peer`, else
    /// the keyed index's.
    #[inline]
    fn lookup(&self, peer: &A) -> (usize, Option<usize>) {
        let at = Hints::position(peer);
        let slot = self.hints.get(at);
        if matches!(self.slots.get(slot), Some(Some((a, _))) if a == peer) {
            return (at, Some(slot));
        }
        (at, self.index.get(peer).copied())
    }

    pub(super) fn get(&self, peer: &A) -> Option<&V> {
        let slot = self.find_ref(peer)?;
        self.slots[slot].as_ref().map(|(_, v)| v)
    }

    #[inline]
    pub(super) fn get_mut(&mut self, peer: &A) -> Option<&mut V> {
        let slot = self.find(peer)?;
        self.slots[slot].as_mut().map(|(_, v)| v)
    }

    /// Adds `peer`, which is not in the map; its slot becomes its hint.
    pub(super) fn insert(&mut self, peer: A, value: V) -> &mut V {
        let at = Hints::position(&peer);
        let entry = Some((peer.clone(), value));
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = entry;
                slot
            }
            None => {
                self.slots.push(entry);
                self.slots.len() - 1
            }
        };
        let old = self.index.insert(peer, slot);
        debug_assert!(old.is_none(), "a peer inserted twice");
        self.hints.set(at, slot);
        let (_, value) = self.slots[slot].as_mut().expect("the slot just filled");
        value
    }

    pub(super) fn remove(&mut self, peer: &A) -> Option<V> {
        let slot = self.index.remove(peer)?;
        self.free.push(slot);
        self.slots[slot].take().map(|(_, v)| v)
    }

    /// Takes every peer out, in slot order (the order of their arrival, but for reused
    /// slots).
    pub(super) fn drain(&mut self) -> impl Iterator<Item = (A, V)> {
        self.index.clear();
        self.free.clear();
        std::mem::take(&mut self.slots).into_iter().flatten()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&A, &mut V)> {
        self.slots.iter_mut().flatten().map(|(a, v)| (&*a, v))
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Get(u8),
        GetMut(u8, u32),
        Remove(u8),
        Drain,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few addresses: the same ones come back, as peers do.
        let addr = 0u8..6;
        prop_oneof![
            3 => (addr.clone(), any::<u32>()).prop_map(|(a, v)| Op::Insert(a, v)),
            3 => addr.clone().prop_map(Op::Get),
            3 => (addr.clone(), any::<u32>()).prop_map(|(a, v)| Op::GetMut(a, v)),
            2 => addr.prop_map(Op::Remove),
            1 => Just(Op::Drain),
        ]
    }

    fn addr(a: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, a], 4000 + u16::from(a)))
    }

    proptest! {
        /// Any sequence of lookups, insertions and removals agrees with a plain HashMap.
        #[test]
        fn behaves_as_a_hash_map(ops in proptest::collection::vec(op(), 0..200)) {
            let mut map = PeerMap::default();
            let mut model: HashMap<SocketAddr, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(a, v) => {
                        // The table inserts only peers it does not know.
                        if let std::collections::hash_map::Entry::Vacant(e) = model.entry(addr(a)) {
                            e.insert(v);
                            prop_assert_eq!(*map.insert(addr(a), v), v);
                        }
                    }
                    Op::Get(a) => prop_assert_eq!(map.get(&addr(a)), model.get(&addr(a))),
                    Op::GetMut(a, v) => {
                        let got = map.get_mut(&addr(a)).map(|x| std::mem::replace(x, v));
                        let want = model.get_mut(&addr(a)).map(|x| std::mem::replace(x, v));
                        prop_assert_eq!(got, want);
                    }
                    Op::Remove(a) => prop_assert_eq!(map.remove(&addr(a)), model.remove(&addr(a))),
                    Op::Drain => {
                        let mut got: Vec<_> = map.drain().collect();
                        let mut want: Vec<_> = model.drain().collect();
                        got.sort();
                        want.sort();
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(map.len(), model.len());
                prop_assert_eq!(map.is_empty(), model.is_empty());
                let mut all: Vec<_> = map.iter_mut().map(|(a, v)| (*a, *v)).collect();
                let mut want: Vec<_> = model.iter().map(|(a, v)| (*a, *v)).collect();
                all.sort();
                want.sort();
                prop_assert_eq!(all, want);
                // Freed slots are reused: no more slots than peers ever known at once.
                prop_assert_eq!(map.slots.len() - map.free.len(), map.len());
            }
        }
    }

    /// More peers than hint positions: hints are shared and overwritten, and every peer is
    /// still found (or not, once removed), in any order.
    #[test]
    fn peers_sharing_hint_positions_are_all_found() {
        let peer = |i: u16| SocketAddr::from(([127, 0, (i >> 8) as u8, i as u8], 40_000 + i));
        let mut map = PeerMap::default();
        for i in 0..1_000 {
            map.insert(peer(i), i);
        }
        for round in 0..3 {
            for i in (0..1_000).rev().step_by(1 + round) {
                assert_eq!(map.get_mut(&peer(i)), Some(&mut i.clone()));
                assert_eq!(map.get(&peer(i)), Some(&i));
            }
        }
        for i in (0..1_000).step_by(3) {
            assert_eq!(map.remove(&peer(i)), Some(i));
        }
        for i in 0..1_000 {
            let want = (i % 3 != 0).then_some(i);
            assert_eq!(map.get_mut(&peer(i)).copied(), want);
            assert_eq!(map.get(&peer(i)).copied(), want);
        }
    }

    #[test]
    fn a_reused_slot_is_not_taken_for_its_former_peer() {
        let mut map = PeerMap::default();
        map.insert(addr(1), 1);
        assert_eq!(map.get_mut(&addr(1)), Some(&mut 1)); // its slot is its hint
        assert_eq!(map.remove(&addr(1)), Some(1));
        map.insert(addr(2), 2); // the same slot
        assert_eq!(map.slots.len(), 1);
        assert_eq!(map.get_mut(&addr(1)), None);
        assert_eq!(map.get(&addr(1)), None);
        assert_eq!(map.get_mut(&addr(2)), Some(&mut 2));
    }
}
