//! placeholder
pub mod book;
pub mod bookstream;
pub mod record;
pub mod live;
pub mod pipeline;
pub mod replay;
