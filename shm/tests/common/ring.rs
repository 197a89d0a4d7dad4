//! The small ring and consumer options the segment tests share.

use std::path::Path;

use mdbus_shm::{ConsumerOptions, Producer, RingConfig, StartAt};

/// A 16 KiB ring with records of at most 512 bytes.
pub fn cfg() -> RingConfig {
    RingConfig {
        capacity: 16 * 1024,
        max_msg_len: 512,
        ..RingConfig::default()
    }
}

/// A consumer that starts at the oldest record the ring holds.
pub fn oldest() -> ConsumerOptions {
    ConsumerOptions {
        start: StartAt::Oldest,
        ..ConsumerOptions::default()
    }
}

/// Creates a closed segment at `path` (producer created, one record, dropped).
pub fn closed_segment(path: &Path) {
    let mut p = Producer::create(path, &cfg()).unwrap();
    p.publish(1, b"x").unwrap();
}
