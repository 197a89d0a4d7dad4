use super::*;

/// A segment laid out by the header table of the specification (not by the parser).
fn seg(session: u32, proto: u16, first: u64, msgs: &[&[u8]]) -> Vec<u8> {
    let mut s = vec![0u8; HEADER_LEN];
    s[0] = 1;
    s[1] = 0xEE;
    s[2..4].copy_from_slice(&proto.to_le_bytes());
    s[4..8].copy_from_slice(&7u32.to_le_bytes());
    s[8..12].copy_from_slice(&session.to_le_bytes());
    s[14..16].copy_from_slice(&(msgs.len() as u16).to_le_bytes());
    s[16..24].copy_from_slice(&1234u64.to_le_bytes());
    s[24..32].copy_from_slice(&first.to_le_bytes());
    s[32..40].copy_from_slice(&1_493_132_590_123_456_789u64.to_le_bytes());
    for m in msgs {
        s.extend_from_slice(&(m.len() as u16).to_le_bytes());
        s.extend_from_slice(m);
    }
    let len = (s.len() - HEADER_LEN) as u16;
    s[12..14].copy_from_slice(&len.to_le_bytes());
    s
}

fn deep(first: u64, n: usize) -> Vec<u8> {
    let msgs: Vec<&[u8]> = (0..n).map(|_| &b"S0123456789"[..]).collect();
    seg(42, 0x8004, first, &msgs)
}

#[test]
fn every_header_field_reads_back() {
    let b = seg(0xA1B2_C3D4, 0x8005, 99, &[b"ab", b"c"]);
    let s = Segment::parse(&b).expect("parses");
    assert_eq!(s.version(), 1);
    assert_eq!(s.reserved(), 0xEE);
    assert_eq!(s.protocol(), Protocol::DEEP_PLUS);
    assert_eq!(s.channel_id(), 7);
    assert_eq!(s.session_id(), 0xA1B2_C3D4);
    assert_eq!(s.payload_length(), 7);
    assert_eq!(s.message_count(), 2);
    assert_eq!(s.stream_offset(), 1234);
    assert_eq!(s.first_seq(), 99);
    assert_eq!(s.send_time(), 1_493_132_590_123_456_789);
    assert_eq!(s.next_seq(), Some(101));
    assert!(!s.is_heartbeat() && !s.is_cut());
    let m: Vec<_> = s.messages().collect();
    assert_eq!(m, [Ok(&b"ab"[..]), Ok(&b"c"[..])]);
    assert_eq!(s.check(), (2, None));
    assert!(format!("{s:?}").contains("DEEP+"));
    assert_eq!((Protocol::TOPS_1_5.0, Protocol::TOPS.0), (0x8002, 0x8003));
    assert_eq!(Protocol::DEEP_PLUS.0, 0x8005);
    assert_eq!(Protocol::DEEP.name(), Some("DEEP"));
    assert_eq!(format!("{}", Protocol(0x1234)), "Protocol(0x1234)");
}

#[test]
fn bad_headers_are_errors() {
    assert_eq!(
        Segment::parse(&[1; 39]).err(),
        Some(TpError::ShortHeader { len: 39 })
    );
    let mut b = deep(1, 1);
    b[0] = 2;
    assert_eq!(
        Segment::parse(&b).err(),
        Some(TpError::Version { version: 2 })
    );
    let mut b = deep(1, 1);
    b.push(0);
    assert_eq!(
        Segment::parse(&b).err(),
        Some(TpError::PayloadTooLong {
            declared: 13,
            available: 14
        })
    );
}

#[test]
fn damaged_blocks_end_the_walk_with_their_index_and_offset() {
    // Trailing bytes inside the declared payload.
    let mut b = seg(1, 0x8004, 1, &[b"ab", b"cd"]);
    b[14] = 1;
    let s = Segment::parse(&b).expect("header");
    assert_eq!(
        s.check(),
        (1, Some(TpError::TrailingBytes { offset: 44, len: 4 }))
    );
    // A block longer than the declared payload.
    let mut b = seg(1, 0x8004, 1, &[b"ab"]);
    b[40] = 9;
    assert_eq!(
        Segment::parse(&b).expect("header").check(),
        (
            0,
            Some(TpError::TruncatedBlock {
                index: 0,
                offset: 40,
                len: 9,
                available: 2
            })
        )
    );
    // More blocks counted than present.
    let mut b = seg(1, 0x8004, 1, &[b"ab"]);
    b[14] = 3;
    assert_eq!(
        Segment::parse(&b).expect("header").check(),
        (
            1,
            Some(TpError::TruncatedBlock {
                index: 1,
                offset: 44,
                len: 0,
                available: 0
            })
        )
    );
    // An empty block.
    let b = seg(1, 0x8004, 1, &[b""]);
    assert_eq!(
        Segment::parse(&b).expect("header").check(),
        (
            0,
            Some(TpError::EmptyBlock {
                index: 0,
                offset: 40
            })
        )
    );
}

#[test]
fn a_cut_segment_yields_its_complete_messages_then_names_the_cut() {
    let b = seg(1, 0x8004, 1, &[b"abc", b"defg", b"hi"]);
    for keep in [45, 46, 50, 51, 52] {
        let s = Segment::parse(&b[..keep]).expect("header");
        assert!(s.is_cut());
        let complete = if keep >= 51 { 2 } else { 1 };
        let offset = if keep >= 51 { 51 } else { 45 };
        assert_eq!(
            s.check(),
            (
                complete,
                Some(TpError::Cut {
                    declared: 15,
                    available: keep - 40,
                    index: complete,
                    offset
                })
            ),
            "{keep}"
        );
    }
}

#[test]
fn in_order_segments_are_delivered_with_their_sequence_numbers() {
    let mut t = Tracker::new();
    let b = deep(10, 2);
    let h = t.handle(&b).expect("taken");
    assert_eq!((h.notice, h.skip, h.deliver), (None, 0, 2));
    let seqs: Vec<u64> = h.messages().map(|(s, _)| s).collect();
    assert_eq!(seqs, [10, 11]);
    let b = deep(12, 0);
    let h = t.handle(&b).expect("heartbeat");
    assert_eq!((h.notice, h.deliver), (None, 0));
    t.handle(&deep(12, 3)).expect("taken");
    let st = t.stats();
    assert_eq!((st.packets, st.messages, st.heartbeats), (3, 5, 1));
    assert_eq!(t.next_seq(), 15);
    assert_eq!(t.following(), Some((42, Protocol::DEEP)));
}

#[test]
fn gaps_duplicates_and_late_segments_are_counted() {
    let mut t = Tracker::new();
    t.handle(&deep(1, 2)).expect("taken");
    let b = deep(6, 2);
    let h = t.handle(&b).expect("taken");
    assert_eq!(
        h.notice,
        Some(Notice::Gap {
            first_missing: 3,
            count: 3
        })
    );
    assert_eq!(h.deliver, 2);
    // Entirely old: a duplicate.
    let b = deep(6, 2);
    let h = t.handle(&b).expect("taken");
    assert_eq!((h.notice, h.deliver), (Some(Notice::Duplicate), 0));
    // Overlapping: the new tail is delivered.
    let b = deep(7, 3);
    let h = t.handle(&b).expect("taken");
    assert_eq!((h.notice, h.skip, h.deliver), (None, 1, 2));
    assert_eq!(h.messages().map(|(s, _)| s).collect::<Vec<_>>(), [8, 9]);
    // Inside the declared gap: out of order, not delivered.
    let b = deep(3, 2);
    let h = t.handle(&b).expect("taken");
    assert_eq!((h.notice, h.deliver), (Some(Notice::OutOfOrder), 0));
    // A heartbeat announcing a later sequence number reveals a gap too.
    let b = deep(12, 0);
    let h = t.handle(&b).expect("taken");
    assert_eq!(
        h.notice,
        Some(Notice::Gap {
            first_missing: 10,
            count: 2
        })
    );
    let st = t.stats();
    assert_eq!(st.gaps_detected, 2);
    assert_eq!(st.missing_messages, 3 - 2 + 2);
    assert_eq!((st.duplicates, st.out_of_order, st.messages), (3, 2, 6));
    assert_eq!(st.restarts, 0);
}

#[test]
fn a_sequence_restarting_at_one_is_a_restart_not_duplicates() {
    let mut t = Tracker::new();
    t.handle(&deep(1, 3)).expect("taken");
    t.handle(&deep(4, 3)).expect("taken");
    let b = deep(1, 2);
    let h = t.handle(&b).expect("taken");
    assert_eq!(
        h.notice,
        Some(Notice::Restart {
            packet: 2,
            stream_offset: 1234,
            expected: 7
        })
    );
    assert_eq!(h.deliver, 2);
    // The same segment again is a duplicate, not a second restart.
    let h = t.handle(&b).expect("taken");
    assert_eq!((h.notice, h.deliver), (Some(Notice::Duplicate), 0));
    t.handle(&deep(3, 1)).expect("taken");
    let st = t.stats();
    assert_eq!((st.restarts, st.duplicates, st.messages), (1, 2, 9));
    assert_eq!(t.next_seq(), 4);
}

#[test]
fn a_heartbeat_at_one_announces_a_restart() {
    let mut t = Tracker::new();
    t.handle(&deep(1, 5)).expect("taken");
    let b = deep(1, 0);
    let h = t.handle(&b).expect("taken");
    assert!(matches!(
        h.notice,
        Some(Notice::Restart { expected: 6, .. })
    ));
    assert_eq!(t.handle(&deep(1, 0)).expect("taken").notice, None);
    assert_eq!(t.handle(&deep(1, 2)).expect("taken").deliver, 2);
    assert_eq!((t.stats().restarts, t.stats().duplicates), (1, 0));
}

#[test]
fn a_cut_segment_delivers_its_complete_messages_and_reports_the_cut() {
    let mut t = Tracker::new();
    let b = deep(1, 4);
    let keep = HEADER_LEN + 2 * 13 + 5;
    let h = t.handle(&b[..keep]).expect("taken");
    assert_eq!(h.deliver, 2);
    assert_eq!(
        h.incomplete,
        Some(Incomplete {
            packet: 0,
            complete: 2,
            message_count: 4,
            error: TpError::Cut {
                declared: 52,
                available: 31,
                index: 2,
                offset: 66
            }
        })
    );
    let st = t.stats();
    assert_eq!(
        (st.cut_segments, st.messages, st.missing_messages),
        (1, 2, 2)
    );
    // The stream moves past the cut messages: the next segment is in order.
    assert_eq!(t.handle(&deep(5, 1)).expect("taken").notice, None);
    assert_eq!(t.stats().gaps_detected, 0);
}

#[test]
fn other_sessions_protocols_and_garbage_are_rejected_and_counted() {
    let mut t = Tracker::new();
    t.handle(&deep(1, 1)).expect("taken");
    assert!(matches!(
        t.handle(&seg(43, 0x8004, 2, &[b"S"])),
        Err(Rejected::ForeignSession {
            packet: 1,
            following: 42,
            got: 43
        })
    ));
    assert!(matches!(
        t.handle(&seg(42, 0x8003, 2, &[b"S"])),
        Err(Rejected::ForeignProtocol { packet: 2, .. })
    ));
    let e = t.handle(&[0; 12]).expect_err("short");
    assert!(e.to_string().contains("packet 3"), "{e}");
    let st = t.stats();
    assert_eq!(
        (
            st.foreign_session,
            st.foreign_protocol,
            st.malformed,
            st.packets
        ),
        (1, 1, 1, 4)
    );
    assert_eq!(t.next_seq(), 2);
}

#[test]
fn sequence_numbers_past_the_end_of_the_range_are_malformed() {
    let mut t = Tracker::new();
    let b = deep(u64::MAX - 2, 2);
    let h = t.handle(&b).expect("taken");
    assert_eq!(
        h.messages().map(|(s, _)| s).collect::<Vec<_>>(),
        [u64::MAX - 2, u64::MAX - 1]
    );
    assert_eq!(t.next_seq(), u64::MAX);
    assert_eq!(
        t.handle(&deep(u64::MAX, 1)).expect_err("overflow"),
        Rejected::Malformed {
            packet: 1,
            error: TpError::SequenceOverflow {
                first_seq: u64::MAX,
                count: 1
            }
        }
    );
    assert!(t.handle(&deep(u64::MAX, 0)).is_ok());
    assert_eq!((t.stats().malformed, t.stats().messages), (1, 2));
}
