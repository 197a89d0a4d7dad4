//! Error values of the crate.
//!
//! Setup-time errors only: nothing here sits on a hot path, so the errors carry owned strings
//! that name the file, the core or the limit involved.

use std::io;
use std::path::PathBuf;

/// An error from reading the host, loading or saving a layout, or applying a runtime setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TuneError {
    /// A file under the [`SysRoot`](crate::SysRoot) could not be read. `path` is the path as
    /// seen on the host (for example `/sys/devices/system/cpu/online`).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path as seen on the host.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file was read but its contents did not parse.
    #[error("cannot parse {path}: {reason}")]
    Parse {
        /// The path as seen on the host, or the file path for layouts and fact files.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// A layout or facts file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file that could not be written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Pinning the current thread to a core failed.
    #[error("cannot pin this thread to cpu {core}: {reason}")]
    Pin {
        /// The requested cpu.
        core: usize,
        /// Why it failed.
        reason: String,
    },
    /// The affinity call succeeded but the kernel reports a different mask afterwards.
    #[error("pinned this thread to cpu {core} but sched_getaffinity reports cpus {actual:?}")]
    PinNotApplied {
        /// The requested cpu.
        core: usize,
        /// The cpus the kernel reports for the thread.
        actual: Vec<usize>,
    },
    /// The requested SCHED_FIFO priority is outside what the kernel accepts.
    #[error("SCHED_FIFO priority {priority} is outside {min}..={max}")]
    InvalidPriority {
        /// The requested priority.
        priority: i32,
        /// Lowest accepted priority.
        min: i32,
        /// Highest accepted priority.
        max: i32,
    },
    /// A scheduler call failed for a reason other than missing permission.
    #[error("{call} failed: {source}")]
    Sched {
        /// The libc call that failed.
        call: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `mlockall` failed; the message carries the memlock limit and how to raise it.
    #[error(
        "mlockall(MCL_CURRENT|MCL_FUTURE) failed: {source}; memlock limit {limit}; raise it with \
         `ulimit -l unlimited`, LimitMEMLOCK=infinity in the systemd unit, \
         `--ulimit memlock=-1` for Docker, or grant CAP_IPC_LOCK"
    )]
    LockMemory {
        /// The OS error (EPERM or ENOMEM in practice).
        #[source]
        source: io::Error,
        /// The memlock limit in force, as text ("soft 8 MiB, hard 8 MiB").
        limit: String,
    },
    /// A thread name could not be set.
    #[error("cannot name this thread {name:?}: {reason}")]
    ThreadName {
        /// The requested name.
        name: String,
        /// Why it failed.
        reason: String,
    },
    /// [`apply_role`](crate::apply_role) was asked for a role the layout does not have.
    #[error("role {role:?} is not in the layout (roles: {known})")]
    UnknownRole {
        /// The requested role.
        role: String,
        /// The roles the layout has, comma separated.
        known: String,
    },
}

impl TuneError {
    /// True when this is a [`TuneError::Read`] of a file that does not exist.
    pub fn is_missing(&self) -> bool {
        matches!(self, TuneError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// An error from [`plan`](crate::plan()) or from parsing a role list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// No roles were given.
    #[error("no roles to place")]
    NoRoles,
    /// The topology has no online cpu.
    #[error("the topology has no online cpu")]
    NoCpus,
    /// A role asked for zero instances.
    #[error("role {0:?} has count 0")]
    ZeroCount(String),
    /// Two roles have the same name.
    #[error("role {0:?} is given twice")]
    DuplicateRole(String),
    /// A role name has characters other than ASCII letters, digits, `_` and `-`.
    #[error("role name {0:?} must be ASCII letters, digits, '_' or '-'")]
    BadName(String),
    /// A role kind is not one of the known kinds.
    #[error(
        "unknown role kind {0:?} (known: feed_handler, receiver, book_builder, sender, strategy, \
         background)"
    )]
    UnknownKind(String),
    /// A role in a `--roles` list did not parse.
    #[error("cannot parse role {spec:?}: {reason}")]
    BadRoleSpec {
        /// The offending item.
        spec: String,
        /// What was wrong.
        reason: String,
    },
    /// The preferred NUMA node has no usable core.
    #[error("NUMA node {0} has no cpu outside the housekeeping core")]
    UnknownNode(usize),
}
