//! What the ring costs per message, for `mdbus bench ring`'s default shape (64-byte payloads,
//! a 64 KiB lossless ring, batches of up to 256):
//!
//! * `batch N` and `single N`: one thread, N messages through `claim_batch` + `fill` +
//!   `commit` then `poll_batch` (the throughput phase's calls), or `publish` then `poll`. Made
//!   for `valgrind --tool=cachegrind --cache-sim=yes`: run it with two counts and divide the
//!   difference in instructions by the difference in messages (deterministic, unlike timings
//!   on a shared host).
//! * `threads N`: a producer thread and a consumer thread, N messages in batches; prints
//!   messages per second and how often the consumer found nothing (a host-dependent figure:
//!   compare builds in one session, not across hosts).
//!
//! ```sh
//! cargo build --release -p mdbus-shm --example ring_cost
//! valgrind --tool=cachegrind --cache-sim=yes target/release/examples/ring_cost batch 1200000
//! ```

use std::hint::black_box;

use mdbus_shm::{ConsumerOptions, Mode, Resync, RingConfig, StartAt};

const LEN: usize = 64;
const BATCH: usize = 256;

fn main() {
    let mut args = std::env::args().skip(1);
    // `batch` (default), `single` or `threads`, then the message count.
    let how = args.next().unwrap_or_else(|| "batch".into());
    let count: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let cfg = RingConfig {
        capacity: 64 << 10,
        max_msg_len: LEN as u32,
        mode: Mode::Lossless,
        max_consumers: 1,
        ..RingConfig::default()
    };
    let (mut p, f) = mdbus_shm::in_process(&cfg).expect("ring");
    let mut c = f
        .consumer(&ConsumerOptions {
            start: StartAt::Oldest,
            resync: Resync::Oldest,
            lossless: true,
        })
        .expect("consumer");
    let payload = [7u8; LEN];
    if how == "threads" {
        threads(p, c, count);
        return;
    }
    let (mut sent, mut got, mut sum) = (0u64, 0u64, 0u64);
    while got < count {
        if how == "batch" {
            let max = (count - sent).min(BATCH as u64) as usize;
            if max > 0 {
                let mut b = p.claim_batch(LEN, 1, max).expect("claim");
                b.fill(|k, d| {
                    d.copy_from_slice(&payload);
                    d[..8].copy_from_slice(&(sent + k as u64).to_le_bytes());
                });
                sent += b.len() as u64;
                b.commit();
            }
            got += c
                .poll_batch(BATCH, |r| {
                    sum = sum.wrapping_add(u64::from_le_bytes(r.payload()[..8].try_into().unwrap()))
                })
                .expect("poll") as u64;
        } else {
            let mut buf = payload;
            buf[..8].copy_from_slice(&sent.to_le_bytes());
            p.publish(1, black_box(&buf)).expect("publish");
            sent += 1;
            if c.poll(|r| {
                sum = sum.wrapping_add(u64::from_le_bytes(r.payload()[..8].try_into().unwrap()))
            })
            .expect("poll")
            {
                got += 1;
            }
        }
    }
    assert_eq!(sum, count * (count - 1) / 2);
    println!("{how}: {count} messages");
}

/// `threads N`: see the module docs.
fn threads(mut p: mdbus_shm::Producer, mut c: mdbus_shm::Consumer, count: u64) {
    let payload = [7u8; LEN];
    let t0 = std::time::Instant::now();
    let prod = std::thread::spawn(move || {
        let mut sent = 0u64;
        let mut full = 0u64;
        while sent < count {
            let max = (count - sent).min(BATCH as u64) as usize;
            match p.claim_batch(LEN, 1, max) {
                Ok(mut b) => {
                    b.fill(|k, d| {
                        d.copy_from_slice(&payload);
                        d[..8].copy_from_slice(&(sent + k as u64).to_le_bytes());
                    });
                    sent += b.len() as u64;
                    b.commit();
                }
                Err(_) => {
                    full += 1;
                    std::hint::spin_loop();
                }
            }
        }
        (p, full)
    });
    let mut got = 0u64;
    let mut bad = 0u64;
    let (mut empty, mut calls) = (0u64, 0u64);
    while got < count {
        let n = c
            .poll_batch(BATCH, |r| {
                let s = u64::from_le_bytes(r.payload()[..8].try_into().unwrap());
                bad += u64::from(s != got);
                got += 1;
            })
            .expect("poll");
        if n == 0 {
            empty += 1;
            std::hint::spin_loop();
        } else {
            calls += 1;
        }
    }
    let dt = t0.elapsed();
    let (_p, full) = prod.join().unwrap();
    assert_eq!(bad, 0);
    println!(
        "{:.1} M msgs/s ({calls} batches, {empty} empty polls, {full} claims refused)",
        count as f64 / dt.as_secs_f64() / 1e6
    );
}
