//! Reading a shard's history: the [`Reader`] iterator and the [`inspect`] report (and
//! [`inspect_bus`], the report on every shard of a bus directory).
//!
//! They open the directories read-only and validate exactly as recovery does (same
//! scanner), so they can run next to a live shard log or on a copy of a damaged log.

use crate::sync::plain::Arc;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::checkpoint::load_checkpoint;
use super::error::{CorruptReason, LogError};
use super::record::{Record, Seq};
use super::scanner::{Scanner, Step};
use super::segment::{self, SegmentFile};
use super::storage::Storage;
use super::DEFAULT_MAX_RECORD_SIZE;

/// Iterates over a shard's records in sequence order, starting at a given sequence number.
///
/// Yields `Ok(record)` for each valid record, then ends: quietly at the end of the log or at a
/// torn tail (a write in progress, or a crash not yet recovered), or with one `Err` at the first
/// corruption, I/O error or sequence gap, after which it yields nothing more. Memory use is one
/// record plus a read buffer. There is no index: a reader starting in the middle of a segment
/// reads (and validates) that segment's earlier records to get there.
#[derive(Debug)]
pub struct Reader {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    pending: VecDeque<SegmentFile>,
    scanner: Option<Scanner>,
    /// The first segment of the log (the only one allowed not to continue a predecessor).
    expected: Option<Seq>,
    from: Seq,
    until: Option<Seq>,
    max_record_size: u32,
    done: bool,
}

impl Reader {
    /// Opens the log in `dir` for reading from sequence number `from` on.
    ///
    /// Errors: [`LogError::DirNotFound`]; [`LogError::SeqUnavailable`] if `from` is before the
    /// first record still in the log (retention deleted it). A `from` past the end yields
    /// nothing.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
        from: Seq,
    ) -> Result<Self, LogError> {
        let dir = dir.into();
        let segments = segment::list(&*storage, &dir)?.segments;
        if let Some(first) = segments.first().filter(|s| from < s.first_seq) {
            return Err(LogError::SeqUnavailable {
                path: dir,
                requested: from,
                first_seq: first.first_seq,
            });
        }
        // Start in the last segment that begins at or before `from`.
        let start = segments
            .partition_point(|s| s.first_seq <= from)
            .saturating_sub(1);
        let mut reader = Reader::empty(storage, dir);
        reader.pending = segments.into_iter().skip(start).collect();
        reader.from = from;
        Ok(reader)
    }

    /// A reader that yields nothing.
    pub(crate) fn empty(storage: Arc<dyn Storage>, dir: PathBuf) -> Self {
        Reader {
            storage,
            dir,
            pending: VecDeque::new(),
            scanner: None,
            expected: None,
            from: Seq::ZERO,
            until: None,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            done: false,
        }
    }

    /// Sets the largest valid encoded record (default 16 MiB); use the log's configured value.
    pub fn max_record_size(mut self, max_record_size: u32) -> Self {
        self.max_record_size = max_record_size;
        self
    }

    /// Stops before sequence number `end` (exclusive).
    pub fn until(mut self, end: Seq) -> Self {
        self.until = Some(end);
        self
    }

    /// The shard directory being read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn advance(&mut self) -> Result<Option<Record>, LogError> {
        loop {
            let scanner = match &mut self.scanner {
                Some(scanner) => scanner,
                None => {
                    let Some(seg) = self.pending.pop_front() else {
                        return Ok(None);
                    };
                    if let Some(expected) = self.expected.filter(|e| *e != seg.first_seq) {
                        return Err(LogError::Corrupt {
                            path: seg.path,
                            offset: 0,
                            reason: CorruptReason::SegmentSeqMismatch {
                                expected,
                                found: seg.first_seq,
                            },
                        });
                    }
                    let last = self.pending.is_empty();
                    self.scanner.insert(Scanner::open(
                        &*self.storage,
                        &seg,
                        last,
                        self.max_record_size,
                    )?)
                }
            };
            match scanner.next()? {
                Step::Record(rec) if self.until.is_some_and(|end| rec.seq >= end) => {
                    return Ok(None)
                }
                Step::Record(rec) if rec.seq < self.from => continue,
                Step::Record(rec) => return Ok(Some(rec)),
                Step::End => {
                    self.expected = Some(scanner.expected());
                    self.scanner = None;
                }
                Step::Damage(d) if d.torn => return Ok(None),
                Step::Damage(d) => {
                    return Err(LogError::Corrupt {
                        path: scanner.path().to_path_buf(),
                        offset: d.offset,
                        reason: d.reason,
                    })
                }
            }
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Record, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.advance().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
            self.scanner = None;
        }
        item
    }
}

/// What [`inspect`] found in one segment file.
#[derive(Debug)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// The segment file.
    pub path: PathBuf,
    /// The first sequence number, from the file name.
    pub first_seq: Seq,
    /// The sequence number of the last valid record, if any.
    pub last_seq: Option<Seq>,
    /// Valid records.
    pub records: u64,
    /// File length.
    pub bytes: u64,
    /// Bytes at the end that recovery would cut as a torn tail.
    pub torn_tail_bytes: u64,
    /// Records whose CRC did not match (skipped over when their length was plausible).
    pub crc_failures: u64,
    /// Every problem found, in file order, as recovery would report it.
    pub problems: Vec<LogError>,
}

/// What [`inspect`] found in a shard directory.
#[derive(Debug)]
pub struct ShardReport {
    /// The shard directory.
    pub dir: PathBuf,
    /// Every segment, in sequence order; last, a segment left under its temporary name
    /// (`NNN.log.tmp`) in the middle of a roll that recovery would take into the log.
    pub segments: Vec<SegmentInfo>,
    /// The checkpoint, if one exists and is valid.
    pub checkpoint: Option<Seq>,
    /// Problems not inside a segment: a damaged checkpoint, gaps between segments, a
    /// checkpoint outside the log.
    pub problems: Vec<LogError>,
}

impl ShardReport {
    /// Whether recovery would find the log intact: no problems and no torn tail.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
            && self
                .segments
                .iter()
                .all(|s| s.problems.is_empty() && s.torn_tail_bytes == 0)
    }
}

/// What [`inspect_bus`] found in a persistent bus directory: its layout, as its `meta` file
/// records it, and a report on each shard log of the current generation.
#[derive(Debug)]
#[non_exhaustive]
pub struct BusReport {
    /// The bus directory.
    pub dir: PathBuf,
    /// The number of shard logs in the current generation.
    pub shards: u32,
    /// The current generation: its logs are in `dir/gen-{generation}/`.
    pub generation: u64,
    /// One report per shard log, in shard order (`logs[i]` is shard `i`'s). A shard whose
    /// directory was never created (it never received a message) has an empty log.
    pub logs: Vec<ShardReport>,
}

impl BusReport {
    /// Whether recovery would find every shard log intact.
    pub fn is_clean(&self) -> bool {
        self.logs.iter().all(ShardReport::is_clean)
    }
}

/// Reports on the persistent bus directory `dir` (the [`Persistence`](crate::Persistence)
/// directory) without changing anything: reads its `meta` file and [`inspect`]s each shard
/// log of the current generation.
///
/// `Ok(None)` if `dir` has no `meta` file: no bus was built there yet, or `dir` is a single
/// shard log (use [`inspect`]). A damaged `meta` file is an error ([`LogError::Corrupt`],
/// [`LogError::BadMagic`], ...), never `None`; damage inside the shard logs is reported in
/// their [`ShardReport`]s, not returned.
pub fn inspect_bus(storage: &dyn Storage, dir: &Path) -> Result<Option<BusReport>, LogError> {
    let Some(meta) = super::meta::read_meta(storage, dir)? else {
        return Ok(None);
    };
    let logs = meta
        .shard_dirs(dir)
        .into_iter()
        .map(|shard_dir| match inspect(storage, &shard_dir) {
            Err(LogError::DirNotFound { .. }) => Ok(ShardReport {
                dir: shard_dir,
                segments: Vec::new(),
                checkpoint: None,
                problems: Vec::new(),
            }),
            report => report,
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(BusReport {
        dir: dir.to_path_buf(),
        shards: meta.shards,
        generation: meta.generation,
        logs,
    }))
}

/// Reports on every segment and the checkpoint of the shard log in `dir` without changing
/// anything. Damage of any kind is reported in the [`ShardReport`], not returned; the only
/// errors are failing to list `dir` ([`LogError::DirNotFound`], [`LogError::Io`]). Records are
/// validated against the default maximum record size (16 MiB).
pub fn inspect(storage: &dyn Storage, dir: &Path) -> Result<ShardReport, LogError> {
    let listing = segment::list(storage, dir)?;
    let mut report = ShardReport {
        dir: dir.to_path_buf(),
        segments: Vec::with_capacity(listing.segments.len()),
        checkpoint: None,
        problems: Vec::new(),
    };
    let count = listing.segments.len();
    let mut next: Option<Seq> = None;
    for (i, seg) in listing.segments.iter().enumerate() {
        if let Some(expected) = next.filter(|e| *e != seg.first_seq) {
            report.problems.push(LogError::Corrupt {
                path: seg.path.clone(),
                offset: 0,
                reason: CorruptReason::SegmentSeqMismatch {
                    expected,
                    found: seg.first_seq,
                },
            });
        }
        let info = inspect_segment(storage, seg, i + 1 == count);
        next = Some(info.last_seq.map_or(seg.first_seq, Seq::next));
        report.segments.push(info);
    }
    // A segment left under its temporary name in the middle of a roll, which recovery
    // would take in: it starts where the log ends and its header is complete.
    let pending = listing.temps.iter().find_map(|tmp| {
        let first_seq = segment::parse_segment_name(tmp.file_stem()?)?;
        let seg = SegmentFile {
            path: tmp.clone(),
            first_seq,
        };
        (Some(first_seq) == next).then_some(seg)
    });
    if let Some(seg) = pending {
        // One whose header never became complete, recovery removes.
        let header = Scanner::open(storage, &seg, true, DEFAULT_MAX_RECORD_SIZE);
        if !matches!(header, Err(ref e) if !matches!(e, LogError::Io { .. })) {
            let info = inspect_segment(storage, &seg, true);
            next = Some(info.last_seq.map_or(seg.first_seq, Seq::next));
            report.segments.push(info);
        }
    }
    match load_checkpoint(storage, dir) {
        Ok(checkpoint) => report.checkpoint = checkpoint,
        Err(e) => report.problems.push(e),
    }
    if let Some(c) = report.checkpoint {
        // As recovery sees it: a log without segments starts and ends at 0.
        let first = report.segments.first().map_or(Seq::ZERO, |s| s.first_seq);
        let next = next.unwrap_or(first);
        if c >= next || c.next() < first {
            report.problems.push(LogError::CheckpointOutOfRange {
                path: dir.join(super::checkpoint::CHECKPOINT_FILE),
                checkpoint: c,
                first_seq: first,
                next_seq: next,
            });
        }
    }
    Ok(report)
}

fn inspect_segment(storage: &dyn Storage, seg: &SegmentFile, last: bool) -> SegmentInfo {
    let mut info = SegmentInfo {
        path: seg.path.clone(),
        first_seq: seg.first_seq,
        last_seq: None,
        records: 0,
        bytes: storage.file_len(&seg.path).unwrap_or(0),
        torn_tail_bytes: 0,
        crc_failures: 0,
        problems: Vec::new(),
    };
    let mut scanner = match Scanner::open(storage, seg, last, DEFAULT_MAX_RECORD_SIZE) {
        Ok(scanner) => scanner,
        Err(e) => {
            info.problems.push(e);
            return info;
        }
    };
    loop {
        match scanner.next() {
            Ok(Step::Record(rec)) => {
                info.records += 1;
                info.last_seq = Some(rec.seq);
            }
            Ok(Step::End) => break,
            Ok(Step::Damage(d)) if d.torn => {
                info.torn_tail_bytes = scanner.file_len() - d.offset;
                break;
            }
            Ok(Step::Damage(d)) => {
                if matches!(d.reason, CorruptReason::CrcMismatch { .. }) {
                    info.crc_failures += 1;
                }
                info.problems.push(LogError::Corrupt {
                    path: seg.path.clone(),
                    offset: d.offset,
                    reason: d.reason,
                });
                if !d.resumable {
                    break;
                }
            }
            Err(e) => {
                info.problems.push(e);
                break;
            }
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{FsyncPolicy, LogConfig, RecordRef, ShardLog, SimStorage};

    const DIR: &str = "/shard-001";

    fn log(sim: &SimStorage, n: u64) -> ShardLog {
        let config = LogConfig {
            segment_size: 200,
            fsync: FsyncPolicy::Batch,
            ..LogConfig::default()
        };
        let (mut log, _) = ShardLog::open(Arc::new(sim.clone()), DIR, config).unwrap();
        for i in 0..n {
            let payload = i.to_le_bytes();
            log.append(&[RecordRef {
                timestamp_nanos: i,
                topic: "topic",
                payload: &payload,
            }])
            .unwrap();
        }
        log.commit().unwrap();
        log
    }

    fn seqs(r: Reader) -> Vec<Result<u64, LogError>> {
        r.map(|rec| rec.map(|r| r.seq.get())).collect()
    }

    #[test]
    fn reads_from_any_seq_across_segments() {
        let sim = SimStorage::new();
        let log = log(&sim, 20);
        let segments = sim.list_dir(Path::new(DIR)).unwrap().len();
        assert!(segments > 3, "{segments}");
        for from in 0..=21 {
            let got: Vec<u64> = log
                .reader(Seq(from))
                .unwrap()
                .map(|r| r.unwrap().seq.get())
                .collect();
            assert_eq!(got, (from..20).collect::<Vec<_>>());
        }
        let r = Reader::open(Arc::new(sim.clone()), DIR, Seq(5))
            .unwrap()
            .until(Seq(8));
        assert_eq!(
            r.map(|r| r.unwrap().seq.get()).collect::<Vec<_>>(),
            [5, 6, 7]
        );
    }

    #[test]
    fn stops_quietly_at_a_torn_tail_and_loudly_at_corruption() {
        let sim = SimStorage::new();
        let log = log(&sim, 6);
        let last = log.segment_paths().last().unwrap().clone();
        sim.modify(&last, |d| d.truncate(d.len() - 3));
        let got: Vec<u64> = log
            .reader(Seq(0))
            .unwrap()
            .map(|r| r.unwrap().seq.get())
            .collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);

        let first = log.segment_paths()[0].clone();
        sim.modify(&first, |d| d[30] ^= 1);
        let got = seqs(log.reader(Seq(0)).unwrap());
        assert_eq!(got.len(), 1);
        assert!(
            matches!(&got[0], Err(LogError::Corrupt { path, offset: 16, .. }) if *path == first)
        );
    }

    #[test]
    fn seq_before_the_log_start_is_unavailable() {
        let sim = SimStorage::new();
        let log = log(&sim, 20);
        let first = log.segment_paths()[0].clone();
        sim.remove_file(&first).unwrap();
        let start = log.segment_paths()[1].clone();
        let start = segment::parse_segment_name(start.file_name().unwrap()).unwrap();
        assert!(matches!(
            Reader::open(Arc::new(sim.clone()), DIR, Seq(0)),
            Err(LogError::SeqUnavailable { requested: Seq(0), first_seq, .. }) if first_seq == start
        ));
    }

    #[test]
    fn inspect_reports_instead_of_failing() {
        let sim = SimStorage::new();
        let mut log = log(&sim, 20);
        log.checkpoint(Seq(3)).unwrap();
        let report = inspect(&sim, Path::new(DIR)).unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.checkpoint, Some(Seq(3)));
        assert_eq!(report.segments.iter().map(|s| s.records).sum::<u64>(), 20);
        assert_eq!(report.segments.last().unwrap().last_seq, Some(Seq(19)));

        let paths = log.segment_paths();
        // A CRC failure in the first segment (skipped), a torn tail in the last, a bad header in
        // the second.
        sim.modify(&paths[0], |d| d[40] ^= 1);
        sim.modify(&paths[1], |d| d[8] = 7);
        let last = paths.last().unwrap();
        sim.modify(last, |d| d.truncate(d.len() - 1));
        let report = inspect(&sim, Path::new(DIR)).unwrap();
        assert!(!report.is_clean());
        let s0 = &report.segments[0];
        assert_eq!((s0.crc_failures, s0.problems.len()), (1, 1));
        assert!(s0.records >= 1);
        assert!(matches!(
            report.segments[1].problems[..],
            [LogError::UnsupportedVersion { version: 7, .. }]
        ));
        let s_last = report.segments.last().unwrap();
        assert!(s_last.torn_tail_bytes > 0 && s_last.problems.is_empty());
        // Gap after the unreadable segment is reported at shard level.
        assert!(report
            .problems
            .iter()
            .all(|p| matches!(p, LogError::Corrupt { offset: 0, .. })));
    }

    /// Found by the `recover` fuzz target: a checkpoint but no segment (the only one renamed
    /// away). Recovery refuses it (`CheckpointOutOfRange`), so `inspect` must not call it clean.
    #[test]
    fn inspect_checks_the_checkpoint_of_a_log_without_segments() {
        let sim = SimStorage::new();
        let dir = Path::new(DIR);
        sim.create_dir_all(dir).unwrap();
        crate::log::checkpoint::store_checkpoint(&sim, dir, Seq(0)).unwrap();
        let report = inspect(&sim, dir).unwrap();
        assert!(!report.is_clean(), "{report:?}");
        assert!(matches!(
            report.problems[..],
            [LogError::CheckpointOutOfRange {
                checkpoint: Seq(0),
                first_seq: Seq(0),
                next_seq: Seq(0),
                ..
            }]
        ));
        let recovered = crate::log::recover(Arc::new(sim), dir, Default::default());
        assert!(matches!(
            recovered,
            Err(LogError::CheckpointOutOfRange { .. })
        ));
    }
}
