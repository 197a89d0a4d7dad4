//! The measuring loops, the same for every system: ping-pong latency, fixed-rate one-way
//! latency and streaming throughput, each run on two pinned threads.
//!
//! The loops allocate nothing: histograms are sized up front and recorded with
//! `saturating_record`, messages live in fixed buffers inside the channel halves.

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::BenchError;
use super::clock::BenchClock;
use super::transport::{Msg, MsgRx, MsgTx, XferError};

/// Largest latency a histogram tracks (60 s); larger samples are clamped to it.
pub const HIST_MAX_NS: u64 = 60_000_000_000;

/// A fresh latency histogram in nanoseconds with 3 significant digits.
pub fn new_histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3)
        .map_err(|e| BenchError::Internal(format!("cannot create histogram: {e:?}")))
}

/// What every run shares: the clock, the cores and how to wait.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The clock stamps come from.
    pub clock: &'a BenchClock,
    /// Core of the first thread (pinger / producer) and of the second (echo / consumer).
    pub cores: [usize; 2],
    /// Pin the threads to `cores`.
    pub pin: bool,
    /// With a core layout: the placement whose threads (these two indices) the two threads
    /// take on, applying their roles' settings; `None`: plain pinning to `cores`.
    pub roles: Option<(&'a crate::pinning::Pinning, [usize; 2])>,
    /// Yield instead of spinning (both threads share one core).
    pub yield_spin: bool,
    /// Give up when one wait sees no progress for this long.
    pub stall: Duration,
}

/// A busy-wait step that notices a failed partner thread and a stalled channel.
pub(crate) struct Spinner<'a> {
    abort: &'a AtomicBool,
    yield_spin: bool,
    stall: Duration,
    what: &'static str,
    n: u32,
    since: Option<Instant>,
}

impl<'a> Spinner<'a> {
    fn new(abort: &'a AtomicBool, ctx: &Ctx<'_>, what: &'static str) -> Self {
        Self::with(abort, ctx.stall, ctx.yield_spin, what)
    }

    /// A spinner that gives up after `stall` without progress (naming `what`) or when `abort`
    /// is set, and yields instead of spinning when `yield_spin` (threads share a cpu).
    pub(crate) fn with(
        abort: &'a AtomicBool,
        stall: Duration,
        yield_spin: bool,
        what: &'static str,
    ) -> Self {
        Spinner {
            abort,
            yield_spin,
            stall,
            what,
            n: 0,
            since: None,
        }
    }

    /// One wait step that saw nothing: spin (or yield), and now and then check for an abort
    /// or a stall.
    #[inline(always)]
    pub(crate) fn spin(&mut self) -> Result<(), BenchError> {
        if self.yield_spin {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
        self.n = self.n.wrapping_add(1);
        if self.n & 0x3fff == 0 {
            self.check()
        } else {
            Ok(())
        }
    }

    #[cold]
    #[inline(never)]
    fn check(&mut self) -> Result<(), BenchError> {
        if self.abort.load(Ordering::Relaxed) {
            return Err(BenchError::Aborted);
        }
        let now = Instant::now();
        match self.since {
            None => self.since = Some(now),
            Some(s) if now.duration_since(s) > self.stall => {
                self.abort.store(true, Ordering::Relaxed);
                return Err(BenchError::Stalled {
                    what: self.what,
                    secs: self.stall.as_secs(),
                });
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Progress was made: the stall clock starts over.
    #[inline(always)]
    pub(crate) fn progressed(&mut self) {
        self.n = 0;
        self.since = None;
    }
}

/// Keeps one thread's channel halves alive until the other thread is done with its own: a half
/// dropped early could end the other's stream (a closed ring, a disconnected channel) before it
/// has read everything. Counts its thread as done when it waits, or when it is dropped without
/// having waited (an error or a panic).
struct Finish<'a> {
    done: &'a AtomicUsize,
    abort: &'a AtomicBool,
    waited: bool,
}

impl<'a> Finish<'a> {
    fn new(done: &'a AtomicUsize, abort: &'a AtomicBool) -> Self {
        Finish {
            done,
            abort,
            waited: false,
        }
    }

    /// This thread is done: waits until the other one is too (or gave up).
    fn wait(mut self) {
        self.waited = true;
        self.done.fetch_add(1, Ordering::AcqRel);
        while self.done.load(Ordering::Acquire) < 2 && !self.abort.load(Ordering::Relaxed) {
            std::thread::yield_now();
        }
    }
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        if !self.waited {
            self.done.fetch_add(1, Ordering::AcqRel);
        }
    }
}

fn xfer(system: &str, e: XferError) -> BenchError {
    BenchError::Transfer {
        system: system.to_string(),
        reason: e.to_string(),
    }
}

/// Pins the calling thread to `core` when asked; returns whether it is pinned.
fn pin(ctx: &Ctx<'_>, idx: usize) -> bool {
    match ctx.roles {
        Some((pinning, threads)) => ctx.pin && pinning.enter(threads[idx]),
        None => {
            ctx.pin && core_affinity::set_for_current(core_affinity::CoreId { id: ctx.cores[idx] })
        }
    }
}

/// Runs two closures on two threads (pinned to `ctx.cores`), sets `abort` when one fails so the
/// other gives up, and returns the first real error (not the induced `Aborted`).
fn two_threads<A, B, RA, RB>(
    ctx: &Ctx<'_>,
    abort: &AtomicBool,
    a: A,
    b: B,
) -> Result<(RA, RB, bool), BenchError>
where
    A: FnOnce() -> Result<RA, BenchError> + Send,
    B: FnOnce() -> Result<RB, BenchError> + Send,
    RA: Send,
    RB: Send,
{
    let (ra, rb) = std::thread::scope(|s| {
        let hb = s.spawn(|| {
            let pinned = pin(ctx, 1);
            let r = b();
            if r.is_err() {
                abort.store(true, Ordering::Relaxed);
            }
            (r, pinned)
        });
        let ha = s.spawn(|| {
            let pinned = pin(ctx, 0);
            let r = a();
            if r.is_err() {
                abort.store(true, Ordering::Relaxed);
            }
            (r, pinned)
        });
        (ha.join(), hb.join())
    });
    let (ra, pa) = ra.map_err(|_| BenchError::Internal("measuring thread panicked".into()))?;
    let (rb, pb) = rb.map_err(|_| BenchError::Internal("partner thread panicked".into()))?;
    match (ra, rb) {
        (Ok(x), Ok(y)) => Ok((x, y, pa && pb)),
        (Err(BenchError::Aborted), Err(e)) | (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// Ping-pong: thread 0 sends on `ping`, thread 1 echoes on `pong`; each sample is half the
/// round trip, recorded after `warmup` untimed round trips. Returns whether both were pinned.
#[allow(clippy::too_many_arguments)]
pub fn ping_pong<PT, PR, QT, QR>(
    ctx: &Ctx<'_>,
    system: &str,
    (ping_tx, ping_rx): (PT, PR),
    (pong_tx, pong_rx): (QT, QR),
    warmup: u64,
    count: u64,
    hist: &mut Histogram<u64>,
) -> Result<bool, BenchError>
where
    PT: MsgTx + Send,
    PR: MsgRx + Send,
    QT: MsgTx + Send,
    QR: MsgRx + Send,
{
    ping_pong_made(
        ctx,
        system,
        move || Ok((ping_tx, pong_rx)),
        move || Ok((ping_rx, pong_tx)),
        warmup,
        count,
        hist,
    )
}

/// [`ping_pong`] with halves made on the threads that use them (for channels whose halves
/// may not move between threads): `pinger` makes thread 0's (ping sender, pong receiver),
/// `echoer` thread 1's (ping receiver, pong sender). Both are made before either thread
/// sends.
#[allow(clippy::too_many_arguments)]
pub fn ping_pong_made<PT, PR, QT, QR, A, B>(
    ctx: &Ctx<'_>,
    system: &str,
    pinger: A,
    echoer: B,
    warmup: u64,
    count: u64,
    hist: &mut Histogram<u64>,
) -> Result<bool, BenchError>
where
    PT: MsgTx,
    PR: MsgRx,
    QT: MsgTx,
    QR: MsgRx,
    A: FnOnce() -> Result<(PT, QR), BenchError> + Send,
    B: FnOnce() -> Result<(PR, QT), BenchError> + Send,
{
    let abort = AtomicBool::new(false);
    let barrier = Barrier::new(2);
    let total = warmup + count;
    let clock = ctx.clock;
    let done = AtomicUsize::new(0);
    let pinger = || -> Result<(), BenchError> {
        let finish = Finish::new(&done, &abort);
        let made = pinger();
        barrier.wait();
        let (mut ping_tx, mut pong_rx) = made?;
        let check_seq = pong_rx.carries_seq();
        let mut spin = Spinner::new(&abort, ctx, "waiting for the echo");
        for i in 0..total {
            let t0 = clock.now();
            let m = Msg { seq: i, stamp: t0 };
            while !ping_tx.try_send(m).map_err(|e| xfer(system, e))? {
                spin.spin()?;
            }
            let echo = loop {
                if let Some(e) = pong_rx.try_recv().map_err(|e| xfer(system, e))? {
                    break e;
                }
                spin.spin()?;
            };
            let t1 = clock.now();
            spin.progressed();
            if check_seq && echo.seq != i {
                return Err(BenchError::Transfer {
                    system: system.to_string(),
                    reason: format!("echo of message {i} came back as {}", echo.seq),
                });
            }
            if i >= warmup {
                hist.saturating_record(clock.delta_ns(t0, t1) / 2);
            }
        }
        finish.wait();
        Ok(())
    };
    let echoer = || -> Result<(), BenchError> {
        let finish = Finish::new(&done, &abort);
        let made = echoer();
        barrier.wait();
        let (mut ping_rx, mut pong_tx) = made?;
        let mut spin = Spinner::new(&abort, ctx, "waiting for the ping");
        for _ in 0..total {
            let m = loop {
                if let Some(m) = ping_rx.try_recv().map_err(|e| xfer(system, e))? {
                    break m;
                }
                spin.spin()?;
            };
            spin.progressed();
            while !pong_tx.try_send(m).map_err(|e| xfer(system, e))? {
                spin.spin()?;
            }
        }
        finish.wait();
        Ok(())
    };
    two_threads(ctx, &abort, pinger, echoer).map(|(_, _, pinned)| pinned)
}

/// Fixed rate: thread 0 sends one message every `interval_ticks` (raw clock ticks) stamped with
/// its intended send time; thread 1 records `receive time - intended time`. A stalled channel
/// therefore shows in every message queued behind the stall (no coordinated omission).
/// Returns (pinned, messages lost to overruns of a broadcast ring: never recorded).
#[allow(clippy::too_many_arguments)]
pub fn fixed_rate<T: MsgTx + Send, R: MsgRx + Send>(
    ctx: &Ctx<'_>,
    system: &str,
    (tx, rx): (T, R),
    warmup: u64,
    count: u64,
    interval_ticks: u64,
    hist: &mut Histogram<u64>,
) -> Result<(bool, u64), BenchError> {
    fixed_rate_made(
        ctx,
        system,
        move || Ok(tx),
        move || Ok(rx),
        warmup,
        count,
        interval_ticks,
        hist,
    )
}

/// [`fixed_rate`] with each half made on the thread that uses it (see [`ping_pong_made`]).
#[allow(clippy::too_many_arguments)]
pub fn fixed_rate_made<T, R, MT, MR>(
    ctx: &Ctx<'_>,
    system: &str,
    make_tx: MT,
    make_rx: MR,
    warmup: u64,
    count: u64,
    interval_ticks: u64,
    hist: &mut Histogram<u64>,
) -> Result<(bool, u64), BenchError>
where
    T: MsgTx,
    R: MsgRx,
    MT: FnOnce() -> Result<T, BenchError> + Send,
    MR: FnOnce() -> Result<R, BenchError> + Send,
{
    let abort = AtomicBool::new(false);
    let barrier = Barrier::new(2);
    let total = warmup + count;
    let clock = ctx.clock;
    let interval = interval_ticks.max(1);
    let done = AtomicUsize::new(0);
    let sender = || -> Result<(), BenchError> {
        let finish = Finish::new(&done, &abort);
        let made = make_tx();
        barrier.wait();
        let mut tx = made?;
        let mut spin = Spinner::new(&abort, ctx, "sending at a fixed rate");
        // Start a little later so the receiver is surely polling.
        let start = clock.now().wrapping_add(interval.saturating_mul(16));
        for i in 0..total {
            let intended = start.wrapping_add(i.wrapping_mul(interval));
            while clock.now() < intended {
                std::hint::spin_loop();
            }
            let m = Msg {
                seq: i,
                stamp: intended,
            };
            while !tx.try_send(m).map_err(|e| xfer(system, e))? {
                spin.spin()?;
            }
            spin.progressed();
        }
        finish.wait();
        Ok(())
    };
    let receiver = || -> Result<u64, BenchError> {
        let finish = Finish::new(&done, &abort);
        let made = make_rx();
        barrier.wait();
        let mut rx = made?;
        let check_seq = rx.carries_seq();
        let mut spin = Spinner::new(&abort, ctx, "receiving at a fixed rate");
        let mut i = 0u64;
        let mut lost = 0u64;
        while i < total {
            let m = match rx.try_recv() {
                Ok(Some(m)) => m,
                Ok(None) => {
                    spin.spin()?;
                    continue;
                }
                Err(XferError::Overrun { lost: n }) => {
                    // The consumer has resynchronised; the skipped messages are counted.
                    lost += n;
                    i += n;
                    continue;
                }
                Err(e) => return Err(xfer(system, e)),
            };
            let now = clock.now();
            spin.progressed();
            if check_seq && m.seq != i {
                return Err(BenchError::Transfer {
                    system: system.to_string(),
                    reason: format!("received message {} where {i} was due", m.seq),
                });
            }
            if i >= warmup {
                hist.saturating_record(clock.delta_ns(m.stamp, now));
            }
            i += 1;
        }
        finish.wait();
        Ok(lost)
    };
    two_threads(ctx, &abort, sender, receiver).map(|(_, lost, pinned)| (pinned, lost))
}

/// Streaming throughput: thread 0 sends `count` messages as fast as the channel takes them, in
/// batches of up to `batch` (each channel's batched send), thread 1 drains them in batches of
/// up to `batch`. Returns (messages, nanoseconds from the first send to the last receive,
/// pinned).
pub fn throughput<T: MsgTx + Send, R: MsgRx + Send>(
    ctx: &Ctx<'_>,
    system: &str,
    (tx, rx): (T, R),
    count: u64,
    batch: usize,
) -> Result<(u64, u64, bool), BenchError> {
    throughput_made(ctx, system, move || Ok(tx), move || Ok(rx), count, batch)
}

/// [`throughput`] with each half made on the thread that uses it (see [`ping_pong_made`]).
pub fn throughput_made<T, R, MT, MR>(
    ctx: &Ctx<'_>,
    system: &str,
    make_tx: MT,
    make_rx: MR,
    count: u64,
    batch: usize,
) -> Result<(u64, u64, bool), BenchError>
where
    T: MsgTx,
    R: MsgRx,
    MT: FnOnce() -> Result<T, BenchError> + Send,
    MR: FnOnce() -> Result<R, BenchError> + Send,
{
    let abort = AtomicBool::new(false);
    let barrier = Barrier::new(2);
    let start = AtomicU64::new(0);
    let clock = ctx.clock;
    let done = AtomicUsize::new(0);
    let producer = || -> Result<(), BenchError> {
        let finish = Finish::new(&done, &abort);
        let made = make_tx();
        barrier.wait();
        let mut tx = made?;
        let mut spin = Spinner::new(&abort, ctx, "producing (channel stayed full)");
        start.store(clock.now(), Ordering::Relaxed);
        let mut sent = 0u64;
        while sent < count {
            let max = (count - sent).min(batch as u64) as usize;
            match tx.send_batch(sent, max).map_err(|e| xfer(system, e))? {
                0 => spin.spin()?,
                n => {
                    sent += n as u64;
                    spin.progressed();
                }
            }
        }
        finish.wait();
        Ok(())
    };
    let consumer = || -> Result<u64, BenchError> {
        let finish = Finish::new(&done, &abort);
        let made = make_rx();
        barrier.wait();
        let mut rx = made?;
        let check_seq = rx.carries_seq();
        let mut spin = Spinner::new(&abort, ctx, "consuming (channel stayed empty)");
        let mut next = 0u64;
        let mut bad: Option<(u64, u64)> = None;
        while next < count {
            let n = rx
                .recv_batch(batch, |m| {
                    if check_seq && m.seq != next && bad.is_none() {
                        bad = Some((m.seq, next));
                    }
                    next += 1;
                })
                .map_err(|e| xfer(system, e))?;
            if let Some((got, want)) = bad {
                return Err(BenchError::Transfer {
                    system: system.to_string(),
                    reason: format!("received message {got} where {want} was due"),
                });
            }
            if n == 0 {
                spin.spin()?;
            } else {
                spin.progressed();
            }
        }
        let end = clock.now();
        finish.wait();
        Ok(end)
    };
    let (_, end, pinned) = two_threads(ctx, &abort, producer, consumer)?;
    let ns = clock.delta_ns(start.load(Ordering::Relaxed), end).max(1);
    Ok((count, ns, pinned))
}

#[cfg(test)]
mod tests {
    use super::super::transport::{FloorWord, crossbeam_channel, floor, rtrb_channel};
    use super::*;

    fn ctx(clock: &BenchClock) -> Ctx<'_> {
        Ctx {
            clock,
            cores: [0, 0],
            pin: false,
            roles: None,
            yield_spin: true,
            stall: Duration::from_secs(20),
        }
    }

    #[test]
    fn every_loop_counts_what_it_was_asked_for() {
        let clock = BenchClock::new(false);
        let ctx = ctx(&clock);
        let mut h = new_histogram().unwrap();
        ping_pong(
            &ctx,
            "floor",
            floor(FloorWord::Seq, false),
            floor(FloorWord::Seq, false),
            10,
            200,
            &mut h,
        )
        .unwrap();
        assert_eq!(h.len(), 200);
        h.reset();
        ping_pong(
            &ctx,
            "rtrb",
            rtrb_channel::<64>(16),
            rtrb_channel::<64>(16),
            5,
            100,
            &mut h,
        )
        .unwrap();
        assert_eq!(h.len(), 100);
        h.reset();
        fixed_rate(
            &ctx,
            "floor",
            floor(FloorWord::Stamp, true),
            3,
            50,
            1000,
            &mut h,
        )
        .unwrap();
        assert_eq!(h.len(), 50);
        h.reset();
        fixed_rate(&ctx, "cb", crossbeam_channel::<32>(8), 0, 40, 1000, &mut h).unwrap();
        assert_eq!(h.len(), 40);
        let (n, ns, _) = throughput(&ctx, "rtrb", rtrb_channel::<64>(32), 5000, 16).unwrap();
        assert_eq!(n, 5000);
        assert!(ns > 0);
    }

    /// A sender that reports the channel closed after a few messages: both threads must stop
    /// with that error rather than hang.
    #[derive(Debug)]
    struct Failing(u64);
    impl MsgTx for Failing {
        fn try_send(&mut self, _m: Msg) -> Result<bool, XferError> {
            self.0 += 1;
            if self.0 > 3 {
                Err(XferError::Closed)
            } else {
                Ok(true)
            }
        }
    }

    #[test]
    fn a_failing_channel_stops_both_threads_with_its_error() {
        let clock = BenchClock::new(false);
        let ctx = ctx(&clock);
        let (_t, r) = rtrb_channel::<16>(4);
        let err = throughput(&ctx, "failing", (Failing(0), r), 100, 8).unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
    }
}
