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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments kept.
    pub segments: usize,
    /// Valid records kept.
    pub records: u64,
    /// Bytes cut from the end of the last segment as a torn tail (an interrupted write).
    pub torn_bytes: u64,
    /// Partial records in those bytes: 1 if `torn_bytes > 0`, else 0 (a torn tail is at most
    /// one partially written record, or a zero-filled region).
    pub torn_records: u64,
    /// Temporary files of interrupted segment creations or checkpoint writes that were removed.
    pub removed_temp_files: Vec<PathBuf>,
    /// Set when corruption was cut away under [`RecoveryOptions::truncate_on_corruption`].
    pub truncated: Option<Truncation>,
}

/// What [`RecoveryOptions::truncate_on_corruption`] cut away.
#[derive(Debug, Clone, PartialEq, Eq)]
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
pub fn recover(
    storage: Arc<dyn Storage>,
    dir: impl Into<PathBuf>,
    options: RecoveryOptions,
) -> Result<Recovered, LogError> {
    let dir = dir.into();
    let listing = segment::list(&*storage, &dir)?;
    let mut report = RecoveryReport::default();
    for tmp in &listing.temps {
        storage
            .remove_file(tmp)
            .map_err(|e| LogError::io(IoOp::Remove, tmp, e))?;
        report.removed_temp_files.push(tmp.clone());
    }
    if !listing.temps.is_empty() {
        storage
            .sync_dir(&dir)
            .map_err(|e| LogError::io(IoOp::SyncDir, &dir, e))?;
    }
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
                report.torn_bytes = scanner.file_len() - d.offset;
                report.torn_records = 1;
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
mod tests {
    use super::*;
    use crate::log::record::{encode, RecordRef};
    use crate::log::segment::{SegmentWriter, HEADER_LEN};
    use crate::log::storage::SimStorage;

    const DIR: &str = "/shard-000";

    /// Writes segments of `per` records each (`n` records in all) straight through the segment
    /// writer; returns the segment paths and every record's (path, offset).
    fn write(sim: &SimStorage, n: u64, per: u64) -> (Vec<PathBuf>, Vec<(PathBuf, u64)>) {
        let dir = Path::new(DIR);
        sim.create_dir_all(dir).unwrap();
        let (mut paths, mut at) = (Vec::new(), Vec::new());
        for first in (0..n).step_by(per as usize) {
            let mut w = SegmentWriter::create(sim, dir, Seq(first)).unwrap();
            let mut buf = Vec::new();
            for i in first..n.min(first + per) {
                at.push((w.meta.path.clone(), HEADER_LEN + buf.len() as u64));
                let payload = i.to_le_bytes();
                encode(
                    &mut buf,
                    Seq(i),
                    &RecordRef {
                        timestamp_nanos: i,
                        topic: "t",
                        payload: &payload,
                    },
                );
            }
            w.append(&buf).unwrap();
            w.sync().unwrap();
            paths.push(w.meta.path.clone());
        }
        (paths, at)
    }

    fn seqs(r: &Recovered) -> Vec<u64> {
        let mut v = Vec::new();
        r.for_each_after(None, |rec| v.push(rec.seq.get())).unwrap();
        v
    }

    fn run(sim: &SimStorage, truncate: bool) -> Result<Recovered, LogError> {
        let options = RecoveryOptions {
            truncate_on_corruption: truncate,
            ..RecoveryOptions::default()
        };
        recover(Arc::new(sim.clone()), DIR, options)
    }

    #[test]
    fn empty_and_missing_directories() {
        let sim = SimStorage::new();
        assert!(
            matches!(run(&sim, false), Err(LogError::DirNotFound { path }) if path == Path::new(DIR))
        );
        sim.create_dir_all(Path::new(DIR)).unwrap();
        let r = run(&sim, false).unwrap();
        assert_eq!(
            (r.first_seq(), r.next_seq(), r.checkpoint()),
            (Seq(0), Seq(0), None)
        );
        assert_eq!(r.report(), &RecoveryReport::default());
        assert_eq!(r.replay().unwrap().count(), 0);
    }

    /// A segment named at the sequence limit (only a hand-made name gets there) is corrupt,
    /// with its path, rather than a log whose appends could never count on.
    #[test]
    fn a_segment_named_beyond_the_sequence_limit_is_corrupt() {
        let sim = SimStorage::new();
        let (paths, _) = write(&sim, 3, 4);
        let beyond = Path::new(DIR).join(super::super::segment::segment_file_name(Seq::LIMIT));
        sim.rename(&paths[0], &beyond).unwrap();
        let err = run(&sim, true).unwrap_err();
        assert!(
            matches!(&err, LogError::Corrupt {
                path,
                offset: 0,
                reason: CorruptReason::SeqOutOfRange { found: Seq::LIMIT },
            } if *path == beyond),
            "{err:?}"
        );
        // Just below the limit the name is a segment like any other (a gap, here).
        let below = Path::new(DIR).join(super::super::segment::segment_file_name(Seq(Seq::LIMIT
            .get()
            - 1)));
        sim.rename(&beyond, &below).unwrap();
        assert!(!matches!(
            run(&sim, false),
            Err(LogError::Corrupt {
                reason: CorruptReason::SeqOutOfRange { .. },
                ..
            })
        ));
    }

    #[test]
    fn clean_log_across_segments() {
        let sim = SimStorage::new();
        write(&sim, 10, 4);
        let r = run(&sim, false).unwrap();
        assert_eq!((r.first_seq(), r.next_seq()), (Seq(0), Seq(10)));
        assert_eq!(
            (
                r.report().segments,
                r.report().records,
                r.report().torn_bytes
            ),
            (3, 10, 0)
        );
        assert_eq!(seqs(&r), (0..10).collect::<Vec<_>>());
        let mut after = Vec::new();
        assert_eq!(
            r.for_each_after(Some(Seq(6)), |rec| after.push(rec.seq.get()))
                .unwrap(),
            3
        );
        assert_eq!(after, [7, 8, 9]);
    }

    #[test]
    fn a_gap_between_segments_is_corrupt() {
        let sim = SimStorage::new();
        let (paths, _) = write(&sim, 12, 4);
        sim.remove_file(&paths[1]).unwrap();
        let err = run(&sim, false).unwrap_err();
        assert!(
            matches!(
                err,
                LogError::Corrupt { ref path, offset: 0, reason: CorruptReason::SegmentSeqMismatch { expected: Seq(4), found: Seq(8) } }
                    if *path == paths[2]
            ),
            "{err}"
        );
        let r = run(&sim, true).unwrap();
        assert_eq!(seqs(&r), [0, 1, 2, 3]);
        let t = r.report().truncated.clone().unwrap();
        assert_eq!(
            (t.offset, t.first_dropped_seq, t.removed_segments),
            (0, Seq(8), vec![paths[2].clone()])
        );
        assert!(sim.contents(&paths[2]).is_none());
    }

    #[test]
    fn a_damaged_non_last_segment_is_cut_there_with_the_option() {
        let sim = SimStorage::new();
        let (paths, at) = write(&sim, 12, 4);
        let (ref path, offset) = at[5];
        sim.modify(path, |d| d[offset as usize + 12] ^= 0xff);
        let snapshot: Vec<_> = paths.iter().map(|p| sim.contents(p)).collect();
        let err = run(&sim, false).unwrap_err();
        assert!(
            matches!(err, LogError::Corrupt { path: ref p, offset: o, .. } if p == path && o == offset),
            "{err}"
        );
        let after: Vec<_> = paths.iter().map(|p| sim.contents(p)).collect();
        assert_eq!(snapshot, after, "a Corrupt error changes nothing");

        let before = sim.file_len(path).unwrap() + sim.file_len(&paths[2]).unwrap();
        let r = run(&sim, true).unwrap();
        assert_eq!(seqs(&r), [0, 1, 2, 3, 4]);
        assert_eq!(r.next_seq(), Seq(5));
        let t = r.report().truncated.clone().unwrap();
        assert_eq!(t.path, paths[1]);
        assert_eq!(t.offset, offset);
        assert_eq!(t.first_dropped_seq, Seq(5));
        assert_eq!(t.removed_segments, vec![paths[2].clone()]);
        assert_eq!(t.dropped_bytes, before - offset);
        assert_eq!(sim.file_len(path).unwrap(), offset);
        // A second recovery finds a clean log.
        let r = run(&sim, false).unwrap();
        assert_eq!((r.next_seq(), r.report().truncated.clone()), (Seq(5), None));
    }

    #[test]
    fn checkpoint_is_checked_against_the_log() {
        let sim = SimStorage::new();
        write(&sim, 5, 10);
        let dir = Path::new(DIR);
        checkpoint::store_checkpoint(&sim, dir, Seq(2)).unwrap();
        let r = run(&sim, false).unwrap();
        assert_eq!((r.checkpoint(), r.replay_from()), (Some(Seq(2)), Seq(3)));
        let replayed: Vec<u64> = r
            .replay()
            .unwrap()
            .map(|rec| rec.unwrap().seq.get())
            .collect();
        assert_eq!(replayed, [3, 4]);

        checkpoint::store_checkpoint(&sim, dir, Seq(4)).unwrap();
        assert_eq!(run(&sim, false).unwrap().replay().unwrap().count(), 0);

        checkpoint::store_checkpoint(&sim, dir, Seq(5)).unwrap();
        let err = run(&sim, false).unwrap_err();
        assert!(
            matches!(
                err,
                LogError::CheckpointOutOfRange { checkpoint: Seq(5), first_seq: Seq(0), next_seq: Seq(5), ref path }
                    if *path == dir.join("checkpoint")
            ),
            "{err}"
        );
    }

    #[test]
    fn leftover_temp_files_are_removed() {
        let sim = SimStorage::new();
        write(&sim, 3, 10);
        let tmp = Path::new(DIR).join("00000000000000000003.log.tmp");
        drop(sim.create(&tmp).unwrap());
        let r = run(&sim, false).unwrap();
        assert_eq!(r.report().removed_temp_files, vec![tmp.clone()]);
        assert!(sim.contents(&tmp).is_none());
        assert_eq!(r.next_seq(), Seq(3));
    }
}
