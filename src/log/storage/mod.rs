//! The filesystem operations the log needs, behind a trait, and its two implementations.
//!
//! [`Storage`] is object-safe and the log holds an `Arc<dyn Storage>`. Why not a generic
//! `ShardLog<S: Storage>`: the runtime chooses the storage once, at build time, and the shard
//! types should not carry a type parameter for it; every call it dispatches is a system call (or
//! a mutex in tests), next to which a virtual call is noise; and file handles are boxed once per
//! segment, not per record.
//!
//! Neither implementation syncs a directory by itself: the log calls [`Storage::sync_dir`]
//! exactly where a created, renamed or removed name must survive power loss. `SimStorage`
//! (the `test-util` feature's simulated storage) forgets names that were not synced that way, so a missing call shows up in tests.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::path::Path;

/// Filesystem operations used by the log.
///
/// Contract for implementations: [`StorageFile::append`] hands bytes to the operating system
/// (no user-space buffering: once it returns they survive a crash of the process);
/// [`StorageFile::sync_data`] makes them survive power loss; a new, renamed or removed name
/// survives power loss only after [`Storage::sync_dir`] of its directory.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the regular files in `dir`, in no particular order.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// Creates `path`, or truncates it if it exists, and opens it for appending.
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Opens the existing file `path` for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Reads the whole of `path` (for small files such as the checkpoint).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens `path` for sequential reading from byte `offset` to its end.
    fn open_read(&self, path: &Path, offset: u64) -> io::Result<Box<dyn Read + Send>>;
    /// The length of `path` in bytes.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the names in `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Names of the subdirectories of `dir`, in no particular order.
    fn list_subdirs(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// Removes the directory `dir` and everything in it. Durable after
    /// [`Storage::sync_dir`] of its parent.
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on the existing directory `dir`, held until the returned
    /// [`DirLock`] is dropped, or fails at once with [`io::ErrorKind::WouldBlock`] if
    /// someone else holds it. A persistent bus holds its directory's lock for its lifetime,
    /// so that no second bus, in this process or another, writes into the same logs.
    ///
    /// [`FsStorage`] locks the file `dir/lock` with `flock(2)` (Unix); `SimStorage` (with
    /// the `test-util` feature) keeps the locks in its shared state (clones of one
    /// `SimStorage` see each other's locks, and `SimStorage::crash` releases them all, as
    /// the death of the process would).
    /// The default takes no lock and always succeeds: a storage that more than one bus
    /// can reach (a shared filesystem, a shared store) must implement it.
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        let _ = dir;
        Ok(DirLock::unlocked())
    }
}

/// The name of the lock file [`FsStorage`] keeps in a locked directory
/// ([`Storage::lock_dir`]). Created empty at the first lock and never removed: its `flock`,
/// not its existence, is what says the directory is in use.
pub const LOCK_FILE: &str = "lock";

/// A lock taken by [`Storage::lock_dir`]: held while this value lives, released when it is
/// dropped.
pub struct DirLock {
    /// Whatever keeps the lock held (an open file, a registration); dropping it releases
    /// the lock. `None` for a storage that takes no lock.
    _guard: Option<Box<dyn Send + Sync>>,
}

impl DirLock {
    /// A lock that `guard` holds: dropping the `DirLock` drops `guard`, which must then
    /// release the lock. For implementations of [`Storage::lock_dir`].
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        Self {
            _guard: Some(Box::new(guard)),
        }
    }

    /// No lock at all: what a storage that cannot lock returns (see
    /// [`Storage::lock_dir`]).
    pub fn unlocked() -> Self {
        Self { _guard: None }
    }

    /// Whether a lock is held (`false` for [`DirLock::unlocked`]).
    pub fn is_locked(&self) -> bool {
        self._guard.is_some()
    }
}

impl fmt::Debug for DirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirLock")
            .field("locked", &self.is_locked())
            .finish()
    }
}

/// A file opened for appending.
pub trait StorageFile: Send + fmt::Debug {
    /// Appends all of `bytes` at the end of the file.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes the file's contents and length durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Sets the file's length to `len`; later appends go to the new end. Not durable until
    /// [`StorageFile::sync_data`].
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Another handle to the same open file, whose [`StorageFile::sync_data`] makes durable
    /// whatever was appended through any handle before the call. The log gives one to its
    /// background sync thread, so that a shard can encode and write its next batch while
    /// the last one is being synced. The default says `Unsupported`; the log then syncs on
    /// the shard's own thread, as before.
    fn try_clone(&self) -> io::Result<Box<dyn StorageFile>> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Reserves the file's disk space up to `len` bytes without changing its length or
    /// contents, so that appends up to there need no block allocation. A hint: the log
    /// ignores its failure, and recovery never sees it (the length is unchanged). The
    /// default does nothing.
    fn preallocate(&mut self, len: u64) -> io::Result<()> {
        let _ = len;
        Ok(())
    }
}

mod fs;
#[cfg(any(test, feature = "test-util"))]
mod sim;

pub use fs::FsStorage;
#[cfg(any(test, feature = "test-util"))]
pub use sim::SimStorage;

/// Test helper: the sorted names of the regular files in `dir`.
#[cfg(test)]
pub(crate) fn names(s: &dyn Storage, dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = s
        .list_dir(dir)
        .unwrap()
        .into_iter()
        .map(|n| n.into_string().unwrap())
        .collect();
    v.sort();
    v
}
