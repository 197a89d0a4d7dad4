//! Nasdaq TotalView-ITCH 5.0 over MoldUDP64: the first [`Venue`].
//!
//! Decoding and normalization are `mdbus_codecs::nasdaq::{itch, normalize}`; instruments are
//! the stock locate codes of the day, listed by Stock Directory (`R`) messages.

use mdbus_codecs::fb::{self, Encoder, EnvelopeFlags, EventSink};
use mdbus_codecs::nasdaq::itch::{self, DecodeError, Message};
use mdbus_codecs::nasdaq::normalize::Normalizer;

use super::{Framing, Venue};

/// Nasdaq TotalView-ITCH 5.0 (MIC XNAS), carried in MoldUDP64: its per-feed state is the
/// normalizer (one reused encoder).
///
/// ```
/// use mdbus_codecs::fb;
/// use mdbus_codecs::nasdaq::itch::OrderDeleteFields;
/// use mdbus_feed_handlers::venue::{Nasdaq, Venue};
///
/// let wire = OrderDeleteFields { stock_locate: 13, tracking_number: 0, timestamp: 5, order_reference_number: 42 }
///     .to_bytes()?;
/// let mut nasdaq = Nasdaq::default();
/// let msg = nasdaq.decode(&wire)?;
/// assert_eq!((Nasdaq::type_byte(&msg), nasdaq.instrument(&msg)), (b'D', 13));
/// let env = nasdaq.normalize(&msg, 7, 0).envelope();
/// assert_eq!((env.venue(), env.instrument()), (fb::Venue::Nasdaq, 13));
/// assert_eq!(Nasdaq::type_of_event(env.event_type()), Some(b'D'));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct Nasdaq {
    normalizer: Normalizer,
}

impl Nasdaq {
    /// The normalizer (for callers that normalize decoded messages themselves).
    pub fn normalizer(&mut self) -> &mut Normalizer {
        &mut self.normalizer
    }
}

impl Venue for Nasdaq {
    const VENUE: fb::Venue = fb::Venue::Nasdaq;
    const NAME: &'static str = "nasdaq";
    const FRAMING: Framing = Framing::MoldUdp64;

    type Message<'a> = Message<'a>;
    type DecodeError = DecodeError;

    #[inline]
    fn decode<'a>(&self, bytes: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        itch::decode(bytes)
    }

    #[inline]
    fn type_byte(msg: &Message<'_>) -> u8 {
        msg.msg_type()
    }

    #[inline]
    fn type_of_event(event: fb::Event) -> Option<u8> {
        let t = match event {
            fb::Event::SystemEvent => b'S',
            fb::Event::StockDirectory => b'R',
            fb::Event::StockTradingAction => b'H',
            fb::Event::RegShoRestriction => b'Y',
            fb::Event::MarketParticipantPosition => b'L',
            fb::Event::MwcbDeclineLevel => b'V',
            fb::Event::MwcbStatus => b'W',
            fb::Event::IpoQuotingPeriodUpdate => b'K',
            fb::Event::LuldAuctionCollar => b'J',
            fb::Event::OperationalHalt => b'h',
            fb::Event::AddOrder => b'A',
            fb::Event::AddOrderMpid => b'F',
            fb::Event::OrderExecuted => b'E',
            fb::Event::OrderExecutedWithPrice => b'C',
            fb::Event::OrderCancel => b'X',
            fb::Event::OrderDelete => b'D',
            fb::Event::OrderReplace => b'U',
            fb::Event::Trade => b'P',
            fb::Event::CrossTrade => b'Q',
            fb::Event::BrokenTrade => b'B',
            fb::Event::NetOrderImbalanceIndicator => b'I',
            fb::Event::RetailPriceImprovementIndicator => b'N',
            fb::Event::DirectListingPriceDiscovery => b'O',
            _ => return None,
        };
        Some(t)
    }

    #[inline]
    fn exchange_ts_ns(&mut self, msg: &Message<'_>) -> u64 {
        msg.timestamp()
    }

    #[inline]
    fn instrument(&mut self, msg: &Message<'_>) -> u32 {
        u32::from(msg.stock_locate())
    }

    #[inline]
    fn listing(msg: &Message<'_>) -> Option<[u8; 8]> {
        match msg {
            Message::StockDirectory(d) => Some(d.stock()),
            _ => None,
        }
    }

    #[inline(always)]
    fn normalize_to<S: EventSink>(
        &mut self,
        msg: &Message<'_>,
        seq: u64,
        recv_ts_ns: u64,
        sink: &mut S,
    ) -> S::Out<'_> {
        self.normalizer.normalize_to(msg, seq, recv_ts_ns, sink)
    }

    fn set_flags(&mut self, flags: EnvelopeFlags) {
        self.normalizer.set_flags(flags);
    }

    fn flags(&self) -> EnvelopeFlags {
        self.normalizer.flags()
    }

    fn encoder(&mut self) -> &mut Encoder {
        self.normalizer.encoder()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdbus_codecs::nasdaq::itch::Stream;

    const AAPL: &[u8] = include_bytes!("../../../../codecs/testdata/itch/aapl-2020-01-30-10k.itch");

    #[test]
    fn every_message_of_a_real_session_names_its_type_instrument_and_listing_in_its_envelope() {
        let mut nasdaq = Nasdaq::default();
        let (mut listings, mut n) = (0, 0);
        for (i, (_, m)) in Stream::new(AAPL).enumerate() {
            let m = m.expect("the bundled session decodes");
            let decoded = nasdaq.decode(m.as_bytes()).expect("decodes again");
            let instrument = nasdaq.instrument(&decoded);
            let listed = Nasdaq::listing(&decoded);
            let (t, ts) = (Nasdaq::type_byte(&decoded), nasdaq.exchange_ts_ns(&decoded));
            let env = nasdaq.normalize(&decoded, i as u64 + 1, 9).envelope();
            assert_eq!(Nasdaq::type_of_event(env.event_type()), Some(t));
            assert_eq!(env.venue(), fb::Venue::Nasdaq);
            assert_eq!(env.instrument(), instrument);
            assert_eq!(instrument, u32::from(env.header().stock_locate()));
            assert_eq!(env.header().exchange_ts_ns(), ts);
            if let Some(stock) = listed {
                listings += 1;
                let d = env.event_as_stock_directory().expect("a listing is an R");
                assert_eq!(d.stock().0, stock);
            }
            n += 1;
        }
        assert_eq!(n, 10_000);
        assert!(listings > 0);
    }

    #[test]
    fn bad_bytes_are_a_decode_error() {
        let nasdaq = Nasdaq::default();
        assert_eq!(nasdaq.decode(&[]).err(), Some(DecodeError::Empty));
        assert!(matches!(
            nasdaq.decode(b"A"),
            Err(DecodeError::Truncated { msg_type: b'A', .. })
        ));
        assert!(nasdaq.decode(&[0xFF; 40]).is_err());
    }

    #[test]
    fn bus_events_have_no_source_type() {
        for e in [
            fb::Event::Heartbeat,
            fb::Event::GapNotice,
            fb::Event::Bbo,
            fb::Event::PriceLevelUpdate,
            fb::Event::EndOfSession,
            fb::Event(250),
        ] {
            assert_eq!(Nasdaq::type_of_event(e), None, "{e:?}");
        }
    }
}

/// What the book service derives from a Nasdaq feed names the venue and instrument of the
/// message it came from.
#[cfg(test)]
mod derived_tests {
    use mdbus_bus::{Bus, SubscribeOptions};
    use mdbus_codecs::fb;
    use mdbus_codecs::nasdaq::itch::Stream;

    use super::{Nasdaq, Venue};
    use crate::book::BookConfig;
    use crate::bookstream::{BookService, BookServiceConfig, output_ring};

    const AAPL: &[u8] = include_bytes!("../../../../codecs/testdata/itch/aapl-2020-01-30-10k.itch");

    #[test]
    fn book_updates_trades_and_bbos_carry_the_venue_and_instrument_of_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let config = BookServiceConfig {
            book: BookConfig {
                max_orders: 4096,
                max_instruments: 64,
                levels_per_side_hint: 256,
            },
            output: output_ring(),
            publish_levels: true,
            ..BookServiceConfig::default()
        };
        let mut svc = BookService::new(&bus, "aapl", &config).unwrap();
        let opts = SubscribeOptions::default();
        let mut outs = [
            bus.subscriber("aapl.book", &opts).unwrap(),
            bus.subscriber("aapl.levels", &opts).unwrap(),
        ];
        let mut nasdaq = Nasdaq::default();
        let mut locates = std::collections::BTreeSet::new();
        let mut seen = 0u64;
        for (i, (_, m)) in Stream::new(AAPL).enumerate() {
            let m = m.unwrap();
            let seq = i as u64 + 1;
            let env = nasdaq.normalize(&m, seq, 0).envelope();
            if Nasdaq::listing(&m).is_none() && m.stock_locate() != 0 {
                locates.insert(u32::from(m.stock_locate()));
            }
            svc.handle(&env);
            for sub in &mut outs {
                while sub
                    .poll_event(|e| {
                        let out = e.envelope();
                        assert_eq!(out.venue(), fb::Venue::Nasdaq, "{out:?}");
                        assert_eq!(out.header().seq(), seq, "{out:?}");
                        assert_eq!(
                            out.instrument(),
                            u32::from(m.stock_locate()),
                            "{out:?} derived from {m:?}"
                        );
                        seen += 1;
                    })
                    .unwrap()
                {}
            }
        }
        assert!(seen > 1_000, "{seen} derived events");
        assert_eq!(
            locates.len(),
            1,
            "one instrument in the session: {locates:?}"
        );
    }
}
