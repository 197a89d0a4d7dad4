//! IEX books from the bus's envelopes: a replay of the DEEP sample and of the DEEP+ capture is
//! published to a stream, the book service (and [`EnvelopeBooks`]) read that stream, and their
//! books must equal the ones the replay's `--book-summary` builds from the decoded messages,
//! for every symbol.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mdbus_bus::schema as fb;
use mdbus_bus::{Bus, StartAt, StreamConfig, SubscribeOptions, Subscriber};
use mdbus_feed_handlers::book::{BookConfig, EnvelopeBooks, GapPolicy, IexSummary};
use mdbus_feed_handlers::bookstream::{
    BookService, BookServiceConfig, Handled, book_stream_name, output_ring,
};
use mdbus_feed_handlers::replay::{ReplayOptions, Replayer, Source, replay_book_config};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../codecs/testdata")
        .join(rel)
}

fn deep_sample() -> Source {
    let path = testdata("iex/deep10-2017-04-25.pcap.gz");
    let out = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("gzip -dc {}: {e}", path.display()));
    assert!(out.status.success(), "gzip -dc {}", path.display());
    Source::Bytes {
        name: "deep10-2017-04-25.pcap".into(),
        bytes: Box::leak(out.stdout.into_boxed_slice()),
    }
}

/// Replays `source` onto stream `iex` of `bus` (a ring large enough to hold all of it), with
/// the replay's own book summary.
fn replay(bus: &Bus, source: &Source) -> IexSummary {
    let ring = StreamConfig {
        capacity: 128 << 20,
        max_msg_len: 512,
        ..StreamConfig::default()
    };
    let options = ReplayOptions {
        book_summary: Some(replay_book_config()),
        ..ReplayOptions::default()
    };
    let report = Replayer::open(source, bus, "iex", &ring, options)
        .expect("opens")
        .run(&mut |_| {})
        .expect("replays");
    report.iex_summary.expect("an IEX summary")
}

fn oldest(bus: &Bus, name: &str) -> Subscriber {
    let options = SubscribeOptions {
        start: StartAt::Oldest,
        ..SubscribeOptions::default()
    };
    bus.subscriber(name, &options).expect("subscribes")
}

/// The top of book per symbol as the book stream ends: the last `Bbo` of each instrument,
/// named by the stream's directory events.
type Tops = BTreeMap<String, (Option<i64>, u64, Option<i64>, u64)>;

#[derive(Default)]
struct BookStream {
    names: BTreeMap<u32, String>,
    last: BTreeMap<u32, fb::BboFields>,
    bbos: u64,
}

impl BookStream {
    fn drain(&mut self, sub: &mut Subscriber) {
        loop {
            let got = sub
                .poll_event(|ev| {
                    let env = ev.envelope();
                    let instrument = env.instrument();
                    match env.event_type() {
                        fb::Event::Bbo => {
                            let b = env.event_as_bbo().unwrap().body();
                            self.bbos += 1;
                            self.last.insert(
                                instrument,
                                fb::BboFields {
                                    bid_price: b.bid_price(),
                                    bid_size: b.bid_size(),
                                    bid_orders: b.bid_orders(),
                                    ask_price: b.ask_price(),
                                    ask_size: b.ask_size(),
                                    ask_orders: b.ask_orders(),
                                },
                            );
                        }
                        fb::Event::IexSecurityDirectory => {
                            let d = env.event_as_iex_security_directory().unwrap();
                            let name = String::from_utf8_lossy(&d.symbol().0).trim_end().to_owned();
                            let before = self.names.insert(instrument, name.clone());
                            assert!(
                                before.is_none_or(|b| b == name),
                                "instrument {instrument} renamed"
                            );
                        }
                        _ => {}
                    }
                })
                .expect("the book stream reads without loss");
            if !got {
                return;
            }
        }
    }

    fn tops(&self) -> Tops {
        let side = |p: i64, s: u64| (s != 0 || p != 0).then_some(p);
        self.last
            .iter()
            .filter(|(_, b)| b.bid_size != 0 || b.ask_size != 0)
            .map(|(i, b)| {
                let name = self
                    .names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("#{i}"));
                (
                    name,
                    (
                        side(b.bid_price, b.bid_size),
                        b.bid_size,
                        side(b.ask_price, b.ask_size),
                        b.ask_size,
                    ),
                )
            })
            .collect()
    }
}

/// The replay summary's tops, for the symbols with a non-empty side.
fn summary_tops(s: &IexSummary) -> Tops {
    s.books
        .iter()
        .filter(|(_, e)| e.best_bid.is_some() || e.best_ask.is_some())
        .map(|(k, e)| (k.clone(), (e.best_bid, e.bid_size, e.best_ask, e.ask_size)))
        .collect()
}

/// Replays `source`, runs the book service over the stream, and compares its final tops
/// with the replay's summary, symbol by symbol.
fn book_service_matches_the_replay(source: Source, min_symbols: usize) {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let want = replay(&bus, &source);
    let config = BookServiceConfig {
        book: BookConfig {
            max_orders: 1 << 16,
            max_instruments: 4096,
            levels_per_side_hint: 16,
        },
        output: output_ring(),
        publish_levels: false,
        ..BookServiceConfig::default()
    };
    let mut svc = BookService::new(&bus, "iex", &config).unwrap();
    let mut book = oldest(&bus, &book_stream_name("iex"));
    let mut input = oldest(&bus, "iex");
    let mut stream = BookStream::default();
    let mut books = EnvelopeBooks::new(replay_book_config(), GapPolicy::CountLost).unwrap();
    let mut ended = false;
    while !ended {
        let got = input
            .poll_event(|ev| {
                books.observe(&ev.envelope());
                ended = svc.handle(&ev.envelope()) == Handled::EndOfSession;
            })
            .expect("the replay's stream reads without loss");
        assert!(got || ended, "the stream ends with an end of session");
        stream.drain(&mut book);
    }
    stream.drain(&mut book);
    let want_tops = summary_tops(&want);
    assert!(want_tops.len() >= min_symbols, "{}", want.to_json());
    let got = stream.tops();
    for (sym, w) in &want_tops {
        assert_eq!(got.get(sym), Some(w), "{sym}");
    }
    assert_eq!(got, want_tops);
    assert!(stream.bbos > 0 || min_symbols == 0);
    // The envelope books' whole summary (counts, prints, names from the envelopes) too.
    assert_eq!(books.iex_summary(want.gaps), want);
    assert_eq!(books.gaps(), want.gaps);
}

#[test]
fn the_book_service_builds_the_deep_samples_books_from_envelopes() {
    book_service_matches_the_replay(deep_sample(), 10);
}

#[test]
fn the_book_service_builds_the_deep_plus_captures_books_from_envelopes() {
    book_service_matches_the_replay(
        Source::Path(testdata("iex/deepplus-all-message-types.pcap")),
        0,
    );
}
