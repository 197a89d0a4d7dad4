//! Producer and consumers in separate processes. The test binary re-executes itself with
//! `MDBUS_SHM_TEST_ROLE` set to run a child role (see `child_process_entry`). Every test uses
//! its own temporary directory, so tests run in parallel.
//!
//! Payloads carry a pattern derived from their sequence number and a checksum in `msg_type`,
//! so a reader detects any record that is not exactly what the producer committed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use mdbus_shm::{
    ClaimError, Consumer, ConsumerOptions, EpochChange, Mode, PollError, Producer, ProducerStatus,
    Resync, RingConfig, SetupError, StartAt, list_segments, remove_stale,
};

const ROLE: &str = "MDBUS_SHM_TEST_ROLE";
const SEG: &str = "MDBUS_SHM_TEST_PATH";
const COUNT: &str = "MDBUS_SHM_TEST_COUNT";
const MODE: &str = "MDBUS_SHM_TEST_MODE";
const WAIT_CONSUMERS: &str = "MDBUS_SHM_TEST_WAIT_CONSUMERS";
const STALL_AFTER: &str = "MDBUS_SHM_TEST_STALL_AFTER";
const GO_FILE: &str = "MDBUS_SHM_TEST_GO_FILE";
const PAUSE_AT: &str = "MDBUS_SHM_TEST_PAUSE_AT";
const DONE_FILE: &str = "MDBUS_SHM_TEST_DONE_FILE";

/// Upper bound for any wait in these tests: a stuck test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(60);

fn ring(mode: Mode, capacity: usize) -> RingConfig {
    RingConfig {
        capacity,
        max_msg_len: 256,
        mode,
        max_consumers: 4,
        ..RingConfig::default()
    }
}

fn payload_len(seq: u64) -> usize {
    8 + (seq as usize * 13) % 200
}

/// The exact bytes of record `seq`.
fn body(seq: u64) -> Vec<u8> {
    let len = payload_len(seq);
    let mut v = seq.to_le_bytes().to_vec();
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

/// FNV-1a of the payload, carried in `msg_type`.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Checks a record copied out of the ring; panics with a clear message if it is not exactly
/// what the producer committed for its seq.
fn verify(seq: u64, msg_type: u32, payload: &[u8]) {
    assert_eq!(
        checksum(payload),
        msg_type,
        "seq {seq}: checksum mismatch (partial record?)"
    );
    assert_eq!(payload, body(seq).as_slice(), "seq {seq}: payload mismatch");
}

/// Publishes record `seq` through claim/commit, writing the payload in two halves with a pause
/// between them, so that a kill often lands mid-record.
fn publish_slowly(p: &mut Producer, seq: u64) -> Result<(), ClaimError> {
    let data = body(seq);
    let mut claim = p.claim(data.len(), checksum(&data))?;
    let half = data.len() / 2;
    claim[..half].copy_from_slice(&data[..half]);
    for _ in 0..50 {
        std::hint::spin_loop();
    }
    claim[half..].copy_from_slice(&data[half..]);
    assert_eq!(claim.commit(), seq);
    Ok(())
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Opens the segment once it exists.
fn open_when_ready(path: &Path, opts: &ConsumerOptions) -> Consumer {
    let start = Instant::now();
    loop {
        match Consumer::open(path, opts) {
            Ok(c) => return c,
            Err(SetupError::Io { .. }) if start.elapsed() < DEADLINE => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("open {}: {e}", path.display()),
        }
    }
}

/// Counts of what a reader saw.
#[derive(Debug, Default)]
struct Tally {
    delivered: u64,
    lost: u64,
    overruns: u64,
    first_loss: Option<(u64, u64)>,
    last_seq: Option<u64>,
}

impl Tally {
    /// Polls once; returns `Ok(true)` if a record was delivered, `Ok(false)` if nothing was
    /// new, the error otherwise (overruns are counted and returned as `Ok(false)`).
    fn poll(&mut self, c: &mut Consumer) -> Result<bool, PollError> {
        let mut copy = Vec::new();
        let mut meta = (0, 0);
        match c.poll(|r| {
            copy.extend_from_slice(r.payload());
            meta = (r.seq(), r.msg_type());
        }) {
            Ok(true) => {
                // Only validated deliveries are checked: they must be exact.
                verify(meta.0, meta.1, &copy);
                if let Some(prev) = self.last_seq {
                    assert!(meta.0 > prev, "seq went backwards");
                }
                self.last_seq = Some(meta.0);
                self.delivered += 1;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(PollError::Overrun {
                first_lost_seq,
                lost,
            }) => {
                assert!(lost >= 1);
                self.first_loss.get_or_insert((first_lost_seq, lost));
                self.lost += lost;
                self.overruns += 1;
                assert_eq!(
                    c.next_seq(),
                    first_lost_seq + lost,
                    "loss count must be exact"
                );
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// Child roles. In a normal test run `MDBUS_SHM_TEST_ROLE` is unset and this does nothing.
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let path = PathBuf::from(std::env::var(SEG).expect("segment path"));
    let mode = if std::env::var(MODE).as_deref() == Ok("lossless") {
        Mode::Lossless
    } else {
        Mode::Broadcast
    };
    match role.as_str() {
        // Creates the segment, waits for consumers (lossless), publishes COUNT records (pausing
        // after PAUSE_AT of them until the go file exists, if one is named), waits for the
        // done file if any, then closes cleanly.
        "publisher" => {
            let mut p = Producer::create(&path, &ring(mode, 16 * 1024)).unwrap();
            println!("epoch={} pid={}", p.epoch(), std::process::id());
            let want = env_u64(WAIT_CONSUMERS) as u32;
            wait_for("consumers", || p.active_consumers() >= want);
            let go = std::env::var(GO_FILE).ok();
            let pause_at = env_u64(PAUSE_AT);
            for seq in 0..env_u64(COUNT) {
                if let Some(go) = go.as_deref().filter(|_| seq == pause_at) {
                    wait_for("go file", || Path::new(go).exists());
                }
                let start = Instant::now();
                while let Err(e) = publish_slowly(&mut p, seq) {
                    assert_eq!(e, ClaimError::BackPressured);
                    assert!(start.elapsed() < DEADLINE, "back-pressured for too long");
                    p.heartbeat();
                    std::thread::yield_now();
                }
                if seq % 1024 == 0 {
                    p.heartbeat();
                }
            }
            println!("published={}", p.next_seq());
            if let Ok(done) = std::env::var(DONE_FILE) {
                wait_for("done file", || Path::new(&done).exists());
            }
        }
        // Publishes forever (until killed).
        "endless_publisher" => {
            let mut p = Producer::create(&path, &ring(mode, 64 * 1024)).unwrap();
            println!("epoch={} pid={}", p.epoch(), std::process::id());
            let start = Instant::now();
            let mut seq = 0;
            while start.elapsed() < DEADLINE {
                if publish_slowly(&mut p, seq).is_ok() {
                    seq += 1;
                }
                if seq % 256 == 0 {
                    p.heartbeat();
                }
            }
            panic!("endless publisher was never killed");
        }
        // Publishes, then dies without closing the segment.
        "crashing_publisher" => {
            let mut p = Producer::create(&path, &ring(mode, 16 * 1024)).unwrap();
            for seq in 0..env_u64(COUNT) {
                publish_slowly(&mut p, seq).unwrap();
            }
            println!("epoch={}", p.epoch());
            std::process::exit(0); // no destructors: the segment stays "live" with a dead pid
        }
        // Reads everything until the stream closes, checking every record; may stall on
        // purpose after STALL_AFTER records (writing the go file then) until the producer
        // has closed.
        "subscriber" => {
            let opts = ConsumerOptions {
                start: StartAt::Oldest,
                resync: Resync::Oldest,
                lossless: true,
            };
            let mut c = open_when_ready(&path, &opts);
            let stall_after = std::env::var(STALL_AFTER)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            let mut t = Tally::default();
            let start = Instant::now();
            loop {
                assert!(start.elapsed() < DEADLINE, "subscriber timed out: {t:?}");
                if stall_after == Some(t.delivered) {
                    // Fall behind on purpose: let the producer go on, wait until it is done.
                    if let Ok(go) = std::env::var(GO_FILE) {
                        std::fs::write(go, b"go").unwrap();
                    }
                    wait_for("producer close", || {
                        c.producer_status(DEADLINE) == ProducerStatus::Closed
                    });
                }
                match t.poll(&mut c) {
                    Ok(_) => {}
                    Err(PollError::Closed) => break,
                    Err(e) => panic!("{e:?}"),
                }
            }
            println!(
                "delivered={} lost={} overruns={} next={} registered={} first_loss={:?}",
                t.delivered,
                t.lost,
                t.overruns,
                c.next_seq(),
                c.is_registered(),
                t.first_loss
            );
        }
        // Registers in a lossless ring, then does nothing (until killed).
        "idle_subscriber" => {
            let opts = ConsumerOptions {
                start: StartAt::Next,
                resync: Resync::Oldest,
                lossless: true,
            };
            let c = open_when_ready(&path, &opts);
            assert!(c.is_registered());
            println!("registered");
            std::thread::sleep(DEADLINE);
            panic!("idle subscriber was never killed");
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

/// A child process running one role; killed if still running when dropped.
struct Kid {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Kid {
    fn spawn(role: &str, path: &Path, env: &[(&str, String)]) -> Kid {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE, role)
        .env(SEG, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Kid { child, out }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next output line starting with `prefix`.
    fn line(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.out.read_line(&mut line).unwrap();
            assert!(n > 0, "child exited before printing {prefix:?}");
            if line.starts_with(prefix) {
                return line.trim_end().to_string();
            }
        }
    }

    /// A `key=value` field of a line.
    fn field(line: &str, key: &str) -> String {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
            .to_string()
    }

    fn wait_ok(&mut self) {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
    }

    /// SIGKILL, then reap (so the pid is really gone).
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn publisher_and_subscribers_in_separate_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stream");
    let count = 20_000u64;
    let mut publisher = Kid::spawn(
        "publisher",
        &path,
        &[
            (COUNT, count.to_string()),
            (MODE, "lossless".into()),
            (WAIT_CONSUMERS, "2".into()),
        ],
    );
    let mut subs: Vec<Kid> = (0..2)
        .map(|_| Kid::spawn("subscriber", &path, &[]))
        .collect();
    for sub in &mut subs {
        let line = sub.line("delivered=");
        assert_eq!(Kid::field(&line, "delivered"), count.to_string(), "{line}");
        assert_eq!(Kid::field(&line, "lost"), "0", "{line}");
        assert_eq!(Kid::field(&line, "registered"), "true", "{line}");
        sub.wait_ok();
    }
    publisher.wait_ok();
}

#[test]
fn lapped_subscriber_reports_exact_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stream");
    let go = dir.path().join("go");
    let count = 5_000u64;
    let mut publisher = Kid::spawn(
        "publisher",
        &path,
        &[
            (COUNT, count.to_string()),
            (GO_FILE, go.display().to_string()),
            (PAUSE_AT, "10".into()),
        ],
    );
    let mut sub = Kid::spawn(
        "subscriber",
        &path,
        &[
            (STALL_AFTER, "10".into()),
            (GO_FILE, go.display().to_string()),
        ],
    );
    let line = sub.line("delivered=");
    sub.wait_ok();
    publisher.wait_ok();
    let delivered: u64 = Kid::field(&line, "delivered").parse().unwrap();
    let lost: u64 = Kid::field(&line, "lost").parse().unwrap();
    // 5000 records of ~120 bytes in a 16 KiB ring: the stalled reader was lapped.
    assert!(lost > 0, "{line}");
    assert_eq!(
        delivered + lost,
        count,
        "every record delivered or counted lost: {line}"
    );
    assert_eq!(Kid::field(&line, "next"), count.to_string(), "{line}");
    // The first loss starts exactly where the reader stalled.
    assert!(
        Kid::field(&line, "first_loss").starts_with("Some((10,"),
        "{line}"
    );
}

#[test]
fn killed_producer_is_dead_and_no_partial_record_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stream");
    let mut publisher = Kid::spawn("endless_publisher", &path, &[]);
    let pid = publisher.pid();
    let opts = ConsumerOptions {
        start: StartAt::Oldest,
        resync: Resync::Newest,
        lossless: true,
    };
    let mut c = open_when_ready(&path, &opts);
    let mut t = Tally::default();
    let start = Instant::now();
    while t.delivered < 3_000 {
        assert!(start.elapsed() < DEADLINE, "reader starved: {t:?}");
        t.poll(&mut c).unwrap();
    }
    assert_eq!(
        c.producer_status(Duration::from_secs(30)),
        ProducerStatus::Alive { pid }
    );
    // Kill it mid-stream (very likely mid-claim: it spends most of its time in one).
    publisher.kill();
    // Everything committed before the kill is readable and exact; nothing after.
    while t.poll(&mut c).unwrap() || c.lag() > 0 {}
    let committed = c.next_seq();
    for _ in 0..1000 {
        assert_eq!(t.poll(&mut c), Ok(false), "nothing beyond the last commit");
    }
    assert_eq!(c.next_seq(), committed);
    assert_eq!(c.lag(), 0);
    assert_eq!(
        c.producer_status(Duration::from_secs(30)),
        ProducerStatus::Dead { pid }
    );
    assert!(t.delivered >= 3_000);
}

#[test]
fn restarted_producer_is_a_new_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stream");
    let done = dir.path().join("done");
    let mut first = Kid::spawn("endless_publisher", &path, &[]);
    let old: u64 = Kid::field(&first.line("epoch="), "epoch").parse().unwrap();
    let opts = ConsumerOptions {
        start: StartAt::Oldest,
        resync: Resync::Newest,
        lossless: true,
    };
    let mut c = open_when_ready(&path, &opts);
    assert_eq!(c.epoch(), old);
    let mut t = Tally::default();
    while t.delivered < 1000 {
        t.poll(&mut c).unwrap();
    }
    first.kill();

    // A new producer replaces the dead one's segment.
    let mut second = Kid::spawn(
        "publisher",
        &path,
        &[
            (COUNT, "100".into()),
            (DONE_FILE, done.display().to_string()),
        ],
    );
    let line = second.line("epoch=");
    let new: u64 = Kid::field(&line, "epoch").parse().unwrap();
    let pid: u32 = Kid::field(&line, "pid").parse().unwrap();
    assert_ne!(new, old);
    second.line("published=");

    // The old segment is read to its end, then the new epoch is reported, never garbage.
    let start = Instant::now();
    let err = loop {
        assert!(start.elapsed() < DEADLINE, "no NewEpoch reported");
        match t.poll(&mut c) {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert_eq!(err, PollError::NewEpoch { old, new });
    assert_eq!(
        c.producer_status(Duration::from_secs(30)),
        ProducerStatus::Replaced
    );
    assert_eq!(c.reopen().unwrap(), EpochChange { old, new });

    // The live producer owns the path.
    let e = Producer::create(&path, &ring(Mode::Broadcast, 16 * 1024)).unwrap_err();
    assert!(
        matches!(e, SetupError::InUse { pid: p, .. } if p == pid),
        "{e}"
    );

    let mut t2 = Tally::default();
    while t2.delivered < 100 {
        assert!(start.elapsed() < DEADLINE);
        t2.poll(&mut c).unwrap();
    }
    assert_eq!(c.next_seq(), 100);
    std::fs::write(&done, b"").unwrap();
    second.wait_ok();
    wait_for("close", || t2.poll(&mut c) == Err(PollError::Closed));
}

#[test]
fn dead_consumer_is_reaped_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stream");
    let mut p = Producer::create(&path, &ring(Mode::Lossless, 16 * 1024)).unwrap();
    let mut sub = Kid::spawn("idle_subscriber", &path, &[]);
    sub.line("registered");
    assert_eq!(p.active_consumers(), 1);
    let mut seq = 0;
    while publish_slowly(&mut p, seq).is_ok() {
        seq += 1;
    }
    // The idle consumer holds the ring: back-pressure, not overwrite.
    assert_eq!(publish_slowly(&mut p, seq), Err(ClaimError::BackPressured));
    sub.kill();
    // Its slot is reaped on the next claims (liveness is checked at most once a millisecond).
    wait_for("reaping", || publish_slowly(&mut p, seq).is_ok());
    assert_eq!(p.reaped_consumers(), 1);
    assert_eq!(p.active_consumers(), 0);
}

#[test]
fn crashed_producer_segment_is_listed_dead_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stream");
    let mut kid = Kid::spawn("crashing_publisher", &path, &[(COUNT, "10".into())]);
    kid.line("epoch=");
    kid.wait_ok();
    let list = list_segments(dir.path()).unwrap();
    assert_eq!(list.len(), 1);
    assert!(!list[0].alive && !list[0].closed, "{:?}", list[0]);
    assert_eq!(list[0].pid, kid.pid());
    // Its data is still readable, and its producer is reported dead.
    let mut c = Consumer::open(
        &path,
        &ConsumerOptions {
            start: StartAt::Oldest,
            ..ConsumerOptions::default()
        },
    )
    .unwrap();
    let mut t = Tally::default();
    while t.poll(&mut c).unwrap() {}
    assert_eq!(t.delivered, 10);
    assert_eq!(
        c.producer_status(Duration::from_secs(30)),
        ProducerStatus::Dead { pid: kid.pid() }
    );
    assert_eq!(remove_stale(dir.path()).unwrap(), [path]);
}
