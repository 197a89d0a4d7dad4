//! The venue seam: what a market's feed is made of, as a small set of types the one
//! [`FeedPipeline`](crate::pipeline::FeedPipeline) is generic over.
//!
//! A [`Venue`] names its packet [`Framing`] (which sequencer reads its datagrams), decodes
//! one message (zero copy), says which instrument a message is about and which messages list
//! instruments (its directory), gives each message's type byte (the per-type counts of
//! `--book-summary`), and normalizes a message into an envelope of the venue-neutral schema
//! (stamped with its [`fb::Venue`] and instrument id). Dispatch is static: the pipeline is
//! monomorphized per venue, with no `dyn` and no allocation per message.
//!
//! Adding a venue:
//! 1. add its wire codecs under `codecs/src/<venue>/` (decode, normalize), sans-IO;
//! 2. add a folder `venue/<venue>/` here with a type implementing [`Venue`] over them, and a
//!    line in [`source_type_of`] for its normalized events;
//! 3. if it arrives in a framing other than MoldUDP64, add a [`Framing`] member and its
//!    sequencer (the socket driver and the replay pick the sequencer by it);
//! 4. `FeedPipeline::with_venue(YourVenue::default(), ...)` publishes it.
//!
//! Nasdaq TotalView-ITCH 5.0 over MoldUDP64 is the first implementation ([`Nasdaq`]); IEX's
//! TOPS, DEEP and DEEP+ over IEX-TP the second ([`Iex`]).

pub mod iex;
pub mod nasdaq;

use core::fmt;

use mdbus_codecs::fb::{self, Encoded, Encoder, EnvelopeFlags, EventSink, ToBytes};

pub use iex::Iex;
pub use mdbus_codecs::directory::{Directory, DirectoryFull, MAX_INSTRUMENTS, Symbol};
pub use nasdaq::Nasdaq;

/// How a venue's packets are framed and sequenced on the wire (and in captures).
///
/// Each framing has its sans-IO sequencer in `mdbus_codecs`; the socket driver and the replay
/// choose it by [`Venue::FRAMING`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Framing {
    /// MoldUDP64: session, sequence number and message count per packet; each message
    /// preceded by a 2-byte length ([`mdbus_codecs::moldudp64`], sequenced by
    /// [`mdbus_codecs::sequencer`]).
    MoldUdp64,
    /// IEX-TP v1: a 40-byte segment header (protocol, channel, session, stream offset, first
    /// sequence number, message count, send time); each message preceded by a 2-byte
    /// little-endian length ([`mdbus_codecs::iex::tp`]; a replay sequences it with its
    /// `Tracker`, the socket driver with [`IexFraming`](crate::net::iex::IexFraming) over the
    /// sequencer, for A/B arbitration).
    IexTp,
}

/// One market's feed: its framing, decoder, instrument directory and normalizer. See the
/// [module docs](self).
///
/// A value of the type is the per-feed state (the normalizer's encoder, a directory that
/// assigns instrument ids): one per [`FeedPipeline`](crate::pipeline::FeedPipeline). Every
/// per-message method is called on the hot path: none may allocate, lock or make a system
/// call (a directory may allocate when it learns a new instrument, which is rare).
pub trait Venue: fmt::Debug + Send + 'static {
    /// The market, as envelopes name it.
    const VENUE: fb::Venue;
    /// Short lowercase name, for logs and reports (`nasdaq`).
    const NAME: &'static str;
    /// How its packets are framed and sequenced.
    const FRAMING: Framing;

    /// A decoded message: a view of the borrowed bytes.
    type Message<'a>: fmt::Debug;
    /// Why bytes are not a message of the venue. Small and `Copy`: decoding never allocates.
    type DecodeError: Copy + fmt::Debug + fmt::Display + Eq + Send + Sync + 'static;

    /// Decodes the bytes of exactly one message (as the framing delimits it). Never panics.
    fn decode<'a>(&self, bytes: &'a [u8]) -> Result<Self::Message<'a>, Self::DecodeError>;

    /// The message's type byte as the venue's specification names it (ITCH `A`, `E`, ...):
    /// the key of the per-type counts.
    fn type_byte(msg: &Self::Message<'_>) -> u8;

    /// The type byte of the source message a normalized event of this venue came from;
    /// `None` for bus events (heartbeats, gap notices, book updates, end of session) and for
    /// kinds the venue does not publish.
    fn type_of_event(event: fb::Event) -> Option<u8>;

    /// Exchange timestamp of the message, nanoseconds since midnight of the trading day (the
    /// schema's clock: a venue stamping Unix time converts, and may keep what it worked out
    /// for the next message).
    fn exchange_ts_ns(&mut self, msg: &Self::Message<'_>) -> u64;

    /// The instrument id the message is about, in the venue's directory; 0 for market-wide
    /// messages. A venue that keys instruments on symbols assigns ids here (see
    /// [`Directory`]).
    fn instrument(&mut self, msg: &Self::Message<'_>) -> u32;

    /// The symbol a directory message lists (8 bytes, space-padded), under the id
    /// [`instrument`](Self::instrument) gives the same message; `None` for other messages.
    fn listing(msg: &Self::Message<'_>) -> Option<[u8; 8]>;

    /// Normalizes one message into `sink`, with this venue's encoder (a bus publisher writes
    /// the envelope straight into its ring): `seq` is its source sequence number,
    /// `recv_ts_ns` when it was received (ns since the Unix epoch). Every message of the
    /// venue has a normalized form (the schema grows a kind where one is missing), so this
    /// cannot fail. The envelope carries [`Self::VENUE`], the instrument id and the
    /// [flags](Self::set_flags).
    fn normalize_to<S: EventSink>(
        &mut self,
        msg: &Self::Message<'_>,
        seq: u64,
        recv_ts_ns: u64,
        sink: &mut S,
    ) -> S::Out<'_>;

    /// [`normalize_to`](Self::normalize_to) returning the envelope's bytes, borrowed from
    /// `self` until the next call.
    #[inline]
    fn normalize(&mut self, msg: &Self::Message<'_>, seq: u64, recv_ts_ns: u64) -> Encoded<'_> {
        self.normalize_to(msg, seq, recv_ts_ns, &mut ToBytes)
    }

    /// Sets the delivery flags stamped on every following envelope.
    fn set_flags(&mut self, flags: EnvelopeFlags);

    /// The delivery flags stamped on every envelope.
    fn flags(&self) -> EnvelopeFlags;

    /// The normalizer's encoder, to publish bus events (gap notices, heartbeats, end of
    /// session) with the same buffers.
    fn encoder(&mut self) -> &mut Encoder;
}

/// Whether a normalized event stands for a source message of some venue, as opposed to a
/// bus event (heartbeat, gap notice, book update, consolidated top, end of session) or a kind
/// newer than this code. Venue-neutral: it reads the event kind only.
#[inline]
pub fn is_source_event(event: fb::Event) -> bool {
    event.variant_name().is_some()
        && !matches!(
            event,
            fb::Event::NONE
                | fb::Event::Heartbeat
                | fb::Event::GapNotice
                | fb::Event::Bbo
                | fb::Event::PriceLevelUpdate
                | fb::Event::EndOfSession
                | fb::Event::ConsolidatedBbo
        )
}

/// The type byte of the source message a normalized event came from, by the venue the
/// envelope names: what per-type counts of normalized streams (recordings, book services)
/// key on. Envelopes written before the schema named a venue (`Unknown`) are Nasdaq's.
#[inline]
pub fn source_type_of(venue: fb::Venue, event: fb::Event) -> Option<u8> {
    match venue {
        fb::Venue::Nasdaq | fb::Venue::Unknown => Nasdaq::type_of_event(event),
        fb::Venue::Iex => Iex::type_of_event(event),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_events_are_the_kinds_the_venues_normalize_into_and_nothing_else() {
        for tag in 0..=u8::MAX {
            let e = fb::Event(tag);
            assert_eq!(
                is_source_event(e),
                Nasdaq::type_of_event(e).is_some() || Iex::type_of_event(e).is_some(),
                "{e:?}"
            );
            assert!(Nasdaq::type_of_event(e).is_none() || Iex::type_of_event(e).is_none());
            assert_eq!(source_type_of(fb::Venue::Iex, e), Iex::type_of_event(e));
            assert_eq!(
                source_type_of(fb::Venue::Unknown, e),
                Nasdaq::type_of_event(e)
            );
            assert_eq!(source_type_of(fb::Venue(999), e), None);
        }
    }
}
