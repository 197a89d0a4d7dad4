//! The directory that holds segments (a bus root), opened once and checked: it must belong to
//! the user this process runs as and be writable by nobody else. Every file in it is then
//! reached relative to that open directory, never through a symbolic link, and checked the
//! same way.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::os;
use crate::error::SetupError;

/// Permission bits that let someone other than the owner write: group and others.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// An open, checked segment directory (a bus root).
///
/// [`RootDir::open`] accepts a directory only if it is owned by this process's effective uid
/// and not writable by group or others (`0700` and `0755` pass, `0770` and `0777` do not):
/// whoever can write to a root can plant, swap or remove the segments that subscribers read.
/// Directories this crate creates are `0700`. Files are opened with `openat` on the
/// directory's descriptor and `O_NOFOLLOW`, so a symbolic link in the root is reported, never
/// followed; a file must likewise belong to this uid and not be writable by group or others.
/// Only the root itself is checked, not the directories above it; the root's own path may
/// lead through links (the directory it leads to is what is checked and then used).
#[derive(Debug)]
pub struct RootDir {
    dir: File,
    path: PathBuf,
}

impl RootDir {
    /// Opens the existing directory `path` and checks its owner and mode.
    ///
    /// Errors: [`SetupError::Io`] (missing, not a directory...), [`SetupError::Untrusted`].
    pub fn open(path: &Path) -> Result<RootDir, SetupError> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| SetupError::Io {
                path: path.to_path_buf(),
                op: "open",
                source,
            })?;
        let meta = dir.metadata().map_err(|source| SetupError::Io {
            path: path.to_path_buf(),
            op: "stat",
            source,
        })?;
        check_owner(path, "directory", meta.uid(), meta.mode())?;
        Ok(RootDir {
            dir,
            path: path.to_path_buf(),
        })
    }

    /// Creates `path` (and missing parents) with mode `0700` if it does not exist, then opens
    /// and checks it like [`RootDir::open`]. An existing directory keeps its mode: one that
    /// others can write to is refused, not repaired.
    pub fn create(path: &Path) -> Result<RootDir, SetupError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|source| SetupError::Io {
                path: path.to_path_buf(),
                op: "create directory",
                source,
            })?;
        RootDir::open(path)
    }

    /// The directory's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the entry `name`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Opens the existing file `name` (read-write if `write`) without following a link, and
    /// checks it: a regular file, owned by this uid, not writable by group or others.
    /// `Ok(None)` if there is no such entry.
    ///
    /// Errors: [`SetupError::Symlink`], [`SetupError::NotAFile`], [`SetupError::Untrusted`],
    /// [`SetupError::Io`].
    pub fn open_file(&self, name: &str, write: bool) -> Result<Option<File>, SetupError> {
        let path = self.join(name);
        // O_NONBLOCK: opening a FIFO planted at the name must not block (it is refused below);
        // it changes nothing for regular files.
        let access = if write { libc::O_RDWR } else { libc::O_RDONLY };
        let file = match os::open_at(&self.dir, name, access | libc::O_NONBLOCK, 0) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(SetupError::Symlink { path });
            }
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                return Err(SetupError::NotAFile {
                    path,
                    kind: "directory",
                });
            }
            Err(source) => {
                return Err(SetupError::Io {
                    path,
                    op: "open",
                    source,
                });
            }
        };
        check_file(&file, &path)?;
        Ok(Some(file))
    }

    /// Creates the new file `name` (`O_EXCL`: fails if anything, a link included, is there)
    /// with permission bits `mode` (applied exactly, whatever the umask), read-write.
    pub fn create_file(&self, name: &str, mode: u32) -> Result<File, SetupError> {
        let path = self.join(name);
        let file = os::open_at(
            &self.dir,
            name,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            mode,
        )
        .map_err(|source| SetupError::Io {
            path: path.clone(),
            op: "create",
            source,
        })?;
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|source| SetupError::Io {
                path,
                op: "chmod",
                source,
            })?;
        Ok(file)
    }

    /// Reserves `len` bytes of storage for `file` (extending it to `len` if shorter), so that
    /// a full or too small filesystem fails here, as [`SetupError::NoSpace`] naming `path`
    /// and `len`, and not later at a page fault of a mapping (`SIGBUS`).
    pub fn reserve(file: &File, path: &Path, len: u64) -> Result<(), SetupError> {
        os::reserve(file, len).map_err(|source| SetupError::NoSpace {
            path: path.to_path_buf(),
            needed: len,
            source,
        })
    }

    /// Renames the entry `from` to `to` within the directory. Without `replace`, fails with
    /// [`io::ErrorKind::AlreadyExists`] if `to` exists. A link at `to` is replaced, never
    /// followed.
    pub fn rename(&self, from: &str, to: &str, replace: bool) -> io::Result<()> {
        os::rename_at(&self.dir, from, to, !replace)
    }

    /// Removes the entry `name` (a link itself, never its target).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        os::unlink_at(&self.dir, name)
    }

    /// Whether the entry `name` is the file `file` (same device and inode, links not
    /// followed). `Ok(false)` if the entry is gone.
    pub fn holds(&self, name: &str, file: &File) -> io::Result<bool> {
        let meta = file.metadata()?;
        match os::stat_at(&self.dir, name) {
            Ok(st) => Ok(st.dev == meta.dev() && st.ino == meta.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the entry `name` is a regular file (not a link, not a directory). `false` if
    /// it is gone.
    pub fn is_file(&self, name: &str) -> bool {
        os::stat_at(&self.dir, name).is_ok_and(|st| st.mode & libc::S_IFMT == libc::S_IFREG)
    }

    /// The names of the directory's entries, in no particular order (`.` and `..` left out;
    /// names that are not UTF-8 are skipped: no segment has one).
    pub fn names(&self) -> Result<Vec<String>, SetupError> {
        let err = |source| SetupError::Io {
            path: self.path.clone(),
            op: "read directory",
            source,
        };
        let mut out = Vec::new();
        // Read through the open descriptor, so the listing is of the directory that was
        // checked even if the path now names another one.
        let fd_path = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&self.dir)
        ));
        let entries = std::fs::read_dir(&fd_path)
            .or_else(|_| std::fs::read_dir(&self.path))
            .map_err(err)?;
        for entry in entries {
            if let Ok(name) = entry.map_err(err)?.file_name().into_string() {
                out.push(name);
            }
        }
        Ok(out)
    }
}

/// Checks an open file found in a root: a regular file, owned by this uid, not writable by
/// group or others.
pub(crate) fn check_file(file: &File, path: &Path) -> Result<(), SetupError> {
    let meta = file.metadata().map_err(|source| SetupError::Io {
        path: path.to_path_buf(),
        op: "stat",
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(SetupError::NotAFile {
            path: path.to_path_buf(),
            kind: kind_of(meta.mode()),
        });
    }
    check_owner(path, "file", meta.uid(), meta.mode())
}

fn check_owner(path: &Path, what: &'static str, owner: u32, mode: u32) -> Result<(), SetupError> {
    let uid = os::effective_uid();
    if owner == uid && mode & WRITABLE_BY_OTHERS == 0 {
        return Ok(());
    }
    Err(SetupError::Untrusted {
        path: path.to_path_buf(),
        what,
        owner,
        mode: mode & 0o7777,
        uid,
    })
}

fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "directory",
        libc::S_IFIFO => "FIFO",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        libc::S_IFLNK => "symbolic link",
        _ => "special file",
    }
}

/// Removes a file built at a temporary name in a root when dropped, unless forgotten
/// (`std::mem::forget`, once the file got its final name): an early return leaves nothing
/// behind.
pub(crate) struct TmpGuard<'a> {
    root: &'a RootDir,
    name: &'a str,
}

impl<'a> TmpGuard<'a> {
    /// Guards `name` in `root`.
    pub(crate) fn new(root: &'a RootDir, name: &'a str) -> Self {
        TmpGuard { root, name }
    }
}

impl Drop for TmpGuard<'_> {
    fn drop(&mut self) {
        let _ = self.root.remove(self.name);
    }
}
