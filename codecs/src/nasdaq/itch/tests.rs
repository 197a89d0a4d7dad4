//! Unit tests: hand-built bytes for every message type, errors, round trips, never-panic.

use super::*;
use proptest::prelude::*;

/// Header: locate 13, tracking 2, timestamp 0x0000_1234_5678_9abc.
fn hdr(t: u8) -> Vec<u8> {
    vec![
        t, 0x00, 0x0d, 0x00, 0x02, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc,
    ]
}
const TS: u64 = 0x1234_5678_9abc;

trait Push {
    fn b(self, v: &[u8]) -> Self;
    fn u32(self, v: u32) -> Self;
    fn u64(self, v: u64) -> Self;
}
impl Push for Vec<u8> {
    fn b(mut self, v: &[u8]) -> Self {
        self.extend_from_slice(v);
        self
    }
    fn u32(self, v: u32) -> Self {
        self.b(&v.to_be_bytes())
    }
    fn u64(self, v: u64) -> Self {
        self.b(&v.to_be_bytes())
    }
}

fn check_header(m: &Message<'_>, t: u8, len: usize) {
    assert_eq!(m.msg_type(), t);
    assert_eq!(m.stock_locate(), 13);
    assert_eq!(m.tracking_number(), 2);
    assert_eq!(m.timestamp(), TS);
    assert_eq!(m.as_bytes().len(), len);
    assert_eq!(message_len(t), Some(len));
    // One byte short and one byte long are rejected with the right error.
    let full = m.as_bytes();
    assert_eq!(
        decode(&full[..len - 1]),
        Err(DecodeError::Truncated {
            msg_type: t,
            len: len - 1,
            expected: len
        })
    );
    let mut long = full.to_vec();
    long.push(0);
    assert_eq!(
        decode(&long),
        Err(DecodeError::BadLength {
            msg_type: t,
            len: len + 1,
            expected: len
        })
    );
    // Re-encoding the owned fields gives back the same bytes.
    let mut out = [0u8; 64];
    let n = m.to_fields().encode(&mut out).expect("encode");
    assert_eq!(&out[..n], full);
}

#[test]
fn system_event() {
    let b = hdr(b'S').b(b"Q");
    let m = decode(&b).unwrap();
    check_header(&m, b'S', 12);
    let Message::SystemEvent(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(v.event_code(), b'Q');
}

#[test]
fn stock_directory() {
    let b = hdr(b'R')
        .b(b"AAPL    QN")
        .u32(100)
        .b(b"NCZ PNN1N")
        .u32(3)
        .b(b"Y");
    let m = decode(&b).unwrap();
    check_header(&m, b'R', 39);
    let Message::StockDirectory(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(&v.stock(), b"AAPL    ");
    assert_eq!(v.market_category(), b'Q');
    assert_eq!(v.financial_status_indicator(), b'N');
    assert_eq!(v.round_lot_size(), 100);
    assert_eq!(v.round_lots_only(), b'N');
    assert_eq!(v.issue_classification(), b'C');
    assert_eq!(&v.issue_sub_type(), b"Z ");
    assert_eq!(v.authenticity(), b'P');
    assert_eq!(v.short_sale_threshold_indicator(), b'N');
    assert_eq!(v.ipo_flag(), b'N');
    assert_eq!(v.luld_reference_price_tier(), b'1');
    assert_eq!(v.etp_flag(), b'N');
    assert_eq!(v.etp_leverage_factor(), 3);
    assert_eq!(v.inverse_indicator(), b'Y');
}

#[test]
fn stock_trading_action() {
    let b = hdr(b'H').b(b"AAPL    T LUDP");
    let m = decode(&b).unwrap();
    check_header(&m, b'H', 25);
    let Message::StockTradingAction(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(&v.stock(), b"AAPL    ");
    assert_eq!(v.trading_state(), b'T');
    assert_eq!(v.reserved(), b' ');
    assert_eq!(&v.reason(), b"LUDP");
}

#[test]
fn reg_sho_restriction() {
    let b = hdr(b'Y').b(b"AAPL    1");
    let m = decode(&b).unwrap();
    check_header(&m, b'Y', 20);
    let Message::RegShoRestriction(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(&v.stock(), b"AAPL    ");
    assert_eq!(v.reg_sho_action(), b'1');
}

#[test]
fn market_participant_position() {
    let b = hdr(b'L').b(b"GSCOAAPL    YNA");
    let m = decode(&b).unwrap();
    check_header(&m, b'L', 26);
    let Message::MarketParticipantPosition(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(&v.mpid(), b"GSCO");
    assert_eq!(&v.stock(), b"AAPL    ");
    assert_eq!(v.primary_market_maker(), b'Y');
    assert_eq!(v.market_maker_mode(), b'N');
    assert_eq!(v.market_participant_state(), b'A');
}

#[test]
fn mwcb_decline_level() {
    let b = hdr(b'V').u64(1).u64(2_000_000_000).u64(u64::MAX);
    let m = decode(&b).unwrap();
    check_header(&m, b'V', 35);
    let Message::MwcbDeclineLevel(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(v.level1(), Price8(1));
    assert_eq!(v.level2().to_string(), "20.00000000");
    assert_eq!(v.level3(), Price8(u64::MAX));
}

#[test]
fn mwcb_status() {
    let b = hdr(b'W').b(b"2");
    let m = decode(&b).unwrap();
    check_header(&m, b'W', 12);
    let Message::MwcbStatus(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(v.breached_level(), b'2');
}

#[test]
fn ipo_quoting_period_update() {
    let b = hdr(b'K').b(b"ABNB    ").u32(43_200).b(b"A").u32(680_000);
    let m = decode(&b).unwrap();
    check_header(&m, b'K', 28);
    let Message::IpoQuotingPeriodUpdate(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(&v.stock(), b"ABNB    ");
    assert_eq!(v.ipo_quotation_release_time(), 43_200);
    assert_eq!(v.ipo_quotation_release_qualifier(), b'A');
    assert_eq!(v.ipo_price(), Price4(680_000));
}

#[test]
fn luld_auction_collar() {
    let b = hdr(b'J')
        .b(b"AAPL    ")
        .u32(1_000_000)
        .u32(1_100_000)
        .u32(900_000)
        .u32(2);
    let m = decode(&b).unwrap();
    check_header(&m, b'J', 35);
    let Message::LuldAuctionCollar(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(&v.stock(), b"AAPL    ");
    assert_eq!(v.auction_collar_reference_price(), Price4(1_000_000));
    assert_eq!(v.upper_auction_collar_price(), Price4(1_100_000));
    assert_eq!(v.lower_auction_collar_price(), Price4(900_000));
    assert_eq!(v.auction_collar_extension(), 2);
}

#[test]
fn operational_halt() {
    let b = hdr(b'h').b(b"AAPL    QH");
    let m = decode(&b).unwrap();
    check_header(&m, b'h', 21);
    let Message::OperationalHalt(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(&v.stock(), b"AAPL    ");
    assert_eq!(v.market_code(), b'Q');
    assert_eq!(v.operational_halt_action(), b'H');
}

#[test]
fn add_order() {
    let b = hdr(b'A')
        .u64(0x0102_0304_0506_0708)
        .b(b"B")
        .u32(100)
        .b(b"AAPL    ")
        .u32(3_201_400);
    let m = decode(&b).unwrap();
    check_header(&m, b'A', 36);
    let Message::AddOrder(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(v.order_reference_number(), 0x0102_0304_0506_0708);
    assert_eq!(v.buy_sell_indicator(), b'B');
    assert_eq!(v.shares(), 100);
    assert_eq!(&v.stock(), b"AAPL    ");
    assert_eq!(v.price(), Price4(3_201_400));
    assert_eq!(v.price().to_string(), "320.1400");
    assert_eq!(AddOrder::from_bytes(&b).unwrap(), v);
    assert_eq!(
        OrderDelete::from_bytes(&b),
        Err(DecodeError::UnexpectedType {
            expected: b'D',
            found: b'A'
        })
    );
}

#[test]
fn add_order_mpid() {
    let b = hdr(b'F')
        .u64(7)
        .b(b"S")
        .u32(200)
        .b(b"AAPL    ")
        .u32(3_203_000)
        .b(b"VIRT");
    let m = decode(&b).unwrap();
    check_header(&m, b'F', 40);
    let Message::AddOrderMpid(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(v.order_reference_number(), 7);
    assert_eq!(v.buy_sell_indicator(), b'S');
    assert_eq!(v.shares(), 200);
    assert_eq!(&v.stock(), b"AAPL    ");
    assert_eq!(v.price(), Price4(3_203_000));
    assert_eq!(&v.attribution(), b"VIRT");
}

#[test]
fn order_executed() {
    let b = hdr(b'E').u64(7).u32(50).u64(99_999);
    let m = decode(&b).unwrap();
    check_header(&m, b'E', 31);
    let Message::OrderExecuted(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(v.order_reference_number(), 7);
    assert_eq!(v.executed_shares(), 50);
    assert_eq!(v.match_number(), 99_999);
}

#[test]
fn order_executed_with_price() {
    let b = hdr(b'C').u64(7).u32(50).u64(99_999).b(b"Y").u32(3_200_100);
    let m = decode(&b).unwrap();
    check_header(&m, b'C', 36);
    let Message::OrderExecutedWithPrice(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(v.order_reference_number(), 7);
    assert_eq!(v.executed_shares(), 50);
    assert_eq!(v.match_number(), 99_999);
    assert_eq!(v.printable(), b'Y');
    assert_eq!(v.execution_price(), Price4(3_200_100));
}

#[test]
fn order_cancel() {
    let b = hdr(b'X').u64(7).u32(25);
    let m = decode(&b).unwrap();
    check_header(&m, b'X', 23);
    let Message::OrderCancel(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(v.order_reference_number(), 7);
    assert_eq!(v.cancelled_shares(), 25);
}

#[test]
fn order_delete() {
    let b = hdr(b'D').u64(u64::MAX);
    let m = decode(&b).unwrap();
    check_header(&m, b'D', 19);
    let Message::OrderDelete(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(v.order_reference_number(), u64::MAX);
}

#[test]
fn order_replace() {
    let b = hdr(b'U').u64(7).u64(8).u32(300).u32(3_199_900);
    let m = decode(&b).unwrap();
    check_header(&m, b'U', 35);
    let Message::OrderReplace(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(v.original_order_reference_number(), 7);
    assert_eq!(v.new_order_reference_number(), 8);
    assert_eq!(v.shares(), 300);
    assert_eq!(v.price(), Price4(3_199_900));
}

#[test]
fn trade() {
    let b = hdr(b'P')
        .u64(0)
        .b(b"B")
        .u32(10)
        .b(b"AAPL    ")
        .u32(3_200_000)
        .u64(123);
    let m = decode(&b).unwrap();
    check_header(&m, b'P', 44);
    let Message::Trade(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(v.order_reference_number(), 0);
    assert_eq!(v.buy_sell_indicator(), b'B');
    assert_eq!(v.shares(), 10);
    assert_eq!(&v.stock(), b"AAPL    ");
    assert_eq!(v.price(), Price4(3_200_000));
    assert_eq!(v.match_number(), 123);
}

#[test]
fn cross_trade() {
    let b = hdr(b'Q')
        .u64(1 << 40)
        .b(b"AAPL    ")
        .u32(3_200_000)
        .u64(124)
        .b(b"O");
    let m = decode(&b).unwrap();
    check_header(&m, b'Q', 40);
    let Message::CrossTrade(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(v.shares(), 1 << 40);
    assert_eq!(&v.stock(), b"AAPL    ");
    assert_eq!(v.cross_price(), Price4(3_200_000));
    assert_eq!(v.match_number(), 124);
    assert_eq!(v.cross_type(), b'O');
}

#[test]
fn broken_trade() {
    let b = hdr(b'B').u64(124);
    let m = decode(&b).unwrap();
    check_header(&m, b'B', 19);
    let Message::BrokenTrade(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(v.match_number(), 124);
}

#[test]
fn net_order_imbalance_indicator() {
    let b = hdr(b'I')
        .u64(1000)
        .u64(200)
        .b(b"BAAPL    ")
        .u32(1)
        .u32(2)
        .u32(3)
        .b(b"C5");
    let m = decode(&b).unwrap();
    check_header(&m, b'I', 50);
    let Message::NetOrderImbalanceIndicator(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(v.paired_shares(), 1000);
    assert_eq!(v.imbalance_shares(), 200);
    assert_eq!(v.imbalance_direction(), b'B');
    assert_eq!(&v.stock(), b"AAPL    ");
    assert_eq!(v.far_price(), Price4(1));
    assert_eq!(v.near_price(), Price4(2));
    assert_eq!(v.current_reference_price(), Price4(3));
    assert_eq!(v.cross_type(), b'C');
    assert_eq!(v.price_variation_indicator(), b'5');
}

#[test]
fn retail_price_improvement_indicator() {
    let b = hdr(b'N').b(b"AAPL    A");
    let m = decode(&b).unwrap();
    check_header(&m, b'N', 20);
    let Message::RetailPriceImprovementIndicator(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(&v.stock(), b"AAPL    ");
    assert_eq!(v.interest_flag(), b'A');
}

#[test]
fn direct_listing_price_discovery() {
    let b = hdr(b'O')
        .b(b"NEWCO   Y")
        .u32(100_000)
        .u32(500_000)
        .u32(250_000)
        .u64(34_200_000_000_000)
        .u32(200_000)
        .u32(300_000);
    let m = decode(&b).unwrap();
    check_header(&m, b'O', 48);
    let Message::DirectListingPriceDiscovery(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(&v.stock(), b"NEWCO   ");
    assert_eq!(v.open_eligibility_status(), b'Y');
    assert_eq!(v.minimum_allowable_price(), Price4(100_000));
    assert_eq!(v.maximum_allowable_price(), Price4(500_000));
    assert_eq!(v.near_execution_price(), Price4(250_000));
    assert_eq!(v.near_execution_time(), 34_200_000_000_000);
    assert_eq!(v.lower_price_range_collar(), Price4(200_000));
    assert_eq!(v.upper_price_range_collar(), Price4(300_000));
}

#[test]
fn every_type_is_covered_once() {
    assert_eq!(MESSAGE_TYPES, b"SRHYLVWKJhAFECXDUPQBINO");
    for t in 0..=255u8 {
        assert_eq!(
            message_len(t).is_some(),
            MESSAGE_TYPES.contains(&t),
            "type {t}"
        );
    }
}

#[test]
fn errors() {
    assert_eq!(decode(&[]), Err(DecodeError::Empty));
    assert_eq!(
        decode(b"Z123"),
        Err(DecodeError::UnknownType {
            msg_type: b'Z',
            len: 4
        })
    );
    assert_eq!(
        decode(b"A"),
        Err(DecodeError::Truncated {
            msg_type: b'A',
            len: 1,
            expected: 36
        })
    );
    let e = DecodeError::Truncated {
        msg_type: b'A',
        len: 1,
        expected: 36,
    };
    assert_eq!(
        e.to_string(),
        "truncated ITCH message type 0x41: 1 bytes, expected 36"
    );
}

#[test]
fn encode_errors() {
    let f = OrderDeleteFields {
        timestamp: MAX_TIMESTAMP + 1,
        ..Default::default()
    };
    assert_eq!(
        f.encode(&mut [0u8; 64]),
        Err(EncodeError::TimestampOutOfRange {
            timestamp: MAX_TIMESTAMP + 1
        })
    );
    let f = OrderDeleteFields {
        timestamp: MAX_TIMESTAMP,
        ..Default::default()
    };
    assert_eq!(
        f.encode(&mut [0u8; 18]),
        Err(EncodeError::BufferTooSmall {
            needed: 19,
            available: 18
        })
    );
    let b = f.to_bytes().unwrap();
    assert_eq!(decode(&b).unwrap().timestamp(), MAX_TIMESTAMP);
}

#[test]
fn prices_display() {
    assert_eq!(Price4(0).to_string(), "0.0000");
    assert_eq!(Price4(1).to_string(), "0.0001");
    assert_eq!(Price4(u32::MAX).to_string(), "429496.7295");
    assert_eq!(Price8(123_456_789).to_string(), "1.23456789");
    assert_eq!(format!("{:?}", Price4(3_201_400)), "Price4(320.1400)");
    assert!((Price4(3_201_400).to_f64() - 320.14).abs() < 1e-9);
    assert!((Price8(150_000_000).to_f64() - 1.5).abs() < 1e-12);
}

#[test]
fn debug_shows_alpha_as_text() {
    let b = hdr(b'A').u64(1).b(b"B").u32(1).b(b"AAPL    ").u32(1);
    let s = format!("{:?}", decode(&b).unwrap());
    assert!(s.contains("stock: b\"AAPL    \""), "{s}");
    assert!(s.contains("buy_sell_indicator: b'B'"), "{s}");
}

#[test]
fn trim() {
    assert_eq!(trim_alpha(b"AAPL    "), b"AAPL");
    assert_eq!(trim_alpha(b"        "), b"");
    assert_eq!(trim_alpha(b"BRK A   "), b"BRK A");
}

fn framed(msgs: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for m in msgs {
        v.extend_from_slice(&(m.len() as u16).to_be_bytes());
        v.extend_from_slice(m);
    }
    v
}

#[test]
fn stream_walks_records_and_reports_truncation() {
    let a = hdr(b'D').u64(1);
    let bad = b"Z".to_vec();
    let c = hdr(b'X').u64(2).u32(3);
    let mut buf = framed(&[&a, &bad, &c]);
    let whole = buf.len();
    buf.extend_from_slice(&[0, 19, b'D', 0]); // truncated final record
    let items: Vec<_> = Stream::new(&buf).collect();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0].0, 0);
    assert_eq!(items[0].1.unwrap().msg_type(), b'D');
    assert_eq!(
        items[1],
        (
            21,
            Err(DecodeError::UnknownType {
                msg_type: b'Z',
                len: 1
            })
        )
    );
    assert_eq!(items[2].0, 24);
    assert_eq!(items[2].1.unwrap().msg_type(), b'X');
    assert_eq!(
        items[3],
        (
            whole,
            Err(DecodeError::TruncatedRecord {
                needed: 21,
                available: 4
            })
        )
    );

    // A lone byte of a length prefix.
    let mut one = framed(&[&a]);
    one.push(0);
    let items: Vec<_> = Stream::new(&one).collect();
    assert_eq!(
        items[1],
        (
            21,
            Err(DecodeError::TruncatedRecord {
                needed: 2,
                available: 1
            })
        )
    );
}

#[test]
fn write_framed_round_trip() {
    let f = MessageFields::from(OrderCancelFields {
        stock_locate: 13,
        tracking_number: 1,
        timestamp: 5,
        order_reference_number: 9,
        cancelled_shares: 10,
    });
    let mut buf = [0u8; 64];
    let n = write_framed(&f, &mut buf).unwrap();
    assert_eq!(n, 25);
    let items: Vec<_> = Stream::new(&buf[..n]).collect();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].1.unwrap().to_fields(), f);
    assert!(write_framed(&f, &mut buf[..24]).is_err());
}

fn any_message() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(MESSAGE_TYPES),
        prop::collection::vec(any::<u8>(), 50),
    )
        .prop_map(|(t, mut body)| {
            let len = message_len(t).unwrap_or(1);
            body.truncate(len);
            body[0] = t;
            body
        })
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(m) = decode(&bytes) {
            let _ = (m.stock_locate(), m.tracking_number(), m.timestamp(), format!("{m:?}"));
        }
    }

    #[test]
    fn stream_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut last = None;
        for (off, _) in Stream::new(&bytes) {
            prop_assert!(off < bytes.len());
            prop_assert!(last.is_none_or(|l| off > l));
            last = Some(off);
        }
    }

    /// Every byte of every type round-trips: bytes -> view -> fields -> bytes, and the fields
    /// decoded from the re-encoded bytes equal the fields we encoded.
    #[test]
    fn round_trip_every_type(bytes in any_message()) {
        let m = decode(&bytes).expect("valid length");
        let fields = m.to_fields();
        prop_assert_eq!(fields.msg_type(), bytes[0]);
        let mut out = [0u8; 64];
        let n = fields.encode(&mut out).expect("encode");
        prop_assert_eq!(&out[..n], &bytes[..]);
        prop_assert_eq!(decode(&out[..n]).expect("decode").to_fields(), fields);
    }
}
