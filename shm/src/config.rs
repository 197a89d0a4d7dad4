//! Configuration values: ring geometry and mode, consumer options, wait strategies.

use std::path::PathBuf;

use crate::error::SetupError;
use crate::layout::{MAX_CONSUMER_SLOTS, PADDING_FLAG, header_size_for, record_size};

/// Smallest data region accepted (bytes). Loom builds accept tiny rings so that the model
/// checker can explore wrap-around in a few records.
#[cfg(not(loom))]
pub const MIN_CAPACITY: usize = 4096;
/// Smallest data region accepted (bytes). Loom builds accept tiny rings so that the model
/// checker can explore wrap-around in a few records.
#[cfg(loom)]
pub const MIN_CAPACITY: usize = 64;
/// Largest data region accepted (bytes): 1 TiB.
pub const MAX_CAPACITY: usize = 1 << 40;

/// What the producer does when the ring is full. Fixed per segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The producer never waits: it overwrites the oldest records. A consumer that falls more
    /// than `capacity - capacity/8 - 2 * largest record` bytes behind (about 7/8 of the ring
    /// with small records) may be lapped; it is told exactly how many records it lost
    /// ([`PollError::Overrun`](crate::PollError::Overrun)).
    Broadcast,
    /// Registered consumers (one slot each) are never overwritten: when the slowest one is a
    /// full ring behind, [`Producer::claim`](crate::Producer::claim) returns
    /// [`ClaimError::BackPressured`](crate::ClaimError::BackPressured) (it never blocks). A slot
    /// whose process has died is reaped by the producer, so a dead consumer cannot stall the
    /// stream. With no registered consumer the ring behaves like broadcast.
    Lossless,
}

/// Where a new consumer starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StartAt {
    /// The oldest record still retained in the ring.
    Oldest,
    /// The last committed record is the first delivered.
    Newest,
    /// Only records committed after joining (the live edge).
    Next,
}

/// What a lapped consumer does after an overrun.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resync {
    /// Continue with the oldest record still retained (loses the fewest records, but a consumer
    /// that stays slow will be lapped again soon).
    Oldest,
    /// Continue with the newest committed record.
    Newest,
}

/// How [`Consumer::wait`](crate::Consumer::wait) waits for data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitStrategy {
    /// Spin on the tail with a CPU pause hint. Lowest latency, burns a core.
    BusySpin,
    /// Spin `spins` times, then `sched_yield` between checks.
    SpinThenYield {
        /// Spins before the first yield.
        spins: u32,
    },
    /// Sleep on a futex in the segment header (for consumers that are not latency-critical).
    /// The producer issues a `FUTEX_WAKE` only when a waiter is registered, and every sleep is
    /// bounded (a few milliseconds), so a missed wake costs latency, never a hang.
    Blocking,
    /// After each check that finds nothing, spin for `pause` without touching the ring, then
    /// check again (the first check comes after a pause, too: call it after a poll found
    /// nothing). A consumer that reads as fast as its producer writes otherwise pulls every
    /// line (and the tail) across while the producer is still writing it, one cross-core
    /// transfer per record on each side; pausing lets records pile up and be read in batches.
    /// For throughput (a replay, a catch-up): each record waits up to `pause` longer.
    Batching {
        /// Time between checks (a few microseconds).
        pause: std::time::Duration,
    },
}

impl WaitStrategy {
    /// A pause for [`Batching`](Self::Batching) that suits a consumer on its own cpu: about 150
    /// envelopes of a stream at ring speed pile up meanwhile.
    pub const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_micros(2);
}

/// Geometry and behaviour of a ring, fixed when the segment is created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Data bytes; a power of two, at least [`MIN_CAPACITY`].
    pub capacity: usize,
    /// Largest payload of one record, in bytes. A record (16-byte header plus payload, rounded
    /// up to 8) must fit in a quarter of `capacity`.
    pub max_msg_len: u32,
    /// Broadcast or lossless.
    pub mode: Mode,
    /// Number of lossless-consumer slots (each one 128-byte line of the header); at most 1024.
    pub max_consumers: u32,
    /// Permission bits of the segment file (default `0o600`). Bits that let group or others
    /// write (`0o022`) are refused: a segment must be writable by its owner only.
    pub file_mode: u32,
    /// Touch every page of the mapping at create/open, so no page fault lands on the hot path.
    pub prefault: bool,
    /// `mlock` the mapping; fails with [`SetupError::MlockFailed`] if not permitted.
    pub mlock: bool,
}

impl Default for RingConfig {
    /// Broadcast, 1 MiB of data, 64 KiB maximum payload, 16 consumer slots, mode `0o600`.
    fn default() -> Self {
        RingConfig {
            capacity: 1 << 20,
            max_msg_len: 64 * 1024,
            mode: Mode::Broadcast,
            max_consumers: 16,
            file_mode: 0o600,
            prefault: false,
            mlock: false,
        }
    }
}

impl RingConfig {
    /// Checks every constraint; the error names the offending field.
    pub fn validate(&self) -> Result<(), SetupError> {
        let bad = |m: String| Err(SetupError::BadConfig(m));
        if !self.capacity.is_power_of_two()
            || self.capacity < MIN_CAPACITY
            || self.capacity > MAX_CAPACITY
        {
            return bad(format!(
                "capacity {} must be a power of two in {MIN_CAPACITY}..={MAX_CAPACITY}",
                self.capacity
            ));
        }
        if self.max_msg_len >= PADDING_FLAG
            || record_size(self.max_msg_len) > (self.capacity / 4) as u64
        {
            return bad(format!(
                "max_msg_len {} too large for capacity {}: a record (16 + len, rounded up to 8) \
                 must fit in capacity / 4",
                self.max_msg_len, self.capacity
            ));
        }
        if self.max_consumers > MAX_CONSUMER_SLOTS {
            return bad(format!(
                "max_consumers {} exceeds {MAX_CONSUMER_SLOTS}",
                self.max_consumers
            ));
        }
        if self.mode == Mode::Lossless && self.max_consumers == 0 {
            return bad("a lossless ring needs max_consumers >= 1".into());
        }
        if self.file_mode & !0o7777 != 0 {
            return bad(format!(
                "file_mode {:#o} has bits outside 0o7777",
                self.file_mode
            ));
        }
        if self.file_mode & 0o022 != 0 {
            return bad(format!(
                "file_mode {:#o} lets group or others write the segment; consumers refuse such \
                 segments (use 0o600, or 0o640 to let the group read)",
                self.file_mode
            ));
        }
        Ok(())
    }
}

/// How a consumer joins a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConsumerOptions {
    /// Where reading starts.
    pub start: StartAt,
    /// What to do when lapped (broadcast rings, or unregistered readers of lossless rings).
    pub resync: Resync,
    /// On a lossless ring, register a consumer slot so that the producer never overwrites what
    /// this consumer has not read. Ignored on broadcast rings. An unregistered reader of a
    /// lossless ring reads like a broadcast consumer (it may be lapped).
    pub lossless: bool,
}

impl Default for ConsumerOptions {
    /// `start: Next, resync: Oldest, lossless: true`.
    fn default() -> Self {
        ConsumerOptions {
            start: StartAt::Next,
            resync: Resync::Oldest,
            lossless: true,
        }
    }
}

/// The directory for segments when none is given: `$MDBUS_SHM_ROOT` if set, otherwise
/// `/dev/shm/mdbus-<user>/` (`<user>` from `$USER`, else the numeric uid). Point it at a
/// hugetlbfs mount to back rings with huge pages.
///
/// The name is predictable, so it is checked, never trusted: a root must be a directory owned
/// by this process's user and not writable by group or others (see
/// [`RootDir`](crate::RootDir)); one that another user created first is refused with
/// [`SetupError::Untrusted`], naming its owner and mode.
pub fn default_root() -> PathBuf {
    if let Some(root) = std::env::var_os("MDBUS_SHM_ROOT")
        && !root.is_empty()
    {
        return PathBuf::from(root);
    }
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty() && !u.contains('/'))
        .unwrap_or_else(|| crate::segment::current_uid().to_string());
    PathBuf::from(format!("/dev/shm/mdbus-{user}"))
}

/// Validated numbers the ring code works with (copied out of the header once, never re-read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub(crate) capacity: u64,
    pub(crate) mask: u64,
    pub(crate) max_msg_len: u32,
    pub(crate) mode: Mode,
    pub(crate) max_consumers: u32,
    /// How far `tail_intent` is pushed ahead of the claim that needed it.
    pub(crate) step: u64,
    pub(crate) header_size: usize,
    pub(crate) epoch: u64,
    pub(crate) producer_pid: u32,
}

impl Geometry {
    pub(crate) fn new(
        capacity: u64,
        max_msg_len: u32,
        mode: Mode,
        max_consumers: u32,
        epoch: u64,
        producer_pid: u32,
    ) -> Geometry {
        Geometry {
            capacity,
            mask: capacity - 1,
            max_msg_len,
            mode,
            max_consumers,
            step: capacity / 8,
            header_size: header_size_for(max_consumers),
            epoch,
            producer_pid,
        }
    }

    pub(crate) fn from_config(cfg: &RingConfig, epoch: u64, producer_pid: u32) -> Geometry {
        Geometry::new(
            cfg.capacity as u64,
            cfg.max_msg_len,
            cfg.mode,
            cfg.max_consumers,
            epoch,
            producer_pid,
        )
    }

    pub(crate) fn segment_len(&self) -> usize {
        self.header_size + self.capacity as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        RingConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_configs_are_refused() {
        let base = RingConfig {
            capacity: 4096,
            max_msg_len: 64,
            ..RingConfig::default()
        };
        for cfg in [
            RingConfig {
                capacity: 5000,
                ..base.clone()
            },
            RingConfig {
                capacity: 1024,
                ..base.clone()
            },
            RingConfig {
                max_msg_len: 1024,
                ..base.clone()
            },
            RingConfig {
                max_consumers: 5000,
                ..base.clone()
            },
            RingConfig {
                mode: Mode::Lossless,
                max_consumers: 0,
                ..base.clone()
            },
            RingConfig {
                file_mode: 0o10000,
                ..base.clone()
            },
            RingConfig {
                file_mode: 0o620,
                ..base.clone()
            },
            RingConfig {
                file_mode: 0o602,
                ..base.clone()
            },
        ] {
            assert!(
                matches!(cfg.validate(), Err(SetupError::BadConfig(_))),
                "{cfg:?}"
            );
        }
        base.validate().unwrap();
        // The largest payload that still fits a quarter of the ring.
        RingConfig {
            max_msg_len: 1024 - 16,
            ..base
        }
        .validate()
        .unwrap();
    }
}
