//! IEX (Investors Exchange, MIC IEXG): its feeds TOPS 1.5/1.6, DEEP 1.0 and DEEP+ 1.0, all
//! carried in the IEX Transport Protocol.
//!
//! - [`tp`]: IEX-TP v1 segments (zero-copy, bounds-checked) and the sans-IO [`tp::Tracker`]
//!   that sequences them (gaps, duplicates, restarts within a session, cut segments).
//! - [`message`]: every message type of the three feeds, as zero-copy views.
//! - [`normalize`]: every message into its envelope of the venue-neutral schema, with the
//!   venue's instrument directory (symbol -> id).
//!
//! IEX names instruments by symbol (8 bytes, space-padded); prices are `i64` with 4 implied
//! decimals; timestamps are nanoseconds since the Unix epoch.

pub mod message;
pub mod normalize;
pub mod tp;
