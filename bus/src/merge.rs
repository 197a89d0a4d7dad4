//! Reading several streams of one source as one, in source order.
//!
//! A service that derives several streams from one input (the book service writes
//! `<feed>.book`, `<feed>.levels` and `<feed>.trades`) stamps every event with the source
//! sequence number of the input message it came from. A reader of two of them wants the
//! events in that order: a trade after the quote change its execution caused, before the
//! next message's quote. [`SourceMerge`] delivers the next event of the stream whose next
//! envelope has the lowest source sequence number (ties: the stream given first), looking at
//! each stream's next envelope with [`Subscriber::peek_source_seq`].
//!
//! **Exact when the streams are written in source order by one thread**, as the book service
//! writes its outputs: everything it published for an input message is committed before
//! anything for a later message. A stream found empty is looked at again after every value
//! it is compared with was seen, so that whatever it got meanwhile for an earlier message is
//! visible then (the publisher committed it before the record it is compared with, which
//! this reader has seen). Streams written by unrelated publishers are merged by sequence
//! number as far as their records have arrived.

use std::time::Duration;

use crate::{Event, ReceiveError, Subscriber, WaitStrategy};

/// What stopped a [`SourceMerge`] read: the stream and what its subscriber said.
#[derive(Debug, thiserror::Error)]
#[error("stream {stream:?}: {source}")]
pub struct MergeError {
    /// Index of the stream in the merge.
    pub index: usize,
    /// Its name.
    pub stream: String,
    /// What the subscriber reported ([`ReceiveError::Overrun`]: lost records, the merge goes
    /// on from the stream's next record when polled again).
    pub source: ReceiveError,
}

/// `N` subscribers read as one stream in source order; see the [module docs](self).
#[derive(Debug)]
pub struct SourceMerge<const N: usize> {
    subs: [Subscriber; N],
    /// Source sequence number of each stream's next envelope, when known (looked at and not
    /// consumed since).
    next: [Option<u64>; N],
    /// Streams that will deliver nothing more: closed by their publisher, or ended by the
    /// reader ([`end`](Self::end)).
    ended: [bool; N],
}

impl<const N: usize> SourceMerge<N> {
    /// Merges `subs`; on equal source sequence numbers the earlier in `subs` comes first.
    pub fn new(subs: [Subscriber; N]) -> Self {
        SourceMerge {
            subs,
            next: [None; N],
            ended: [false; N],
        }
    }

    /// Delivers the next event in source order to `f`, with the index of its stream.
    /// `Ok(true)`: one was consumed; `Ok(false)`: nothing to read now (or every stream ended).
    /// A stream whose publisher closed it counts as ended, not as an error.
    #[inline]
    pub fn poll<F: FnMut(usize, Event<'_>)>(&mut self, mut f: F) -> Result<bool, MergeError> {
        // Look at every stream whose next envelope is unknown; while that finds one, look
        // again at those still empty (see the module docs). At most `N` passes.
        loop {
            let mut found = false;
            for k in 0..N {
                if !self.ended[k] && self.next[k].is_none() {
                    self.next[k] = self.peek(k)?;
                    found |= self.next[k].is_some();
                }
            }
            if !found || (0..N).all(|k| self.ended[k] || self.next[k].is_some()) {
                break;
            }
        }
        let mut best: Option<(usize, u64)> = None;
        for k in 0..N {
            if let Some(seq) = self.next[k]
                && !self.ended[k]
                && best.is_none_or(|(_, b)| seq < b)
            {
                best = Some((k, seq));
            }
        }
        let Some((k, _)) = best else {
            return Ok(false);
        };
        self.next[k] = None;
        match self.subs[k].poll_event(|e| f(k, e)) {
            Ok(got) => Ok(got),
            Err(ReceiveError::Closed) => {
                self.ended[k] = true;
                Ok(false)
            }
            Err(source) => Err(self.error(k, source)),
        }
    }

    fn peek(&mut self, k: usize) -> Result<Option<u64>, MergeError> {
        match self.subs[k].peek_source_seq() {
            Ok(seq) => Ok(seq),
            Err(ReceiveError::Closed) => {
                self.ended[k] = true;
                Ok(None)
            }
            Err(source) => Err(self.error(k, source)),
        }
    }

    fn error(&self, index: usize, source: ReceiveError) -> MergeError {
        MergeError {
            index,
            stream: self.subs[index].name().to_owned(),
            source,
        }
    }

    /// Stops reading stream `k` (its session ended, say): the merge no longer waits for it.
    pub fn end(&mut self, k: usize) {
        self.ended[k] = true;
        self.next[k] = None;
    }

    /// Whether stream `k` ended (closed, or [`end`](Self::end)ed).
    pub fn is_ended(&self, k: usize) -> bool {
        self.ended[k]
    }

    /// Whether every stream ended.
    pub fn all_ended(&self) -> bool {
        self.ended.iter().all(|e| *e)
    }

    /// Waits with `strategy`, for at most `timeout`, until the first stream that has not ended
    /// has something to read (the others are looked at on the next poll). Returns at once
    /// when every stream ended.
    pub fn wait(&mut self, strategy: &WaitStrategy, timeout: Duration) {
        if let Some(k) = (0..N).find(|k| !self.ended[*k]) {
            let _ = self.subs[k].wait(strategy, Some(timeout));
        }
    }

    /// Subscriber `k` (its name, counters).
    pub fn subscriber(&self, k: usize) -> &Subscriber {
        &self.subs[k]
    }

    /// The subscribers back.
    pub fn into_inner(self) -> [Subscriber; N] {
        self.subs
    }
}
