//! The network transport: carries a bus stream from one host to many over UDP multicast,
//! with nothing lost that can be recovered and every unrecoverable loss reported.
//!
//! ```text
//!  host A                                              host B (and C, ...)
//!  publisher -> ring "s" -> Sender --- multicast --->  Receiver -> ring "s" -> subscribers
//!                             |    <-- re-requests ---   |  (gap detect, NAK, A/B)
//!                             +--- unicast answers --->  +
//! ```
//!
//! * [`Sender`] reads a local stream (a broadcast subscriber: the publisher never waits for
//!   the network) and multicasts its records in MoldUDP64 packets ([`wire`]): batched up to
//!   a datagram size, flushed as soon as the ring is drained (or after a flush deadline),
//!   heartbeats when idle, end of session on a clean stop. It keeps a bounded
//!   retransmission store and answers re-requests on a unicast port, rate limited per host
//!   (whatever its source ports) and in total; a request for messages no longer held gets a
//!   "not available" answer. A publisher that dies without closing the stream ends the
//!   session too: what it committed is sent, then a gap notice, then the end of session.
//! * [`Receiver`] joins the group (any-source or source-specific, optionally a second line
//!   for A/B arbitration), detects gaps, duplicates and reordering with the sans-IO
//!   [`Sequencer`](mdbus_codecs::sequencer::Sequencer), re-requests what is missing, and
//!   publishes in order into a local stream, so strategies there read it exactly as they
//!   would locally. What cannot be recovered becomes a gap notice
//!   ([`GapScope::Transport`](mdbus_bus::schema::GapScope)) at its place in the stream, and so
//!   does what a full lossless local ring could not take (the loop waits for it briefly,
//!   never for long). It follows one session at a time: another session of the stream is
//!   followed only once the current one ended or went silent (or at once, for a newer one,
//!   when configured so), and sequence numbers that jump implausibly far are held off by the
//!   sequencer until corroborated.
//! * Records the sender itself could not read (its ring overran it) travel as a gap notice
//!   with [`GapScope::Stream`](mdbus_bus::schema::GapScope), so receivers learn of that loss too.
//! * [`driver`] is the one receive loop of every sequenced feed: sockets, fault injector,
//!   session following, re-requests, idle strategy and counters around the sequencer,
//!   generic over a [`FeedSink`](driver::FeedSink). The [`Receiver`] is one sink of it
//!   (envelopes into a local ring), the live feed handler ([`crate::live`]) another (decode,
//!   normalize, publish).
//! * [`iex`] is the driver's second framing: IEX-TP segments placed in one sequence over
//!   the session's restarts and arbitrated between lines A and B by the same sequencer.
//!
//! Both loops are single threads that busy-poll nonblocking sockets (or yield, or sleep),
//! allocate nothing after setup, and publish their counters ([`mdbus_shm::counters`]) for `mdbus stat`.
//! A seeded [`fault`] injector, off unless configured, drops, duplicates, reorders,
//! truncates and garbles datagrams for tests and benchmarks.

pub mod driver;
pub mod fault;
pub mod iex;
mod rx;
pub mod socket;
mod tx;
pub mod wire;

use std::time::{Duration, Instant};

pub use driver::{LineConfig, RequestServer, RxProgress};
pub use rx::{Receiver, ReceiverConfig, ReceiverStats};
pub use tx::{Sender, SenderConfig, SenderStats};

use mdbus_bus::BusError;
use mdbus_shm::unix_ns;

/// What a transport loop does when it found nothing to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Spin (`spin_loop` hint): the lowest latency, a whole core.
    BusyPoll,
    /// Yield the core to other threads, then poll again.
    Yield,
    /// Sleep this long (for shared machines and tests; adds up to that much latency).
    Sleep(Duration),
}

impl Idle {
    /// Waits once, as configured.
    #[inline]
    pub fn wait(self) {
        match self {
            Idle::BusyPoll => std::hint::spin_loop(),
            Idle::Yield => std::thread::yield_now(),
            Idle::Sleep(d) => std::thread::sleep(d),
        }
    }
}

/// The transport could not be set up or could not go on.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A socket could not be set up.
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    /// A stream could not be opened or created.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A configuration value cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// The thread could not be pinned.
    #[error(transparent)]
    Pin(#[from] mdbus_tuning::TuneError),
    /// The counters file could not be created.
    #[error(transparent)]
    Counters(#[from] mdbus_shm::counters::CounterError),
    /// A stream's records are damaged.
    #[error("stream {stream:?}: {what}")]
    Stream {
        /// The stream.
        stream: String,
        /// What went wrong.
        what: String,
    },
}

/// A monotonic nanosecond clock from a fixed start (vDSO reads, no system call).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mono(Instant);

impl Mono {
    pub(crate) fn new() -> Self {
        Mono(Instant::now())
    }

    #[inline]
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The store a re-request server answers from, as the bus's sender and the exchange set it up:
/// `session` numbered from 1, answers of at most `max_datagram` bytes and
/// `max_reply_messages` messages, `reply_rate` messages a second per host (bursts of
/// `reply_burst`), holding the last `store_messages` messages or `store_bytes` bytes.
pub(crate) fn reply_store(
    session: mdbus_codecs::moldudp64::Session,
    max_datagram: usize,
    store_messages: usize,
    store_bytes: usize,
    max_reply_messages: u16,
    reply_rate: u64,
    reply_burst: u64,
) -> Result<mdbus_codecs::retransmit::RetransmitStore, String> {
    use mdbus_codecs::retransmit::{RetransmitConfig, RetransmitStore};
    RetransmitStore::new(RetransmitConfig {
        first_seq: 1,
        capacity_messages: store_messages,
        capacity_bytes: store_bytes,
        max_packet_len: max_datagram,
        max_reply_messages,
        max_reply_packets: u16::MAX,
        rate_messages_per_sec: reply_rate,
        burst_messages: reply_burst,
        max_sources: 256,
        ..RetransmitConfig::new(session)
    })
    .map_err(|e| format!("retransmission store: {e}"))
}

/// Finishes a MoldUDP64 packet of `count` messages from `first_seq` filled into `pkt[..len]`
/// (blocks after the header) and keeps its messages in `store` for re-requests, as the sender
/// and the exchange both do before a packet goes out. Returns how many messages the store
/// refused (none when every block fits the store's packet size and sequence space).
pub(crate) fn seal_packet(
    pkt: &mut [u8],
    len: usize,
    session: mdbus_codecs::moldudp64::Session,
    first_seq: u64,
    count: u16,
    store: &mut mdbus_codecs::retransmit::RetransmitStore,
) -> u64 {
    use mdbus_codecs::moldudp64::{HEADER_LEN, encode_header};
    // The buffer is at least a header long (both callers check at construction).
    let _ = encode_header(pkt, session, first_seq, count);
    let mut refused = 0;
    let mut off = HEADER_LEN;
    while off + 2 <= len {
        let l = usize::from(u16::from_be_bytes([pkt[off], pkt[off + 1]]));
        if store.push(&pkt[off + 2..off + 2 + l]).is_err() {
            refused += 1;
        }
        off += 2 + l;
    }
    refused
}

/// Bytes reserved for an encoded gap notice (one is about 100 bytes).
pub(crate) const NOTICE_MAX: usize = 256;

/// Encodes an unrecoverable gap notice for `count` messages from `first` (in the sequence
/// numbers `scope` names) into `buf`; returns its length.
pub(crate) fn encode_gap_notice(
    enc: &mut mdbus_bus::schema::Encoder,
    buf: &mut [u8; NOTICE_MAX],
    first: u64,
    count: u64,
    scope: mdbus_bus::schema::GapScope,
) -> usize {
    let header = mdbus_bus::schema::HeaderFields {
        seq: first,
        recv_ts_ns: unix_ns(),
        ..Default::default()
    };
    let fields = mdbus_bus::schema::GapNoticeFields {
        first_missing_seq: first,
        count,
        recoverable: false,
        scope,
    };
    let bytes = enc.gap_notice(&header, &fields).as_bytes();
    let n = bytes.len().min(NOTICE_MAX);
    buf[..n].copy_from_slice(&bytes[..n]);
    n
}
