//! A segment file whose `tail` word someone else rewrote: a subscriber that opens it, or one
//! that was reading it, gets an error naming the word in bounded time, never a spin.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use mdbus_shm::{
    Consumer, ConsumerOptions, Mode, PollError, Producer, Resync, RingConfig, SetupError, StartAt,
};

/// Byte offset of `tail` in the segment header (line 3).
const OFF_TAIL: u64 = 3 * 128;

fn write_tail(path: &Path, tail: u64) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&tail.to_le_bytes(), OFF_TAIL).unwrap();
}

/// Runs `f` on its own thread; fails if it has not returned within a generous time.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what}: no answer within 60 s: it loops forever"))
}

#[test]
fn a_corrupt_tail_in_the_file_is_named_not_spun_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.ring");
    let cfg = RingConfig {
        capacity: 4096,
        max_msg_len: 256,
        mode: Mode::Broadcast,
        ..RingConfig::default()
    };
    let mut producer = Producer::create(&path, &cfg).unwrap();
    for i in 0..10u8 {
        producer.publish(1, &[i; 40]).unwrap();
    }
    let opts = ConsumerOptions {
        start: StartAt::Oldest,
        resync: Resync::Oldest,
        lossless: false,
    };
    let reading = Consumer::open(&path, &opts).unwrap();
    let real = reading.lag();
    for bad in [u64::MAX - 7, real + 2 * 4096, 4096 + 4096] {
        write_tail(&path, bad);
        // A subscriber that opens it now.
        let p = path.clone();
        let opened = bounded("open", move || Consumer::open(&p, &opts).map(|_| ()));
        let Err(SetupError::BadHeader { field, value, .. }) = &opened else {
            panic!("tail {bad}: {opened:?}")
        };
        assert_eq!((*field, *value), ("tail", bad));
    }
    // A subscriber that was reading when the word went bad.
    write_tail(&path, u64::MAX - 7);
    let mut reading = reading;
    let got = bounded("poll", move || {
        (0..20)
            .map(|_| reading.poll(|_| {}))
            .collect::<Vec<Result<bool, PollError>>>()
    });
    let errors: Vec<String> = got
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| e.to_string())
        .collect();
    assert!(!errors.is_empty(), "{got:?}");
    assert!(errors.iter().all(|e| e.contains("tail is")), "{errors:?}");
}
