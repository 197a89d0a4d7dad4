//! Criterion micro-benchmarks of the ring hot path on one thread (no cross-core traffic): the
//! cost of publishing a 64-byte message and polling it back, for the mdbus ring (on a
//! memory-mapped segment file and on the in-process heap backend) and for `rtrb`; then the
//! same per message when 32 are published and drained in one batch (one by one, or in place:
//! `claim_batch` for mdbus, `write_chunk_uninit` for rtrb).
//!
//! Run with `cargo bench -p mdbus-bench-harness --bench ring`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mdbus_shm::{Consumer, ConsumerOptions, Mode, Producer, Resync, RingConfig, StartAt};

const MSG: usize = 64;
const BATCH: usize = 32;
const CAPACITY: usize = 64 * 1024;

fn config() -> RingConfig {
    RingConfig {
        capacity: CAPACITY,
        max_msg_len: MSG as u32,
        mode: Mode::Lossless,
        max_consumers: 1,
        prefault: true,
        ..RingConfig::default()
    }
}

fn options() -> ConsumerOptions {
    ConsumerOptions {
        start: StartAt::Oldest,
        resync: Resync::Oldest,
        lossless: true,
    }
}

/// A producer and a lossless consumer on a segment file in `dir`.
fn shm_pair(dir: &Path) -> (Producer, Consumer) {
    let path = dir.join("bench.ring");
    let p = Producer::create(&path, &config()).expect("create the ring segment");
    let c = Consumer::open(&path, &options()).expect("open the ring segment");
    (p, c)
}

/// A producer and a lossless consumer on the in-process (heap) backend.
fn heap_pair() -> (Producer, Consumer) {
    let (p, f) = mdbus_shm::in_process(&config()).expect("in-process ring");
    let c = f.consumer(&options()).expect("in-process consumer");
    (p, c)
}

fn segment_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).expect("temporary folder in /dev/shm")
    } else {
        tempfile::tempdir().expect("temporary folder")
    }
}

fn single(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish_poll_64B");
    g.throughput(Throughput::Elements(1));
    let msg = [7u8; MSG];

    let dir = segment_dir();
    let (mut p, mut q) = shm_pair(dir.path());
    g.bench_function("mdbus-shm", |b| {
        b.iter(|| {
            p.publish(1, black_box(&msg)).expect("room in the ring");
            let mut sum = 0u64;
            q.poll(|r| sum = u64::from(r.payload()[0])).expect("poll");
            black_box(sum)
        })
    });
    drop((p, q));

    let (mut p, mut q) = heap_pair();
    g.bench_function("mdbus-shm in-process", |b| {
        b.iter(|| {
            p.publish(1, black_box(&msg)).expect("room in the ring");
            let mut sum = 0u64;
            q.poll(|r| sum = u64::from(r.payload()[0])).expect("poll");
            black_box(sum)
        })
    });
    drop((p, q));

    let (mut p, mut q) = rtrb::RingBuffer::<[u8; MSG]>::new(CAPACITY / MSG);
    g.bench_function("rtrb", |b| {
        b.iter(|| {
            p.push(black_box(msg)).expect("room in the ring");
            let m = q.pop().expect("a message");
            black_box(u64::from(m[0]))
        })
    });
    g.finish();
}

fn batched(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish_poll_64B_batch32");
    g.throughput(Throughput::Elements(BATCH as u64));
    let msg = [7u8; MSG];

    let dir = segment_dir();
    let (mut p, mut q) = shm_pair(dir.path());
    g.bench_function("mdbus-shm", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                p.publish(1, black_box(&msg)).expect("room in the ring");
            }
            let mut sum = 0u64;
            let n = q
                .poll_batch(BATCH, |r| sum += u64::from(r.payload()[0]))
                .expect("poll_batch");
            assert_eq!(n, BATCH);
            black_box(sum)
        })
    });
    drop((p, q));

    let (mut p, mut q) = heap_pair();
    g.bench_function("mdbus-shm in-process", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                p.publish(1, black_box(&msg)).expect("room in the ring");
            }
            let mut sum = 0u64;
            let n = q
                .poll_batch(BATCH, |r| sum += u64::from(r.payload()[0]))
                .expect("poll_batch");
            assert_eq!(n, BATCH);
            black_box(sum)
        })
    });
    drop((p, q));

    let dir = segment_dir();
    let (mut p, mut q) = shm_pair(dir.path());
    g.bench_function("mdbus-shm claim_batch", |b| {
        b.iter(|| {
            let mut sent = 0;
            while sent < BATCH {
                let mut batch = p
                    .claim_batch(MSG, 1, BATCH - sent)
                    .expect("room in the ring");
                for k in 0..batch.len() {
                    if let Some(d) = batch.payload_mut(k) {
                        d.copy_from_slice(black_box(&msg));
                    }
                }
                sent += batch.len();
                batch.commit();
            }
            let mut sum = 0u64;
            let mut n = 0;
            while n < BATCH {
                n += q
                    .poll_batch(BATCH - n, |r| sum += u64::from(r.payload()[0]))
                    .expect("poll_batch");
            }
            black_box(sum)
        })
    });
    drop((p, q));

    let (mut p, mut q) = rtrb::RingBuffer::<[u8; MSG]>::new(CAPACITY / MSG);
    g.bench_function("rtrb", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                p.push(black_box(msg)).expect("room in the ring");
            }
            let chunk = q.read_chunk(BATCH).expect("a batch");
            let (x, y) = chunk.as_slices();
            let sum: u64 = x.iter().chain(y).map(|m| u64::from(m[0])).sum();
            chunk.commit_all();
            black_box(sum)
        })
    });

    let (mut p, mut q) = rtrb::RingBuffer::<[u8; MSG]>::new(CAPACITY / MSG);
    g.bench_function("rtrb write_chunk", |b| {
        b.iter(|| {
            let chunk = p.write_chunk_uninit(BATCH).expect("room in the ring");
            chunk.fill_from_iter(std::iter::repeat_n(black_box(msg), BATCH));
            let chunk = q.read_chunk(BATCH).expect("a batch");
            let (x, y) = chunk.as_slices();
            let sum: u64 = x.iter().chain(y).map(|m| u64::from(m[0])).sum();
            chunk.commit_all();
            black_box(sum)
        })
    });
    g.finish();
}

criterion_group!(benches, single, batched);
criterion_main!(benches);
