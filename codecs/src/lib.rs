//! placeholder
pub mod itch;
pub mod moldudp64;
pub mod soupbintcp;
