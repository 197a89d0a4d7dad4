//! The benchmark clock: the TSC through a calibrated [`quanta::Clock`] where the host says the
//! TSC is invariant, otherwise the OS monotonic clock through [`std::time::Instant`].
//!
//! Readings are raw `u64` ticks so that the hot loops do nothing but read the counter; they are
//! turned into nanoseconds only when a sample is recorded. Readings are comparable across
//! threads (and cores): the invariant TSC is synchronised across cores by the kernel
//! (`tsc_adjust`), and the monotonic clock is system-wide.

use std::time::{Duration, Instant};

/// Where timestamps come from.
#[derive(Debug, Clone)]
pub enum BenchClock {
    /// The time-stamp counter, calibrated against the monotonic clock by `quanta`.
    Tsc(quanta::Clock),
    /// Nanoseconds since `base` from the OS monotonic clock (no invariant TSC on this host).
    Monotonic(Instant),
}

impl BenchClock {
    /// Picks the TSC when `tsc_invariant` (the host's `constant_tsc` and `nonstop_tsc` flags),
    /// otherwise the monotonic clock.
    pub fn new(tsc_invariant: bool) -> BenchClock {
        if tsc_invariant {
            BenchClock::Tsc(quanta::Clock::new())
        } else {
            BenchClock::Monotonic(Instant::now())
        }
    }

    /// A short name of the source, for reports.
    pub fn source(&self) -> &'static str {
        match self {
            BenchClock::Tsc(_) => "tsc",
            BenchClock::Monotonic(_) => "monotonic",
        }
    }

    /// A raw reading (TSC ticks or nanoseconds since the base).
    #[inline(always)]
    pub fn now(&self) -> u64 {
        match self {
            BenchClock::Tsc(c) => c.raw(),
            BenchClock::Monotonic(base) => base.elapsed().as_nanos() as u64,
        }
    }

    /// Nanoseconds from `start` to `end` (0 if `end` is not after `start`).
    #[inline(always)]
    pub fn delta_ns(&self, start: u64, end: u64) -> u64 {
        match self {
            BenchClock::Tsc(c) => c.delta_as_nanos(start, end),
            BenchClock::Monotonic(_) => end.saturating_sub(start),
        }
    }

    /// Measures how many raw ticks make one second (sleeps about 20 ms the first time on TSC).
    pub fn ticks_per_sec(&self) -> f64 {
        match self {
            BenchClock::Tsc(_) => {
                let wall = Instant::now();
                let t0 = self.now();
                std::thread::sleep(Duration::from_millis(20));
                let t1 = self.now();
                let ns = self.delta_ns(t0, t1).max(1) as f64;
                let ns_wall = wall.elapsed().as_nanos().max(1) as f64;
                // Prefer the calibrated conversion; the wall clock is only a sanity bound.
                let ns = if (ns / ns_wall - 1.0).abs() < 0.05 {
                    ns
                } else {
                    ns_wall
                };
                (t1.wrapping_sub(t0)) as f64 * 1e9 / ns
            }
            BenchClock::Monotonic(_) => 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sources_measure_a_sleep() {
        for clock in [BenchClock::new(false), BenchClock::new(true)] {
            let t0 = clock.now();
            std::thread::sleep(Duration::from_millis(5));
            let t1 = clock.now();
            let ns = clock.delta_ns(t0, t1);
            assert!(ns >= 4_000_000, "{}: {ns} ns", clock.source());
            assert_eq!(clock.delta_ns(t1, t0), 0);
            assert!(clock.ticks_per_sec() > 1e6);
        }
    }
}
