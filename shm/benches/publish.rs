//! `Producer::publish` alone: the cost of copying a payload into a claimed record and
//! committing it, for payload lengths around those of normalized market-data envelopes
//! (a feed's envelopes average about 93 bytes; book updates and trades are similar).
//!
//! Broadcast ring of 256 KiB (it stays in the L2 cache of most cores, so the figure is the
//! producer's own work, not memory bandwidth), prefaulted, in shared memory, no consumer.
//!
//! `cargo bench -p mdbus-shm --bench publish`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mdbus_shm::{Mode, Producer, RingConfig};

fn publish(c: &mut Criterion) {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("temp dir");
    let cfg = RingConfig {
        capacity: 256 << 10,
        max_msg_len: 512,
        mode: Mode::Broadcast,
        prefault: true,
        ..RingConfig::default()
    };
    let mut g = c.benchmark_group("publish");
    g.throughput(Throughput::Elements(1));
    for len in [24usize, 64, 93, 120, 200] {
        let mut p =
            Producer::create(&dir.path().join(format!("p{len}.ring")), &cfg).expect("producer");
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        g.bench_with_input(BenchmarkId::from_parameter(len), &payload, |b, payload| {
            b.iter(|| p.publish(1, black_box(payload)).expect("publish"));
        });
    }
    g.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
