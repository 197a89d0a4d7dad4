//! The mdbus API that trading strategies link against.
//!
//! A [`Bus`] is a named root directory (by default `/dev/shm/mdbus-<user>/`) holding one
//! shared-memory ring per stream. Feed handlers publish normalized market data on it (the
//! FlatBuffers [`schema`]: order flow, trades, best bid and offer, price levels, gap notices);
//! a strategy subscribes to the streams it wants and reads each event as a typed view straight
//! out of shared memory: no copy, no allocation, no system call.
//!
//! ```
//! use mdbus_bus::{Bus, SubscribeOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let bus = Bus::with_root(dir.path())?; // `Bus::new()` for the default root
//! # let mut feed = bus.publisher("nasdaq.itch.book", &mdbus_bus::StreamConfig::default())?;
//! let mut book = bus.subscriber("nasdaq.itch.book", &SubscribeOptions::default())?;
//! # let mut encoder = mdbus_bus::schema::Encoder::new();
//! # let header = mdbus_bus::schema::HeaderFields {
//! #     seq: 1, venue: mdbus_bus::schema::Venue::Nasdaq, instrument: 13, ..Default::default()
//! # };
//! # let bbo = mdbus_bus::schema::BboFields {
//! #     bid_price: 3_201_400, bid_size: 25, bid_orders: 1,
//! #     ask_price: 3_203_000, ask_size: 100, ask_orders: 2,
//! # };
//! # feed.publish_envelope(encoder.encode(&header, &bbo).as_bytes())?;
//!
//! // Each event is a view of the record in shared memory, valid during the callback.
//! book.poll_event(|event| {
//!     let envelope = event.envelope();
//!     if let Some(bbo) = envelope.event_as_bbo() {
//!         let top = bbo.body();
//!         println!(
//!             "{:?} {} bid {}x{} ask {}x{}",
//!             envelope.venue(),
//!             envelope.instrument(),
//!             top.bid_size(), top.bid_price(), top.ask_size(), top.ask_price(),
//!         );
//!         # assert_eq!(top.bid_price(), 3_201_400);
//!     }
//! })?;
//! # Ok(())
//! # }
//! ```
//!
//! A [`Publisher`] owns the write side of a stream, a [`Subscriber`] one read cursor; either
//! can live in any process on the host. [`merge`] reads several streams in source order.
//! Under the typed layer, records are raw bytes with a type tag, for streams that carry
//! something else:
//!
//! ```
//! use mdbus_bus::{Bus, StreamConfig, SubscribeOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let bus = Bus::with_root(dir.path())?;
//! let mut publisher = bus.publisher("aapl.trades", &StreamConfig::default())?;
//! let mut subscriber = bus.subscriber("aapl.trades", &SubscribeOptions::default())?;
//!
//! // Zero-copy publish: claim space in the ring, write in place, commit.
//! let mut claim = publisher.claim(8, 7).expect("fits and the stream is broadcast");
//! claim.copy_from_slice(&42u64.to_le_bytes());
//! claim.commit();
//!
//! // Zero-copy read: the callback borrows the record from shared memory.
//! let mut seen = 0;
//! subscriber.poll(|msg| {
//!     assert_eq!(msg.msg_type(), 7);
//!     seen = u64::from_le_bytes(msg.payload().try_into().unwrap());
//! })?;
//! assert_eq!(seen, 42);
//! # Ok(())
//! # }
//! ```
//!
//! Errors on the hot path ([`PublishError`], [`ReceiveError`]) are small `Copy` enums; setup
//! errors ([`BusError`]) carry the stream name and path.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use mdbus_shm::{
    ClaimError as PublishError, Mode, PollError as ReceiveError, ProducerStatus, Resync,
    RingConfig as StreamConfig, StartAt, WaitStrategy,
};

/// The wall clock the bus stamps `recv_ts_ns` with: nanoseconds since the Unix epoch.
pub use mdbus_shm::unix_ns;

pub mod merge;

/// The normalized message schema: FlatBuffers envelopes, their typed views and the encoder.
pub use mdbus_schema as schema;

/// Record type tag of a normalized FlatBuffers envelope on a bus stream.
pub const ENVELOPE_MSG_TYPE: u32 = 1;

/// File-name suffix of a stream's segment under the bus root.
pub const SEGMENT_SUFFIX: &str = ".ring";

/// Longest stream name accepted.
pub const MAX_STREAM_NAME: usize = mdbus_shm::MAX_STREAM_NAME;

/// A setup error: opening a bus, creating a publisher or a subscriber.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The stream name is empty, too long, or holds characters other than
    /// `[A-Za-z0-9._-]` (or starts with a dot).
    #[error(
        "invalid stream name {name:?}: use 1 to {MAX_STREAM_NAME} characters of [A-Za-z0-9._-], not starting with '.'"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// The bus root directory could not be created or read.
    #[error("bus root {path}: {source}")]
    Root {
        /// The root directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The bus root exists but may not be used: it belongs to another user, or group or
    /// others can write to it (anyone who can write a root can plant the segments its
    /// subscribers read). The message names its owner and mode and how to fix it.
    #[error("bus root refused: {source}")]
    RootRefused {
        /// The root directory.
        path: PathBuf,
        /// What was found ([`mdbus_shm::SetupError::Untrusted`], usually).
        source: mdbus_shm::SetupError,
    },
    /// The shared-memory segment of a stream could not be created or opened.
    #[error("stream {stream:?}: {source}")]
    Segment {
        /// The stream name.
        stream: String,
        /// The underlying error, naming the segment path.
        source: mdbus_shm::SetupError,
    },
}

/// A named root under which streams live, one shared-memory segment per stream.
#[derive(Debug, Clone)]
pub struct Bus {
    root: PathBuf,
}

impl Bus {
    /// Opens the default bus root, `/dev/shm/mdbus-<user>/` (see [`mdbus_shm::default_root`]),
    /// creating it (mode 0700) if needed. That name is predictable: a directory another user
    /// created there first is refused ([`BusError::RootRefused`]), never used.
    pub fn new() -> Result<Bus, BusError> {
        Bus::with_root(mdbus_shm::default_root())
    }

    /// Opens `root` when given, else the default root: what a `--root` option means.
    pub fn open(root: Option<&Path>) -> Result<Bus, BusError> {
        match root {
            Some(root) => Bus::with_root(root),
            None => Bus::new(),
        }
    }

    /// Opens a bus rooted at `root`, creating the directory (mode 0700) if needed. Any
    /// directory owned by this process's user and not writable by group or others works
    /// (0700 or 0755); a hugetlbfs mount (or a directory of one) gives huge-page-backed rings.
    /// Anything else is [`BusError::RootRefused`], naming the owner and mode found. Every
    /// publisher, subscriber and listing checks the root again when it opens it, and never
    /// follows a symbolic link inside it.
    pub fn with_root(root: impl Into<PathBuf>) -> Result<Bus, BusError> {
        let root = root.into();
        match mdbus_shm::RootDir::create(&root) {
            Ok(_) => Ok(Bus { root }),
            Err(mdbus_shm::SetupError::Io { source, .. }) => {
                Err(BusError::Root { path: root, source })
            }
            Err(source) => Err(BusError::RootRefused { path: root, source }),
        }
    }

    /// The root directory of this bus.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The segment path of stream `name`, after checking the name.
    pub fn stream_path(&self, name: &str) -> Result<PathBuf, BusError> {
        validate_name(name)?;
        Ok(self.root.join(format!("{name}{SEGMENT_SUFFIX}")))
    }

    /// Creates the publisher of stream `name`: the one writer of that stream on this host.
    ///
    /// If a previous publisher of the stream died, its segment is replaced and subscribers
    /// see a new epoch; if it is still alive, this fails with the pid that holds it.
    pub fn publisher(&self, name: &str, config: &StreamConfig) -> Result<Publisher, BusError> {
        let path = self.stream_path(name)?;
        let inner =
            mdbus_shm::Producer::create(&path, config).map_err(|source| BusError::Segment {
                stream: name.to_owned(),
                source,
            })?;
        Ok(Publisher {
            inner,
            name: name.to_owned(),
            stats: PublisherStats::default(),
        })
    }

    /// Subscribes to stream `name`. The stream's publisher must have created it.
    pub fn subscriber(
        &self,
        name: &str,
        options: &SubscribeOptions,
    ) -> Result<Subscriber, BusError> {
        let path = self.stream_path(name)?;
        let inner =
            mdbus_shm::Consumer::open(&path, &options.to_consumer_options()).map_err(|source| {
                BusError::Segment {
                    stream: name.to_owned(),
                    source,
                }
            })?;
        let scratch = vec![0u8; inner.max_msg_len() as usize].into_boxed_slice();
        Ok(Subscriber {
            inner,
            name: name.to_owned(),
            stats: SubscriberStats::default(),
            trust: options.trust,
            scratch,
        })
    }

    /// Lists the streams under this root, with their producers' state.
    pub fn streams(&self) -> Result<Vec<StreamInfo>, BusError> {
        let segments =
            mdbus_shm::list_segments(&self.root).map_err(|source| BusError::Segment {
                stream: String::from("*"),
                source,
            })?;
        Ok(segments
            .into_iter()
            .filter_map(|segment| {
                let file = segment.path.file_name()?.to_str()?;
                let name = file.strip_suffix(SEGMENT_SUFFIX)?.to_owned();
                Some(StreamInfo { name, segment })
            })
            .collect())
    }

    /// Removes the segments of streams whose producer is dead or closed; returns their paths.
    pub fn remove_stale(&self) -> Result<Vec<PathBuf>, BusError> {
        mdbus_shm::remove_stale(&self.root).map_err(|source| BusError::Segment {
            stream: String::from("*"),
            source,
        })
    }
}

/// One stream found under a bus root.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The stream name.
    pub name: String,
    /// What its segment header says.
    pub segment: mdbus_shm::SegmentInfo,
}

fn validate_name(name: &str) -> Result<(), BusError> {
    mdbus_shm::check_stream_name(name).map_err(|_| BusError::InvalidName {
        name: name.to_owned(),
    })
}

/// How a subscriber joins a stream and what it does when it falls too far behind.
#[derive(Debug, Clone, Copy)]
pub struct SubscribeOptions {
    /// Where the first delivered record is: the oldest retained, the newest, or the next one.
    pub start: StartAt,
    /// Broadcast streams: where a lapped subscriber resumes after reporting its loss.
    pub resync: Resync,
    /// Lossless streams: take a consumer slot so the publisher waits for this subscriber.
    pub lossless: bool,
    /// Whether [`Subscriber::poll_event`] verifies each envelope (the default) or trusts the
    /// publisher.
    pub trust: Trust,
}

/// How far a subscriber trusts what the stream's publisher wrote, for typed reads.
///
/// FlatBuffers views follow offsets found in the message; on malformed bytes an unverified
/// view reads out of bounds. [`Trust::VERIFY`] runs the verifier on every envelope: safe for
/// any input, the right choice for anything that came off a network or from another user.
/// [`Trust::publisher`] skips it: several times faster, and sound only because the caller
/// promises, in an `unsafe` call made once at setup, that the publisher writes nothing but
/// envelopes built by [`schema::Encoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trust {
    trusted: bool,
}

impl Trust {
    /// Verify every envelope before handing it out; invalid ones are counted and skipped.
    pub const VERIFY: Trust = Trust { trusted: false };

    /// Skip verification.
    ///
    /// # Safety
    /// Every record of type [`ENVELOPE_MSG_TYPE`] on the stream must be a complete envelope
    /// built by [`schema::Encoder`] (of this schema version or a later one): in practice, the
    /// stream's publisher is an mdbus feed handler, book builder or receiver of this
    /// workspace, running as the same user (segments are created mode 0600).
    pub const unsafe fn publisher() -> Trust {
        Trust { trusted: true }
    }

    /// Whether verification is skipped.
    pub const fn is_trusted(self) -> bool {
        self.trusted
    }
}

impl Default for SubscribeOptions {
    /// Join at the oldest retained record, resume at the oldest after an overrun, take a
    /// back-pressure slot when the stream is lossless, and verify typed reads.
    fn default() -> Self {
        SubscribeOptions {
            start: StartAt::Oldest,
            resync: Resync::Oldest,
            lossless: true,
            trust: Trust::VERIFY,
        }
    }
}

impl SubscribeOptions {
    fn to_consumer_options(self) -> mdbus_shm::ConsumerOptions {
        mdbus_shm::ConsumerOptions {
            start: self.start,
            resync: self.resync,
            lossless: self.lossless,
        }
    }
}

/// Counters of a publisher, kept in-process (plain integers, no atomics on the hot path).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Records committed.
    pub published: u64,
    /// Claims refused because a lossless subscriber had not caught up.
    pub back_pressured: u64,
    /// Claims refused because the message exceeded the stream's maximum.
    pub too_large: u64,
}

impl PublisherStats {
    #[cold]
    fn count_error(&mut self, e: PublishError) {
        match e {
            PublishError::BackPressured => self.back_pressured += 1,
            PublishError::TooLarge { .. } => self.too_large += 1,
        }
    }
}

/// The write side of one stream. `Send`, not `Sync`: one thread publishes.
#[derive(Debug)]
pub struct Publisher {
    inner: mdbus_shm::Producer,
    name: String,
    stats: PublisherStats,
}

impl Publisher {
    /// Reserves `len` bytes in the ring for a message of type `msg_type`; write into the
    /// returned claim and `commit()` it. Dropping the claim publishes nothing.
    #[inline]
    pub fn claim(&mut self, len: usize, msg_type: u32) -> Result<Claim<'_>, PublishError> {
        let Publisher { inner, stats, .. } = self;
        match inner.claim(len, msg_type) {
            Ok(inner) => Ok(Claim {
                inner,
                published: &mut stats.published,
            }),
            Err(e) => {
                stats.count_error(e);
                Err(e)
            }
        }
    }

    /// Copies `payload` into the ring as one record; returns its sequence number.
    #[inline(always)]
    pub fn publish(&mut self, msg_type: u32, payload: &[u8]) -> Result<u64, PublishError> {
        let result = self.inner.publish(msg_type, payload);
        self.counted(result)
    }

    /// `result` of one publish, counted in the stats.
    #[inline(always)]
    fn counted(&mut self, result: Result<u64, PublishError>) -> Result<u64, PublishError> {
        match result {
            Ok(_) => self.stats.published += 1,
            Err(e) => self.stats.count_error(e),
        }
        result
    }

    /// Publishes a normalized envelope (the bytes of a [`schema::Encoded`]) as one record of
    /// type [`ENVELOPE_MSG_TYPE`]; returns its sequence number.
    #[inline(always)]
    pub fn publish_envelope(&mut self, envelope: &[u8]) -> Result<u64, PublishError> {
        self.publish(ENVELOPE_MSG_TYPE, envelope)
    }

    /// Encodes `event` with `header` and publishes it as one envelope record; returns its
    /// sequence number. Kinds the encoder writes from a frame (order flow, trades, book
    /// updates) are written straight into the ring when the record needs nothing but
    /// writing ([`try_claim_in_place`](mdbus_shm::Producer::try_claim_in_place)). Other kinds,
    /// and records that pad, announce room or wait, are encoded aside and copied in.
    #[inline(always)]
    pub fn publish_event<E: schema::EventFields>(
        &mut self,
        encoder: &mut schema::Encoder,
        header: &schema::HeaderFields,
        event: &E,
    ) -> Result<u64, PublishError> {
        let in_place = match encoder.fixed_len::<E>() {
            Some(len) => self.inner.try_claim_in_place(len, ENVELOPE_MSG_TYPE),
            None => None,
        };
        let result = match in_place {
            Some(mut record) => {
                let written = encoder.encode_into(header, event, record.payload());
                debug_assert!(written, "the record's length is the frame's");
                Ok(record.commit())
            }
            // Another kind, or a record that pads, announces room or waits.
            None => self
                .inner
                .publish(ENVELOPE_MSG_TYPE, &encoder.encode(header, event)),
        };
        self.counted(result)
    }

    /// Hands off the records published since the last call, for the subscribers' first look
    /// at them to be served from the cache the cores share rather than from this core's (see
    /// [`Producer::hand_off`](mdbus_shm::Producer::hand_off)). Call it when a burst ends and
    /// the thread is about to wait for input; not after every publish of a busy stream.
    #[inline]
    pub fn hand_off(&mut self) {
        self.inner.hand_off();
    }

    /// Stamps the liveness heartbeat; call it from idle loops (a clock read, no system call).
    #[inline]
    pub fn heartbeat(&self) {
        self.inner.heartbeat();
    }

    /// The stream name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This publisher's epoch: new on every start, so subscribers can tell restarts apart.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch()
    }

    /// Sequence number the next committed record will carry.
    pub fn next_seq(&self) -> u64 {
        self.inner.next_seq()
    }

    /// The counters so far.
    pub fn stats(&self) -> PublisherStats {
        self.stats
    }

    /// The underlying ring producer, for what the bus does not wrap.
    pub fn ring(&mut self) -> &mut mdbus_shm::Producer {
        &mut self.inner
    }
}

/// A publisher as the sink of a venue's normalizer: each event is written straight into the
/// ring ([`Publisher::publish_event`]).
impl schema::EventSink for Publisher {
    type Out<'e> = Result<u64, PublishError>;

    #[inline(always)]
    fn put<E: schema::EventFields>(
        &mut self,
        encoder: &mut schema::Encoder,
        header: &schema::HeaderFields,
        event: &E,
    ) -> Result<u64, PublishError> {
        self.publish_event(encoder, header, event)
    }
}

/// Space reserved in a stream's ring. Write the message in place (it dereferences to exactly
/// the claimed bytes), then [`commit`](Claim::commit); dropping it publishes nothing.
#[derive(Debug)]
pub struct Claim<'a> {
    inner: mdbus_shm::Claim<'a>,
    published: &'a mut u64,
}

impl Claim<'_> {
    /// Makes the message visible to subscribers; returns its sequence number.
    #[inline]
    pub fn commit(self) -> u64 {
        *self.published += 1;
        self.inner.commit()
    }

    /// Gives the space back without publishing anything (the same as dropping the claim).
    pub fn abort(self) {
        self.inner.abort();
    }
}

impl std::ops::Deref for Claim<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.inner
    }
}

impl std::ops::DerefMut for Claim<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.inner
    }
}

/// One message handed to a subscriber's callback, borrowed from shared memory.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    record: mdbus_shm::Record<'a>,
}

impl<'a> Message<'a> {
    /// The message bytes, in place in the ring.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.record.payload()
    }

    /// The type tag the publisher gave the message.
    #[inline]
    pub fn msg_type(&self) -> u32 {
        self.record.msg_type()
    }

    /// The stream sequence number: consecutive, so a jump is a loss.
    #[inline]
    pub fn seq(&self) -> u64 {
        self.record.seq()
    }
}

/// A normalized envelope handed to [`Subscriber::poll_event`]'s callback: a typed
/// FlatBuffers view, borrowed (from shared memory, or from the subscriber's copy).
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    envelope: schema::Envelope<'a>,
    seq: u64,
}

impl<'a> Event<'a> {
    /// The typed view: header (source sequence, timestamps, locate) and the event union.
    #[inline]
    pub fn envelope(&self) -> schema::Envelope<'a> {
        self.envelope
    }

    /// The bus stream's sequence number of this record.
    #[inline]
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// Hands one record to a typed-read callback: records of another type are counted in
/// `foreign`, envelopes failing verification (when not `trusted`) in `invalid`; the rest are
/// counted in `received` and delivered as a view over `bytes`.
///
/// # Safety
/// If `trusted`, `bytes` must be an envelope built by [`schema::Encoder`] (this schema version
/// or a later one) and must not change while `f` runs.
#[inline]
unsafe fn deliver_envelope<F: FnMut(Event<'_>)>(
    stats: &mut SubscriberStats,
    trusted: bool,
    msg_type: u32,
    bytes: &[u8],
    seq: u64,
    f: &mut F,
) {
    if msg_type != ENVELOPE_MSG_TYPE {
        stats.foreign += 1;
        return;
    }
    let envelope = if trusted {
        // SAFETY: the caller guarantees encoder-built, unchanging bytes when `trusted`.
        unsafe { schema::read_trusted(bytes) }
    } else {
        match schema::read_verified(bytes) {
            Ok(envelope) => envelope,
            Err(_) => {
                stats.invalid += 1;
                return;
            }
        }
    };
    stats.received += 1;
    f(Event { envelope, seq });
}

/// The header `seq` of `bytes` read as an envelope: `None` if `bytes` fail verification (not
/// `trusted`) or is not an envelope.
///
/// # Safety
/// If `trusted`, `bytes` must be an envelope built by [`schema::Encoder`] (this schema version
/// or a later one) and must not change during the call.
#[inline]
unsafe fn envelope_seq(trusted: bool, bytes: &[u8]) -> Option<u64> {
    if trusted {
        // SAFETY: the caller guarantees encoder-built, unchanging bytes when `trusted`.
        Some(unsafe { schema::read_trusted(bytes) }.header().seq())
    } else {
        schema::read_verified(bytes).ok().map(|e| e.header().seq())
    }
}

/// Counters of a subscriber, kept in-process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Messages handed to callbacks (including any later reported as overrun; in typed
    /// reads, envelopes delivered).
    pub received: u64,
    /// Times the publisher lapped this subscriber.
    pub overruns: u64,
    /// Messages lost to overruns, exactly.
    pub lost: u64,
    /// Typed reads: records that failed verification (counted, skipped).
    pub invalid: u64,
    /// Typed reads: records of another type than [`ENVELOPE_MSG_TYPE`] (counted, skipped).
    pub foreign: u64,
}

/// The read side of one stream: one cursor. `Send`, not `Sync`.
#[derive(Debug)]
pub struct Subscriber {
    inner: mdbus_shm::Consumer,
    name: String,
    stats: SubscriberStats,
    trust: Trust,
    /// Typed reads that cannot be in place copy each record here first (sized once, at
    /// subscription, to the stream's maximum message length).
    scratch: Box<[u8]>,
}

impl Subscriber {
    /// Delivers at most one message to `f`. `Ok(true)`: one was delivered; `Ok(false)`:
    /// nothing new.
    ///
    /// On a broadcast stream the view a callback gets is checked after the callback returns;
    /// [`ReceiveError::Overrun`] means the publisher lapped this subscriber, possibly while
    /// the callback ran: discard what that callback derived. The error says exactly which
    /// sequence numbers were lost, and the next poll resumes per [`SubscribeOptions::resync`].
    #[inline]
    pub fn poll<F: FnMut(Message<'_>)>(&mut self, mut f: F) -> Result<bool, ReceiveError> {
        let received = &mut self.stats.received;
        let result = self.inner.poll(|record| {
            *received += 1;
            f(Message { record })
        });
        self.count(result)
    }

    /// Delivers up to `max` messages to `f`; returns how many.
    #[inline]
    pub fn poll_batch<F: FnMut(Message<'_>)>(
        &mut self,
        max: usize,
        mut f: F,
    ) -> Result<usize, ReceiveError> {
        let received = &mut self.stats.received;
        let result = self.inner.poll_batch(max, |record| {
            *received += 1;
            f(Message { record })
        });
        self.count(result)
    }

    /// Counts an overrun. Takes the result apart and builds it again rather than handing it
    /// on whole: a poll's result is written a field at a time, and copying it as one block
    /// reads those fields back in wider loads, which wait for the stores to reach the cache.
    #[inline(always)]
    fn count<T>(&mut self, result: Result<T, ReceiveError>) -> Result<T, ReceiveError> {
        match result {
            Ok(value) => Ok(value),
            Err(e) => Err(self.count_error(e)),
        }
    }

    #[cold]
    #[inline(never)]
    fn count_error(&mut self, e: ReceiveError) -> ReceiveError {
        if let ReceiveError::Overrun { lost, .. } = e {
            self.stats.overruns += 1;
            self.stats.lost += lost;
        }
        e
    }

    /// Delivers at most one normalized envelope, as a typed FlatBuffers view, to `f`.
    ///
    /// While this subscriber holds its slot on a lossless stream, the view reads the record in
    /// place (zero-copy: the publisher does not overwrite a record a registered subscriber has
    /// not consumed). Otherwise (a broadcast stream, a lossless one read without a slot, or a
    /// slot the publisher took back because this subscriber's pid looked dead) a publisher
    /// could rewrite the bytes under a view, and a FlatBuffers view over changing bytes can
    /// read out of bounds; so the record is first copied out (envelopes are 72 to 256 bytes),
    /// the copy checked against an overrun, and the view made over the copy. Then, per
    /// [`SubscribeOptions::trust`], the envelope is verified (the default: one that fails is
    /// counted in [`SubscriberStats::invalid`] and skipped) or trusted.
    ///
    /// Records of other types are counted in [`SubscriberStats::foreign`] and skipped.
    /// Returns `Ok(true)` when a record was consumed (delivered or skipped).
    #[inline]
    pub fn poll_event<F: FnMut(Event<'_>)>(&mut self, mut f: F) -> Result<bool, ReceiveError> {
        if self.inner.is_registered() {
            // In place: a batch of one.
            self.poll_in_place(1, &mut f).map(|n| n > 0)
        } else {
            self.poll_copied(&mut f)
        }
    }

    /// Delivers up to `max` normalized envelopes to `f`, as [`poll_event`](Self::poll_event)
    /// does one by one, and returns how many records were consumed (delivered or skipped).
    ///
    /// While this subscriber holds its lossless slot the batch is one pass over the ring: the
    /// subscriber's position, which the publisher reads to know how much room it has, is
    /// published once per batch instead of once per message (one cache-line transfer to the
    /// publisher's core per batch). Otherwise each record is copied out and checked as
    /// `poll_event` does. On an error the envelopes delivered before it stand (an
    /// [`ReceiveError::Overrun`] concerns only the last callback, as for `poll_event`).
    #[inline]
    pub fn poll_event_batch<F: FnMut(Event<'_>)>(
        &mut self,
        max: usize,
        mut f: F,
    ) -> Result<usize, ReceiveError> {
        if self.inner.is_registered() {
            return self.poll_in_place(max, &mut f);
        }
        let mut n = 0;
        while n < max && self.poll_copied(&mut f)? {
            n += 1;
        }
        Ok(n)
    }

    /// Registered subscriber of a lossless stream: up to `max` envelopes as views over the
    /// ring itself (the position is published once, after the batch). A record that is not
    /// [stable](mdbus_shm::Record::is_stable) (the slot was found taken from this subscriber
    /// just before it; the batch ends with it) is copied out and delivered only once the
    /// poll has checked it, as `poll_copied` does.
    #[inline]
    fn poll_in_place<F: FnMut(Event<'_>)>(
        &mut self,
        max: usize,
        f: &mut F,
    ) -> Result<usize, ReceiveError> {
        let stats = &mut self.stats;
        let trusted = self.trust.is_trusted();
        let scratch = &mut self.scratch;
        let mut copied = None;
        let result = self.inner.poll_batch(max, |record| {
            if !record.is_stable() {
                let n = record.payload().len().min(scratch.len());
                scratch[..n].copy_from_slice(&record.payload()[..n]);
                copied = Some((record.msg_type(), record.seq(), n));
                return;
            }
            // SAFETY: if `trusted`, the subscriber was created with `Trust::publisher()`, whose
            // contract is that envelope records are built by `schema::Encoder`. The record is
            // stable: this subscriber held its lossless slot when the callback started, and the
            // publisher overwrites a registered subscriber's unread bytes only after freeing
            // its slot, which it does only once the slot's pid no longer exists, while this
            // process is running the callback (see `Record::is_stable` for what that assumes).
            // `poll_batch` publishes the position past the record only after the callback
            // returned, so the bytes do not change while `deliver_envelope` reads them.
            unsafe {
                deliver_envelope(
                    stats,
                    trusted,
                    record.msg_type(),
                    record.payload(),
                    record.seq(),
                    f,
                )
            }
        });
        if let (Ok(_), Some((msg_type, seq, n))) = (&result, copied) {
            // `scratch` holds `max_msg_len` bytes, so the whole record was copied.
            // SAFETY: if `trusted`, envelope records are built by `schema::Encoder` (as above);
            // `poll_batch` returned `Ok` only after checking that the producer did not touch
            // the bytes copied into `scratch`, which is ours alone, so they cannot change
            // under the view.
            unsafe {
                deliver_envelope(
                    &mut self.stats,
                    trusted,
                    msg_type,
                    &self.scratch[..n],
                    seq,
                    f,
                )
            };
        }
        self.count(result)
    }

    /// Not registered (a broadcast stream, or a lossless one without a slot): at most one
    /// envelope, copied out and checked before the view is made.
    #[inline]
    fn poll_copied<F: FnMut(Event<'_>)>(&mut self, f: &mut F) -> Result<bool, ReceiveError> {
        let stats = &mut self.stats;
        let trusted = self.trust.is_trusted();
        let result = match self.inner.poll_copy(&mut self.scratch) {
            Ok(None) => Ok(false),
            Ok(Some(info)) => {
                // `scratch` holds `max_msg_len` bytes, so the whole record was copied.
                let bytes = &self.scratch[..info.copied];
                // SAFETY: if `trusted`, the subscriber was created with `Trust::publisher()`
                // (envelope records are built by `schema::Encoder`); `poll_copy` returned the
                // bytes only after checking that no overrun touched them, and `scratch` is ours
                // alone, so they cannot change under the view.
                unsafe { deliver_envelope(stats, trusted, info.msg_type, bytes, info.seq, f) };
                Ok(true)
            }
            Err(e) => Err(e),
        };
        self.count(result)
    }

    /// The source sequence number (the envelope header's `seq`) of the next normalized
    /// envelope, without consuming it: the next [`poll_event`](Self::poll_event) delivers
    /// that envelope. `Ok(None)`: nothing new.
    ///
    /// Records that `poll_event` would skip (another record type, or an envelope failing
    /// verification when not trusted) are consumed and counted here, as `poll_event` counts
    /// them. A record that cannot be read in place (see `poll_event`) is copied out first and
    /// used only once checked against an overrun, as `poll_event` does. An overrun or a closed stream is reported
    /// here, and counted, as `poll_event` would have.
    pub fn peek_source_seq(&mut self) -> Result<Option<u64>, ReceiveError> {
        let trusted = self.trust.is_trusted();
        loop {
            // `Some(Some(seq))`: an envelope; `Some(None)`: a record poll_event skips.
            let mut found: Option<Option<u64>> = None;
            let mut copied = 0;
            let scratch = &mut self.scratch;
            let result = self.inner.peek(|record| {
                if record.msg_type() != ENVELOPE_MSG_TYPE {
                    found = Some(None);
                } else if record.is_stable() {
                    // SAFETY: as in `poll_in_place`: if `trusted`, the records are built by
                    // `schema::Encoder`; the record is stable (this subscriber held its slot
                    // as the callback started), so the publisher does not overwrite it while
                    // this process runs the callback.
                    found = Some(unsafe { envelope_seq(trusted, record.payload()) });
                } else {
                    let n = record.payload().len().min(scratch.len());
                    scratch[..n].copy_from_slice(&record.payload()[..n]);
                    copied = n;
                }
            });
            if !self.count(result)? {
                return Ok(None);
            }
            let seq = match found {
                Some(seq) => seq,
                // SAFETY: as in `poll_copied`: `peek` returned `Ok(true)`
                // only after checking that no overrun touched the bytes copied into
                // `scratch`, which is ours alone; if `trusted`, records are encoder-built.
                None => unsafe { envelope_seq(trusted, &self.scratch[..copied]) },
            };
            if let Some(seq) = seq {
                return Ok(Some(seq));
            }
            // Skipped by `poll_event`: consume it there, where it is counted.
            self.poll_event(|_| {})?;
        }
    }

    /// Waits until a message is readable, using `strategy`, for at most `timeout` (forever if
    /// `None`). Returns whether something is readable; consumes nothing.
    pub fn wait(
        &mut self,
        strategy: &WaitStrategy,
        timeout: Option<Duration>,
    ) -> Result<bool, ReceiveError> {
        self.inner.wait(strategy, timeout)
    }

    /// Whether the stream's publisher is alive, judged by its pid and heartbeat (a heartbeat
    /// older than `timeout` counts as dead).
    pub fn producer_status(&self, timeout: Duration) -> ProducerStatus {
        self.inner.producer_status(timeout)
    }

    /// Sequence number of the next message this subscriber expects.
    pub fn next_seq(&self) -> u64 {
        self.inner.next_seq()
    }

    /// Whether this subscriber holds a lossless slot (the publisher waits for it and typed
    /// reads are in place): false on a broadcast stream, without
    /// [`SubscribeOptions::lossless`], and from the poll that found the slot taken back (the
    /// publisher judged this subscriber's pid dead; it then reads validated copies and reports
    /// what was overwritten as [`ReceiveError::Overrun`]).
    pub fn is_registered(&self) -> bool {
        self.inner.is_registered()
    }

    /// The publisher's epoch this subscriber is reading.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch()
    }

    /// After [`ReceiveError::NewEpoch`] (the publisher restarted): map the new segment.
    pub fn reopen(&mut self) -> Result<mdbus_shm::EpochChange, BusError> {
        self.inner.reopen().map_err(|source| BusError::Segment {
            stream: self.name.clone(),
            source,
        })
    }

    /// The stream name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The counters so far.
    pub fn stats(&self) -> SubscriberStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        for bad in ["", ".hidden", "a/b", "../x", "sp ace", &"x".repeat(65)] {
            assert!(
                matches!(bus.stream_path(bad), Err(BusError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        let path = bus.stream_path("itch.AAPL-1_bbo").unwrap();
        assert_eq!(path, dir.path().join("itch.AAPL-1_bbo.ring"));
    }

    #[test]
    fn publish_and_poll_count() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let mut publisher = bus.publisher("s", &StreamConfig::default()).unwrap();
        let mut subscriber = bus.subscriber("s", &SubscribeOptions::default()).unwrap();
        for i in 0..100u32 {
            publisher.publish(1, &i.to_le_bytes()).unwrap();
        }
        let mut got = Vec::new();
        while subscriber
            .poll_batch(16, |m| {
                got.push(u32::from_le_bytes(m.payload().try_into().unwrap()))
            })
            .unwrap()
            > 0
        {}
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(publisher.stats().published, 100);
        assert_eq!(subscriber.stats().received, 100);
        let too_big = vec![0u8; publisher.ring().config().max_msg_len as usize + 1];
        assert!(matches!(
            publisher.publish(1, &too_big),
            Err(PublishError::TooLarge { .. })
        ));
        assert_eq!(publisher.stats().too_large, 1);
    }

    #[test]
    fn a_stream_without_publisher_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let err = bus
            .subscriber("nobody", &SubscribeOptions::default())
            .unwrap_err();
        assert!(err.to_string().contains("nobody"), "{err}");
    }
}
