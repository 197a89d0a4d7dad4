//! Wire formats of the market-data bus: the normalized schema, the venues' protocols, the
//! framing and sequencing of packet streams, and capture files.
//!
//! - [`fb`]: the normalized FlatBuffers schema every bus stream carries (the `mdbus-schema`
//!   crate in `schema/`, re-exported): typed zero-copy views, a no-allocation encoder.
//! - [`nasdaq`]: TotalView-ITCH 5.0 decoding and its normalization into the schema.
//! - [`moldudp64`], [`sequencer`], [`retransmit`]: MoldUDP64 packets, the sans-IO sequencer
//!   (gap detection, re-requests, A/B arbitration) and the retransmission store; both a
//!   venue's feed and the bus's own host-to-host transport use them.
//! - [`iex`]: IEX-TP framing and sequencing, TOPS, DEEP and DEEP+ decoding.
//! - [`capture`]: capture files (ITCH files, pcap, pcapng) read packet by packet.
pub mod capture;
pub mod directory;
pub use mdbus_schema as fb;
pub mod iex;
pub mod moldudp64;
pub mod nasdaq;
pub mod retransmit;
pub mod sequencer;
