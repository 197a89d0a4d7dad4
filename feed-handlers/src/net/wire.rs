//! What the transport puts on the wire: MoldUDP64 sessions named after the stream, and one
//! bus record per MoldUDP64 message.
//!
//! ```text
//!  session (10 ASCII bytes)            message block (MoldUDP64 length, then:)
//!  +-----+---------+                   +----------------+----------------------+
//!  | tag | epoch   |                   | msg_type u32LE | payload (record)     |
//!  | 3   | 7       |                   | 4 bytes        | 0.. bytes            |
//!  +-----+---------+                   +----------------+----------------------+
//! ```
//!
//! * **tag**: three base-36 characters derived from the stream name (FNV-1a), so a receiver
//!   ignores, and counts, the packets of another stream sent to the same group and port;
//! * **epoch**: seven base-36 characters, the sender's start time in 10 ms units since
//!   2025-01-01 UTC (good until 2049), made strictly larger for each new session of one sender;
//!   a sender starts on the next tick after it is made, so one restarted at once is newer too.
//!   A receiver follows the newest session of its stream and ignores older ones, so a
//!   restarted sender (or a restarted publisher behind it) is never mixed with the one before.
//!
//! Sequence numbers count the messages of a session from 1, as MoldUDP64 does.

use mdbus_codecs::moldudp64::Session;

/// Bytes of the record type in front of each message's payload.
pub const TYPE_LEN: usize = 4;

/// Characters of the stream tag at the start of a session name.
pub const TAG_LEN: usize = 3;

/// Characters of the epoch token after the tag.
pub const EPOCH_LEN: usize = 7;

/// Exclusive upper bound of an epoch token (36^7).
pub const EPOCH_LIMIT: u64 = 36u64.pow(EPOCH_LEN as u32);

/// 2025-01-01T00:00:00Z in Unix milliseconds: epoch token 0.
const EPOCH_BASE_MS: u64 = 1_735_689_600_000;

const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// The three-character tag of stream `name` (FNV-1a 64 of the name, in base 36).
pub fn stream_tag(name: &str) -> [u8; TAG_LEN] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut tag = [0u8; TAG_LEN];
    let mut v = h % 36u64.pow(TAG_LEN as u32);
    for c in tag.iter_mut().rev() {
        *c = DIGITS[(v % 36) as usize];
        v /= 36;
    }
    tag
}

/// The epoch token of the current wall-clock time (10 ms units since 2025-01-01 UTC).
pub fn epoch_token_now() -> u64 {
    let ms = mdbus_shm::unix_ns() / 1_000_000;
    (ms.saturating_sub(EPOCH_BASE_MS) / 10).min(EPOCH_LIMIT - 1)
}

/// An epoch token later than any a sender that started before this call can hold: the
/// token of the next 10 ms tick, waited for (at most 10 ms). A sender restarted at once
/// thus still names a newer session than the one it replaces. If the wall clock steps back
/// meanwhile, its token is taken as it is.
pub fn fresh_epoch_token() -> u64 {
    let start = epoch_token_now();
    loop {
        let now = epoch_token_now();
        if now != start || now == EPOCH_LIMIT - 1 {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The session name of a stream tag and an epoch token (taken modulo [`EPOCH_LIMIT`]).
pub fn session_name(tag: [u8; TAG_LEN], epoch: u64) -> Session {
    let mut s = [0u8; TAG_LEN + EPOCH_LEN];
    s[..TAG_LEN].copy_from_slice(&tag);
    let mut v = epoch % EPOCH_LIMIT;
    for c in s[TAG_LEN..].iter_mut().rev() {
        *c = DIGITS[(v % 36) as usize];
        v /= 36;
    }
    Session(s)
}

/// Splits a session name into stream tag and epoch token; `None` if it is not one of ours.
pub fn parse_session(session: Session) -> Option<([u8; TAG_LEN], u64)> {
    let s = session.0;
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&s[..TAG_LEN]);
    if !tag.iter().all(|c| DIGITS.contains(c)) {
        return None;
    }
    let mut epoch = 0u64;
    for &c in &s[TAG_LEN..] {
        let d = DIGITS.iter().position(|&x| x == c)?;
        epoch = epoch * 36 + d as u64;
    }
    Some((tag, epoch))
}

/// Writes one message (type, then payload) into `out`, which must be
/// `TYPE_LEN + payload.len()` bytes long.
#[inline]
pub fn write_message(out: &mut [u8], msg_type: u32, payload: &[u8]) {
    out[..TYPE_LEN].copy_from_slice(&msg_type.to_le_bytes());
    out[TYPE_LEN..].copy_from_slice(payload);
}

/// Splits a received message into record type and payload; `None` when it is shorter than
/// the type.
#[inline]
pub fn read_message(msg: &[u8]) -> Option<(u32, &[u8])> {
    let (t, payload) = msg.split_first_chunk::<TYPE_LEN>()?;
    Some((u32::from_le_bytes(*t), payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_round_trip() {
        let tag = stream_tag("nasdaq.itch");
        assert!(tag.iter().all(|c| c.is_ascii_alphanumeric()));
        for epoch in [0, 1, 35, 36, 123_456_789, EPOCH_LIMIT - 1] {
            let s = session_name(tag, epoch);
            assert!(s.as_str().is_some(), "{s:?} is ASCII");
            assert_eq!(parse_session(s), Some((tag, epoch)));
        }
        // The order of names is the order of epochs (fixed width, digits before letters).
        assert!(session_name(tag, 35).0 < session_name(tag, 36).0);
    }

    #[test]
    fn tags_tell_streams_apart() {
        let names = ["a", "b", "nasdaq.itch", "nasdaq.itch.bbo", "aapl.trades"];
        let tags: std::collections::HashSet<_> = names.iter().map(|n| stream_tag(n)).collect();
        assert_eq!(tags.len(), names.len());
        assert_eq!(stream_tag("x"), stream_tag("x"));
    }

    #[test]
    fn foreign_sessions_do_not_parse() {
        assert_eq!(
            parse_session(Session(*b"000010059B")).map(|p| p.0),
            Some(*b"000")
        );
        assert_eq!(parse_session(Session(*b"ab0010059B")), None);
        assert_eq!(parse_session(Session(*b"ABC00 0059")), None);
    }

    #[test]
    fn epoch_now_is_in_range_and_recent() {
        let e = epoch_token_now();
        // After 2026-01-01 (365 days of 10 ms units) and below the limit.
        assert!(e > 365 * 8_640_000 && e < EPOCH_LIMIT, "{e}");
    }

    #[test]
    fn a_fresh_token_is_later_than_one_taken_before() {
        for _ in 0..3 {
            let before = epoch_token_now();
            let fresh = fresh_epoch_token();
            assert!(fresh > before, "{fresh} after {before}");
            assert!(fresh_epoch_token() > fresh);
        }
    }

    #[test]
    fn messages_carry_type_and_payload() {
        let mut buf = [0u8; 9];
        write_message(&mut buf, 0x0102_0304, b"hello");
        assert_eq!(&buf[..4], &[4, 3, 2, 1]);
        assert_eq!(read_message(&buf), Some((0x0102_0304, &b"hello"[..])));
        assert_eq!(read_message(&buf[..3]), None);
        assert_eq!(read_message(&buf[..4]), Some((0x0102_0304, &b""[..])));
    }
}
