//! The measuring loops allocate nothing per message: with a counting global allocator, running
//! each loop for 20 000 messages allocates exactly as often as running it for 200 (thread start
//! and the like are per run, never per message). One test in its own binary, so no other test
//! allocates meanwhile. No timing is asserted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mdbus_bench_harness::bench::clock::BenchClock;
use mdbus_bench_harness::bench::engine::{self, Ctx};
use mdbus_bench_harness::bench::ring::ShmMode;
use mdbus_bench_harness::bench::shm::ShmEnv;
use mdbus_bench_harness::bench::transport::{
    FloorWord, MsgRx, MsgTx, crossbeam_channel, floor, rtrb_channel,
};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` (channels are made before counting starts).
fn allocs<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = ALLOCS.load(Ordering::Relaxed);
    let r = f();
    (ALLOCS.load(Ordering::Relaxed) - before, r)
}

fn ping_pong_allocs<A, B, C, D>(ctx: &Ctx<'_>, mk: impl Fn() -> ((A, B), (C, D)), n: u64) -> u64
where
    A: MsgTx + Send,
    B: MsgRx + Send,
    C: MsgTx + Send,
    D: MsgRx + Send,
{
    let mut h = engine::new_histogram().unwrap();
    let (ping, pong) = mk();
    let (a, r) = allocs(|| engine::ping_pong(ctx, "t", ping, pong, 10, n, &mut h));
    r.unwrap();
    assert_eq!(h.len(), n);
    a
}

fn stream_allocs<T: MsgTx + Send, R: MsgRx + Send>(
    ctx: &Ctx<'_>,
    mk: impl Fn() -> (T, R),
    n: u64,
) -> u64 {
    let ch = mk();
    let (a, r) = allocs(|| engine::throughput(ctx, "t", ch, n, 32));
    assert_eq!(r.unwrap().0, n);
    let mut h = engine::new_histogram().unwrap();
    let ch = mk();
    let (b, r) = allocs(|| engine::fixed_rate(ctx, "t", ch, 0, n, 1, &mut h));
    r.unwrap();
    assert_eq!(h.len(), n);
    a + b
}

#[test]
fn measuring_loops_do_not_allocate_per_message() {
    let clock = BenchClock::new(false);
    let ctx = Ctx {
        clock: &clock,
        cores: [0, 0],
        pin: false,
        roles: None,
        yield_spin: true,
        stall: Duration::from_secs(30),
    };
    let shm = ShmEnv::new(None, 65536, 64, ShmMode::Lossless).unwrap();
    let (small, large) = (200, 20_000);
    for n in [small, large] {
        // Warm any lazily initialised state (thread-locals, clock calibration) first.
        ping_pong_allocs(
            &ctx,
            || (floor(FloorWord::Seq, false), floor(FloorWord::Seq, false)),
            n,
        );
    }
    let check = |name: &str, f: &dyn Fn(u64) -> u64| {
        let a = f(small);
        let b = f(large);
        assert_eq!(
            a, b,
            "{name}: {a} allocations for {small} messages, {b} for {large}"
        );
    };
    check("floor", &|n| {
        ping_pong_allocs(
            &ctx,
            || (floor(FloorWord::Seq, false), floor(FloorWord::Seq, false)),
            n,
        )
    });
    check("rtrb", &|n| {
        ping_pong_allocs(&ctx, || (rtrb_channel::<64>(64), rtrb_channel::<64>(64)), n)
            + stream_allocs(&ctx, || rtrb_channel::<64>(64), n)
    });
    check("crossbeam-channel", &|n| {
        ping_pong_allocs(
            &ctx,
            || (crossbeam_channel::<64>(64), crossbeam_channel::<64>(64)),
            n,
        ) + stream_allocs(&ctx, || crossbeam_channel::<64>(64), n)
    });
    check("mdbus-shm", &|n| {
        let mk = || shm.channel::<64>(true).unwrap();
        ping_pong_allocs(&ctx, || (mk(), mk()), n) + stream_allocs(&ctx, mk, n)
    });
}
