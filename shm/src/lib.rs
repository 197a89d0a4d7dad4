//! Shared-memory single-producer rings for mdbus.
//!
//! One stream is one ring in one segment: a memory-mapped file (by default under
//! `/dev/shm/mdbus-<user>/`, see [`default_root`]) holding a header and a data region of
//! variable-length records. One [`Producer`] writes (claim in place, commit), any number of
//! [`Consumer`]s in any process read zero-copy. Nothing on the publish or poll path allocates,
//! locks or makes a system call.
//!
//! * **Broadcast** rings ([`Mode::Broadcast`]) never make the producer wait. A consumer that
//!   falls behind is lapped and told exactly how many records it lost
//!   ([`PollError::Overrun`]); in broadcast mode a poll callback's view is speculative and is
//!   validated after the callback returns (the same contract as Aeron's broadcast receiver);
//!   [`Consumer::poll_copy`] returns only validated copies.
//! * **Lossless** rings ([`Mode::Lossless`]) give each registered consumer a slot; the producer
//!   never overwrites what a registered consumer has not read and reports
//!   [`ClaimError::BackPressured`] instead (it never blocks). Dead consumers are reaped.
//! * A record cut short by a producer crash is never visible: readers read only below the
//!   committed tail. A restarted producer replaces the file with a new epoch
//!   ([`PollError::NewEpoch`], [`Consumer::reopen`]); [`Consumer::producer_status`] tells alive,
//!   dead, closed and replaced apart.
//!
//! A segment directory (a bus root) belongs to one user: it must be owned by this process's
//! user and not writable by group or others, and so must every segment in it; links in it are
//! never followed, and a segment's space is reserved when it is created, so a full filesystem
//! is a setup error rather than a `SIGBUS` later (see [`RootDir`]).
//!
//! The layout of a segment is specified in [`layout::Header`]; `README.md` beside this crate
//! describes the protocol and its guarantees.
//!
//! # Example
//!
//! A producer and a consumer of a file-backed ring (normally in two processes):
//!
//! ```
//! use mdbus_shm::{Consumer, ConsumerOptions, PollError, Producer, RingConfig, StartAt};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("mdbus-shm-doc-{}", std::process::id()));
//! let path = dir.join("quotes");
//! let cfg = RingConfig { capacity: 64 * 1024, max_msg_len: 1024, ..RingConfig::default() };
//! let mut producer = Producer::create(&path, &cfg)?;
//!
//! let opts = ConsumerOptions { start: StartAt::Oldest, ..ConsumerOptions::default() };
//! let mut consumer = Consumer::open(&path, &opts)?;
//!
//! // Zero-copy publish: claim room in the ring, write in place, commit.
//! let mut claim = producer.claim(5, 1)?;
//! claim.copy_from_slice(b"hello");
//! assert_eq!(claim.commit(), 0);
//! // Or copy in.
//! assert_eq!(producer.publish(2, b"world")?, 1);
//!
//! let mut seen = Vec::new();
//! while consumer.poll(|r| seen.push((r.seq(), r.msg_type(), r.payload().to_vec())))? {}
//! assert_eq!(seen, [(0, 1, b"hello".to_vec()), (1, 2, b"world".to_vec())]);
//!
//! // Dropping the producer closes the stream: the consumer learns it once it has read all.
//! drop(producer);
//! assert_eq!(consumer.poll(|_| {}), Err(PollError::Closed));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! In-process rings ([`in_process`]) have the same layout on the heap; they serve tests (they
//! run under miri) and streams that stay inside one process.

#![deny(unsafe_op_in_unsafe_fn)]
// Loom builds leave out the file backing, so parts of the layout code are unused there.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

#[cfg(not(loom))]
mod admin;
mod config;
#[cfg(not(loom))]
pub mod counters;
mod error;
mod host;
pub mod layout;
mod ring;
mod segment;
mod sync;

#[cfg(not(loom))]
pub use admin::{SegmentInfo, SubscriberInfo, list_segments, remove_stale};
pub use config::{
    ConsumerOptions, MAX_CAPACITY, MIN_CAPACITY, Mode, Resync, RingConfig, StartAt, WaitStrategy,
    default_root,
};
pub use error::{ClaimError, PollError, RingWord, SetupError};
pub use host::{MAX_STREAM_NAME, check_stream_name, pid_alive, unix_ns};
#[cfg(not(loom))]
pub use ring::InPlace;
pub use ring::{
    BatchClaim, Claim, Consumer, ConsumerFactory, ConsumerStats, EpochChange, Producer,
    ProducerStatus, Record, RecordInfo, in_process,
};
#[cfg(not(loom))]
pub use segment::root::RootDir;
