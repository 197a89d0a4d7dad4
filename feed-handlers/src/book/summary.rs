//! The end-of-replay summary (`--book-summary`): message counts per ITCH type and, per
//! instrument, the top of book, resting orders and prints, as one JSON object.
//!
//! ```json
//! {"messages": 10000, "counts": {"A": 4758, "D": 4083, ...}, "gaps": 0, "unknown_refs": 0,
//!  "counters": {"events": 9945, "unknown_refs": 0, ...},
//!  "books": {"13": {"best_bid": 3201400, "bid_size": 25, "best_ask": 3203000, "ask_size": 100,
//!                   "resting_orders": 215, "executed_shares": 81556, "prints": 1089,
//!                   "unknown_refs": 0}}}
//! ```
//!
//! Prices are integers in units of 1e-4, `null` (with size 0) for an empty side. `counts` holds
//! the types seen, in byte order, each keyed by its letter. `books` holds every locate with a
//! resting order, a price level or a print, keyed by the locate as a string, in numeric order.

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::{BookBuilder, BookCounters};

/// Messages seen per message type byte (ITCH type letters).
#[derive(Clone, PartialEq, Eq)]
pub struct TypeCounts([u64; 256]);

impl TypeCounts {
    /// No message counted.
    pub const fn new() -> Self {
        Self([0; 256])
    }

    /// Counts one message of type `msg_type`.
    #[inline]
    pub fn record(&mut self, msg_type: u8) {
        self.0[usize::from(msg_type)] += 1;
    }

    /// Messages of type `msg_type`.
    pub fn get(&self, msg_type: u8) -> u64 {
        self.0[usize::from(msg_type)]
    }

    /// Messages of all types.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(type, count)` of every type seen, in byte order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, n)| **n != 0)
            .map(|(t, n)| (t as u8, *n))
    }
}

impl std::ops::AddAssign<&TypeCounts> for TypeCounts {
    fn add_assign(&mut self, other: &TypeCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }
}

impl Default for TypeCounts {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for TypeCounts {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(t, n)| (TypeKey(t), n)))
            .finish()
    }
}

/// A type byte as a JSON key: the letter itself, or `0xNN` for a byte that is not a printable
/// ASCII character.
#[derive(Clone, Copy)]
struct TypeKey(u8);

impl core::fmt::Display for TypeKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "{}", char::from(self.0))
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

impl core::fmt::Debug for TypeKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{self}")
    }
}

impl Serialize for TypeCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (t, n) in self.iter() {
            m.serialize_entry(&TypeKey(t).to_string(), &n)?;
        }
        m.end()
    }
}

/// One instrument in a [`BookSummary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct BookSummaryEntry {
    /// Best bid price (1e-4), `None` (`null`) when no bid rests.
    pub best_bid: Option<u32>,
    /// Shares at the best bid (0 when none).
    pub bid_size: u64,
    /// Best ask price (1e-4), `None` (`null`) when no ask rests.
    pub best_ask: Option<u32>,
    /// Shares at the best ask (0 when none).
    pub ask_size: u64,
    /// Orders resting (0 on a book of price levels).
    pub resting_orders: u64,
    /// Shares of every `E`, `C` and `P` message of the locate.
    pub executed_shares: u64,
    /// Number of those messages.
    pub prints: u64,
    /// Events naming an order not live on this locate.
    pub unknown_refs: u64,
}

/// End-of-replay summary; serializes to the `--book-summary` JSON object (see the module docs).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BookSummary {
    /// Messages read.
    pub messages: u64,
    /// Messages per type letter.
    pub counts: TypeCounts,
    /// Sequence gaps met by the reader.
    pub gaps: u64,
    /// Events naming an unknown order, over all locates.
    pub unknown_refs: u64,
    /// Every counter of the builder.
    pub counters: BookCounters,
    /// Per locate, ascending.
    #[serde(serialize_with = "locate_map")]
    pub books: Vec<(u16, BookSummaryEntry)>,
}

fn locate_map<S: Serializer>(books: &[(u16, BookSummaryEntry)], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(books.len()))?;
    for (locate, e) in books {
        m.serialize_entry(&locate.to_string(), e)?;
    }
    m.end()
}

impl BookSummary {
    /// The summary as one line of JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain integers, strings and maps with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// One summary of the summaries of books split by instrument (each a
    /// [`Share`](crate::bookstream::Share) of one feed, each having read every message):
    /// messages and counters add up, the books are joined, and the gaps are those of the share
    /// that met the most (every share meets the feed's market-wide gap notices).
    pub fn of_shares(shares: impl IntoIterator<Item = BookSummary>) -> BookSummary {
        let mut all = BookSummary {
            messages: 0,
            counts: TypeCounts::new(),
            gaps: 0,
            unknown_refs: 0,
            counters: BookCounters::default(),
            books: Vec::new(),
        };
        for s in shares {
            all.messages += s.messages;
            all.counts += &s.counts;
            all.gaps = all.gaps.max(s.gaps);
            all.unknown_refs += s.unknown_refs;
            all.counters += &s.counters;
            all.books.extend(s.books);
        }
        all.books.sort_unstable_by_key(|(locate, _)| *locate);
        all
    }

    /// The entry of `locate`.
    pub fn book(&self, locate: u16) -> Option<&BookSummaryEntry> {
        self.books
            .binary_search_by_key(&locate, |(l, _)| *l)
            .ok()
            .map(|i| &self.books[i].1)
    }
}

impl BookBuilder {
    /// Sums the replay up: `counts` and `messages` as the reader counted them, `gaps` from the
    /// sequencer, and every locate with a resting order, a price level or a print. Allocates
    /// (not for the hot path).
    pub fn summary(&self, counts: &TypeCounts, messages: u64, gaps: u64) -> BookSummary {
        let books = self
            .locates()
            .filter_map(|locate| {
                let st = self.stats(locate)?;
                let bbo = self.bbo(locate)?;
                let empty = bbo.bid_price.is_none() && bbo.ask_price.is_none();
                if st.resting_orders == 0 && st.prints == 0 && empty {
                    return None;
                }
                Some((
                    locate,
                    BookSummaryEntry {
                        best_bid: bbo.bid_price,
                        bid_size: bbo.bid_size,
                        best_ask: bbo.ask_price,
                        ask_size: bbo.ask_size,
                        resting_orders: st.resting_orders,
                        executed_shares: st.executed_shares,
                        prints: st.prints,
                        unknown_refs: st.unknown_refs,
                    },
                ))
            })
            .collect();
        BookSummary {
            messages,
            counts: counts.clone(),
            gaps,
            unknown_refs: self.counters().unknown_refs,
            counters: *self.counters(),
            books,
        }
    }
}
