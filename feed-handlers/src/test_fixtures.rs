//! ITCH messages the unit tests of several modules build alike.

use mdbus_codecs::nasdaq::itch::{MessageFields, StockDirectoryFields};

/// A Stock Directory message naming `stock` for `locate` at `timestamp` (ns since midnight),
/// with the fields of an ordinary Nasdaq-listed common stock.
pub(crate) fn stock_directory(locate: u16, stock: [u8; 8], timestamp: u64) -> MessageFields {
    MessageFields::StockDirectory(StockDirectoryFields::common_stock(locate, stock, timestamp))
}
