//! The order table: every live order of every instrument, keyed by its 64-bit reference, in one
//! preallocated open-addressing hash table.
//!
//! * Entries are the [`Order`]s themselves (24 bytes), stored inline: a lookup touches one
//!   cache line in the common case and there is no second indirection into a slab.
//! * Linear probing from `home(ref)`; the home slot is the high half of `ref * φ·2^64` scaled
//!   onto the table length (multiply-shift, any length). Nasdaq references rise roughly by one
//!   per order across the whole market, and the golden-ratio multiply spreads such runs evenly.
//! * Deletion shifts later entries of the probe run back into the hole (no tombstones), so the
//!   table never degrades and never needs an in-place rehash: no latency cliff in mid-session,
//!   unlike general-purpose maps that rehash when tombstones pile up.
//! * The table has `max_orders * 4 / 3 + 1` slots, so its load never exceeds 3/4 and a probe
//!   always ends at an empty slot. An order with 0 shares leaves the book, so `shares == 0`
//!   marks an empty slot.

use super::Side;

/// A resting order as the book keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Order {
    /// Day-unique order reference.
    pub order_ref: u64,
    /// Display price (1e-4).
    pub price: u32,
    /// Shares still displayed (never 0 for a live order).
    pub shares: u32,
    /// Instrument.
    pub locate: u16,
    /// Side.
    pub side: Side,
}

/// Bytes one slot of the order table takes.
pub const ORDER_SLOT_BYTES: usize = size_of::<Order>();
const _: () = assert!(ORDER_SLOT_BYTES == 24);

const EMPTY: Order = Order {
    order_ref: 0,
    price: 0,
    shares: 0,
    locate: 0,
    side: Side::Bid,
};

/// 2^64 / φ, odd: multiplying by it spreads consecutive keys evenly over the high bits.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// What [`OrderTable::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Insert {
    /// Stored.
    Inserted,
    /// An order with this reference is already live; nothing stored.
    Duplicate,
    /// `max_orders` orders are live; nothing stored.
    Full,
}

/// Preallocated open-addressing map from order reference to [`Order`].
#[derive(Debug)]
pub(crate) struct OrderTable {
    slots: Box<[Order]>,
    len: usize,
    max: usize,
}

impl OrderTable {
    /// Slots needed to hold `max` orders at a load of at most 3/4.
    pub(crate) const fn slots_for(max: usize) -> usize {
        max.saturating_add(max / 3).saturating_add(1)
    }

    /// A table for up to `max` live orders, every slot allocated and written now. `None` when
    /// the memory cannot be had.
    pub(crate) fn new(max: usize) -> Option<Self> {
        let n = Self::slots_for(max);
        let mut v = Vec::new();
        v.try_reserve_exact(n).ok()?;
        v.resize(n, EMPTY);
        Some(Self {
            slots: v.into_boxed_slice(),
            len: 0,
            max,
        })
    }

    /// Live orders.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes held by the slots.
    pub(crate) fn bytes(&self) -> usize {
        self.slots.len() * ORDER_SLOT_BYTES
    }

    #[inline]
    fn home(&self, order_ref: u64) -> usize {
        let h = order_ref.wrapping_mul(GOLDEN);
        ((u128::from(h) * self.slots.len() as u128) >> 64) as usize
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() { 0 } else { i + 1 }
    }

    /// Slot of the live order `order_ref`.
    #[inline]
    pub(crate) fn find(&self, order_ref: u64) -> Option<usize> {
        let mut i = self.home(order_ref);
        loop {
            let s = &self.slots[i];
            if s.shares == 0 {
                return None;
            }
            if s.order_ref == order_ref {
                return Some(i);
            }
            i = self.next(i);
        }
    }

    /// The live order `order_ref`.
    #[inline]
    pub(crate) fn get(&self, order_ref: u64) -> Option<&Order> {
        self.find(order_ref).map(|i| &self.slots[i])
    }

    /// The order in slot `i` (from [`find`](Self::find)).
    #[inline]
    pub(crate) fn at(&self, i: usize) -> &Order {
        &self.slots[i]
    }

    /// The order in slot `i`, to change its shares (never to 0: use
    /// [`remove_at`](Self::remove_at)).
    #[inline]
    pub(crate) fn at_mut(&mut self, i: usize) -> &mut Order {
        &mut self.slots[i]
    }

    /// Stores `order` (`order.shares` must not be 0).
    #[inline]
    pub(crate) fn insert(&mut self, order: Order) -> Insert {
        debug_assert!(order.shares != 0);
        let mut i = self.home(order.order_ref);
        loop {
            let s = &self.slots[i];
            if s.shares == 0 {
                break;
            }
            if s.order_ref == order.order_ref {
                return Insert::Duplicate;
            }
            i = self.next(i);
        }
        if self.len == self.max {
            return Insert::Full;
        }
        self.slots[i] = order;
        self.len += 1;
        Insert::Inserted
    }

    /// Removes the order in slot `hole`, shifting the rest of its probe run back.
    #[inline]
    pub(crate) fn remove_at(&mut self, mut hole: usize) {
        let n = self.slots.len();
        let dist = |from: usize, to: usize| if to >= from { to - from } else { to + n - from };
        let mut j = hole;
        loop {
            j = self.next(j);
            let s = self.slots[j];
            if s.shares == 0 {
                break;
            }
            // The entry at `j` may fill the hole when the hole lies on its probe path, i.e.
            // between its home slot and `j` (cyclically).
            if dist(self.home(s.order_ref), j) >= dist(hole, j) {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
    }

    /// Forgets every order (keeps the memory).
    pub(crate) fn clear(&mut self) {
        self.slots.fill(EMPTY);
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(r: u64, shares: u32) -> Order {
        Order {
            order_ref: r,
            price: 100,
            shares,
            locate: 1,
            side: Side::Bid,
        }
    }

    #[test]
    fn insert_find_remove_with_collisions() {
        let mut t = OrderTable::new(8).expect("alloc");
        assert_eq!(t.slots.len(), 11);
        for r in 1..=8 {
            assert_eq!(t.insert(order(r, r as u32)), Insert::Inserted);
        }
        assert_eq!(t.insert(order(99, 1)), Insert::Full);
        assert_eq!(t.insert(order(3, 1)), Insert::Duplicate);
        for r in 1..=8 {
            assert_eq!(t.get(r).map(|o| o.shares), Some(r as u32));
        }
        // Remove in an order that breaks probe runs, checking the rest stays reachable.
        for (k, r) in [5u64, 1, 8, 2, 7].into_iter().enumerate() {
            let i = t.find(r).expect("live");
            t.remove_at(i);
            assert_eq!(t.len(), 8 - k - 1);
            assert!(t.get(r).is_none());
        }
        for r in [3u64, 4, 6] {
            assert_eq!(t.get(r).map(|o| o.shares), Some(r as u32));
        }
        t.clear();
        assert_eq!(t.len(), 0);
        assert!(t.get(3).is_none());
    }

    #[test]
    fn matches_a_std_map_under_churn() {
        use std::collections::HashMap;
        let mut t = OrderTable::new(64).expect("alloc");
        let mut m = HashMap::new();
        // A deterministic pseudo-random walk over a small key space (dense collisions).
        let mut x = 0x1234_5678_u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = x % 150;
            if x & (1 << 40) == 0 {
                let got = t.insert(order(r, 1 + (x % 7) as u32));
                let want = if m.contains_key(&r) {
                    Insert::Duplicate
                } else if m.len() == 64 {
                    Insert::Full
                } else {
                    m.insert(r, 1 + (x % 7) as u32);
                    Insert::Inserted
                };
                assert_eq!(got, want);
            } else if let Some(i) = t.find(r) {
                assert!(m.remove(&r).is_some());
                t.remove_at(i);
            } else {
                assert!(!m.contains_key(&r));
            }
            assert_eq!(t.len(), m.len());
        }
        for (r, s) in &m {
            assert_eq!(t.get(*r).map(|o| o.shares), Some(*s));
        }
    }
}
