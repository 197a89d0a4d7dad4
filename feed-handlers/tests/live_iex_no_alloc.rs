//! Proves the live IEX hot path allocates nothing once warm: real DEEP segments over
//! loopback on lines A and B (line A losing every fifth), through the driver's IEX-TP framing
//! (arbitration, a restart of the sequence at 1), the sequencer, decoding, normalizing,
//! publishing and the IEX books. A counting global allocator (its own test binary) counts the
//! allocations of the measuring thread.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use mdbus_bus::{Bus, StreamConfig};
use mdbus_codecs::capture::open_capture;
use mdbus_codecs::iex::tp::{Protocol, Segment};
use mdbus_codecs::sequencer::{LateJoin, SequencerConfig};
use mdbus_feed_handlers::book::{BookConfig, IexBooks};
use mdbus_feed_handlers::live::FeedBooks;
use mdbus_feed_handlers::net::LineConfig;
use mdbus_feed_handlers::net::driver::{Driver, DriverConfig, DriverStats, FeedSink};
use mdbus_feed_handlers::pipeline::FeedPipeline;
use mdbus_feed_handlers::venue::{Framing, Iex, Venue};

/// The first datagrams of the DEEP sample: its first restart is at datagram 5,244.
const DATAGRAMS: usize = 5_600;

struct Sink {
    pipeline: FeedPipeline<Iex>,
    books: IexBooks,
    delivered: u64,
    lost: u64,
}

impl FeedSink for Sink {
    const RECV_TS: bool = true;

    fn message(&mut self, seq: u64, msg: &[u8], recv_ts_ns: u64) {
        self.delivered += 1;
        if let Ok(m) = self.pipeline.venue().decode(msg) {
            FeedBooks::observe(&mut self.books, self.pipeline.venue_mut(), &m);
            self.pipeline
                .on_decoded(seq, &m, recv_ts_ns)
                .expect("published");
        }
    }

    fn gap(&mut self, first: u64, count: u64, recv_ts_ns: u64) {
        self.lost += count;
        self.pipeline
            .on_gap(first, count, false, recv_ts_ns)
            .expect("published");
    }

    fn end_of_session(&mut self, _: u64, _: u64, _: u64) {}

    fn counters(&self, _: &DriverStats, _: &mut [u64]) -> usize {
        0
    }
}

#[test]
fn iex_arbitration_sequencing_and_publishing_allocate_nothing_once_warm() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../codecs/testdata/iex/deep10-2017-04-25.pcap.gz");
    let mut reader = open_capture(&path).expect("the DEEP sample opens");
    let mut segments = Vec::new();
    while segments.len() < DATAGRAMS {
        let d = reader
            .next_datagram()
            .expect("enough datagrams")
            .expect("reads");
        segments.push(d.payload.to_vec());
    }
    let expected: u64 = segments
        .iter()
        .map(|s| u64::from(Segment::parse(s).unwrap().message_count()))
        .sum();

    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let ring = StreamConfig {
        capacity: 64 << 20,
        ..StreamConfig::default()
    };
    let pipeline =
        FeedPipeline::with_venue(Iex::for_protocol(Protocol::DEEP), &bus, "deep", &ring).unwrap();
    let mut sink = Sink {
        pipeline,
        books: IexBooks::new(BookConfig::default()).unwrap(),
        delivered: 0,
        lost: 0,
    };
    // Warm-up: every symbol into the directory and the books, every kind through the
    // normalizer, the bus events once.
    for s in &segments {
        let seg = Segment::parse(s).unwrap();
        for (i, m) in seg.messages().enumerate() {
            sink.message(seg.first_seq() + i as u64, m.unwrap(), 1);
        }
    }
    sink.gap(1, 1, 1);
    sink.delivered = 0;
    sink.lost = 0;

    let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
    let cfg = DriverConfig {
        interface: Ipv4Addr::LOCALHOST,
        line_b: Some(LineConfig {
            group: any,
            source: None,
        }),
        framing: Framing::IexTp,
        iex_protocol: Some(Protocol::DEEP),
        sequencer: SequencerConfig {
            late_join: LateJoin::FromSequence(1),
            nak_delay: Duration::from_millis(200),
            ..SequencerConfig::default()
        },
        ..DriverConfig::new(any)
    };
    let mut driver = Driver::new(cfg, None).unwrap();
    let a = UdpSocket::bind(any).unwrap();
    a.connect(driver.line_a_addr().unwrap()).unwrap();
    let b = UdpSocket::bind(any).unwrap();
    b.connect(driver.line_b_addr().unwrap().unwrap()).unwrap();
    // The first segments warm the driver and the sequencer.
    let warm = 200;
    for s in &segments[..warm] {
        a.send(s).unwrap();
        driver.poll_once(&mut sink).unwrap();
    }

    let seen = allocation_counter::measure(|| drop(std::hint::black_box(vec![1u8; 8])));
    assert_eq!(seen.count_total, 1, "the allocation counter missed one");
    let allocations = allocation_counter::measure(|| {
        for (i, s) in segments.iter().enumerate().skip(warm) {
            if i % 5 != 0 {
                a.send(s).unwrap();
            }
            b.send(s).unwrap();
            driver.poll_once(&mut sink).unwrap();
            driver.poll_once(&mut sink).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while sink.delivered + sink.lost < expected && Instant::now() < deadline {
            driver.poll_once(&mut sink).unwrap();
        }
    });
    let st = driver.stats();
    assert_eq!(
        (sink.delivered, sink.lost),
        (expected, 0),
        "every message once, line B filling line A's losses: {st:?}"
    );
    assert_eq!(st.iex.restarts, 1, "{st:?}");
    assert!(st.sequencer.duplicates > 0, "{st:?}");
    assert_eq!(
        allocations.count_total, 0,
        "the warm IEX path allocated: {allocations:?}"
    );
}
