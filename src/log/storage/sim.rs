//! [`SimStorage`]: an in-memory [`Storage`] that models power loss and injects faults.

use super::{DirLock, Storage, StorageFile};
use crate::sync::plain::{sleep, Arc, Mutex, MutexGuard, PoisonError};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};

/// In-memory [`Storage`] that models what survives power loss, with fault injection.
///
/// The model, per file: its bytes, and the prefix of them made durable by the last
/// `sync_data`. Per directory: the set of names made durable by the last `sync_dir`.
/// [`SimStorage::crash`] reverts every directory to its durable names and every file to its
/// durable bytes, optionally keeping the first bytes of each file's unsynced appended tail (a
/// torn write keeps a prefix of what was written). A truncation that was not synced is undone.
/// Directories themselves are durable as soon as they are created.
///
/// Clones share the same state, so a test can keep one to crash or corrupt what a log wrote.
///
/// Public only with the `test-util` feature (tests, benchmarks, fuzzing); not a stable API.
#[derive(Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<SimState>>,
}

#[derive(Default)]
struct SimState {
    dirs: BTreeSet<PathBuf>,
    entries: BTreeMap<PathBuf, u64>,
    durable_entries: BTreeMap<PathBuf, u64>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    /// Bumped by every crash: handles opened before it are dead.
    epoch: u64,
    fail_sync: Option<io::Error>,
    /// How long each file `sync_data` takes (slept before it syncs, outside the lock).
    sync_delay: std::time::Duration,
    fail_append: Option<(io::Error, usize)>,
    /// Locked directories ([`Storage::lock_dir`]), each with the token of its holder.
    locks: HashMap<PathBuf, u64>,
    next_lock: u64,
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    synced_len: usize,
    /// Durable contents when an unsynced truncation cut into the synced prefix.
    durable_before_truncate: Option<Vec<u8>>,
}

impl Inode {
    fn sync(&mut self) {
        self.synced_len = self.data.len();
        self.durable_before_truncate = None;
    }

    /// A sync that covers the first `len` bytes (what the file held when it began).
    fn sync_to(&mut self, len: usize) {
        let len = len.min(self.data.len());
        if len >= self.synced_len || self.durable_before_truncate.is_some() {
            self.synced_len = len;
            self.durable_before_truncate = None;
        }
    }

    fn crash(&mut self, tear: usize) {
        if let Some(durable) = self.durable_before_truncate.take() {
            self.data = durable;
        } else {
            let keep = self.synced_len + tear.min(self.data.len() - self.synced_len);
            self.data.truncate(keep);
        }
        self.synced_len = self.data.len();
    }
}

struct SimFile {
    state: Arc<Mutex<SimState>>,
    inode: u64,
    epoch: u64,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("inode", &self.inode)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: not found", path.display()),
    )
}

fn not_a_dir(path: &Path) -> io::Error {
    io::Error::other(format!("{}: not a directory", path.display()))
}

impl SimState {
    fn check_parent(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(dir) if self.dirs.contains(dir) => Ok(()),
            Some(dir) if self.entries.contains_key(dir) => Err(not_a_dir(dir)),
            _ => Err(not_found(path)),
        }
    }

    fn inode_of(&self, path: &Path) -> io::Result<u64> {
        self.entries
            .get(path)
            .copied()
            .ok_or_else(|| not_found(path))
    }

    fn data(&self, path: &Path) -> io::Result<&[u8]> {
        let id = self.inode_of(path)?;
        Ok(self.inodes.get(&id).map_or(&[][..], |i| &i.data[..]))
    }

    fn take_sync_fault(&mut self) -> io::Result<()> {
        self.fail_sync.take().map_or(Ok(()), Err)
    }
}

impl SimStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        lock(&self.state)
    }

    /// Simulates power loss: everything not made durable is lost. With `tear: Some(n)`, each
    /// file keeps the first `n` bytes (at most all) of its unsynced appended tail; with `None`
    /// it keeps none. File handles opened before the crash fail from now on; pending faults are
    /// cleared.
    pub fn crash(&self, tear: Option<usize>) {
        let mut s = self.lock();
        s.entries = s.durable_entries.clone();
        let live: BTreeSet<u64> = s.entries.values().copied().collect();
        s.inodes.retain(|id, _| live.contains(id));
        for inode in s.inodes.values_mut() {
            inode.crash(tear.unwrap_or(0));
        }
        s.epoch += 1;
        s.fail_sync = None;
        s.fail_append = None;
        // The process that held them is gone.
        s.locks.clear();
    }

    /// Makes the next `sync_data` or `sync_dir` fail with `err` (say
    /// `io::Error::from_raw_os_error(28)`, ENOSPC) without making anything durable.
    pub fn fail_next_sync(&self, err: io::Error) {
        self.lock().fail_sync = Some(err);
    }

    /// Makes every later file `sync_data` take `delay`; such a sync makes durable what the
    /// file held when it began, not what was appended while it slept (as `fdatasync`
    /// promises). Tests use it to make work overlap a sync.
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        self.lock().sync_delay = delay;
    }

    /// Makes the next `append` write only its first `written` bytes and then fail with `err`.
    pub fn fail_next_append(&self, err: io::Error, written: usize) {
        self.lock().fail_append = Some((err, written));
    }

    /// The current (not necessarily durable) contents of `path`.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        self.lock().data(path).ok().map(<[u8]>::to_vec)
    }

    /// The durable prefix of `path`: what its file would hold after a crash now (given its
    /// name is durable).
    pub fn durable_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        let id = s.inode_of(path).ok()?;
        Some(s.inodes.get(&id).map_or_else(Vec::new, |i| {
            i.durable_before_truncate
                .clone()
                .unwrap_or_else(|| i.data[..i.synced_len].to_vec())
        }))
    }

    /// Bytes of `path` that are not yet durable (its unsynced appended tail).
    pub fn unsynced_len(&self, path: &Path) -> Option<usize> {
        let s = self.lock();
        let id = s.inode_of(path).ok()?;
        s.inodes.get(&id).map(|i| i.data.len() - i.synced_len)
    }

    /// Rewrites the contents of `path` durably with `edit`, as a disk fault would. Returns
    /// `false` if there is no such file.
    pub fn modify(&self, path: &Path, edit: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut s = self.lock();
        let Ok(id) = s.inode_of(path) else {
            return false;
        };
        let inode = s.inodes.entry(id).or_default();
        edit(&mut inode.data);
        inode.sync();
        true
    }
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("SimStorage")
            .field("files", &s.entries.keys().collect::<Vec<_>>())
            .field("epoch", &s.epoch)
            .finish_non_exhaustive()
    }
}

/// Locks the simulated state. A panic in another test thread must not turn into a second panic
/// here, so a poisoned mutex is used as is (the state is plain data).
fn lock(state: &Mutex<SimState>) -> MutexGuard<'_, SimState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Holds a [`SimStorage`] directory lock; dropping it releases the lock, unless a crash
/// already did (and someone may have locked the directory since: the token tells).
struct SimLock {
    state: Arc<Mutex<SimState>>,
    dir: PathBuf,
    token: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        if s.locks.get(&self.dir) == Some(&self.token) {
            s.locks.remove(&self.dir);
        }
    }
}

impl SimFile {
    fn with_inode<T>(&self, f: impl FnOnce(&mut SimState, u64) -> io::Result<T>) -> io::Result<T> {
        let mut s = lock(&self.state);
        if s.epoch != self.epoch {
            return Err(io::Error::other(
                "file handle opened before a simulated crash",
            ));
        }
        f(&mut s, self.inode)
    }
}

impl StorageFile for SimFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.with_inode(|s, id| {
            let fault = s.fail_append.take();
            let inode = s.inodes.entry(id).or_default();
            match fault {
                Some((err, written)) => {
                    inode
                        .data
                        .extend_from_slice(&bytes[..written.min(bytes.len())]);
                    Err(err)
                }
                None => {
                    inode.data.extend_from_slice(bytes);
                    Ok(())
                }
            }
        })
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let delay = lock(&self.state).sync_delay;
        if delay.is_zero() {
            return self.with_inode(|s, id| {
                s.take_sync_fault()?;
                s.inodes.entry(id).or_default().sync();
                Ok(())
            });
        }
        // A slow sync covers what was written before it began, not what comes during it.
        let len = self.with_inode(|s, id| Ok(s.inodes.get(&id).map_or(0, |i| i.data.len())))?;
        sleep(delay);
        self.with_inode(|s, id| {
            s.take_sync_fault()?;
            s.inodes.entry(id).or_default().sync_to(len);
            Ok(())
        })
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.with_inode(|s, id| {
            let len = usize::try_from(len).map_err(io::Error::other)?;
            let inode = s.inodes.entry(id).or_default();
            if len < inode.synced_len {
                if inode.durable_before_truncate.is_none() {
                    inode.durable_before_truncate = Some(inode.data[..inode.synced_len].to_vec());
                }
                inode.synced_len = len;
            }
            inode.data.resize(len, 0);
            Ok(())
        })
    }

    fn try_clone(&self) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(SimFile {
            state: Arc::clone(&self.state),
            inode: self.inode,
            epoch: self.epoch,
        }))
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let ancestors: Vec<&Path> = dir
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .collect();
        if let Some(file) = ancestors.iter().find(|a| s.entries.contains_key(**a)) {
            return Err(not_a_dir(file));
        }
        s.dirs.extend(ancestors.into_iter().map(Path::to_path_buf));
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let s = self.lock();
        if !s.dirs.contains(dir) {
            return Err(if s.entries.contains_key(dir) {
                not_a_dir(dir)
            } else {
                not_found(dir)
            });
        }
        Ok(s.entries
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(OsString::from))
            .collect())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut s = self.lock();
        s.check_parent(path)?;
        if s.dirs.contains(path) {
            return Err(io::Error::other("is a directory"));
        }
        let id = match s.entries.get(path) {
            Some(&id) => id,
            None => {
                s.next_inode += 1;
                let id = s.next_inode;
                s.entries.insert(path.to_path_buf(), id);
                id
            }
        };
        // Truncating an existing file is an unsynced truncation like any other.
        let inode = s.inodes.entry(id).or_default();
        if inode.synced_len > 0 && inode.durable_before_truncate.is_none() {
            inode.durable_before_truncate = Some(inode.data[..inode.synced_len].to_vec());
        }
        inode.data.clear();
        inode.synced_len = 0;
        Ok(Box::new(SimFile {
            state: Arc::clone(&self.state),
            inode: id,
            epoch: s.epoch,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let s = self.lock();
        let id = s.inode_of(path)?;
        Ok(Box::new(SimFile {
            state: Arc::clone(&self.state),
            inode: id,
            epoch: s.epoch,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.lock().data(path).map(<[u8]>::to_vec)
    }

    fn open_read(&self, path: &Path, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        let s = self.lock();
        let data = s.data(path)?;
        let start = usize::try_from(offset).map_or(data.len(), |o| o.min(data.len()));
        Ok(Box::new(Cursor::new(data[start..].to_vec())))
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        self.lock().data(path).map(|d| d.len() as u64)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.check_parent(to)?;
        let id = s.inode_of(from)?;
        s.entries.remove(from);
        s.entries.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.entries
            .remove(path)
            .map(drop)
            .ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        s.take_sync_fault()?;
        let SimState {
            entries,
            durable_entries,
            ..
        } = &mut *s;
        durable_entries.retain(|p, _| p.parent() != Some(dir));
        durable_entries.extend(
            entries
                .iter()
                .filter(|(p, _)| p.parent() == Some(dir))
                .map(|(p, id)| (p.clone(), *id)),
        );
        Ok(())
    }

    fn list_subdirs(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let s = self.lock();
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(s.dirs
            .iter()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(OsString::from))
            .collect())
    }

    /// An exclusive lock on `dir` in this storage's shared state: a second `lock_dir` of
    /// the same directory (through any clone) is `WouldBlock` until the first `DirLock` is
    /// dropped or [`SimStorage::crash`] releases every lock.
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        let mut s = self.lock();
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        if s.locks.contains_key(dir) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{}: locked", dir.display()),
            ));
        }
        s.next_lock += 1;
        let token = s.next_lock;
        s.locks.insert(dir.to_path_buf(), token);
        Ok(DirLock::new(SimLock {
            state: Arc::clone(&self.state),
            dir: dir.to_path_buf(),
            token,
        }))
    }

    /// Directory removal is modelled as durable at once (like creation): the files under
    /// it are gone from both the current and the durable names.
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        s.dirs.retain(|d| !d.starts_with(dir));
        s.entries.retain(|p, _| !p.starts_with(dir));
        s.durable_entries.retain(|p, _| !p.starts_with(dir));
        Ok(())
    }
}

#[cfg(test)]
#[path = "sim_tests.rs"]
mod tests;
