//! ITCH messages the unit tests of several modules build alike.

use mdbus_codecs::itch::{MessageFields, StockDirectoryFields};

/// A Stock Directory message naming `stock` for `locate` at `timestamp` (ns since midnight),
/// with the fields of an ordinary Nasdaq-listed common stock.
pub(crate) fn stock_directory(locate: u16, stock: [u8; 8], timestamp: u64) -> MessageFields {
    MessageFields::StockDirectory(StockDirectoryFields {
        stock_locate: locate,
        tracking_number: 0,
        timestamp,
        stock,
        market_category: b'Q',
        financial_status_indicator: b'N',
        round_lot_size: 100,
        round_lots_only: b'N',
        issue_classification: b'C',
        issue_sub_type: *b"Z ",
        authenticity: b'P',
        short_sale_threshold_indicator: b'N',
        ipo_flag: b'N',
        luld_reference_price_tier: b'1',
        etp_flag: b'N',
        etp_leverage_factor: 0,
        inverse_indicator: b'N',
    })
}
