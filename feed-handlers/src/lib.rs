//! placeholder
pub mod book;
