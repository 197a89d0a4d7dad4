//! A publisher in one process, a subscriber in another: the subscriber reads every message, in
//! order, byte for byte, and sees the stream close when the publisher finishes.
//!
//! The test binary re-executes itself as the publisher (selected by an environment variable),
//! so no other binary has to be built first.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mdbus_bus::{Bus, ReceiveError, StreamConfig, SubscribeOptions, WaitStrategy};

const ROLE: &str = "MDBUS_TEST_ROLE";
const ROOT: &str = "MDBUS_TEST_ROOT";
const COUNT: u64 = 200_000;

/// Payload of message `i`: variable length (8..=200 bytes), every byte derived from `i`.
fn payload(i: u64, buf: &mut [u8; 200]) -> &[u8] {
    let len = 8 + (i.wrapping_mul(2_654_435_761) % 193) as usize;
    buf[..8].copy_from_slice(&i.to_le_bytes());
    for (k, b) in buf[8..len].iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(k as u8);
    }
    &buf[..len]
}

fn publisher_child(root: &Path) {
    let bus = Bus::with_root(root).unwrap();
    let config = StreamConfig {
        // Small enough to wrap many times, large enough that a lossless reader keeps up.
        capacity: 1 << 16,
        max_msg_len: 1024,
        mode: mdbus_bus::Mode::Lossless,
        ..StreamConfig::default()
    };
    let mut publisher = bus.publisher("two.process", &config).unwrap();
    // Wait until the subscriber holds its slot (it says so on our stdin): from then on the
    // lossless ring makes this publisher wait for it, so it must see every message.
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "subscribed");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 200];
    let mut i = 0;
    while i < COUNT {
        match publisher.publish(3, payload(i, &mut buf)) {
            Ok(seq) => {
                assert_eq!(seq, publisher.next_seq() - 1);
                i += 1;
            }
            Err(mdbus_bus::PublishError::BackPressured) => {
                assert!(
                    Instant::now() < deadline,
                    "subscriber never drained the ring"
                );
                std::thread::yield_now();
            }
            Err(e) => panic!("publish failed: {e:?}"),
        }
    }
}

#[test]
fn subscriber_in_another_process_reads_everything() {
    if let Ok(role) = std::env::var(ROLE) {
        assert_eq!(role, "publisher");
        publisher_child(Path::new(&std::env::var(ROOT).unwrap()));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    // The child creates the stream, then waits on its stdin until this side has subscribed.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "subscriber_in_another_process_reads_everything",
            "--nocapture",
        ])
        .env(ROLE, "publisher")
        .env(ROOT, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut subscriber = loop {
        match bus.subscriber("two.process", &SubscribeOptions::default()) {
            Ok(s) => break s,
            Err(e) => {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("publisher process exited early ({status}): {e}");
                }
                assert!(Instant::now() < deadline, "publisher never appeared: {e}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
    writeln!(child.stdin.take().unwrap(), "subscribed").unwrap();
    let mut expected = 0u64;
    let mut buf = [0u8; 200];
    let wait = WaitStrategy::SpinThenYield { spins: 100 };
    loop {
        assert!(Instant::now() < deadline, "stalled at message {expected}");
        match subscriber.poll_batch(64, |msg| {
            assert_eq!(msg.msg_type(), 3);
            assert_eq!(
                msg.payload(),
                payload(expected, &mut buf),
                "message {expected}"
            );
            expected += 1;
        }) {
            Ok(0) => {
                let _ = subscriber.wait(&wait, Some(Duration::from_millis(10)));
            }
            Ok(_) => {}
            Err(ReceiveError::Closed) => break,
            Err(e) => panic!("after {expected} messages: {e:?}"),
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "publisher process failed: {status}");
    assert_eq!(expected, COUNT);
    assert_eq!(subscriber.stats().lost, 0);
}
