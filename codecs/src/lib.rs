//! placeholder
pub mod capture;
pub mod fb;
mod generated;
pub mod itch;
pub mod moldudp64;
pub mod normalize;
pub mod retransmit;
pub mod sequencer;
pub mod soupbintcp;
