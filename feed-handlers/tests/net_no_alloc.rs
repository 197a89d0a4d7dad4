//! Proves the transport's steady state allocates nothing: a sender and a receiver driven by
//! one thread over loopback multicast, with packet loss injected (so re-requests are sent
//! and answered, and the reorder store is used), publishing into a local stream. The
//! counting allocator counts the allocations of this thread.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use mdbus_bus::{Bus, StartAt, StreamConfig};
use mdbus_feed_handlers::net::{
    Idle, Receiver, ReceiverConfig, RequestServer, Sender, SenderConfig,
};

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[test]
fn sending_receiving_and_recovering_allocate_nothing_once_warm() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (bus_a, bus_b) = (
        Bus::with_root(a.path()).unwrap(),
        Bus::with_root(b.path()).unwrap(),
    );
    let port = 40_000 + (std::process::id() % 10_000) as u16;
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 92, 1), port);
    let ring = StreamConfig {
        capacity: 16 << 20,
        ..StreamConfig::default()
    };
    let mut publisher = bus_a.publisher("na", &ring).unwrap();
    let mut tc = SenderConfig::new("na", group);
    tc.send.interface = LO;
    tc.request_addr = SocketAddrV4::new(LO, 0);
    tc.start = StartAt::Oldest;
    tc.idle = Idle::BusyPoll;
    tc.fault = "drop=0.03,reorder=0.03,dup=0.01,seed=5".parse().unwrap();
    let mut sender = Sender::new(&bus_a, tc).unwrap();
    let server = SocketAddrV4::new(LO, sender.request_addr().unwrap().port());
    let mut rc = ReceiverConfig::new("na", group);
    rc.interface = LO;
    rc.request_server = RequestServer::Addr(server);
    rc.ring = ring;
    let mut receiver = Receiver::new(&bus_b, rc).unwrap();
    let payload = [7u8; 64];
    let pump = |sender: &mut Sender,
                receiver: &mut Receiver,
                publisher: &mut mdbus_bus::Publisher,
                n: u64| {
        let target = receiver.stats().messages + n;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut published = 0;
        while receiver.stats().messages < target {
            assert!(Instant::now() < deadline, "{:?}", receiver.stats());
            if published < n {
                for _ in 0..16 {
                    publisher.publish(9, &payload).unwrap();
                    published += 1;
                }
            }
            sender.poll_once().unwrap();
            receiver.poll_once(&mut |_, _| {}).unwrap();
        }
    };
    // Warm-up: every path once (loss, recovery, reorder store, heartbeats).
    pump(&mut sender, &mut receiver, &mut publisher, 20_000);
    assert!(receiver.stats().recovered > 0);
    // The counter sees this thread's allocations.
    let seen = allocation_counter::measure(|| drop(std::hint::black_box(vec![1u8; 8])));
    assert_eq!(seen.count_total, 1);
    let before = receiver.stats();
    let allocations = allocation_counter::measure(|| {
        pump(&mut sender, &mut receiver, &mut publisher, 50_000);
    })
    .count_total;
    let after = receiver.stats();
    assert!(
        after.recovered > before.recovered,
        "the measured part recovered losses"
    );
    assert_eq!(after.unrecoverable, 0);
    assert_eq!(allocations, 0, "{after:?}");
}
