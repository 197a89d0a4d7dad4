//! The `ring` scenario: one-way latency and throughput of small messages between two pinned
//! threads, through the floor, the mdbus shared-memory ring, `rtrb`, `disruptor`, `iceoryx2`
//! (with the `peers-iceoryx2` feature; ping-pong only) and `crossbeam-channel`, all driven by
//! the same loops (see [`super::engine`]) and interleaved round-robin.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::clock::BenchClock;
use super::engine::{self, Ctx};
use super::report::{RingParams, RingReport, SystemResult};
use super::shm::ShmEnv;
use super::transport::{
    FloorWord, HEADER_BYTES, MsgRx, MsgTx, crossbeam_channel, disruptor_channel, floor,
    rtrb_channel,
};
use super::{BenchError, host};
use crate::pinning::{LayoutArg, Pinning, ThreadRole};
use crate::units::{DurationArg, parse_size_usize};

/// A system the ring scenario measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    /// Raw cache-line ping-pong: two `CachePadded<AtomicU64>`, the physical floor.
    Floor,
    /// The mdbus shared-memory ring, on a real memory-mapped segment.
    #[value(name = "mdbus-shm")]
    MdbusShm,
    /// The `rtrb` wait-free SPSC ring (0.4).
    Rtrb,
    /// A single-producer `disruptor` (4.x) read by an event poller.
    Disruptor,
    /// `iceoryx2` publish-subscribe over its IPC service (loan, send, receive); needs the
    /// `peers-iceoryx2` build feature.
    Iceoryx2,
    /// A bounded `crossbeam-channel`.
    #[value(name = "crossbeam-channel")]
    CrossbeamChannel,
}

impl System {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            System::Floor => "floor",
            System::MdbusShm => "mdbus-shm",
            System::Rtrb => "rtrb",
            System::Disruptor => "disruptor",
            System::Iceoryx2 => "iceoryx2",
            System::CrossbeamChannel => "crossbeam-channel",
        }
    }
}

/// The systems `--systems` defaults to: every one this build has (`iceoryx2` with the
/// `peers-iceoryx2` feature).
pub fn default_systems() -> Vec<System> {
    let mut v = vec![
        System::Floor,
        System::MdbusShm,
        System::Rtrb,
        System::Disruptor,
    ];
    if cfg!(feature = "peers-iceoryx2") {
        v.push(System::Iceoryx2);
    }
    v.push(System::CrossbeamChannel);
    v
}

/// Mode of the mdbus ring under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ShmMode {
    /// The producer waits for the (one) registered consumer, like `rtrb`: no message is lost.
    Lossless,
    /// The producer never waits; a lapped consumer is told how many records it lost.
    Broadcast,
}

/// Message sizes the harness supports (bytes).
pub const MSG_SIZES: [usize; 9] = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// Latency samples per system when `--count` is not given (ping-pong mode).
pub const DEFAULT_COUNT: u64 = 2_000_000;
/// Throughput messages per system when `--throughput-count` is not given.
pub const DEFAULT_THROUGHPUT_COUNT: u64 = 10_000_000;
/// Rounds when `--rounds` is not given.
pub const DEFAULT_ROUNDS: u32 = 10;

/// `--quick`: latency samples per system, untimed messages per round, rounds and throughput
/// messages per system of the short smoke run.
pub const QUICK: (u64, u64, u32, u64) = (2_000, 200, 2, 20_000);

/// The threads of the ring scenario and the layout roles they take their cores from.
pub const THREADS: [ThreadRole; 2] = [
    ThreadRole {
        thread: "producer",
        roles: &["producer", "feed_handler"],
    },
    ThreadRole {
        thread: "consumer",
        roles: &["consumer", "strategy"],
    },
];

/// `mdbus bench ring`: one-way latency (ping-pong, or fixed rate) and throughput.
#[derive(clap::Args, Debug, Clone)]
pub struct RingArgs {
    /// Print exactly one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Message size in bytes: 16, 32, 64, 128, 256, 512, 1024, 2048 or 4096.
    #[arg(long, default_value_t = 64, value_parser = parse_msg_bytes)]
    pub msg_bytes: usize,
    /// A short smoke run: 2000 samples and 20000 throughput messages per system, 200 warm-up
    /// messages, 2 rounds (flags given explicitly still apply).
    #[arg(long)]
    pub quick: bool,
    /// Latency samples per system, over all rounds
    /// [default: 2000000; fixed rate: 2 s worth of messages, at most 2000000].
    #[arg(long)]
    pub count: Option<u64>,
    /// Untimed messages before each system's timed part of every round
    /// [default: 10000; fixed rate: 50 ms worth, at most 10000].
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Rounds: the systems run one after the other, round-robin, `count / rounds` samples each
    /// [default: 10].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: Option<u32>,
    /// The two cpus to pin the threads to, e.g. `0,1` (wins over --layout)
    /// [default: the layout's producer/feed_handler and consumer/strategy cores with a layout,
    /// else the first two cores this process may run on].
    #[arg(long = "cpus", alias = "cores", value_name = "A,B", value_parser = parse_cores)]
    pub cores: Option<[usize; 2]>,
    /// The core layout (`--layout FILE` or `$MDBUS_LAYOUT`).
    #[command(flatten)]
    pub layout: LayoutArg,
    /// Fixed-rate one-way mode: messages per second; latency is measured from each message's
    /// intended send time (no coordinated omission).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub rate: Option<u64>,
    /// Messages per system in the throughput phase (0 skips it) [default: 10000000].
    #[arg(long)]
    pub throughput_count: Option<u64>,
    /// Largest batch a throughput consumer takes in one poll.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub batch: u64,
    /// Size of the rings: bytes or a number and a unit (`64KiB`), a power of two from 4KiB to
    /// 1GiB; rtrb and crossbeam get size / msg-bytes slots.
    #[arg(
        long = "ring-size",
        alias = "capacity",
        value_name = "SIZE",
        default_value = "64KiB",
        value_parser = parse_capacity
    )]
    pub capacity: usize,
    /// Systems to run, in the order of the first round.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = default_systems())]
    pub systems: Vec<System>,
    /// Mode of the mdbus ring in the latency phase (the throughput phase always uses a lossless
    /// ring, like rtrb and crossbeam).
    #[arg(long, value_enum, default_value_t = ShmMode::Lossless)]
    pub shm_mode: ShmMode,
    /// Folder for the ring segments [default: a fresh temporary folder under /dev/shm].
    #[arg(long)]
    pub shm_root: Option<PathBuf>,
    /// Write one HdrHistogram percentile distribution (`<system>.hgrm`) per system here.
    #[arg(long, value_name = "DIR")]
    pub hgrm: Option<PathBuf>,
    /// Write a latency-by-percentile chart (SVG) here.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Give up when a channel shows no progress for this long (at least 1s).
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub stall_timeout: DurationArg,
    /// Old spelling of --stall-timeout, in seconds.
    #[arg(long, hide = true, value_name = "SECS")]
    pub stall_secs: Option<u64>,
}

fn parse_msg_bytes(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if MSG_SIZES.contains(&n) {
        Ok(n)
    } else {
        Err(format!("unsupported size {n}; one of {MSG_SIZES:?}"))
    }
}

fn parse_cores(s: &str) -> Result<[usize; 2], String> {
    let mut it = s.split(',').map(|c| c.trim().parse::<usize>());
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), None) => Ok([a, b]),
        _ => Err(format!("expected two core numbers as A,B, got {s:?}")),
    }
}

fn parse_capacity(s: &str) -> Result<usize, String> {
    let n = parse_size_usize(s)?;
    if n.is_power_of_two() && (4096..=(1 << 30)).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{n} bytes is not a power of two from 4KiB to 1GiB (the ring's size is refused, \
             not rounded)"
        ))
    }
}

/// What was decided before anything runs.
#[derive(Debug)]
struct Plan {
    msg_bytes: usize,
    count: u64,
    warmup: u64,
    rounds: u32,
    rate: Option<u64>,
    interval_ticks: u64,
    throughput_count: u64,
    batch: usize,
    capacity: usize,
    slots: usize,
    systems: Vec<System>,
    shm_mode: ShmMode,
}

/// Splits `total` into `rounds` parts that add up to it.
pub(crate) fn share(total: u64, rounds: u32, round: u32) -> u64 {
    let r = u64::from(rounds);
    total / r + u64::from(u64::from(round) < total % r)
}

/// The cores to use, whether to pin, whether to yield (one core), and notes.
fn choose_cores(
    requested: Option<&[usize]>,
) -> Result<([usize; 2], bool, bool, Vec<String>), BenchError> {
    let mut notes = Vec::new();
    let allowed: Option<Vec<usize>> =
        core_affinity::get_core_ids().map(|v| v.into_iter().map(|c| c.id).collect());
    let cores = match (requested, &allowed) {
        (Some(r), Some(a)) => {
            if let Some(bad) = r.iter().find(|c| !a.contains(c)) {
                return Err(BenchError::BadArg(format!(
                    "--cpus: cpu {bad} is not one this process may run on ({a:?})"
                )));
            }
            [r[0], r[1]]
        }
        (Some(r), None) => [r[0], r[1]],
        (None, Some(a)) if a.len() >= 2 => [a[0], a[1]],
        (None, Some(a)) if a.len() == 1 => {
            notes.push(format!(
                "only core {} is available: both threads share it and yield instead of \
                 spinning; latencies are scheduler latencies",
                a[0]
            ));
            [a[0], a[0]]
        }
        (None, _) => {
            notes.push("cannot read this process's CPU affinity: threads run unpinned".into());
            return Ok(([0, 1], false, false, notes));
        }
    };
    let yield_spin = cores[0] == cores[1];
    if yield_spin && requested.is_some() {
        notes.push(format!(
            "both threads on core {}: they yield instead of spinning",
            cores[0]
        ));
    }
    Ok((cores, true, yield_spin, notes))
}

/// Runs the scenario and returns its report and the histograms (for `--hgrm` / `--plot`).
pub fn measure(args: &RingArgs) -> Result<(RingReport, Vec<Histogram<u64>>), BenchError> {
    if args.systems.is_empty() {
        return Err(BenchError::BadArg("--systems: nothing to run".into()));
    }
    let mut systems = Vec::new();
    for s in &args.systems {
        if !systems.contains(s) {
            systems.push(*s);
        }
    }
    // iceoryx2 is measured as its own benchmark sets it up: ping-pong, one sample in flight.
    let ice_dropped = args.rate.is_some() && systems.contains(&System::Iceoryx2);
    systems.retain(|s| !(ice_dropped && *s == System::Iceoryx2));
    if systems.is_empty() {
        return Err(BenchError::BadArg(
            "--systems iceoryx2 with --rate: iceoryx2 is measured by ping-pong only".into(),
        ));
    }
    let layout = args.layout.path();
    let (cores, pin, yield_spin, mut notes, pinning) = match (&layout, args.cores) {
        (Some(path), explicit) => {
            if let Some(c) = &explicit {
                // Checks the cores against this process's affinity.
                choose_cores(Some(&c[..]))?;
            }
            let p = Pinning::from_layout(path, &THREADS, explicit.as_ref().map(|c| &c[..]))
                .map_err(|e| BenchError::BadArg(e.to_string()))?;
            let cores = [p.cpu(0), p.cpu(1)];
            let mut notes: Vec<String> = p.describe().into_iter().collect();
            if cores[0] == cores[1] {
                notes.push(format!(
                    "both threads on core {}: they yield instead of spinning",
                    cores[0]
                ));
            }
            (cores, true, cores[0] == cores[1], notes, Some(p))
        }
        (None, explicit) => {
            let (c, pin, y, n) = choose_cores(explicit.as_ref().map(|c| &c[..]))?;
            (c, pin, y, n, None)
        }
    };
    let (q_count, q_warmup, q_rounds, q_tput) = QUICK;
    let quick = args.quick;
    let rounds = args
        .rounds
        .unwrap_or(if quick { q_rounds } else { DEFAULT_ROUNDS });
    let tsc = host::tsc_invariant();
    if !tsc {
        notes.push(
            "no invariant TSC (constant_tsc + nonstop_tsc) in /proc/cpuinfo: timing with the \
             OS monotonic clock (std::time::Instant), which costs more per reading"
                .into(),
        );
    }
    let clock = BenchClock::new(tsc);
    let slots = (args.capacity / args.msg_bytes).max(2);
    let (count, warmup, interval_ticks) = match args.rate {
        None if quick => (
            args.count.unwrap_or(q_count),
            args.warmup.unwrap_or(q_warmup),
            0,
        ),
        None => (
            args.count.unwrap_or(DEFAULT_COUNT),
            args.warmup.unwrap_or(10_000),
            0,
        ),
        Some(rate) => {
            let tps = clock.ticks_per_sec();
            let interval = (tps / rate as f64).round().max(1.0) as u64;
            let (most, most_warmup) = if quick {
                (q_count, q_warmup)
            } else {
                (DEFAULT_COUNT, 10_000)
            };
            (
                args.count.unwrap_or((rate * 2).min(most)),
                args.warmup.unwrap_or((rate / 20).min(most_warmup)),
                interval,
            )
        }
    };
    if count < u64::from(rounds) {
        return Err(BenchError::BadArg(format!(
            "--count {count} is smaller than --rounds {rounds}"
        )));
    }
    let plan = Plan {
        msg_bytes: args.msg_bytes,
        count,
        warmup,
        rounds,
        rate: args.rate,
        interval_ticks,
        throughput_count: args.throughput_count.unwrap_or(if quick {
            q_tput
        } else {
            DEFAULT_THROUGHPUT_COUNT
        }),
        batch: args.batch as usize,
        capacity: args.capacity,
        slots,
        systems,
        shm_mode: args.shm_mode,
    };
    let ctx = Ctx {
        clock: &clock,
        cores,
        pin,
        roles: pinning.as_ref().map(|p| (p, [0, 1])),
        yield_spin,
        stall: args.stall_timeout.0.max(Duration::from_secs(1)),
    };
    let shm = if plan.systems.contains(&System::MdbusShm) {
        Some(ShmEnv::new(
            args.shm_root.as_deref(),
            plan.capacity,
            plan.msg_bytes,
            plan.shm_mode,
        )?)
    } else {
        None
    };
    let out = match plan.msg_bytes {
        16 => run_sized::<16>(&ctx, &plan, shm.as_ref()),
        32 => run_sized::<32>(&ctx, &plan, shm.as_ref()),
        64 => run_sized::<64>(&ctx, &plan, shm.as_ref()),
        128 => run_sized::<128>(&ctx, &plan, shm.as_ref()),
        256 => run_sized::<256>(&ctx, &plan, shm.as_ref()),
        512 => run_sized::<512>(&ctx, &plan, shm.as_ref()),
        1024 => run_sized::<1024>(&ctx, &plan, shm.as_ref()),
        2048 => run_sized::<2048>(&ctx, &plan, shm.as_ref()),
        4096 => run_sized::<4096>(&ctx, &plan, shm.as_ref()),
        n => Err(BenchError::BadArg(format!("unsupported --msg-bytes {n}"))),
    }?;
    let pinned = pin && out.all_pinned;
    if let Some(p) = &pinning {
        notes.extend(p.warnings());
    }
    if pin && !out.all_pinned {
        notes.push(format!(
            "pinning to cores {cores:?} failed at least once: those runs were unpinned"
        ));
    }
    let mut results = Vec::new();
    for (i, s) in plan.systems.iter().enumerate() {
        let mut r = SystemResult::from_histogram(s.name(), plan.msg_bytes, &out.hists[i]);
        r.msgs_per_sec = out.throughput[i];
        r.lost = out.lost[i];
        r.round_p50_ns = out.round_p50[i].clone();
        if r.lost > 0 {
            notes.push(format!(
                "{}: {} messages lost to overruns (broadcast ring lapped; not in the histogram)",
                r.name, r.lost
            ));
        }
        results.push(r);
    }
    if plan.throughput_count > 0 && plan.systems.contains(&System::Floor) {
        notes.push("floor has no throughput figure: a single word cannot stream messages".into());
    }
    if plan.throughput_count > 0 && plan.systems.contains(&System::Iceoryx2) {
        notes.push(
            "iceoryx2 has no throughput figure: it is measured as its own benchmark sets it up \
             (ping-pong, one sample in flight)"
                .into(),
        );
    }
    if ice_dropped {
        notes.push(
            "iceoryx2 left out of this fixed-rate run: it is measured by ping-pong only".into(),
        );
    }
    let mut report = RingReport {
        scenario: "ring".into(),
        results,
        host: host::collect(&cores, pinned, clock.source()),
        layout: pinning.as_ref().and_then(Pinning::layout_use),
        params: RingParams {
            mode: if plan.rate.is_some() {
                "fixed-rate"
            } else {
                "ping-pong"
            }
            .into(),
            msg_bytes: plan.msg_bytes,
            count: plan.count,
            warmup: plan.warmup,
            rounds: plan.rounds,
            rate: plan.rate,
            throughput_count: plan.throughput_count,
            batch: plan.batch,
            capacity_bytes: plan.capacity,
            slots: plan.slots,
            shm_mode: match plan.shm_mode {
                ShmMode::Lossless => "lossless",
                ShmMode::Broadcast => "broadcast",
            }
            .into(),
            systems: plan.systems.iter().map(|s| s.name().to_string()).collect(),
        },
        notes,
    };
    report.fill_floor_ratios();
    Ok((report, out.hists))
}

/// Histograms (latency) and throughputs, per system in plan order.
struct Outcome {
    hists: Vec<Histogram<u64>>,
    throughput: Vec<Option<f64>>,
    lost: Vec<u64>,
    round_p50: Vec<Vec<u64>>,
    all_pinned: bool,
}

fn run_sized<const N: usize>(
    ctx: &Ctx<'_>,
    plan: &Plan,
    shm: Option<&ShmEnv>,
) -> Result<Outcome, BenchError> {
    const { assert!(N >= HEADER_BYTES) };
    let ns = plan.systems.len();
    let mut hists = Vec::with_capacity(ns);
    for _ in 0..ns {
        hists.push(engine::new_histogram()?);
    }
    let mut all_pinned = true;
    let mut lost = vec![0u64; ns];
    let mut round_p50 = vec![Vec::with_capacity(plan.rounds as usize); ns];
    let mut chunk = engine::new_histogram()?;
    // Latency: every round runs every system once, starting one further along each round so
    // that no system is always first after a pause.
    for round in 0..plan.rounds {
        let count = share(plan.count, plan.rounds, round);
        for k in 0..ns {
            let i = (k + round as usize) % ns;
            let sys = plan.systems[i];
            chunk.reset();
            let (pinned, l) = latency::<N>(ctx, plan, shm, sys, count, &mut chunk)?;
            all_pinned &= pinned;
            lost[i] += l;
            round_p50[i].push(if chunk.is_empty() {
                0
            } else {
                chunk.value_at_quantile(0.5)
            });
            hists[i]
                .add(&chunk)
                .map_err(|e| BenchError::Internal(format!("histogram add: {e:?}")))?;
        }
    }
    let mut totals = vec![(0u64, 0u64); ns];
    if plan.throughput_count > 0 {
        for round in 0..plan.rounds {
            let count = share(plan.throughput_count, plan.rounds, round);
            if count == 0 {
                continue;
            }
            for k in 0..ns {
                let i = (k + round as usize) % ns;
                if let Some((m, t, pinned)) =
                    throughput::<N>(ctx, plan, shm, plan.systems[i], count)?
                {
                    totals[i].0 += m;
                    totals[i].1 += t;
                    all_pinned &= pinned;
                }
            }
        }
    }
    let throughput = totals
        .iter()
        .map(|&(m, t)| (m > 0 && t > 0).then(|| m as f64 * 1e9 / t as f64))
        .collect();
    Ok(Outcome {
        hists,
        throughput,
        lost,
        round_p50,
        all_pinned,
    })
}

/// Dispatches a latency run of `count` samples to the loop of the current mode; returns
/// (pinned, lost).
fn lat<PT: MsgTx + Send, PR: MsgRx + Send, QT: MsgTx + Send, QR: MsgRx + Send>(
    ctx: &Ctx<'_>,
    plan: &Plan,
    name: &str,
    ping: (PT, PR),
    pong: impl FnOnce() -> Result<(QT, QR), BenchError>,
    count: u64,
    hist: &mut Histogram<u64>,
) -> Result<(bool, u64), BenchError> {
    match plan.rate {
        None => engine::ping_pong(ctx, name, ping, pong()?, plan.warmup, count, hist)
            .map(|pinned| (pinned, 0)),
        Some(_) => engine::fixed_rate(
            ctx,
            name,
            ping,
            plan.warmup,
            count,
            plan.interval_ticks,
            hist,
        ),
    }
}

fn latency<const N: usize>(
    ctx: &Ctx<'_>,
    plan: &Plan,
    shm: Option<&ShmEnv>,
    sys: System,
    count: u64,
    hist: &mut Histogram<u64>,
) -> Result<(bool, u64), BenchError> {
    let name = sys.name();
    let fixed = plan.rate.is_some();
    match sys {
        System::Floor => {
            let word = if fixed {
                FloorWord::Stamp
            } else {
                FloorWord::Seq
            };
            let pong = || Ok(floor(word, fixed));
            lat(ctx, plan, name, floor(word, fixed), pong, count, hist)
        }
        System::Rtrb => {
            let pong = || Ok(rtrb_channel::<N>(plan.slots));
            lat(
                ctx,
                plan,
                name,
                rtrb_channel::<N>(plan.slots),
                pong,
                count,
                hist,
            )
        }
        System::Disruptor => {
            let pong = || Ok(disruptor_channel::<N>(plan.slots));
            lat(
                ctx,
                plan,
                name,
                disruptor_channel::<N>(plan.slots),
                pong,
                count,
                hist,
            )
        }
        #[cfg(feature = "peers-iceoryx2")]
        System::Iceoryx2 => {
            use super::transport::ice;
            let (a2b, b2a) = (ice_service("a2b"), ice_service("b2a"));
            match plan.rate {
                None => engine::ping_pong_made(
                    ctx,
                    name,
                    || Ok((ice::tx::<N>(&a2b)?, ice::rx(&b2a)?)),
                    || Ok((ice::rx(&a2b)?, ice::tx::<N>(&b2a)?)),
                    plan.warmup,
                    count,
                    hist,
                )
                .map(|pinned| (pinned, 0)),
                // Left out of fixed-rate runs in `measure`.
                Some(_) => Err(BenchError::Internal(
                    "iceoryx2 has no fixed-rate setup".into(),
                )),
            }
        }
        #[cfg(not(feature = "peers-iceoryx2"))]
        System::Iceoryx2 => Err(no_iceoryx2()),
        System::CrossbeamChannel => {
            let pong = || Ok(crossbeam_channel::<N>(plan.slots));
            lat(
                ctx,
                plan,
                name,
                crossbeam_channel::<N>(plan.slots),
                pong,
                count,
                hist,
            )
        }
        System::MdbusShm => {
            let shm = shm.ok_or_else(|| BenchError::Internal("no shm environment".into()))?;
            let ping = shm.channel::<N>(false)?;
            lat(
                ctx,
                plan,
                name,
                ping,
                || shm.channel::<N>(false),
                count,
                hist,
            )
        }
    }
}

fn throughput<const N: usize>(
    ctx: &Ctx<'_>,
    plan: &Plan,
    shm: Option<&ShmEnv>,
    sys: System,
    count: u64,
) -> Result<Option<(u64, u64, bool)>, BenchError> {
    let name = sys.name();
    let b = plan.batch;
    Ok(Some(match sys {
        System::Floor => return Ok(None),
        System::Rtrb => engine::throughput(ctx, name, rtrb_channel::<N>(plan.slots), count, b)?,
        System::Disruptor => {
            engine::throughput(ctx, name, disruptor_channel::<N>(plan.slots), count, b)?
        }
        // Ping-pong only: its benchmark's setup loses no message with one in flight only.
        System::Iceoryx2 => return Ok(None),
        System::CrossbeamChannel => {
            engine::throughput(ctx, name, crossbeam_channel::<N>(plan.slots), count, b)?
        }
        System::MdbusShm => {
            let shm = shm.ok_or_else(|| BenchError::Internal("no shm environment".into()))?;
            engine::throughput(ctx, name, shm.channel::<N>(true)?, count, b)?
        }
    }))
}

/// A fresh iceoryx2 service name for one run (unique to this process and run).
#[cfg(feature = "peers-iceoryx2")]
fn ice_service(what: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("mdbus-bench-{}-{n}-{what}", std::process::id())
}

#[cfg(not(feature = "peers-iceoryx2"))]
fn no_iceoryx2() -> BenchError {
    BenchError::BadArg(
        "--systems iceoryx2: this mdbus was built without the peers-iceoryx2 feature".into(),
    )
}

/// `mdbus bench ring`: measures, then writes the table or the JSON object to `out`, and the
/// `.hgrm` files and the chart where asked.
pub fn run(args: &RingArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    let (report, hists) = measure(args)?;
    super::report::Outputs {
        json: args.json,
        hgrm_dir: args.hgrm.as_deref(),
        plot: args.plot.as_deref(),
        title: format!(
            "one-way latency, {}-byte messages ({}), {}",
            report.params.msg_bytes, report.params.mode, report.host.cpu_model
        ),
    }
    .write(
        out,
        &report,
        report.table(),
        &report.notes,
        &report.results,
        &hists,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (total, rounds) in [(10u64, 3u32), (5, 5), (1_000_001, 7)] {
            let s: u64 = (0..rounds).map(|r| share(total, rounds, r)).sum();
            assert_eq!(s, total);
        }
    }

    #[test]
    fn sizes_and_capacities_are_checked() {
        assert_eq!(parse_msg_bytes("64"), Ok(64));
        assert!(parse_msg_bytes("65").is_err());
        assert!(parse_msg_bytes("8").is_err());
        assert_eq!(parse_cores("2,3"), Ok([2, 3]));
        assert!(parse_cores("2").is_err());
        assert!(parse_cores("1,2,3").is_err());
        assert!(parse_cores("a,b").is_err());
        assert_eq!(parse_capacity("65536"), Ok(65536));
        assert!(parse_capacity("5000").is_err());
        assert!(parse_capacity("2048").is_err());
    }
}
