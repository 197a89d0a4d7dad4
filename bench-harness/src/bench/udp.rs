//! The `udp` scenario: one-way latency, throughput and loss recovery of the network
//! transport, shm -> [`Sender`] -> UDP multicast -> [`Receiver`] -> shm, beside a raw UDP
//! ping-pong floor on the same interface and cores, measured in the same run.
//!
//! Phases, all with 64-byte messages (by default) carrying their sequence number and their
//! intended send time (see [`super::transport::encode`]):
//!
//! 1. **Latency**, in rounds that alternate with the floor so that drift spreads over both,
//!    in one of the two modes of `bench ring`:
//!    - `udp-floor`: raw UDP over multicast on the interface, nonblocking sockets
//!      busy-polled, between the two cpus on either side of the UDP hop;
//!    - `mdbus-udp`: a producer publishes into a local stream; the sender multicasts it; the
//!      receiver publishes it into another local stream; a consumer reads it and records
//!      `receive time - send time` on the shared clock.
//!
//!    Ping-pong mode (the default): one message in flight; the floor is a ping-pong (one
//!    group each way), one-way = RTT/2; mdbus-udp publishes the next message when the
//!    consumer has the previous one. Fixed-rate mode (`--rate`): both send at the rate,
//!    stamped with the intended send time, and latency is measured from it (no coordinated
//!    omission: a stall shows in every message queued behind it).
//! 2. **Throughput**: the producer publishes as fast as the pipeline drains, with at most a
//!    window of messages in flight (the sender reads a broadcast ring: it must not be lapped).
//! 3. **Recovery**: the fixed-rate stream again, with the sender's fault injector dropping a
//!    share of its packets (1% by default, seeded). The messages of the dropped packets, by
//!    the injector's log, are recovered by re-request; their latency from the intended send
//!    time is the recovery latency, compared with the target: two round trips (of the
//!    floor) plus the receiver's NAK delay.
//!
//! Thread layouts (`--cpus`): with two cpus, the producer and the consumer are one measuring
//! thread on the first and one transport thread on the second drives the sender and the
//! receiver alternately (`poll_once` each); with four, producer, sender, receiver and consumer
//! each have their own cpu. Every thread busy-polls, or yields when it shares its cpu with
//! another. The measured loops allocate nothing: latencies go into a buffer sized before the
//! run, histograms are built afterwards.
//!
//! With a core layout (`--layout FILE`, `$MDBUS_LAYOUT`; see [`crate::pinning`]) the threads
//! take their cpus and runtime settings from its roles ([`THREADS`]): the four-cpu placement
//! when the layout puts `producer`/`feed_handler`, `sender`, `receiver` and
//! `consumer`/`strategy` on four distinct cpus, else the two-cpu placement with the measuring
//! thread in the producer's role and the transport thread in the first of `sender`,
//! `receiver`, `consumer`/`strategy` on another cpu (a note says why). An explicit `--cpus`
//! still chooses the cpus; the layout's roles then give only the other settings.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use mdbus_bus::{
    Bus, Mode, Publisher, Resync, StartAt, StreamConfig, SubscribeOptions, Subscriber,
};
use mdbus_feed_handlers::net::fault::FaultConfig;
use mdbus_feed_handlers::net::socket::{SendOptions, recv_socket, send_socket};
use mdbus_feed_handlers::net::{
    Receiver, ReceiverConfig, ReceiverStats, RequestServer, Sender, SenderConfig, SenderStats,
};
use serde::{Deserialize, Serialize};

use super::BenchError;
use super::clock::BenchClock;
use super::engine::{Spinner, new_histogram};
use super::host::{self, HostInfo};
use super::report::SystemResult;
use super::ring::share;
use super::transport::{HEADER_BYTES, Msg, decode, encode, filled};
use crate::pinning::{LayoutArg, LayoutUse, Pinning, ThreadRole};
use crate::units::DurationArg;

/// The `msg_type` of the harness's records (gap notices have another).
const MSG_TYPE: u32 = 100;

/// Largest message size (bytes) the scenario sends.
const MAX_MSG_BYTES: usize = 1024;

/// Latency samples of each system when `--count` is not given.
pub const DEFAULT_COUNT: u64 = 100_000;
/// Messages per second of the fixed-rate phases when `--rate` is not given.
pub const DEFAULT_RATE: u64 = 20_000;
/// Messages in the throughput phase when `--throughput-count` is not given.
pub const DEFAULT_THROUGHPUT_COUNT: u64 = 2_000_000;
/// Messages in the recovery phase when `--recovery-count` is not given.
pub const DEFAULT_RECOVERY_COUNT: u64 = 200_000;
/// Rounds when `--rounds` is not given.
pub const DEFAULT_ROUNDS: u32 = 5;

/// `--quick`: latency samples, warm-up messages per round, rounds, throughput messages and
/// recovery messages of the short smoke run.
pub const QUICK: (u64, u64, u32, u64, u64) = (2_000, 200, 2, 20_000, 10_000);

/// The threads of the four-cpu placement and the layout roles they take their cpus from.
pub const THREADS: [ThreadRole; 4] = [
    ThreadRole {
        thread: "producer",
        roles: &["producer", "feed_handler"],
    },
    ThreadRole {
        thread: "sender",
        roles: &["sender"],
    },
    ThreadRole {
        thread: "receiver",
        roles: &["receiver"],
    },
    ThreadRole {
        thread: "consumer",
        roles: &["consumer", "strategy"],
    },
];

/// The measuring thread of the two-cpu placement (producer and consumer in turns): the
/// producer's roles.
const MEASURING: ThreadRole = ThreadRole {
    thread: "producer+consumer",
    roles: &["producer", "feed_handler"],
};

/// The transport thread of the two-cpu placement (sender and receiver in turns), by the role
/// it takes: `sender`, `receiver`, `consumer`/`strategy`, or (with `--cpus`) the first of all.
const TRANSPORT: [ThreadRole; 4] = [
    ThreadRole {
        thread: "sender+receiver",
        roles: &["sender"],
    },
    ThreadRole {
        thread: "sender+receiver",
        roles: &["receiver"],
    },
    ThreadRole {
        thread: "sender+receiver",
        roles: &["consumer", "strategy"],
    },
    ThreadRole {
        thread: "sender+receiver",
        roles: &["sender", "receiver", "consumer", "strategy"],
    },
];

/// Messages after the last measured one in the recovery phase (not recorded), so that a loss
/// among the last measured messages is detected by the traffic after it, not by a heartbeat.
const RECOVERY_TAIL: u64 = 200;

/// `mdbus bench udp`: the network transport's one-way latency beside the raw UDP floor,
/// throughput, and recovery latency under injected loss.
#[derive(clap::Args, Debug, Clone)]
pub struct UdpArgs {
    /// Print exactly one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// A short smoke run (about a second): 2000 latency samples per system, 200 warm-up
    /// messages, 2 rounds, 20000 throughput and 10000 recovery messages (flags given
    /// explicitly still apply).
    #[arg(long)]
    pub quick: bool,
    /// Message size in bytes (16..=1024).
    #[arg(long, default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(HEADER_BYTES as u64..=MAX_MSG_BYTES as u64))]
    pub msg_bytes: u64,
    /// Latency samples per system, over all rounds [default: 100000].
    #[arg(long)]
    pub count: Option<u64>,
    /// Untimed messages (and ping-pongs) before each system's timed part of every round
    /// [default: 2000].
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Rounds the floor and mdbus-udp alternate in [default: 5].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: Option<u32>,
    /// Fixed-rate latency mode: messages per second; both systems are timed one-way from each
    /// message's intended send time (no coordinated omission). Without it: ping-pong mode,
    /// one message in flight (the floor's one-way = RTT/2, mdbus-udp's one-way measured
    /// directly on the shared clock).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub rate: Option<u64>,
    /// Messages per second of the (always fixed-rate) recovery phase.
    #[arg(long, default_value_t = DEFAULT_RATE,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub recovery_rate: u64,
    /// Messages of the throughput phase (0 skips it) [default: 2000000].
    #[arg(long)]
    pub throughput_count: Option<u64>,
    /// Most messages in flight (published, not yet received) in the throughput phase.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub window: u64,
    /// Messages of the recovery phase (0 skips it) [default: 200000].
    #[arg(long)]
    pub recovery_count: Option<u64>,
    /// Share of the sender's packets dropped in the recovery phase.
    #[arg(long, default_value_t = 0.01)]
    pub loss: f64,
    /// Seed of the fault injector.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The receiver's NAK delay (how long a gap may be mere reordering), e.g. `1ms`.
    #[arg(long, value_name = "DURATION", default_value = "1ms")]
    pub nak_delay: DurationArg,
    /// Old spelling of --nak-delay, in microseconds.
    #[arg(long, hide = true, value_name = "US")]
    pub nak_delay_us: Option<u64>,
    /// Cpus to pin to: two (`A,B`: producer+consumer on A, sender+receiver on B) or four
    /// (`P,S,R,C`: producer, sender, receiver, consumer); wins over --layout [default: the
    /// layout's producer, sender, receiver and consumer cpus with a layout, else the first four
    /// cpus this process may run on when it has four, else the first two].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
    /// The core layout (`--layout FILE` or `$MDBUS_LAYOUT`).
    #[command(flatten)]
    pub layout: LayoutArg,
    /// Interface address to multicast on and join with.
    #[arg(long, default_value = "127.0.0.1")]
    pub interface: Ipv4Addr,
    /// Multicast group of the transport; the floor uses the next two addresses.
    #[arg(long, default_value = "239.255.77.1")]
    pub group: Ipv4Addr,
    /// Folder for the streams [default: a fresh temporary folder under /dev/shm].
    #[arg(long)]
    pub shm_root: Option<PathBuf>,
    /// Write one HdrHistogram percentile distribution (`<system>.hgrm`) per system here.
    #[arg(long, value_name = "DIR")]
    pub hgrm: Option<PathBuf>,
    /// Write a latency-by-percentile chart (SVG) here.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Give up when a phase shows no progress for this long (at least 1s).
    #[arg(long, value_name = "DURATION", default_value = "20s")]
    pub stall_timeout: DurationArg,
    /// Old spelling of --stall-timeout, in seconds.
    #[arg(long, hide = true, value_name = "SECS")]
    pub stall_secs: Option<u64>,
}

/// Where one thread ran.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ThreadPlace {
    /// The thread (`producer+consumer`, `sender+receiver`, `producer`, ...).
    pub thread: String,
    /// Its cpu.
    pub cpu: usize,
}

/// The parameters a udp run used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UdpParams {
    /// `ping-pong` (one message in flight; the floor's one-way = RTT/2) or `fixed-rate`
    /// (one-way from the intended send time, both systems).
    pub mode: String,
    /// Message size in bytes.
    pub msg_bytes: usize,
    /// Latency samples per system.
    pub count: u64,
    /// Untimed messages before each system's timed part of every round.
    pub warmup: u64,
    /// Rounds the systems were interleaved in.
    pub rounds: u32,
    /// Fixed-rate mode: messages per second of the latency phase.
    pub rate: Option<u64>,
    /// Messages per second of the recovery phase.
    pub recovery_rate: u64,
    /// Messages of the throughput phase (0: skipped).
    pub throughput_count: u64,
    /// Most messages in flight in the throughput phase.
    pub window: u64,
    /// Measured messages of the recovery phase (0: skipped).
    pub recovery_count: u64,
    /// Share of the sender's packets dropped in the recovery phase.
    pub loss: f64,
    /// Seed of the fault injector.
    pub seed: u64,
    /// The receiver's NAK delay, ns.
    pub nak_delay_ns: u64,
    /// Largest datagram the sender sends.
    pub max_datagram: usize,
    /// Multicast group and port of the transport.
    pub group: String,
    /// Interface address.
    pub interface: String,
    /// `2-cpu` or `4-cpu`, and what runs where, in words.
    pub layout: String,
    /// Where each thread ran.
    pub threads: Vec<ThreadPlace>,
    /// The two cpus the floor's ping-pong ran between.
    pub floor_cpus: [usize; 2],
    /// The systems, in the order of the first round.
    pub systems: Vec<String>,
}

/// Recovery latency under injected loss, beside its target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryResult {
    /// Packets the sender's fault injector dropped (data packets only).
    pub dropped_packets: u64,
    /// Messages in those packets (all of them must come back by re-request).
    pub dropped_messages: u64,
    /// Measured messages among them (after warm-up, before the tail): the recovery samples.
    pub samples: u64,
    /// Messages the receiver recovered by re-request.
    pub recovered: u64,
    /// Messages the receiver could not recover.
    pub unrecoverable: u64,
    /// Re-requests the receiver sent.
    pub requests: u64,
    /// Recovery latency (from the lost message's intended send time to its delivery), ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// Largest, ns.
    pub max_ns: u64,
    /// The receiver's NAK delay, ns.
    pub nak_delay_ns: u64,
    /// One round trip: twice the floor's one-way p99, ns.
    pub rtt_ns: u64,
    /// The target for recovery p99: `2 * rtt_ns + nak_delay_ns`.
    pub target_p99_ns: u64,
    /// Whether `p99_ns <= target_p99_ns`.
    pub met: bool,
    /// The interval between messages at the fixed rate, ns: a lost packet is detected only
    /// when the next one arrives, so no recovery can be faster than this plus the NAK delay.
    pub detect_interval_ns: u64,
    /// Whether `p99_ns <= target_p99_ns + detect_interval_ns`.
    pub met_with_detection: bool,
    /// Latency of every measured message of the lossy run (the ones queued behind a gap wait
    /// for it: the receiver delivers in order).
    pub all_messages: SystemResult,
}

/// What one transport loop turn costs when there is nothing to do, measured on the transport
/// cpu: each turn of the receiver polls its sockets with a system call each.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleCost {
    /// One idle `Sender::poll_once`, ns (mean over many).
    pub sender_turn_ns: f64,
    /// One idle `Receiver::poll_once`, ns (mean over many).
    pub receiver_turn_ns: f64,
    /// One `recv` on an empty nonblocking UDP socket (`EAGAIN`), ns (mean over many).
    pub empty_recv_ns: f64,
}

/// The JSON document of `mdbus bench udp --json` (the shape of `bench ring --json`, plus the
/// recovery section).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UdpReport {
    /// Always `udp`.
    pub scenario: String,
    /// `udp-floor`, `mdbus-udp` and `mdbus-udp-recovery` (when the recovery phase ran).
    pub results: Vec<SystemResult>,
    /// Recovery latency under loss and its target (`null` when skipped).
    pub recovery: Option<RecoveryResult>,
    /// Cost of idle transport loop turns.
    pub idle_cost: IdleCost,
    /// Sender counters of the latency phase.
    pub sender: SenderCounters,
    /// The machine.
    pub host: HostInfo,
    /// The core layout the threads were pinned by (`--layout`, `$MDBUS_LAYOUT`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<LayoutUse>,
    /// What was run.
    pub params: UdpParams,
    /// Warnings and remarks.
    pub notes: Vec<String>,
}

/// A few sender and receiver counters of the latency phase (packets per message shows the
/// batching).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SenderCounters {
    /// Messages sent.
    pub messages: u64,
    /// Data packets sent.
    pub packets: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Messages delivered by the receiver.
    pub received: u64,
    /// Gaps the receiver saw (none expected without injected loss).
    pub gaps: u64,
}

fn udp_err(reason: impl std::fmt::Display) -> BenchError {
    BenchError::Transfer {
        system: "mdbus-udp".into(),
        reason: reason.to_string(),
    }
}

fn floor_err(reason: impl std::fmt::Display) -> BenchError {
    BenchError::Transfer {
        system: "udp-floor".into(),
        reason: reason.to_string(),
    }
}

/// The thread layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Producer+consumer on `a`, sender+receiver on `b`.
    Two { a: usize, b: usize },
    /// One cpu per thread.
    Four {
        p: usize,
        s: usize,
        r: usize,
        c: usize,
    },
}

impl Layout {
    fn describe(self) -> String {
        match self {
            Layout::Two { a, b } => format!(
                "2-cpu: producer+consumer (one measuring thread) on cpu {a}, sender+receiver \
                 (one transport thread calling Sender::poll_once then Receiver::poll_once) on \
                 cpu {b}"
            ),
            Layout::Four { p, s, r, c } => format!(
                "4-cpu: producer on cpu {p}, sender on cpu {s}, receiver on cpu {r}, consumer \
                 on cpu {c}"
            ),
        }
    }

    fn threads(self) -> Vec<ThreadPlace> {
        let t = |thread: &str, cpu| ThreadPlace {
            thread: thread.into(),
            cpu,
        };
        match self {
            Layout::Two { a, b } => vec![t("producer+consumer", a), t("sender+receiver", b)],
            Layout::Four { p, s, r, c } => vec![
                t("producer", p),
                t("sender", s),
                t("receiver", r),
                t("consumer", c),
            ],
        }
    }

    /// The cpus on either side of the UDP hop (where the floor's threads run).
    fn floor_cpus(self) -> [usize; 2] {
        match self {
            Layout::Two { a, b } => [a, b],
            Layout::Four { s, r, .. } => [s, r],
        }
    }

    /// The threads (indices into [`Layout::threads`]) whose cpus the floor's two threads run
    /// on, taking their roles.
    fn floor_threads(self) -> [usize; 2] {
        match self {
            Layout::Two { .. } => [0, 1],
            Layout::Four { .. } => [1, 2],
        }
    }

    /// The thread whose cpu (and role) the transport's idle cost is measured on.
    fn transport_thread(self) -> usize {
        match self {
            Layout::Two { .. } => 1,
            Layout::Four { .. } => 2,
        }
    }

    /// The cpu of thread `i` (in the order of [`Layout::threads`]).
    fn cpu(self, i: usize) -> usize {
        match (self, i) {
            (Layout::Two { a, .. }, 0) => a,
            (Layout::Two { b, .. }, _) => b,
            (Layout::Four { p, .. }, 0) => p,
            (Layout::Four { s, .. }, 1) => s,
            (Layout::Four { r, .. }, 2) => r,
            (Layout::Four { c, .. }, _) => c,
        }
    }

    fn cpus(self) -> Vec<usize> {
        self.threads().iter().map(|t| t.cpu).collect()
    }

    /// Whether two busy-polling threads share a cpu.
    fn shares_a_cpu(self) -> bool {
        let cpus = self.cpus();
        (1..cpus.len()).any(|i| cpus[..i].contains(&cpus[i]))
    }

    fn from_cpus(cpus: &[usize]) -> Option<Layout> {
        match *cpus {
            [a, b] => Some(Layout::Two { a, b }),
            [p, s, r, c] => Some(Layout::Four { p, s, r, c }),
            _ => None,
        }
    }
}

/// With the cpus a layout gives the roles of [`THREADS`] (producer, sender, receiver,
/// consumer; `None`: the layout lacks it), the placement to use: `None` for four cpus (the four
/// are there, on distinct cpus; or a role the two-cpu placement needs is missing, which the
/// four-cpu placement then reports), else `Some(k)`: two cpus, the transport thread as
/// [`TRANSPORT`]`[k]`, the first candidate on a cpu other than the producer's (else the first
/// there is).
fn two_or_four(roles: [Option<usize>; 4]) -> Option<usize> {
    let [p, s, r, c] = roles;
    let p = p?;
    if let [Some(s), Some(r), Some(c)] = [s, r, c]
        && Layout::from_cpus(&[p, s, r, c]).is_some_and(|l| !l.shares_a_cpu())
    {
        return None;
    }
    let candidates = [s, r, c];
    candidates
        .iter()
        .position(|x| x.is_some_and(|x| x != p))
        .or_else(|| candidates.iter().position(Option::is_some))
}

/// Chooses the layout from `--cpus`, the core layout file, or this process's affinity, in
/// that order; notes what is unusual. With a core layout, also its placement.
fn choose_placement(
    cpus: Option<&[usize]>,
    layout: &LayoutArg,
    notes: &mut Vec<String>,
) -> Result<(Layout, bool, Option<Pinning>), BenchError> {
    let Some(path) = layout.path() else {
        let (l, pin) = choose_layout(cpus, notes)?;
        return Ok((l, pin, None));
    };
    let bad = |e: crate::pinning::PinningError| BenchError::BadArg(e.to_string());
    let (placement, pinning) = match cpus {
        Some(cpus) => {
            // Checks the cpus and notes a shared one; the layout gives the roles.
            let (l, _) = choose_layout(Some(cpus), notes)?;
            let threads: &[ThreadRole] = match l {
                Layout::Two { .. } => &[MEASURING, TRANSPORT[3]],
                Layout::Four { .. } => &THREADS,
            };
            let p = Pinning::from_layout(&path, threads, Some(cpus)).map_err(bad)?;
            (l, p)
        }
        None => {
            let file = mdbus_tuning::Layout::load(&path)
                .map_err(|e| bad(crate::pinning::PinningError::Layout(e)))?;
            let roles = THREADS.map(|t| t.roles.iter().find_map(|r| file.core_for(r, 0)));
            match two_or_four(roles) {
                None => {
                    let p = Pinning::from_layout(&path, &THREADS, None).map_err(bad)?;
                    let l = Layout::Four {
                        p: p.cpu(0),
                        s: p.cpu(1),
                        r: p.cpu(2),
                        c: p.cpu(3),
                    };
                    (l, p)
                }
                Some(k) => {
                    let p = Pinning::from_layout(&path, &[MEASURING, TRANSPORT[k]], None)
                        .map_err(bad)?;
                    let why = match roles {
                        [_, Some(_), Some(_), Some(_)] => format!(
                            "its producer, sender, receiver and consumer roles are not on four \
                             distinct cpus ({})",
                            roles
                                .iter()
                                .flatten()
                                .map(usize::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        _ => {
                            let missing: Vec<String> = THREADS
                                .iter()
                                .zip(roles)
                                .filter(|(_, cpu)| cpu.is_none())
                                .map(|(t, _)| {
                                    t.roles
                                        .iter()
                                        .map(|r| format!("{r:?}"))
                                        .collect::<Vec<_>>()
                                        .join(" or ")
                                })
                                .collect();
                            format!("it lacks role {}", missing.join(" and role "))
                        }
                    };
                    notes.push(format!(
                        "layout {}: the 2-cpu placement, as {why}; the transport thread takes \
                         the {}'s role",
                        path.display(),
                        ["sender", "receiver", "consumer"][k]
                    ));
                    (
                        Layout::Two {
                            a: p.cpu(0),
                            b: p.cpu(1),
                        },
                        p,
                    )
                }
            }
        }
    };
    if cpus.is_none() && placement.shares_a_cpu() {
        notes.push(format!(
            "threads share a cpu ({:?}): they yield instead of busy-polling, so the figures \
             are scheduler latencies",
            placement.cpus()
        ));
    }
    notes.extend(pinning.describe());
    Ok((placement, true, Some(pinning)))
}

/// Chooses the layout from `--cpus` or this process's affinity; notes what is unusual.
fn choose_layout(
    requested: Option<&[usize]>,
    notes: &mut Vec<String>,
) -> Result<(Layout, bool), BenchError> {
    let allowed: Option<Vec<usize>> =
        core_affinity::get_core_ids().map(|v| v.into_iter().map(|c| c.id).collect());
    if let (Some(r), Some(a)) = (requested, &allowed)
        && let Some(bad) = r.iter().find(|c| !a.contains(c))
    {
        return Err(BenchError::BadArg(format!(
            "--cpus: cpu {bad} is not one this process may run on ({a:?})"
        )));
    }
    let pick = |c: &[usize]| {
        Layout::from_cpus(c).ok_or_else(|| {
            BenchError::BadArg(format!(
                "--cpus: give two cpus (A,B) or four (P,S,R,C), not {c:?}"
            ))
        })
    };
    match (requested, allowed) {
        (Some(r), _) => {
            let layout = pick(r)?;
            if layout.shares_a_cpu() {
                notes.push(format!(
                    "--cpus {:?}: threads share a cpu, so they yield instead of busy-polling \
                     and the figures are scheduler latencies",
                    layout.cpus()
                ));
            }
            Ok((layout, true))
        }
        (None, Some(a)) if a.len() >= 4 => Ok((pick(&a[..4])?, true)),
        (None, Some(a)) if a.len() >= 2 => Ok((pick(&a[..2])?, true)),
        (None, Some(a)) if a.len() == 1 => {
            notes.push(format!(
                "only cpu {} is available: all threads share it and yield instead of \
                 busy-polling, so the figures are scheduler latencies",
                a[0]
            ));
            Ok((Layout::Two { a: a[0], b: a[0] }, true))
        }
        _ => {
            notes.push("cannot read this process's cpu affinity: threads run unpinned".into());
            Ok((Layout::Two { a: 0, b: 1 }, false))
        }
    }
}

/// What every phase shares.
struct Env<'a> {
    clock: &'a BenchClock,
    layout: Layout,
    pin: bool,
    /// With a core layout: where each thread of `layout` runs and what its role applies.
    pinning: Option<&'a Pinning>,
    /// Threads share a cpu: waiting threads yield instead of spinning.
    yield_spin: bool,
    stall: Duration,
    msg_bytes: usize,
    args: &'a UdpArgs,
    root: &'a Path,
    /// Pinning failures (any thread).
    unpinned: AtomicBool,
    /// Pipelines made so far (each gets its own folders and ports).
    made: AtomicU64,
}

impl Env<'_> {
    /// Called first in a thread that runs on the cpu of thread `i` of the layout (see
    /// [`Layout::threads`]): pins it there and, with a core layout, applies that thread's role.
    fn pin(&self, i: usize) {
        if !self.pin {
            return;
        }
        let pinned = match self.pinning {
            Some(p) => p.enter(i),
            None => core_affinity::set_for_current(core_affinity::CoreId {
                id: self.layout.cpu(i),
            }),
        };
        if !pinned {
            self.unpinned.store(true, Ordering::Relaxed);
        }
    }

    /// A [`Spinner`] that yields when threads share a cpu.
    fn watch<'w>(&self, abort: &'w AtomicBool, what: &'static str) -> Spinner<'w> {
        Spinner::with(abort, self.stall, self.yield_spin, what)
    }

    /// One turn of waiting: a spin-loop hint, or a yield when threads share a cpu.
    #[inline(always)]
    fn relax(&self) {
        if self.yield_spin {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// A free UDP port on `interface` (bound and released; the kernel does not hand it out again
/// at once).
fn free_port(interface: Ipv4Addr) -> Result<u16, BenchError> {
    let s = UdpSocket::bind(SocketAddrV4::new(interface, 0))
        .map_err(|e| udp_err(format!("finding a free port on {interface}: {e}")))?;
    let port = s
        .local_addr()
        .map_err(|e| udp_err(format!("finding a free port: {e}")))?
        .port();
    Ok(port)
}

// ---------------------------------------------------------------------------------------------
// the floor: raw UDP multicast ping-pong

/// The floor's sockets: pinger sends on `ping` to group 1 and receives group 2 on `pong_in`;
/// the echoer receives group 1 on `ping_in` and sends on `pong` to group 2.
struct Floor {
    ping: UdpSocket,
    pong_in: UdpSocket,
    ping_in: UdpSocket,
    pong: UdpSocket,
}

fn next_group(g: Ipv4Addr, k: u8) -> Ipv4Addr {
    let o = g.octets();
    Ipv4Addr::new(o[0], o[1], o[2], o[3].wrapping_add(k))
}

impl Floor {
    fn new(args: &UdpArgs) -> Result<Floor, BenchError> {
        let mut warnings = Vec::new();
        let g1 = SocketAddrV4::new(next_group(args.group, 1), free_port(args.interface)?);
        let g2 = SocketAddrV4::new(next_group(args.group, 2), free_port(args.interface)?);
        let opts = SendOptions {
            interface: args.interface,
            ttl: 1,
            loopback: true,
            sndbuf: 0,
        };
        // The receiver's buffer size, so that the fixed-rate floor survives a preempted
        // receiving thread as well as mdbus-udp does.
        let rcvbuf = ReceiverConfig::new("udp", g1).rcvbuf;
        let ping_in =
            recv_socket(g1, None, args.interface, rcvbuf, &mut warnings).map_err(floor_err)?;
        let pong_in =
            recv_socket(g2, None, args.interface, rcvbuf, &mut warnings).map_err(floor_err)?;
        let ping = send_socket(g1, &opts, &mut warnings).map_err(floor_err)?;
        let pong = send_socket(g2, &opts, &mut warnings).map_err(floor_err)?;
        Ok(Floor {
            ping,
            pong_in: pong_in.socket,
            ping_in: ping_in.socket,
            pong,
        })
    }

    /// `warmup + count` ping-pongs; records RTT/2 of the last `count` into `hist`.
    fn run(
        &self,
        env: &Env<'_>,
        warmup: u64,
        count: u64,
        hist: &mut Histogram<u64>,
    ) -> Result<(), BenchError> {
        let abort = AtomicBool::new(false);
        let barrier = std::sync::Barrier::new(2);
        let [ca, cb] = env.layout.floor_threads();
        let clock = env.clock;
        let n = env.msg_bytes;
        let total = warmup + count;
        let pinger = || -> Result<(), BenchError> {
            env.pin(ca);
            let mut w = env.watch(&abort, "waiting for the UDP echo");
            let mut out = [0u8; MAX_MSG_BYTES];
            out[..n].copy_from_slice(&filled::<MAX_MSG_BYTES>()[..n]);
            let mut back = [0u8; MAX_MSG_BYTES];
            barrier.wait();
            for i in 0..total {
                let t0 = clock.now();
                encode(&mut out, Msg { seq: i, stamp: t0 });
                self.ping.send(&out[..n]).map_err(floor_err)?;
                let len = recv_spinning(&self.pong_in, &mut back, &mut w)?;
                let t1 = clock.now();
                w.progressed();
                let m = decode(&back[..len]).map_err(floor_err)?;
                if m.seq != i || len != n {
                    return Err(floor_err(format!(
                        "echo of ping {i} came back as {} ({len} bytes)",
                        m.seq
                    )));
                }
                if i >= warmup {
                    hist.saturating_record(clock.delta_ns(t0, t1) / 2);
                }
            }
            Ok(())
        };
        let echoer = || -> Result<(), BenchError> {
            env.pin(cb);
            let mut w = env.watch(&abort, "waiting for the UDP ping");
            let mut buf = [0u8; MAX_MSG_BYTES];
            barrier.wait();
            for _ in 0..total {
                let len = recv_spinning(&self.ping_in, &mut buf, &mut w)?;
                w.progressed();
                self.pong.send(&buf[..len]).map_err(floor_err)?;
            }
            Ok(())
        };
        both(&abort, pinger, echoer)
    }
}

/// The next datagram on nonblocking `sock`, waiting with `w` until one comes (the caller
/// tells `w` of the progress, after taking its timestamp).
#[inline(always)]
fn recv_spinning(
    sock: &UdpSocket,
    buf: &mut [u8],
    w: &mut Spinner<'_>,
) -> Result<usize, BenchError> {
    loop {
        match sock.recv(buf) {
            Ok(len) => return Ok(len),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => w.spin()?,
            Err(e) => return Err(floor_err(e)),
        }
    }
}

impl Floor {
    /// Fixed rate: one datagram every `interval` clock ticks from the first floor cpu to the
    /// second, stamped with its intended send time; the receiver records one-way latency
    /// from that time for the last `count` of `warmup + count`.
    fn run_fixed(
        &self,
        env: &Env<'_>,
        warmup: u64,
        count: u64,
        interval: u64,
        hist: &mut Histogram<u64>,
    ) -> Result<(), BenchError> {
        let abort = AtomicBool::new(false);
        let barrier = std::sync::Barrier::new(2);
        let [ca, cb] = env.layout.floor_threads();
        let clock = env.clock;
        let n = env.msg_bytes;
        let total = warmup + count;
        let sender = || -> Result<(), BenchError> {
            env.pin(ca);
            let mut out = filled::<MAX_MSG_BYTES>();
            barrier.wait();
            let start = clock.now().wrapping_add(interval.saturating_mul(16));
            for i in 0..total {
                let intended = start.wrapping_add(i.wrapping_mul(interval));
                while clock.now() < intended {
                    env.relax();
                }
                encode(
                    &mut out,
                    Msg {
                        seq: i,
                        stamp: intended,
                    },
                );
                self.ping.send(&out[..n]).map_err(floor_err)?;
                if i & 0xff == 0 && abort.load(Ordering::Relaxed) {
                    return Err(BenchError::Aborted);
                }
            }
            Ok(())
        };
        let receiver = || -> Result<(), BenchError> {
            env.pin(cb);
            let mut w = env.watch(&abort, "receiving UDP datagrams at a fixed rate");
            let mut buf = [0u8; MAX_MSG_BYTES];
            barrier.wait();
            let mut next = 0u64;
            while next < total {
                let len = recv_spinning(&self.ping_in, &mut buf, &mut w)?;
                let now = clock.now();
                w.progressed();
                let m = decode(&buf[..len]).map_err(floor_err)?;
                if m.seq != next {
                    return Err(floor_err(format!(
                        "received datagram {} where {next} was due (the socket buffer \
                         overflowed?)",
                        m.seq
                    )));
                }
                if next >= warmup {
                    hist.saturating_record(clock.delta_ns(m.stamp, now));
                }
                next += 1;
            }
            Ok(())
        };
        both(&abort, sender, receiver)
    }
}

/// Runs two closures on two scoped threads; when one fails the other is told to stop; returns
/// the first real error (not the induced `Aborted`).
fn both<A, B>(abort: &AtomicBool, a: A, b: B) -> Result<(), BenchError>
where
    A: FnOnce() -> Result<(), BenchError> + Send,
    B: FnOnce() -> Result<(), BenchError> + Send,
{
    let (ra, rb) = std::thread::scope(|s| {
        let hb = s.spawn(|| {
            let r = b();
            if r.is_err() {
                abort.store(true, Ordering::Relaxed);
            }
            r
        });
        let ha = s.spawn(|| {
            let r = a();
            if r.is_err() {
                abort.store(true, Ordering::Relaxed);
            }
            r
        });
        (ha.join(), hb.join())
    });
    let ra = ra.map_err(|_| BenchError::Internal("a benchmark thread panicked".into()))?;
    let rb = rb.map_err(|_| BenchError::Internal("a benchmark thread panicked".into()))?;
    match (ra, rb) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(BenchError::Aborted), Err(e)) | (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------
// the pipeline: publisher -> Sender -> multicast -> Receiver -> subscriber

/// One transport session end to end, with its own folders and ports.
struct Pipe {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    publisher: Publisher,
    sender: Sender,
    receiver: Receiver,
    sub: Subscriber,
    group: SocketAddrV4,
    warnings: Vec<String>,
}

impl Pipe {
    fn new(env: &Env<'_>, fault: FaultConfig) -> Result<Pipe, BenchError> {
        let args = env.args;
        let k = env.made.fetch_add(1, Ordering::Relaxed);
        let dir = |side: &str| {
            tempfile::Builder::new()
                .prefix(&format!("udp-{k}-{side}-"))
                .tempdir_in(env.root)
                .map_err(|e| BenchError::ShmSetup {
                    path: env.root.to_path_buf(),
                    reason: e.to_string(),
                })
        };
        let (da, db) = (dir("tx")?, dir("rx")?);
        let setup = |e: mdbus_bus::BusError| udp_err(format!("setup: {e}"));
        let bus_a = Bus::with_root(da.path()).map_err(setup)?;
        let bus_b = Bus::with_root(db.path()).map_err(setup)?;
        let ring = StreamConfig {
            capacity: 4 << 20,
            max_msg_len: MAX_MSG_BYTES as u32,
            mode: Mode::Broadcast,
            prefault: true,
            ..StreamConfig::default()
        };
        let publisher = bus_a.publisher("udp", &ring).map_err(setup)?;
        let group = SocketAddrV4::new(args.group, free_port(args.interface)?);
        let mut tc = SenderConfig::new("udp", group);
        tc.send.interface = args.interface;
        tc.request_addr = SocketAddrV4::new(args.interface, 0);
        tc.start = StartAt::Oldest;
        tc.fault = fault;
        let sender = Sender::new(&bus_a, tc).map_err(|e| udp_err(format!("sender: {e}")))?;
        let server = match sender.request_addr() {
            Ok(SocketAddr::V4(a)) => SocketAddrV4::new(args.interface, a.port()),
            Ok(other) => return Err(udp_err(format!("request server on {other}"))),
            Err(e) => return Err(udp_err(format!("request server address: {e}"))),
        };
        let mut rc = ReceiverConfig::new("udp", group);
        rc.interface = args.interface;
        rc.request_server = RequestServer::Addr(server);
        rc.ring = ring;
        rc.sequencer.nak_delay = args.nak_delay.0;
        let receiver = Receiver::new(&bus_b, rc).map_err(|e| udp_err(format!("receiver: {e}")))?;
        let opts = SubscribeOptions {
            start: StartAt::Oldest,
            resync: Resync::Oldest,
            lossless: false,
            ..SubscribeOptions::default()
        };
        let sub = bus_b.subscriber("udp", &opts).map_err(setup)?;
        let mut warnings: Vec<String> = sender.warnings().to_vec();
        warnings.extend(receiver.warnings().iter().cloned());
        Ok(Pipe {
            _dirs: (da, db),
            publisher,
            sender,
            receiver,
            sub,
            group,
            warnings,
        })
    }
}

/// How the producer paces itself.
#[derive(Clone, Copy)]
enum Pace<'a> {
    /// One message every `interval` clock ticks from `start`, stamped with its intended time.
    Fixed { start: u64, interval: u64 },
    /// As fast as possible with at most `window` messages not yet received (`received` is
    /// the consumer's count), stamped with the actual time.
    Window {
        window: u64,
        received: &'a AtomicU64,
    },
}

/// The producer side: publishes harness messages `base..base + n`.
struct Prod<'a> {
    publisher: &'a mut Publisher,
    clock: &'a BenchClock,
    pace: Pace<'a>,
    buf: [u8; MAX_MSG_BYTES],
    len: usize,
    next: u64,
    base: u64,
    end: u64,
}

impl Prod<'_> {
    /// Publishes the next message if it is due; returns whether it did.
    #[inline]
    fn step(&mut self) -> Result<bool, BenchError> {
        if self.next >= self.end {
            return Ok(false);
        }
        let stamp = match self.pace {
            Pace::Fixed { start, interval } => {
                let intended = start.wrapping_add((self.next - self.base).wrapping_mul(interval));
                if self.clock.now() < intended {
                    return Ok(false);
                }
                intended
            }
            Pace::Window { window, received } => {
                if self.next - self.base >= received.load(Ordering::Relaxed) + window {
                    return Ok(false);
                }
                self.clock.now()
            }
        };
        encode(
            &mut self.buf,
            Msg {
                seq: self.next,
                stamp,
            },
        );
        self.publisher
            .publish(MSG_TYPE, &self.buf[..self.len])
            .map_err(|e| udp_err(format!("publishing message {}: {e}", self.next)))?;
        self.next += 1;
        Ok(true)
    }

    fn done(&self) -> bool {
        self.next >= self.end
    }
}

/// The consumer side: receives harness messages `base..base + n` in order.
struct Cons<'a> {
    sub: &'a mut Subscriber,
    clock: &'a BenchClock,
    /// Latency of message `base + i` goes into `lat[i]` (when recording).
    lat: Option<&'a mut [u64]>,
    next: u64,
    base: u64,
    end: u64,
    received: &'a AtomicU64,
    /// Records other than harness messages (gap notices).
    notices: u64,
    /// Harness messages that never arrived (skipped over).
    lost: u64,
}

impl Cons<'_> {
    /// Takes one record if there is one; returns whether it did.
    #[inline]
    fn step(&mut self) -> Result<bool, BenchError> {
        let mut got: Option<(u32, Result<Msg, super::transport::XferError>)> = None;
        let r = self
            .sub
            .poll(|m| got = Some((m.msg_type(), decode(m.payload()))));
        let now = self.clock.now();
        match r {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => return Err(udp_err(format!("reading the received stream: {e}"))),
        }
        let Some((t, m)) = got else {
            return Ok(true);
        };
        if t != MSG_TYPE {
            self.notices += 1;
            return Ok(true);
        }
        let m = m.map_err(udp_err)?;
        if m.seq < self.next || m.seq >= self.end {
            return Err(udp_err(format!(
                "received message {} where {} was due",
                m.seq, self.next
            )));
        }
        self.lost += m.seq - self.next;
        if let Some(lat) = self.lat.as_deref_mut() {
            lat[(m.seq - self.base) as usize] = self.clock.delta_ns(m.stamp, now);
        }
        self.next = m.seq + 1;
        self.received
            .store(self.next - self.base, Ordering::Relaxed);
        Ok(true)
    }

    fn done(&self) -> bool {
        self.next >= self.end
    }
}

/// What a pipeline run saw at the consumer.
#[derive(Debug, Default, Clone, Copy)]
struct RunOutcome {
    notices: u64,
    lost: u64,
    /// Clock reading when the last message was received.
    end: u64,
}

/// Runs the producer, the transport and the consumer of `pipe` on the layout's threads until
/// the consumer has seen messages `base..base + n`.
fn drive(
    env: &Env<'_>,
    pipe: &mut Pipe,
    base: u64,
    n: u64,
    pace: impl FnOnce(&AtomicU64) -> Pace<'_>,
    lat: Option<&mut [u64]>,
) -> Result<RunOutcome, BenchError> {
    let abort = AtomicBool::new(false);
    let received = AtomicU64::new(0);
    let clock = env.clock;
    let Pipe {
        publisher,
        sender,
        receiver,
        sub,
        ..
    } = pipe;
    let mut prod = Prod {
        publisher,
        clock,
        pace: pace(&received),
        buf: [0; MAX_MSG_BYTES],
        len: env.msg_bytes,
        next: base,
        base,
        end: base + n,
    };
    prod.buf.copy_from_slice(&filled::<MAX_MSG_BYTES>());
    let mut cons = Cons {
        sub,
        clock,
        lat,
        next: base,
        base,
        end: base + n,
        received: &received,
        notices: 0,
        lost: 0,
    };
    let stop = AtomicBool::new(false);
    let transport_err = |e: mdbus_feed_handlers::net::NetError| udp_err(format!("transport: {e}"));
    match env.layout {
        Layout::Two { .. } => {
            let mut measure = || -> Result<RunOutcome, BenchError> {
                env.pin(0);
                let mut w = env.watch(&abort, "measuring (producer+consumer)");
                let r = (|| {
                    while !cons.done() {
                        let sent = prod.step()?;
                        if cons.step()? {
                            w.progressed();
                        } else if !sent {
                            w.spin()?;
                        }
                    }
                    Ok(RunOutcome {
                        notices: cons.notices,
                        lost: cons.lost,
                        end: clock.now(),
                    })
                })();
                stop.store(true, Ordering::Relaxed);
                r
            };
            let transport = || -> Result<(), BenchError> {
                env.pin(1);
                let mut observe = |_: u32, _: &[u8]| {};
                while !stop.load(Ordering::Relaxed) && !abort.load(Ordering::Relaxed) {
                    let sent = sender.poll_once().map_err(transport_err)?;
                    let got = receiver.poll_once(&mut observe).map_err(transport_err)?;
                    if env.yield_spin && sent.records == 0 && got.packets == 0 {
                        std::thread::yield_now();
                    }
                }
                Ok(())
            };
            let mut out = RunOutcome::default();
            both(
                &abort,
                || {
                    out = measure()?;
                    Ok(())
                },
                transport,
            )?;
            Ok(out)
        }
        Layout::Four { .. } => {
            let producer = || -> Result<(), BenchError> {
                env.pin(0);
                let mut w = env.watch(&abort, "producing");
                while !prod.done() {
                    if prod.step()? {
                        w.progressed();
                    } else {
                        w.spin()?;
                    }
                }
                Ok(())
            };
            let mut consumer = || -> Result<RunOutcome, BenchError> {
                env.pin(3);
                let mut w = env.watch(&abort, "consuming");
                let res = (|| {
                    while !cons.done() {
                        if cons.step()? {
                            w.progressed();
                        } else {
                            w.spin()?;
                        }
                    }
                    Ok(RunOutcome {
                        notices: cons.notices,
                        lost: cons.lost,
                        end: clock.now(),
                    })
                })();
                stop.store(true, Ordering::Relaxed);
                res
            };
            let send_loop = || -> Result<(), BenchError> {
                env.pin(1);
                while !stop.load(Ordering::Relaxed) && !abort.load(Ordering::Relaxed) {
                    let pr = sender.poll_once().map_err(transport_err)?;
                    if pr.records == 0 {
                        env.relax();
                    }
                }
                Ok(())
            };
            let recv_loop = || -> Result<(), BenchError> {
                env.pin(2);
                let mut observe = |_: u32, _: &[u8]| {};
                while !stop.load(Ordering::Relaxed) && !abort.load(Ordering::Relaxed) {
                    let pr = receiver.poll_once(&mut observe).map_err(transport_err)?;
                    if pr.packets == 0 {
                        env.relax();
                    }
                }
                Ok(())
            };
            let mut out = RunOutcome::default();
            both(
                &abort,
                || {
                    both(&abort, producer, || {
                        out = consumer()?;
                        Ok(())
                    })
                },
                || both(&abort, send_loop, recv_loop),
            )?;
            Ok(out)
        }
    }
}

/// Mean cost of idle turns of the transport loops and of an empty `recv`, on the transport
/// cpu.
fn idle_cost(env: &Env<'_>, pipe: &mut Pipe, floor: &Floor) -> Result<IdleCost, BenchError> {
    const TURNS: u32 = 20_000;
    let thread = env.layout.transport_thread();
    let clock = env.clock;
    std::thread::scope(|s| {
        s.spawn(|| {
            env.pin(thread);
            let transport_err =
                |e: mdbus_feed_handlers::net::NetError| udp_err(format!("transport: {e}"));
            let mut observe = |_: u32, _: &[u8]| {};
            let mut buf = [0u8; 64];
            let t0 = clock.now();
            for _ in 0..TURNS {
                pipe.sender.poll_once().map_err(transport_err)?;
            }
            let t1 = clock.now();
            for _ in 0..TURNS {
                pipe.receiver
                    .poll_once(&mut observe)
                    .map_err(transport_err)?;
            }
            let t2 = clock.now();
            for _ in 0..TURNS {
                let _ = std::hint::black_box(floor.ping_in.recv(&mut buf));
            }
            let t3 = clock.now();
            let per = |a, b| clock.delta_ns(a, b) as f64 / f64::from(TURNS);
            Ok(IdleCost {
                sender_turn_ns: per(t0, t1),
                receiver_turn_ns: per(t1, t2),
                empty_recv_ns: per(t2, t3),
            })
        })
        .join()
        .map_err(|_| BenchError::Internal("the idle-cost thread panicked".into()))?
    })
}

/// What was decided before anything runs.
struct Plan {
    count: u64,
    warmup: u64,
    rounds: u32,
    throughput_count: u64,
    recovery_count: u64,
    /// Fixed-rate latency mode: clock ticks between messages.
    interval_ticks: Option<u64>,
    /// Recovery phase: clock ticks and nanoseconds between messages.
    rec_interval_ticks: u64,
    rec_interval_ns: u64,
}

/// Runs the scenario and returns its report and the histograms of `results`, in order.
pub fn measure(args: &UdpArgs) -> Result<(UdpReport, Vec<Histogram<u64>>), BenchError> {
    if !(0.0..1.0).contains(&args.loss) {
        return Err(BenchError::BadArg(format!(
            "--loss {} must be at least 0 and below 1",
            args.loss
        )));
    }
    let mut notes = Vec::new();
    let (layout, pin, pinning) = choose_placement(args.cpus.as_deref(), &args.layout, &mut notes)?;
    let tsc = host::tsc_invariant();
    if !tsc {
        notes.push(
            "no invariant TSC (constant_tsc + nonstop_tsc) in /proc/cpuinfo: timing with the \
             OS monotonic clock"
                .into(),
        );
    }
    let clock = BenchClock::new(tsc);
    let (q_count, q_warmup, q_rounds, q_tput, q_rec) = QUICK;
    let quick = args.quick;
    let pick = |v: Option<u64>, q: u64, d: u64| v.unwrap_or(if quick { q } else { d });
    let tps = clock.ticks_per_sec();
    let plan = Plan {
        count: pick(args.count, q_count, DEFAULT_COUNT),
        warmup: pick(args.warmup, q_warmup, 2_000),
        rounds: args
            .rounds
            .unwrap_or(if quick { q_rounds } else { DEFAULT_ROUNDS }),
        throughput_count: pick(args.throughput_count, q_tput, DEFAULT_THROUGHPUT_COUNT),
        recovery_count: pick(args.recovery_count, q_rec, DEFAULT_RECOVERY_COUNT),
        interval_ticks: args.rate.map(|r| (tps / r as f64).round().max(1.0) as u64),
        rec_interval_ticks: (tps / args.recovery_rate as f64).round().max(1.0) as u64,
        rec_interval_ns: (1e9 / args.recovery_rate as f64).round() as u64,
    };
    if plan.count < u64::from(plan.rounds) {
        return Err(BenchError::BadArg(format!(
            "--count {} is smaller than --rounds {}",
            plan.count, plan.rounds
        )));
    }
    let (_tmp, root) = match &args.shm_root {
        Some(r) => {
            std::fs::create_dir_all(r).map_err(|e| BenchError::ShmSetup {
                path: r.clone(),
                reason: e.to_string(),
            })?;
            (None, r.clone())
        }
        None => {
            let shm = Path::new("/dev/shm");
            let base = if shm.is_dir() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            };
            let t = tempfile::Builder::new()
                .prefix("mdbus-bench-udp-")
                .tempdir_in(&base)
                .map_err(|e| BenchError::ShmSetup {
                    path: base.clone(),
                    reason: e.to_string(),
                })?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let env = Env {
        clock: &clock,
        layout,
        pin,
        pinning: pinning.as_ref(),
        yield_spin: layout.shares_a_cpu(),
        stall: args.stall_timeout.0.max(Duration::from_secs(1)),
        msg_bytes: args.msg_bytes as usize,
        args,
        root: &root,
        unpinned: AtomicBool::new(false),
        made: AtomicU64::new(0),
    };

    // Latency: floor and mdbus-udp alternate, round by round.
    let floor = Floor::new(args)?;
    let mut pipe = Pipe::new(&env, FaultConfig::default())?;
    notes.extend(pipe.warnings.iter().cloned());
    let idle = idle_cost(&env, &mut pipe, &floor)?;
    let mut h_floor = new_histogram()?;
    let mut h_udp = new_histogram()?;
    let mut round_p50 = [Vec::new(), Vec::new()];
    let mut chunk = new_histogram()?;
    let most = share(plan.count, plan.rounds, 0);
    let mut lat = vec![0u64; (plan.warmup + most) as usize];
    let mut base = 0u64;
    let mut outcome = RunOutcome::default();
    let add = |h: &mut Histogram<u64>, c: &Histogram<u64>, p50s: &mut Vec<u64>| {
        p50s.push(if c.is_empty() {
            0
        } else {
            c.value_at_quantile(0.5)
        });
        h.add(c)
            .map_err(|e| BenchError::Internal(format!("histogram add: {e:?}")))
    };
    for round in 0..plan.rounds {
        let count = share(plan.count, plan.rounds, round);
        let udp_first = round % 2 == 1;
        for k in 0..2 {
            chunk.reset();
            if (k == 0) != udp_first {
                match plan.interval_ticks {
                    None => floor.run(&env, plan.warmup, count, &mut chunk)?,
                    Some(iv) => floor.run_fixed(&env, plan.warmup, count, iv, &mut chunk)?,
                }
                add(&mut h_floor, &chunk, &mut round_p50[0])?;
            } else {
                let n = plan.warmup + count;
                let iv = plan.interval_ticks;
                let start = clock.now().wrapping_add(iv.unwrap_or(0).saturating_mul(16));
                let o = drive(
                    &env,
                    &mut pipe,
                    base,
                    n,
                    |received| match iv {
                        Some(interval) => Pace::Fixed { start, interval },
                        // One message in flight: the next goes when this one arrived.
                        None => Pace::Window {
                            window: 1,
                            received,
                        },
                    },
                    Some(&mut lat[..n as usize]),
                )?;
                outcome.notices += o.notices;
                outcome.lost += o.lost;
                for &v in &lat[plan.warmup as usize..n as usize] {
                    chunk.saturating_record(v);
                }
                add(&mut h_udp, &chunk, &mut round_p50[1])?;
                base += n;
            }
        }
    }
    let group = pipe.group;
    let tx = pipe.sender.stats();
    let rx = pipe.receiver.stats();
    let counters = SenderCounters {
        messages: tx.messages,
        packets: tx.packets,
        heartbeats: tx.heartbeats,
        received: rx.messages,
        gaps: rx.gaps,
    };
    if outcome.lost > 0 || outcome.notices > 0 || rx.gaps > 0 {
        notes.push(format!(
            "mdbus-udp latency phase: {} messages lost, {} gap notices, {} gaps at the \
             receiver (no loss was injected; a socket buffer overflowed or the sender was \
             lapped)",
            outcome.lost, outcome.notices, rx.gaps
        ));
    }
    drop(pipe);

    // Throughput.
    let mut msgs_per_sec = None;
    if plan.throughput_count > 0 {
        let mut pipe = Pipe::new(&env, FaultConfig::default())?;
        let window = args.window;
        let start = AtomicU64::new(0);
        let n = plan.throughput_count;
        let o = drive(
            &env,
            &mut pipe,
            0,
            n,
            |received| {
                start.store(clock.now(), Ordering::Relaxed);
                Pace::Window { window, received }
            },
            None,
        )?;
        let ns = clock.delta_ns(start.load(Ordering::Relaxed), o.end).max(1);
        msgs_per_sec = Some((n - o.lost) as f64 * 1e9 / ns as f64);
        let tx = pipe.sender.stats();
        let rx = pipe.receiver.stats();
        notes.push(format!(
            "throughput: {n} messages in {:.3} s, {:.1} messages per packet, {} recovered by \
             re-request, {} lost",
            ns as f64 / 1e9,
            tx.messages as f64 / tx.packets.max(1) as f64,
            rx.recovered,
            o.lost + tx.stream_lost
        ));
    }

    // Recovery under injected loss.
    let floor_result = SystemResult::from_histogram("udp-floor", env.msg_bytes, &h_floor);
    let mut recovery = None;
    let mut h_rec = None;
    if plan.recovery_count > 0 && args.loss > 0.0 {
        let fault: FaultConfig = format!("drop={},seed={}", args.loss, args.seed)
            .parse()
            .map_err(|e| BenchError::BadArg(format!("--loss/--seed: {e}")))?;
        let mut pipe = Pipe::new(&env, fault)?;
        let n = plan.warmup + plan.recovery_count + RECOVERY_TAIL;
        let mut lat = vec![0u64; n as usize];
        let interval = plan.rec_interval_ticks;
        let start = clock.now().wrapping_add(interval.saturating_mul(16));
        let o = drive(
            &env,
            &mut pipe,
            0,
            n,
            |_| Pace::Fixed { start, interval },
            Some(&mut lat),
        )?;
        let tx: SenderStats = pipe.sender.stats();
        let rx: ReceiverStats = pipe.receiver.stats();
        let log: Vec<(u64, u16)> = pipe
            .sender
            .fault()
            .map(|f| f.dropped_log().to_vec())
            .unwrap_or_default();
        if tx.stream_lost > 0 || tx.oversize > 0 {
            return Err(udp_err(format!(
                "recovery phase: the sender lost {} records of its stream: the sequence \
                 numbers no longer match the messages",
                tx.stream_lost + tx.oversize
            )));
        }
        let mut all = new_histogram()?;
        for &v in &lat[plan.warmup as usize..(plan.warmup + plan.recovery_count) as usize] {
            all.saturating_record(v);
        }
        let mut rec = new_histogram()?;
        let measured = plan.warmup..plan.warmup + plan.recovery_count;
        let mut dropped_messages = 0u64;
        for &(first, count) in &log {
            dropped_messages += u64::from(count);
            // Message k of the session has sequence number k; harness message i is the
            // (i+1)-th published.
            for seq in first..first + u64::from(count) {
                let i = seq - 1;
                if measured.contains(&i) {
                    rec.saturating_record(lat[i as usize]);
                }
            }
        }
        let rtt = 2 * floor_result.p99_ns;
        let nak = args.nak_delay.as_nanos_u64();
        let target = rtt.saturating_mul(2).saturating_add(nak);
        let q = |h: &Histogram<u64>, x: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(x)
            }
        };
        let p99 = q(&rec, 0.99);
        if o.lost > 0 || o.notices > 0 {
            notes.push(format!(
                "recovery phase: {} messages never delivered, {} gap notices",
                o.lost, o.notices
            ));
        }
        recovery = Some(RecoveryResult {
            dropped_packets: log.len() as u64,
            dropped_messages,
            samples: rec.len(),
            recovered: rx.recovered,
            unrecoverable: rx.unrecoverable,
            requests: rx.requests,
            p50_ns: q(&rec, 0.5),
            p99_ns: p99,
            max_ns: if rec.is_empty() { 0 } else { rec.max() },
            nak_delay_ns: nak,
            rtt_ns: rtt,
            target_p99_ns: target,
            met: !rec.is_empty() && p99 <= target,
            detect_interval_ns: plan.rec_interval_ns,
            met_with_detection: !rec.is_empty() && p99 <= target + plan.rec_interval_ns,
            all_messages: SystemResult::from_histogram("mdbus-udp-lossy", env.msg_bytes, &all),
        });
        h_rec = Some(rec);
    }

    let mut results = vec![floor_result];
    let mut udp = SystemResult::from_histogram("mdbus-udp", env.msg_bytes, &h_udp);
    udp.msgs_per_sec = msgs_per_sec;
    udp.lost = outcome.lost;
    results.push(udp);
    let mut hists = vec![h_floor, h_udp];
    if let Some(h) = h_rec {
        results.push(SystemResult::from_histogram(
            "mdbus-udp-recovery",
            env.msg_bytes,
            &h,
        ));
        hists.push(h);
    }
    let [f50, f999] = [results[0].p50_ns, results[0].p999_ns];
    let ratio = |x: u64, f: u64| (f > 0).then(|| (x as f64 / f as f64 * 100.0).round() / 100.0);
    for (r, p50s) in results.iter_mut().zip(round_p50) {
        r.round_p50_ns = p50s;
        r.p50_vs_floor = ratio(r.p50_ns, f50);
        r.p999_vs_floor = ratio(r.p999_ns, f999);
    }
    notes.push(
        "udp-floor has no throughput figure: it is a ping-pong, one datagram in flight".into(),
    );
    if let Some(p) = &pinning {
        notes.extend(p.warnings());
    }
    if env.unpinned.load(Ordering::Relaxed) {
        notes.push(format!(
            "pinning to cpus {:?} failed at least once: those runs were unpinned",
            layout.cpus()
        ));
    }
    let pinned = pin && !env.unpinned.load(Ordering::Relaxed);
    let report = UdpReport {
        scenario: "udp".into(),
        results,
        recovery,
        idle_cost: idle,
        sender: counters,
        host: host::collect(&layout.cpus(), pinned, clock.source()),
        layout: pinning.as_ref().and_then(Pinning::layout_use),
        params: UdpParams {
            mode: if args.rate.is_some() {
                "fixed-rate"
            } else {
                "ping-pong"
            }
            .into(),
            msg_bytes: env.msg_bytes,
            count: plan.count,
            warmup: plan.warmup,
            rounds: plan.rounds,
            rate: args.rate,
            recovery_rate: args.recovery_rate,
            throughput_count: plan.throughput_count,
            window: args.window,
            recovery_count: if args.loss > 0.0 {
                plan.recovery_count
            } else {
                0
            },
            loss: args.loss,
            seed: args.seed,
            nak_delay_ns: args.nak_delay.as_nanos_u64(),
            max_datagram: SenderConfig::new("udp", SocketAddrV4::new(args.group, 1)).max_datagram,
            group: group.to_string(),
            interface: args.interface.to_string(),
            layout: layout.describe(),
            threads: layout.threads(),
            floor_cpus: layout.floor_cpus(),
            systems: vec!["udp-floor".into(), "mdbus-udp".into()],
        },
        notes,
    };
    Ok((report, hists))
}

impl UdpReport {
    /// The readable table.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let p = &self.params;
        let h = &self.host;
        let what = match p.rate {
            Some(r) => format!(
                "fixed rate {r} msgs/s, both one-way from the intended send time (floor: raw \
                 UDP from cpu {} to cpu {})",
                p.floor_cpus[0], p.floor_cpus[1]
            ),
            None => format!(
                "one message in flight: mdbus-udp one-way measured directly, udp-floor one-way \
                 = RTT/2 of a raw UDP ping-pong between cpus {} and {}",
                p.floor_cpus[0], p.floor_cpus[1]
            ),
        };
        let _ = writeln!(
            s,
            "udp latency in ns, {}-byte messages, {what}; {} rounds; interface {}; clock {}{}",
            p.msg_bytes,
            p.rounds,
            p.interface,
            h.clock,
            if h.pinned { "" } else { " (NOT pinned)" }
        );
        let _ = writeln!(s, "layout: {}", p.layout);
        super::report::host_and_results(&mut s, h, &self.results);
        if let Some(r) = &self.results.get(1).and_then(|u| u.p50_vs_floor) {
            let _ = writeln!(
                s,
                "target p50 <= 1.3x floor: {} ({r:.2}x)",
                if *r <= 1.3 { "met" } else { "NOT met" }
            );
        }
        if let Some(r) = &self.recovery {
            let _ = writeln!(
                s,
                "recovery under {}% loss: {} packets ({} messages) dropped, {} recovered, {} \
                 unrecoverable, {} re-requests; latency p50 {} p99 {} max {} ns",
                p.loss * 100.0,
                r.dropped_packets,
                r.dropped_messages,
                r.recovered,
                r.unrecoverable,
                r.requests,
                r.p50_ns,
                r.p99_ns,
                r.max_ns
            );
            let _ = writeln!(
                s,
                "target recovery p99 <= 2 RTT + NAK delay = 2 x {} + {} = {} ns: {}; with the \
                 detection interval ({} ns, the next packet shows the gap): {}",
                r.rtt_ns,
                r.nak_delay_ns,
                r.target_p99_ns,
                if r.met { "met" } else { "NOT met" },
                r.detect_interval_ns,
                if r.met_with_detection {
                    "met"
                } else {
                    "NOT met"
                }
            );
            let a = &r.all_messages;
            let _ = writeln!(
                s,
                "all messages of the lossy run: p50 {} p99 {} p99.9 {} max {} ns",
                a.p50_ns, a.p99_ns, a.p999_ns, a.max_ns
            );
        }
        let c = &self.idle_cost;
        let _ = writeln!(
            s,
            "idle loop turn: sender {:.0} ns, receiver {:.0} ns; empty recv() {:.0} ns",
            c.sender_turn_ns, c.receiver_turn_ns, c.empty_recv_ns
        );
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}

/// `mdbus bench udp`: measures, then writes the table or the JSON object to `out`, and the
/// `.hgrm` files and the chart where asked.
pub fn run(args: &UdpArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    let (report, hists) = measure(args)?;
    super::report::Outputs {
        json: args.json,
        hgrm_dir: args.hgrm.as_deref(),
        plot: args.plot.as_deref(),
        title: format!(
            "udp one-way latency, {}-byte messages, {}",
            report.params.msg_bytes, report.host.cpu_model
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
    fn layouts_take_two_or_four_cpus() {
        let mut notes = Vec::new();
        let first = core_affinity::get_core_ids().unwrap()[0].id;
        let (l, pin) = choose_layout(Some(&[first, first]), &mut notes).unwrap();
        assert!(pin);
        assert_eq!(l, Layout::Two { a: first, b: first });
        assert_eq!(l.floor_cpus(), [first, first]);
        let (l, _) = choose_layout(Some(&[first; 4]), &mut notes).unwrap();
        assert_eq!(l.threads().len(), 4);
        assert!(choose_layout(Some(&[first; 3]), &mut notes).is_err());
        let e = choose_layout(Some(&[first, 60_000]), &mut notes).unwrap_err();
        assert!(e.to_string().contains("60000"), "{e}");
        assert!(Layout::Two { a: first, b: first }.shares_a_cpu());
        assert!(
            !Layout::Four {
                p: 0,
                s: 1,
                r: 2,
                c: 3
            }
            .shares_a_cpu()
        );
        assert_eq!(
            Layout::Four {
                p: 0,
                s: 1,
                r: 2,
                c: 3
            }
            .cpu(2),
            2
        );
    }

    #[test]
    fn a_core_layout_gets_four_cpus_only_when_it_gives_four() {
        // Four roles on four distinct cpus: the four-cpu placement.
        assert_eq!(two_or_four([Some(0), Some(1), Some(2), Some(3)]), None);
        // Shared cpus: two, the transport thread on the first role off the producer's cpu.
        assert_eq!(two_or_four([Some(1), Some(1), Some(1), Some(1)]), Some(0));
        assert_eq!(two_or_four([Some(1), Some(2), Some(2), Some(3)]), Some(0));
        assert_eq!(two_or_four([Some(1), Some(1), Some(2), Some(2)]), Some(1));
        assert_eq!(two_or_four([Some(1), Some(1), Some(1), Some(2)]), Some(2));
        // No sender or receiver role (a pipeline layout): the consumer's (strategy's) cpu.
        assert_eq!(two_or_four([Some(1), None, None, Some(2)]), Some(2));
        assert_eq!(two_or_four([Some(1), None, Some(1), None]), Some(1));
        // A missing producer or transport role: the four-cpu placement, which names it.
        assert_eq!(two_or_four([None, Some(1), Some(2), Some(3)]), None);
        assert_eq!(two_or_four([Some(1), None, None, None]), None);
    }

    fn write_layout(dir: &Path, roles: &[(&str, usize)]) -> PathBuf {
        let mut text = String::from(
            "version = 1\nhousekeeping = []\nisolated = []\n[runtime]\nlock_memory = false\n\
             prefault_stack = 0\n",
        );
        for (name, cpu) in roles {
            text.push_str(&format!(
                "[roles.{name}]\nkind = \"strategy\"\ncores = [{cpu}]\n"
            ));
        }
        let path = dir.join("layout.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn placements_by_a_core_layout() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = mdbus_tuning::current_affinity().unwrap()[0];
        let path = write_layout(
            dir.path(),
            &[("feed_handler", cpu), ("strategy", cpu), ("receiver", cpu)],
        );
        let arg = LayoutArg {
            layout: Some(path.clone()),
        };
        let mut notes = Vec::new();
        let (l, pin, p) = choose_placement(None, &arg, &mut notes).unwrap();
        assert!(pin);
        assert_eq!(l, Layout::Two { a: cpu, b: cpu });
        let used = p.unwrap().layout_use().unwrap();
        let roles: Vec<_> = used.threads.iter().map(|t| t.role.as_deref()).collect();
        assert_eq!(roles, [Some("feed_handler"), Some("receiver")]);
        assert!(
            notes.iter().any(|n| n.contains("lacks role \"sender\"")),
            "{notes:?}"
        );
        assert!(notes.iter().any(|n| n.contains("yield")), "{notes:?}");

        // Explicit cpus win, four of them give the four-cpu placement with the roles there are.
        let mut notes = Vec::new();
        let (l, _, p) = choose_placement(Some(&[cpu; 4]), &arg, &mut notes).unwrap();
        assert_eq!(l.threads().len(), 4);
        let used = p.unwrap().layout_use().unwrap();
        assert!(used.threads.iter().all(|t| !t.from_layout));
        assert_eq!(used.threads[1].role, None);
        assert_eq!(used.threads[3].role.as_deref(), Some("strategy"));

        // A producer role missing, or on a cpu this process may not use: errors.
        write_layout(dir.path(), &[("strategy", cpu), ("sender", cpu)]);
        let e = choose_placement(None, &arg, &mut notes)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"producer\" or \"feed_handler\"") && e.contains("layout.toml"),
            "{e}"
        );
        assert!(e.contains("feed_handler,sender,receiver,strategy"), "{e}");
        write_layout(dir.path(), &[("feed_handler", cpu), ("sender", 60_000)]);
        let e = choose_placement(None, &arg, &mut notes)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cpu 60000") && e.contains("\"sender\""), "{e}");
    }
}
