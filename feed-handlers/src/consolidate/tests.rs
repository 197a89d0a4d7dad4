use super::*;

const AAPL: [u8; 8] = *b"AAPL    ";
const MSFT: [u8; 8] = *b"MSFT    ";

fn header(venue: fb::Venue, instrument: u32, seq: u64) -> HeaderFields {
    HeaderFields {
        seq,
        recv_ts_ns: 1_000 + seq,
        stock_locate: if venue == fb::Venue::Nasdaq {
            instrument as u16
        } else {
            0
        },
        venue,
        instrument,
        ..HeaderFields::default()
    }
}

fn nasdaq_dir(locate: u32, symbol: [u8; 8]) -> Vec<u8> {
    let f = fb::StockDirectoryFields {
        stock: symbol,
        ..Default::default()
    };
    Encoder::new()
        .stock_directory(&header(fb::Venue::Nasdaq, locate, 1), &f)
        .to_vec()
}

fn iex_dir(id: u32, symbol: [u8; 8]) -> Vec<u8> {
    let f = fb::IexSecurityDirectoryFields {
        symbol,
        ..Default::default()
    };
    Encoder::new()
        .iex_security_directory(&header(fb::Venue::Iex, id, 1), &f)
        .to_vec()
}

/// A `Bbo` of `venue`'s instrument: (bid price, size), (ask price, size), 0s for empty.
fn bbo(venue: fb::Venue, instrument: u32, bid: (i64, u64), ask: (i64, u64)) -> Vec<u8> {
    let f = fb::BboFields {
        bid_price: bid.0,
        bid_size: bid.1,
        bid_orders: 1,
        ask_price: ask.0,
        ask_size: ask.1,
        ask_orders: 1,
    };
    Encoder::new()
        .bbo(&header(venue, instrument, 7), &f)
        .to_vec()
}

fn gap(venue: fb::Venue, instrument: u32, recoverable: bool) -> Vec<u8> {
    let f = fb::GapNoticeFields {
        first_missing_seq: 3,
        count: 2,
        recoverable,
        scope: fb::GapScope::Source,
    };
    Encoder::new()
        .gap_notice(&header(venue, instrument, 9), &f)
        .to_vec()
}

/// A consolidator of Nasdaq (input 0, AAPL locate 13, MSFT 14) and IEX (input 1, AAPL id 2,
/// MSFT id 5).
fn two_venues() -> Consolidator {
    let mut c = Consolidator::new(2, 16).unwrap();
    for (input, bytes) in [
        (0, nasdaq_dir(13, AAPL)),
        (0, nasdaq_dir(14, MSFT)),
        (1, iex_dir(2, AAPL)),
        (1, iex_dir(5, MSFT)),
    ] {
        feed(&mut c, input, &bytes);
    }
    c
}

/// Handles one envelope; returns what was published.
fn feed(
    c: &mut Consolidator,
    input: usize,
    bytes: &[u8],
) -> Vec<(HeaderFields, fb::ConsolidatedBboFields)> {
    let mut out = Vec::new();
    let env = fb::read_verified(bytes).unwrap();
    c.handle(
        input,
        &env,
        &mut |h: &HeaderFields, e: &fb::ConsolidatedBboFields| out.push((*h, *e)),
    );
    out
}

fn one(out: Vec<(HeaderFields, fb::ConsolidatedBboFields)>) -> fb::ConsolidatedBboFields {
    assert_eq!(out.len(), 1, "{out:?}");
    out[0].1
}

#[test]
fn symbols_join_across_venues_and_the_best_of_each_side_wins_with_its_venue() {
    let mut c = two_venues();
    assert_eq!(c.symbols(), 2, "AAPL and MSFT, each once");
    let out = feed(
        &mut c,
        0,
        &bbo(fb::Venue::Nasdaq, 13, (3_201_300, 200), (3_201_500, 100)),
    );
    let (h, e) = out[0];
    assert_eq!(
        (h.venue, h.instrument, h.seq),
        (fb::Venue::Consolidated, 1, 7)
    );
    assert_eq!(e.symbol, AAPL);
    assert_eq!(
        (e.bid_price, e.bid_size, e.bid_venue),
        (3_201_300, 200, fb::Venue::Nasdaq)
    );
    assert_eq!(e.venues().len(), 1);
    // IEX bids higher and asks the same price with more shares: it wins both sides.
    let e = one(feed(
        &mut c,
        1,
        &bbo(fb::Venue::Iex, 2, (3_201_400, 100), (3_201_500, 300)),
    ));
    assert_eq!(
        (e.bid_price, e.bid_size, e.bid_venue),
        (3_201_400, 100, fb::Venue::Iex)
    );
    assert_eq!(
        (e.ask_price, e.ask_size, e.ask_venue),
        (3_201_500, 300, fb::Venue::Iex)
    );
    assert!(e.flags.is_empty());
    let tops = e.venues();
    assert_eq!(tops.len(), 2);
    assert_eq!(
        (
            tops[0].venue,
            tops[0].input,
            tops[0].instrument,
            tops[0].bid_price
        ),
        (fb::Venue::Nasdaq, 0, 13, 3_201_300)
    );
    assert_eq!(
        (
            tops[1].venue,
            tops[1].input,
            tops[1].instrument,
            tops[1].ask_size
        ),
        (fb::Venue::Iex, 1, 2, 300)
    );
    // At an equal price and size the earlier input wins.
    let e = one(feed(
        &mut c,
        1,
        &bbo(fb::Venue::Iex, 2, (3_201_300, 200), (3_201_600, 300)),
    ));
    assert_eq!(
        (e.bid_venue, e.ask_venue),
        (fb::Venue::Nasdaq, fb::Venue::Nasdaq)
    );
    // An empty side is no quote; both empty: no best.
    let e = one(feed(&mut c, 0, &bbo(fb::Venue::Nasdaq, 14, (0, 0), (0, 0))));
    assert_eq!(e.symbol, MSFT);
    assert_eq!(
        (e.bid_price, e.bid_size, e.bid_venue, e.ask_venue),
        (0, 0, fb::Venue::Unknown, fb::Venue::Unknown)
    );
    assert_eq!(
        c.current(&AAPL).map(|e| e.bid_venue),
        Some(fb::Venue::Nasdaq)
    );
    assert_eq!(c.stats().published, 4);
}

#[test]
fn locked_and_crossed_markets_are_published_flagged() {
    let mut c = two_venues();
    feed(
        &mut c,
        0,
        &bbo(fb::Venue::Nasdaq, 13, (100_000, 100), (100_500, 100)),
    );
    let e = one(feed(
        &mut c,
        1,
        &bbo(fb::Venue::Iex, 2, (100_500, 100), (101_000, 100)),
    ));
    assert_eq!((e.bid_price, e.ask_price), (100_500, 100_500));
    assert_eq!(e.flags, fb::ConsolidatedFlags::Locked);
    let e = one(feed(
        &mut c,
        1,
        &bbo(fb::Venue::Iex, 2, (100_600, 100), (101_000, 100)),
    ));
    assert_eq!((e.bid_price, e.ask_price), (100_600, 100_500));
    assert_eq!(
        (e.bid_venue, e.ask_venue),
        (fb::Venue::Iex, fb::Venue::Nasdaq)
    );
    assert_eq!(e.flags, fb::ConsolidatedFlags::Crossed);
    assert_eq!((c.stats().locked, c.stats().crossed), (1, 1));
}

#[test]
fn a_gap_makes_the_venues_tops_stale_and_its_next_bbo_live_again() {
    let mut c = two_venues();
    feed(
        &mut c,
        0,
        &bbo(fb::Venue::Nasdaq, 13, (100_000, 100), (100_500, 100)),
    );
    feed(
        &mut c,
        0,
        &bbo(fb::Venue::Nasdaq, 14, (200_000, 100), (200_500, 100)),
    );
    feed(
        &mut c,
        1,
        &bbo(fb::Venue::Iex, 2, (99_900, 300), (100_600, 300)),
    );
    // A recoverable gap changes nothing.
    assert!(feed(&mut c, 0, &gap(fb::Venue::Nasdaq, 0, true)).is_empty());
    // Lost for good, for every Nasdaq instrument: both symbols published again without it.
    let out = feed(&mut c, 0, &gap(fb::Venue::Nasdaq, 0, false));
    assert_eq!(out.len(), 2);
    let aapl = out.iter().find(|(_, e)| e.symbol == AAPL).unwrap().1;
    assert_eq!(
        (
            aapl.bid_price,
            aapl.bid_venue,
            aapl.ask_price,
            aapl.ask_venue
        ),
        (99_900, fb::Venue::Iex, 100_600, fb::Venue::Iex)
    );
    assert!(aapl.flags.contains(fb::ConsolidatedFlags::StaleVenue));
    let nasdaq = aapl.venues()[0];
    assert_eq!(
        (
            nasdaq.venue,
            nasdaq.flags,
            nasdaq.bid_price,
            nasdaq.ask_size
        ),
        (fb::Venue::Nasdaq, fb::VenueTopFlags::Stale, 0, 0)
    );
    let msft = out.iter().find(|(_, e)| e.symbol == MSFT).unwrap().1;
    assert_eq!(
        (msft.bid_venue, msft.ask_venue),
        (fb::Venue::Unknown, fb::Venue::Unknown)
    );
    assert_eq!((c.stats().gaps, c.stats().stale), (1, 2));
    // A second notice finds nothing live: nothing to publish.
    assert!(feed(&mut c, 0, &gap(fb::Venue::Nasdaq, 0, false)).is_empty());
    // Nasdaq's next AAPL top is live again.
    let e = one(feed(
        &mut c,
        0,
        &bbo(fb::Venue::Nasdaq, 13, (100_000, 100), (100_500, 100)),
    ));
    assert_eq!((e.ask_price, e.ask_venue), (100_500, fb::Venue::Nasdaq));
    assert_eq!(e.flags, fb::ConsolidatedFlags::empty());
    // A gap of one instrument stales that one only.
    let out = feed(&mut c, 1, &gap(fb::Venue::Iex, 2, false));
    let e = one(out);
    assert_eq!((e.symbol, e.bid_venue), (AAPL, fb::Venue::Nasdaq));
    assert_eq!(e.venues()[1].flags, fb::VenueTopFlags::Stale);
}

#[test]
fn the_end_of_an_inputs_session_and_an_overrun_make_its_tops_stale() {
    let mut c = two_venues();
    feed(
        &mut c,
        1,
        &bbo(fb::Venue::Iex, 5, (100_000, 100), (100_500, 100)),
    );
    let end = Encoder::new()
        .end_of_session(&header(fb::Venue::Iex, 0, 99), &fb::EndOfSessionFields)
        .to_vec();
    let env = fb::read_verified(&end).unwrap();
    let mut out = Vec::new();
    let h = c.handle(
        1,
        &env,
        &mut |_: &HeaderFields, e: &fb::ConsolidatedBboFields| out.push(*e),
    );
    assert_eq!(h, Handled::EndOfSession);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].symbol, MSFT);
    assert_eq!(out[0].bid_venue, fb::Venue::Unknown);
    assert_eq!(c.stats().inputs_ended, 1);
    feed(
        &mut c,
        0,
        &bbo(fb::Venue::Nasdaq, 13, (100_000, 100), (100_500, 100)),
    );
    let mut out = Vec::new();
    c.input_lost(
        0,
        5,
        &mut |_: &HeaderFields, e: &fb::ConsolidatedBboFields| out.push(*e),
    );
    assert_eq!(out.len(), 1);
    assert!(out[0].flags.contains(fb::ConsolidatedFlags::StaleVenue));
    assert_eq!((c.stats().overruns, c.stats().lost), (1, 5));
}

#[test]
fn unnamed_instruments_a_full_table_and_bad_ids_are_counted_not_published() {
    let mut c = Consolidator::new(2, 1).unwrap();
    // No directory named Nasdaq's locate 13.
    assert!(feed(&mut c, 0, &bbo(fb::Venue::Nasdaq, 13, (1, 1), (2, 1))).is_empty());
    assert_eq!(c.stats().unnamed, 1);
    feed(&mut c, 0, &nasdaq_dir(13, AAPL));
    // The table holds one symbol: MSFT does not fit, its tops are counted.
    feed(&mut c, 1, &iex_dir(5, MSFT));
    assert!(feed(&mut c, 1, &bbo(fb::Venue::Iex, 5, (1, 1), (2, 1))).is_empty());
    assert_eq!(c.stats().symbols_full, 2);
    // An instrument id the maps cannot hold.
    assert!(feed(&mut c, 1, &bbo(fb::Venue::Iex, 70_000, (1, 1), (2, 1))).is_empty());
    feed(&mut c, 1, &iex_dir(70_000, AAPL));
    assert_eq!(c.stats().bad_instruments, 2);
    // An input beyond those given is ignored.
    assert!(feed(&mut c, 2, &bbo(fb::Venue::Iex, 5, (1, 1), (2, 1))).is_empty());
    assert_eq!(c.symbols(), 1);
    assert_eq!(c.stats().published, 0);
}

#[test]
fn inputs_and_symbols_are_bounded_at_setup() {
    assert!(matches!(
        Consolidator::new(0, 4),
        Err(ConsolidateError::Inputs(0))
    ));
    assert!(matches!(
        Consolidator::new(MAX_INPUTS + 1, 4),
        Err(ConsolidateError::Inputs(_))
    ));
    assert!(matches!(
        Consolidator::new(2, 0),
        Err(ConsolidateError::Symbols { got: 0 })
    ));
}

#[test]
fn counter_names_fit_a_counters_file_and_match_the_values() {
    assert_eq!(
        ConsolidateStats::NAMES.len(),
        ConsolidateStats::default().values().len()
    );
    for n in ConsolidateStats::NAMES {
        assert!(n.len() <= mdbus_shm::counters::MAX_COUNTER_NAME, "{n}");
    }
}

#[test]
fn the_service_merges_two_book_streams_and_ends_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let ring = crate::bookstream::output_ring();
    let mut a = bus.publisher("a.book", &ring).unwrap();
    let mut b = bus.publisher("b.book", &ring).unwrap();
    let mut svc = ConsolidateService::new(
        &bus,
        &["a.book", "b.book"],
        "cbbo",
        &ConsolidateConfig::default(),
    )
    .unwrap();
    svc.publish_counters(&bus).unwrap();
    let mut sub = bus
        .subscriber("cbbo", &SubscribeOptions::default())
        .unwrap();
    let end = |venue| {
        Encoder::new()
            .end_of_session(&header(venue, 0, 50), &fb::EndOfSessionFields)
            .to_vec()
    };
    for m in [
        nasdaq_dir(13, AAPL),
        bbo(fb::Venue::Nasdaq, 13, (100_000, 100), (100_500, 100)),
        end(fb::Venue::Nasdaq),
    ] {
        a.publish_envelope(&m).unwrap();
    }
    for m in [
        iex_dir(2, AAPL),
        bbo(fb::Venue::Iex, 2, (100_100, 10), (100_600, 10)),
        end(fb::Venue::Iex),
    ] {
        b.publish_envelope(&m).unwrap();
    }
    let stop = AtomicBool::new(false);
    let stats = svc.run(WaitStrategy::BusySpin, &stop).unwrap();
    assert!(stats.ended);
    assert_eq!(
        (stats.bbos, stats.directories, stats.inputs_ended),
        (2, 2, 2)
    );
    let mut got = Vec::new();
    while sub
        .poll_event(|ev| {
            let env = ev.envelope();
            got.push((
                env.event_type(),
                env.event_as_consolidated_bbo()
                    .map(|t| fb::ConsolidatedBboFields::read(&t)),
            ));
        })
        .unwrap()
    {}
    let kinds: Vec<_> = got.iter().map(|g| g.0).collect();
    // Two tops, two ends (each venue's AAPL top goes stale), the output's end.
    assert_eq!(
        kinds,
        [
            fb::Event::ConsolidatedBbo,
            fb::Event::ConsolidatedBbo,
            fb::Event::ConsolidatedBbo,
            fb::Event::ConsolidatedBbo,
            fb::Event::EndOfSession
        ]
    );
    assert_eq!(stats.published, 4);
    let (files, _) = mdbus_shm::counters::list_counters(bus.root()).unwrap();
    assert!(
        files
            .iter()
            .any(|f| f.role == COUNTERS_ROLE && f.stream == "cbbo"),
        "{files:?}"
    );
}
