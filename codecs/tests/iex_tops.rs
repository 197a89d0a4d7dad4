//! A TOPS 1.6 session laid out from the specification (no TOPS capture is bundled): one
//! IEX-TP segment per message group, every TOPS message type, through the tracker, the
//! decoder and the normalizer.

use mdbus_codecs::fb;
use mdbus_codecs::iex::message::{self, DecodeError, Message};
use mdbus_codecs::iex::normalize::{Normalizer, type_of_event};
use mdbus_codecs::iex::tp::{Notice, Protocol, Tracker};

const TS: i64 = 1_505_229_000_000_000_000; // 2017-09-12 15:10:00 UTC = 11:10 EDT

fn segment(protocol: Protocol, first: u64, msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut s = vec![0u8; 40];
    s[0] = 1;
    s[2..4].copy_from_slice(&protocol.0.to_le_bytes());
    s[4..8].copy_from_slice(&1u32.to_le_bytes());
    s[8..12].copy_from_slice(&0x4300_0000u32.to_le_bytes());
    s[14..16].copy_from_slice(&(msgs.len() as u16).to_le_bytes());
    s[24..32].copy_from_slice(&first.to_le_bytes());
    s[32..40].copy_from_slice(&TS.to_le_bytes());
    for m in msgs {
        s.extend_from_slice(&(m.len() as u16).to_le_bytes());
        s.extend_from_slice(m);
    }
    let len = (s.len() - 40) as u16;
    s[12..14].copy_from_slice(&len.to_le_bytes());
    s
}

/// Type, the type-specific byte, Timestamp, Symbol (not for `S`), then `rest`.
fn m(t: u8, b1: u8, rest: &[&[u8]]) -> Vec<u8> {
    let mut v = vec![t, b1];
    v.extend_from_slice(&TS.to_le_bytes());
    if t != b'S' {
        v.extend_from_slice(b"IEXG    ");
    }
    for r in rest {
        v.extend_from_slice(r);
    }
    v
}

fn session() -> Vec<Vec<Vec<u8>>> {
    let p = |x: i64| x.to_le_bytes().to_vec();
    let u = |x: u32| x.to_le_bytes().to_vec();
    vec![
        vec![
            m(b'S', b'O', &[]),
            m(b'S', b'S', &[]),
            m(b'D', 0x20, &[&u(100), &p(251_500), &[1]]),
        ],
        vec![
            m(b'H', b'T', &[b"    "]),
            m(b'O', b'N', &[]),
            m(b'P', 0, &[b" "]),
            m(b'I', b' ', &[]),
            m(b'E', b'O', &[]),
        ],
        vec![],
        vec![
            m(b'Q', 0, &[&u(300), &p(251_400), &p(251_600), &u(200)]),
            m(b'T', 0x20, &[&u(50), &p(251_500), &7u64.to_le_bytes()]),
            m(b'X', b'Q', &[&p(251_500)]),
            m(b'B', 0x20, &[&u(50), &p(251_500), &7u64.to_le_bytes()]),
            m(
                b'A',
                b'C',
                &[
                    &u(1_000),
                    &p(251_500),
                    &p(251_600),
                    &u(500),
                    b"B",
                    &[0],
                    &u(1_505_246_400),
                    &p(251_700),
                    &p(251_500),
                    &p(226_400),
                    &p(276_700),
                ],
            ),
        ],
    ]
}

#[test]
fn a_tops_session_decodes_and_normalizes_every_message_type() {
    let mut tracker = Tracker::new();
    let mut norm = Normalizer::new();
    let mut seq = 1;
    let mut types = Vec::new();
    for group in session() {
        let seg = segment(Protocol::TOPS, seq, &group);
        let h = tracker.handle(&seg).expect("a TOPS segment");
        assert_eq!(h.notice, None);
        for (s, bytes) in h.messages() {
            let msg = message::decode_for(Protocol::TOPS, bytes).expect("a TOPS message");
            let env = norm.normalize(&msg, s, 0).envelope();
            assert_eq!(type_of_event(env.event_type()), Some(msg.msg_type()));
            assert_eq!(env.venue(), fb::Venue::Iex);
            assert_eq!(env.instrument(), u32::from(msg.symbol().is_some()));
            assert_eq!(
                env.header().exchange_ts_ns(),
                (11 * 3600 + 10 * 60) * 1_000_000_000
            );
            match msg {
                Message::QuoteUpdate(q) => {
                    let e = env.event_as_iex_quote_update().expect("Q");
                    assert_eq!((q.bid_size(), q.bid_price()), (300, 251_400));
                    assert_eq!((q.ask_price(), q.ask_size()), (251_600, 200));
                    assert_eq!((e.bid_price(), e.ask_size()), (251_400, 200));
                }
                Message::AuctionInformation(a) => {
                    let e = env.event_as_iex_auction_information().expect("A");
                    assert_eq!(
                        (a.imbalance_side(), a.scheduled_auction_time()),
                        (b'B', 1_505_246_400)
                    );
                    assert_eq!(
                        (e.lower_auction_collar(), e.upper_auction_collar()),
                        (226_400, 276_700)
                    );
                }
                Message::TradeReport(t) => {
                    let e = env.event_as_iex_trade_report().expect("T");
                    assert_eq!((t.size(), t.price(), t.trade_id()), (50, 251_500, 7));
                    assert_eq!(e.sale_condition_flags(), 0x20);
                }
                _ => {}
            }
            types.push(msg.msg_type());
        }
        seq += group.len() as u64;
    }
    assert_eq!(types, b"SSDHOPIEQTXBA");
    let st = tracker.stats();
    assert_eq!((st.messages, st.heartbeats, st.gaps_detected), (13, 1, 0));
}

#[test]
fn tops_1_5_reads_the_same_layouts_and_deep_types_are_refused() {
    let q = m(b'Q', 0, &[&[0; 24]]);
    assert!(message::decode_for(Protocol::TOPS_1_5, &q).is_ok());
    let lvl = m(b'8', 1, &[&[0; 12]]);
    assert_eq!(
        message::decode_for(Protocol::TOPS, &lvl).err(),
        Some(DecodeError::NotInProtocol {
            msg_type: b'8',
            protocol: Protocol::TOPS
        })
    );
    // A restart of the TOPS stream is reported like DEEP's.
    let mut t = Tracker::new();
    t.handle(&segment(Protocol::TOPS, 1, &[q.clone(), q.clone()]))
        .expect("taken");
    let again = segment(Protocol::TOPS, 1, std::slice::from_ref(&q));
    let h = t.handle(&again).expect("taken");
    assert!(matches!(
        h.notice,
        Some(Notice::Restart { expected: 3, .. })
    ));
}
