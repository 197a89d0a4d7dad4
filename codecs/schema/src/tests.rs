use core::fmt::Write as _;

use super::*;

/// A `fmt::Write` that discards, to walk every field through the generated `Debug`.
struct Sink(usize);
impl core::fmt::Write for Sink {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

fn header() -> HeaderFields {
    HeaderFields {
        seq: u64::MAX - 1,
        exchange_ts_ns: u64::MAX - 2,
        recv_ts_ns: u64::MAX - 3,
        stock_locate: u16::MAX - 4,
        tracking_number: u16::MAX - 5,
        flags: EnvelopeFlags::all(),
        venue: Venue(u16::MAX - 6),
        instrument: u32::MAX - 7,
    }
}

/// One way of encoding.
trait Enc {
    fn enc<E: EventFields>(&mut self, h: &HeaderFields, e: &E) -> Vec<u8>;
}
/// The default path (frames for hot-path kinds).
impl Enc for Encoder {
    fn enc<E: EventFields>(&mut self, h: &HeaderFields, e: &E) -> Vec<u8> {
        self.encode(h, e).to_vec()
    }
}
/// The builder for every kind.
struct ViaBuilder(Encoder);
impl Enc for ViaBuilder {
    fn enc<E: EventFields>(&mut self, h: &HeaderFields, e: &E) -> Vec<u8> {
        self.0.encode_with_builder(h, e).to_vec()
    }
}
/// The builder with every field stored: what frames must equal byte for byte.
struct AllFields(Encoder);
impl Enc for AllFields {
    fn enc<E: EventFields>(&mut self, h: &HeaderFields, e: &E) -> Vec<u8> {
        self.0.encode_all_fields(h, e).to_vec()
    }
}

/// Straight into a destination where the kind has a frame (`Encoder::encode_into`), after
/// encoding something else of the kind into that frame; the builder otherwise.
struct Into(Encoder);
impl Enc for Into {
    fn enc<E: EventFields>(&mut self, h: &HeaderFields, e: &E) -> Vec<u8> {
        let Some(len) = self.0.fixed_len::<E>() else {
            assert!(!self.0.encode_into(h, e, &mut [0u8; 512]), "{:?}", E::EVENT);
            return self.0.encode(h, e).to_vec();
        };
        // The frame holds another message's variable parts: none may leak.
        let _ = self.0.encode(&HeaderFields::default(), e);
        for wrong in [len - 1, len + 1] {
            let mut dst = vec![0x5Au8; wrong];
            assert!(!self.0.encode_into(h, e, &mut dst), "{:?}", E::EVENT);
            assert!(
                dst.iter().all(|&b| b == 0x5A),
                "wrote into a wrong-sized destination"
            );
        }
        let mut dst = vec![0xA5u8; len];
        assert!(self.0.encode_into(h, e, &mut dst), "{:?}", E::EVENT);
        dst
    }
}

#[test]
fn encode_into_writes_what_encode_returns() {
    let mut reference = Vec::new();
    each_kind(&mut Encoder::new(), |_, bytes| {
        reference.push(bytes.to_vec())
    });
    let mut written = Vec::new();
    each_kind(&mut Into(Encoder::new()), |_, bytes| {
        written.push(bytes.to_vec())
    });
    assert_eq!(written, reference);
}

/// Encodes one event of every kind, every field non-default, and hands each to `check`.
fn each_kind(enc: &mut impl Enc, mut check: impl FnMut(Event, &[u8])) {
    let h = header();
    let s = *b"ZZZZZZZZ";
    let m = *b"MPID";
    macro_rules! go {
        ($f:expr) => {{
            let f = $f;
            let bytes = enc.enc(&h, &f);
            check(event_of(&f), &bytes);
        }};
    }
    fn event_of<E: EventFields>(_: &E) -> Event {
        E::EVENT
    }
    go!(SystemEventFields {
        event_code: SystemEventCode(255)
    });
    go!(StockDirectoryFields {
        stock: s,
        market_category: 1,
        financial_status_indicator: 2,
        round_lot_size: u32::MAX,
        round_lots_only: 3,
        issue_classification: 4,
        issue_sub_type: *b"AB",
        authenticity: 5,
        short_sale_threshold_indicator: 6,
        ipo_flag: 7,
        luld_reference_price_tier: 8,
        etp_flag: 9,
        etp_leverage_factor: u32::MAX,
        inverse_indicator: 10,
    });
    go!(StockTradingActionFields {
        stock: s,
        trading_state: TradingState::Halted,
        reserved: 1,
        reason: *b"LUDP"
    });
    go!(RegShoRestrictionFields {
        stock: s,
        reg_sho_action: b'1'
    });
    go!(MarketParticipantPositionFields {
        mpid: m,
        stock: s,
        primary_market_maker: 1,
        market_maker_mode: 2,
        market_participant_state: 3
    });
    go!(MwcbDeclineLevelFields {
        level1: u64::MAX,
        level2: u64::MAX,
        level3: u64::MAX
    });
    go!(MwcbStatusFields {
        breached_level: b'3'
    });
    go!(IpoQuotingPeriodUpdateFields {
        stock: s,
        ipo_quotation_release_time: u32::MAX,
        ipo_quotation_release_qualifier: 1,
        ipo_price: u32::MAX
    });
    go!(LuldAuctionCollarFields {
        stock: s,
        auction_collar_reference_price: u32::MAX,
        upper_auction_collar_price: u32::MAX,
        lower_auction_collar_price: u32::MAX,
        auction_collar_extension: u32::MAX
    });
    go!(OperationalHaltFields {
        stock: s,
        market_code: 1,
        operational_halt_action: 2
    });
    go!(AddOrderFields {
        order_reference_number: u64::MAX,
        buy_sell_indicator: Side::Sell,
        shares: u32::MAX,
        stock: s,
        price: u32::MAX
    });
    go!(AddOrderMpidFields {
        order_reference_number: u64::MAX,
        buy_sell_indicator: Side::Sell,
        shares: u32::MAX,
        stock: s,
        price: u32::MAX,
        attribution: m
    });
    go!(OrderExecutedFields {
        order_reference_number: u64::MAX,
        executed_shares: u32::MAX,
        match_number: u64::MAX
    });
    go!(OrderExecutedWithPriceFields {
        order_reference_number: u64::MAX,
        executed_shares: u32::MAX,
        match_number: u64::MAX,
        printable: 1,
        execution_price: u32::MAX
    });
    go!(OrderCancelFields {
        order_reference_number: u64::MAX,
        cancelled_shares: u32::MAX
    });
    go!(OrderDeleteFields {
        order_reference_number: u64::MAX
    });
    go!(OrderReplaceFields {
        original_order_reference_number: u64::MAX,
        new_order_reference_number: u64::MAX,
        shares: u32::MAX,
        price: u32::MAX
    });
    go!(TradeFields {
        order_reference_number: u64::MAX,
        buy_sell_indicator: Side::Buy,
        shares: u32::MAX,
        stock: s,
        price: u32::MAX,
        match_number: u64::MAX
    });
    go!(CrossTradeFields {
        shares: u64::MAX,
        stock: s,
        cross_price: u32::MAX,
        match_number: u64::MAX,
        cross_type: 1
    });
    go!(BrokenTradeFields {
        match_number: u64::MAX
    });
    go!(NetOrderImbalanceIndicatorFields {
        paired_shares: u64::MAX,
        imbalance_shares: u64::MAX,
        imbalance_direction: 1,
        stock: s,
        far_price: u32::MAX,
        near_price: u32::MAX,
        current_reference_price: u32::MAX,
        cross_type: 2,
        price_variation_indicator: 3
    });
    go!(RetailPriceImprovementIndicatorFields {
        stock: s,
        interest_flag: 1
    });
    go!(DirectListingPriceDiscoveryFields {
        stock: s,
        open_eligibility_status: 1,
        minimum_allowable_price: u32::MAX,
        maximum_allowable_price: u32::MAX,
        near_execution_price: u32::MAX,
        near_execution_time: u64::MAX,
        lower_price_range_collar: u32::MAX,
        upper_price_range_collar: u32::MAX
    });
    go!(HeartbeatFields);
    go!(GapNoticeFields {
        first_missing_seq: u64::MAX,
        count: u64::MAX,
        recoverable: true,
        scope: crate::generated::GapScope::Transport
    });
    go!(BboFields {
        bid_price: i64::MIN,
        bid_size: u64::MAX,
        bid_orders: u32::MAX,
        ask_price: i64::MAX,
        ask_size: u64::MAX,
        ask_orders: u32::MAX
    });
    go!(PriceLevelUpdateFields {
        side: Side::Sell,
        price: i64::MIN,
        size: u64::MAX,
        order_count: u32::MAX,
        action: BookAction::Delete
    });
    go!(EndOfSessionFields);
    go!(IexSystemEventFields {
        timestamp: i64::MIN + 1,
        system_event: u8::MAX,
    });
    go!(IexSecurityDirectoryFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        flags: u8::MAX,
        round_lot_size: u32::MAX,
        adjusted_poc_price: i64::MIN,
        luld_tier: u8::MAX,
    });
    go!(IexTradingStatusFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        trading_status: u8::MAX,
        reason: *b"RSN1",
    });
    go!(IexRetailLiquidityIndicatorFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        retail_liquidity_indicator: u8::MAX,
    });
    go!(IexOperationalHaltStatusFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        operational_halt_status: u8::MAX,
    });
    go!(IexShortSalePriceTestStatusFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        short_sale_price_test_status: u8::MAX,
        detail: u8::MAX,
    });
    go!(IexSecurityEventFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        security_event: u8::MAX,
    });
    go!(IexQuoteUpdateFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        flags: u8::MAX,
        bid_size: u32::MAX,
        bid_price: i64::MIN,
        ask_price: i64::MIN,
        ask_size: u32::MAX,
    });
    go!(IexPriceLevelUpdateBuyFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        event_flags: u8::MAX,
        size: u32::MAX,
        price: i64::MIN,
    });
    go!(IexPriceLevelUpdateSellFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        event_flags: u8::MAX,
        size: u32::MAX,
        price: i64::MIN,
    });
    go!(IexTradeReportFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        sale_condition_flags: u8::MAX,
        size: u32::MAX,
        price: i64::MIN,
        trade_id: u64::MAX,
    });
    go!(IexTradeBreakFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        sale_condition_flags: u8::MAX,
        size: u32::MAX,
        price: i64::MIN,
        trade_id: u64::MAX,
    });
    go!(IexOfficialPriceFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        price_type: u8::MAX,
        official_price: i64::MIN,
    });
    go!(IexAuctionInformationFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        auction_type: u8::MAX,
        paired_shares: u32::MAX,
        reference_price: i64::MIN,
        indicative_clearing_price: i64::MIN,
        imbalance_shares: u32::MAX,
        imbalance_side: u8::MAX,
        extension_number: u8::MAX,
        scheduled_auction_time: u32::MAX,
        auction_book_clearing_price: i64::MIN,
        collar_reference_price: i64::MIN,
        lower_auction_collar: i64::MIN,
        upper_auction_collar: i64::MIN,
    });
    go!(IexAddOrderFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        side: Side::Sell,
        order_id: u64::MAX,
        size: u32::MAX,
        price: i64::MIN,
    });
    go!(IexOrderModifyFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        modify_flags: u8::MAX,
        order_id: u64::MAX,
        size: u32::MAX,
        price: i64::MIN,
    });
    go!(IexOrderDeleteFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        reserved: u8::MAX,
        order_id: u64::MAX,
    });
    go!(IexOrderExecutedFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        sale_condition_flags: u8::MAX,
        order_id: u64::MAX,
        size: u32::MAX,
        price: i64::MIN,
        trade_id: u64::MAX,
    });
    go!(IexClearBookFields {
        timestamp: i64::MIN + 1,
        symbol: s,
        reserved: u8::MAX,
    });
    let top = VenueTopFields {
        bid_price: i64::MIN,
        bid_size: u64::MAX,
        ask_price: i64::MAX,
        ask_size: u64::MAX - 1,
        instrument: u32::MAX,
        venue: Venue(u16::MAX),
        input: u8::MAX,
        flags: VenueTopFlags::all(),
    };
    go!(ConsolidatedBboFields {
        symbol: s,
        bid_price: i64::MIN + 2,
        bid_size: u64::MAX - 2,
        bid_venue: Venue(u16::MAX - 1),
        ask_price: i64::MAX - 2,
        ask_size: u64::MAX - 3,
        ask_venue: Venue(u16::MAX - 2),
        flags: ConsolidatedFlags::all(),
        venue_count: MAX_CONSOLIDATED_VENUES as u8,
        venues: [top; MAX_CONSOLIDATED_VENUES],
    });
}

#[test]
fn a_consolidated_bbo_reads_back_as_written() {
    let mut enc = Encoder::new();
    let mut f = ConsolidatedBboFields {
        symbol: *b"AAPL    ",
        bid_price: 3_201_400,
        bid_size: 300,
        bid_venue: Venue::Iex,
        ask_price: 3_201_500,
        ask_size: 100,
        ask_venue: Venue::Nasdaq,
        flags: ConsolidatedFlags::StaleVenue,
        venue_count: 2,
        ..ConsolidatedBboFields::default()
    };
    f.venues[0] = VenueTopFields {
        bid_price: 3_201_300,
        bid_size: 200,
        ask_price: 3_201_500,
        ask_size: 100,
        instrument: 13,
        venue: Venue::Nasdaq,
        input: 0,
        flags: VenueTopFlags::empty(),
    };
    f.venues[1] = VenueTopFields {
        instrument: 2,
        venue: Venue::Iex,
        input: 1,
        flags: VenueTopFlags::Stale,
        ..VenueTopFields::default()
    };
    let bytes = enc.consolidated_bbo(&header(), &f).to_vec();
    let env = read_verified(&bytes).expect("verifies");
    let t = env.event_as_consolidated_bbo().expect("a consolidated BBO");
    assert_eq!(ConsolidatedBboFields::read(&t), f);
    assert_eq!(ConsolidatedBboFields::read(&t).venues().len(), 2);
}

#[test]
fn every_kind_verifies_fits_and_keeps_its_header() {
    let mut enc = Encoder::new();
    let mut kinds = Vec::new();
    each_kind(&mut enc, |event, bytes| {
        assert!(
            bytes.len() <= MAX_ENCODED_LEN,
            "{event:?}: {} bytes",
            bytes.len()
        );
        let env = read_verified(bytes).unwrap_or_else(|e| panic!("{event:?}: {e}"));
        assert_eq!(env.event_type(), event);
        let h = env.header();
        assert_eq!(h.seq(), u64::MAX - 1);
        assert_eq!(h.exchange_ts_ns(), u64::MAX - 2);
        assert_eq!(h.recv_ts_ns(), u64::MAX - 3);
        assert_eq!(h.stock_locate(), u16::MAX - 4);
        assert_eq!(h.tracking_number(), u16::MAX - 5);
        assert_eq!(env.flags(), EnvelopeFlags::all());
        kinds.push(event);
    });
    // Every union member (tags 1..=MAX) was encoded exactly once, in union order.
    let all: Vec<Event> = (1..=Event::ENUM_MAX).map(Event).collect();
    assert_eq!(kinds, all);
}

#[test]
fn frames_write_exactly_what_the_builder_writes_with_every_field_stored() {
    let mut frames = Vec::new();
    let mut kinds = Vec::new();
    each_kind(&mut Encoder::new(), |e, bytes| {
        frames.push(bytes.to_vec());
        kinds.push(e);
    });
    let mut reference = Vec::new();
    each_kind(&mut AllFields(Encoder::new()), |_, bytes| {
        reference.push(bytes.to_vec())
    });
    let mut hot = 0;
    for ((kind, got), want) in kinds.iter().zip(&frames).zip(&reference) {
        if is_hot(*kind) {
            assert_eq!(got, want, "{kind:?}");
            hot += 1;
        }
    }
    assert_eq!(hot, 12);
    // And they were written through the frames, at the fixed offsets, not by the builder.
    let enc = Encoder::new();
    assert_eq!(enc.frames().len(), 12);
    for f in enc.frames() {
        assert!(f.fixed, "{:?}: frame layout not the fixed one", f.event);
    }
}

#[test]
fn frames_and_builder_read_the_same() {
    let mut frames = Vec::new();
    each_kind(&mut Encoder::new(), |_, bytes| frames.push(bytes.to_vec()));
    let mut built = Vec::new();
    each_kind(&mut ViaBuilder(Encoder::new()), |_, bytes| {
        built.push(bytes.to_vec())
    });
    for (f, b) in frames.iter().zip(&built) {
        let (f, b) = (
            read_verified(f).expect("frame"),
            read_verified(b).expect("builder"),
        );
        assert_eq!(format!("{f:?}"), format!("{b:?}"));
    }
}

/// Hot-path kinds: the union members whose table holds one struct body.
fn is_hot(e: Event) -> bool {
    matches!(
        e,
        Event::AddOrder
            | Event::AddOrderMpid
            | Event::OrderExecuted
            | Event::OrderExecutedWithPrice
            | Event::OrderCancel
            | Event::OrderDelete
            | Event::OrderReplace
            | Event::Trade
            | Event::CrossTrade
            | Event::BrokenTrade
            | Event::Bbo
            | Event::PriceLevelUpdate
    )
}

#[test]
fn a_frame_reused_with_other_values_keeps_nothing_of_the_previous_message() {
    // Encode a message with every bit set, then one with every bit clear: the second must
    // equal a fresh encoder's output (no byte of the first survives in a frame).
    let mut reused = Encoder::new();
    let ones = HeaderFields {
        seq: u64::MAX,
        exchange_ts_ns: u64::MAX,
        recv_ts_ns: u64::MAX,
        stock_locate: u16::MAX,
        tracking_number: u16::MAX,
        flags: EnvelopeFlags::from_bits_retain(0xFF),
        venue: Venue(u16::MAX),
        instrument: u32::MAX,
    };
    let full = TradeFields {
        order_reference_number: u64::MAX,
        buy_sell_indicator: Side(0xFF),
        shares: u32::MAX,
        stock: [0xFF; 8],
        price: u32::MAX,
        match_number: u64::MAX,
    };
    let _ = reused.trade(&ones, &full);
    let zero = reused
        .trade(&HeaderFields::default(), &TradeFields::default())
        .to_vec();
    let fresh = Encoder::new()
        .trade(&HeaderFields::default(), &TradeFields::default())
        .to_vec();
    assert_eq!(zero, fresh);
    let env = read_verified(&zero).expect("valid");
    assert_eq!(env.flags(), EnvelopeFlags::empty());
    assert_eq!(env.header().seq(), 0);
    assert_eq!(env.event_as_trade().expect("trade").body().shares(), 0);
}

#[test]
fn encoded_envelope_reads_what_was_written() {
    let mut enc = Encoder::new();
    let msg = enc.add_order_mpid(
        &header(),
        &AddOrderMpidFields {
            order_reference_number: 1,
            buy_sell_indicator: Side::Buy,
            shares: 2,
            stock: *b"AAPL    ",
            price: 3,
            attribution: *b"GSCO",
        },
    );
    let f = msg.envelope().event_as_add_order_mpid().expect("F").body();
    assert_eq!(f.order_reference_number(), 1);
    assert_eq!(f.buy_sell_indicator(), Side::Buy);
    assert_eq!(f.shares(), 2);
    assert_eq!(<[u8; 8]>::from(f.stock().chars()), *b"AAPL    ");
    assert_eq!(f.price(), 3);
    assert_eq!(<[u8; 4]>::from(f.attribution().chars()), *b"GSCO");
    // The same bytes, read by the unsafe path.
    // SAFETY: the bytes were built by our encoder and are borrowed unchanged.
    let trusted = unsafe { read_trusted(msg.as_bytes()) };
    assert_eq!(
        trusted.event_as_add_order_mpid().map(|a| *a.body()),
        Some(*f)
    );
}

#[test]
fn every_truncation_is_rejected() {
    let mut enc = Encoder::new();
    each_kind(&mut enc, |event, bytes| {
        for len in 0..bytes.len() {
            assert!(
                read_verified(&bytes[..len]).is_err(),
                "{event:?} cut to {len} bytes"
            );
        }
    });
}

#[test]
fn corrupted_bytes_never_panic_and_what_verifies_reads_fully() {
    let mut enc = Encoder::new();
    let mut rejected = 0usize;
    each_kind(&mut enc, |_, bytes| {
        let mut copy = bytes.to_vec();
        for i in 0..copy.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                copy[i] ^= flip;
                match read_verified(&copy) {
                    Ok(env) => {
                        let mut sink = Sink(0);
                        write!(sink, "{env:?}").expect("sink never fails");
                        assert!(sink.0 > 0);
                    }
                    Err(e) => {
                        rejected += 1;
                        assert!(!e.to_string().is_empty());
                    }
                }
                copy[i] ^= flip;
            }
        }
    });
    // Offsets were hit: the verifier did reject something.
    assert!(rejected > 0);
}

#[test]
fn a_missing_header_is_rejected() {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let ev = Heartbeat::create(&mut fbb, &HeartbeatArgs {}).as_union_value();
    let start = fbb.start_table();
    fbb.push_slot::<Event>(Envelope::VT_EVENT_TYPE, Event::Heartbeat, Event::NONE);
    fbb.push_slot_always(Envelope::VT_EVENT, ev);
    let root = fbb.end_table(start);
    fbb.finish_minimal(root);
    let err = read_verified(fbb.finished_data()).expect_err("no header");
    assert!(
        matches!(
            err.detail(),
            flatbuffers::InvalidFlatbuffer::MissingRequiredField { .. }
        ),
        "{err}"
    );
}

#[test]
fn an_unknown_event_tag_verifies_and_reads_as_unknown() {
    // What a reader sees when a newer writer appended a union member it does not know.
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let ev = Heartbeat::create(&mut fbb, &HeartbeatArgs {}).as_union_value();
    let h = header().to_struct();
    let root = Envelope::create(
        &mut fbb,
        &EnvelopeArgs {
            header: Some(&h),
            event_type: Event(200),
            event: Some(ev),
            flags: EnvelopeFlags::empty(),
            venue: Venue::Nasdaq,
            instrument: 0,
        },
    );
    fbb.finish_minimal(root);
    let env = read_verified(fbb.finished_data()).expect("unknown tags are accepted");
    assert_eq!(env.event_type(), Event(200));
    assert_eq!(env.event_type().variant_name(), None);
    assert!(env.event_as_heartbeat().is_none());
    assert_eq!(env.header().seq(), u64::MAX - 1);
}

#[test]
fn garbage_is_rejected_with_its_length() {
    let err = read_verified(&[0xFF; 12]).expect_err("garbage");
    assert_eq!(err.len(), 12);
    assert!(err.to_string().contains("12 bytes"), "{err}");
    assert!(read_verified(&[]).is_err());
}

/// Asserts that a frame view reads exactly what the generated accessors read from `env`:
/// kind, header, flags and the body of every hot-path kind (`None` for the others).
fn assert_reads_like_envelope(view: &FrameView<'_>, env: &Envelope<'_>) {
    assert_eq!(view.event_type(), env.event_type());
    assert_eq!(view.header_fields(), ReadBody::header_fields(env));
    assert_eq!(view.header(), *env.header());
    assert_eq!(view.flags(), env.flags());
    assert_eq!(view.venue(), env.venue());
    assert_eq!(view.instrument(), env.instrument());
    macro_rules! same_bodies {
        ($($b:ident),*) => {$(
            assert_eq!(
                ReadBody::body::<$b>(view),
                ReadBody::body::<$b>(env),
                "{}", stringify!($b)
            );
        )*};
    }
    same_bodies!(
        AddOrderBody,
        AddOrderMpidBody,
        OrderExecutedBody,
        OrderExecutedWithPriceBody,
        OrderCancelBody,
        OrderDeleteBody,
        OrderReplaceBody,
        TradeBody,
        CrossTradeBody,
        BrokenTradeBody,
        BboBody,
        PriceLevelBody
    );
}

/// If `reader` reads `bytes`, the read must be what the verified accessors read.
fn assert_fast_read_is_sound(reader: &FrameReader, bytes: &[u8]) -> bool {
    match reader.read(bytes) {
        Some(view) => {
            let env = read_verified(bytes).expect("bytes the frame reader reads verify");
            assert_reads_like_envelope(&view, &env);
            true
        }
        None => false,
    }
}

#[test]
fn frame_reader_reads_every_hot_kind_as_the_accessors_do() {
    let reader = FrameReader::new();
    let mut hot = 0;
    each_kind(&mut Encoder::new(), |event, bytes| {
        if is_hot(event) {
            assert!(reader.reads(event), "{event:?}: no fast path");
            assert!(assert_fast_read_is_sound(&reader, bytes), "{event:?}");
            let env = read_verified(bytes).expect("valid");
            let view = reader.read_envelope(&env).expect("the root of a frame");
            assert_reads_like_envelope(&view, &env);
            hot += 1;
        } else {
            assert!(!reader.reads(event), "{event:?}");
            assert!(reader.read(bytes).is_none(), "{event:?}");
        }
    });
    assert_eq!(hot, 12);
    // The same with every value at its default (zero header, empty flags).
    let mut enc = Encoder::new();
    let msg = enc.order_delete(&HeaderFields::default(), &OrderDeleteFields::default());
    assert!(assert_fast_read_is_sound(&reader, &msg));
}

#[test]
fn frame_reader_refuses_other_layouts() {
    let reader = FrameReader::new();
    // The builder without forced defaults leaves out empty flags and zero fields: another
    // layout, which only the generic accessors may read.
    let mut enc = Encoder::new();
    let msg = enc.encode_with_builder(&HeaderFields::default(), &OrderDeleteFields::default());
    assert!(reader.read(&msg).is_none());
    // Wrong lengths, however close.
    let msg = Encoder::new()
        .order_delete(&header(), &OrderDeleteFields::default())
        .to_vec();
    assert!(reader.read(&msg).is_some());
    let mut longer = msg.clone();
    longer.push(0);
    assert!(reader.read(&longer).is_none());
    for n in 0..msg.len() {
        assert!(reader.read(&msg[..n]).is_none(), "truncated to {n}");
    }
    // Builder-path kinds, the encodings of every kind through the builder: read only when
    // that is exactly right.
    each_kind(&mut ViaBuilder(Encoder::new()), |_, bytes| {
        assert_fast_read_is_sound(&reader, bytes);
    });
}

#[test]
fn frame_reader_checks_every_structural_byte() {
    // Flip each byte of each hot kind in turn: a flip the reader still reads must lie in
    // the header, the flags, the venue, the instrument or the body (it reads what the
    // accessors read); a flip anywhere else (offsets, vtables, tag, padding) is refused.
    let reader = FrameReader::new();
    each_kind(&mut Encoder::new(), |event, bytes| {
        if !is_hot(event) {
            return;
        }
        let env = read_verified(bytes).expect("valid");
        let base = bytes.as_ptr().addr();
        let header_at = core::ptr::from_ref(env.header()).addr() - base;
        let slot = |vt| env._tab.loc() + usize::from(env._tab.vtable().get(vt));
        let flags_at = slot(Envelope::VT_FLAGS);
        let venue_at = slot(Envelope::VT_VENUE);
        let instrument_at = slot(Envelope::VT_INSTRUMENT);
        assert!(reader.read(bytes).is_some(), "{event:?}");
        let body_at = body_start(&env);
        let variable = |i: usize| {
            (header_at..header_at + 32).contains(&i)
                || i == flags_at
                || (venue_at..venue_at + 2).contains(&i)
                || (instrument_at..instrument_at + 4).contains(&i)
                || (body_at..bytes.len()).contains(&i)
        };
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut m = bytes.to_vec();
                m[i] ^= flip;
                let read = assert_fast_read_is_sound(&reader, &m);
                assert_eq!(read, variable(i), "{event:?}: byte {i} ^ {flip:#x}");
            }
        }
    });
}

/// Where the body struct of a hot-path message starts (it runs to the end), found through
/// the accessors: the event table's one field, a struct stored inline.
fn body_start(env: &Envelope<'_>) -> usize {
    let table = env.event();
    table.loc() + usize::from(table.vtable().get(4))
}

proptest::proptest! {
    #[test]
    fn frame_reader_reads_only_what_the_accessors_read(
        kind in 0usize..12,
        edits in proptest::collection::vec((0usize..128, proptest::num::u8::ANY), 0..4),
        cut in 0usize..4,
    ) {
        let reader = FrameReader::new();
        let mut msgs = Vec::new();
        each_kind(&mut Encoder::new(), |event, bytes| {
            if is_hot(event) {
                msgs.push(bytes.to_vec());
            }
        });
        let mut m = msgs[kind].clone();
        for (at, v) in edits {
            if let Some(b) = m.get_mut(at) {
                *b = v;
            }
        }
        m.truncate(m.len().saturating_sub(cut));
        assert_fast_read_is_sound(&reader, &m);
    }
}

#[test]
fn the_venue_and_instrument_cost_a_hot_path_message_eight_bytes() {
    // An add order took 104 bytes before envelopes named a venue and an instrument; the
    // builder packs the two beside the flags, in the word before the header.
    let mut enc = Encoder::new();
    assert_eq!(
        enc.add_order(&header(), &AddOrderFields::default()).len(),
        112
    );
    let mut hot = 0;
    each_kind(&mut Encoder::new(), |event, bytes| {
        if is_hot(event) {
            let env = read_verified(bytes).expect("valid");
            assert_eq!(body_start(&env), 80, "{event:?}");
            hot += 1;
        }
    });
    assert_eq!(hot, 12);
}
