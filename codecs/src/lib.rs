//! placeholder
pub mod itch;
