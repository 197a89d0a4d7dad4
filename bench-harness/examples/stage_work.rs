//! One stage of the replay pipeline's per-message work, alone and on one thread, over the
//! bundled AAPL session played `PASSES` times (order references rewritten as in
//! `mdbus bench replay`): a fixed workload for counting instructions.
//!
//! ```text
//! cargo run --release -p mdbus-bench-harness --example stage_work -- <STAGE> [PASSES]
//! ```
//!
//! Stages, each doing the work of the one before it plus its own:
//!
//! * `decode`: decode the ITCH messages and normalize them into envelopes;
//! * `read`: read each envelope's header and book event back, as the book service does (in
//!   place where the frame reader can);
//! * `apply`: apply the events to the books (updates discarded);
//! * `service`: the whole book service (`BookService::handle`), publishing BBOs, levels and
//!   trades into rings nobody reads;
//! * `service-no-levels`: the same without the levels stream;
//! * `poll`: the book thread's path in the pipeline instead of `handle`: the envelopes are
//!   published into an input ring, and every 64 of them the service polls them from it
//!   (`BookService::poll`: batched ring reads, the order slot prefetched one record ahead).
//!   Its count less `service`'s is the input ring's cost on both sides, plus any difference
//!   between `poll` and `handle`.
//!
//! And one on its own: `publish` encodes and publishes `PASSES * 10,000` price-level updates.
//!
//! It prints the messages handled and the time per message. On a shared or virtual host the
//! time drifts from run to run; instruction counts do not. `scripts/stage-instructions.sh`
//! runs every stage under cachegrind twice (two pass counts) and prints instructions per
//! message with the start-up cost taken out.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use mdbus_bench_harness::bench::replay::{RepeatedSession, each_normalized};
use mdbus_bench_harness::stages::BUNDLED_SESSION;
use mdbus_bus::{Bus, Mode, StreamConfig, SubscribeOptions, Subscriber, Trust};
use mdbus_codecs::fb;
use mdbus_feed_handlers::book::{BookBuilder, BookConfig};
use mdbus_feed_handlers::bookstream::{
    BookService, BookServiceConfig, Polled, header_of, order_event_from_envelope, output_ring,
};
use mdbus_feed_handlers::replay::replay_ring;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// A stage over the session.
    Session(Work),
    /// `publish`.
    Publish,
}

/// The work done on each message of the session.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Work {
    Decode,
    Read,
    Apply,
    Service,
    ServiceNoLevels,
    Poll,
}

const STAGES: [(&str, Stage); 7] = [
    ("decode", Stage::Session(Work::Decode)),
    ("read", Stage::Session(Work::Read)),
    ("apply", Stage::Session(Work::Apply)),
    ("service", Stage::Session(Work::Service)),
    ("service-no-levels", Stage::Session(Work::ServiceNoLevels)),
    ("poll", Stage::Session(Work::Poll)),
    ("publish", Stage::Publish),
];

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let names: Vec<&str> = STAGES.iter().map(|(n, _)| *n).collect();
    let stage = args.next();
    let Some(&(_, stage)) = STAGES.iter().find(|(n, _)| Some(*n) == stage.as_deref()) else {
        eprintln!(
            "usage: stage_work <{}> [PASSES (default 20)]",
            names.join("|")
        );
        return ExitCode::from(2);
    };
    let passes = match args.next().map(|s| s.parse::<u64>()) {
        None => 20,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("stage_work: PASSES must be a positive whole number");
            return ExitCode::from(2);
        }
    };
    match run(stage, passes) {
        Ok((messages, secs)) => {
            println!(
                "messages {messages} ns/msg {:.1}",
                secs * 1e9 / messages.max(1) as f64
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stage_work: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `stage` over `passes` passes of the session: (messages, seconds).
fn run(stage: Stage, passes: u64) -> Result<(u64, f64), Box<dyn std::error::Error>> {
    let dir = tempfile::Builder::new()
        .prefix("mdbus-stage-work-")
        .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "."
        })?;
    let bus = Bus::with_root(dir.path())?;
    let output = StreamConfig {
        prefault: true,
        ..output_ring()
    };
    let work = match stage {
        Stage::Session(work) => work,
        Stage::Publish => return publish_levels(&bus, &output, passes * 10_000),
    };
    let config = BookServiceConfig {
        // As `bench replay`: every pass starts from empty books.
        book: BookConfig {
            max_orders: 1 << 16,
            max_instruments: 16,
            levels_per_side_hint: 256,
        },
        output,
        publish_levels: work != Work::ServiceNoLevels,
        ..BookServiceConfig::default()
    };
    let mut service = BookService::new(&bus, "stage-work", &config)?;
    let mut builder = BookBuilder::new(config.book)?;
    let mut session = RepeatedSession::new(BUNDLED_SESSION, passes);
    let frames = fb::FrameReader::new();
    // Each stage's loop is a function of its own (`timed` is instantiated per closure), so
    // that changing one stage's code does not change how another's is compiled.
    Ok(match work {
        Work::Decode => timed(&mut session, |env| {
            black_box(env.as_bytes());
        }),
        Work::Read => timed(&mut session, |env| {
            match frames.read_envelope(&env.envelope()) {
                Some(fast) => {
                    black_box(fast.header_fields());
                    black_box(order_event_from_envelope(&fast));
                }
                None => {
                    let view = env.envelope();
                    black_box(header_of(&view));
                    black_box(order_event_from_envelope(&view));
                }
            }
        }),
        Work::Apply => timed(&mut session, |env| {
            let view = env.envelope();
            let ev = match frames.read_envelope(&view) {
                Some(fast) => order_event_from_envelope(&fast),
                None => order_event_from_envelope(&view),
            };
            if let Some(ev) = ev {
                black_box(builder.apply(&ev, &mut |u| {
                    black_box(u);
                }));
            }
        }),
        Work::Service | Work::ServiceNoLevels => timed(&mut session, |env| {
            service.handle(&env.envelope());
        }),
        Work::Poll => {
            let mut input_pub = bus.publisher(
                "stage-work-input",
                // As the pipeline's feed stream: lossless, so the service reads in place.
                &StreamConfig {
                    mode: Mode::Lossless,
                    prefault: true,
                    ..replay_ring()
                },
            )?;
            let options = SubscribeOptions {
                // SAFETY: this process publishes nothing on the stream but envelopes built by
                // `schema::Encoder` (the normalizer's).
                trust: unsafe { Trust::publisher() },
                ..SubscribeOptions::default()
            };
            let mut input = bus.subscriber("stage-work-input", &options)?;
            let mut failed: Option<Box<dyn std::error::Error>> = None;
            let mut pending = 0;
            let drain = |service: &mut BookService, input: &mut Subscriber| {
                while let Polled::Worked(_) = service.poll(input, POLL_TURN)? {}
                Ok::<_, Box<dyn std::error::Error>>(())
            };
            let timing = timed(&mut session, |env| {
                if failed.is_some() {
                    return;
                }
                if let Err(e) = input_pub.publish_envelope(env) {
                    failed = Some(e.into());
                    return;
                }
                pending += 1;
                if pending == POLL_TURN {
                    pending = 0;
                    if let Err(e) = drain(&mut service, &mut input) {
                        failed = Some(e);
                    }
                }
            });
            drain(&mut service, &mut input)?;
            if let Some(e) = failed {
                return Err(e);
            }
            if service.stats().received != timing.0 {
                return Err(format!(
                    "{} envelopes published, {} reached the book service",
                    timing.0,
                    service.stats().received
                )
                .into());
            }
            timing
        }
    })
}

/// Records published into the input ring between two `poll` turns of the `poll` stage.
const POLL_TURN: usize = 64;

/// Runs `work` on every normalized message of `session`: (messages, seconds).
#[inline(never)]
fn timed(session: &mut RepeatedSession, work: impl FnMut(&fb::Encoded<'_>)) -> (u64, f64) {
    let t = Instant::now();
    let messages = each_normalized(session, work);
    (messages, t.elapsed().as_secs_f64())
}

/// Encodes and publishes `n` price-level updates.
fn publish_levels(
    bus: &Bus,
    config: &StreamConfig,
    n: u64,
) -> Result<(u64, f64), Box<dyn std::error::Error>> {
    let mut encoder = fb::Encoder::new();
    let mut publisher = bus.publisher("stage-work.levels", config)?;
    let mut header = fb::HeaderFields::default();
    let t = Instant::now();
    for i in 0..n {
        header.seq = i + 1;
        let fields = fb::PriceLevelUpdateFields {
            side: fb::Side::Buy,
            price: 3_200_000 + (i % 64) as i64 * 100,
            size: 100 + i % 7,
            order_count: 2,
            action: fb::BookAction::Change,
        };
        let msg = encoder.price_level_update(&header, &fields);
        publisher.publish_envelope(black_box(&msg))?;
    }
    Ok((n, t.elapsed().as_secs_f64()))
}
