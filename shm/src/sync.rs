//! The one seam through which the ring reaches atomics.
//!
//! Everything that orders memory between the producer and its consumers (positions, fences,
//! spin hints) is imported from here. Normally these are the `core`/`std` items; under
//! `--cfg loom` they are loom's model-checked replacements, so the very same protocol code is
//! explored by the loom tests (`tests/loom.rs`).

#[cfg(not(loom))]
pub(crate) use core::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

#[cfg(loom)]
pub(crate) use loom::hint::spin_loop;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;
