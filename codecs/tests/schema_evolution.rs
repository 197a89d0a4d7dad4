//! Schema evolution: a reader generated from the frozen v1 schema reads messages the current
//! encoder builds (with fields appended since v1), and the current reader reads v1 messages.
//! The rules these tests stand for are in `codecs/schema/EVOLUTION.md`.

#[allow(
    unsafe_op_in_unsafe_fn,
    unused_imports,
    unused_extern_crates,
    dead_code,
    deprecated,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc,
    clippy::multiple_unsafe_ops_per_block
)]
#[rustfmt::skip]
#[path = "evolution/v1/mdbus_v1_generated.rs"]
mod v1_generated;

use mdbus_codecs::fb::{self, EnvelopeFlags, HeaderFields, Side};
use v1_generated::mdbus as v1;

fn header(flags: EnvelopeFlags) -> HeaderFields {
    HeaderFields {
        seq: 1_234_567,
        exchange_ts_ns: 34_200_000_000_123,
        recv_ts_ns: 1_580_394_600_000_000_456,
        stock_locate: 13,
        tracking_number: 2,
        flags,
        venue: fb::Venue::Nasdaq,
        instrument: 13,
    }
}

const ADD: fb::AddOrderFields = fb::AddOrderFields {
    order_reference_number: 0x0102_0304_0506_0708,
    buy_sell_indicator: Side::Sell,
    shares: 300,
    stock: *b"AAPL    ",
    price: 3_201_400,
};

#[test]
fn v1_reader_reads_a_current_message_with_an_appended_field() {
    let both = EnvelopeFlags::Retransmitted | EnvelopeFlags::Replayed;
    let mut enc = fb::Encoder::new();
    let plain = enc
        .add_order(&header(EnvelopeFlags::empty()), &ADD)
        .to_vec();
    let msg = enc.add_order(&header(both), &ADD).to_vec();

    // The appended fields are really on the wire: the current reader sees them, and the
    // bytes differ from the message that leaves the flags at their (unstored) default.
    let new = fb::read_verified(&msg).expect("current reader");
    assert_eq!(new.flags(), both);
    assert_eq!(new.venue(), fb::Venue::Nasdaq);
    assert_eq!(new.instrument(), 13);
    assert_eq!(
        fb::read_verified(&plain).expect("current reader").flags(),
        EnvelopeFlags::empty()
    );
    assert_ne!(msg, plain);

    // The v1 reader verifies it and reads everything it knows, exactly.
    let old = v1::root_as_envelope(&msg).expect("v1 verifier accepts the v2 message");
    let h = old.header();
    assert_eq!(h.seq(), 1_234_567);
    assert_eq!(h.exchange_ts_ns(), 34_200_000_000_123);
    assert_eq!(h.recv_ts_ns(), 1_580_394_600_000_000_456);
    assert_eq!(h.stock_locate(), 13);
    assert_eq!(h.tracking_number(), 2);
    assert_eq!(old.event_type(), v1::Event::AddOrder);
    let a = old.event_as_add_order().expect("an add order").body();
    assert_eq!(a.order_reference_number(), 0x0102_0304_0506_0708);
    assert_eq!(a.buy_sell_indicator(), v1::Side::Sell);
    assert_eq!(a.shares(), 300);
    assert_eq!(<[u8; 8]>::from(a.stock().chars()), *b"AAPL    ");
    assert_eq!(a.price(), 3_201_400);
}

/// Every event kind the current encoder builds reads identically through the v1 code: the
/// generated `Debug` of each walks every field, and the two renderings agree once the
/// appended `flags`, `venue` and `instrument` are taken out of the current one.
#[test]
fn v1_reader_reads_every_current_event_kind_field_for_field() {
    let flags = EnvelopeFlags::Replayed;
    let h = header(flags);
    let mut enc = fb::Encoder::new();
    let msgs: Vec<Vec<u8>> = vec![
        enc.system_event(
            &h,
            &fb::SystemEventFields {
                event_code: fb::SystemEventCode::StartOfMarketHours,
            },
        )
        .to_vec(),
        enc.stock_directory(
            &h,
            &fb::StockDirectoryFields {
                stock: *b"AAPL    ",
                market_category: b'Q',
                financial_status_indicator: b'N',
                round_lot_size: 100,
                round_lots_only: b'N',
                issue_classification: b'C',
                issue_sub_type: *b"Z ",
                authenticity: b'P',
                short_sale_threshold_indicator: b'N',
                ipo_flag: b' ',
                luld_reference_price_tier: b'1',
                etp_flag: b'N',
                etp_leverage_factor: 0,
                inverse_indicator: b'N',
            },
        )
        .to_vec(),
        enc.stock_trading_action(
            &h,
            &fb::StockTradingActionFields {
                stock: *b"AAPL    ",
                trading_state: fb::TradingState::Trading,
                reserved: b' ',
                reason: *b"    ",
            },
        )
        .to_vec(),
        enc.add_order(&h, &ADD).to_vec(),
        enc.order_executed_with_price(
            &h,
            &fb::OrderExecutedWithPriceFields {
                order_reference_number: 7,
                executed_shares: 8,
                match_number: 9,
                printable: b'Y',
                execution_price: 10,
            },
        )
        .to_vec(),
        enc.net_order_imbalance_indicator(
            &h,
            &fb::NetOrderImbalanceIndicatorFields {
                paired_shares: 1,
                imbalance_shares: 2,
                imbalance_direction: b'B',
                stock: *b"AAPL    ",
                far_price: 3,
                near_price: 4,
                current_reference_price: 5,
                cross_type: b'O',
                price_variation_indicator: b'L',
            },
        )
        .to_vec(),
        enc.gap_notice(
            &h,
            &fb::GapNoticeFields {
                first_missing_seq: 10,
                count: 5,
                recoverable: true,
                scope: fb::GapScope::Source,
            },
        )
        .to_vec(),
        enc.bbo(
            &h,
            &fb::BboFields {
                bid_price: 3_201_400,
                bid_size: 25,
                bid_orders: 1,
                ask_price: 3_203_000,
                ask_size: 100,
                ask_orders: 2,
            },
        )
        .to_vec(),
        enc.end_of_session(&h, &fb::EndOfSessionFields).to_vec(),
    ];
    for msg in &msgs {
        let new = fb::read_verified(msg).expect("current reader");
        let old = v1::root_as_envelope(msg).expect("v1 reader");
        assert_eq!(old.event_type().0, new.event_type().0);
        let new_text = format!("{new:?}");
        let appended = format!(", flags: {flags:?}");
        assert!(new_text.contains(&appended), "{new_text}");
        let venue = ", venue: Nasdaq, instrument: 13";
        assert!(new_text.ends_with(&format!("{venue} }}")), "{new_text}");
        // Fields appended after v1, which a v1 reader does not know: `flags`, `venue`,
        // `instrument`, and `GapNotice.scope`.
        let new_text = new_text
            .replace(&appended, "")
            .replace(venue, "")
            .replace(", scope: Source", "");
        assert_eq!(format!("{old:?}"), new_text);
    }
}

/// Messages of another venue (no ITCH stock locate, a 32-bit instrument id) read through the
/// v1 code with everything v1 knows intact; a v1 reader keying on `stock_locate` sees 0,
/// which is why current readers key on `Envelope.instrument`.
#[test]
fn v1_reader_reads_a_message_of_another_venue() {
    let h = HeaderFields {
        stock_locate: 0,
        tracking_number: 0,
        venue: fb::Venue::Iex,
        instrument: 70_000,
        ..header(EnvelopeFlags::empty())
    };
    let mut enc = fb::Encoder::new();
    for msg in [
        enc.add_order(&h, &ADD).to_vec(),
        enc.system_event(
            &h,
            &fb::SystemEventFields {
                event_code: fb::SystemEventCode::StartOfMessages,
            },
        )
        .to_vec(),
    ] {
        let new = fb::read_verified(&msg).expect("current reader");
        assert_eq!((new.venue(), new.instrument()), (fb::Venue::Iex, 70_000));
        assert_eq!(HeaderFields::of(&new), h);
        let old = v1::root_as_envelope(&msg).expect("v1 reader");
        assert_eq!(old.header().seq(), 1_234_567);
        assert_eq!(old.header().exchange_ts_ns(), 34_200_000_000_123);
        assert_eq!(old.header().stock_locate(), 0);
        assert_eq!(old.event_type().0, new.event_type().0);
    }
}

#[test]
fn v1_reader_sees_an_event_kind_appended_later_as_unknown() {
    // A union member appended after v1 (a tag past v1's last member), built by hand because
    // the current schema has not appended one yet.
    let tag = v1::Event::ENUM_MAX + 1;
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let ev = fb::Heartbeat::create(&mut fbb, &fb::HeartbeatArgs {}).as_union_value();
    let h = fb::Header::new(5, 6, 7, 8, 9);
    let root = fb::Envelope::create(
        &mut fbb,
        &fb::EnvelopeArgs {
            header: Some(&h),
            event_type: fb::Event(tag),
            event: Some(ev),
            flags: EnvelopeFlags::empty(),
            venue: fb::Venue::Nasdaq,
            instrument: 8,
        },
    );
    fbb.finish_minimal(root);
    let old = v1::root_as_envelope(fbb.finished_data()).expect("unknown tags verify");
    assert_eq!(old.event_type(), v1::Event(tag));
    assert_eq!(old.event_type().variant_name(), None);
    assert!(old.event_as_heartbeat().is_none());
    assert!(old.event_as_add_order().is_none());
    assert_eq!(old.header().seq(), 5);
    assert_eq!(old.header().tracking_number(), 9);
}

#[test]
fn current_reader_reads_a_v1_message_with_appended_fields_at_their_defaults() {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let body = v1::AddOrderBody::new(11, 12, 13, &v1::Symbol::new(b"MSFT    "), v1::Side::Buy);
    let ev = v1::AddOrder::create(&mut fbb, &v1::AddOrderArgs { body: Some(&body) });
    let h = v1::Header::new(1, 2, 3, 4, 5);
    let root = v1::Envelope::create(
        &mut fbb,
        &v1::EnvelopeArgs {
            header: Some(&h),
            event_type: v1::Event::AddOrder,
            event: Some(ev.as_union_value()),
        },
    );
    fbb.finish_minimal(root);
    let env = fb::read_verified(fbb.finished_data()).expect("current reader reads v1");
    assert_eq!(env.flags(), EnvelopeFlags::empty());
    // A v1 message states no venue and no instrument: readers that key books on
    // `instrument` see 0 (market-wide), and the venue says why (`Unknown`). The v1 stock
    // locate is still there for whoever converts old recordings.
    assert_eq!(env.venue(), fb::Venue::Unknown);
    assert_eq!(env.instrument(), 0);
    assert_eq!(env.header().stock_locate(), 4);
    assert_eq!(env.header().seq(), 1);
    assert_eq!(env.header().tracking_number(), 5);
    let a = env.event_as_add_order().expect("add order").body();
    assert_eq!(a.order_reference_number(), 11);
    assert_eq!(a.shares(), 12);
    assert_eq!(a.price(), 13);
    assert_eq!(a.buy_sell_indicator(), Side::Buy);
    assert_eq!(<[u8; 8]>::from(a.stock().chars()), *b"MSFT    ");
}
