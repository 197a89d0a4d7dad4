//! A small, complete strategy: subscribes to a feed's book stream (`<feed>.book`: best bid and
//! offer) and trade stream (`<feed>.trades`), keeps a microprice and a trade-flow signal per
//! instrument (the logic is in `strategy/signals.rs`), and prints a line whenever its stance
//! in an instrument changes. The two streams are read as one, in source order
//! (`merge::SourceMerge`: a trade comes after the quote change its execution caused), as typed
//! views zero-copy from shared memory; nothing is allocated per message.
//!
//! Start a feed with its book service, then the strategy (any order; it waits for the streams,
//! and reads what they retain from the start):
//!
//! ```text
//! cargo run --release --bin mdbus -- replay --book --feed itch codecs/testdata/itch/aapl-2020-01-30-10k.itch
//! cargo run --release -p mdbus-bus --example strategy -- --feed itch
//! ```
//!
//! Options: `--feed NAME` (default `itch`), `--root DIR` (bus root, default
//! `/dev/shm/mdbus-<user>/`), `--wait spin|yield|block` (default `yield`: spin a little, then
//! yield the core), `--trusted` (skip envelope verification: see `Trust::publisher`),
//! `--quiet` (no line per signal).
//!
//! `--consolidated STREAM` reads instead the consolidated top of book that `mdbus consolidate`
//! publishes from several venues' book streams (Nasdaq and IEX as one market): it prints the
//! best bid and ask with the venue of each and every venue's top whenever a symbol's top
//! changes, and at the end the last top of each symbol some venue still quoted:
//!
//! ```text
//! mdbus replay --book --feed nasdaq codecs/testdata/itch/aapl-2020-01-30-10k.itch
//! mdbus replay --book --feed iex deep10-2017-04-25.pcap
//! mdbus consolidate --input nasdaq.book --input iex.book --output cbbo
//! cargo run --release -p mdbus-bus --example strategy -- --consolidated cbbo
//! ```

#[path = "strategy/signals.rs"]
mod signals;

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mdbus_bus::merge::{MergeError, SourceMerge};
use mdbus_bus::schema as fb;
use mdbus_bus::{Bus, ReceiveError, SubscribeOptions, Subscriber, Trust, WaitStrategy};
use signals::{Params, Signal, Strategy, time_of_day};

struct Args {
    feed: String,
    root: Option<PathBuf>,
    wait: WaitStrategy,
    trusted: bool,
    quiet: bool,
    /// Read this consolidated stream instead of a feed's book and trade streams.
    consolidated: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        feed: "itch".into(),
        root: None,
        wait: WaitStrategy::SpinThenYield { spins: 1000 },
        trusted: false,
        quiet: false,
        consolidated: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--feed" => args.feed = value()?,
            "--root" => args.root = Some(value()?.into()),
            "--wait" => {
                args.wait = match value()?.as_str() {
                    "spin" => WaitStrategy::BusySpin,
                    "yield" => WaitStrategy::SpinThenYield { spins: 1000 },
                    "block" => WaitStrategy::Blocking,
                    "batch" => WaitStrategy::Batching {
                        pause: WaitStrategy::BATCH_PAUSE,
                    },
                    other => {
                        return Err(format!("--wait {other}: use spin, yield, block or batch"));
                    }
                }
            }
            "--trusted" => args.trusted = true,
            "--quiet" => args.quiet = true,
            "--consolidated" => args.consolidated = Some(value()?),
            "-h" | "--help" => {
                return Err(
                    "usage: strategy [--feed NAME | --consolidated STREAM] [--root DIR] [--wait spin|yield|block|batch] [--trusted] [--quiet]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

/// Subscribes to `stream`, waiting up to 30 s for its publisher to create it.
fn subscribe(
    bus: &Bus,
    stream: &str,
    options: &SubscribeOptions,
) -> Result<Subscriber, Box<dyn Error>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match bus.subscriber(stream, options) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Time from the feed handler's receive stamp to the strategy's callback, on the system clock
/// (count, sum, max: no allocation).
#[derive(Default)]
struct Latency {
    count: u64,
    sum_ns: u64,
    max_ns: u64,
}

impl Latency {
    fn record(&mut self, recv_ts_ns: u64) {
        let ns = mdbus_bus::unix_ns().saturating_sub(recv_ts_ns);
        self.count += 1;
        self.sum_ns += ns;
        self.max_ns = self.max_ns.max(ns);
    }
}

fn print_signal(strategy: &Strategy, s: &Signal) {
    println!(
        "{} {:<6} {:<5} micro {:>10.4}  mid {:>10.4}  flow {:>+8.0}",
        time_of_day(s.exchange_ts_ns),
        strategy.symbol(s.locate),
        s.stance.as_str(),
        s.microprice,
        s.mid,
        s.flow,
    );
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let bus = match &args.root {
        Some(root) => Bus::with_root(root)?,
        None => Bus::new()?,
    };
    let trust = if args.trusted {
        // SAFETY: the book and trade streams are published by mdbus's book service, which
        // writes nothing but envelopes built by `schema::Encoder`, as the same user.
        unsafe { Trust::publisher() }
    } else {
        Trust::VERIFY
    };
    let options = SubscribeOptions {
        trust,
        ..SubscribeOptions::default()
    };
    if let Some(stream) = &args.consolidated {
        return run_consolidated(&bus, stream, &options, &args.wait, args.quiet);
    }
    let book = subscribe(&bus, &format!("{}.book", args.feed), &options)?;
    let trades = subscribe(&bus, &format!("{}.trades", args.feed), &options)?;
    eprintln!("strategy: reading {} and {}", book.name(), trades.name());

    let mut strategy = Strategy::new(Params::default());
    let mut latency = Latency::default();
    // The two streams read as one, in source order: a trade comes after the quote change its
    // execution caused and before the next message's quote.
    let mut input = SourceMerge::new([book, trades]);
    let wait = args.wait;
    let quiet = args.quiet;
    while !input.all_ended() {
        let mut ended = None;
        let polled = input.poll(|k, e| {
            let env = e.envelope();
            match env.event_type() {
                fb::Event::Bbo | fb::Event::Trade => latency.record(env.header().recv_ts_ns()),
                fb::Event::EndOfSession => ended = Some(k),
                _ => {}
            }
            let signal = if k == 0 {
                strategy.on_book_event(&env)
            } else {
                strategy.on_trade_event(&env)
            };
            if let Some(s) = signal
                && !quiet
            {
                print_signal(&strategy, &s);
            }
        });
        if let Some(k) = ended {
            // That stream's session is over; the other may still have events.
            input.end(k);
        }
        match polled {
            Ok(true) => {}
            // Nothing on either stream: wait briefly on one still open, then look at both.
            Ok(false) => input.wait(&wait, Duration::from_micros(50)),
            Err(MergeError {
                stream,
                source: ReceiveError::Overrun { lost, .. },
                ..
            }) => eprintln!("{stream}: lapped, {lost} messages lost"),
            Err(e) => return Err(e.into()),
        }
    }

    let st = strategy.stats();
    println!(
        "{} BBO updates, {} trades, {} signals, {} gaps",
        st.bbo_updates, st.trades, st.signals, st.gaps
    );
    for locate in 0..=u16::MAX {
        let q = strategy.quote(locate);
        if let Some(micro) = q.microprice() {
            println!(
                "{:<6} bid {:.4} x {}  ask {:.4} x {}  micro {:.4}  flow {:+.0}  stance {}",
                strategy.symbol(locate),
                q.bid as f64 / signals::PRICE_SCALE,
                q.bid_size,
                q.ask as f64 / signals::PRICE_SCALE,
                q.ask_size,
                micro,
                strategy.flow(locate),
                strategy.stance(locate).as_str()
            );
        }
    }
    if latency.count > 0 {
        println!(
            "receive -> strategy (system clock; meaningful when reading live): mean {:.1} us, max {:.1} us over {} events",
            latency.sum_ns as f64 / latency.count as f64 / 1e3,
            latency.max_ns as f64 / 1e3,
            latency.count
        );
    }
    Ok(())
}

/// A price of Price(4) units, or `-` for a side nobody quotes.
fn price(p: i64, venue: fb::Venue) -> String {
    if venue == fb::Venue::Unknown {
        "-".into()
    } else {
        format!("{:.4}", p as f64 / signals::PRICE_SCALE)
    }
}

/// A venue's name.
fn venue_name(v: fb::Venue) -> &'static str {
    v.variant_name().unwrap_or("?")
}

fn print_consolidated(e: &fb::ConsolidatedBboFields) {
    let mut line = format!(
        "{:<8} bid {} x {} {:<6} ask {} x {} {:<6}",
        String::from_utf8_lossy(&e.symbol).trim_end(),
        price(e.bid_price, e.bid_venue),
        e.bid_size,
        venue_name(e.bid_venue),
        price(e.ask_price, e.ask_venue),
        e.ask_size,
        venue_name(e.ask_venue),
    );
    for flag in [
        (fb::ConsolidatedFlags::Locked, " LOCKED"),
        (fb::ConsolidatedFlags::Crossed, " CROSSED"),
        (fb::ConsolidatedFlags::StaleVenue, " stale-venue"),
    ] {
        if e.flags.contains(flag.0) {
            line.push_str(flag.1);
        }
    }
    line.push_str("  |");
    for v in e.venues() {
        if v.flags.contains(fb::VenueTopFlags::Stale) {
            line.push_str(&format!(" {}: stale", venue_name(v.venue)));
        } else {
            line.push_str(&format!(
                " {}: {}x{} / {}x{}",
                venue_name(v.venue),
                v.bid_price as f64 / signals::PRICE_SCALE,
                v.bid_size,
                v.ask_price as f64 / signals::PRICE_SCALE,
                v.ask_size
            ));
        }
    }
    println!("{line}");
}

/// Reads the consolidated stream `stream` until its end: one line per consolidated top (unless
/// `quiet`), then the last top of each symbol while some venue quoted it.
fn run_consolidated(
    bus: &Bus,
    stream: &str,
    options: &SubscribeOptions,
    wait: &WaitStrategy,
    quiet: bool,
) -> Result<(), Box<dyn Error>> {
    let mut sub = subscribe(bus, stream, options)?;
    eprintln!(
        "strategy: reading the consolidated top of book on {}",
        sub.name()
    );
    // By the consolidator's number for each symbol (1 up): the last top seen. Grows when a
    // symbol is first seen, not per message.
    let mut last: Vec<Option<fb::ConsolidatedBboFields>> = Vec::new();
    let (mut events, mut latency) = (0u64, Latency::default());
    let mut ended = false;
    while !ended {
        let polled = sub.poll_event(|ev| {
            let env = ev.envelope();
            match env.event_type() {
                fb::Event::ConsolidatedBbo => {
                    let Some(t) = env.event_as_consolidated_bbo() else {
                        return;
                    };
                    let e = fb::ConsolidatedBboFields::read(&t);
                    latency.record(env.header().recv_ts_ns());
                    events += 1;
                    if !quiet {
                        print_consolidated(&e);
                    }
                    // Keep the last top some venue still quoted: at the end every venue's
                    // top goes stale.
                    let live = e
                        .venues()
                        .iter()
                        .any(|v| !v.flags.contains(fb::VenueTopFlags::Stale));
                    let i = env.instrument() as usize;
                    if !live {
                        return;
                    }
                    if last.len() <= i {
                        last.resize(i + 1, None);
                    }
                    last[i] = Some(e);
                }
                fb::Event::EndOfSession => ended = true,
                _ => {}
            }
        });
        match polled {
            Ok(true) => {}
            Ok(false) => {
                let _ = sub.wait(wait, Some(Duration::from_millis(10)));
            }
            Err(ReceiveError::Overrun { lost, .. }) => {
                eprintln!("{}: lapped, {lost} messages lost", sub.name())
            }
            Err(ReceiveError::Closed) => break,
            Err(e) => return Err(e.into()),
        }
    }
    println!("{events} consolidated tops; the last of each symbol before its venues went stale:");
    for e in last.iter().flatten() {
        print_consolidated(e);
    }
    if latency.count > 0 {
        println!(
            "receive -> strategy (system clock; meaningful when reading live): mean {:.1} us, max {:.1} us over {} events",
            latency.sum_ns as f64 / latency.count as f64 / 1e3,
            latency.max_ns as f64 / 1e3,
            latency.count
        );
    }
    Ok(())
}
