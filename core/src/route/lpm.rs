//! Longest-prefix match over fixed-width keys (IPv4: 32 bits, IPv6: 128):
//! a multibit trie with controlled prefix expansion, the shape of DPDK's
//! rte_lpm (a wide first table, then 8-bit groups) but built once per table
//! and read without locks (the route table is immutable once published).
//!
//! The root has 2^16 slots (the top 16 bits of the key), every deeper node
//! 256 (8 more bits). A slot holds the best route among the prefixes that
//! end at its level and cover it, and where its child node starts, for
//! longer prefixes. A lookup reads one slot per level it descends (IPv4:
//! one for prefixes up to /16, two up to /24, three beyond; IPv6: one per
//! byte past the second) and keeps the last route it saw, so its cost does
//! not grow with the number of routes (see `core/benches/route.rs`).

/// Bits the root indexes.
const ROOT_BITS: u32 = 16;
/// Bits every deeper node indexes.
const NODE_BITS: u32 = 8;
const NODE_SLOTS: usize = 1 << NODE_BITS;

/// A slot: route index + 1 (0 = none) and the index of its child node's
/// first slot (0 = none: the root starts at 0 and is nobody's child).
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    route: u32,
    child: u32,
}

/// A key the trie indexes: an IPv4 address as `u32` (so that lookups
/// shift 32-bit words, not 128-bit ones) or an IPv6 address as `u128`.
pub(super) trait LpmKey: Copy {
    const WIDTH: u32;
    /// The `bits` bits of the key that end `end` bits from its top.
    fn slice(self, end: u32, bits: u32) -> usize;
    /// From the right-aligned bits of a prefix (zero past its length).
    fn from_bits(bits: u128) -> Self;
}

impl LpmKey for u32 {
    const WIDTH: u32 = 32;
    #[inline(always)]
    fn slice(self, end: u32, bits: u32) -> usize {
        ((self >> (32 - end)) & ((1u32 << bits) - 1)) as usize
    }
    fn from_bits(bits: u128) -> Self {
        bits as u32
    }
}

impl LpmKey for u128 {
    const WIDTH: u32 = 128;
    #[inline(always)]
    fn slice(self, end: u32, bits: u32) -> usize {
        ((self >> (128 - end)) & ((1u128 << bits) - 1)) as usize
    }
    fn from_bits(bits: u128) -> Self {
        bits
    }
}

/// The trie of one address family.
#[derive(Debug, Clone)]
pub(super) struct Lpm<K> {
    /// The /0 route's index + 1 (0 = none).
    default: u32,
    /// The root's slots, then every node's, one after the other.
    slots: Vec<Slot>,
    key: std::marker::PhantomData<K>,
}

impl<K: LpmKey> Lpm<K> {
    /// A trie holding `prefixes`, given as (bits, length) with the bits
    /// right-aligned in the u128 and zero past the length. For equal
    /// prefixes the first one listed wins (as the linear table's "first
    /// match in longest-first order" did).
    pub(super) fn new(prefixes: &[(u128, u8)]) -> Lpm<K> {
        let mut t = Lpm { default: 0, slots: vec![Slot::default(); 1 << ROOT_BITS], key: std::marker::PhantomData };
        // Shortest first, so that a longer prefix overwrites the slots a
        // shorter one expanded into; among equals, the first listed last.
        let mut order: Vec<usize> = (0..prefixes.len()).collect();
        order.sort_by_key(|&i| (prefixes[i].1, std::cmp::Reverse(i)));
        for i in order {
            let (bits, len) = prefixes[i];
            let idx = u32::try_from(i + 1).expect("fewer than 2^32 routes");
            t.insert(K::from_bits(bits), u32::from(len).min(K::WIDTH), idx);
        }
        t
    }

    fn insert(&mut self, key: K, len: u32, idx: u32) {
        if len == 0 {
            self.default = idx;
            return;
        }
        // Descend (making nodes) to the level where the prefix ends.
        let (mut base, mut end, mut bits) = (0usize, ROOT_BITS, ROOT_BITS);
        while len > end {
            let slot = base + key.slice(end, bits);
            if self.slots[slot].child == 0 {
                let child = self.slots.len();
                self.slots.resize(child + NODE_SLOTS, Slot::default());
                self.slots[slot].child = u32::try_from(child).expect("fewer than 2^32 slots");
            }
            base = self.slots[slot].child as usize;
            end += NODE_BITS;
            bits = NODE_BITS;
        }
        // The prefix covers 2^(end - len) consecutive slots of that node.
        let span = 1usize << (end - len);
        let first = base + (key.slice(end, bits) & !(span - 1));
        for s in &mut self.slots[first..first + span] {
            s.route = idx;
        }
    }

    /// Index of the longest prefix containing `key`, if any.
    #[inline]
    pub(super) fn lookup(&self, key: K) -> Option<usize> {
        let mut best = self.default;
        let mut end = ROOT_BITS;
        let mut slot = key.slice(end, ROOT_BITS);
        while let Some(s) = self.slots.get(slot) {
            if s.route != 0 {
                best = s.route;
            }
            if s.child == 0 {
                break;
            }
            end += NODE_BITS;
            slot = s.child as usize + key.slice(end, NODE_BITS);
        }
        (best as usize).checked_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn linear(prefixes: &[(u128, u8)], width: u32, key: u128) -> Option<usize> {
        let mask = |len: u8| {
            if len == 0 {
                0
            } else {
                (u128::MAX >> (128 - width)) & !((1u128 << (width - u32::from(len))) - 1)
            }
        };
        let mut best: Option<(u8, usize)> = None;
        for (i, &(bits, len)) in prefixes.iter().enumerate() {
            if key & mask(len) == bits && best.is_none_or(|(l, _)| len > l) {
                best = Some((len, i));
            }
        }
        best.map(|(_, i)| i)
    }

    #[test]
    fn nested_prefixes_at_every_depth() {
        let v4u = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
        let v4 = |s: &str| u128::from(v4u(s));
        let p = [(0, 0), (v4("10.0.0.0"), 8), (v4("10.9.0.0"), 16), (v4("10.9.8.0"), 23), (v4("10.9.9.7"), 32)];
        let t = Lpm::<u32>::new(&p);
        assert_eq!(t.lookup(v4u("8.8.8.8")), Some(0));
        assert_eq!(t.lookup(v4u("10.1.1.1")), Some(1));
        assert_eq!(t.lookup(v4u("10.9.1.1")), Some(2));
        assert_eq!(t.lookup(v4u("10.9.9.1")), Some(3), "a /23 covers two slots of its node");
        assert_eq!(t.lookup(v4u("10.9.8.255")), Some(3));
        assert_eq!(t.lookup(v4u("10.9.9.7")), Some(4));
        assert_eq!(t.lookup(v4u("10.9.10.1")), Some(2));
        assert_eq!(Lpm::<u32>::new(&p[1..]).lookup(v4u("8.8.8.8")), None, "no default route");
        // Equal prefixes: the first listed wins.
        assert_eq!(Lpm::<u32>::new(&[(v4("10.0.0.0"), 8), (v4("10.0.0.0"), 8)]).lookup(v4u("10.0.0.1")), Some(0));
    }

    proptest! {
        /// The trie answers what a scan of every prefix answers, for both
        /// widths, with prefixes clustered so that they nest and overlap.
        #[test]
        fn same_answer_as_a_linear_scan(
            v6 in any::<bool>(),
            raw in proptest::collection::vec((any::<u128>(), 0u8..=128), 0..40),
            keys in proptest::collection::vec(any::<u128>(), 1..40),
        ) {
            let width = if v6 { 128 } else { 32 };
            let top = |x: u128| if v6 { x } else { x & 0xffff_ffff };
            // Two low bits per byte vary, so that prefixes nest and overlap
            // at every level and keys fall under them.
            let squash = |x: u128| top(x) & 0x0303_0303_0303_0303_0303_0303_0303_0303;
            let mask = |len: u8| if len == 0 { 0 } else { top(u128::MAX) & !((1u128 << (width - u32::from(len))) - 1) };
            let prefixes: Vec<(u128, u8)> = raw
                .iter()
                .map(|&(x, len)| {
                    let len = (u32::from(len) % (width + 1)) as u8;
                    (squash(x) & mask(len), len)
                })
                .collect();
            let (t4, t6) = (Lpm::<u32>::new(&prefixes), Lpm::<u128>::new(&prefixes));
            for k in keys.iter().map(|&k| squash(k)).chain(keys.iter().map(|&k| top(k))).chain(prefixes.iter().map(|p| p.0)) {
                let got = if v6 { t6.lookup(k) } else { t4.lookup(k as u32) };
                let want = linear(&prefixes, width, k);
                // Equal prefixes may be listed twice: compare the prefix found.
                prop_assert_eq!(got.map(|i| prefixes[i]), want.map(|i| prefixes[i]), "key {:x}", k);
            }
        }
    }
}
