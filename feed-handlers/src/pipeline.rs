//! The step shared by the live handler and replay: decode a venue's message, normalize it into
//! a FlatBuffers envelope, publish it on the bus.
//!
//! A [`FeedPipeline`] is generic over the [`Venue`] whose messages it reads ([`Nasdaq`] unless
//! named: `FeedPipeline::new` builds that one, [`FeedPipeline::with_venue`] any other). It owns
//! the venue's state (its normalizer: one reused encoder) and the bus [`Publisher`]s of its
//! streams: one stream for the whole feed, or several partitioned by instrument-id range
//! ([`FeedPipeline::partitioned`]). Per message it decodes (zero copy),
//! encodes into the normalizer's reused buffer and copies the finished envelope into the ring
//! with [`Publisher::publish_envelope`]: one copy of at most
//! [`MAX_ENCODED_LEN`](mdbus_codecs::fb::MAX_ENCODED_LEN) bytes, and no allocation, lock or
//! system call. (The encoder does not build into a caller's buffer of a length known in
//! advance, which a ring claim needs, so the envelope is copied rather than encoded in place.)
//!
//! A lossless stream whose subscriber is a full ring behind refuses a record
//! ([`PublishError::BackPressured`]): the pipeline then retries it, spinning a little and then
//! yielding the cpu, for at most the [back-pressure timeout](FeedPipeline::set_back_pressure_timeout)
//! ([`DEFAULT_BACK_PRESSURE_TIMEOUT`] unless set; a replay waits as long as it takes). Every
//! refused attempt is counted ([`PipelineStats::back_pressured`]). A record still refused when
//! the time is up starts a *stall* ([`PipelineStats::stalls`]): it and every following record
//! of that stream are given up without waiting (counted in [`PipelineStats::dropped`] and
//! [`PipelineStats::publish_errors`], source messages in [`PipelineStats::lost`], returned as
//! an error), so a stopped subscriber costs the feed one timeout, not one per message. Once the
//! ring takes records again, one lost gap notice for the source sequence numbers given up
//! goes out before the next record ([`PipelineStats::drop_notices`]); one still pending when
//! the session closes is tried once more by [`FeedPipeline::finish_drop_notices`], else
//! counted ([`PipelineStats::notices_unpublished`]).
//!
//! Nothing is lost silently: besides the normalized messages a stream carries
//! * **gap notices** ([`FeedPipeline::on_gap`]) for source messages that are missing, with
//!   `recoverable` saying whether they are still on their way (being re-requested) or lost;
//!   a message that does not decode is published as a lost one-message gap, since
//!   subscribers will never see it;
//! * an **end of session** event ([`FeedPipeline::on_end_of_session`]).
//!
//! ```
//! use mdbus_bus::{Bus, StreamConfig, SubscribeOptions};
//! use mdbus_codecs::nasdaq::itch::OrderDeleteFields;
//! use mdbus_feed_handlers::pipeline::FeedPipeline;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let bus = Bus::with_root(dir.path())?;
//! let mut pipeline = FeedPipeline::new(&bus, "itch", &StreamConfig::default())?;
//! let mut sub = bus.subscriber("itch", &SubscribeOptions::default())?;
//!
//! let wire = OrderDeleteFields { stock_locate: 13, tracking_number: 0, timestamp: 1, order_reference_number: 42 }
//!     .to_bytes()?;
//! pipeline.on_message(7, &wire, 1_580_394_600_000_000_000)?;
//! pipeline.on_gap(8, 3, true, 1_580_394_600_000_000_001)?;
//!
//! let mut seqs = Vec::new();
//! while sub.poll_event(|e| seqs.push(e.envelope().header().seq()))? {}
//! assert_eq!(seqs, [7, 8]);
//! assert_eq!(pipeline.stats().gap_notices, 1);
//! # Ok(())
//! # }
//! ```

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use mdbus_bus::{Bus, BusError, PublishError, Publisher, StreamConfig};
use mdbus_codecs::fb::{
    self, Encoder, EndOfSessionFields, EnvelopeFlags, EventFields, GapNoticeFields, GapScope,
    HeaderFields, HeartbeatFields,
};
use mdbus_codecs::nasdaq::itch::DecodeError;

use crate::venue::{Nasdaq, Venue};

/// Why one message was not published. Small and `Copy`; counted in [`PipelineStats`] too, so
/// callers may ignore it. `E` is the venue's [decode error](Venue::DecodeError) (ITCH's unless
/// named).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError<E: DecodeErrorBound = DecodeError> {
    /// The source message is not a valid message of the venue (published as a lost
    /// one-message gap).
    #[error("source message {seq}: {error}")]
    Decode {
        /// Its source sequence number.
        seq: u64,
        /// What the decoder found.
        error: E,
    },
    /// A stream refused the envelope (a lossless subscriber is a full ring behind, or the
    /// stream's records are too small).
    #[error("publishing source message {seq}: {error}")]
    Publish {
        /// Source sequence number of what was being published.
        seq: u64,
        /// What the ring said.
        error: PublishError,
    },
}

/// What a [`PipelineError`] needs of a venue's decode error (every
/// [`Venue::DecodeError`] is one).
pub trait DecodeErrorBound: Copy + std::fmt::Debug + std::fmt::Display {}
impl<E: Copy + std::fmt::Debug + std::fmt::Display> DecodeErrorBound for E {}

/// A [`FeedPipeline`] that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum PipelineSetupError {
    /// A stream could not be created.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The partitions are empty, more than 255, or overlap.
    #[error("bad partitions: {0}")]
    Partitions(String),
}

/// One stream of a partitioned feed: the instruments whose id lies in `locates`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// The bus stream name.
    pub stream: String,
    /// Instrument ids published on it (for Nasdaq the stock locates; ids past `u16::MAX`
    /// are routed to no partition).
    pub locates: RangeInclusive<u16>,
}

/// Counters of a [`FeedPipeline`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Source messages handed to [`FeedPipeline::on_message`].
    pub messages: u64,
    /// Records published, on all streams (gap notices and end of session included).
    pub published: u64,
    /// Source messages that did not decode.
    pub decode_errors: u64,
    /// Records a stream refused for good (too large, or given up on a stalled lossless
    /// stream): not published.
    pub publish_errors: u64,
    /// Publish attempts a lossless subscriber held back.
    pub back_pressured: u64,
    /// Gap notices published (once per notice, whatever the number of streams).
    pub gap_notices: u64,
    /// Source messages lost: announced by gap notices (`recoverable: false`), or given up on
    /// a stalled lossless stream (once each, whatever the number of streams).
    pub lost: u64,
    /// Messages whose instrument id lies in no partition (published on the first).
    pub unrouted: u64,
    /// Waits for a full lossless stream that ran out of time: each starts a stall, during
    /// which that stream's records are given up without waiting.
    pub stalls: u64,
    /// Records given up on a stalled lossless stream (per stream; also in `publish_errors`).
    pub dropped: u64,
    /// Lost gap notices published, one per stall and stream, for the records given up (not
    /// in `gap_notices`).
    pub drop_notices: u64,
    /// Drop notices still refused when the session closed (or too large for the stream):
    /// their records are only counted.
    pub notices_unpublished: u64,
}

/// Sentinel of the routing table: the locate lies in no partition.
const NO_ROUTE: u8 = u8::MAX;

/// How long a back-pressured record is retried before it is given up and the stream stalls,
/// unless set with [`FeedPipeline::set_back_pressure_timeout`].
pub const DEFAULT_BACK_PRESSURE_TIMEOUT: Duration = Duration::from_millis(100);

/// Retries before a back-pressured publish starts yielding the cpu.
const BACK_PRESSURE_SPINS: u32 = 64;

/// Work a feed thread does while it waits, so that another stage can share its thread: a
/// [`FeedPipeline`] runs it in every turn of a back-pressure wait (instead of spinning or
/// yielding the cpu) and after every [`IDLE_WORK_EVERY`] messages, and a replay's pacer runs
/// it while it waits for a message's time. Keep each call short (a bounded turn of the other
/// stage: it delays the feed by as much). It returns whether it has more to do: `false` once
/// the other stage is finished (a replay runs it until then after the end of its session,
/// before it closes its stream).
pub type IdleWork = Box<dyn FnMut() -> bool + Send>;

/// Messages a [`FeedPipeline`] publishes between two calls of its [`IdleWork`] when it never
/// waits. A turn of the other stage costs something beyond the records it handles (whatever
/// the closure does to start, and the last look at each input, which finds it empty, on a
/// cache line another cpu is about to write): turns every 256 messages instead of every 64
/// made the on-feed pipeline of `mdbus bench replay` 5-20 % faster on a 2-cpu virtual host.
/// When the feed waits (for room, or at a paced speed), the work runs in every turn of the
/// wait whatever this is.
pub const IDLE_WORK_EVERY: u64 = 256;

/// [`Publisher::hand_off`] on each of `publishers`.
fn hand_off_all(publishers: &mut [Publisher]) {
    publishers.iter_mut().for_each(Publisher::hand_off);
}

/// The optional [`IdleWork`] (a `Debug` wrapper).
#[derive(Default)]
pub(crate) struct Idle(pub(crate) Option<IdleWork>);

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Idle(set)"
        } else {
            "Idle(none)"
        })
    }
}

impl Idle {
    /// Runs the work, if any; whether there was some.
    #[inline]
    pub(crate) fn run(&mut self) -> bool {
        match &mut self.0 {
            Some(work) => {
                work();
                true
            }
            None => false,
        }
    }

    /// Runs the work until it has nothing more to do.
    pub(crate) fn finish(&mut self) {
        if let Some(work) = &mut self.0 {
            while work() {
                std::hint::spin_loop();
            }
        }
    }
}

/// Decode -> normalize -> publish, shared by the live handler and replay, for the messages of
/// venue `V`. See the [module docs](self).
#[derive(Debug)]
pub struct FeedPipeline<V: Venue = Nasdaq> {
    venue: V,
    /// Instrument id -> index into the publishers; empty for a single stream.
    route: Box<[u8]>,
    out: Out,
    /// Turns of the idle work run between messages (not in a wait).
    idle_turns: u64,
}

impl FeedPipeline<Nasdaq> {
    /// A Nasdaq ITCH pipeline publishing the whole feed on stream `stream`.
    pub fn new(bus: &Bus, stream: &str, config: &StreamConfig) -> Result<Self, PipelineSetupError> {
        Self::with_venue(Nasdaq::default(), bus, stream, config)
    }

    /// A Nasdaq ITCH pipeline publishing each partition's instruments on its own stream; see
    /// [`partitioned_with_venue`](Self::partitioned_with_venue).
    pub fn partitioned(
        bus: &Bus,
        partitions: &[Partition],
        config: &StreamConfig,
    ) -> Result<Self, PipelineSetupError> {
        Self::partitioned_with_venue(Nasdaq::default(), bus, partitions, config)
    }
}

impl<V: Venue> FeedPipeline<V> {
    /// A pipeline for `venue`'s messages publishing the whole feed on stream `stream`.
    pub fn with_venue(
        venue: V,
        bus: &Bus,
        stream: &str,
        config: &StreamConfig,
    ) -> Result<Self, PipelineSetupError> {
        let publisher = bus.publisher(stream, config)?;
        Ok(Self::from_parts(venue, vec![publisher], Box::default()))
    }

    /// A pipeline for `venue`'s messages publishing each partition's instruments on its own
    /// stream. Market-wide messages (instrument 0: system events, MWCB levels) and gap notices
    /// go to every stream; an instrument outside every range goes to the first partition and
    /// is counted in [`PipelineStats::unrouted`].
    pub fn partitioned_with_venue(
        venue: V,
        bus: &Bus,
        partitions: &[Partition],
        config: &StreamConfig,
    ) -> Result<Self, PipelineSetupError> {
        if partitions.is_empty() || partitions.len() >= usize::from(NO_ROUTE) {
            return Err(PipelineSetupError::Partitions(format!(
                "{} partitions given, 1 to {} allowed",
                partitions.len(),
                NO_ROUTE - 1
            )));
        }
        let mut route = vec![NO_ROUTE; 1 << 16].into_boxed_slice();
        for (i, p) in partitions.iter().enumerate() {
            for locate in p.locates.clone() {
                let slot = &mut route[usize::from(locate)];
                if *slot != NO_ROUTE {
                    return Err(PipelineSetupError::Partitions(format!(
                        "instrument {locate} is in both {:?} and {:?}",
                        partitions[usize::from(*slot)].stream,
                        p.stream
                    )));
                }
                // `i` < 255, checked above.
                *slot = i as u8;
            }
        }
        let publishers = partitions
            .iter()
            .map(|p| bus.publisher(&p.stream, config))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_parts(venue, publishers, route))
    }

    fn from_parts(venue: V, publishers: Vec<Publisher>, route: Box<[u8]>) -> Self {
        FeedPipeline {
            out: Out {
                stalls: vec![Stall::default(); publishers.len()].into_boxed_slice(),
                publishers,
                notice_enc: Encoder::new(),
                flags: venue.flags(),
                venue: V::VENUE,
                last_exchange_ts: 0,
                timeout: Some(DEFAULT_BACK_PRESSURE_TIMEOUT),
                stats: PipelineStats::default(),
                idle: Idle::default(),
            },
            venue,
            route,
            idle_turns: 0,
        }
    }

    /// The venue's state (its normalizer, its directory).
    pub fn venue(&self) -> &V {
        &self.venue
    }

    /// The venue's state, to decode with it (see [`on_decoded`](Self::on_decoded)).
    pub fn venue_mut(&mut self) -> &mut V {
        &mut self.venue
    }

    /// Sets (or clears) the work this pipeline does while it waits; see [`IdleWork`].
    pub fn set_idle_work(&mut self, work: Option<IdleWork>) {
        self.out.idle = Idle(work);
    }

    /// Runs the [`IdleWork`], if any, until it has nothing more to do.
    pub fn finish_idle_work(&mut self) {
        self.out.idle.finish();
    }

    #[cfg(test)]
    pub(crate) fn idle_mut(&mut self) -> &mut Idle {
        &mut self.out.idle
    }

    /// Hands off what every stream published since the last call (see
    /// [`Publisher::hand_off`]): call it when a burst of messages ends and the thread is about
    /// to wait for the next.
    pub fn hand_off(&mut self) {
        hand_off_all(&mut self.out.publishers);
    }

    /// The idle work, and [`hand_off`](Self::hand_off) to run before a wait, borrowed together.
    pub(crate) fn wait_parts(&mut self) -> (&mut Idle, impl FnOnce() + '_) {
        let Out {
            idle, publishers, ..
        } = &mut self.out;
        (idle, move || hand_off_all(publishers))
    }

    /// Sets the delivery flags stamped on every following envelope (e.g.
    /// [`EnvelopeFlags::Replayed`] for a capture).
    pub fn set_flags(&mut self, flags: EnvelopeFlags) {
        self.venue.set_flags(flags);
        self.out.flags = flags;
    }

    /// How long a record refused by a back-pressuring lossless subscriber is retried before
    /// it is given up (counted and returned as an error), once per stall: while the stall
    /// lasts, records are given up without waiting (see the [module docs](self)); `None`
    /// retries until it is taken. [`DEFAULT_BACK_PRESSURE_TIMEOUT`] until set.
    pub fn set_back_pressure_timeout(&mut self, timeout: Option<Duration>) {
        self.out.timeout = timeout;
    }

    /// The publishers, in partition order.
    pub fn publishers(&self) -> &[Publisher] {
        &self.out.publishers
    }

    /// The counters so far.
    pub fn stats(&self) -> PipelineStats {
        self.out.stats
    }

    /// Times the pipeline has paused between messages so far: publishes refused by a
    /// back-pressuring subscriber (each followed by a wait unless the stream is stalled) and
    /// turns of its idle work. A receive stamp taken before a call that raised it is older by
    /// the time paused.
    #[inline]
    pub fn pauses(&self) -> u64 {
        self.out.stats.back_pressured + self.idle_turns
    }

    /// Stamps the liveness heartbeat of every stream (a clock read, no system call); call it
    /// from idle loops.
    pub fn heartbeat(&self) {
        for p in &self.out.publishers {
            p.heartbeat();
        }
    }

    /// Decodes, normalizes and publishes source message `seq` (the framing's sequence number
    /// or the position in a capture), received at `recv_ts_ns` (ns since the Unix epoch).
    ///
    /// A message that does not decode is counted and published as a lost one-message gap;
    /// either way the pipeline goes on with the next message.
    #[inline]
    pub fn on_message(
        &mut self,
        seq: u64,
        msg: &[u8],
        recv_ts_ns: u64,
    ) -> Result<(), PipelineError<V::DecodeError>> {
        match self.venue.decode(msg) {
            Ok(decoded) => self.on_decoded(seq, &decoded, recv_ts_ns),
            Err(error) => {
                self.out.stats.messages += 1;
                self.undecodable(seq, error, recv_ts_ns)
            }
        }
    }

    /// [`on_message`](Self::on_message) for a message the caller has already decoded (a
    /// replay decodes each message once to filter it, and hands the view on).
    #[inline]
    pub fn on_decoded(
        &mut self,
        seq: u64,
        decoded: &V::Message<'_>,
        recv_ts_ns: u64,
    ) -> Result<(), PipelineError<V::DecodeError>> {
        self.out.stats.messages += 1;
        self.out.last_exchange_ts = self.venue.exchange_ts_ns(decoded);
        let target = if self.route.is_empty() {
            Target::One(0)
        } else {
            self.route_of(decoded)
        };
        let result = match target {
            // The common case: one stream that owes nothing. The envelope is written straight
            // into its ring; only a refusal is encoded aside, to be retried.
            Target::One(i) if self.out.clear(i) => {
                let publisher = &mut self.out.publishers[i];
                let outcome = match self.venue.normalize_to(decoded, seq, recv_ts_ns, publisher) {
                    Ok(_) => Ok(()),
                    Err(PublishError::BackPressured) => {
                        let encoded = self.venue.normalize(decoded, seq, recv_ts_ns);
                        self.out.wait_or_give_up(i, seq, 1, encoded.as_bytes())
                    }
                    Err(error) => Err(error),
                };
                self.out.count(seq, outcome)
            }
            _ => {
                let encoded = self.venue.normalize(decoded, seq, recv_ts_ns);
                self.out
                    .publish(target, seq, 1, recv_ts_ns, encoded.as_bytes())
            }
        };
        if let Err(PipelineError::Publish {
            error: PublishError::BackPressured,
            ..
        }) = result
        {
            // Given up on a stalled stream: its subscribers will read a gap notice instead.
            self.out.stats.lost = self.out.stats.lost.saturating_add(1);
        }
        if self.out.stats.messages.is_multiple_of(IDLE_WORK_EVERY) && self.out.idle.run() {
            self.idle_turns += 1;
        }
        result
    }

    /// The partition of a message's instrument (a partitioned pipeline only).
    #[inline]
    fn route_of(&mut self, decoded: &V::Message<'_>) -> Target {
        let instrument = self.venue.instrument(decoded);
        if instrument == 0 {
            return Target::All;
        }
        let slot = usize::try_from(instrument)
            .ok()
            .and_then(|i| self.route.get(i).copied());
        match slot {
            None | Some(NO_ROUTE) => {
                self.out.stats.unrouted += 1;
                Target::One(0)
            }
            Some(i) => Target::One(usize::from(i)),
        }
    }

    #[cold]
    fn undecodable(
        &mut self,
        seq: u64,
        error: V::DecodeError,
        recv_ts_ns: u64,
    ) -> Result<(), PipelineError<V::DecodeError>> {
        self.out.stats.decode_errors += 1;
        // Subscribers will never see it: say so on the stream.
        self.on_gap(seq, 1, false, recv_ts_ns)?;
        Err(PipelineError::Decode { seq, error })
    }

    /// Publishes a gap notice on every stream: source messages `first .. first + count` are
    /// missing; `recoverable` says whether they are being re-requested (and may still come)
    /// or are lost. The envelope's header carries `first` as its sequence number,
    /// `recv_ts_ns`, the venue, instrument 0 (every instrument), and the exchange timestamp of
    /// the latest message seen.
    pub fn on_gap(
        &mut self,
        first: u64,
        count: u64,
        recoverable: bool,
        recv_ts_ns: u64,
    ) -> Result<(), PipelineError<V::DecodeError>> {
        self.out.stats.gap_notices += 1;
        if !recoverable {
            self.out.stats.lost = self.out.stats.lost.saturating_add(count);
        }
        let notice = GapNoticeFields {
            first_missing_seq: first,
            count,
            recoverable,
            scope: GapScope::Source,
        };
        // A lost gap's notice given up on a stalled stream: the drop notice covers the gap.
        let span = if recoverable { 0 } else { count };
        self.publish_everywhere(first, span, recv_ts_ns, &notice)
    }

    /// Publishes an end-of-session event on every stream; `next_seq` is one past the last
    /// source message.
    pub fn on_end_of_session(
        &mut self,
        next_seq: u64,
        recv_ts_ns: u64,
    ) -> Result<(), PipelineError<V::DecodeError>> {
        self.out.unstall_pending();
        self.publish_everywhere(next_seq, 0, recv_ts_ns, &EndOfSessionFields)
    }

    /// Publishes the gap notices still pending for records given up on stalled streams,
    /// waiting for each at most the back-pressure timeout; one still refused is given up and
    /// counted in [`PipelineStats::notices_unpublished`]. Call it when the session closes.
    pub fn finish_drop_notices(&mut self, recv_ts_ns: u64) {
        self.out.unstall_pending();
        for i in 0..self.out.publishers.len() {
            if !self.out.flush(i, recv_ts_ns) {
                self.out.stalls[i].pending = None;
                self.out.stats.notices_unpublished += 1;
            }
        }
    }

    /// Publishes a heartbeat event on every stream (for subscribers that watch the data, not
    /// only the liveness stamp); `next_seq` is the next source message expected.
    pub fn on_heartbeat(
        &mut self,
        next_seq: u64,
        recv_ts_ns: u64,
    ) -> Result<(), PipelineError<V::DecodeError>> {
        self.publish_everywhere(next_seq, 0, recv_ts_ns, &HeartbeatFields)
    }

    /// Publishes a feed event of the handler's own (not from a source message) on every
    /// stream, its header stamped with `seq` and `recv_ts_ns`; if it is given up, the source
    /// messages `seq .. seq + span` join the drop notice.
    fn publish_everywhere<E: EventFields>(
        &mut self,
        seq: u64,
        span: u64,
        recv_ts_ns: u64,
        event: &E,
    ) -> Result<(), PipelineError<V::DecodeError>> {
        let header = self.bus_header(seq, recv_ts_ns);
        let encoded = self.venue.encoder().encode(&header, event);
        self.out
            .publish(Target::All, seq, span, recv_ts_ns, encoded.as_bytes())
    }

    /// The header the pipeline stamps on a feed event of its own (gap notice, end of
    /// session, heartbeat) for sequence number `seq` received at `recv_ts_ns`: the venue,
    /// instrument 0, and the exchange timestamp of the latest message seen.
    pub fn bus_header(&self, seq: u64, recv_ts_ns: u64) -> HeaderFields {
        HeaderFields {
            seq,
            exchange_ts_ns: self.out.last_exchange_ts,
            recv_ts_ns,
            stock_locate: 0,
            tracking_number: 0,
            flags: self.venue.flags(),
            venue: V::VENUE,
            instrument: 0,
        }
    }
}

#[derive(Clone, Copy)]
enum Target {
    One(usize),
    All,
}

/// What a stream's lossless subscriber holding it back has cost so far.
#[derive(Clone, Copy, Debug, Default)]
struct Stall {
    /// The ring refused a record and its wait was spent: records are given up at once until
    /// it takes one again.
    stalled: bool,
    /// Source sequence numbers `(first, count)` given up whose gap notice is not published
    /// yet: it goes out before any other record.
    pending: Option<(u64, u64)>,
}

/// The publishing side of a [`FeedPipeline`]: its streams and what happens when they refuse.
#[derive(Debug)]
struct Out {
    publishers: Vec<Publisher>,
    /// One per publisher.
    stalls: Box<[Stall]>,
    /// Encodes drop notices (the normalizer's buffer still holds the record given up).
    notice_enc: Encoder,
    /// Delivery flags, as the normalizer's.
    flags: EnvelopeFlags,
    /// The venue stamped on drop notices.
    venue: fb::Venue,
    /// Exchange timestamp of the latest message, stamped on bus events.
    last_exchange_ts: u64,
    /// Longest wait for a back-pressured record, once per stall; `None`: no limit.
    timeout: Option<Duration>,
    stats: PipelineStats,
    idle: Idle,
}

impl Out {
    /// Copies `envelope` (of source message `seq`, or covering `seq .. seq + span`) into the
    /// target stream(s); the first refusal for good is returned, every one counted.
    #[inline]
    fn publish<E: DecodeErrorBound>(
        &mut self,
        target: Target,
        seq: u64,
        span: u64,
        recv_ts_ns: u64,
        envelope: &[u8],
    ) -> Result<(), PipelineError<E>> {
        match target {
            Target::One(i) => {
                let outcome = self.publish_to(i, seq, span, recv_ts_ns, envelope);
                self.count(seq, outcome)
            }
            Target::All => {
                let mut result = Ok(());
                for i in 0..self.publishers.len() {
                    let outcome = self.publish_to(i, seq, span, recv_ts_ns, envelope);
                    let counted = self.count(seq, outcome);
                    if result.is_ok() {
                        result = counted;
                    }
                }
                result
            }
        }
    }

    #[inline]
    fn count<E: DecodeErrorBound>(
        &mut self,
        seq: u64,
        outcome: Result<(), PublishError>,
    ) -> Result<(), PipelineError<E>> {
        match outcome {
            Ok(()) => {
                self.stats.published += 1;
                Ok(())
            }
            Err(error) => {
                self.stats.publish_errors += 1;
                Err(PipelineError::Publish { seq, error })
            }
        }
    }

    /// Whether stream `i` is neither stalled nor owes a drop notice: a record goes straight
    /// to it.
    #[inline(always)]
    fn clear(&self, i: usize) -> bool {
        let stall = &self.stalls[i];
        !stall.stalled && stall.pending.is_none()
    }

    /// Publishes on stream `i`. A full lossless ring is waited for (see [`retry`]); a record
    /// it still refuses is given up, and so is every following one until the ring takes the
    /// pending drop notice.
    #[inline]
    fn publish_to(
        &mut self,
        i: usize,
        seq: u64,
        span: u64,
        recv_ts_ns: u64,
        envelope: &[u8],
    ) -> Result<(), PublishError> {
        if !self.clear(i) {
            return self.publish_after_stall(i, seq, span, recv_ts_ns, envelope);
        }
        match self.publishers[i].publish_envelope(envelope) {
            Ok(_) => Ok(()),
            Err(PublishError::BackPressured) => self.wait_or_give_up(i, seq, span, envelope),
            Err(error) => Err(error),
        }
    }

    /// [`publish_to`](Self::publish_to) while stream `i` is stalled or owes a drop notice:
    /// the notice first (one try while stalled), then the record.
    #[cold]
    #[inline(never)]
    fn publish_after_stall(
        &mut self,
        i: usize,
        seq: u64,
        span: u64,
        recv_ts_ns: u64,
        envelope: &[u8],
    ) -> Result<(), PublishError> {
        if !self.flush(i, recv_ts_ns) {
            self.give_up(i, seq, span);
            return Err(PublishError::BackPressured);
        }
        match self.publishers[i].publish_envelope(envelope) {
            Ok(_) => {
                self.stalls[i].stalled = false;
                Ok(())
            }
            Err(PublishError::BackPressured) => self.wait_or_give_up(i, seq, span, envelope),
            Err(error) => Err(error),
        }
    }

    /// After a first refusal by back-pressure: waits (unless stalled), gives the record up if
    /// it is still refused.
    #[cold]
    #[inline(never)]
    fn wait_or_give_up(
        &mut self,
        i: usize,
        seq: u64,
        span: u64,
        envelope: &[u8],
    ) -> Result<(), PublishError> {
        let outcome = retry(
            &mut self.publishers[i],
            &mut self.stalls[i],
            &mut self.stats,
            &mut self.idle,
            self.timeout,
            envelope,
        );
        match outcome {
            Ok(_) => Ok(()),
            Err(PublishError::BackPressured) => {
                self.give_up(i, seq, span);
                Err(PublishError::BackPressured)
            }
            Err(error) => Err(error),
        }
    }

    /// Counts a record given up on stream `i`; its source messages `seq .. seq + span` join
    /// the pending drop notice.
    #[cold]
    fn give_up(&mut self, i: usize, seq: u64, span: u64) {
        self.stats.dropped += 1;
        if span == 0 {
            return;
        }
        let end = seq.saturating_add(span);
        let pending = &mut self.stalls[i].pending;
        *pending = Some(match *pending {
            None => (seq, span),
            // Records are published in source order, so the ranges follow each other.
            Some((first, count)) => {
                let first = first.min(seq);
                let end = end.max(first.saturating_add(count));
                (first, end - first)
            }
        });
    }

    /// Publishes stream `i`'s pending drop notice (a lost gap of
    /// [`GapScope::Source`]: the feed's numbers) if the ring takes it; whether none is left.
    /// A notice too large for the stream's records is given up and counted.
    #[cold]
    fn flush(&mut self, i: usize, recv_ts_ns: u64) -> bool {
        let Some((first, count)) = self.stalls[i].pending else {
            return true;
        };
        let header = HeaderFields {
            seq: first,
            exchange_ts_ns: self.last_exchange_ts,
            recv_ts_ns,
            stock_locate: 0,
            tracking_number: 0,
            flags: self.flags,
            venue: self.venue,
            instrument: 0,
        };
        let notice = GapNoticeFields {
            first_missing_seq: first,
            count,
            recoverable: false,
            scope: GapScope::Source,
        };
        let envelope = self.notice_enc.encode(&header, &notice).as_bytes();
        let p = &mut self.publishers[i];
        let stall = &mut self.stalls[i];
        let outcome = match p.publish_envelope(envelope) {
            Err(PublishError::BackPressured) => retry(
                p,
                stall,
                &mut self.stats,
                &mut self.idle,
                self.timeout,
                envelope,
            ),
            other => other,
        };
        match outcome {
            Ok(_) => {
                self.stats.published += 1;
                self.stats.drop_notices += 1;
            }
            Err(PublishError::BackPressured) => return false,
            Err(PublishError::TooLarge { .. }) => self.stats.notices_unpublished += 1,
        }
        *stall = Stall::default();
        true
    }

    /// Lets every stream that owes a drop notice wait once more (at the end of a session).
    #[cold]
    fn unstall_pending(&mut self) {
        for stall in self.stalls.iter_mut() {
            if stall.pending.is_some() {
                stall.stalled = false;
            }
        }
    }
}

/// Publishes `envelope` on `p` after a first refusal by back-pressure: spins, then yields
/// the cpu (or runs the idle work instead of either), until the ring takes it or `timeout`
/// has passed since the first refusal; then the stream is stalled. A stalled stream is not
/// waited for: one refusal, and the record is given up. Every refusal is counted.
#[cold]
#[inline(never)]
fn retry(
    p: &mut Publisher,
    stall: &mut Stall,
    stats: &mut PipelineStats,
    idle: &mut Idle,
    timeout: Option<Duration>,
    envelope: &[u8],
) -> Result<u64, PublishError> {
    stats.back_pressured += 1;
    if stall.stalled {
        return Err(PublishError::BackPressured);
    }
    let started = Instant::now();
    let mut tries = 0u32;
    loop {
        if tries < BACK_PRESSURE_SPINS {
            tries += 1;
            if !idle.run() {
                std::hint::spin_loop();
            }
        } else {
            if timeout.is_some_and(|t| started.elapsed() >= t) {
                stall.stalled = true;
                stats.stalls += 1;
                return Err(PublishError::BackPressured);
            }
            if !idle.run() {
                std::thread::yield_now();
            }
        }
        match p.publish_envelope(envelope) {
            Err(PublishError::BackPressured) => stats.back_pressured += 1,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdbus_bus::{ENVELOPE_MSG_TYPE, SubscribeOptions, Subscriber};
    use mdbus_codecs::fb::{self, Event};
    use mdbus_codecs::nasdaq::itch::{OrderDeleteFields, SystemEventFields};

    fn delete(locate: u16, order: u64) -> Vec<u8> {
        OrderDeleteFields {
            stock_locate: locate,
            tracking_number: 0,
            timestamp: 1000 + order,
            order_reference_number: order,
        }
        .to_bytes()
        .unwrap()
        .to_vec()
    }

    /// (source seq, event type, stock locate) of every record.
    fn drain(sub: &mut Subscriber) -> Vec<(u64, Event, u16)> {
        let mut out = Vec::new();
        while sub
            .poll(|m| {
                assert_eq!(m.msg_type(), ENVELOPE_MSG_TYPE);
                let env = fb::read_verified(m.payload()).unwrap();
                out.push((
                    env.header().seq(),
                    env.event_type(),
                    env.header().stock_locate(),
                ));
            })
            .unwrap()
        {}
        out
    }

    #[test]
    fn publishes_messages_gaps_and_end_on_one_stream() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let mut p = FeedPipeline::new(&bus, "feed", &StreamConfig::default()).unwrap();
        let mut sub = bus
            .subscriber("feed", &SubscribeOptions::default())
            .unwrap();
        p.on_message(1, &delete(13, 1), 5).unwrap();
        p.on_gap(2, 3, false, 6).unwrap();
        // Not ITCH: counted, published as a lost message, reported.
        assert_eq!(
            p.on_message(5, b"?junk", 7),
            Err(PipelineError::Decode {
                seq: 5,
                error: DecodeError::UnknownType {
                    msg_type: b'?',
                    len: 5
                }
            })
        );
        p.on_message(6, &delete(13, 6), 8).unwrap();
        p.on_end_of_session(7, 9).unwrap();
        assert_eq!(
            drain(&mut sub),
            [
                (1, Event::OrderDelete, 13),
                (2, Event::GapNotice, 0),
                (5, Event::GapNotice, 0),
                (6, Event::OrderDelete, 13),
                (7, Event::EndOfSession, 0),
            ]
        );
        let s = p.stats();
        assert_eq!(
            (
                s.messages,
                s.published,
                s.decode_errors,
                s.gap_notices,
                s.lost
            ),
            (3, 5, 1, 2, 4)
        );
    }

    #[test]
    fn gap_notice_fields() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let mut p = FeedPipeline::new(&bus, "feed", &StreamConfig::default()).unwrap();
        let mut sub = bus
            .subscriber("feed", &SubscribeOptions::default())
            .unwrap();
        p.on_message(10, &delete(13, 10), 5).unwrap();
        p.on_gap(11, 4, true, 99).unwrap();
        let mut notices = Vec::new();
        while sub
            .poll_event(|e| {
                if let Some(g) = e.envelope().event_as_gap_notice() {
                    let h = e.envelope().header();
                    notices.push((
                        g.first_missing_seq(),
                        g.count(),
                        g.recoverable(),
                        h.recv_ts_ns(),
                        h.exchange_ts_ns(),
                    ));
                }
            })
            .unwrap()
        {}
        assert_eq!(notices, [(11, 4, true, 99, 1010)]);
    }

    #[test]
    fn partitions_route_by_locate() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let parts = [
            Partition {
                stream: "low".into(),
                locates: 1..=100,
            },
            Partition {
                stream: "high".into(),
                locates: 101..=200,
            },
        ];
        let mut p = FeedPipeline::partitioned(&bus, &parts, &StreamConfig::default()).unwrap();
        let mut low = bus.subscriber("low", &SubscribeOptions::default()).unwrap();
        let mut high = bus
            .subscriber("high", &SubscribeOptions::default())
            .unwrap();
        let system = SystemEventFields {
            stock_locate: 0,
            tracking_number: 0,
            timestamp: 1,
            event_code: b'O',
        }
        .to_bytes()
        .unwrap()
        .to_vec();
        p.on_message(1, &system, 0).unwrap();
        p.on_message(2, &delete(13, 2), 0).unwrap();
        p.on_message(3, &delete(150, 3), 0).unwrap();
        p.on_message(4, &delete(999, 4), 0).unwrap();
        p.on_gap(5, 1, false, 0).unwrap();
        assert_eq!(
            drain(&mut low),
            [
                (1, Event::SystemEvent, 0),
                (2, Event::OrderDelete, 13),
                (4, Event::OrderDelete, 999),
                (5, Event::GapNotice, 0),
            ]
        );
        assert_eq!(
            drain(&mut high),
            [
                (1, Event::SystemEvent, 0),
                (3, Event::OrderDelete, 150),
                (5, Event::GapNotice, 0),
            ]
        );
        assert_eq!(p.stats().unrouted, 1);
        assert_eq!(p.stats().gap_notices, 1);
        assert_eq!(p.publishers().len(), 2);
    }

    #[test]
    fn bad_partitions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let overlap = [
            Partition {
                stream: "a".into(),
                locates: 1..=10,
            },
            Partition {
                stream: "b".into(),
                locates: 10..=20,
            },
        ];
        let err = FeedPipeline::partitioned(&bus, &overlap, &StreamConfig::default()).unwrap_err();
        assert!(err.to_string().contains("instrument 10"), "{err}");
        assert!(FeedPipeline::partitioned(&bus, &[], &StreamConfig::default()).is_err());
    }

    fn lossless_small() -> StreamConfig {
        StreamConfig {
            capacity: 4096,
            max_msg_len: 512,
            mode: mdbus_bus::Mode::Lossless,
            ..StreamConfig::default()
        }
    }

    /// A pipeline on stream `feed` of a 4 KiB lossless ring, and a lossless subscriber of it
    /// (the bus root lives as long as the returned folder).
    fn small_lossless_feed() -> (tempfile::TempDir, FeedPipeline, Subscriber) {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let p = FeedPipeline::new(&bus, "feed", &lossless_small()).unwrap();
        let sub = bus
            .subscriber("feed", &SubscribeOptions::default())
            .unwrap();
        (dir, p, sub)
    }

    #[test]
    fn back_pressure_is_retried_then_given_up_and_counted() {
        // A lossless subscriber that reads nothing: the ring fills up.
        let (_dir, mut p, mut sub) = small_lossless_feed();
        p.set_back_pressure_timeout(Some(Duration::from_millis(1)));
        let mut seq = 0;
        let err = loop {
            seq += 1;
            assert!(seq < 1000, "a 4 KiB ring never filled up");
            if let Err(e) = p.on_message(seq, &delete(13, seq), 0) {
                break e;
            }
        };
        assert_eq!(
            err,
            PipelineError::Publish {
                seq,
                error: PublishError::BackPressured
            }
        );
        let s = p.stats();
        // Retried (more than once: it spun, then yielded until the timeout), then given up.
        assert!(s.back_pressured > 1, "{s:?}");
        assert_eq!((s.publish_errors, s.published), (1, seq - 1));
        // What was published is intact and in order; the refused record is not there.
        let got: Vec<u64> = drain(&mut sub).iter().map(|r| r.0).collect();
        assert_eq!(got, (1..seq).collect::<Vec<_>>());
    }

    /// Publishes delete messages from `seq` on until the ring refuses one; returns its seq.
    fn fill_until_refused(p: &mut FeedPipeline, mut seq: u64) -> u64 {
        loop {
            assert!(seq < 1000, "a 4 KiB ring never filled up");
            if p.on_message(seq, &delete(13, seq), 0).is_err() {
                return seq;
            }
            seq += 1;
        }
    }

    /// (first, count, recoverable, scope) of a gap notice record, or its seq and type.
    #[derive(Debug, PartialEq, Eq)]
    enum Rec {
        Gap(u64, u64, bool, fb::GapScope),
        Other(u64, Event),
    }

    fn drain_records(sub: &mut Subscriber) -> Vec<Rec> {
        let mut out = Vec::new();
        while sub
            .poll_event(|e| {
                let env = e.envelope();
                // Drop notices, like every record, name the venue; bus events no instrument.
                assert_eq!(env.venue(), fb::Venue::Nasdaq, "{env:?}");
                assert_eq!(env.instrument(), u32::from(env.header().stock_locate()));
                out.push(match env.event_as_gap_notice() {
                    Some(g) => {
                        Rec::Gap(g.first_missing_seq(), g.count(), g.recoverable(), g.scope())
                    }
                    None => Rec::Other(env.header().seq(), env.event_type()),
                });
            })
            .unwrap()
        {}
        out
    }

    #[test]
    fn a_stopped_lossless_subscriber_costs_one_wait_then_gets_a_gap_notice() {
        let (_dir, mut p, mut sub) = small_lossless_feed();
        p.set_back_pressure_timeout(Some(Duration::from_millis(1)));
        let first_refused = fill_until_refused(&mut p, 1);
        // The subscriber stays stopped: the next records are given up without a wait.
        const MORE: u64 = 50;
        for seq in first_refused + 1..=first_refused + MORE {
            assert_eq!(
                p.on_message(seq, &delete(13, seq), 0),
                Err(PipelineError::Publish {
                    seq,
                    error: PublishError::BackPressured
                })
            );
        }
        let s = p.stats();
        assert_eq!(s.stalls, 1, "one continuous stall waits once: {s:?}");
        assert_eq!((s.dropped, s.lost), (MORE + 1, MORE + 1), "{s:?}");
        // The subscriber resumes: what was published, then one notice for exactly the records
        // given up, then the records that follow.
        let before = drain_records(&mut sub);
        let expect: Vec<Rec> = (1..first_refused)
            .map(|seq| Rec::Other(seq, Event::OrderDelete))
            .collect();
        assert_eq!(before, expect);
        let next = first_refused + MORE + 1;
        p.on_message(next, &delete(13, next), 0).unwrap();
        p.on_message(next + 1, &delete(13, next + 1), 0).unwrap();
        assert_eq!(
            drain_records(&mut sub),
            [
                Rec::Gap(first_refused, MORE + 1, false, fb::GapScope::Source),
                Rec::Other(next, Event::OrderDelete),
                Rec::Other(next + 1, Event::OrderDelete),
            ]
        );
        let s = p.stats();
        assert_eq!((s.stalls, s.drop_notices, s.notices_unpublished), (1, 1, 0));
        assert_eq!(s.published, first_refused - 1 + 3);
    }

    #[test]
    fn a_pending_drop_notice_goes_out_before_the_end_of_session_or_is_reported() {
        // Resumed before the end: the notice, then the end of session.
        let (_dir, mut p, mut sub) = small_lossless_feed();
        p.set_back_pressure_timeout(Some(Duration::from_millis(1)));
        let refused = fill_until_refused(&mut p, 1);
        drain_records(&mut sub);
        p.on_end_of_session(refused + 1, 0).unwrap();
        p.finish_drop_notices(0);
        assert_eq!(
            drain_records(&mut sub),
            [
                Rec::Gap(refused, 1, false, fb::GapScope::Source),
                Rec::Other(refused + 1, Event::EndOfSession),
            ]
        );
        assert_eq!(p.stats().notices_unpublished, 0);

        // Never resumed: the notice cannot go out, and that is counted.
        let (_dir, mut p, _sub) = small_lossless_feed();
        p.set_back_pressure_timeout(Some(Duration::from_millis(1)));
        let refused = fill_until_refused(&mut p, 1);
        assert!(p.on_end_of_session(refused + 1, 0).is_err());
        p.finish_drop_notices(0);
        let s = p.stats();
        assert_eq!((s.drop_notices, s.notices_unpublished), (0, 1), "{s:?}");
        // Each end-of-session step waits once at most.
        assert!(s.stalls <= 3, "{s:?}");
    }

    #[test]
    fn without_a_timeout_back_pressure_waits_and_loses_nothing() {
        let (_dir, mut p, mut sub) = small_lossless_feed();
        p.set_back_pressure_timeout(None);
        const N: u64 = 2_000; // far more than the ring holds
        let reader = std::thread::spawn(move || {
            let mut seqs = Vec::new();
            while seqs.len() < N as usize {
                seqs.extend(drain(&mut sub).iter().map(|r| r.0));
                std::thread::yield_now();
            }
            seqs
        });
        for seq in 1..=N {
            p.on_message(seq, &delete(13, seq), 0).unwrap();
        }
        assert_eq!(reader.join().unwrap(), (1..=N).collect::<Vec<_>>());
        let s = p.stats();
        assert_eq!((s.published, s.publish_errors), (N, 0));
    }

    #[test]
    fn idle_work_drains_a_full_ring_on_the_publishing_thread() {
        // The only reader of this lossless 4 KiB ring is the pipeline's own idle work: every
        // record gets through only if the pipeline runs it while it waits for room.
        let (_dir, mut p, mut sub) = small_lossless_feed();
        p.set_back_pressure_timeout(Some(Duration::from_secs(30)));
        let seen = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), 0u64)));
        let work = {
            let seen = std::sync::Arc::clone(&seen);
            Box::new(move || {
                let mut s = seen.lock().unwrap();
                s.1 += 1;
                let got = drain(&mut sub);
                s.0.extend(got.iter().map(|r| r.0));
                true
            })
        };
        p.set_idle_work(Some(work));
        const N: u64 = 2_000; // far more than the ring holds
        for seq in 1..=N {
            p.on_message(seq, &delete(13, seq), 0).unwrap();
        }
        p.on_end_of_session(N + 1, 0).unwrap();
        let calls_while_publishing = seen.lock().unwrap().1;
        // Between messages it runs once every IDLE_WORK_EVERY of them, and in every turn of
        // each wait for room.
        assert!(
            calls_while_publishing >= N / IDLE_WORK_EVERY,
            "{calls_while_publishing}"
        );
        // One more turn reads the rest.
        p.idle_mut().run();
        let s = p.stats();
        assert_eq!((s.published, s.publish_errors), (N + 1, 0));
        // Every refused publish and every turn between messages paused the pipeline.
        assert_eq!(p.pauses(), s.back_pressured + N / IDLE_WORK_EVERY);
        assert!(
            s.back_pressured > 0,
            "a 4 KiB ring held back {N} messages: {s:?}"
        );
        let got = std::mem::take(&mut seen.lock().unwrap().0);
        assert_eq!(got, (1..=N + 1).collect::<Vec<_>>());
    }

    #[test]
    fn finishing_idle_work_runs_it_until_it_is_done() {
        let (_dir, mut p, _sub) = small_lossless_feed();
        p.finish_idle_work(); // none set: returns at once
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let c = std::sync::Arc::clone(&calls);
        p.set_idle_work(Some(Box::new(move || {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 < 5
        })));
        p.finish_idle_work();
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 5);
    }

    #[test]
    fn refusals_are_counted_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let config = StreamConfig {
            max_msg_len: 64, // smaller than any envelope
            capacity: 4096,
            ..StreamConfig::default()
        };
        let mut p = FeedPipeline::new(&bus, "tiny", &config).unwrap();
        let err = p.on_message(1, &delete(13, 1), 0).unwrap_err();
        assert!(matches!(
            err,
            PipelineError::Publish {
                seq: 1,
                error: PublishError::TooLarge { .. }
            }
        ));
        assert_eq!(p.stats().publish_errors, 1);
        assert_eq!(p.stats().published, 0);
    }
}

/// The pipeline over a venue other than Nasdaq: a toy venue keyed on symbols, to prove the
/// seam carries everything a venue decides (decode errors, instrument ids, the venue stamp).
#[cfg(test)]
mod venue_tests {
    use super::*;
    use mdbus_bus::{ENVELOPE_MSG_TYPE, SubscribeOptions, Subscriber};
    use mdbus_codecs::fb::{AddOrderFields, EventSink, Side, SystemEventCode, SystemEventFields};

    use crate::venue::{Directory, Framing};

    /// `[type, symbol x 8, timestamp x 8]`: `A` adds an order on the symbol, `S` is
    /// market-wide.
    #[derive(Debug)]
    struct Toy {
        dir: Directory,
        enc: Encoder,
        flags: EnvelopeFlags,
    }

    #[derive(Debug)]
    struct ToyMsg<'a>(&'a [u8; 17]);

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct BadToy(usize);

    impl std::fmt::Display for BadToy {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} bytes, not a toy message", self.0)
        }
    }

    impl ToyMsg<'_> {
        fn symbol(&self) -> [u8; 8] {
            self.0[1..9].try_into().unwrap()
        }
    }

    impl Venue for Toy {
        const VENUE: fb::Venue = fb::Venue::Iex;
        const NAME: &'static str = "toy";
        const FRAMING: Framing = Framing::MoldUdp64;
        type Message<'a> = ToyMsg<'a>;
        type DecodeError = BadToy;

        fn decode<'a>(&self, bytes: &'a [u8]) -> Result<ToyMsg<'a>, BadToy> {
            match <&[u8; 17]>::try_from(bytes) {
                Ok(b @ [b'A' | b'S', ..]) => Ok(ToyMsg(b)),
                _ => Err(BadToy(bytes.len())),
            }
        }
        fn type_byte(msg: &ToyMsg<'_>) -> u8 {
            msg.0[0]
        }
        fn type_of_event(event: fb::Event) -> Option<u8> {
            match event {
                fb::Event::AddOrder => Some(b'A'),
                fb::Event::SystemEvent => Some(b'S'),
                _ => None,
            }
        }
        fn exchange_ts_ns(&mut self, msg: &ToyMsg<'_>) -> u64 {
            u64::from_be_bytes(msg.0[9..17].try_into().unwrap())
        }
        fn instrument(&mut self, msg: &ToyMsg<'_>) -> u32 {
            match msg.0[0] {
                b'A' => self.dir.assign(msg.symbol()).unwrap_or(0),
                _ => 0,
            }
        }
        fn listing(_: &ToyMsg<'_>) -> Option<[u8; 8]> {
            None
        }
        fn normalize_to<S: EventSink>(
            &mut self,
            msg: &ToyMsg<'_>,
            seq: u64,
            recv_ts_ns: u64,
            sink: &mut S,
        ) -> S::Out<'_> {
            let header = HeaderFields {
                seq,
                exchange_ts_ns: self.exchange_ts_ns(msg),
                recv_ts_ns,
                flags: self.flags,
                venue: Self::VENUE,
                instrument: self.instrument(msg),
                ..HeaderFields::default()
            };
            match msg.0[0] {
                b'A' => sink.put(
                    &mut self.enc,
                    &header,
                    &AddOrderFields {
                        order_reference_number: seq,
                        buy_sell_indicator: Side::Buy,
                        shares: 1,
                        stock: msg.symbol(),
                        price: 1,
                    },
                ),
                _ => sink.put(
                    &mut self.enc,
                    &header,
                    &SystemEventFields {
                        event_code: SystemEventCode::StartOfMessages,
                    },
                ),
            }
        }
        fn set_flags(&mut self, flags: EnvelopeFlags) {
            self.flags = flags;
        }
        fn flags(&self) -> EnvelopeFlags {
            self.flags
        }
        fn encoder(&mut self) -> &mut Encoder {
            &mut self.enc
        }
    }

    fn toy() -> Toy {
        Toy {
            dir: Directory::with_capacity(16),
            enc: Encoder::new(),
            flags: EnvelopeFlags::empty(),
        }
    }

    fn wire(t: u8, symbol: &[u8; 8], ts: u64) -> Vec<u8> {
        let mut m = vec![t];
        m.extend_from_slice(symbol);
        m.extend_from_slice(&ts.to_be_bytes());
        m
    }

    /// (seq, event, venue, instrument, exchange ts) of every record.
    fn drain(sub: &mut Subscriber) -> Vec<(u64, fb::Event, fb::Venue, u32, u64)> {
        let mut out = Vec::new();
        while sub
            .poll(|m| {
                assert_eq!(m.msg_type(), ENVELOPE_MSG_TYPE);
                let env = fb::read_verified(m.payload()).unwrap();
                let h = env.header();
                out.push((
                    h.seq(),
                    env.event_type(),
                    env.venue(),
                    env.instrument(),
                    h.exchange_ts_ns(),
                ));
            })
            .unwrap()
        {}
        out
    }

    #[test]
    fn another_venue_is_decoded_normalized_stamped_and_routed_by_its_instrument_ids() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let parts = [
            Partition {
                stream: "one".into(),
                locates: 1..=1,
            },
            Partition {
                stream: "two".into(),
                locates: 2..=2,
            },
        ];
        let config = StreamConfig::default();
        let mut p = FeedPipeline::partitioned_with_venue(toy(), &bus, &parts, &config).unwrap();
        let opts = SubscribeOptions::default();
        let (mut one, mut two) = (
            bus.subscriber("one", &opts).unwrap(),
            bus.subscriber("two", &opts).unwrap(),
        );
        let iex = fb::Venue::Iex;
        p.on_message(1, &wire(b'A', b"ZZZZ    ", 10), 0).unwrap();
        p.on_message(2, &wire(b'A', b"YYYY    ", 20), 0).unwrap();
        p.on_message(3, &wire(b'S', b"        ", 30), 0).unwrap();
        p.on_message(4, &wire(b'A', b"ZZZZ    ", 40), 0).unwrap();
        p.on_message(5, &wire(b'A', b"XXXX    ", 50), 0).unwrap();
        let err = p.on_message(6, b"A?", 0).unwrap_err();
        assert_eq!(
            err,
            PipelineError::Decode {
                seq: 6,
                error: BadToy(2)
            }
        );
        assert_eq!(
            err.to_string(),
            "source message 6: 2 bytes, not a toy message"
        );
        p.on_end_of_session(7, 0).unwrap();
        let (add, sys) = (fb::Event::AddOrder, fb::Event::SystemEvent);
        let (gap, end) = (fb::Event::GapNotice, fb::Event::EndOfSession);
        // Market-wide messages and bus events on both, stamped with the venue; the third
        // instrument (id 3) is in no partition and goes to the first.
        assert_eq!(
            drain(&mut one),
            [
                (1, add, iex, 1, 10),
                (3, sys, iex, 0, 30),
                (4, add, iex, 1, 40),
                (5, add, iex, 3, 50),
                (6, gap, iex, 0, 50),
                (7, end, iex, 0, 50),
            ]
        );
        assert_eq!(
            drain(&mut two),
            [
                (2, add, iex, 2, 20),
                (3, sys, iex, 0, 30),
                (6, gap, iex, 0, 50),
                (7, end, iex, 0, 50),
            ]
        );
        let st = p.stats();
        assert_eq!((st.messages, st.decode_errors, st.unrouted), (6, 1, 1));
        assert_eq!(p.venue().dir.len(), 3);
    }
}
