//! The sans-IO heart of the exchange: messages in, MoldUDP64 packets out, batched as a feed
//! batches them, kept in a retransmission store that answers re-requests. No sockets and no
//! clock: the driver passes `due` times and `now`, and sends what the callbacks are handed.

use std::net::SocketAddr;

use mdbus_codecs::moldudp64::{
    END_OF_SESSION_COUNT, HEADER_LEN, HEARTBEAT_COUNT, MAX_MESSAGE_COUNT, Session, encode_header,
};
use mdbus_codecs::retransmit::{RequestError, RetransmitStore};

use super::{ExchangeError, ExchangeStats};

/// How a [`Playout`] numbers, batches and keeps its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlayoutConfig {
    /// The MoldUDP64 session.
    pub session: Session,
    /// Largest datagram, MoldUDP64 header included.
    pub max_datagram: usize,
    /// A message due within this many ns of the first message of the open packet joins it.
    pub flush_window_ns: u64,
    /// Messages the retransmission store holds.
    pub store_messages: usize,
    /// Message bytes the retransmission store holds.
    pub store_bytes: usize,
    /// Messages per second answered to each requesting host (0: no limit).
    pub reply_rate: u64,
    /// Messages a host may be answered at once.
    pub reply_burst: u64,
    /// Most messages answered per request.
    pub max_reply_messages: u16,
}

/// Builds a session's packets and answers re-requests; see the [module docs](super) for the
/// batching rule. Sequence numbers start at 1. Allocates only at construction.
#[derive(Debug)]
pub struct Playout {
    session: Session,
    pkt: Box<[u8]>,
    len: usize,
    count: u16,
    /// Sequence number of the first message of the open packet.
    pkt_seq: u64,
    /// Sequence number the next message gets.
    next_seq: u64,
    /// Exchange timestamp and due time of the open packet's first message.
    open_ts: u64,
    open_due: u64,
    window_ns: u64,
    store: RetransmitStore,
    stats: ExchangeStats,
}

impl Playout {
    /// A session that has sent nothing yet; the next message is number 1.
    pub fn new(cfg: &PlayoutConfig) -> Result<Playout, ExchangeError> {
        let min = HEADER_LEN + 2 + 1;
        if cfg.max_datagram < min || cfg.max_datagram > crate::net::socket::MAX_DATAGRAM {
            return Err(ExchangeError::Config(format!(
                "max datagram {} must be {min}..={} bytes",
                cfg.max_datagram,
                crate::net::socket::MAX_DATAGRAM
            )));
        }
        let store = crate::net::reply_store(
            cfg.session,
            cfg.max_datagram,
            cfg.store_messages,
            cfg.store_bytes,
            cfg.max_reply_messages,
            cfg.reply_rate,
            cfg.reply_burst,
        )
        .map_err(ExchangeError::Config)?;
        Ok(Playout {
            session: cfg.session,
            pkt: vec![0u8; cfg.max_datagram].into_boxed_slice(),
            len: HEADER_LEN,
            count: 0,
            pkt_seq: 1,
            next_seq: 1,
            open_ts: 0,
            open_due: 0,
            window_ns: cfg.flush_window_ns,
            store,
            stats: ExchangeStats::default(),
        })
    }

    /// The session.
    pub fn session(&self) -> Session {
        self.session
    }

    /// The sequence number the next message gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Messages in the packet being filled.
    pub fn open_count(&self) -> u16 {
        self.count
    }

    /// The counters this side keeps (messages, packets, heartbeats, end of session,
    /// re-requests, oversize).
    pub fn stats(&self) -> &ExchangeStats {
        &self.stats
    }

    /// When the open packet must go out whatever comes next (its first message's due time
    /// plus the flush window); `None` when no packet is open.
    pub fn flush_deadline(&self) -> Option<u64> {
        (self.count > 0).then(|| self.open_due.saturating_add(self.window_ns))
    }

    /// Whether a message of `len` bytes stamped `ts` and due at `due` joins the open packet:
    /// one is open, the message fits, and it has the first message's exchange timestamp or
    /// is due within the flush window of it.
    #[inline]
    pub fn joins(&self, len: usize, ts: u64, due: u64) -> bool {
        self.count > 0
            && self.count < MAX_MESSAGE_COUNT
            && len.saturating_add(2) <= self.pkt.len() - self.len
            && (ts == self.open_ts || due <= self.open_due.saturating_add(self.window_ns))
    }

    /// Adds `msg` (stamped `ts`, due at `due`), first sending the open packet through `send`
    /// when the message does not join it. A message that cannot fit in any packet is not
    /// sent and gets no sequence number: counted in `oversize`, `false` returned.
    #[inline]
    pub fn offer(&mut self, ts: u64, due: u64, msg: &[u8], send: &mut impl FnMut(&[u8])) -> bool {
        let need = msg.len().saturating_add(2);
        if need > self.pkt.len() - HEADER_LEN {
            self.stats.oversize += 1;
            return false;
        }
        if self.count > 0 && !self.joins(msg.len(), ts, due) {
            self.flush(send);
        }
        if self.count == 0 {
            self.pkt_seq = self.next_seq;
            self.open_ts = ts;
            self.open_due = due;
        }
        let at = self.len;
        // Fits: at most the packet's room (checked above, the packet flushed if needed).
        self.pkt[at..at + 2].copy_from_slice(&(msg.len() as u16).to_be_bytes());
        self.pkt[at + 2..at + need].copy_from_slice(msg);
        self.len += need;
        self.count += 1;
        self.next_seq = self.next_seq.saturating_add(1);
        true
    }

    /// Sends the open packet, if any, through `send`, and keeps its messages for
    /// re-requests; `true` when one was sent.
    pub fn flush(&mut self, send: &mut impl FnMut(&[u8])) -> bool {
        if self.count == 0 {
            return false;
        }
        // Refusals cannot happen (every block fits a packet of the store's `max_packet_len`
        // and the sequence space starts at 1); counted should one ever.
        self.stats.store_errors += crate::net::seal_packet(
            &mut self.pkt,
            self.len,
            self.session,
            self.pkt_seq,
            self.count,
            &mut self.store,
        );
        self.stats.packets += 1;
        self.stats.messages += u64::from(self.count);
        send(&self.pkt[..self.len]);
        self.len = HEADER_LEN;
        self.count = 0;
        true
    }

    /// Sends a heartbeat (the open packet first, if any).
    pub fn heartbeat(&mut self, send: &mut impl FnMut(&[u8])) {
        self.flush(send);
        self.control(HEARTBEAT_COUNT, send);
        self.stats.heartbeats += 1;
    }

    /// Sends an end-of-session packet (the open packet first, if any).
    pub fn end_of_session(&mut self, send: &mut impl FnMut(&[u8])) {
        self.flush(send);
        self.control(END_OF_SESSION_COUNT, send);
        self.stats.end_of_session += 1;
    }

    fn control(&mut self, count: u16, send: &mut impl FnMut(&[u8])) {
        let mut hdr = [0u8; HEADER_LEN];
        // The array is exactly a header long.
        let _ = encode_header(&mut hdr, self.session, self.next_seq, count);
        send(&hdr);
    }

    /// Answers one re-request from `from` (its bytes `req`), handing each answer packet to
    /// `send_to`; counts it. Rate limited per host as the bus's own sender is.
    pub fn handle_request(
        &mut self,
        now: u64,
        from: SocketAddr,
        req: &[u8],
        send_to: &mut impl FnMut(&[u8]),
    ) -> Result<(), RequestError> {
        self.stats.requests += 1;
        let r = self.store.handle_request(now, from, req, |p: &[u8]| {
            self.stats.retransmit_packets += 1;
            send_to(p)
        });
        match r {
            Ok(reply) => {
                self.stats.retransmit_messages += reply.messages;
                if reply.not_available_below.is_some() {
                    self.stats.not_available += 1;
                }
            }
            // Counted by the store.
            Err(RequestError::RateLimited) => {}
            Err(_) => self.stats.bad_requests += 1,
        }
        let st = self.store.stats();
        self.stats.rate_limited = st.rate_limited;
        self.stats.untracked_sources = st.untracked_sources;
        r.map(|_| ())
    }
}
