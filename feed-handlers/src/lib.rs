//! Feed handlers: exchange market data in, normalized bus streams out.
//!
//! - [`live`]: Nasdaq TotalView-ITCH 5.0 over MoldUDP64 multicast, with gap recovery
//!   (re-requests), A/B line arbitration, and a pinned receive-decode-publish loop.
//! - [`replay`]: captured sessions (ITCH files, pcap/pcapng of MoldUDP64, recordings) through
//!   the same sequencer, decoder and publisher, at full speed or at recorded pace.
//! - [`pipeline`]: the decode -> normalize -> publish step both share, generic over the
//!   [`venue`]: what a market's feed is made of (framing, decoder, instrument directory,
//!   normalizer); Nasdaq ITCH 5.0 over MoldUDP64 is the first.
//! - [`book`]: the order book builder (L3 orders -> price levels -> BBO) in preallocated
//!   storage; [`bookstream`] runs it as a bus service publishing BBO, levels and trades.
//! - [`record`]: records a bus stream to a file that replay plays back.
//! - [`exchange`]: plays a capture as a live MoldUDP64 feed with a re-request server.

pub mod book;
pub mod bookstream;
pub mod consolidate;
pub mod exchange;
pub mod live;
pub mod net;
pub mod pipeline;
pub mod record;
pub mod replay;
#[cfg(test)]
mod test_fixtures;
pub mod venue;
