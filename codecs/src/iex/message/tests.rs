//! Every message type laid out byte by byte from the specifications' tables, every field read
//! back.

use super::*;

const TS: i64 = 1_493_132_590_123_456_789;
const SYM: &[u8; 8] = b"ZIEXT   ";

/// A message of `len` bytes: type, the type-specific byte, Timestamp, and Symbol at 10 when
/// `len > 10`; other fields are put by the caller at their specification offsets.
fn msg(t: u8, b1: u8, len: usize) -> Vec<u8> {
    let mut m = vec![0u8; len];
    m[0] = t;
    m[1] = b1;
    m[2..10].copy_from_slice(&TS.to_le_bytes());
    if len > 10 {
        m[10..18].copy_from_slice(SYM);
    }
    m
}

fn put(m: &mut [u8], at: usize, v: &[u8]) {
    m[at..at + v.len()].copy_from_slice(v);
}

/// Decodes, checks the common accessors, and that every shorter prefix is refused.
fn check<'a>(m: &'a [u8], len: usize) -> Message<'a> {
    assert_eq!(m.len(), len);
    for k in 1..len {
        assert_eq!(
            decode(&m[..k]),
            Err(DecodeError::Truncated {
                msg_type: m[0],
                len: k,
                needed: len
            })
        );
    }
    let d = decode(m).expect("decodes");
    assert_eq!(d.msg_type(), m[0]);
    assert_eq!(d.timestamp(), TS);
    assert_eq!(d.as_bytes(), m);
    if len > 10 {
        assert_eq!(d.symbol(), Some(*SYM));
    }
    let _ = format!("{d:?}");
    d
}

#[test]
fn system_event() {
    let m = msg(b'S', b'R', 10);
    let Message::SystemEvent(v) = check(&m, 10) else {
        panic!()
    };
    assert_eq!(v.system_event(), b'R');
    assert_eq!(Message::SystemEvent(v).symbol(), None);
}

#[test]
fn security_directory() {
    let mut m = msg(b'D', 0x80 | 0x20, 31);
    put(&mut m, 18, &100u32.to_le_bytes());
    put(&mut m, 22, &(-1_234_500i64).to_le_bytes());
    m[30] = 2;
    let Message::SecurityDirectory(v) = check(&m, 31) else {
        panic!()
    };
    assert_eq!(v.flags(), 0xA0);
    assert_eq!(v.symbol(), *SYM);
    assert_eq!(v.round_lot_size(), 100);
    assert_eq!(v.adjusted_poc_price(), -1_234_500);
    assert_eq!(v.luld_tier(), 2);
}

#[test]
fn trading_status() {
    let mut m = msg(b'H', b'H', 22);
    put(&mut m, 18, b"T1  ");
    let Message::TradingStatus(v) = check(&m, 22) else {
        panic!()
    };
    assert_eq!(
        (v.trading_status(), v.symbol(), v.reason()),
        (b'H', *SYM, *b"T1  ")
    );
}

#[test]
fn retail_liquidity_indicator() {
    let m = msg(b'I', b'C', 18);
    let Message::RetailLiquidityIndicator(v) = check(&m, 18) else {
        panic!()
    };
    assert_eq!((v.retail_liquidity_indicator(), v.symbol()), (b'C', *SYM));
}

#[test]
fn operational_halt_status() {
    let m = msg(b'O', b'O', 18);
    let Message::OperationalHaltStatus(v) = check(&m, 18) else {
        panic!()
    };
    assert_eq!((v.operational_halt_status(), v.symbol()), (b'O', *SYM));
}

#[test]
fn short_sale_price_test_status() {
    let mut m = msg(b'P', 1, 19);
    m[18] = b'A';
    let Message::ShortSalePriceTestStatus(v) = check(&m, 19) else {
        panic!()
    };
    assert_eq!(
        (v.short_sale_price_test_status(), v.symbol(), v.detail()),
        (1, *SYM, b'A')
    );
}

#[test]
fn security_event() {
    let m = msg(b'E', b'C', 18);
    let Message::SecurityEvent(v) = check(&m, 18) else {
        panic!()
    };
    assert_eq!((v.security_event(), v.symbol()), (b'C', *SYM));
}

#[test]
fn quote_update() {
    let mut m = msg(b'Q', 0x40, 42);
    put(&mut m, 18, &300u32.to_le_bytes());
    put(&mut m, 22, &995_000i64.to_le_bytes());
    put(&mut m, 30, &1_005_000i64.to_le_bytes());
    put(&mut m, 38, &u32::MAX.to_le_bytes());
    let Message::QuoteUpdate(v) = check(&m, 42) else {
        panic!()
    };
    assert_eq!(v.flags(), 0x40);
    assert_eq!(v.symbol(), *SYM);
    assert_eq!((v.bid_size(), v.bid_price()), (300, 995_000));
    assert_eq!((v.ask_price(), v.ask_size()), (1_005_000, u32::MAX));
}

#[test]
fn price_level_updates() {
    for (t, complete) in [(b'8', true), (b'5', false)] {
        let mut m = msg(t, u8::from(complete), 30);
        put(&mut m, 18, &700u32.to_le_bytes());
        put(&mut m, 22, &i64::MAX.to_le_bytes());
        match check(&m, 30) {
            Message::PriceLevelUpdateBuy(v) => {
                assert_eq!(t, b'8');
                assert_eq!((v.event_flags(), v.symbol()), (1, *SYM));
                assert_eq!((v.size(), v.price()), (700, i64::MAX));
                assert!(v.event_processing_complete());
            }
            Message::PriceLevelUpdateSell(v) => {
                assert_eq!(t, b'5');
                assert_eq!((v.event_flags(), v.symbol()), (0, *SYM));
                assert_eq!((v.size(), v.price()), (700, i64::MAX));
                assert!(!v.event_processing_complete());
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Trade Report and Trade Break share a layout.
#[test]
fn trade_report_and_trade_break() {
    for t in [b'T', b'B'] {
        let mut m = msg(t, 0x80 | 0x20, 38);
        put(&mut m, 18, &125u32.to_le_bytes());
        put(&mut m, 22, &251_500i64.to_le_bytes());
        put(&mut m, 30, &0x0102_0304_0506_0708u64.to_le_bytes());
        let fields = match check(&m, 38) {
            Message::TradeReport(v) => {
                assert_eq!(t, b'T');
                (
                    v.sale_condition_flags(),
                    v.symbol(),
                    v.size(),
                    v.price(),
                    v.trade_id(),
                )
            }
            Message::TradeBreak(v) => {
                assert_eq!(t, b'B');
                (
                    v.sale_condition_flags(),
                    v.symbol(),
                    v.size(),
                    v.price(),
                    v.trade_id(),
                )
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(fields, (0xA0, *SYM, 125, 251_500, 0x0102_0304_0506_0708));
    }
}

#[test]
fn official_price() {
    let mut m = msg(b'X', b'Q', 26);
    put(&mut m, 18, &251_500i64.to_le_bytes());
    let Message::OfficialPrice(v) = check(&m, 26) else {
        panic!()
    };
    assert_eq!(
        (v.price_type(), v.symbol(), v.official_price()),
        (b'Q', *SYM, 251_500)
    );
}

#[test]
fn auction_information() {
    let mut m = msg(b'A', b'C', 80);
    put(&mut m, 18, &1_000u32.to_le_bytes());
    put(&mut m, 22, &100_000i64.to_le_bytes());
    put(&mut m, 30, &100_100i64.to_le_bytes());
    put(&mut m, 38, &2_000u32.to_le_bytes());
    m[42] = b'S';
    m[43] = 3;
    put(&mut m, 44, &1_493_150_400u32.to_le_bytes());
    put(&mut m, 48, &100_200i64.to_le_bytes());
    put(&mut m, 56, &100_300i64.to_le_bytes());
    put(&mut m, 64, &90_000i64.to_le_bytes());
    put(&mut m, 72, &110_000i64.to_le_bytes());
    let Message::AuctionInformation(v) = check(&m, 80) else {
        panic!()
    };
    assert_eq!((v.auction_type(), v.symbol()), (b'C', *SYM));
    assert_eq!((v.paired_shares(), v.reference_price()), (1_000, 100_000));
    assert_eq!(v.indicative_clearing_price(), 100_100);
    assert_eq!((v.imbalance_shares(), v.imbalance_side()), (2_000, b'S'));
    assert_eq!(v.extension_number(), 3);
    assert_eq!(v.scheduled_auction_time(), 1_493_150_400);
    assert_eq!(v.auction_book_clearing_price(), 100_200);
    assert_eq!(v.collar_reference_price(), 100_300);
    assert_eq!(
        (v.lower_auction_collar(), v.upper_auction_collar()),
        (90_000, 110_000)
    );
}

/// Add Order and Order Modify share a layout.
#[test]
fn add_order_and_order_modify() {
    for (t, b1) in [(b'a', b'5'), (b'M', 1)] {
        let mut m = msg(t, b1, 38);
        put(&mut m, 18, &u64::MAX.to_le_bytes());
        put(&mut m, 26, &400u32.to_le_bytes());
        put(&mut m, 30, &99_990i64.to_le_bytes());
        let fields = match check(&m, 38) {
            Message::AddOrder(v) => (v.side(), v.symbol(), v.order_id(), v.size(), v.price()),
            Message::OrderModify(v) => (
                v.modify_flags(),
                v.symbol(),
                v.order_id(),
                v.size(),
                v.price(),
            ),
            other => panic!("{other:?}"),
        };
        assert_eq!(fields, (b1, *SYM, u64::MAX, 400, 99_990));
    }
}

#[test]
fn order_delete() {
    let mut m = msg(b'R', 9, 26);
    put(&mut m, 18, &77u64.to_le_bytes());
    let Message::OrderDelete(v) = check(&m, 26) else {
        panic!()
    };
    assert_eq!((v.reserved(), v.symbol(), v.order_id()), (9, *SYM, 77));
}

#[test]
fn order_executed() {
    let mut m = msg(b'L', 0x40, 46);
    put(&mut m, 18, &77u64.to_le_bytes());
    put(&mut m, 26, &50u32.to_le_bytes());
    put(&mut m, 30, &99_990i64.to_le_bytes());
    put(&mut m, 38, &12_345u64.to_le_bytes());
    let Message::OrderExecuted(v) = check(&m, 46) else {
        panic!()
    };
    assert_eq!(
        (v.sale_condition_flags(), v.symbol(), v.order_id()),
        (0x40, *SYM, 77)
    );
    assert_eq!((v.size(), v.price(), v.trade_id()), (50, 99_990, 12_345));
}

#[test]
fn clear_book() {
    let m = msg(b'C', 0, 18);
    let Message::ClearBook(v) = check(&m, 18) else {
        panic!()
    };
    assert_eq!((v.reserved(), v.symbol()), (0, *SYM));
}

#[test]
fn longer_messages_are_read_by_their_layout() {
    let mut m = msg(b'E', b'O', 18);
    m.extend_from_slice(b"future fields");
    let d = decode(&m).expect("decodes");
    assert_eq!(d.as_bytes().len(), 31);
    assert_eq!(d.symbol(), Some(*SYM));
}

#[test]
fn unknown_and_empty_messages_are_errors() {
    assert_eq!(decode(&[]), Err(DecodeError::Empty));
    for t in [b'Z', b'q', 0, 0xFF] {
        let e = decode(&[t; 64]).expect_err("unknown");
        assert_eq!(e, DecodeError::UnknownType { msg_type: t });
        assert!(e.to_string().contains("unknown IEX message type"), "{e}");
    }
}

#[test]
fn each_feed_refuses_the_types_it_does_not_send() {
    let q = msg(b'Q', 0, 42);
    let lvl = msg(b'8', 0, 30);
    let add = msg(b'a', b'8', 38);
    assert!(decode_for(Protocol::TOPS, &q).is_ok());
    assert!(decode_for(Protocol::DEEP, &lvl).is_ok());
    assert!(decode_for(Protocol::DEEP_PLUS, &add).is_ok());
    for (p, m) in [
        (Protocol::DEEP, &q),
        (Protocol::TOPS, &lvl),
        (Protocol::DEEP_PLUS, &lvl),
        (Protocol::DEEP, &add),
        (Protocol(1), &q),
    ] {
        let e = decode_for(p, m).expect_err("not in protocol");
        assert_eq!(
            e,
            DecodeError::NotInProtocol {
                msg_type: m[0],
                protocol: p
            }
        );
        let _ = e.to_string();
    }
    for t in *b"SDHOPTXBA" {
        for p in [Protocol::TOPS, Protocol::DEEP, Protocol::DEEP_PLUS] {
            assert!(protocol_sends(p, t), "{p} {}", char::from(t));
        }
    }
}
