//! Normalization throughput on real data: the first 10,000 AAPL messages of 2020-01-30.
//!
//! Group `normalize_aapl_10k` (per ITCH message):
//! * `itchy/parse`: the `itchy` crate parsing the bytes into its owned messages (baseline);
//! * `mdbus/decode`: splitting the length-prefixed records (`itch::frame_at`) and decoding each
//!   into its zero-copy view (context: the part of the pipeline before normalization);
//! * `mdbus/decode+normalize+encode`: decode, normalize, encode the FlatBuffers envelope with
//!   the default path of [`Encoder`] (frames for hot-path kinds);
//! * `mdbus/decode+normalize+encode+copy`: the same plus copying each message out, as a
//!   publisher copies it into a ring slot;
//! * `mdbus/decode+normalize+encode_with_builder`: the same with every kind built by the
//!   reused `FlatBufferBuilder` (the baseline the frames replace on the hot path).
//!
//! Group `normalize_iex_deep` (per IEX message; the first 20,000 segments of the bundled IEX
//! DEEP 1.0 sample of 2017-04-25, about 60,000 messages, held in memory):
//! * `mdbus/tp+decode`: walking each IEX-TP segment's message blocks and decoding each
//!   message as a DEEP one into its zero-copy view;
//! * `mdbus/tp+decode+normalize+encode`: the same, then normalizing and encoding the
//!   FlatBuffers envelope (instruments numbered by the normalizer's directory), as the live
//!   and replay pipelines of IEX do.
//!
//! Group `read_aapl_10k` (per normalized message, all fields of the event read):
//! * `read_verified`: FlatBuffers verifier, then the typed view;
//! * `read_trusted`: the typed view without verification.
//!
//! `cargo bench -p mdbus-codecs --bench normalize`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mdbus_codecs::fb::{self, Envelope, Event, MAX_ENCODED_LEN};
use mdbus_codecs::nasdaq::itch::{self, Message};
use mdbus_codecs::nasdaq::normalize::Normalizer;

const AAPL: &[u8] = include_bytes!("../testdata/itch/aapl-2020-01-30-10k.itch");
const MESSAGES: u64 = 10_000;

/// Walks the length-prefixed records with `frame_at` and decodes each, as a feed handler
/// decodes the message blocks of a MoldUDP64 packet; `f` gets the message and its 0-based
/// position.
#[inline(always)]
fn each_message(buf: &[u8], mut f: impl FnMut(u64, &Message<'_>)) {
    let (mut offset, mut seq) = (0, 0);
    while offset < buf.len() {
        let (bytes, next) = itch::frame_at(buf, offset).expect("valid sample");
        f(seq, &itch::decode(bytes).expect("valid sample"));
        offset = next;
        seq += 1;
    }
}

fn normalize(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalize_aapl_10k");
    g.throughput(Throughput::Elements(MESSAGES));

    g.bench_function("itchy/parse", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for m in itchy::MessageStream::from_reader(black_box(AAPL)).flatten() {
                black_box(m);
                n += 1;
            }
            assert_eq!(n, MESSAGES);
            n
        })
    });

    g.bench_function("mdbus/decode", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            each_message(black_box(AAPL), |_, m| {
                acc = acc
                    .wrapping_add(m.timestamp())
                    .wrapping_add(u64::from(m.msg_type()));
            });
            acc
        })
    });

    let mut norm = Normalizer::new();
    g.bench_function("mdbus/decode+normalize+encode", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            each_message(black_box(AAPL), |seq, m| {
                bytes += black_box(norm.normalize(m, seq, 1)).len();
            });
            bytes
        })
    });

    let mut slot = [0u8; MAX_ENCODED_LEN];
    g.bench_function("mdbus/decode+normalize+encode+copy", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            each_message(black_box(AAPL), |seq, m| {
                let msg = norm.normalize(m, seq, 1);
                slot[..msg.len()].copy_from_slice(&msg);
                bytes += usize::from(black_box(&slot)[0]) + msg.len();
            });
            bytes
        })
    });

    g.bench_function("mdbus/decode+normalize+encode_with_builder", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            each_message(black_box(AAPL), |seq, m| {
                bytes += black_box(norm.normalize_with_builder(m, seq, 1)).len();
            });
            bytes
        })
    });
    g.finish();
}

/// Reads every field of the event (and the header), folding them into a checksum.
#[inline]
fn read_all(env: Envelope<'_>) -> u64 {
    let h = env.header();
    let mut acc = h.seq() ^ h.exchange_ts_ns() ^ h.recv_ts_ns();
    acc ^= u64::from(h.stock_locate()) ^ u64::from(h.tracking_number());
    let sym = |s: &fb::Symbol| u64::from_le_bytes(s.chars().into());
    acc ^= match env.event_type() {
        Event::AddOrder => env.event_as_add_order().map_or(0, |e| {
            let b = e.body();
            b.order_reference_number()
                ^ u64::from(b.shares())
                ^ u64::from(b.price())
                ^ sym(b.stock())
                ^ u64::from(b.buy_sell_indicator().0)
        }),
        Event::AddOrderMpid => env.event_as_add_order_mpid().map_or(0, |e| {
            let b = e.body();
            b.order_reference_number()
                ^ u64::from(b.shares())
                ^ u64::from(b.price())
                ^ sym(b.stock())
                ^ u64::from(u32::from_le_bytes(b.attribution().chars().into()))
                ^ u64::from(b.buy_sell_indicator().0)
        }),
        Event::OrderDelete => env
            .event_as_order_delete()
            .map_or(0, |e| e.body().order_reference_number()),
        Event::OrderExecuted => env.event_as_order_executed().map_or(0, |e| {
            let b = e.body();
            b.order_reference_number() ^ b.match_number() ^ u64::from(b.executed_shares())
        }),
        Event::OrderCancel => env.event_as_order_cancel().map_or(0, |e| {
            let b = e.body();
            b.order_reference_number() ^ u64::from(b.cancelled_shares())
        }),
        Event::OrderReplace => env.event_as_order_replace().map_or(0, |e| {
            let b = e.body();
            b.original_order_reference_number()
                ^ b.new_order_reference_number()
                ^ u64::from(b.shares())
                ^ u64::from(b.price())
        }),
        Event::Trade => env.event_as_trade().map_or(0, |e| {
            let b = e.body();
            b.order_reference_number()
                ^ b.match_number()
                ^ u64::from(b.shares())
                ^ u64::from(b.price())
                ^ sym(b.stock())
                ^ u64::from(b.buy_sell_indicator().0)
        }),
        Event::MarketParticipantPosition => {
            env.event_as_market_participant_position().map_or(0, |e| {
                sym(e.stock())
                    ^ u64::from(u32::from_le_bytes(e.mpid().chars().into()))
                    ^ u64::from(e.primary_market_maker())
                    ^ u64::from(e.market_maker_mode())
                    ^ u64::from(e.market_participant_state())
            })
        }
        Event::StockDirectory => env.event_as_stock_directory().map_or(0, |e| {
            sym(e.stock()) ^ u64::from(e.round_lot_size()) ^ u64::from(e.market_category())
        }),
        Event::StockTradingAction => env
            .event_as_stock_trading_action()
            .map_or(0, |e| sym(e.stock()) ^ u64::from(e.trading_state().0)),
        Event::RegShoRestriction => env
            .event_as_reg_sho_restriction()
            .map_or(0, |e| sym(e.stock()) ^ u64::from(e.reg_sho_action())),
        other => u64::from(other.0),
    };
    acc
}

fn read(c: &mut Criterion) {
    // The normalized session, back to back, with each message's range.
    let mut all = Vec::new();
    let mut ranges = Vec::new();
    let mut norm = Normalizer::new();
    each_message(AAPL, |seq, m| {
        let msg = norm.normalize(m, seq, 1);
        ranges.push(all.len()..all.len() + msg.len());
        all.extend_from_slice(&msg);
    });
    assert_eq!(ranges.len() as u64, MESSAGES);

    let mut g = c.benchmark_group("read_aapl_10k");
    g.throughput(Throughput::Elements(MESSAGES));
    g.bench_function("read_verified", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for r in &ranges {
                let env = fb::read_verified(black_box(&all[r.clone()])).expect("valid");
                acc ^= read_all(env);
            }
            acc
        })
    });
    g.bench_function("read_trusted", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for r in &ranges {
                // SAFETY: every range holds one message our encoder built just above, and
                // `all` is not modified while it is read.
                let env = unsafe { fb::read_trusted(black_box(&all[r.clone()])) };
                acc ^= read_all(env);
            }
            acc
        })
    });
    g.finish();
}

/// The first 20,000 segments of the IEX DEEP sample.
fn deep_segments() -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/iex/deep10-2017-04-25.pcap.gz"
    );
    let mut r = mdbus_codecs::capture::open_capture(path).expect("the DEEP sample");
    let mut out = Vec::new();
    while out.len() < 20_000 {
        let d = r.next_datagram().expect("enough datagrams").expect("reads");
        out.push(d.payload.to_vec());
    }
    out
}

fn normalize_iex(c: &mut Criterion) {
    use mdbus_codecs::iex::message::decode_for;
    use mdbus_codecs::iex::normalize::Normalizer as IexNormalizer;
    use mdbus_codecs::iex::tp::{Protocol, Segment};

    let segments = deep_segments();
    let each = |f: &mut dyn FnMut(u64, &mdbus_codecs::iex::message::Message<'_>)| {
        for s in &segments {
            let seg = Segment::parse(black_box(s)).expect("a segment");
            let first = seg.first_seq();
            for (i, m) in seg.messages().enumerate() {
                let m = decode_for(Protocol::DEEP, m.expect("whole")).expect("a DEEP message");
                f(first + i as u64, &m);
            }
        }
    };
    let mut messages = 0u64;
    each(&mut |_, _| messages += 1);
    let mut g = c.benchmark_group("normalize_iex_deep");
    g.throughput(Throughput::Elements(messages));
    g.bench_function("mdbus/tp+decode", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            each(&mut |seq, m| {
                acc = acc.wrapping_add(seq).wrapping_add(u64::from(m.msg_type()));
            });
            acc
        })
    });
    let mut norm = IexNormalizer::new();
    g.bench_function("mdbus/tp+decode+normalize+encode", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            each(&mut |seq, m| {
                bytes += black_box(norm.normalize(m, seq, 1)).len();
            });
            bytes
        })
    });
    g.finish();
}

criterion_group!(benches, normalize, normalize_iex, read);
criterion_main!(benches);
