//! Crash recovery: validate a shard's log, cut a torn tail, find where replay starts.
//!
//! Recovery reads every segment once, in order, checking the header, every record's length and
//! CRC, and that sequence numbers run on without a gap, within and across segments. It holds
//! one record in memory at a time. Replay of the records after the checkpoint is a second,
//! streaming pass ([`Recovered::replay`]) that starts at the segment holding the checkpoint.

use crate::sync::plain::Arc;
use std::path::{Path, PathBuf};

use super::checkpoint::{self, CHECKPOINT_FILE};
use super::error::{CorruptReason, IoOp, LogError};
use super::reader::Reader;
use super::record::{Record, Seq};
use super::scanner::{Scanner, Step};
use super::segment::{self, SegmentFile, SegmentMeta};
use super::storage::Storage;
use super::DEFAULT_MAX_RECORD_SIZE;

/// How recovery treats corruption that is not a torn tail.
///
/// Public only with the `test-util` feature (tests, benchmarks, fuzzing); not a stable API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryOptions {
    /// `false` (the default): corruption before the end of the log is an error and nothing is
    /// changed on disk. `true`: the log is cut at the first damaged record, later segments are
    /// removed, and [`RecoveryReport::truncated`] says what was dropped. Headers with a wrong
    /// magic or version are errors either way: those files may belong to someone else or to a
    /// newer version.
    pub truncate_on_corruption: bool,
    /// Largest valid encoded record (frame header included); a larger `len` field is damage.
    /// Must not be lowered below what the log was written with.
    pub max_record_size: u32,
}

impl Default for RecoveryOptions {
    fn default() -> Self {
        RecoveryOptions {
            truncate_on_corruption: false,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
        }
    }
}

/// What recovery found and did.
///
/// Public only with the `test-util` feature (tests, benchmarks, fuzzing); not a stable API.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Segments kept.
    pub segments: usize,
    /// Valid records kept.
    pub records: u64,
    /// Bytes cut from the end of the last segment as a torn tail (an interrupted write); with
    /// a [`finished_segment`](Self::finished_segment), from the end of either.
    pub torn_bytes: u64,
    /// Partial records in those bytes: one per segment cut, so 1 if `torn_bytes > 0`
    /// (2 at most, with a finished segment), else 0 (a torn tail is at most one partially
    /// written record, or a zero-filled region).
    pub torn_records: u64,
    /// Temporary files of interrupted segment creations or checkpoint writes that were removed.
    pub removed_temp_files: Vec<PathBuf>,
    /// A segment a crash left under its temporary name in the middle of a roll (the log
    /// keeps appending to a new segment while its sync thread syncs the full one), taken into
    /// the log under its own name because it starts exactly where the log ended: after a
    /// process crash nothing was lost, and its records are kept. One that does not continue
    /// the log (power loss cut the segment before it) is removed instead.
    pub finished_segment: Option<PathBuf>,
    /// Set when corruption was cut away under [`RecoveryOptions::truncate_on_corruption`].
    pub truncated: Option<Truncation>,
}

/// What [`RecoveryOptions::truncate_on_corruption`] cut away.
///
/// Public only with the `test-util` feature (tests, benchmarks, fuzzing); not a stable API.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Truncation {
    /// The segment holding the first damaged record.
    pub path: PathBuf,
    /// Its offset there: the segment now ends at this byte.
    pub offset: u64,
    /// Why the record was judged damaged.
    pub reason: CorruptReason,
    /// The sequence number of the first record dropped; every later one was dropped too. (When
    /// a segment is removed because its name breaks the sequence, its first sequence number.)
    pub first_dropped_seq: Seq,
    /// Bytes dropped, in that segment and in the removed ones.
    pub dropped_bytes: u64,
    /// Later segments removed whole.
    pub removed_segments: Vec<PathBuf>,
}

/// A recovered shard log: where it starts and ends, its checkpoint, and replay.
///
/// Public only with the `test-util` feature (tests, benchmarks, fuzzing); not a stable API.
#[derive(Debug)]
pub struct Recovered {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    max_record_size: u32,
    pub(crate) segments: Vec<SegmentMeta>,
    checkpoint: Option<Seq>,
    report: RecoveryReport,
}

impl Recovered {
    /// The first sequence number in the log (0 for a new log; higher after retention).
    pub fn first_seq(&self) -> Seq {
        self.segments.first().map_or(Seq::ZERO, |s| s.first_seq)
    }

    /// The sequence number the next appended record gets.
    pub fn next_seq(&self) -> Seq {
        self.segments.last().map_or(Seq::ZERO, |s| s.end_seq)
    }

    /// The checkpoint: every record up to and including it has been handled.
    pub fn checkpoint(&self) -> Option<Seq> {
        self.checkpoint
    }

    /// Where replay starts: the record after the checkpoint, or the first record.
    pub fn replay_from(&self) -> Seq {
        self.checkpoint.map_or(self.first_seq(), Seq::next)
    }

    /// What recovery found and did.
    pub fn report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Streams the records after the checkpoint, up to the recovered end, in order.
    pub fn replay(&self) -> Result<Reader, LogError> {
        self.records_from(self.replay_from())
    }

    /// Calls `f` with every record whose sequence number is greater than `after` (every record
    /// if `None`), up to the recovered end, in order; returns how many there were.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))] // test-util API
    pub fn for_each_after(
        &self,
        after: Option<Seq>,
        mut f: impl FnMut(Record),
    ) -> Result<u64, LogError> {
        let from = after
            .map_or(self.first_seq(), Seq::next)
            .max(self.first_seq());
        let mut n = 0;
        for rec in self.records_from(from)? {
            f(rec?);
            n += 1;
        }
        Ok(n)
    }

    fn records_from(&self, from: Seq) -> Result<Reader, LogError> {
        if from >= self.next_seq() {
            return Ok(Reader::empty(self.storage.clone(), self.dir.clone()));
        }
        Ok(Reader::open(self.storage.clone(), self.dir.clone(), from)?
            .max_record_size(self.max_record_size)
            .until(self.next_seq()))
    }
}

/// Recovers the shard log in `dir`: validates every segment, cuts a torn tail off the last one,
/// removes leftover temporary files, and checks the checkpoint against the log.
///
/// Errors: [`LogError::DirNotFound`] if `dir` does not exist; header errors
/// ([`LogError::BadMagic`], [`LogError::UnsupportedVersion`], [`LogError::TruncatedHeader`]);
/// [`LogError::Corrupt`] for damage that is not a torn tail unless
/// [`RecoveryOptions::truncate_on_corruption`]; [`LogError::CheckpointOutOfRange`] if the
/// checkpoint is at or past the end of the log, or before its first record. On a `Corrupt` error
/// no segment was changed: the records before the damage are still there for a [`Reader`] or
/// [`super::inspect`].
///
/// Public only with the `test-util` feature (tests, benchmarks, fuzzing); not a stable API.
pub fn recover(
    storage: Arc<dyn Storage>,
    dir: impl Into<PathBuf>,
    options: RecoveryOptions,
) -> Result<Recovered, LogError> {
    let dir = dir.into();
    let mut listing = segment::list(&*storage, &dir)?;
    let mut report = RecoveryReport::default();
    // Segments started under a temporary name wait until the log's end is known.
    let pending: Vec<SegmentFile> = listing.pending_segments().collect();
    listing
        .temps
        .retain(|tmp| pending.iter().all(|p| &p.path != tmp));
    remove_temps(&*storage, &dir, &listing.temps, &mut report)?;
    let checkpoint = checkpoint::load_checkpoint(&*storage, &dir)?;

    let segs = &listing.segments;
    let mut metas: Vec<SegmentMeta> = Vec::with_capacity(segs.len());
    for (i, seg) in segs.iter().enumerate() {
        let gap = metas.last().filter(|prev| prev.end_seq != seg.first_seq);
        let (meta, damage) = match gap {
            Some(prev) => {
                let reason = CorruptReason::SegmentSeqMismatch {
                    expected: prev.end_seq,
                    found: seg.first_seq,
                };
                (None, Some((0, reason)))
            }
            None => {
                let last = i + 1 == segs.len();
                let (meta, damage) = scan(&*storage, seg, last, options, &mut report)?;
                (Some(meta), damage)
            }
        };
        let Some((offset, reason)) = damage else {
            metas.extend(meta);
            continue;
        };
        if !options.truncate_on_corruption {
            return Err(LogError::Corrupt {
                path: seg.path.clone(),
                offset,
                reason,
            });
        }
        // A segment whose name breaks the sequence goes whole; otherwise it is cut at the damage.
        let keep = meta.as_ref().map(|_| offset);
        let (dropped_bytes, removed_segments) = cut(&*storage, &dir, seg, keep, &segs[i + 1..])?;
        report.truncated = Some(Truncation {
            path: seg.path.clone(),
            offset,
            reason,
            first_dropped_seq: meta.as_ref().map_or(seg.first_seq, |m| m.end_seq),
            dropped_bytes,
            removed_segments,
        });
        metas.extend(meta.map(|m| SegmentMeta { bytes: offset, ..m }));
        break;
    }
    let end = metas.last().map(|m| m.end_seq);
    let (next, stale): (Vec<SegmentFile>, Vec<SegmentFile>) = pending
        .into_iter()
        .partition(|p| report.truncated.is_none() && Some(p.first_seq) == end);
    let stale: Vec<PathBuf> = stale.into_iter().map(|p| p.path).collect();
    remove_temps(&*storage, &dir, &stale, &mut report)?;
    if let (Some(seg), Some(prev)) = (next.first(), metas.last()) {
        match finish(&*storage, &dir, seg, &prev.path, options, &mut report)? {
            Some(meta) => metas.push(meta),
            None => remove_temps(
                &*storage,
                &dir,
                std::slice::from_ref(&seg.path),
                &mut report,
            )?,
        }
    }
    report.segments = metas.len();
    report.records = metas.iter().map(SegmentMeta::records).sum();

    let recovered = Recovered {
        storage,
        dir,
        max_record_size: options.max_record_size,
        segments: metas,
        checkpoint,
        report,
    };
    if let Some(c) = checkpoint {
        if c >= recovered.next_seq() || c.next() < recovered.first_seq() {
            return Err(LogError::CheckpointOutOfRange {
                path: recovered.dir.join(CHECKPOINT_FILE),
                checkpoint: c,
                first_seq: recovered.first_seq(),
                next_seq: recovered.next_seq(),
            });
        }
    }
    Ok(recovered)
}

/// Removes leftover temporary files and syncs the directory.
fn remove_temps(
    storage: &dyn Storage,
    dir: &Path,
    temps: &[PathBuf],
    report: &mut RecoveryReport,
) -> Result<(), LogError> {
    for tmp in temps {
        storage
            .remove_file(tmp)
            .map_err(|e| LogError::io(IoOp::Remove, tmp, e))?;
        report.removed_temp_files.push(tmp.clone());
    }
    if !temps.is_empty() {
        storage
            .sync_dir(dir)
            .map_err(|e| LogError::io(IoOp::SyncDir, dir, e))?;
    }
    Ok(())
}

/// Takes `seg`, a segment left under its temporary name that starts where the log ends
/// (the end of the segment at `prev`), into the log: validates it as the last segment
/// (cutting a torn tail), syncs `prev` and it, renames it to its own name and syncs `dir`,
/// as the roll it was left by would have. `None` if its header never became complete (the
/// crash came before the roll had written it): nothing to take in.
fn finish(
    storage: &dyn Storage,
    dir: &Path,
    seg: &SegmentFile,
    prev: &Path,
    options: RecoveryOptions,
    report: &mut RecoveryReport,
) -> Result<Option<SegmentMeta>, LogError> {
    let (mut meta, damage) = match scan(storage, seg, true, options, report) {
        Ok(scanned) => scanned,
        Err(e @ LogError::Io { .. }) => return Err(e),
        Err(_) => return Ok(None),
    };
    let path = dir.join(segment::segment_file_name(seg.first_seq));
    if let Some((offset, reason)) = damage {
        if !options.truncate_on_corruption {
            return Err(LogError::Corrupt {
                path: seg.path.clone(),
                offset,
                reason,
            });
        }
        let (dropped_bytes, removed_segments) = cut(storage, dir, seg, Some(offset), &[])?;
        report.truncated = Some(Truncation {
            path: path.clone(),
            offset,
            reason,
            first_dropped_seq: meta.end_seq,
            dropped_bytes,
            removed_segments,
        });
        meta.bytes = offset;
    }
    segment::sync_path(storage, prev)?;
    segment::sync_path(storage, &seg.path)?;
    storage
        .rename(&seg.path, &path)
        .map_err(|e| LogError::io(IoOp::Rename, &seg.path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| LogError::io(IoOp::SyncDir, dir, e))?;
    meta.path = path.clone();
    report.finished_segment = Some(path);
    Ok(Some(meta))
}

/// Validates one segment; cuts a torn tail. Returns its metadata and any other damage.
fn scan(
    storage: &dyn Storage,
    seg: &SegmentFile,
    last: bool,
    options: RecoveryOptions,
    report: &mut RecoveryReport,
) -> Result<(SegmentMeta, Option<(u64, CorruptReason)>), LogError> {
    let mut scanner = Scanner::open(storage, seg, last, options.max_record_size)?;
    let mut meta = SegmentMeta::empty(seg.path.clone(), seg.first_seq);
    meta.bytes = scanner.file_len();
    loop {
        match scanner.next()? {
            Step::Record(rec) => meta.add(rec.seq, rec.timestamp_nanos),
            Step::End => return Ok((meta, None)),
            Step::Damage(d) if d.torn => {
                segment::truncate(storage, &seg.path, d.offset)?;
                report.torn_bytes += scanner.file_len() - d.offset;
                report.torn_records += 1;
                meta.bytes = d.offset;
                return Ok((meta, None));
            }
            Step::Damage(d) => return Ok((meta, Some((d.offset, d.reason)))),
        }
    }
}

/// Cuts the log in `seg`: keeps its first `keep` bytes, or removes it whole if `None`, and
/// removes every `later` segment first (newest first, syncing the directory after each, so a
/// crash in between leaves a contiguous log that still ends in the same damage). Returns the
/// bytes dropped and the segments removed, oldest first.
fn cut(
    storage: &dyn Storage,
    dir: &Path,
    seg: &SegmentFile,
    keep: Option<u64>,
    later: &[SegmentFile],
) -> Result<(u64, Vec<PathBuf>), LogError> {
    let len = |path: &Path| {
        storage
            .file_len(path)
            .map_err(|e| LogError::io(IoOp::Len, path, e))
    };
    let mut dropped_bytes = 0;
    let mut removed = Vec::new();
    for s in later.iter().rev().chain(keep.is_none().then_some(seg)) {
        dropped_bytes += len(&s.path)?;
        storage
            .remove_file(&s.path)
            .map_err(|e| LogError::io(IoOp::Remove, &s.path, e))?;
        storage
            .sync_dir(dir)
            .map_err(|e| LogError::io(IoOp::SyncDir, dir, e))?;
        removed.push(s.path.clone());
    }
    if let Some(keep) = keep {
        dropped_bytes += len(&seg.path)?.saturating_sub(keep);
        segment::truncate(storage, &seg.path, keep)?;
    }
    removed.reverse();
    Ok((dropped_bytes, removed))
}

#[cfg(test)]
#[path = "recover_tests.rs"]
mod tests;
