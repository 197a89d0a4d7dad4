//! Segment files in one process: bad input is refused with a clear error, a live producer
//! owns its path, a closed one is replaced with a new epoch, operator helpers.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use mdbus_shm::{
    ClaimError, Consumer, EpochChange, Mode, PollError, Producer, ProducerStatus, RingConfig,
    SetupError, layout, list_segments, remove_stale,
};

mod common;
use common::ring::{cfg, closed_segment, oldest};

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

#[test]
fn missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Consumer::open(&dir.path().join("nope"), &oldest()).unwrap_err();
    assert!(matches!(err, SetupError::Io { op: "open", .. }), "{err}");
}

#[test]
fn truncated_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    closed_segment(&path);
    let full = fs::metadata(&path).unwrap().len();

    // Header intact, data region cut short.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(full - 100)
        .unwrap();
    let err = Consumer::open(&path, &oldest()).unwrap_err();
    assert!(
        matches!(err, SetupError::Truncated { len, expected, .. } if len == full - 100 && expected == full),
        "{err}"
    );

    // Not even a header.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    let err = Consumer::open(&path, &oldest()).unwrap_err();
    assert!(
        matches!(err, SetupError::Truncated { len: 100, .. }),
        "{err}"
    );

    // Empty.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let err = Consumer::open(&path, &oldest()).unwrap_err();
    assert!(matches!(err, SetupError::Truncated { len: 0, .. }), "{err}");
    assert!(
        err.to_string().contains(path.to_str().unwrap()),
        "error names the file: {err}"
    );
}

#[test]
fn foreign_file_is_refused_and_never_clobbered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    let text = "these are someone's notes, not a ring\n".repeat(300);
    fs::write(&path, &text).unwrap();
    let err = Consumer::open(&path, &oldest()).unwrap_err();
    assert!(
        matches!(
            err,
            SetupError::BadMagic {
                expected: layout::MAGIC,
                ..
            }
        ),
        "{err}"
    );
    let err = Producer::create(&path, &cfg()).unwrap_err();
    assert!(matches!(err, SetupError::BadMagic { .. }), "{err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn wrong_magic_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    closed_segment(&path);
    patch(&path, 0, b"X");
    let err = Consumer::open(&path, &oldest()).unwrap_err();
    let SetupError::BadMagic { found, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(found.to_le_bytes()[0], b'X');
}

#[test]
fn other_layout_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    closed_segment(&path);
    // Layout: version u32 at offset 8.
    patch(&path, 8, &0u32.to_le_bytes());
    let err = Consumer::open(&path, &oldest()).unwrap_err();
    assert!(
        matches!(
            err,
            SetupError::UnsupportedVersion {
                found: 0,
                expected: layout::LAYOUT_VERSION,
                ..
            }
        ),
        "{err}"
    );
    // A segment of another version at the path is not replaced either.
    let err = Producer::create(&path, &cfg()).unwrap_err();
    assert!(
        matches!(err, SetupError::UnsupportedVersion { .. }),
        "{err}"
    );
}

#[test]
fn impossible_header_fields_are_refused_before_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    for (offset, bytes, field) in [
        // capacity u64 at 16: not a power of two.
        (16u64, 12_345u64.to_le_bytes().to_vec(), "capacity"),
        // capacity larger than the file: caught as a size mismatch (segment_len at 56).
        (16, (1u64 << 30).to_le_bytes().to_vec(), "segment_len"),
        // max_msg_len u32 at 24: larger than a quarter of the ring.
        (24, 1_000_000u32.to_le_bytes().to_vec(), "max_msg_len"),
        // mode u32 at 28.
        (28, 9u32.to_le_bytes().to_vec(), "mode"),
        // header_size u32 at 12.
        (12, 8u32.to_le_bytes().to_vec(), "header_size"),
    ] {
        let _ = fs::remove_file(&path);
        closed_segment(&path);
        patch(&path, offset, &bytes);
        let err = Consumer::open(&path, &oldest()).unwrap_err();
        let at = if field == "segment_len" {
            56
        } else {
            offset as usize
        };
        assert!(
            matches!(err, SetupError::BadHeader { field: f, offset: o, .. } if f == field && o == at),
            "{field}: {err}"
        );
    }
}

#[test]
fn bad_config_and_oversized_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let err = Producer::create(
        &path,
        &RingConfig {
            capacity: 3000,
            ..cfg()
        },
    )
    .unwrap_err();
    assert!(matches!(err, SetupError::BadConfig(_)), "{err}");
    assert!(!path.exists());
    let mut p = Producer::create(&path, &cfg()).unwrap();
    assert_eq!(
        p.publish(0, &[0; 513]),
        Err(ClaimError::TooLarge { len: 513, max: 512 })
    );
    assert_eq!(
        p.claim(100_000, 0).unwrap_err(),
        ClaimError::TooLarge {
            len: 100_000,
            max: 512
        }
    );
    assert_eq!(p.publish(0, &[0; 512]), Ok(0));
}

#[test]
fn a_live_producer_owns_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let p = Producer::create(&path, &cfg()).unwrap();
    let err = Producer::create(&path, &cfg()).unwrap_err();
    assert!(
        matches!(err, SetupError::InUse { pid, .. } if pid == std::process::id()),
        "{err}"
    );
    drop(p);
    Producer::create(&path, &cfg()).unwrap();
}

#[test]
fn a_closed_segment_is_replaced_with_a_new_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep/er/s");
    let mut p1 = Producer::create(&path, &cfg()).unwrap();
    let mut c = Consumer::open(&path, &oldest()).unwrap();
    assert_eq!(c.epoch(), p1.epoch());
    for i in 0..3u8 {
        p1.publish(1, &[i]).unwrap();
    }
    let old = p1.epoch();
    drop(p1);
    assert_eq!(
        c.producer_status(Duration::from_secs(60)),
        ProducerStatus::Closed
    );

    let mut p2 = Producer::create(&path, &cfg()).unwrap();
    let new = p2.epoch();
    assert_ne!(old, new);
    assert_eq!(p2.next_seq(), 0);
    p2.publish(2, b"fresh").unwrap();
    assert_eq!(
        c.producer_status(Duration::from_secs(60)),
        ProducerStatus::Replaced
    );

    // The old epoch is read to the end, then the consumer is told about the new one.
    let mut got = Vec::new();
    loop {
        match c.poll(|r| got.push(r.payload()[0])) {
            Ok(true) => {}
            Ok(false) => panic!("a replaced segment must report NewEpoch"),
            Err(e) => {
                assert_eq!(e, PollError::NewEpoch { old, new });
                break;
            }
        }
    }
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(c.reopen().unwrap(), EpochChange { old, new });
    assert_eq!(c.reopen().unwrap(), EpochChange { old: new, new });
    let mut fresh = Vec::new();
    assert_eq!(c.poll(|r| fresh.extend_from_slice(r.payload())), Ok(true));
    assert_eq!(fresh, b"fresh");
    assert!(matches!(
        c.producer_status(Duration::from_secs(60)),
        ProducerStatus::Alive { .. }
    ));
}

#[test]
fn file_modes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("private");
    let _p = Producer::create(&path, &cfg()).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    let path = dir.path().join("group");
    let _q = Producer::create(
        &path,
        &RingConfig {
            file_mode: 0o640,
            ..cfg()
        },
    )
    .unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o640
    );
}

#[test]
fn prefault_and_mlock_options() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut p = Producer::create(
        &path,
        &RingConfig {
            prefault: true,
            ..cfg()
        },
    )
    .unwrap();
    p.publish(0, b"warm").unwrap();
    drop(p);
    match Producer::create(
        &path,
        &RingConfig {
            mlock: true,
            ..cfg()
        },
    ) {
        Ok(mut p) => assert_eq!(p.publish(0, b"locked"), Ok(0)),
        Err(SetupError::MlockFailed { len, .. }) => assert!(len >= 16 * 1024),
        Err(e) => panic!("mlock must succeed or fail with MlockFailed: {e}"),
    }
}

#[test]
fn list_and_remove_stale() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let live = Producer::create(
        &root.join("live"),
        &RingConfig {
            mode: Mode::Lossless,
            ..cfg()
        },
    )
    .unwrap();
    closed_segment(&root.join("closed"));
    fs::write(root.join("foreign"), b"not a segment").unwrap();
    // A temporary file left by an interrupted creation, old enough to be stale.
    let tmp = root.join(".x.tmp.1.2");
    fs::write(&tmp, b"half-built").unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    OpenOptions::new()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(old)
        .unwrap();

    let list = list_segments(root).unwrap();
    let names: Vec<_> = list.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["closed", "live"]);
    assert!(!list[0].alive && list[0].closed);
    assert!(list[1].alive && !list[1].closed);
    assert_eq!(list[1].epoch, live.epoch());
    assert_eq!(list[1].mode, Mode::Lossless);
    assert_eq!(list[1].pid, std::process::id());
    assert_eq!(list[1].capacity, 16 * 1024);

    let removed = remove_stale(root).unwrap();
    assert_eq!(removed, [root.join(".x.tmp.1.2"), root.join("closed")]);
    assert!(root.join("live").exists() && root.join("foreign").exists());
    drop(live);
    assert_eq!(remove_stale(root).unwrap(), [root.join("live")]);
    assert!(list_segments(root).unwrap().is_empty());
}

#[test]
fn default_root_is_per_user() {
    let root = mdbus_shm::default_root();
    if std::env::var_os("MDBUS_SHM_ROOT").is_none() {
        let s = root.to_str().unwrap();
        assert!(s.starts_with("/dev/shm/mdbus-"), "{s}");
    }
}
