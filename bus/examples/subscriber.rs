//! Reads the stream that the `publisher` example writes, from another process, and reports
//! what it saw: messages, losses (exact, from sequence numbers), and the publisher's liveness.
//!
//! ```text
//! cargo run --release -p mdbus-bus --example subscriber -- [STREAM]
//! ```

use std::time::{Duration, Instant};

use mdbus_bus::{Bus, ProducerStatus, ReceiveError, SubscribeOptions, Subscriber, WaitStrategy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stream = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "example.ticks".to_owned());
    let bus = Bus::new()?;

    // Wait for a live publisher: the stream may not exist yet, or hold a finished run.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut subscriber = loop {
        match bus.subscriber(&stream, &SubscribeOptions::default()) {
            Ok(s)
                if matches!(
                    s.producer_status(Duration::from_secs(2)),
                    ProducerStatus::Alive { .. }
                ) =>
            {
                break s;
            }
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Ok(_) if Instant::now() > deadline => {
                return Err(format!("no live publisher on {stream:?}").into());
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    println!("subscribed to {stream:?}, epoch {:#x}", subscriber.epoch());

    let wait = WaitStrategy::SpinThenYield { spins: 1000 };
    // A corrupt payload is only a real corruption if the poll that delivered it did not then
    // report an overrun (a lapped reader's last view is speculative and is discarded).
    let mut corrupt = 0u64;
    let mut last_was_corrupt = false;
    let mut last_report = Instant::now();
    loop {
        let result = subscriber.poll_batch(256, |msg| {
            let p = msg.payload();
            let word = |i: usize| u64::from_le_bytes(p[i * 8..i * 8 + 8].try_into().unwrap());
            last_was_corrupt = p.len() != 32 || word(2) != word(0) ^ word(1) || word(3) != 0xfeed;
            corrupt += u64::from(last_was_corrupt);
        });
        match result {
            // Nothing new: wait a little, and check the publisher is still there.
            Ok(0) => match subscriber.wait(&wait, Some(Duration::from_millis(100))) {
                Ok(true) => {}
                Ok(false) => match subscriber.producer_status(Duration::from_secs(2)) {
                    ProducerStatus::Alive { .. } => {}
                    other => {
                        println!("publisher is gone ({other:?})");
                        break;
                    }
                },
                Err(ReceiveError::Closed) => {
                    if !reopen_if_replaced(&mut subscriber)? {
                        println!("stream closed by its publisher");
                        break;
                    }
                }
                Err(e) => println!("wait: {e}"),
            },
            Ok(_) => {}
            Err(ReceiveError::Overrun {
                first_lost_seq,
                lost,
            }) => {
                corrupt -= u64::from(std::mem::take(&mut last_was_corrupt));
                println!("overrun: lost {lost} messages from seq {first_lost_seq}");
            }
            Err(ReceiveError::Closed) => {
                if !reopen_if_replaced(&mut subscriber)? {
                    println!("stream closed by its publisher");
                    break;
                }
            }
            Err(ReceiveError::Corrupt { position, .. }) => {
                println!("corrupt record at ring position {position}: resynchronised");
            }
            Err(ReceiveError::NewEpoch { old, new }) => {
                println!("publisher restarted: epoch {old:#x} -> {new:#x}");
                subscriber.reopen()?;
            }
        }
        if last_report.elapsed() > Duration::from_secs(1) {
            let s = subscriber.stats();
            println!("received {} lost {} corrupt {corrupt}", s.received, s.lost);
            last_report = Instant::now();
        }
    }
    let s = subscriber.stats();
    println!(
        "total: received {} in order, lost {} in {} overruns, corrupt {corrupt}",
        s.received, s.lost, s.overruns
    );
    Ok(())
}

/// A closed stream whose segment a new publisher has since replaced: follow it.
fn reopen_if_replaced(subscriber: &mut Subscriber) -> Result<bool, Box<dyn std::error::Error>> {
    if subscriber.producer_status(Duration::from_secs(2)) != ProducerStatus::Replaced {
        return Ok(false);
    }
    let change = subscriber.reopen()?;
    println!("publisher restarted: {change:?}");
    Ok(true)
}
