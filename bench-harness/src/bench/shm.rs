//! The mdbus shared-memory ring as a benchmark channel: a real segment file under a temporary
//! folder (on `/dev/shm` where it exists), memory-mapped by a [`Producer`] and a [`Consumer`]
//! exactly as two processes would map it, used here from two threads of one process.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use mdbus_shm::{
    ClaimError, Consumer, ConsumerOptions, Mode, PollError, Producer, Resync, RingConfig, StartAt,
};

use super::BenchError;
use super::ring::ShmMode;
use super::transport::{Msg, MsgRx, MsgTx, XferError, decode, encode, filled};

/// The `msg_type` tag of the harness's records.
const MSG_TYPE: u32 = 1;

/// Where the benchmark's segments live, and how they are configured.
#[derive(Debug)]
pub struct ShmEnv {
    /// Removed (with everything in it) on drop, when the folder is ours.
    _tmp: Option<tempfile::TempDir>,
    root: PathBuf,
    capacity: usize,
    msg_bytes: usize,
    mode: ShmMode,
    next: AtomicU64,
    /// Segment files made in a folder given by the user, removed on drop.
    made: Mutex<Vec<PathBuf>>,
}

fn setup(path: &Path, e: impl std::fmt::Display) -> BenchError {
    BenchError::ShmSetup {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl ShmEnv {
    /// Segments go into `root`, or into a fresh temporary folder under `/dev/shm` (the system
    /// temporary folder where there is no `/dev/shm`).
    pub fn new(
        root: Option<&Path>,
        capacity: usize,
        msg_bytes: usize,
        mode: ShmMode,
    ) -> Result<ShmEnv, BenchError> {
        let (tmp, root) = match root {
            Some(r) => {
                std::fs::create_dir_all(r).map_err(|e| setup(r, e))?;
                (None, r.to_path_buf())
            }
            None => {
                let shm = Path::new("/dev/shm");
                let base = if shm.is_dir() {
                    shm.to_path_buf()
                } else {
                    std::env::temp_dir()
                };
                let t = tempfile::Builder::new()
                    .prefix("mdbus-bench-")
                    .tempdir_in(&base)
                    .map_err(|e| setup(&base, e))?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        Ok(ShmEnv {
            _tmp: tmp,
            root,
            capacity,
            msg_bytes,
            mode,
            next: AtomicU64::new(0),
            made: Mutex::new(Vec::new()),
        })
    }

    /// A new segment (with a producer and one consumer starting at its oldest record), in the
    /// configured mode, or lossless when `force_lossless` (the throughput phase).
    pub fn channel<const N: usize>(
        &self,
        force_lossless: bool,
    ) -> Result<(MdbusTx<N>, MdbusRx), BenchError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self
            .root
            .join(format!("bench-{}-{n}.ring", std::process::id()));
        let lossless = force_lossless || self.mode == ShmMode::Lossless;
        let cfg = RingConfig {
            capacity: self.capacity,
            max_msg_len: self.msg_bytes as u32,
            mode: if lossless {
                Mode::Lossless
            } else {
                Mode::Broadcast
            },
            max_consumers: 1,
            prefault: true,
            ..RingConfig::default()
        };
        let p = Producer::create(&path, &cfg).map_err(|e| setup(&path, e))?;
        if self._tmp.is_none()
            && let Ok(mut made) = self.made.lock()
        {
            made.push(path.clone());
        }
        let opts = ConsumerOptions {
            start: StartAt::Oldest,
            resync: Resync::Oldest,
            lossless,
        };
        let c = Consumer::open(&path, &opts).map_err(|e| setup(&path, e))?;
        Ok((MdbusTx { p, buf: filled() }, MdbusRx { c }))
    }
}

impl Drop for ShmEnv {
    fn drop(&mut self) {
        if let Ok(made) = self.made.lock() {
            for p in made.iter() {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Sending half: a ring [`Producer`] publishing `N`-byte records.
#[derive(Debug)]
pub struct MdbusTx<const N: usize> {
    p: Producer,
    buf: [u8; N],
}

/// Receiving half: a ring [`Consumer`].
#[derive(Debug)]
pub struct MdbusRx {
    c: Consumer,
}

impl<const N: usize> MsgTx for MdbusTx<N> {
    /// `publish`, then `hand_off`: a single send is followed by a wait (ping-pong, fixed
    /// rate), which is where a publisher hands its records off.
    #[inline]
    fn try_send(&mut self, m: Msg) -> Result<bool, XferError> {
        encode(&mut self.buf, m);
        match self.p.publish(MSG_TYPE, &self.buf) {
            Ok(_) => {
                self.p.hand_off();
                Ok(true)
            }
            Err(ClaimError::BackPressured) => Ok(false),
            Err(ClaimError::TooLarge { .. }) => Err(XferError::TooLarge),
        }
    }

    /// `claim_batch`: the records written in place (`BatchClaim::fill`), one commit (one `tail`
    /// store).
    #[inline]
    fn send_batch(&mut self, first: u64, max: usize) -> Result<usize, XferError> {
        match self.p.claim_batch(N, MSG_TYPE, max) {
            Ok(mut batch) => {
                let n = batch.len();
                let buf = &self.buf;
                batch.fill(|k, b| {
                    b.copy_from_slice(buf);
                    encode(
                        b,
                        Msg {
                            seq: first + k as u64,
                            stamp: 0,
                        },
                    );
                });
                batch.commit();
                Ok(n)
            }
            Err(ClaimError::BackPressured) => Ok(0),
            Err(ClaimError::TooLarge { .. }) => Err(XferError::TooLarge),
        }
    }
}

fn poll_err(e: PollError) -> XferError {
    match e {
        PollError::Overrun { lost, .. } => XferError::Overrun { lost },
        PollError::NewEpoch { .. } => XferError::NewEpoch,
        PollError::Closed => XferError::Closed,
        _ => XferError::Corrupt,
    }
}

impl MsgRx for MdbusRx {
    #[inline]
    fn try_recv(&mut self) -> Result<Option<Msg>, XferError> {
        let mut got: Result<Option<Msg>, XferError> = Ok(None);
        self.c
            .poll(|r| got = decode(r.payload()).map(Some))
            .map_err(poll_err)?;
        got
    }

    /// A batch that ends at the end of a closed stream delivers its records; the close is
    /// reported by the next call.
    #[inline]
    fn recv_batch<F: FnMut(Msg)>(&mut self, max: usize, mut f: F) -> Result<usize, XferError> {
        let mut bad = None;
        let mut delivered = 0;
        let r = self.c.poll_batch(max, |r| {
            delivered += 1;
            match decode(r.payload()) {
                Ok(m) => f(m),
                Err(e) => bad = Some(e),
            }
        });
        let n = match r {
            Err(PollError::Closed) if delivered > 0 => delivered,
            r => r.map_err(poll_err)?,
        };
        match bad {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }
}
