//! An instrument directory for venues that key instruments on symbols: ids assigned in order
//! of first sight, bounded. Sans-IO, beside the normalizers that stamp its ids on envelopes
//! (IEX's); the feed handlers' venue seam re-exports it.

use std::collections::HashMap;

/// Most instruments a [`Directory`] holds (16 Mi: far beyond any venue's listings, small
/// enough to preallocate).
pub const MAX_INSTRUMENTS: usize = 1 << 24;

/// Symbol -> instrument id, for a venue whose messages name instruments by symbol (IEX) and
/// whose envelopes need a small id. Ids start at 1 (0 is "market-wide") and are never
/// reused; the number of instruments is bounded, so a feed naming endless new symbols is
/// refused ([`DirectoryFull`]) instead of growing memory.
///
/// Preallocated for its capacity: looking up and assigning never allocate.
///
/// ```
/// use mdbus_codecs::directory::Directory;
///
/// let mut dir = Directory::with_capacity(2);
/// let aapl = dir.assign(*b"AAPL    ")?;
/// assert_eq!(aapl, 1);
/// assert_eq!(dir.assign(*b"AAPL    ")?, aapl);
/// assert_eq!(dir.id_of(b"AAPL    "), Some(1));
/// assert_eq!(dir.symbol_of(1), Some(*b"AAPL    "));
/// dir.assign(*b"MSFT    ")?;
/// assert!(dir.assign(*b"IBM     ").is_err());
/// # Ok::<(), mdbus_codecs::directory::DirectoryFull>(())
/// ```
#[derive(Clone, Debug)]
pub struct Directory {
    ids: HashMap<[u8; 8], u32>,
    /// Indexed by id - 1.
    symbols: Vec<[u8; 8]>,
    capacity: usize,
}

/// A [`Directory`] already holds as many instruments as it was made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("instrument directory full ({capacity} instruments): symbol {symbol:?} not assigned")]
pub struct DirectoryFull {
    /// The directory's capacity.
    pub capacity: usize,
    /// The symbol refused, as text (space padding kept).
    pub symbol: Symbol,
}

/// Eight symbol bytes, shown as text.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Symbol(pub [u8; 8]);

impl core::fmt::Debug for Symbol {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl Directory {
    /// A directory for at most `capacity` instruments (capped at [`MAX_INSTRUMENTS`]), its
    /// storage allocated now.
    pub fn with_capacity(capacity: usize) -> Directory {
        let capacity = capacity.min(MAX_INSTRUMENTS);
        Directory {
            ids: HashMap::with_capacity(capacity),
            symbols: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// The id of `symbol`, if it was assigned one.
    #[inline]
    pub fn id_of(&self, symbol: &[u8; 8]) -> Option<u32> {
        self.ids.get(symbol).copied()
    }

    /// The symbol of instrument `id`, if assigned.
    #[inline]
    pub fn symbol_of(&self, id: u32) -> Option<[u8; 8]> {
        let i = usize::try_from(id.checked_sub(1)?).ok()?;
        self.symbols.get(i).copied()
    }

    /// The id of `symbol`, assigning the next one if it is new.
    #[inline]
    pub fn assign(&mut self, symbol: [u8; 8]) -> Result<u32, DirectoryFull> {
        if let Some(id) = self.id_of(&symbol) {
            return Ok(id);
        }
        if self.symbols.len() >= self.capacity {
            return Err(DirectoryFull {
                capacity: self.capacity,
                symbol: Symbol(symbol),
            });
        }
        self.symbols.push(symbol);
        // `len <= capacity <= MAX_INSTRUMENTS < u32::MAX`, so the id fits.
        let id = u32::try_from(self.symbols.len()).unwrap_or(u32::MAX);
        self.ids.insert(symbol, id);
        Ok(id)
    }

    /// Instruments assigned so far.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Whether no instrument was assigned yet.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_at_one_follow_first_sight_and_are_stable() {
        let mut d = Directory::with_capacity(8);
        assert!(d.is_empty());
        assert_eq!(d.assign(*b"B       "), Ok(1));
        assert_eq!(d.assign(*b"A       "), Ok(2));
        assert_eq!(d.assign(*b"B       "), Ok(1));
        assert_eq!(d.len(), 2);
        assert_eq!(d.symbol_of(0), None);
        assert_eq!(d.symbol_of(2), Some(*b"A       "));
        assert_eq!(d.symbol_of(3), None);
        assert_eq!(d.symbol_of(u32::MAX), None);
        assert_eq!(d.id_of(b"C       "), None);
    }

    #[test]
    fn a_full_directory_refuses_new_symbols_and_keeps_known_ones() {
        let mut d = Directory::with_capacity(1);
        assert_eq!(d.assign(*b"A       "), Ok(1));
        let err = d.assign(*b"ZZZ     ").expect_err("full");
        assert_eq!(err.capacity, 1);
        assert!(err.to_string().contains("\"ZZZ     \""), "{err}");
        assert_eq!(d.assign(*b"A       "), Ok(1));
        assert_eq!(d.len(), 1);
        assert_eq!(Directory::with_capacity(0).assign(*b"A       ").ok(), None);
    }
}
