//! [`FsStorage`]: the log's [`Storage`] on the real filesystem.

#[cfg(unix)]
use super::{DirLock, LOCK_FILE};
use super::{Storage, StorageFile};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// [`Storage`] on the real filesystem through `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsStorage;

#[derive(Debug)]
struct FsFile(File);

impl StorageFile for FsFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        // Opened with O_APPEND: every write goes to the current end, also after `truncate`.
        self.0.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn try_clone(&self) -> io::Result<Box<dyn StorageFile>> {
        // A duplicated descriptor of the same open file: `fdatasync` through it syncs the
        // file, whichever descriptor wrote the bytes.
        Ok(Box::new(FsFile(self.0.try_clone()?)))
    }

    fn preallocate(&mut self, len: u64) -> io::Result<()> {
        crate::os::preallocate(&self.0, len)
    }
}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name());
            }
        }
        Ok(names)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        // `truncate(true)` cannot be combined with `append(true)`; truncate by hand, and only
        // a file that has bytes. ext4 marks a file truncated to zero for a writeback flush at
        // its last close (its `auto_da_alloc` heuristic for files rewritten in place), which
        // costs a segment closed without a sync a flush of all its dirty pages.
        let file = OpenOptions::new().append(true).create(true).open(path)?;
        if file.metadata()?.len() > 0 {
            file.set_len(0)?;
        }
        Ok(Box::new(FsFile(file)))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Box::new(FsFile(file)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn open_read(&self, path: &Path, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(file))
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn list_subdirs(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                names.push(entry.file_name());
            }
        }
        Ok(names)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir_all(dir)
    }

    /// `flock(LOCK_EX | LOCK_NB)` on `dir/lock` (created if missing, never truncated or
    /// removed), held by the open file inside the returned [`DirLock`]. The kernel releases
    /// it when that file is closed or the process dies, however it dies: a crash leaves no
    /// stale lock. Two opens in one process exclude each other too (the lock belongs to the
    /// open file, not to the process, unlike `fcntl` locks). On a system without `flock`
    /// (not Unix) this method is not overridden: no lock is taken.
    #[cfg(unix)]
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        // No `truncate`: the file's contents mean nothing, and it is never rewritten.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))?;
        crate::os::lock_exclusive(&file)?;
        Ok(DirLock::new(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::storage::names;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Makes temporary directory names unique within the process.
    static N: AtomicU64 = AtomicU64::new(0);

    #[test]
    fn fs_storage_round_trip() {
        let dir = std::env::temp_dir().join(format!(
            "shardbus-log-storage-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let fs = FsStorage;
        fs.create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        let mut f = fs.create(&a).unwrap();
        f.append(b"0123456789").unwrap();
        f.truncate(4).unwrap();
        f.append(b"xy").unwrap();
        f.sync_data().unwrap();
        fs.rename(&a, &b).unwrap();
        fs.sync_dir(&dir).unwrap();
        assert_eq!(names(&fs, &dir), ["b"]);
        assert_eq!(fs.read(&b).unwrap(), b"0123xy");
        assert_eq!(fs.file_len(&b).unwrap(), 6);
        let mut r = String::new();
        fs.open_read(&b, 2).unwrap().read_to_string(&mut r).unwrap();
        assert_eq!(r, "23xy");
        // `create` truncates an existing file.
        drop(fs.create(&b).unwrap());
        assert_eq!(fs.file_len(&b).unwrap(), 0);
        fs.remove_file(&b).unwrap();
        assert!(names(&fs, &dir).is_empty());
        fs::remove_dir(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn fs_directory_lock_excludes_a_second_open_until_dropped() {
        let dir = std::env::temp_dir().join(format!(
            "shardbus-log-lock-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let fs = FsStorage;
        fs.create_dir_all(&dir).unwrap();
        let held = fs.lock_dir(&dir).unwrap();
        assert!(held.is_locked());
        // Another open file of `dir/lock` in the same process cannot take it (flock, not
        // fcntl, whose locks belong to the process).
        let e = fs.lock_dir(&dir).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(held);
        let again = fs.lock_dir(&dir).unwrap();
        assert_eq!(names(&fs, &dir), [LOCK_FILE]);
        drop(again);
        fs::remove_dir_all(&dir).unwrap();
    }
}
