//! `mdbus consolidate`: the bundled Nasdaq sample, IEX's DEEP sample and a small Nasdaq ITCH
//! file written here (naming symbols the DEEP sample quotes, so that venues really join) are
//! replayed with their book services onto one bus root, consolidated, and the consolidated
//! stream is checked against a computation of its own from the three book streams: each
//! venue's tops, symbol by symbol, in order (stale after a lost gap or the end), and each
//! event's best bid and ask recomputed from its venues' tops.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mdbus_bus::schema as fb;
use mdbus_bus::{Bus, StartAt, SubscribeOptions};
use mdbus_codecs::nasdaq::itch::{
    self, AddOrderFields, MessageFields, OrderDeleteFields, Price4, StockDirectoryFields,
};
use serde_json::Value;

const MDBUS: &str = env!("CARGO_BIN_EXE_mdbus");

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../codecs/testdata")
        .join(rel)
}

fn mdbus(args: &[&str]) -> Output {
    Command::new(MDBUS)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run mdbus {args:?}: {e}"))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn sym(s: &str) -> [u8; 8] {
    let mut b = *b"        ";
    b[..s.len()].copy_from_slice(s.as_bytes());
    b
}

/// A Nasdaq ITCH file (length-prefixed messages) quoting MSFT and ZIEXT, which the DEEP
/// sample quotes too (ZIEXT's bid at IEX's price with more shares, asks below IEX's bids:
/// crossed across venues), again and again over about `records` book-stream records, the
/// rest a third symbol's churn: read beside the IEX book stream, its quotes are live while
/// IEX's are.
fn synthetic_itch(path: &Path, records: usize) {
    let mut ts = 34_200_000_000_000u64;
    let mut msgs = Vec::new();
    let mut next = || {
        ts += 1_000_000;
        ts
    };
    let symbols = [sym("MSFT"), sym("ZIEXT"), sym("PAD")];
    for (locate, symbol) in (1..).zip(symbols) {
        msgs.push(MessageFields::StockDirectory(
            StockDirectoryFields::common_stock(locate, symbol, next()),
        ));
    }
    let add = |ts: u64, locate: u16, order_ref: u64, side: u8, price: u32, shares: u32| {
        MessageFields::AddOrder(AddOrderFields {
            stock_locate: locate,
            tracking_number: 0,
            timestamp: ts,
            order_reference_number: order_ref,
            buy_sell_indicator: side,
            shares,
            stock: symbols[usize::from(locate) - 1],
            price: Price4(price),
        })
    };
    let delete = |ts: u64, locate: u16, order_ref: u64| {
        MessageFields::OrderDelete(OrderDeleteFields {
            stock_locate: locate,
            tracking_number: 0,
            timestamp: ts,
            order_reference_number: order_ref,
        })
    };
    let mut order_ref = 0u64;
    let mut resting: Vec<(u16, u64)> = Vec::new();
    for k in 0..records / 2 {
        if k % 50 == 0 {
            for (locate, r) in resting.drain(..) {
                msgs.push(delete(next(), locate, r));
            }
            let step = (k / 50 % 7) as u32 * 100;
            for (locate, side, price, shares) in [
                (1, b'B', 300_000 + step, 500),
                (1, b'S', 360_000 - step, 200),
                (2, b'B', 200_100, 300),
                (2, b'S', 199_000 + step, 100),
            ] {
                order_ref += 1;
                msgs.push(add(next(), locate, order_ref, side, price, shares));
                resting.push((locate, order_ref));
            }
        }
        order_ref += 1;
        msgs.push(add(next(), 3, order_ref, b'B', 10_000, 100));
        msgs.push(delete(next(), 3, order_ref));
    }
    let mut bytes = Vec::new();
    let mut buf = [0u8; 128];
    for m in &msgs {
        let n = itch::write_framed(m, &mut buf).expect("encodes");
        bytes.extend_from_slice(&buf[..n]);
    }
    std::fs::write(path, bytes).unwrap();
}

/// Bid price, bid size, ask price, ask size.
type Quote = (i64, u64, i64, u64);
/// One venue's top as the test keeps it: `None` when stale.
type Top = Option<Quote>;
/// Price, size and venue of one side of the best.
type BestSide = (i64, u64, fb::Venue);

/// Reads every envelope of stream `name` under `root`, from the oldest.
fn read_stream(bus: &Bus, name: &str) -> Vec<Vec<u8>> {
    let options = SubscribeOptions {
        start: StartAt::Oldest,
        ..SubscribeOptions::default()
    };
    let mut sub = bus.subscriber(name, &options).expect("subscribes");
    let mut out = Vec::new();
    loop {
        match sub.poll_event(|ev| out.push(ev.envelope()._tab.buf().to_vec())) {
            Ok(true) => {}
            // Read to its end: the publisher closed it.
            Ok(false) | Err(mdbus_bus::ReceiveError::Closed) => return out,
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

/// What one input book stream says of each symbol's top, in order (consecutive repeats
/// removed), and how many consolidated events it must cause.
fn model_input(envs: &[Vec<u8>]) -> (BTreeMap<[u8; 8], Vec<Top>>, u64) {
    let mut names: BTreeMap<u32, [u8; 8]> = BTreeMap::new();
    let mut seqs: BTreeMap<[u8; 8], Vec<Top>> = BTreeMap::new();
    let mut live: BTreeMap<[u8; 8], bool> = BTreeMap::new();
    let mut events = 0u64;
    let stale = |symbol: [u8; 8],
                 seqs: &mut BTreeMap<[u8; 8], Vec<Top>>,
                 live: &mut BTreeMap<[u8; 8], bool>,
                 events: &mut u64| {
        if live.get(&symbol) == Some(&true) {
            live.insert(symbol, false);
            seqs.entry(symbol).or_default().push(None);
            *events += 1;
        }
    };
    for bytes in envs {
        let env = fb::read_verified(bytes).unwrap();
        let instrument = env.instrument();
        match env.event_type() {
            fb::Event::StockDirectory => {
                names.insert(
                    instrument,
                    env.event_as_stock_directory().unwrap().stock().0,
                );
            }
            fb::Event::IexSecurityDirectory => {
                let d = env.event_as_iex_security_directory().unwrap();
                names.insert(instrument, d.symbol().0);
            }
            fb::Event::Bbo => {
                let Some(&symbol) = names.get(&instrument) else {
                    continue;
                };
                let b = env.event_as_bbo().unwrap().body();
                let top = (b.bid_price(), b.bid_size(), b.ask_price(), b.ask_size());
                seqs.entry(symbol).or_default().push(Some(top));
                live.insert(symbol, true);
                events += 1;
            }
            fb::Event::GapNotice => {
                let g = env.event_as_gap_notice().unwrap();
                if g.recoverable() {
                    continue;
                }
                let symbols: Vec<[u8; 8]> = match instrument {
                    0 => live.keys().copied().collect(),
                    i => names.get(&i).copied().into_iter().collect(),
                };
                for symbol in symbols {
                    stale(symbol, &mut seqs, &mut live, &mut events);
                }
            }
            fb::Event::EndOfSession => {
                let symbols: Vec<[u8; 8]> = live.keys().copied().collect();
                for symbol in symbols {
                    stale(symbol, &mut seqs, &mut live, &mut events);
                }
                break;
            }
            _ => {}
        }
    }
    for seq in seqs.values_mut() {
        seq.dedup();
    }
    (seqs, events)
}

/// The best bid and ask of `tops` ((input, venue, top) of the live venues), by the rules the
/// consolidator documents: highest bid, lowest ask, at equal prices the larger size, then the
/// earlier input; a side of price and size 0 quotes nothing.
fn best(tops: &[(u8, fb::Venue, Quote)]) -> (BestSide, BestSide) {
    let none = (0, 0, fb::Venue::Unknown);
    let mut bid = none;
    let mut ask = none;
    let mut have = (false, false);
    for &(_, venue, (bp, bs, ap, az)) in tops {
        if (bp, bs) != (0, 0) && (!have.0 || bp > bid.0 || (bp == bid.0 && bs > bid.1)) {
            bid = (bp, bs, venue);
            have.0 = true;
        }
        if (ap, az) != (0, 0) && (!have.1 || ap < ask.0 || (ap == ask.0 && az > ask.1)) {
            ask = (ap, az, venue);
            have.1 = true;
        }
    }
    (bid, ask)
}

#[test]
fn consolidate_merges_nasdaq_and_iex_book_streams_as_computed_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let deep = dir.path().join("deep.pcap");
    let gz = testdata("iex/deep10-2017-04-25.pcap.gz");
    let out = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
    assert!(out.status.success());
    std::fs::write(&deep, out.stdout).unwrap();
    let synth = dir.path().join("synth.itch");
    let aapl = testdata("itch/aapl-2020-01-30-10k.itch");
    let bus = Bus::with_root(&root).unwrap();
    for (feed, file) in [("nasdaq", &aapl), ("iex", &deep), ("synth", &synth)] {
        if feed == "synth" {
            synthetic_itch(&synth, read_stream(&bus, "iex.book").len());
        }
        let out = mdbus(&[
            "replay",
            "--root",
            s(&root),
            "--feed",
            feed,
            "--book",
            "--no-progress",
            s(file),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let inputs = ["nasdaq.book", "iex.book", "synth.book"];
    let out = mdbus(&[
        "consolidate",
        "--root",
        s(&root),
        "--input",
        inputs[0],
        "--input",
        inputs[1],
        "--input",
        inputs[2],
        "--output",
        "cbbo",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("consolidate: nasdaq.book + iex.book + synth.book -> \"cbbo\""),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");

    let models: Vec<_> = inputs
        .iter()
        .map(|i| model_input(&read_stream(&bus, i)))
        .collect();
    let output = read_stream(&bus, "cbbo");
    // Per (symbol, input): the venue's tops as the consolidated stream shows them.
    let mut seen: BTreeMap<([u8; 8], u8), Vec<Top>> = BTreeMap::new();
    let (mut events, mut joined, mut crossed) = (0u64, 0u64, 0u64);
    for (n, bytes) in output.iter().enumerate() {
        let env = fb::read_verified(bytes).unwrap();
        if env.event_type() == fb::Event::EndOfSession {
            assert_eq!(n + 1, output.len(), "the end of session is last");
            continue;
        }
        let t = env
            .event_as_consolidated_bbo()
            .expect("consolidated events only");
        let e = fb::ConsolidatedBboFields::read(&t);
        assert_eq!(env.venue(), fb::Venue::Consolidated);
        events += 1;
        let mut live = Vec::new();
        let mut stale = false;
        for v in e.venues() {
            let is_stale = v.flags.contains(fb::VenueTopFlags::Stale);
            let top = (v.bid_price, v.bid_size, v.ask_price, v.ask_size);
            stale |= is_stale;
            if !is_stale {
                live.push((v.input, v.venue, top));
            }
            let seq = seen.entry((e.symbol, v.input)).or_default();
            let entry = (!is_stale).then_some(top);
            if seq.last() != Some(&entry) {
                seq.push(entry);
            }
        }
        let (bid, ask) = best(&live);
        assert_eq!((e.bid_price, e.bid_size, e.bid_venue), bid, "event {n}");
        assert_eq!((e.ask_price, e.ask_size, e.ask_venue), ask, "event {n}");
        let both = bid.2 != fb::Venue::Unknown && ask.2 != fb::Venue::Unknown;
        assert_eq!(
            e.flags.contains(fb::ConsolidatedFlags::Locked),
            both && bid.0 == ask.0
        );
        assert_eq!(
            e.flags.contains(fb::ConsolidatedFlags::Crossed),
            both && bid.0 > ask.0
        );
        assert_eq!(e.flags.contains(fb::ConsolidatedFlags::StaleVenue), stale);
        crossed += u64::from(e.flags.contains(fb::ConsolidatedFlags::Crossed));
        joined += u64::from(live.len() >= 2);
    }
    // Each venue's tops, symbol by symbol, are its book stream's, in order.
    for (input, (seqs, _)) in models.iter().enumerate() {
        for (symbol, want) in seqs {
            let got = seen
                .get(&(*symbol, input as u8))
                .cloned()
                .unwrap_or_default();
            assert_eq!(
                &got,
                want,
                "{} on {}",
                String::from_utf8_lossy(symbol),
                inputs[input]
            );
        }
    }
    assert_eq!(
        seen.keys()
            .filter(|(_, i)| usize::from(*i) < inputs.len())
            .count(),
        models.iter().map(|(s, _)| s.len()).sum::<usize>(),
        "no venue top the book streams do not have"
    );
    let want_events: u64 = models.iter().map(|(_, n)| n).sum();
    assert_eq!(events, want_events);
    assert_eq!(report["published"], want_events);
    assert_eq!(report["ended"], 1);
    assert_eq!(report["inputs_ended"], 3);
    // The venues really joined: MSFT and ZIEXT quoted on IEX and the synthetic Nasdaq file.
    assert!(joined > 0);
    assert!(seen.contains_key(&(sym("MSFT"), 1)) && seen.contains_key(&(sym("MSFT"), 2)));
    assert!(crossed > 0);
    assert_eq!(report["crossed"], crossed);
    // AAPL's Nasdaq tops are there, and its IEX status messages name it without a top.
    assert!(models[0].0.contains_key(&sym("AAPL")));

    // The role's counters are listed by `mdbus stat`.
    let out = mdbus(&["stat", "--root", s(&root), "--all"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("consolidate cbbo"), "{stdout}");
}

#[test]
fn consolidate_refuses_bad_arguments_and_missing_inputs_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let root = s(dir.path());
    let out = mdbus(&[
        "consolidate",
        "--root",
        root,
        "--input",
        "a.book",
        "--output",
        "c",
        "--start",
        "later",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--start \"later\": oldest or next"));
    let mut args = vec!["consolidate", "--root", root, "--output", "c"];
    for _ in 0..9 {
        args.extend(["--input", "a.book"]);
    }
    let out = mdbus(&args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 8 streams"));
    let out = mdbus(&[
        "consolidate",
        "--root",
        root,
        "--input",
        "nowhere.book",
        "--output",
        "c",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nowhere.book"), "{stderr}");
    let out = mdbus(&["consolidate", "--root", root, "--output", "c"]);
    assert!(!out.status.success(), "an input is required");
}
