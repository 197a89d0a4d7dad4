//! Operator helpers over a directory of segments: listing and removing stale ones.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::Mode;
use crate::error::SetupError;
use crate::layout::{
    HEADER_FIXED_SIZE, SLOT_ACTIVE, SLOT_CLAIMED, SLOT_SIZE, STATE_CLOSED, STATE_SUPERSEDED,
    slot_pid, slot_state,
};
use crate::segment::root::RootDir;
use crate::segment::{read_header_snapshot, segment_alive};

/// Temporary files of an interrupted `Producer::create` are removed once older than this.
const STALE_TMP_AGE: Duration = Duration::from_secs(60);

/// A segment found in a directory by [`list_segments`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// File name (the stream name).
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// Pid of the producer that created it.
    pub pid: u32,
    /// A live producer holds the segment (its lock is held).
    pub alive: bool,
    /// Producer epoch.
    pub epoch: u64,
    /// File size in bytes.
    pub size: u64,
    /// Data capacity in bytes.
    pub capacity: u64,
    /// Largest payload.
    pub max_msg_len: u32,
    /// Broadcast or lossless.
    pub mode: Mode,
    /// The producer closed the stream cleanly.
    pub closed: bool,
    /// Another segment replaced this one (only visible through old open handles; listed files
    /// are normally current).
    pub superseded: bool,
    /// Committed bytes so far (the producer's tail position).
    pub tail: u64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_unix_ns: u64,
    /// The registered (lossless) subscribers, by slot. Broadcast subscribers do not register:
    /// each keeps its own position, and none is listed.
    pub subscribers: Vec<SubscriberInfo>,
}

/// A lossless subscriber's slot in a segment, as [`list_segments`] reads it (a snapshot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriberInfo {
    /// The slot's index.
    pub slot: u32,
    /// Pid of the process that holds the slot.
    pub pid: u32,
    /// That process exists (a slot of a dead one is reaped by the producer).
    pub alive: bool,
    /// Bytes read so far: the subscriber's position in the stream.
    pub position: u64,
    /// Bytes committed that it has not read yet (the producer's tail less its position; 0
    /// when the position reads ahead of the tail, as a torn snapshot can).
    pub lag: u64,
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> SetupError {
    let path = path.to_path_buf();
    move |source| SetupError::Io { path, op, source }
}

/// Lists the valid segments in `root` (files that are not segments, and temporary files, are
/// skipped; so are links and files that fail [`RootDir`]'s checks, which no consumer would
/// open), sorted by name. A root that fails [`RootDir::open`] is an error.
pub fn list_segments(root: &Path) -> Result<Vec<SegmentInfo>, SetupError> {
    let dir = RootDir::open(root)?;
    let mut out = Vec::new();
    for name in dir.names()? {
        if name.starts_with('.') {
            continue;
        }
        let path = dir.join(&name);
        let Ok(Some(file)) = dir.open_file(&name, false) else {
            continue;
        };
        let Ok(snap) = read_header_snapshot(&file, &path) else {
            continue;
        };
        let alive = segment_alive(&file, &path)?;
        let subscribers = read_slots(&file, snap.info.max_consumers, snap.dynamic.tail);
        out.push(SegmentInfo {
            name,
            pid: snap.info.producer_pid,
            alive,
            epoch: snap.info.epoch,
            size: snap.file_len,
            capacity: snap.info.capacity,
            max_msg_len: snap.info.max_msg_len,
            mode: snap.info.mode,
            closed: snap.dynamic.state == STATE_CLOSED,
            superseded: snap.dynamic.state == STATE_SUPERSEDED,
            tail: snap.dynamic.tail,
            created_unix_ns: snap.info.created_unix_ns,
            subscribers,
            path,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The claimed and active consumer slots of a segment whose producer's tail is `tail` (a read
/// of the file, not of a mapping: a snapshot). A slot that cannot be read ends the list.
fn read_slots(file: &std::fs::File, max_consumers: u32, tail: u64) -> Vec<SubscriberInfo> {
    use std::os::unix::fs::FileExt;
    let mut out = Vec::new();
    for slot in 0..max_consumers {
        let off = HEADER_FIXED_SIZE as u64 + u64::from(slot) * SLOT_SIZE as u64;
        let mut b = [0u8; 16];
        if file.read_exact_at(&mut b, off).is_err() {
            break;
        }
        let word = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let (ctl, position) = (word(0), word(8));
        if !matches!(slot_state(ctl), SLOT_CLAIMED | SLOT_ACTIVE) {
            continue;
        }
        let pid = slot_pid(ctl);
        out.push(SubscriberInfo {
            slot,
            pid,
            alive: crate::pid_alive(pid),
            position,
            lag: tail.saturating_sub(position),
        });
    }
    out
}

/// Removes the segments in `root` whose producer is gone (dead or closed: nobody holds the
/// segment's lock), and temporary files left by interrupted creations. Never touches files
/// that are not segments, nor segments with a live producer, nor links (a link is removed
/// only by name, never followed). Consumers that still map a removed segment keep reading it.
/// Returns the removed paths. A root that fails [`RootDir::open`] is an error.
pub fn remove_stale(root: &Path) -> Result<Vec<PathBuf>, SetupError> {
    let dir = RootDir::open(root)?;
    let mut removed = Vec::new();
    for name in dir.names()? {
        if !dir.is_file(&name) {
            continue;
        }
        let path = dir.join(&name);
        let Ok(Some(file)) = dir.open_file(&name, false) else {
            continue;
        };
        let is_tmp = name.starts_with('.') && name.contains(".tmp.");
        if is_tmp {
            let old = file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE_TMP_AGE);
            if !old {
                continue;
            }
        } else if name.starts_with('.') || read_header_snapshot(&file, &path).is_err() {
            continue;
        }
        if crate::segment::lock_if_unowned(&file, &dir, &name)? {
            match dir.remove(&name) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, "remove")(e)),
            }
        }
    }
    removed.sort();
    Ok(removed)
}
