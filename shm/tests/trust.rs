//! Who may touch a bus root: roots and segments planted by another user, or writable by
//! others, are refused; links in a root are never followed; a segment's space is reserved when
//! it is created; a consumer maps what the header declares, not the whole file.
//!
//! Cases that need a second uid or a tmpfs mount run only as root (as in CI); elsewhere they
//! say that they are skipped and why.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use mdbus_shm::{Consumer, Producer, RingConfig, list_segments};

mod common;
use common::host::{OTHER, Tmpfs, as_other, chmod, names_in, need_root};
use common::ring::{cfg, closed_segment, oldest};

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The bytes of this process's mappings of `path`, from `/proc/self/maps`.
fn mapped_bytes(path: &Path) -> u64 {
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    let want = path.to_str().unwrap();
    maps.lines()
        .filter(|l| l.ends_with(want))
        .map(|l| {
            let range = l.split_whitespace().next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            u64::from_str_radix(b, 16).unwrap() - u64::from_str_radix(a, 16).unwrap()
        })
        .sum()
}

#[test]
fn a_root_planted_by_another_user_is_refused() {
    if !need_root("a_root_planted_by_another_user_is_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    // A real segment, readable by the other user so that it can copy it.
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    chmod(&src, 0o755);
    closed_segment(&src.join("quotes"));
    chmod(&src.join("quotes"), 0o644);
    // The other user pre-creates the root, world-writable, and plants the segment.
    let parent = dir.path().join("shm");
    fs::create_dir(&parent).unwrap();
    chmod(&parent, 0o777);
    let root = parent.join("mdbus-victim");
    as_other(&format!(
        "mkdir -m 0777 {r} && cp {s} {r}/quotes && chmod 0666 {r}/quotes",
        r = root.display(),
        s = src.join("quotes").display()
    ));
    let planted = fs::read(root.join("quotes")).unwrap();

    let err = Consumer::open(&root.join("quotes"), &oldest())
        .expect_err("a consumer must refuse a root planted by another user");
    let msg = err.to_string();
    assert!(
        msg.contains(&root.display().to_string())
            && msg.contains(&format!("uid {OTHER}"))
            && msg.contains("0777"),
        "{msg}"
    );
    let err = Producer::create(&root.join("trades"), &cfg())
        .expect_err("a producer must refuse a root planted by another user");
    assert!(msg.contains("remove"), "{msg}");
    assert!(err.to_string().contains(&format!("uid {OTHER}")), "{err}");
    assert!(list_segments(&root).is_err(), "listing an untrusted root");
    assert!(!root.join("trades").exists());
    assert_eq!(fs::read(root.join("quotes")).unwrap(), planted);
}

#[test]
fn a_segment_of_another_user_is_refused_and_kept() {
    if !need_root("a_segment_of_another_user_is_refused_and_kept") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quotes");
    closed_segment(&path);
    std::os::unix::fs::chown(&path, Some(OTHER), Some(OTHER)).unwrap();
    let before = fs::read(&path).unwrap();

    let err = Consumer::open(&path, &oldest())
        .expect_err("a consumer must refuse a segment of another user");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains(&format!("uid {OTHER}"))
            && msg.contains("remove"),
        "{msg}"
    );
    let err = Producer::create(&path, &cfg())
        .expect_err("a producer must not take over a segment of another user");
    assert!(err.to_string().contains(&format!("uid {OTHER}")), "{err}");
    assert_eq!(fs::read(&path).unwrap(), before);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), OTHER);
}

#[test]
fn writable_by_others_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // A root this user creates is 0700, its segments 0600.
    let p = Producer::create(&root.join("quotes"), &cfg()).unwrap();
    assert_eq!(mode_of(&root), 0o700);
    assert_eq!(mode_of(&root.join("quotes")), 0o600);
    drop(p);

    // A root writable by others: anyone could plant or swap segments.
    chmod(&root, 0o777);
    let err = Consumer::open(&root.join("quotes"), &oldest())
        .expect_err("a world-writable root must be refused");
    let msg = err.to_string();
    assert!(msg.contains("0777") && msg.contains("chmod 700"), "{msg}");
    assert!(Producer::create(&root.join("trades"), &cfg()).is_err());
    chmod(&root, 0o770);
    assert!(Consumer::open(&root.join("quotes"), &oldest()).is_err());

    // 0755 is not writable by others: accepted.
    chmod(&root, 0o755);
    Consumer::open(&root.join("quotes"), &oldest()).unwrap();

    // A segment writable by group or others.
    chmod(&root.join("quotes"), 0o666);
    let err = Consumer::open(&root.join("quotes"), &oldest())
        .expect_err("a world-writable segment must be refused");
    let msg = err.to_string();
    assert!(msg.contains("0666") && msg.contains("quotes"), "{msg}");
    let err = Producer::create(&root.join("quotes"), &cfg())
        .expect_err("a producer must not reuse a world-writable segment");
    assert!(err.to_string().contains("0666"), "{err}");
    // A file mode that others could write is not a valid configuration.
    let err = Producer::create(
        &root.join("shared"),
        &RingConfig {
            file_mode: 0o622,
            ..cfg()
        },
    )
    .expect_err("file_mode 0o622 must be refused");
    assert!(err.to_string().contains("file_mode"), "{err}");
}

#[test]
fn a_symlink_at_a_segment_path_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let target = elsewhere.join("victim");
    closed_segment(&target);
    let before = fs::read(&target).unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let link = root.join("quotes");
    symlink(&target, &link).unwrap();

    let err = Producer::create(&link, &cfg()).expect_err("a producer must not follow a link");
    let msg = err.to_string();
    assert!(
        msg.contains(&link.display().to_string()) && msg.contains("is a symbolic link"),
        "{msg}"
    );
    assert_eq!(
        fs::read(&target).unwrap(),
        before,
        "the target was rewritten"
    );
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    let err = Consumer::open(&link, &oldest()).expect_err("a consumer must not follow a link");
    assert!(err.to_string().contains("is a symbolic link"), "{err}");
    // Nothing left behind by the refused creation; the listing does not follow the link.
    assert_eq!(names_in(&root), ["quotes"]);
    assert!(list_segments(&root).unwrap().is_empty());
    assert!(mdbus_shm::remove_stale(&root).unwrap().is_empty());
    assert_eq!(fs::read(&target).unwrap(), before);
}

#[test]
fn a_dangling_symlink_is_reported_as_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("quotes");
    symlink(dir.path().join("nowhere"), &link).unwrap();
    let err = Producer::create(&link, &cfg())
        .expect_err("a producer must not create through a dangling link");
    let msg = err.to_string();
    assert!(msg.contains("is a symbolic link"), "{msg}");
    assert!(!msg.contains("pid 0"), "{msg}");
    assert!(!dir.path().join("nowhere").exists());
    let err = Consumer::open(&link, &oldest()).err().unwrap();
    assert!(err.to_string().contains("is a symbolic link"), "{err}");
}

#[test]
fn a_directory_at_a_segment_path_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quotes");
    fs::create_dir(&path).unwrap();
    let err = Producer::create(&path, &cfg()).expect_err("a directory is not a segment");
    assert!(
        err.to_string().contains("is a directory, not a segment"),
        "{err}"
    );
    let err = Consumer::open(&path, &oldest()).expect_err("a directory is not a segment");
    assert!(
        err.to_string().contains("is a directory, not a segment"),
        "{err}"
    );
}

#[test]
fn a_full_tmpfs_is_a_setup_error_not_a_sigbus() {
    if !need_root("a_full_tmpfs_is_a_setup_error_not_a_sigbus") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount(dir.path().join("mnt"), "256k");
    let path = mnt.dir.join("quotes");
    let big = RingConfig {
        capacity: 1 << 20,
        ..cfg()
    };
    let err = Producer::create(&path, &big).expect_err("a 1 MiB ring cannot fit a 256 KiB tmpfs");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("bytes"),
        "{msg}"
    );
    // Nothing live-looking left behind: no segment, no temporary file.
    assert!(names_in(&mnt.dir).is_empty(), "{:?}", names_in(&mnt.dir));
    // A ring that fits still works there.
    let mut p = Producer::create(&path, &cfg()).unwrap();
    let mut c = Consumer::open(&path, &oldest()).unwrap();
    p.publish(1, b"fits").unwrap();
    let mut got = Vec::new();
    c.poll(|r| got.push(r.payload().to_vec())).unwrap();
    assert_eq!(got, [b"fits".to_vec()]);
    drop((p, c));
}

#[test]
fn a_consumer_maps_what_the_header_declares() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quotes");
    let mut p = Producer::create(&path, &cfg()).unwrap();
    p.publish(1, b"x").unwrap();
    let declared = fs::metadata(&path).unwrap().len();
    // Someone extends the file to 64 MiB (sparse).
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let before = mapped_bytes(&path);
    let mut c = Consumer::open(&path, &oldest()).unwrap();
    let mapped = mapped_bytes(&path) - before;
    assert!(
        mapped <= declared,
        "mapped {mapped} bytes of a segment that declares {declared}"
    );
    let mut got = Vec::new();
    c.poll(|r| got.push(r.payload().to_vec())).unwrap();
    assert_eq!(got, [b"x".to_vec()]);
}
