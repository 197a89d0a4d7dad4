//! `bench synth`: the generated session read back independently, by the ITCH decoder of
//! `mdbus_codecs` and the book builder of `mdbus_feed_handlers`: every reference resolves, no
//! book crosses or locks, the mix and the skew are the intended ones, and the bytes depend only
//! on the parameters.

use std::collections::{HashMap, HashSet};

use clap::Parser;
use mdbus_bench_harness::bench::synth::{SynthError, SynthParams, SynthSummary, generate};
use mdbus_bench_harness::bench::{BenchArgs, BenchError, run_to};
use mdbus_codecs::nasdaq::itch::{Message, Stream};
use mdbus_feed_handlers::book::{BookBuilder, BookConfig, BookCounters, OrderEvent};

const MESSAGES: u64 = 200_000;
const INSTRUMENTS: u32 = 200;

fn session(seed: u64) -> (Vec<u8>, SynthSummary) {
    let mut bytes = Vec::new();
    let summary = generate(
        &mut bytes,
        &SynthParams {
            messages: MESSAGES,
            instruments: INSTRUMENTS,
            seed,
        },
    )
    .expect("generate");
    (bytes, summary)
}

/// What an independent reading of a session finds.
#[derive(Debug)]
struct Reading {
    messages: u64,
    counts: [u64; 256],
    /// Adds and trades per locate.
    activity: Vec<u64>,
    peak_live: u64,
    off_grid_prices: u64,
    counters: BookCounters,
    live_at_end: u64,
    /// Shortest and longest time (ns) from an order's add to its delete or last execution.
    lifetimes: (u64, u64),
}

fn read(bytes: &[u8], books: BookConfig) -> Reading {
    let mut books = BookBuilder::new(books).expect("book builder");
    let mut r = Reading {
        messages: 0,
        counts: [0; 256],
        activity: vec![0; 1 << 16],
        peak_live: 0,
        off_grid_prices: 0,
        counters: BookCounters::default(),
        live_at_end: 0,
        lifetimes: (u64::MAX, 0),
    };
    let mut added_at = HashMap::new();
    let mut last_ts = 0;
    let mut directory = HashSet::new();
    let mut events = Vec::new();
    for (offset, msg) in Stream::new(bytes) {
        let msg = msg.unwrap_or_else(|e| panic!("record at {offset} does not decode: {e}"));
        r.messages += 1;
        r.counts[usize::from(msg.msg_type())] += 1;
        let ts = msg.timestamp();
        assert!(ts >= last_ts, "timestamp goes back at {offset}");
        assert!(
            (4 * 3600 * 1_000_000_000..=20 * 3600 * 1_000_000_000).contains(&ts),
            "timestamp {ts} outside 04:00 to 20:00 at {offset}"
        );
        last_ts = ts;
        let locate = msg.stock_locate();
        match &msg {
            Message::StockDirectory(_) => {
                assert!(directory.insert(locate), "locate {locate} twice")
            }
            Message::SystemEvent(_) => assert_eq!(locate, 0),
            _ => assert!(
                directory.contains(&locate),
                "locate {locate} at {offset} is not in the directory"
            ),
        }
        let price = match &msg {
            Message::AddOrder(m) => Some(m.price().raw()),
            Message::AddOrderMpid(m) => Some(m.price().raw()),
            Message::OrderReplace(m) => Some(m.price().raw()),
            Message::OrderExecutedWithPrice(m) => Some(m.execution_price().raw()),
            Message::Trade(m) => Some(m.price().raw()),
            _ => None,
        };
        if price.is_some_and(|p| p == 0 || p % 100 != 0) {
            r.off_grid_prices += 1;
        }
        if matches!(
            msg,
            Message::AddOrder(_) | Message::AddOrderMpid(_) | Message::Trade(_)
        ) {
            r.activity[usize::from(locate)] += 1;
        }
        match &msg {
            Message::AddOrder(m) => _ = added_at.insert(m.order_reference_number(), ts),
            Message::AddOrderMpid(m) => _ = added_at.insert(m.order_reference_number(), ts),
            Message::OrderReplace(m) => {
                let at = added_at.remove(&m.original_order_reference_number());
                added_at.insert(m.new_order_reference_number(), at.unwrap_or(ts));
            }
            _ => {}
        }
        if let Some(ev) = OrderEvent::from_itch(&msg) {
            events.clear();
            books.apply(&ev, &mut |u| events.push(u));
            r.peak_live = r.peak_live.max(books.live_orders() as u64);
            let gone = match ev {
                OrderEvent::Delete { order_ref, .. }
                | OrderEvent::Execute { order_ref, .. }
                | OrderEvent::ExecuteWithPrice { order_ref, .. } => {
                    books.order(order_ref).is_none().then_some(order_ref)
                }
                _ => None,
            };
            if let Some(at) = gone.and_then(|o| added_at.remove(&o)) {
                let life = ts - at;
                r.lifetimes = (r.lifetimes.0.min(life), r.lifetimes.1.max(life));
            }
        }
    }
    r.counters = *books.counters();
    r.live_at_end = books.live_orders() as u64;
    r
}

#[test]
fn session_reads_back_consistent_with_the_intended_shape() {
    let (bytes, summary) = session(7);
    let r = read(
        &bytes,
        BookConfig {
            max_orders: 1_000_000,
            max_instruments: INSTRUMENTS as usize,
            levels_per_side_hint: 64,
        },
    );
    check(&r, &summary, bytes.len());
    // The skew: Zipf with exponent 1, so the busiest instrument has 1 / H_200 = 17 % of the
    // adds and trades, and the top ten 50 %.
    let mut act = r.activity.clone();
    act.sort_unstable_by(|a, b| b.cmp(a));
    let total: u64 = act.iter().sum();
    let h: f64 = (1..=INSTRUMENTS).map(|k| 1.0 / f64::from(k)).sum();
    let top1 = act[0] as f64 / total as f64;
    let top10 = act[..10].iter().sum::<u64>() as f64 / total as f64;
    let want10: f64 = (1..=10).map(|k| 1.0 / f64::from(k)).sum::<f64>() / h;
    near(top1, 1.0 / h, 0.1, "busiest instrument's share");
    near(top10, want10, 0.05, "top ten's share");
}

/// A large file made by `mdbus bench synth` (path in `MDBUS_SYNTH_FILE`, its instruments in
/// `MDBUS_SYNTH_INSTRUMENTS`), read back with books sized for a full day:
/// `MDBUS_SYNTH_FILE=day.itch MDBUS_SYNTH_INSTRUMENTS=8000 cargo test --release -p
/// mdbus-bench-harness --test synth_cli -- --ignored`.
#[test]
#[ignore = "needs a file made by `mdbus bench synth`"]
fn large_file_reads_back_consistent() {
    let path = std::env::var("MDBUS_SYNTH_FILE").expect("MDBUS_SYNTH_FILE");
    let instruments: u32 = std::env::var("MDBUS_SYNTH_INSTRUMENTS")
        .expect("MDBUS_SYNTH_INSTRUMENTS")
        .parse()
        .expect("a number");
    let bytes = std::fs::read(&path).expect("read the file");
    let r = read(
        &bytes,
        BookConfig {
            max_instruments: instruments as usize,
            ..BookConfig::nasdaq_day()
        },
    );
    eprintln!(
        "{path}: {} messages, peak live {}, live at end {}, lifetimes {:?} ns, {:?}",
        r.messages, r.peak_live, r.live_at_end, r.lifetimes, r.counters
    );
    let summary = SynthSummary {
        messages: r.messages,
        by_type: (0..=255u8)
            .map(|t| (t, r.counts[usize::from(t)]))
            .filter(|(_, n)| *n != 0)
            .collect(),
        instruments,
        peak_live_orders: r.peak_live,
        live_orders_at_end: r.live_at_end,
        bytes: bytes.len() as u64,
    };
    check(&r, &summary, bytes.len());
}

fn n(r: &Reading, t: u8) -> f64 {
    r.counts[usize::from(t)] as f64
}

fn near(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol * want,
        "{what}: {got}, want {want} (tolerance {tol})"
    );
}

/// The checks that hold for any session: against the generator's summary, the books, the
/// frame, the mix.
fn check(r: &Reading, summary: &SynthSummary, len: usize) {
    // Every message decodes and the generator's own count agrees with the reading.
    assert_eq!(r.messages, summary.messages);
    assert_eq!(summary.bytes, len as u64);
    for t in 0..=255u8 {
        assert_eq!(
            summary.count(t),
            r.counts[usize::from(t)],
            "type {}",
            char::from(t)
        );
    }

    // The books: every reference live on the right instrument, nothing over-executed, no
    // duplicate reference, no crossed or locked book.
    let c = r.counters;
    assert_eq!(c.unknown_refs, 0, "{c:?}");
    assert_eq!(c.overfills, 0, "{c:?}");
    assert_eq!(c.duplicate_adds, 0, "{c:?}");
    assert_eq!(c.crossed, 0, "{c:?}");
    assert_eq!(c.locked, 0, "{c:?}");
    assert_eq!(c.empty_orders, 0, "{c:?}");
    assert_eq!(c.invalid, 0, "{c:?}");
    assert_eq!(c.capacity_exhausted, 0, "{c:?}");
    assert_eq!(c.instruments_exhausted, 0, "{c:?}");
    assert_eq!(c.inconsistencies, 0, "{c:?}");
    assert_eq!(r.off_grid_prices, 0);
    assert_eq!(r.peak_live, summary.peak_live_orders);
    assert_eq!(r.live_at_end, summary.live_orders_at_end);

    // Lifetimes from the next message (about 0.1 s apart in regular hours at this size) to
    // hours.
    assert!(r.lifetimes.0 < 1_000_000_000, "{:?}", r.lifetimes);
    assert!(r.lifetimes.1 > 3600 * 1_000_000_000, "{:?}", r.lifetimes);

    // The frame.
    let n = |t: u8| n(r, t);
    assert_eq!(n(b'R'), f64::from(summary.instruments));
    assert_eq!(n(b'H'), f64::from(summary.instruments));
    assert_eq!(n(b'S'), 6.0);

    // The mix, against the real AAPL sample's proportions to the adds (A 4758 + F 2):
    // D 4083, E 849 (with C), P 240, U 7, X 6.
    let adds = n(b'A') + n(b'F');
    near(
        adds / r.messages as f64,
        4760.0 / 10_000.0,
        0.1,
        "adds per message",
    );
    near(n(b'D') / adds, 4083.0 / 4760.0, 0.1, "D");
    near((n(b'E') + n(b'C')) / adds, 849.0 / 4760.0, 0.15, "E + C");
    near(n(b'P') / adds, 240.0 / 4760.0, 0.2, "P");
    near(n(b'U') / adds, 7.0 / 4760.0, 0.5, "U");
    near(n(b'X') / adds, 6.0 / 4760.0, 0.5, "X");
    assert!(n(b'F') > 0.0 && n(b'C') > 0.0, "F and C both appear");
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let (a, sa) = session(42);
    let (b, sb) = session(42);
    assert!(a == b, "same seed, different bytes");
    assert_eq!(sa, sb);
    let (c, _) = session(43);
    assert!(a != c, "another seed gave the same bytes");
}

#[test]
fn bad_parameters_are_refused() {
    let p = |messages, instruments| SynthParams {
        messages,
        instruments,
        seed: 1,
    };
    for bad in [p(1000, 0), p(1_000_000, 65_536), p(205, 100)] {
        let mut out = Vec::new();
        match generate(&mut out, &bad) {
            Err(SynthError::BadParams(m)) => assert!(!m.is_empty()),
            other => panic!("{bad:?}: {other:?}"),
        }
        assert!(out.is_empty(), "{bad:?} wrote {} bytes", out.len());
    }
    // The smallest session is its frame alone, and it still reads back.
    let mut out = Vec::new();
    let s = generate(&mut out, &p(206, 100)).expect("frame only");
    assert_eq!(s.messages, 206);
    assert_eq!(Stream::new(&out).filter(|(_, m)| m.is_ok()).count(), 206);
}

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn cli(args: &[&str]) -> Result<String, BenchError> {
    let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("bad arguments {args:?}: {e}"));
    let mut out = Vec::new();
    run_to(&cli.bench, &mut out).map(|()| String::from_utf8(out).expect("utf-8"))
}

#[test]
fn cli_writes_the_file_and_one_summary_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("day.itch");
    let path_s = path.to_str().expect("utf-8 path");
    let args = [
        "synth",
        path_s,
        "--messages",
        "20000",
        "--instruments",
        "50",
        "--seed",
        "3",
    ];
    let text = cli(&args).expect("bench synth");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("synth: 20000 messages (A "), "{text}");
    assert!(text.contains("50 instruments, peak live orders "), "{text}");
    let bytes = std::fs::read(&path).expect("read the file");
    assert!(text.contains(&format!("{} bytes", bytes.len())), "{text}");
    let mut expected = Vec::new();
    generate(
        &mut expected,
        &SynthParams {
            messages: 20_000,
            instruments: 50,
            seed: 3,
        },
    )
    .expect("generate");
    assert!(
        bytes == expected,
        "the CLI wrote other bytes than the library"
    );

    let err = cli(&["synth", path_s, "--messages", "10", "--instruments", "50"])
        .expect_err("too few messages");
    assert!(matches!(err, BenchError::BadArg(_)), "{err:?}");
    let after = std::fs::read(&path).expect("read the file again");
    assert!(after == bytes, "bad arguments clobbered the existing file");
}

/// A second, independent reading by the `itch-book` Python package (its C++ book builder),
/// where it is importable by `$MDBUS_PYTHON` (default `python3`); skipped with a message
/// otherwise.
#[test]
fn python_itch_book_reading_if_available() {
    let python = std::env::var("MDBUS_PYTHON").unwrap_or_else(|_| "python3".into());
    let importable = std::process::Command::new(&python)
        .args(["-c", "import itch_book"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !importable {
        eprintln!("skipped: the itch-book Python package is not importable by {python}");
        return;
    }
    let (bytes, summary) = session(11);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("day.itch");
    std::fs::write(&path, &bytes).expect("write the session");
    let script = "import itch_book, json, sys\n\
                  s = itch_book.Session(tables=['bbo'], depth=0, symbols=[])\n\
                  s.feed(open(sys.argv[1], 'rb').read())\n\
                  print(json.dumps(s.stats()))\n";
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "itch-book failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats as JSON");
    eprintln!("itch-book: {stats}");
    assert_eq!(stats["messages"], MESSAGES, "{stats}");
    for zero in [
        "unknown",
        "malformed",
        "pending_bytes",
        "missing_ref",
        "dup_ref",
        "rejected",
        "clamped",
        "crossed_books",
    ] {
        assert_eq!(stats[zero], 0, "{zero}: {stats}");
    }
    assert_eq!(stats["live_orders"], summary.live_orders_at_end, "{stats}");
    assert_eq!(
        stats["adds"],
        summary.count(b'A') + summary.count(b'F'),
        "{stats}"
    );
    assert_eq!(stats["deletes"], summary.count(b'D'), "{stats}");
}
