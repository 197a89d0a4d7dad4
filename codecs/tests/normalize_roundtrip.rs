//! Normalization is lossless: every field of every ITCH 5.0 message type reaches the
//! normalized envelope unchanged, read back through the verified typed view. Checked on one
//! message of each of the 23 types with distinctive field values, and on every message of the
//! bundled real AAPL session.

use mdbus_codecs::fb::{self, Envelope, EnvelopeFlags, Event};
use mdbus_codecs::nasdaq::itch::{self, Message, MessageFields};
use mdbus_codecs::nasdaq::normalize::Normalizer;

fn sym(a: flatbuffers::Array<'_, u8, 8>) -> [u8; 8] {
    a.into()
}
fn four(a: flatbuffers::Array<'_, u8, 4>) -> [u8; 4] {
    a.into()
}

fn missing<T>(what: char, env: &Envelope<'_>) -> T {
    panic!("type {what}: envelope holds {:?}", env.event_type())
}

/// Asserts that `env` carries every field of `msg` (and `seq`, `recv`) exactly.
fn assert_lossless(msg: &Message<'_>, env: &Envelope<'_>, seq: u64, recv: u64) {
    let h = env.header();
    assert_eq!(h.seq(), seq);
    assert_eq!(h.recv_ts_ns(), recv);
    assert_eq!(h.exchange_ts_ns(), msg.timestamp());
    assert_eq!(h.stock_locate(), msg.stock_locate());
    assert_eq!(h.tracking_number(), msg.tracking_number());
    assert_eq!(env.venue(), fb::Venue::Nasdaq);
    assert_eq!(env.instrument(), u32::from(msg.stock_locate()));
    let what = msg.msg_type() as char;
    match msg {
        Message::SystemEvent(m) => {
            let e = env
                .event_as_system_event()
                .unwrap_or_else(|| missing(what, env));
            assert_eq!(e.event_code().0, m.event_code());
        }
        Message::StockDirectory(m) => {
            let e = env
                .event_as_stock_directory()
                .unwrap_or_else(|| missing(what, env));
            assert_eq!(sym(e.stock().chars()), m.stock());
            assert_eq!(e.market_category(), m.market_category());
            assert_eq!(
                e.financial_status_indicator(),
                m.financial_status_indicator()
            );
            assert_eq!(e.round_lot_size(), m.round_lot_size());
            assert_eq!(e.round_lots_only(), m.round_lots_only());
            assert_eq!(e.issue_classification(), m.issue_classification());
            assert_eq!(
                <[u8; 2]>::from(e.issue_sub_type().chars()),
                m.issue_sub_type()
            );
            assert_eq!(e.authenticity(), m.authenticity());
            assert_eq!(
                e.short_sale_threshold_indicator(),
                m.short_sale_threshold_indicator()
            );
            assert_eq!(e.ipo_flag(), m.ipo_flag());
            assert_eq!(e.luld_reference_price_tier(), m.luld_reference_price_tier());
            assert_eq!(e.etp_flag(), m.etp_flag());
            assert_eq!(e.etp_leverage_factor(), m.etp_leverage_factor());
            assert_eq!(e.inverse_indicator(), m.inverse_indicator());
        }
        Message::StockTradingAction(m) => {
            let e = env
                .event_as_stock_trading_action()
                .unwrap_or_else(|| missing(what, env));
            assert_eq!(sym(e.stock().chars()), m.stock());
            assert_eq!(e.trading_state().0, m.trading_state());
            assert_eq!(e.reserved(), m.reserved());
            assert_eq!(four(e.reason().chars()), m.reason());
        }
        Message::RegShoRestriction(m) => {
            let e = env
                .event_as_reg_sho_restriction()
                .unwrap_or_else(|| missing(what, env));
            assert_eq!(sym(e.stock().chars()), m.stock());
            assert_eq!(e.reg_sho_action(), m.reg_sho_action());
        }
        Message::MarketParticipantPosition(m) => {
            let e = env
                .event_as_market_participant_position()
                .unwrap_or_else(|| missing(what, env));
            assert_eq!(four(e.mpid().chars()), m.mpid());
            assert_eq!(sym(e.stock().chars()), m.stock());
            assert_eq!(e.primary_market_maker(), m.primary_market_maker());
            assert_eq!(e.market_maker_mode(), m.market_maker_mode());
            assert_eq!(e.market_participant_state(), m.market_participant_state());
        }
        Message::MwcbDeclineLevel(m) => {
            let e = env
                .event_as_mwcb_decline_level()
                .unwrap_or_else(|| missing(what, env));
            assert_eq!(e.level1(), m.level1().0);
            assert_eq!(e.level2(), m.level2().0);
            assert_eq!(e.level3(), m.level3().0);
        }
        Message::MwcbStatus(m) => {
            let e = env
                .event_as_mwcb_status()
                .unwrap_or_else(|| missing(what, env));
            assert_eq!(e.breached_level(), m.breached_level());
        }
        Message::IpoQuotingPeriodUpdate(m) => {
            let e = env
                .event_as_ipo_quoting_period_update()
                .unwrap_or_else(|| missing(what, env));
            assert_eq!(sym(e.stock().chars()), m.stock());
            assert_eq!(
                e.ipo_quotation_release_time(),
                m.ipo_quotation_release_time()
            );
            assert_eq!(
                e.ipo_quotation_release_qualifier(),
                m.ipo_quotation_release_qualifier()
            );
            assert_eq!(e.ipo_price(), m.ipo_price().0);
        }
        Message::LuldAuctionCollar(m) => {
            let e = env
                .event_as_luld_auction_collar()
                .unwrap_or_else(|| missing(what, env));
            assert_eq!(sym(e.stock().chars()), m.stock());
            assert_eq!(
                e.auction_collar_reference_price(),
                m.auction_collar_reference_price().0
            );
            assert_eq!(
                e.upper_auction_collar_price(),
                m.upper_auction_collar_price().0
            );
            assert_eq!(
                e.lower_auction_collar_price(),
                m.lower_auction_collar_price().0
            );
            assert_eq!(e.auction_collar_extension(), m.auction_collar_extension());
        }
        Message::OperationalHalt(m) => {
            let e = env
                .event_as_operational_halt()
                .unwrap_or_else(|| missing(what, env));
            assert_eq!(sym(e.stock().chars()), m.stock());
            assert_eq!(e.market_code(), m.market_code());
            assert_eq!(e.operational_halt_action(), m.operational_halt_action());
        }
        Message::AddOrder(m) => {
            let e = env
                .event_as_add_order()
                .unwrap_or_else(|| missing(what, env))
                .body();
            assert_eq!(e.order_reference_number(), m.order_reference_number());
            assert_eq!(e.buy_sell_indicator().0, m.buy_sell_indicator());
            assert_eq!(e.shares(), m.shares());
            assert_eq!(sym(e.stock().chars()), m.stock());
            assert_eq!(e.price(), m.price().0);
        }
        Message::AddOrderMpid(m) => {
            let e = env
                .event_as_add_order_mpid()
                .unwrap_or_else(|| missing(what, env))
                .body();
            assert_eq!(e.order_reference_number(), m.order_reference_number());
            assert_eq!(e.buy_sell_indicator().0, m.buy_sell_indicator());
            assert_eq!(e.shares(), m.shares());
            assert_eq!(sym(e.stock().chars()), m.stock());
            assert_eq!(e.price(), m.price().0);
            assert_eq!(four(e.attribution().chars()), m.attribution());
        }
        Message::OrderExecuted(m) => {
            let e = env
                .event_as_order_executed()
                .unwrap_or_else(|| missing(what, env))
                .body();
            assert_eq!(e.order_reference_number(), m.order_reference_number());
            assert_eq!(e.executed_shares(), m.executed_shares());
            assert_eq!(e.match_number(), m.match_number());
        }
        Message::OrderExecutedWithPrice(m) => {
            let e = env
                .event_as_order_executed_with_price()
                .unwrap_or_else(|| missing(what, env))
                .body();
            assert_eq!(e.order_reference_number(), m.order_reference_number());
            assert_eq!(e.executed_shares(), m.executed_shares());
            assert_eq!(e.match_number(), m.match_number());
            assert_eq!(e.printable(), m.printable());
            assert_eq!(e.execution_price(), m.execution_price().0);
        }
        Message::OrderCancel(m) => {
            let e = env
                .event_as_order_cancel()
                .unwrap_or_else(|| missing(what, env))
                .body();
            assert_eq!(e.order_reference_number(), m.order_reference_number());
            assert_eq!(e.cancelled_shares(), m.cancelled_shares());
        }
        Message::OrderDelete(m) => {
            let e = env
                .event_as_order_delete()
                .unwrap_or_else(|| missing(what, env))
                .body();
            assert_eq!(e.order_reference_number(), m.order_reference_number());
        }
        Message::OrderReplace(m) => {
            let e = env
                .event_as_order_replace()
                .unwrap_or_else(|| missing(what, env))
                .body();
            assert_eq!(
                e.original_order_reference_number(),
                m.original_order_reference_number()
            );
            assert_eq!(
                e.new_order_reference_number(),
                m.new_order_reference_number()
            );
            assert_eq!(e.shares(), m.shares());
            assert_eq!(e.price(), m.price().0);
        }
        Message::Trade(m) => {
            let e = env
                .event_as_trade()
                .unwrap_or_else(|| missing(what, env))
                .body();
            assert_eq!(e.order_reference_number(), m.order_reference_number());
            assert_eq!(e.buy_sell_indicator().0, m.buy_sell_indicator());
            assert_eq!(e.shares(), m.shares());
            assert_eq!(sym(e.stock().chars()), m.stock());
            assert_eq!(e.price(), m.price().0);
            assert_eq!(e.match_number(), m.match_number());
        }
        Message::CrossTrade(m) => {
            let e = env
                .event_as_cross_trade()
                .unwrap_or_else(|| missing(what, env))
                .body();
            assert_eq!(e.shares(), m.shares());
            assert_eq!(sym(e.stock().chars()), m.stock());
            assert_eq!(e.cross_price(), m.cross_price().0);
            assert_eq!(e.match_number(), m.match_number());
            assert_eq!(e.cross_type(), m.cross_type());
        }
        Message::BrokenTrade(m) => {
            let e = env
                .event_as_broken_trade()
                .unwrap_or_else(|| missing(what, env))
                .body();
            assert_eq!(e.match_number(), m.match_number());
        }
        Message::NetOrderImbalanceIndicator(m) => {
            let e = env
                .event_as_net_order_imbalance_indicator()
                .unwrap_or_else(|| missing(what, env));
            assert_eq!(e.paired_shares(), m.paired_shares());
            assert_eq!(e.imbalance_shares(), m.imbalance_shares());
            assert_eq!(e.imbalance_direction(), m.imbalance_direction());
            assert_eq!(sym(e.stock().chars()), m.stock());
            assert_eq!(e.far_price(), m.far_price().0);
            assert_eq!(e.near_price(), m.near_price().0);
            assert_eq!(e.current_reference_price(), m.current_reference_price().0);
            assert_eq!(e.cross_type(), m.cross_type());
            assert_eq!(e.price_variation_indicator(), m.price_variation_indicator());
        }
        Message::RetailPriceImprovementIndicator(m) => {
            let e = env
                .event_as_retail_price_improvement_indicator()
                .unwrap_or_else(|| missing(what, env));
            assert_eq!(sym(e.stock().chars()), m.stock());
            assert_eq!(e.interest_flag(), m.interest_flag());
        }
        Message::DirectListingPriceDiscovery(m) => {
            let e = env
                .event_as_direct_listing_price_discovery()
                .unwrap_or_else(|| missing(what, env));
            assert_eq!(sym(e.stock().chars()), m.stock());
            assert_eq!(e.open_eligibility_status(), m.open_eligibility_status());
            assert_eq!(e.minimum_allowable_price(), m.minimum_allowable_price().0);
            assert_eq!(e.maximum_allowable_price(), m.maximum_allowable_price().0);
            assert_eq!(e.near_execution_price(), m.near_execution_price().0);
            assert_eq!(e.near_execution_time(), m.near_execution_time());
            assert_eq!(e.lower_price_range_collar(), m.lower_price_range_collar().0);
            assert_eq!(e.upper_price_range_collar(), m.upper_price_range_collar().0);
        }
    }
}

/// One message of every type. Within a message no two fields share a value (so a swapped
/// mapping cannot pass), no field is 0 or blank, and wide fields use their high bytes.
fn one_of_each() -> Vec<MessageFields> {
    use itch::*;
    let (sl, tn) = (0xA1B2, 0xC3D4);
    let ts = |k: u64| 0xF0E0_D0C0_B0A0 - k; // 48 bits, distinct per message
    vec![
        SystemEventFields {
            stock_locate: 0,
            tracking_number: tn,
            timestamp: ts(1),
            event_code: b'Q',
        }
        .into(),
        StockDirectoryFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(2),
            stock: *b"ZVZZT   ",
            market_category: b'Q',
            financial_status_indicator: b'D',
            round_lot_size: 0x0102_0304,
            round_lots_only: b'Y',
            issue_classification: b'C',
            issue_sub_type: *b"AI",
            authenticity: b'T',
            short_sale_threshold_indicator: b'N',
            ipo_flag: b'E',
            luld_reference_price_tier: b'2',
            etp_flag: b'X',
            etp_leverage_factor: 0x0A0B_0C0D,
            inverse_indicator: b'Z',
        }
        .into(),
        StockTradingActionFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(3),
            stock: *b"ZXZZT   ",
            trading_state: b'H',
            reserved: b'r',
            reason: *b"LUDP",
        }
        .into(),
        RegShoRestrictionFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(4),
            stock: *b"ZWZZT   ",
            reg_sho_action: b'2',
        }
        .into(),
        MarketParticipantPositionFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(5),
            mpid: *b"GSCO",
            stock: *b"ZAZZT   ",
            primary_market_maker: b'Y',
            market_maker_mode: b'P',
            market_participant_state: b'A',
        }
        .into(),
        MwcbDeclineLevelFields {
            stock_locate: 0,
            tracking_number: tn,
            timestamp: ts(6),
            level1: Price8(0x1111_2222_3333_4444),
            level2: Price8(0x5555_6666_7777_8888),
            level3: Price8(0x0999_AAAA_BBBB_CCCC),
        }
        .into(),
        MwcbStatusFields {
            stock_locate: 0,
            tracking_number: tn,
            timestamp: ts(7),
            breached_level: b'3',
        }
        .into(),
        IpoQuotingPeriodUpdateFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(8),
            stock: *b"NEWCO   ",
            ipo_quotation_release_time: 0x0001_5180,
            ipo_quotation_release_qualifier: b'C',
            ipo_price: Price4(0x00AB_CDEF),
        }
        .into(),
        LuldAuctionCollarFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(9),
            stock: *b"ZBZZT   ",
            auction_collar_reference_price: Price4(0x1000_0001),
            upper_auction_collar_price: Price4(0x2000_0002),
            lower_auction_collar_price: Price4(0x0300_0003),
            auction_collar_extension: 0x0000_0004,
        }
        .into(),
        OperationalHaltFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(10),
            stock: *b"ZCZZT   ",
            market_code: b'X',
            operational_halt_action: b'T',
        }
        .into(),
        AddOrderFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(11),
            order_reference_number: 0xFEDC_BA98_7654_3210,
            buy_sell_indicator: b'S',
            shares: 0x8765_4321,
            stock: *b"AAPL    ",
            price: Price4(0x1234_5678),
        }
        .into(),
        AddOrderMpidFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(12),
            order_reference_number: 0xEDCB_A987_6543_210F,
            buy_sell_indicator: b'B',
            shares: 0x7654_3218,
            stock: *b"MSFT    ",
            price: Price4(0x2345_6781),
            attribution: *b"VIRT",
        }
        .into(),
        OrderExecutedFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(13),
            order_reference_number: 0xDCBA_9876_5432_10FE,
            executed_shares: 0x6543_2187,
            match_number: 0x0123_4567_89AB_CDEF,
        }
        .into(),
        OrderExecutedWithPriceFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(14),
            order_reference_number: 0xCBA9_8765_4321_0FED,
            executed_shares: 0x5432_1876,
            match_number: 0x1234_5678_9ABC_DEF0,
            printable: b'N',
            execution_price: Price4(0x3456_7812),
        }
        .into(),
        OrderCancelFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(15),
            order_reference_number: 0xBA98_7654_3210_FEDC,
            cancelled_shares: 0x4321_8765,
        }
        .into(),
        OrderDeleteFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(16),
            order_reference_number: 0xA987_6543_210F_EDCB,
        }
        .into(),
        OrderReplaceFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(17),
            original_order_reference_number: 0x9876_5432_10FE_DCBA,
            new_order_reference_number: 0x8765_4321_0FED_CBA9,
            shares: 0x3218_7654,
            price: Price4(0x4567_8123),
        }
        .into(),
        TradeFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(18),
            order_reference_number: 0x7654_3210_FEDC_BA98,
            buy_sell_indicator: b'B',
            shares: 0x2187_6543,
            stock: *b"GOOG    ",
            price: Price4(0x5678_1234),
            match_number: 0x2345_6789_ABCD_EF01,
        }
        .into(),
        CrossTradeFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(19),
            shares: 0x1876_5432_1876_5432,
            stock: *b"AMZN    ",
            cross_price: Price4(0x6781_2345),
            match_number: 0x3456_789A_BCDE_F012,
            cross_type: b'H',
        }
        .into(),
        BrokenTradeFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(20),
            match_number: 0x4567_89AB_CDEF_0123,
        }
        .into(),
        NetOrderImbalanceIndicatorFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(21),
            paired_shares: 0x0102_0304_0506_0708,
            imbalance_shares: 0x1112_1314_1516_1718,
            imbalance_direction: b'O',
            stock: *b"TSLA    ",
            far_price: Price4(0x2122_2324),
            near_price: Price4(0x3132_3334),
            current_reference_price: Price4(0x4142_4344),
            cross_type: b'A',
            price_variation_indicator: b'C',
        }
        .into(),
        RetailPriceImprovementIndicatorFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(22),
            stock: *b"NFLX    ",
            interest_flag: b'A',
        }
        .into(),
        DirectListingPriceDiscoveryFields {
            stock_locate: sl,
            tracking_number: tn,
            timestamp: ts(23),
            stock: *b"DLCR    ",
            open_eligibility_status: b'Y',
            minimum_allowable_price: Price4(0x5152_5354),
            maximum_allowable_price: Price4(0x6162_6364),
            near_execution_price: Price4(0x7172_7374),
            near_execution_time: 0x0F0E_0D0C_0B0A_0908,
            lower_price_range_collar: Price4(0x0182_8384),
            upper_price_range_collar: Price4(0x0192_9394),
        }
        .into(),
    ]
}

#[test]
fn every_itch_type_is_normalized_losslessly() {
    let mut norm = Normalizer::new();
    let mut types = Vec::new();
    for (i, fields) in one_of_each().iter().enumerate() {
        let mut wire = [0u8; 64];
        let len = fields.encode(&mut wire).expect("encodable");
        let msg = itch::decode(&wire[..len]).expect("decodable");
        let (seq, recv) = (1_000_000 + i as u64, 1_580_394_600_000_000_000 + i as u64);
        let out = norm.normalize(&msg, seq, recv).to_vec();
        let env = fb::read_verified(&out).expect("normalized message verifies");
        assert_lossless(&msg, &env, seq, recv);
        assert_eq!(env.flags(), EnvelopeFlags::empty());
        // The builder path (the reference of the hot-path frames) reads the same.
        let built = norm.normalize_with_builder(&msg, seq, recv).to_vec();
        let env = fb::read_verified(&built).expect("normalized message verifies");
        assert_lossless(&msg, &env, seq, recv);
        types.push(msg.msg_type());
    }
    // All 23 types, each once.
    assert_eq!(types, itch::MESSAGE_TYPES);
}

#[test]
fn unknown_codes_pass_through_untouched() {
    // A side or state byte the schema has no name for is kept, not mapped to `Unknown`.
    let add = itch::AddOrderFields {
        buy_sell_indicator: b'?',
        ..Default::default()
    };
    let wire = add.to_bytes().expect("encodable");
    let mut norm = Normalizer::new();
    let out = norm.normalize(&itch::decode(&wire).expect("decodable"), 1, 2);
    let body = out
        .envelope()
        .event_as_add_order()
        .expect("add order")
        .body();
    assert_eq!(body.buy_sell_indicator(), fb::Side(b'?'));
    assert_eq!(body.buy_sell_indicator().variant_name(), None);
}

#[test]
fn flags_are_stamped_on_every_message() {
    let mut norm = Normalizer::new();
    norm.set_flags(EnvelopeFlags::Replayed);
    let wire = itch::OrderDeleteFields::default()
        .to_bytes()
        .expect("encodable");
    let msg = itch::decode(&wire).expect("decodable");
    let out = norm.normalize(&msg, 1, 2).to_vec();
    assert_eq!(
        fb::read_verified(&out).expect("valid").flags(),
        EnvelopeFlags::Replayed
    );
}

const AAPL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/itch/aapl-2020-01-30-10k.itch"
);

#[test]
fn every_message_of_the_real_aapl_session_is_normalized_losslessly() {
    let bytes = std::fs::read(AAPL).unwrap_or_else(|e| panic!("{AAPL}: {e}"));
    let mut norm = Normalizer::new();
    let mut count = 0u64;
    let mut per_event = std::collections::BTreeMap::<&str, u64>::new();
    for (offset, decoded) in itch::Stream::new(&bytes) {
        let msg = decoded.unwrap_or_else(|e| panic!("{AAPL} offset {offset}: {e}"));
        count += 1;
        let recv = 1_580_360_400_000_000_000 + msg.timestamp();
        let out = norm.normalize(&msg, count, recv);
        assert!(out.len() <= fb::MAX_ENCODED_LEN);
        let env = fb::read_verified(&out)
            .unwrap_or_else(|e| panic!("{AAPL} offset {offset}: normalized message: {e}"));
        assert_lossless(&msg, &env, count, recv);
        let name = env.event_type().variant_name().expect("a known event");
        *per_event.entry(name).or_default() += 1;
    }
    assert_eq!(count, 10_000);
    // The data set's own census (its README): A 4758, D 4083, E 849, P 240, L 52, U 7, X 6,
    // F 2, R 1, H 1, Y 1.
    let expected: std::collections::BTreeMap<&str, u64> = [
        (Event::AddOrder, 4758),
        (Event::OrderDelete, 4083),
        (Event::OrderExecuted, 849),
        (Event::Trade, 240),
        (Event::MarketParticipantPosition, 52),
        (Event::OrderReplace, 7),
        (Event::OrderCancel, 6),
        (Event::AddOrderMpid, 2),
        (Event::StockDirectory, 1),
        (Event::StockTradingAction, 1),
        (Event::RegShoRestriction, 1),
    ]
    .into_iter()
    .map(|(e, n)| (e.variant_name().expect("named"), n))
    .collect();
    assert_eq!(per_event, expected);
}
