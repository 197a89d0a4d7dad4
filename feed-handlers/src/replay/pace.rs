//! Replay pacing and timestamps: how fast messages are released, and the clock that stamps
//! them.

use core::fmt;
use core::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::pipeline::Idle;
use mdbus_shm::unix_ns;

/// How fast a replay releases messages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// As fast as the pipeline goes.
    Max,
    /// At the recorded pace divided by this factor (`1x` recorded pace, `10x` ten times
    /// faster), following the exchange timestamps of ITCH files, the capture timestamps of
    /// pcap files and the recording timestamps of recordings.
    Factor(f64),
    /// At a fixed rate, messages per second, whatever the timestamps say.
    Rate(u64),
}

/// A [`Speed`] that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad speed {0:?}: use max, a factor such as 1x, 10x or 0.5x, or a rate such as 1000000/s")]
pub struct BadSpeed(String);

impl FromStr for Speed {
    type Err = BadSpeed;

    /// `max`, `<factor>x` (a positive number), or `<n>/s` (a positive integer).
    fn from_str(s: &str) -> Result<Speed, BadSpeed> {
        let t = s.trim();
        let bad = || BadSpeed(s.to_owned());
        if t.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        if let Some(f) = t.strip_suffix(['x', 'X']) {
            let f: f64 = f.trim().parse().map_err(|_| bad())?;
            return if f.is_finite() && f > 0.0 {
                Ok(Speed::Factor(f))
            } else {
                Err(bad())
            };
        }
        if let Some(r) = t.strip_suffix("/s") {
            let r: u64 = r.trim().replace('_', "").parse().map_err(|_| bad())?;
            return if r > 0 {
                Ok(Speed::Rate(r))
            } else {
                Err(bad())
            };
        }
        Err(bad())
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speed::Max => write!(f, "max"),
            Speed::Factor(x) => write!(f, "{x}x"),
            Speed::Rate(r) => write!(f, "{r}/s"),
        }
    }
}

/// A time of day, nanoseconds since midnight (ITCH timestamps are nanoseconds since midnight,
/// exchange local time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(pub u64);

/// A [`TimeOfDay`] that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad time of day {0:?}: use HH:MM, HH:MM:SS or HH:MM:SS.fraction (00:00 to 24:00)")]
pub struct BadTime(String);

impl FromStr for TimeOfDay {
    type Err = BadTime;

    fn from_str(s: &str) -> Result<TimeOfDay, BadTime> {
        let bad = || BadTime(s.to_owned());
        let mut parts = s.trim().split(':');
        let num = |p: Option<&str>| -> Result<u64, BadTime> {
            let p = p.ok_or_else(bad)?;
            if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let h = num(parts.next())?;
        let m = num(parts.next())?;
        let (sec, frac_ns) = match parts.next() {
            None => (0, 0),
            Some(p) => {
                let (whole, frac) = p.split_once('.').unwrap_or((p, ""));
                let sec = num(Some(whole))?;
                if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let ns = if frac.is_empty() {
                    0
                } else {
                    let digits: u64 = frac.parse().map_err(|_| bad())?;
                    digits * 10u64.pow(9 - frac.len() as u32)
                };
                (sec, ns)
            }
        };
        if parts.next().is_some() || m > 59 || sec > 59 || h > 24 {
            return Err(bad());
        }
        let ns = ((h * 60 + m) * 60 + sec) * 1_000_000_000 + frac_ns;
        if ns > 24 * 3600 * 1_000_000_000 {
            return Err(bad());
        }
        Ok(TimeOfDay(ns))
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0 / 1_000_000_000;
        let ns = self.0 % 1_000_000_000;
        write!(f, "{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)?;
        if ns != 0 {
            write!(f, ".{ns:09}")?;
        }
        Ok(())
    }
}

/// The clock that stamps replayed messages: the TSC (through a calibrated [`quanta::Clock`];
/// the OS monotonic clock where the TSC is not usable) anchored to the Unix epoch once, so a
/// stamp is a cheap counter read and still comparable with `recv_ts_ns` of the schema.
///
/// Clones share the anchor: a feed thread and a strategy thread holding clones convert raw
/// readings identically, so the difference of their stamps is an exact interval on one clock.
#[derive(Clone, Debug)]
pub struct StampClock {
    clock: quanta::Clock,
    anchor_raw: u64,
    anchor_unix_ns: u64,
}

impl Default for StampClock {
    fn default() -> Self {
        Self::new()
    }
}

impl StampClock {
    /// Calibrates (the first time in a process, a few milliseconds) and anchors the clock.
    pub fn new() -> StampClock {
        let clock = quanta::Clock::new();
        let anchor_unix_ns = unix_ns();
        let anchor_raw = clock.raw();
        StampClock {
            clock,
            anchor_raw,
            anchor_unix_ns,
        }
    }

    /// A raw counter reading.
    #[inline(always)]
    pub fn raw(&self) -> u64 {
        self.clock.raw()
    }

    /// The Unix time (ns) of a raw reading.
    #[inline(always)]
    pub fn unix_ns_of(&self, raw: u64) -> u64 {
        self.anchor_unix_ns + self.clock.delta_as_nanos(self.anchor_raw, raw)
    }

    /// Now, in ns since the Unix epoch.
    #[inline(always)]
    pub fn now_unix_ns(&self) -> u64 {
        self.unix_ns_of(self.raw())
    }

    /// Nanoseconds from raw reading `start` to `end` (0 if `end` is earlier).
    #[inline(always)]
    pub fn delta_ns(&self, start: u64, end: u64) -> u64 {
        self.clock.delta_as_nanos(start, end)
    }
}

/// Releases messages at a [`Speed`]: each call to [`wait`](Pacer::wait) returns when the
/// message it names is due. Sleeps when the next message is far, then spins; by default it
/// yields the core between checks so a thread sharing the core still runs, or, on a core of
/// its own ([`spin_only`](Pacer::spin_only)), spins without yielding (a yield may hand the
/// core to another process for a whole time slice).
#[derive(Debug)]
pub struct Pacer {
    speed: Speed,
    clock: StampClock,
    /// (data time, raw clock) of the first paced message.
    origin: Option<(u64, u64)>,
    released: u64,
    /// Largest lateness seen, ns (how far behind schedule a message was released).
    max_behind_ns: u64,
    /// Yield the core while early (after a few spins).
    yield_when_early: bool,
    /// Set from elsewhere (a signal) to cut a wait short: see [`interrupted`](Self::interrupted).
    interrupt: Option<Arc<AtomicBool>>,
}

impl Pacer {
    /// A pacer at `speed`, timing with `clock`.
    pub fn new(speed: Speed, clock: StampClock) -> Pacer {
        Pacer {
            speed,
            clock,
            origin: None,
            released: 0,
            max_behind_ns: 0,
            yield_when_early: true,
            interrupt: None,
        }
    }

    /// Cuts waits short once `flag` is set (a paced replay of hours must stop on Ctrl-C).
    pub fn set_interrupt(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = Some(flag);
    }

    /// Whether the interrupt flag is set: the wait that just returned may have been cut short,
    /// and the message it was for is not due yet.
    #[inline]
    pub fn interrupted(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// Never yields while early: for a thread alone on its core.
    pub fn spin_only(mut self) -> Pacer {
        self.yield_when_early = false;
        self
    }

    /// The speed.
    pub fn speed(&self) -> Speed {
        self.speed
    }

    /// How far behind schedule the latest message was released at most, ns (0 at `max`).
    pub fn max_behind_ns(&self) -> u64 {
        self.max_behind_ns
    }

    /// Waits until the message stamped `data_ns` (its timestamp in the source, any epoch) is
    /// due. Returns at once at [`Speed::Max`].
    #[inline(always)]
    pub fn wait(&mut self, data_ns: u64) {
        if !matches!(self.speed, Speed::Max) {
            self.wait_paced(data_ns, &mut Idle::default(), || {});
        }
    }

    /// [`wait`](Self::wait), running `idle`'s work (if any) in every turn of the wait instead
    /// of spinning, yielding the cpu or sleeping, and `before_waiting` once before the first
    /// turn (not at all when the message is already due).
    #[inline(always)]
    pub(crate) fn wait_doing(
        &mut self,
        data_ns: u64,
        idle: &mut Idle,
        before_waiting: impl FnOnce(),
    ) {
        if !matches!(self.speed, Speed::Max) {
            self.wait_paced(data_ns, idle, before_waiting);
        }
    }

    /// [`wait_doing`](Self::wait_doing) at a paced speed (out of line: full-speed replays only
    /// test the speed).
    #[inline(never)]
    fn wait_paced(&mut self, data_ns: u64, idle: &mut Idle, before_waiting: impl FnOnce()) {
        let offset_ns = match self.speed {
            Speed::Max => return,
            Speed::Factor(f) => {
                let (d0, _) = *self.origin.get_or_insert((data_ns, self.clock.raw()));
                (data_ns.saturating_sub(d0) as f64 / f) as u64
            }
            Speed::Rate(r) => {
                self.origin.get_or_insert((0, self.clock.raw()));
                let n = self.released;
                ((u128::from(n) * 1_000_000_000) / u128::from(r)) as u64
            }
        };
        self.released += 1;
        let Some((_, t0)) = self.origin else { return };
        let mut spins = 0u32;
        let mut before_waiting = Some(before_waiting);
        loop {
            if self.interrupted() {
                return;
            }
            let elapsed = self.clock.delta_ns(t0, self.clock.raw());
            if elapsed >= offset_ns {
                self.max_behind_ns = self.max_behind_ns.max(elapsed - offset_ns);
                return;
            }
            let left = offset_ns - elapsed;
            if let Some(f) = before_waiting.take() {
                f();
            }
            // With idle work the thread never sleeps: the stage sharing it is served in
            // every turn of the wait, however long.
            if idle.run() {
                continue;
            }
            if left > 2_000_000 {
                // In slices, so that an interrupt is noticed within 50 ms.
                let nap = (left - 1_000_000).min(50_000_000);
                std::thread::sleep(std::time::Duration::from_nanos(nap));
            } else if spins < 100 || !self.yield_when_early {
                spins = spins.saturating_add(1);
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A paced wait runs its `before_waiting` (the feed's hand-off) once when it has to wait,
    /// and not at all when the message is already due or the speed is `Max`.
    #[test]
    fn before_waiting_runs_once_and_only_before_a_real_wait() {
        let mut calls = 0;
        // 1000 messages a second: the first is due at once, the second 1 ms later.
        let mut pacer = Pacer::new(Speed::Rate(1000), StampClock::new());
        pacer.wait_doing(0, &mut Idle::default(), || calls += 1);
        assert_eq!(calls, 0, "the first message was due");
        pacer.wait_doing(0, &mut Idle::default(), || calls += 1);
        assert_eq!(calls, 1, "the second waited");
        let mut max = Pacer::new(Speed::Max, StampClock::new());
        max.wait_doing(0, &mut Idle::default(), || calls += 1);
        max.wait_doing(0, &mut Idle::default(), || calls += 1);
        assert_eq!(calls, 1, "a full-speed replay never waits");
    }

    #[test]
    fn an_interrupt_cuts_a_wait_short() {
        // One message a second: the third would be due two seconds after the first.
        let mut pacer = Pacer::new(Speed::Rate(1), StampClock::new());
        let flag = Arc::new(AtomicBool::new(false));
        pacer.set_interrupt(Arc::clone(&flag));
        pacer.wait(0);
        assert!(!pacer.interrupted());
        let setter = {
            let flag = Arc::clone(&flag);
            std::thread::spawn(move || flag.store(true, Ordering::Relaxed))
        };
        // Returns once the flag is set (a two-second wait otherwise; a hang would fail).
        pacer.wait(0);
        pacer.wait(0);
        setter.join().unwrap();
        assert!(pacer.interrupted());
    }

    #[test]
    fn speeds_parse() {
        assert_eq!("max".parse::<Speed>().unwrap(), Speed::Max);
        assert_eq!("1x".parse::<Speed>().unwrap(), Speed::Factor(1.0));
        assert_eq!("10x".parse::<Speed>().unwrap(), Speed::Factor(10.0));
        assert_eq!("0.5x".parse::<Speed>().unwrap(), Speed::Factor(0.5));
        assert_eq!(
            "1_000_000/s".parse::<Speed>().unwrap(),
            Speed::Rate(1_000_000)
        );
        for bad in ["", "0x", "-1x", "fast", "x", "0/s", "nanx", "infx"] {
            assert!(bad.parse::<Speed>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_parse() {
        let t = |s: &str| s.parse::<TimeOfDay>().map(|t| t.0);
        assert_eq!(t("09:30"), Ok(34_200_000_000_000));
        assert_eq!(t("09:30:01"), Ok(34_201_000_000_000));
        assert_eq!(t("09:30:01.5"), Ok(34_201_500_000_000));
        assert_eq!(t("00:00:00.000000001"), Ok(1));
        assert_eq!(t("24:00"), Ok(86_400_000_000_000));
        for bad in [
            "9",
            "09:60",
            "25:00",
            "24:00:01",
            "09:30:00.1234567890",
            "a:b",
            "09:30:",
        ] {
            assert!(t(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            TimeOfDay(34_201_500_000_000).to_string(),
            "09:30:01.500000000"
        );
    }

    #[test]
    fn pacing_follows_the_data_clock() {
        let clock = StampClock::new();
        let mut p = Pacer::new(Speed::Factor(10.0), clock.clone());
        let t0 = clock.raw();
        p.wait(0);
        p.wait(50_000_000); // 50 ms of data at 10x: 5 ms
        let took = clock.delta_ns(t0, clock.raw());
        assert!(took >= 5_000_000, "{took}");
        let mut p = Pacer::new(Speed::Rate(1000), clock.clone());
        let t0 = clock.raw();
        for _ in 0..4 {
            p.wait(0);
        }
        // The 4th message is due 3 ms after the first.
        assert!(clock.delta_ns(t0, clock.raw()) >= 3_000_000);
    }

    #[test]
    fn stamps_are_unix_time() {
        let c = StampClock::new();
        let a = unix_ns();
        let s = c.now_unix_ns();
        let b = unix_ns();
        // Near the system clock (calibration error is far below this bound).
        assert!(s + 50_000_000 >= a && s <= b + 50_000_000, "{a} {s} {b}");
    }
}
