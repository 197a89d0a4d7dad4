//! Host-level helpers for tests that need root: a second uid (`nobody`, through `setpriv`), a
//! small tmpfs mount, and the skip (with the reason printed) where the test is not root.
//!
//! Shared by the tests of several crates (`mod common;` here, `#[path]` elsewhere); each uses
//! a part of it.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The uid (and gid) that plants files: `nobody`.
pub const OTHER: u32 = 65534;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `true` if the test can run; prints why not otherwise.
pub fn need_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("{test}: skipped: needs root (a second uid via setpriv, or a tmpfs mount)");
    false
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `script` under `sh` as uid/gid 65534 with no supplementary groups.
pub fn as_other(script: &str) {
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={OTHER}"),
            &format!("--regid={OTHER}"),
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("run setpriv");
    assert!(
        out.status.success(),
        "as uid {OTHER}: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small tmpfs mounted for one test, unmounted (and its mount point removed) on drop.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Creates `dir` and mounts a tmpfs of `size` (as `mount -o size=`) on it, mode 0700.
    pub fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        fs::create_dir(&dir).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// The names of the entries of `dir`, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
