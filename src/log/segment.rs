//! Segment files: naming, the 16-byte header and appending. The validating record scanner
//! that recovery, the reader and `inspect` share is in `scanner.rs`.
//!
//! ```text
//! offset  size  field
//! 0       8     magic     b"SHBUSLOG"
//! 8       1     version   1
//! 9       7     reserved  zero
//! 16      ...   records (see `record.rs`)
//! ```

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use super::error::{CorruptReason, IoOp, LogError};
use super::record::Seq;
use super::storage::{Storage, StorageFile};

/// Magic bytes at the start of every segment.
pub(crate) const MAGIC: [u8; 8] = *b"SHBUSLOG";
/// The segment format version this code writes and reads.
pub(crate) const VERSION: u8 = 1;
/// Size of the segment header.
pub(crate) const HEADER_LEN: u64 = 16;

const SEGMENT_SUFFIX: &str = ".log";
const TEMP_SUFFIX: &str = ".tmp";
pub(crate) const READ_BUFFER: usize = 64 * 1024;

/// The file name of the segment whose first record is `first_seq`.
pub(crate) fn segment_file_name(first_seq: Seq) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", first_seq.get())
}

/// The first sequence number encoded in a segment file name, or `None` if `name` is not one.
pub(crate) fn parse_segment_name(name: &OsStr) -> Option<Seq> {
    let digits = name.to_str()?.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Seq)
}

/// Whether `name` is a temporary file this module (or `checkpoint.rs`) leaves behind when it is
/// interrupted between create and rename.
pub(crate) fn is_temp_name(name: &OsStr) -> bool {
    name.to_str()
        .and_then(|n| n.strip_suffix(TEMP_SUFFIX))
        .is_some_and(|stem| {
            stem == super::checkpoint::CHECKPOINT_FILE
                || parse_segment_name(OsStr::new(stem)).is_some()
        })
}

/// A segment file found in a shard directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    pub(crate) path: PathBuf,
    pub(crate) first_seq: Seq,
}

/// The contents of a shard directory that the log cares about.
pub(crate) struct Listing {
    /// Segments sorted by first sequence number.
    pub(crate) segments: Vec<SegmentFile>,
    /// Leftover temporary files.
    pub(crate) temps: Vec<PathBuf>,
}

impl Listing {
    /// The temporary files that are segments started by a roll and not yet renamed into
    /// place (`NNN.log.tmp`), named by their first sequence number.
    pub(crate) fn pending_segments(&self) -> impl Iterator<Item = SegmentFile> + '_ {
        self.temps.iter().filter_map(|tmp| {
            Some(SegmentFile {
                first_seq: parse_segment_name(tmp.file_stem()?)?,
                path: tmp.clone(),
            })
        })
    }
}

/// Lists the segments (sorted) and leftover temporary files of `dir`. A segment named at or
/// beyond [`Seq::LIMIT`] is [`LogError::Corrupt`] (`SeqOutOfRange`).
pub(crate) fn list(storage: &dyn Storage, dir: &Path) -> Result<Listing, LogError> {
    let names = storage.list_dir(dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => LogError::DirNotFound { path: dir.into() },
        _ => LogError::io(IoOp::ListDir, dir, e),
    })?;
    let mut listing = Listing {
        segments: Vec::new(),
        temps: Vec::new(),
    };
    for name in names {
        if let Some(first_seq) = parse_segment_name(&name) {
            if first_seq >= Seq::LIMIT {
                return Err(LogError::Corrupt {
                    path: dir.join(&name),
                    offset: 0,
                    reason: CorruptReason::SeqOutOfRange { found: first_seq },
                });
            }
            listing.segments.push(SegmentFile {
                path: dir.join(&name),
                first_seq,
            });
        } else if is_temp_name(&name) {
            listing.temps.push(dir.join(&name));
        }
    }
    listing.segments.sort_by_key(|s| s.first_seq);
    Ok(listing)
}

/// What the log keeps in memory about a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    pub(crate) path: PathBuf,
    pub(crate) first_seq: Seq,
    /// One past the last record's sequence number (`first_seq` when empty).
    pub(crate) end_seq: Seq,
    /// File length in bytes, header included.
    pub(crate) bytes: u64,
    /// Largest record timestamp, for retention by age.
    pub(crate) max_timestamp_nanos: Option<u64>,
}

impl SegmentMeta {
    pub(crate) fn empty(path: PathBuf, first_seq: Seq) -> Self {
        SegmentMeta {
            path,
            first_seq,
            end_seq: first_seq,
            bytes: HEADER_LEN,
            max_timestamp_nanos: None,
        }
    }

    /// Accounts for one more record.
    pub(crate) fn add(&mut self, seq: Seq, timestamp_nanos: u64) {
        self.end_seq = seq.next();
        self.max_timestamp_nanos = Some(
            self.max_timestamp_nanos
                .map_or(timestamp_nanos, |t| t.max(timestamp_nanos)),
        );
    }

    pub(crate) fn records(&self) -> u64 {
        self.end_seq.get() - self.first_seq.get()
    }
}

fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8] = VERSION;
    h
}

/// Validates a segment header (`bytes` is the file's first `HEADER_LEN` bytes).
pub(crate) fn check_header(path: &Path, bytes: &[u8; HEADER_LEN as usize]) -> Result<(), LogError> {
    let (magic, rest) = bytes.split_at(8);
    if magic != MAGIC {
        let mut found = [0; 8];
        found.copy_from_slice(magic);
        return Err(LogError::BadMagic {
            path: path.into(),
            found,
        });
    }
    if rest[0] != VERSION {
        return Err(LogError::UnsupportedVersion {
            path: path.into(),
            version: rest[0],
        });
    }
    if let Some(i) = rest[1..].iter().position(|&b| b != 0) {
        return Err(LogError::Corrupt {
            path: path.into(),
            offset: 9 + i as u64,
            reason: CorruptReason::ReservedHeaderBytes,
        });
    }
    Ok(())
}

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct SegmentWriter {
    pub(crate) meta: SegmentMeta,
    file: Box<dyn StorageFile>,
}

impl SegmentWriter {
    /// Creates the segment starting at `first_seq` in `dir`, atomically: the header is written
    /// and synced under a temporary name, renamed into place, and the directory synced. A
    /// segment file therefore either does not exist or has a complete, durable header.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        first_seq: Seq,
    ) -> Result<Self, LogError> {
        let (mut writer, tmp) = Self::create_pending(storage, dir, first_seq)?;
        finish_pending(storage, dir, &mut *writer.file, &tmp, &writer.meta.path)?;
        Ok(writer)
    }

    /// Starts the segment at `first_seq` in `dir` under its temporary name, header written
    /// and nothing synced, for a roll whose full segment is still being synced: the log's
    /// sync thread syncs both and renames it into place ([`finish_pending`]). Until then a
    /// crash leaves it a temporary file, which recovery takes into the log only if it
    /// continues the log without a gap (see `recover.rs`). Returns the writer (its `meta`
    /// names the final path) and the temporary path.
    pub(crate) fn create_pending(
        storage: &dyn Storage,
        dir: &Path,
        first_seq: Seq,
    ) -> Result<(Self, PathBuf), LogError> {
        let path = dir.join(segment_file_name(first_seq));
        let tmp = temp_path(&path);
        let mut file = storage
            .create(&tmp)
            .map_err(|e| LogError::io(IoOp::Create, &tmp, e))?;
        file.append(&header())
            .map_err(|e| LogError::io(IoOp::Append, &tmp, e))?;
        let writer = SegmentWriter {
            meta: SegmentMeta::empty(path, first_seq),
            file,
        };
        Ok((writer, tmp))
    }

    /// Opens an existing, recovered segment for appending.
    pub(crate) fn open(storage: &dyn Storage, meta: SegmentMeta) -> Result<Self, LogError> {
        let file = storage
            .open_append(&meta.path)
            .map_err(|e| LogError::io(IoOp::Open, &meta.path, e))?;
        Ok(SegmentWriter { meta, file })
    }

    /// Appends encoded records.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        self.file
            .append(bytes)
            .map_err(|e| LogError::io(IoOp::Append, &self.meta.path, e))?;
        self.meta.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Reserves the segment's disk space up to `len` bytes (see
    /// [`StorageFile::preallocate`]). Without it each append into a new segment makes the
    /// filesystem reserve blocks page by page, on the shard thread (docs/benchmarks.md, "The
    /// append floor"). A failure costs only that speed, so it is logged and otherwise
    /// ignored.
    pub(crate) fn preallocate(&mut self, len: u64) {
        if let Err(e) = self.file.preallocate(len) {
            tracing::debug!(
                path = %self.meta.path.display(),
                error = %e,
                "segment preallocation failed; appending without it"
            );
        }
    }

    /// Another handle to the segment file, for the sync thread.
    pub(crate) fn try_clone_file(&self) -> Result<Box<dyn StorageFile>, LogError> {
        self.file
            .try_clone()
            .map_err(|e| LogError::io(IoOp::Open, &self.meta.path, e))
    }

    /// `fdatasync`s the segment.
    pub(crate) fn sync(&mut self) -> Result<(), LogError> {
        self.file
            .sync_data()
            .map_err(|e| LogError::io(IoOp::SyncData, &self.meta.path, e))
    }
}

/// The temporary name a segment is created under: its own name with `.tmp` appended.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TEMP_SUFFIX);
    PathBuf::from(name)
}

/// Makes a segment started by [`SegmentWriter::create_pending`] part of the log, once the
/// segment before it is durable: syncs `file` (its header and whatever was appended),
/// renames `tmp` to `path` and syncs `dir`.
pub(crate) fn finish_pending(
    storage: &dyn Storage,
    dir: &Path,
    file: &mut dyn StorageFile,
    tmp: &Path,
    path: &Path,
) -> Result<(), LogError> {
    file.sync_data()
        .map_err(|e| LogError::io(IoOp::SyncData, tmp, e))?;
    storage
        .rename(tmp, path)
        .map_err(|e| LogError::io(IoOp::Rename, tmp, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| LogError::io(IoOp::SyncDir, dir, e))
}

/// `fdatasync`s the file at `path`.
pub(crate) fn sync_path(storage: &dyn Storage, path: &Path) -> Result<(), LogError> {
    storage
        .open_append(path)
        .map_err(|e| LogError::io(IoOp::Open, path, e))?
        .sync_data()
        .map_err(|e| LogError::io(IoOp::SyncData, path, e))
}

/// Truncates the file at `path` to `len` bytes and makes that durable.
pub(crate) fn truncate(storage: &dyn Storage, path: &Path, len: u64) -> Result<(), LogError> {
    let mut file = storage
        .open_append(path)
        .map_err(|e| LogError::io(IoOp::Open, path, e))?;
    file.truncate(len)
        .map_err(|e| LogError::io(IoOp::Truncate, path, e))?;
    file.sync_data()
        .map_err(|e| LogError::io(IoOp::SyncData, path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::storage::SimStorage;

    fn sim() -> SimStorage {
        let sim = SimStorage::new();
        sim.create_dir_all(Path::new("/s")).unwrap();
        sim
    }

    #[test]
    fn names_round_trip_and_reject_lookalikes() {
        assert_eq!(segment_file_name(Seq(0)), "00000000000000000000.log");
        assert_eq!(segment_file_name(Seq(u64::MAX)), "18446744073709551615.log");
        for s in [0, 42, u64::MAX] {
            assert_eq!(
                parse_segment_name(OsStr::new(&segment_file_name(Seq(s)))),
                Some(Seq(s))
            );
        }
        for bad in [
            "42.log",
            "0000000000000000000a.log",
            "00000000000000000000.lo",
            "99999999999999999999.log",
        ] {
            assert_eq!(parse_segment_name(OsStr::new(bad)), None, "{bad}");
        }
        assert!(is_temp_name(OsStr::new("00000000000000000007.log.tmp")));
        assert!(is_temp_name(OsStr::new("checkpoint.tmp")));
        assert!(!is_temp_name(OsStr::new("other.tmp")));
    }

    #[test]
    fn create_is_atomic_and_durable() {
        let sim = sim();
        let w = SegmentWriter::create(&sim, Path::new("/s"), Seq(5)).unwrap();
        sim.crash(None);
        assert_eq!(sim.read(&w.meta.path).unwrap(), header());
        assert_eq!(
            sim.list_dir(Path::new("/s")).unwrap(),
            ["00000000000000000005.log"]
        );
    }
}
