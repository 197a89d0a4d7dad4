//! A bus root and the counter files in it belong to one user: a root planted by another user
//! or writable by others is refused, links are not followed, and a full filesystem is a clear
//! error when a counter file is created, not a SIGBUS.
//!
//! Cases that need a second uid or a tmpfs mount run only as root (as in CI); elsewhere they
//! say that they are skipped and why.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use mdbus_bus::{Bus, StreamConfig, SubscribeOptions};
use mdbus_shm::counters::{CounterFile, list_counters, read_counters, remove_finished};

#[path = "../../shm/tests/common/host.rs"]
mod host;
use host::{OTHER, Tmpfs, as_other, chmod, is_root, names_in, need_root};

fn counters(root: &Path) -> Result<CounterFile, mdbus_shm::counters::CounterError> {
    CounterFile::create(root, "quotes", "send", "", &["packets"])
}

#[test]
fn a_bus_root_planted_by_another_user_is_refused() {
    if !need_root("a_bus_root_planted_by_another_user_is_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o777);
    let root = dir.path().join("mdbus-victim");
    as_other(&format!("mkdir -m 0777 {}", root.display()));

    let err = Bus::with_root(&root).expect_err("a root of another user must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&root.display().to_string())
            && msg.contains(&format!("uid {OTHER}"))
            && msg.contains("0777")
            && msg.contains("remove"),
        "{msg}"
    );
    let err = counters(&root).expect_err("counters must refuse a root of another user");
    assert!(err.to_string().contains(&format!("uid {OTHER}")), "{err}");
    assert!(list_counters(&root).is_err());
    assert!(names_in(&root).is_empty());
}

#[test]
fn a_bus_root_writable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bus");
    // A root the bus creates is 0700 and works.
    let bus = Bus::with_root(&root).unwrap();
    assert_eq!(
        fs::metadata(&root).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    let publisher = bus.publisher("quotes", &StreamConfig::default()).unwrap();
    drop(publisher);

    chmod(&root, 0o777);
    let err = Bus::with_root(&root).expect_err("a world-writable root must be refused");
    let msg = err.to_string();
    assert!(msg.contains("0777") && msg.contains("chmod 700"), "{msg}");
    // A `Bus` made before the change re-checks on every open.
    assert!(
        bus.subscriber("quotes", &SubscribeOptions::default())
            .is_err()
    );
    assert!(bus.streams().is_err());
    assert!(counters(&root).is_err());
    assert!(list_counters(&root).is_err());
    assert!(remove_finished(&root).is_err());

    // 0755: not writable by others, accepted.
    chmod(&root, 0o755);
    let bus = Bus::with_root(&root).unwrap();
    assert_eq!(bus.streams().unwrap().len(), 1);
    counters(&root).unwrap();
}

#[test]
fn counter_files_are_not_read_through_links_or_from_others() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    let root = dir.path().join("bus");
    fs::create_dir(&root).unwrap();
    let real = counters(&elsewhere).unwrap();
    real.publish(&[7]);
    let link = root.join("quotes.send.stat");
    symlink(real.path(), &link).unwrap();

    let err = read_counters(&link).expect_err("a link must not be followed");
    assert!(err.to_string().contains("is a symbolic link"), "{err}");
    let (snaps, errors) = list_counters(&root).unwrap();
    assert!(snaps.is_empty(), "{snaps:?}");
    assert!(errors.is_empty(), "{errors:?}");
    // A writer does not write through the link either: it refuses.
    let err = counters(&root).expect_err("a link at the counter file's name must be refused");
    assert!(err.to_string().contains("is a symbolic link"), "{err}");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(read_counters(real.path()).unwrap().get("packets"), Some(7));
    drop(real);
    // Cleaning removes nothing through the link.
    assert!(remove_finished(&root).unwrap().is_empty());
    assert!(elsewhere.join("quotes.send.stat").exists());

    // A counter file writable by others is refused.
    fs::remove_file(&link).unwrap();
    let mine = counters(&root).unwrap();
    chmod(mine.path(), 0o666);
    let err =
        read_counters(mine.path()).expect_err("a world-writable counter file must be refused");
    assert!(err.to_string().contains("0666"), "{err}");
    if is_root() {
        chmod(mine.path(), 0o600);
        std::os::unix::fs::chown(mine.path(), Some(OTHER), Some(OTHER)).unwrap();
        let err =
            read_counters(mine.path()).expect_err("a counter file of another user must be refused");
        assert!(err.to_string().contains(&format!("uid {OTHER}")), "{err}");
    }
}

#[test]
fn a_full_tmpfs_is_a_clear_error_for_counter_files() {
    if !need_root("a_full_tmpfs_is_a_clear_error_for_counter_files") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount(dir.path().join("mnt"), "256k");
    // Fill the filesystem.
    let mut filler = fs::File::create(mnt.dir.join("filler")).unwrap();
    let block = [0x55u8; 4096];
    while filler.write_all(&block).is_ok() {}
    drop(filler);

    let err =
        counters(&mnt.dir).expect_err("a counter file cannot be created on a full filesystem");
    let msg = err.to_string();
    assert!(
        msg.contains("quotes.send.stat") && msg.contains("bytes"),
        "{msg}"
    );
    assert_eq!(names_in(&mnt.dir), ["filler"]);

    // A stream's segment likewise.
    let bus = Bus::with_root(&mnt.dir).unwrap();
    let err = bus
        .publisher("quotes", &StreamConfig::default())
        .expect_err("a segment cannot be created on a full filesystem");
    assert!(err.to_string().contains("bytes"), "{err}");
    assert_eq!(names_in(&mnt.dir), ["filler"]);
}
