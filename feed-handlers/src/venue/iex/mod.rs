//! IEX (MIC IEXG): TOPS 1.5/1.6, DEEP 1.0 and DEEP+ 1.0 over IEX-TP, the second [`Venue`].
//!
//! Framing, decoding and normalization are `mdbus_codecs::iex::{tp, message, normalize}`;
//! instruments are symbols, numbered in order of first sight by the normalizer's
//! [`Directory`](super::Directory) and listed by Security Directory (`D`) messages.

use mdbus_codecs::fb::{self, Encoder, EnvelopeFlags, EventSink};
use mdbus_codecs::iex::message::{self, DecodeError, Message};
use mdbus_codecs::iex::normalize::{self, Normalizer};
use mdbus_codecs::iex::tp::Protocol;

use super::{Framing, Venue};

/// An IEX feed: its normalizer (one reused encoder, the instrument directory) and, when
/// known, the feed's message protocol, whose message types alone it accepts.
///
/// ```
/// use mdbus_codecs::fb;
/// use mdbus_codecs::iex::tp::Protocol;
/// use mdbus_feed_handlers::venue::{Iex, Venue};
///
/// let mut m = [0u8; 18];
/// m[0] = b'E'; // security event
/// m[1] = b'O';
/// m[10..18].copy_from_slice(b"ZIEXT   ");
/// let mut iex = Iex::for_protocol(Protocol::DEEP);
/// let msg = iex.decode(&m)?;
/// assert_eq!((Iex::type_byte(&msg), iex.instrument(&msg)), (b'E', 1));
/// let env = iex.normalize(&msg, 7, 0).envelope();
/// assert_eq!((env.venue(), env.instrument()), (fb::Venue::Iex, 1));
/// assert_eq!(Iex::type_of_event(env.event_type()), Some(b'E'));
/// assert!(iex.decode(&[b'Q'; 42]).is_err()); // a TOPS quote update is not DEEP's
/// # Ok::<(), mdbus_codecs::iex::message::DecodeError>(())
/// ```
#[derive(Debug, Default)]
pub struct Iex {
    normalizer: Normalizer,
    protocol: Option<Protocol>,
}

impl Iex {
    /// A feed of `protocol` (TOPS, DEEP or DEEP+): messages of other types are refused.
    pub fn for_protocol(protocol: Protocol) -> Self {
        Iex {
            normalizer: Normalizer::new(),
            protocol: Some(protocol),
        }
    }

    /// The feed's message protocol, if one was given.
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// The normalizer (and its directory, [`Normalizer::directory`]).
    pub fn normalizer(&mut self) -> &mut Normalizer {
        &mut self.normalizer
    }
}

impl Venue for Iex {
    const VENUE: fb::Venue = fb::Venue::Iex;
    const NAME: &'static str = "iex";
    const FRAMING: Framing = Framing::IexTp;

    type Message<'a> = Message<'a>;
    type DecodeError = DecodeError;

    #[inline]
    fn decode<'a>(&self, bytes: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        match self.protocol {
            Some(p) => message::decode_for(p, bytes),
            None => message::decode(bytes),
        }
    }

    #[inline]
    fn type_byte(msg: &Message<'_>) -> u8 {
        msg.msg_type()
    }

    #[inline]
    fn type_of_event(event: fb::Event) -> Option<u8> {
        normalize::type_of_event(event)
    }

    #[inline]
    fn exchange_ts_ns(&mut self, msg: &Message<'_>) -> u64 {
        self.normalizer.exchange_ts_ns(msg)
    }

    #[inline]
    fn instrument(&mut self, msg: &Message<'_>) -> u32 {
        self.normalizer.instrument(msg)
    }

    #[inline]
    fn listing(msg: &Message<'_>) -> Option<[u8; 8]> {
        match msg {
            Message::SecurityDirectory(d) => Some(d.symbol()),
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
    use mdbus_codecs::capture::open_capture;
    use mdbus_codecs::iex::tp::Tracker;

    const DEEP_PLUS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../codecs/testdata/iex/deepplus-all-message-types.pcap"
    );

    #[test]
    fn every_message_of_a_real_capture_names_its_type_instrument_and_listing() {
        let mut iex = Iex::for_protocol(Protocol::DEEP_PLUS);
        let mut r = open_capture(DEEP_PLUS).expect("open");
        let mut tracker = Tracker::new();
        let (mut n, mut listings, mut directories) = (0, 0, 0);
        while let Some(d) = r.next_datagram() {
            let d = d.expect("reads");
            let h = tracker.handle(d.payload).expect("a segment");
            for (seq, bytes) in h.messages() {
                let m = iex.decode(bytes).expect("decodes");
                let instrument = iex.instrument(&m);
                let (t, ts, listed) =
                    (Iex::type_byte(&m), iex.exchange_ts_ns(&m), Iex::listing(&m));
                let env = iex.normalize(&m, seq, 9).envelope();
                assert_eq!(Iex::type_of_event(env.event_type()), Some(t));
                assert_eq!(
                    (env.venue(), env.instrument()),
                    (fb::Venue::Iex, instrument)
                );
                assert_eq!(env.header().exchange_ts_ns(), ts);
                assert!(ts < 86_400_000_000_000);
                if let Some(sym) = listed {
                    listings += 1;
                    let d = env
                        .event_as_iex_security_directory()
                        .expect("a listing is a D");
                    assert_eq!(d.symbol().0, sym);
                    assert_eq!(iex.normalizer().directory().id_of(&sym), Some(instrument));
                }
                directories += usize::from(t == b'D');
                n += 1;
            }
        }
        assert_eq!(n, 211);
        assert_eq!(listings, directories);
        assert!(!iex.normalizer().directory().is_empty());
    }

    #[test]
    fn each_feed_refuses_the_other_feeds_types() {
        let mut q = [0u8; 42];
        q[0] = b'Q';
        assert!(Iex::default().decode(&q).is_ok());
        assert!(Iex::for_protocol(Protocol::TOPS).decode(&q).is_ok());
        assert_eq!(
            Iex::for_protocol(Protocol::DEEP).decode(&q).err(),
            Some(DecodeError::NotInProtocol {
                msg_type: b'Q',
                protocol: Protocol::DEEP
            })
        );
        assert_eq!(Iex::default().decode(&[]).err(), Some(DecodeError::Empty));
    }
}
