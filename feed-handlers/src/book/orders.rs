//! The order table: every live order of every instrument, keyed by its 64-bit reference, in one
//! preallocated open-addressing hash table.
//!
//! * Entries are the [`Order`]s themselves (24 bytes), stored inline: a lookup touches one
//!   cache line in the common case and there is no second indirection into a slab.
//! * Home slots keep neighbours together: Nasdaq hands out references in rising order across
//!   the whole market, and most orders are cancelled or filled young, so the orders being
//!   touched at any moment are mostly the latest few thousand references. A reference's home
//!   is its block of 64 consecutive references (1,536 bytes), placed by a golden-ratio
//!   multiply-shift hash of the block number, plus its offset in the block. The hot orders thus
//!   fill a few dense blocks that stay in cache, while blocks spread evenly over the table and
//!   strides in the references cannot pile onto one slot. Measured on a generated whole-market
//!   flow with 3 million live orders (the `book` bench), this is about 1.5 times the throughput
//!   of hashing each reference on its own; a plain `reference % slots` was 5 times slower, its
//!   runs of consecutive live references making each deletion scan a whole run.
//! * Linear probing from the home slot. Deletion shifts later entries of the probe run back
//!   into the hole (no tombstones), so the table never degrades and never needs a rehash to
//!   clear them: no latency cliff in mid-session, unlike general-purpose maps that rehash
//!   when tombstones pile up.
//! * The table has `orders * 8 / 3 + 1` slots rounded up to whole blocks for the `orders` it
//!   holds now, so its load never exceeds 3/8 and a probe always ends at an empty slot. Block
//!   homes cluster: a block of young, mostly live references lands on slots that older
//!   orders partly hold, and its overflow runs on into the next blocks, so probes lengthen
//!   quickly with the load. Building the synthetic full day's books (1.08 million live orders
//!   at peak) from decoded fields ran at about 9 M messages/s with a table filled to 3/4
//!   before it grew, 10 to 11.4 M/s with this bound, and 12.2 to 12.4 M/s with a table
//!   reserved for all 9.5 M adds (load under 1/10, at 4 times the memory). An order with 0
//!   shares leaves the book, so `shares == 0` marks an empty slot.
//! * Sized in steps: a table for at most [`PREALLOCATED_ORDERS`] orders is committed whole at
//!   construction; a larger maximum starts at that many and grows by half when full (a
//!   rehash of the live orders per step, counted by the caller), or earlier and off the hot
//!   path with [`OrderTable::reserve`]. A full day's maximum (10 million) then costs memory
//!   for the orders a session actually keeps live, not for the maximum: a table 8 times too
//!   large spreads the live orders over 8 times the cache lines and pages. The rehash holds
//!   up the inserting thread once per step, some 25 ms for a million live orders on a
//!   2-vCPU virtual machine (counted in `order_table_growth_max_ns`).
//! * The slots grow in place ([`Slots`]: address space reserved for the maximum), and the
//!   rehash moves the live orders within them, so a growth holds only the larger step's
//!   memory, never both steps'.
//! * The next step's memory is committed on a housekeeping thread (off the hot thread's cpu,
//!   see [`mdbus_tuning::spawn_housekeeping`]) once the table is 3/4 full, so that growing
//!   only moves the live orders: backing fresh memory costs far more than the move (some
//!   15 ms per 100 MiB on bare metal, up to 100 times that on a virtual machine whose host
//!   reclaims freed guest memory). While that goes on, a full table takes more orders past
//!   its bound load, up to the next step's capacity (its probes lengthen for a while), and
//!   grows at the first insert that finds the step ready, even if the table is back under
//!   its bound by then (so that it does not hold the memory unused): on the synthetic day
//!   the hot thread had waited up to 0.74 s for the new slots at the growth, a stall in the
//!   middle of the session. Only at the next step's capacity does it wait.

use super::Side;
use super::slots::{NoRoom, Slots};

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

/// References per block: consecutive references share a block of slots.
const BLOCK_BITS: u32 = 6;
const BLOCK: usize = 1 << BLOCK_BITS;

/// Orders a table holds from the start: a maximum up to this is allocated whole at
/// construction; a larger one is reached in doubling steps (see the module docs).
pub const PREALLOCATED_ORDERS: usize = 1 << 20;

/// What [`OrderTable::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Insert {
    /// Stored.
    Inserted,
    /// Stored, after the table grew (one allocation).
    Grew,
    /// An order with this reference is already live; nothing stored.
    Duplicate,
    /// `max_orders` orders are live (or the table could not grow); nothing stored.
    Full,
}

/// Preallocated open-addressing map from order reference to [`Order`].
#[derive(Debug)]
pub(crate) struct OrderTable {
    slots: Slots,
    len: usize,
    /// Orders the slots hold now (at a load of at most 3/8).
    cap: usize,
    /// Orders the table may grow to hold.
    max: usize,
    /// `len` at which [`insert`](Self::insert) leaves its fast path: `cap`, or earlier, to start
    /// preparing the next step's slots; 0 while `overdue`.
    watch: usize,
    /// The table went past its bound load while its next step was being made: it grows at
    /// the first insert that finds the step made (every insert looks).
    overdue: bool,
    /// How long the last growth took (its rehash, and any wait for its memory), in ns.
    last_growth_ns: u64,
}

impl OrderTable {
    /// Bytes of address space a table for at most `max` orders reserves.
    pub(crate) const fn reserved_bytes(max: usize) -> usize {
        Self::slots_for(max).saturating_mul(ORDER_SLOT_BYTES)
    }

    /// Bytes of memory a table with room for `orders` holds (on a host with 4 KiB pages).
    pub(crate) const fn bytes_for(orders: usize) -> usize {
        super::slots::committed_bytes(Self::slots_for(orders))
    }

    /// Slots needed to hold `max` orders at a load of at most 3/8, in whole blocks.
    pub(crate) const fn slots_for(max: usize) -> usize {
        let two = max.saturating_mul(2);
        let n = two.saturating_add(two / 3).saturating_add(1);
        n.div_ceil(BLOCK).saturating_mul(BLOCK)
    }

    /// A table for up to `max` live orders: slots for `min(max, PREALLOCATED_ORDERS)` of them
    /// committed now, the rest in steps when needed; address space for `max` reserved now.
    pub(crate) fn new(max: usize) -> Result<Self, NoRoom> {
        Self::starting_at(max.min(PREALLOCATED_ORDERS), max)
    }

    /// A table for up to `max` live orders, starting with room for `cap`.
    fn starting_at(cap: usize, max: usize) -> Result<Self, NoRoom> {
        Ok(Self {
            slots: Slots::new(Self::slots_for(cap), Self::slots_for(max))?,
            len: 0,
            cap,
            max,
            watch: watch_for(cap, max),
            overdue: false,
            last_growth_ns: 0,
        })
    }

    /// Orders the slots hold now, before the next growth.
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Grows the table now, off the hot path, so that `orders` live orders (at most the
    /// maximum) fit without a growth later. False when the memory cannot be had (the table is
    /// left as it was).
    pub(crate) fn reserve(&mut self, orders: usize) -> bool {
        let want = orders.min(self.max);
        want <= self.cap || self.regrow(want)
    }

    /// Grows the room by half (up to the maximum); false when already at the maximum or the
    /// memory cannot be had.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) -> bool {
        self.cap < self.max && self.regrow(self.next_cap())
    }

    /// The capacity of the next step: half more, up to the maximum.
    fn next_cap(&self) -> usize {
        self.cap.saturating_add(self.cap.div_ceil(2)).min(self.max)
    }

    /// Starts committing the next step's slots on a housekeeping thread (see the module
    /// docs); if no thread can be had, growing commits them itself.
    #[cold]
    #[inline(never)]
    fn prepare_next(&mut self) {
        self.watch = self.cap;
        if self.cap < self.max {
            let n = Self::slots_for(self.next_cap());
            self.slots.prepare(n, "mdbus-orders");
        }
    }

    /// Whether the next step's slots are being made (or are ready).
    #[cfg(test)]
    pub(crate) fn preparing(&self) -> bool {
        self.slots.prepared()
    }

    /// Whether the next step's slots are being made and not ready yet.
    fn making(&self) -> bool {
        self.slots.committing()
    }

    /// Waits until the next step's slots, if they are being made, are ready.
    #[cfg(test)]
    pub(crate) fn wait_prepared(&self) {
        while self.making() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// How long the last growth held up the thread that made it (its rehash, and any wait for
    /// its memory), in nanoseconds; 0 before the first.
    pub(crate) fn last_growth_ns(&self) -> u64 {
        self.last_growth_ns
    }

    /// Extends the slots to hold `cap` orders and moves every live order to its place in them.
    fn regrow(&mut self, cap: usize) -> bool {
        let started = std::time::Instant::now();
        let n = Self::slots_for(cap);
        let words = n.div_ceil(64);
        let mut moved = Vec::new();
        if moved.try_reserve_exact(words).is_err() {
            return false;
        }
        moved.resize(words, 0u64);
        let old = self.slots.len();
        if !self.slots.grow(n) {
            return false;
        }
        self.cap = cap;
        self.watch = watch_for(cap, self.max);
        self.overdue = false;
        self.rehash(old, &mut moved);
        self.last_growth_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        true
    }

    /// Moves every order of the first `old` slots to where the table's present size places
    /// it, within the slots (`moved`: one zero bit per slot).
    ///
    /// Each order not yet moved is picked up and placed by linear probing from its new home,
    /// passing over orders already moved; when the probe meets an order not yet moved, the
    /// two swap and the displaced one is placed next. A moved order never moves again, so
    /// every slot between a moved order's home and its place holds a moved order at the end:
    /// the probe runs are whole, as if each order had been inserted anew.
    ///
    /// The slots are taken from the last to the first. A growth keeps the blocks' order (a
    /// block's place is its hash scaled onto the number of blocks) and moves each one up, so
    /// an order mostly lands above every order not yet moved, in an empty slot: the reads
    /// and writes run down the table as two streams. Taken first to last, most orders
    /// landed on one not yet moved, a chain of dependent cache misses: the synthetic day's
    /// growth (a million live orders) held its thread 44-45 ms that way, 23-25 ms this way.
    fn rehash(&mut self, old: usize, moved: &mut [u64]) {
        let is_moved = |moved: &[u64], i: usize| moved[i / 64] & (1 << (i % 64)) != 0;
        for i in (0..old).rev() {
            if self.slots[i].shares == 0 || is_moved(moved, i) {
                continue;
            }
            let mut held = std::mem::replace(&mut self.slots[i], EMPTY);
            loop {
                let mut j = self.home(held.order_ref);
                while is_moved(moved, j) {
                    j = self.next(j);
                }
                moved[j / 64] |= 1 << (j % 64);
                held = std::mem::replace(&mut self.slots[j], held);
                if held.shares == 0 {
                    break;
                }
            }
        }
    }

    /// Live orders.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes held by the slots (with the next step's, while they are prepared).
    pub(crate) fn bytes(&self) -> usize {
        self.slots.bytes()
    }

    /// Home slot: the block's place (hash of the block number scaled onto the number of
    /// blocks) plus the offset within the block.
    #[inline]
    fn home(&self, order_ref: u64) -> usize {
        let blocks = (self.slots.len() >> BLOCK_BITS) as u128;
        let h = (order_ref >> BLOCK_BITS).wrapping_mul(GOLDEN);
        let block = ((u128::from(h) * blocks) >> 64) as usize;
        (block << BLOCK_BITS) | (order_ref as usize & (BLOCK - 1))
    }

    /// Starts loading the home slot of `order_ref` into the cache, so that a later
    /// [`find`](Self::find) or [`insert`](Self::insert) of it does not wait for memory. With
    /// references spread over a whole market most home slots are cold; a caller that knows the
    /// next reference early hides that miss behind other work. Only a hint: changes nothing.
    #[inline]
    pub(crate) fn prefetch(&self, order_ref: u64) {
        let slot: *const Order = &self.slots[self.home(order_ref)];
        // A slot may straddle two cache lines: ask for the line of its last byte too.
        let last = slot.cast::<u8>().wrapping_add(ORDER_SLOT_BYTES - 1);
        prefetch_line(slot.cast());
        prefetch_line(last);
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

    /// Stores `order` (`order.shares` must not be 0), growing the table first when it is full
    /// and below its maximum.
    #[inline]
    pub(crate) fn insert(&mut self, order: Order) -> Insert {
        debug_assert!(order.shares != 0);
        if self.len >= self.watch {
            if self.len >= self.cap || self.overdue {
                return self.insert_when_full(order);
            }
            self.prepare_next();
        }
        self.place(order)
    }

    /// [`insert`](Self::insert) into a table with room: `Inserted` or `Duplicate`.
    #[inline]
    fn place(&mut self, order: Order) -> Insert {
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
        self.slots[i] = order;
        self.len += 1;
        Insert::Inserted
    }

    /// [`insert`](Self::insert) when the table is full at its bound load, or `overdue`: while
    /// the next step's slots are still being made the order goes in past the bound, up to
    /// the next step's capacity (see the module docs); otherwise the table grows (a duplicate
    /// of a full table is still a duplicate), or a full one refuses the order at the maximum.
    /// Out of line: the hot path only tests for it.
    #[cold]
    #[inline(never)]
    fn insert_when_full(&mut self, order: Order) -> Insert {
        if self.making() && self.len < self.next_cap() {
            self.overdue = true;
            self.watch = 0;
            return self.place(order);
        }
        let full = self.len >= self.cap;
        if full && self.find(order.order_ref).is_some() {
            return Insert::Duplicate;
        }
        self.overdue = false;
        self.watch = watch_for(self.cap, self.max);
        let grew = self.grow();
        if full && !grew {
            return Insert::Full;
        }
        match self.place(order) {
            Insert::Inserted if grew => Insert::Grew,
            other => other,
        }
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

    /// References of the live orders on `locate`: a walk of every slot, for rare events
    /// (a venue clearing one instrument's book), never the hot path.
    pub(crate) fn refs_on(&self, locate: u16) -> Vec<u64> {
        self.slots
            .iter()
            .filter(|s| s.shares != 0 && s.locate == locate)
            .map(|s| s.order_ref)
            .collect()
    }

    /// Forgets every order (keeps the memory).
    pub(crate) fn clear(&mut self) {
        self.slots.fill(EMPTY);
        self.len = 0;
        // Empty, it is no longer past its bound: a step being made is taken when it fills.
        self.overdue = false;
        self.watch = watch_for(self.cap, self.max);
    }
}

/// The `len` at which a table of `cap` orders (of at most `max`) starts preparing its next
/// step: 3/4 full, or never (`cap`) at the maximum.
fn watch_for(cap: usize, max: usize) -> usize {
    if cap < max { cap - cap / 4 } else { cap }
}

/// Asks the CPU to bring the cache line holding `p` into all cache levels; returns at once.
/// A no-op on targets other than x86_64.
#[inline(always)]
pub(crate) fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is an `unsafe fn` only because it takes a raw pointer and needs
    // SSE. SSE is part of the x86_64 baseline, so the instruction exists on every target this
    // compiles for. PREFETCHT0 is a hint: it never dereferences `p` architecturally, never
    // faults (not even on an unmapped or null address) and changes no memory or register
    // state visible to the program, so no pointer value can cause undefined behaviour. Our
    // callers pass addresses inside the order table anyway.
    unsafe {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
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
        assert_eq!(t.slots.len(), 64);
        // References 64 apart share their offset in the block, and a one-block table has one
        // place for every block: all eight collide on one home slot, the last wrapping round.
        let key = |k: u64| k * 64 + 63;
        for k in 1..=8 {
            assert_eq!(t.home(key(k)), 63);
            assert_eq!(t.insert(order(key(k), k as u32)), Insert::Inserted);
        }
        assert_eq!(t.insert(order(1, 1)), Insert::Full);
        assert_eq!(t.insert(order(key(3), 1)), Insert::Duplicate);
        for k in 1..=8 {
            assert_eq!(t.get(key(k)).map(|o| o.shares), Some(k as u32));
        }
        // Remove in an order that breaks the probe run, checking the rest stays reachable.
        for (n, k) in [5u64, 1, 8, 2, 7].into_iter().enumerate() {
            let i = t.find(key(k)).expect("live");
            t.remove_at(i);
            assert_eq!(t.len(), 8 - n - 1);
            assert!(t.get(key(k)).is_none());
        }
        for k in [3u64, 4, 6] {
            assert_eq!(t.get(key(k)).map(|o| o.shares), Some(k as u32));
        }
        t.clear();
        assert_eq!(t.len(), 0);
        assert!(t.get(key(3)).is_none());
    }

    #[test]
    fn load_stays_at_most_three_eighths() {
        for n in [1usize, 8, 1_000, PREALLOCATED_ORDERS, 10_000_000] {
            let slots = OrderTable::slots_for(n);
            assert!(slots * 3 >= n * 8, "{n} orders in {slots} slots");
            assert_eq!(slots % BLOCK, 0);
        }
        // Grown by half, and the load still bounded.
        let mut t = OrderTable::new(PREALLOCATED_ORDERS * 2).expect("alloc");
        assert!(t.reserve(PREALLOCATED_ORDERS + 1));
        assert_eq!(t.capacity(), PREALLOCATED_ORDERS + 1);
        assert!(t.slots.len() * 3 >= t.capacity() * 8);
    }

    #[test]
    fn the_next_step_is_made_off_the_hot_thread_from_three_quarters_full() {
        let mut t = OrderTable::new(PREALLOCATED_ORDERS * 2).expect("alloc");
        let three_quarters = PREALLOCATED_ORDERS - PREALLOCATED_ORDERS / 4;
        let before = t.bytes();
        for r in 1..=three_quarters as u64 {
            assert_eq!(t.insert(order(r, 1)), Insert::Inserted);
        }
        assert!(!t.preparing());
        assert_eq!(t.insert(order(0x1_0000_0000, 1)), Insert::Inserted);
        assert!(t.preparing(), "the next step's slots are on their way");
        // Counted while they are made: the larger step's memory is held, never both steps'.
        let next = OrderTable::slots_for(PREALLOCATED_ORDERS * 3 / 2);
        let held = t.bytes();
        assert!(held >= next * ORDER_SLOT_BYTES && held < before + next * ORDER_SLOT_BYTES);
        let at = t.slots.as_ptr();
        for r in three_quarters as u64 + 1..PREALLOCATED_ORDERS as u64 {
            assert_eq!(t.insert(order(r, 1)), Insert::Inserted);
        }
        // Full, the next step made: the next insert grows into it, every order kept.
        t.wait_prepared();
        assert_eq!(t.insert(order(u64::MAX, 1)), Insert::Grew);
        assert!(!t.preparing());
        assert_eq!(t.capacity(), PREALLOCATED_ORDERS * 3 / 2);
        assert_eq!(t.slots.len(), next);
        assert_eq!((t.slots.as_ptr(), t.bytes()), (at, held), "grown in place");
        assert_eq!(t.len(), PREALLOCATED_ORDERS + 1);
        for r in (1..PREALLOCATED_ORDERS as u64).step_by(997) {
            assert!(t.get(r).is_some());
        }
        assert!(t.get(0x1_0000_0000).is_some() && t.get(u64::MAX).is_some());
        // At the maximum, nothing more is prepared.
        assert!(t.reserve(PREALLOCATED_ORDERS * 2));
        for r in 0..PREALLOCATED_ORDERS as u64 {
            t.insert(order(r + (1 << 40), 1));
        }
        assert!(!t.preparing());
    }

    /// A table for `cap` orders, empty, whose next step (for half more) is made when the
    /// sender returned is sent to (or dropped).
    fn table_with_held_step(cap: usize) -> (OrderTable, std::sync::mpsc::Sender<()>) {
        let n = OrderTable::slots_for(cap + cap / 2);
        let (release, made) = std::sync::mpsc::channel::<()>();
        let mut t = OrderTable::starting_at(cap, 100_000).expect("alloc");
        assert!(t.slots.spawn_commit(n, "mdbus-test-orders", move || {
            let _ = made.recv();
        }));
        t.watch = cap;
        (t, release)
    }

    #[test]
    fn a_full_table_takes_orders_past_its_bound_while_the_next_step_is_made() {
        let (cap, next_cap) = (4_096, 6_144);
        let (mut t, release) = table_with_held_step(cap);
        for r in 1..=cap as u64 {
            assert_eq!(t.insert(order(r, 1)), Insert::Inserted);
        }
        // A table that waits for the next step is released after a while, and fails below
        // instead of hanging.
        let late = release.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(5));
            let _ = late.send(());
        });
        // Full at its bound load, the next step not made: the orders go in past the bound,
        // duplicates still refused.
        for r in cap as u64 + 1..=next_cap as u64 {
            assert_eq!(
                t.insert(order(r, 1)),
                Insert::Inserted,
                "order {r} waited for the next step"
            );
            assert_eq!(t.insert(order(r, 1)), Insert::Duplicate);
        }
        assert_eq!((t.capacity(), t.len()), (cap, next_cap));
        assert!(t.preparing());
        // At the next step's capacity it waits for the step, and grows.
        let _ = release.send(());
        let far = 1 << 40;
        assert_eq!(t.insert(order(far, 1)), Insert::Grew);
        assert_eq!((t.capacity(), t.len()), (next_cap, next_cap + 1));
        for r in (1..=next_cap as u64).chain([far]) {
            assert_eq!(t.get(r).map(|o| o.order_ref), Some(r));
        }
        // Removals work on a table past its bound as on any other.
        t.remove_at(t.find(70).expect("live"));
        assert!(t.get(70).is_none() && t.get(71).is_some());
    }

    #[test]
    fn a_table_that_went_past_its_bound_grows_once_the_step_is_made_even_back_under_it() {
        let cap = 4_096;
        let far = 1 << 40;
        let (mut t, release) = table_with_held_step(cap);
        for r in 1..=cap as u64 + 8 {
            assert_eq!(t.insert(order(r, 1)), Insert::Inserted);
        }
        // Back under the bound while the step is still being made: no growth yet.
        for r in 1..=16 {
            t.remove_at(t.find(r).expect("live"));
        }
        assert_eq!(t.insert(order(far, 1)), Insert::Inserted);
        assert_eq!(t.capacity(), cap);
        // Made: the next insert grows into the memory the step holds anyway.
        drop(release);
        t.wait_prepared();
        let held = t.bytes();
        assert_eq!(t.insert(order(far + 1, 1)), Insert::Grew);
        assert_eq!(t.capacity(), cap + cap / 2);
        assert!(!t.preparing() && t.bytes() == held);
        assert_eq!(t.len(), cap + 8 - 16 + 2);
        for r in (17..=cap as u64 + 8).chain([far, far + 1]) {
            assert_eq!(t.get(r).map(|o| o.order_ref), Some(r));
        }
        // And back to its ordinary bounds: the next full insert at the new capacity grows.
        assert_eq!(t.insert(order(far + 2, 1)), Insert::Inserted);
    }

    #[test]
    fn growing_in_place_keeps_every_order_reachable() {
        use std::collections::HashMap;
        let mut t = OrderTable::starting_at(64, 20_000).expect("alloc");
        let at = t.slots.as_ptr();
        let mut m: HashMap<u64, u32> = HashMap::new();
        let mut live: Vec<u64> = Vec::new();
        let (mut x, mut next_ref, mut growths) = (0x9E37_79B9_u64, 1_u64, 0);
        let check = |t: &OrderTable, m: &HashMap<u64, u32>| {
            for (r, shares) in m {
                assert_eq!(t.get(*r).map(|o| o.shares), Some(*shares), "order {r}");
            }
        };
        for step in 0..60_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly rising references (a venue's), some far apart; more adds than removals
            // while the table fills, so that it grows several times, then fewer.
            let add = x % 8 < if step < 40_000 { 5 } else { 3 };
            let cap = t.capacity();
            if add || live.is_empty() {
                next_ref += 1 + x % 3;
                let r = if x & (1 << 30) == 0 {
                    next_ref
                } else {
                    x >> 20
                };
                let shares = 1 + (x % 1_000) as u32;
                match t.insert(order(r, shares)) {
                    Insert::Inserted | Insert::Grew if !m.contains_key(&r) => {
                        m.insert(r, shares);
                        live.push(r);
                    }
                    Insert::Duplicate if m.contains_key(&r) => {}
                    other => panic!("insert {r}: {other:?} with {} live", m.len()),
                }
            } else {
                let r = live.swap_remove((x >> 8) as usize % live.len());
                t.remove_at(t.find(r).expect("live"));
                m.remove(&r);
            }
            assert_eq!(t.len(), m.len());
            if t.capacity() != cap {
                growths += 1;
                check(&t, &m);
            }
        }
        check(&t, &m);
        assert!(growths >= 4, "grew {growths} times, to {}", t.capacity());
        assert_eq!(t.slots.as_ptr(), at, "in place");
    }

    #[test]
    fn prefetch_changes_nothing() {
        let mut t = OrderTable::new(8).expect("alloc");
        assert_eq!(t.insert(order(5, 3)), Insert::Inserted);
        // Every home slot, including the table's last (whose line may end the allocation).
        for r in [0, 5, 63, 64 * 7 + 63, u64::MAX] {
            t.prefetch(r);
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(5).map(|o| o.shares), Some(3));
        assert!(t.get(63).is_none());
    }

    #[test]
    fn consecutive_references_share_a_block() {
        let t = OrderTable::new(10_000).expect("alloc");
        assert_eq!(t.slots.len() % BLOCK, 0);
        let base = 1_000 * 64;
        for r in base..base + 64 {
            assert_eq!(t.home(r), t.home(base) + (r - base) as usize);
        }
        assert!(t.home(base + 64) < t.slots.len());
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
            let r = x % 300;
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
