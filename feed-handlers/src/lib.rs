//! placeholder
pub mod book;
pub mod live;
pub mod pipeline;
