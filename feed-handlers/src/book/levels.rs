//! One side of one instrument's book: its price levels in a sorted `Vec` with capacity reserved
//! at construction, best level last, so the top of book is one load and most changes (which
//! happen near the top) move few entries.

use super::Side;

/// One aggregated price level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Level {
    /// Price (1e-4).
    pub price: u32,
    /// Live orders at this price.
    pub orders: u32,
    /// Sum of their displayed shares.
    pub shares: u64,
}

/// Bytes one price level takes.
pub const LEVEL_BYTES: usize = size_of::<Level>();
const _: () = assert!(LEVEL_BYTES == 16);

/// How many levels from the top are scanned one by one before a binary search of the rest.
const SCAN: usize = 8;

/// The levels of one side, worst first, best last.
#[derive(Debug)]
pub(crate) struct Ladder {
    side: Side,
    levels: Vec<Level>,
}

/// A level after a change, and whether it was created or emptied by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Touched {
    pub level: Level,
    pub created: bool,
    pub removed: bool,
}

/// What [`Ladder::set`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Set {
    /// The level changed (created, resized or removed); true when the side had to grow.
    Touched(Touched, bool),
    /// The level already had that size and order count.
    Same,
    /// Asked to remove a level that is not there.
    Absent,
}

impl Ladder {
    /// An empty side with room for `capacity` levels; `None` when the memory cannot be had.
    pub(crate) fn new(side: Side, capacity: usize) -> Option<Self> {
        let mut levels = Vec::new();
        levels.try_reserve_exact(capacity).ok()?;
        Some(Self { side, levels })
    }

    /// Sort key: ascending from worst to best on both sides.
    #[inline]
    fn key(&self, price: u32) -> u32 {
        match self.side {
            Side::Bid => price,
            Side::Ask => !price,
        }
    }

    /// `Ok(index)` of the level at `price`, or `Err(index)` where it would be inserted.
    #[inline]
    fn search(&self, price: u32) -> Result<usize, usize> {
        let k = self.key(price);
        let v = &self.levels;
        let stop = v.len().saturating_sub(SCAN);
        let mut i = v.len();
        while i > stop {
            let lk = self.key(v[i - 1].price);
            if lk == k {
                return Ok(i - 1);
            }
            if lk < k {
                return Err(i);
            }
            i -= 1;
        }
        v[..stop].binary_search_by_key(&k, |l| self.key(l.price))
    }

    /// Starts loading the levels nearest the top (those [`search`](Self::search) scans first)
    /// into the cache; returns at once. Only a hint: changes nothing.
    #[inline]
    pub(crate) fn prefetch_top(&self) {
        let n = self.levels.len().min(SCAN);
        if n == 0 {
            return;
        }
        let top = self.levels[self.levels.len() - n..].as_ptr().cast::<u8>();
        let bytes = n * LEVEL_BYTES;
        let mut at = 0;
        while at < bytes {
            super::orders::prefetch_line(top.wrapping_add(at));
            at += 64;
        }
        super::orders::prefetch_line(top.wrapping_add(bytes - 1));
    }

    /// The best level.
    #[inline]
    pub(crate) fn best(&self) -> Option<&Level> {
        self.levels.last()
    }

    /// Levels, best first.
    #[inline]
    pub(crate) fn iter(&self) -> impl Iterator<Item = Level> + '_ {
        self.levels.iter().rev().copied()
    }

    /// Number of levels.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.levels.len()
    }

    /// Reserved room, in levels.
    pub(crate) fn capacity(&self) -> usize {
        self.levels.capacity()
    }

    /// Adds one order of `shares` at `price`. The second value is true when the reserved room
    /// was full and the side had to grow (an allocation).
    ///
    /// Joining a level is inlined; creating one (entries move, the side may grow) is not.
    #[inline(always)]
    pub(crate) fn add(&mut self, price: u32, shares: u32) -> (Touched, bool) {
        match self.search(price) {
            Ok(i) => {
                let l = &mut self.levels[i];
                let level = Level {
                    price: l.price,
                    orders: l.orders + 1,
                    shares: l.shares + u64::from(shares),
                };
                // Stored, and returned from registers: reading the entry back in one wide
                // load right after narrower stores to it would wait for them to retire.
                *l = level;
                let t = Touched {
                    level,
                    created: false,
                    removed: false,
                };
                (t, false)
            }
            Err(i) => self.create(i, price, shares),
        }
    }

    /// [`add`](Self::add) of a new level, at index `i`.
    #[inline(never)]
    fn create(&mut self, i: usize, price: u32, shares: u32) -> (Touched, bool) {
        let grew = self.levels.len() == self.levels.capacity();
        let level = Level {
            price,
            orders: 1,
            shares: u64::from(shares),
        };
        self.levels.insert(i, level);
        let t = Touched {
            level,
            created: true,
            removed: false,
        };
        (t, grew)
    }

    /// Takes `shares` off the level at `price` and `orders` (0 or 1) orders with them; the
    /// level goes when it has no order left. `None` if there is no level at `price` (the order
    /// table and the ladders disagree: a bug, reported rather than panicking).
    #[inline]
    pub(crate) fn reduce(&mut self, price: u32, shares: u32, orders: u32) -> Option<Touched> {
        let i = self.search(price).ok()?;
        let l = &mut self.levels[i];
        let level = Level {
            price: l.price,
            orders: l.orders.saturating_sub(orders),
            shares: l.shares.saturating_sub(u64::from(shares)),
        };
        *l = level;
        let removed = level.orders == 0;
        if removed {
            self.levels.remove(i);
        }
        Some(Touched {
            level,
            created: false,
            removed,
        })
    }

    /// Changes the shares of one order at `price` from `old` to `new` (both non-zero), keeping
    /// the order count.
    #[inline]
    pub(crate) fn resize(&mut self, price: u32, old: u32, new: u32) -> Option<Touched> {
        let i = self.search(price).ok()?;
        let l = &mut self.levels[i];
        let level = Level {
            shares: (l.shares + u64::from(new)).saturating_sub(u64::from(old)),
            ..*l
        };
        *l = level;
        Some(Touched {
            level,
            created: false,
            removed: false,
        })
    }

    /// Sets the level at `price` to `shares` and `orders`, as a venue that publishes price
    /// levels states it: 0 shares removes the level. See [`Set`].
    #[inline]
    pub(crate) fn set(&mut self, price: u32, shares: u64, orders: u32) -> Set {
        match (self.search(price), shares) {
            (Ok(i), 0) => {
                let level = self.levels.remove(i);
                Set::Touched(
                    Touched {
                        level,
                        created: false,
                        removed: true,
                    },
                    false,
                )
            }
            (Ok(i), _) => {
                let l = &mut self.levels[i];
                if l.shares == shares && l.orders == orders {
                    return Set::Same;
                }
                let level = Level {
                    price: l.price,
                    orders,
                    shares,
                };
                *l = level;
                let t = Touched {
                    level,
                    created: false,
                    removed: false,
                };
                Set::Touched(t, false)
            }
            (Err(_), 0) => Set::Absent,
            (Err(i), _) => {
                let grew = self.levels.len() == self.levels.capacity();
                let level = Level {
                    price,
                    orders,
                    shares,
                };
                self.levels.insert(i, level);
                let t = Touched {
                    level,
                    created: true,
                    removed: false,
                };
                Set::Touched(t, grew)
            }
        }
    }

    /// Removes every level (keeps the memory).
    pub(crate) fn clear(&mut self) {
        self.levels.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bids_and_asks_keep_best_last() {
        for side in [Side::Bid, Side::Ask] {
            let mut l = Ladder::new(side, 4).expect("alloc");
            // Enough prices to exercise both the scan and the binary search.
            let prices = [50u32, 10, 90, 30, 70, 20, 80, 40, 60, 100, 5, 95];
            let mut grew = 0;
            for &p in &prices {
                let (t, g) = l.add(p, p);
                assert!(t.created);
                grew += usize::from(g);
            }
            assert!(grew > 0, "reserved 4, added 12");
            let (t, _) = l.add(30, 1);
            assert_eq!((t.created, t.level.orders, t.level.shares), (false, 2, 31));
            let got: Vec<u32> = l.iter().map(|x| x.price).collect();
            let mut want = prices.to_vec();
            want.sort_unstable();
            if side == Side::Bid {
                want.reverse();
            }
            assert_eq!(got, want);
            let best = if side == Side::Bid { 100 } else { 5 };
            assert_eq!(l.best().map(|x| x.price), Some(best));

            let t = l.reduce(30, 30, 1).expect("level");
            assert_eq!((t.removed, t.level.orders, t.level.shares), (false, 1, 1));
            let t = l.reduce(30, 1, 1).expect("level");
            assert!(t.removed);
            assert!(l.reduce(30, 1, 1).is_none());
            let t = l.resize(50, 50, 7).expect("level");
            assert_eq!(t.level.shares, 7);
            assert_eq!(l.len(), prices.len() - 1);
        }
    }

    #[test]
    fn set_adds_resizes_and_removes_levels() {
        for side in [Side::Bid, Side::Ask] {
            let mut l = Ladder::new(side, 2).expect("alloc");
            assert!(matches!(l.set(10, 5, 0), Set::Touched(t, false) if t.created));
            assert!(matches!(l.set(20, 7, 2), Set::Touched(t, false) if t.created));
            // Past the reserved room: the side grows, and says so.
            assert!(matches!(l.set(30, 1, 1), Set::Touched(t, true) if t.created));
            assert_eq!(l.set(20, 7, 2), Set::Same);
            let Set::Touched(t, _) = l.set(20, 9, 0) else {
                panic!("resize")
            };
            assert_eq!(
                (t.created, t.removed, t.level.shares, t.level.orders),
                (false, false, 9, 0)
            );
            let Set::Touched(t, _) = l.set(10, 0, 0) else {
                panic!("remove")
            };
            assert_eq!((t.removed, t.level.price), (true, 10));
            assert_eq!(l.set(10, 0, 0), Set::Absent);
            let best = if side == Side::Bid { 30 } else { 20 };
            assert_eq!(l.best().map(|x| x.price), Some(best));
            assert_eq!(l.len(), 2);
        }
    }
}
