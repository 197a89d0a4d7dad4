//! Nasdaq: TotalView-ITCH 5.0, carried in MoldUDP64 packets (live multicast, or a capture) or
//! SoupBinTCP sessions, normalized into the bus schema.
//!
//! - [`itch`]: zero-copy, bounds-checked decoding of every ITCH 5.0 message type.
//! - [`normalize`]: every ITCH message into its normalized envelope, field for field.
//! - [`soupbintcp`]: the SoupBinTCP framing of Nasdaq's TCP sessions.
//!
//! The MoldUDP64 framing and its sequencer live beside this folder
//! ([`crate::moldudp64`], [`crate::sequencer`]): the bus carries its own streams between
//! hosts in the same framing.

pub mod itch;
pub mod normalize;
pub mod soupbintcp;
