//! The filesystem operations the log needs, behind a trait, and its two implementations.
//!
//! [`Storage`] is object-safe and the log holds an `Arc<dyn Storage>`. Why not a generic
//! `ShardLog<S: Storage>`: the runtime chooses the storage once, at build time, and the shard
//! types should not carry a type parameter for it; every call it dispatches is a system call (or
//! a mutex in tests), next to which a virtual call is noise; and file handles are boxed once per
//! segment, not per record.
//!
//! Neither implementation syncs a directory by itself: the log calls [`Storage::sync_dir`]
//! exactly where a created, renamed or removed name must survive power loss. [`SimStorage`]
//! forgets names that were not synced that way, so a missing call shows up in tests.

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
mod sim;

pub use fs::FsStorage;
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
