//! Reading a shard's history: the [`Reader`] iterator and the [`inspect`] report (and
//! [`inspect_bus`], the report on every shard of a bus directory).
//!
//! They open the directories read-only and validate exactly as recovery does (same
//! scanner), so they can run next to a live shard log or on a copy of a damaged log.

use crate::sync::plain::Arc;
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

use super::checkpoint::load_checkpoint;
use super::error::{CorruptReason, LogError};
use super::record::{Record, Seq};
use super::scanner::{Damage, Scanner, Step};
use super::segment::{self, SegmentFile};
use super::storage::Storage;
use super::DEFAULT_MAX_RECORD_SIZE;

/// Iterates over a shard's records in sequence order, starting at a given sequence number.
///
/// Yields `Ok(record)` for each valid record, then ends: quietly at the end of the log or at a
/// torn tail (a write in progress, or a crash not yet recovered), or with one `Err` at the first
/// corruption, I/O error or sequence gap, after which it yields nothing more. The log's end is
/// where recovery would put it: a segment a roll left under its temporary name that continues
/// the log is read (a live log appends to it until the roll's syncs are done), and so is a
/// segment the log rolled into after the reader opened, where it begins at the end of the one
/// before as the reader read it (each segment is read to its length when the reader reaches
/// it). Memory use is one record plus a read buffer. There is no index: a reader starting in
/// the middle of a segment reads (and validates) that segment's earlier records to get there.
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
                    match Scanner::open(&*self.storage, &seg, last, self.max_record_size) {
                        Ok(scanner) => self.scanner.insert(scanner),
                        Err(e) if seg.path.file_name().is_some_and(segment::is_temp_name) => {
                            self.pending_gone(seg, e)?;
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            match scanner.next()? {
                Step::Record(rec) if self.until.is_some_and(|end| rec.seq >= end) => {
                    return Ok(None)
                }
                Step::Record(rec) if rec.seq < self.from => continue,
                Step::Record(rec) => return Ok(Some(rec)),
                // Past the segments listed at open (or at a torn tail of the last one, which
                // recovery would cut), the log goes on in a segment that starts where this
                // one ends, if there is one.
                Step::End | Step::Damage(Damage { torn: true, .. }) => {
                    let next = scanner.expected();
                    self.expected = Some(next);
                    let read = scanner.path().to_path_buf();
                    self.scanner = None;
                    if self.until.is_some_and(|end| next >= end) {
                        return Ok(None);
                    }
                    if self.pending.is_empty() {
                        match self.continuation(&read, next)? {
                            Some(seg) => self.pending.push_back(seg),
                            None => return Ok(None),
                        }
                    }
                }
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

impl Reader {
    /// The segment that continues the log at `next` after `read`, the last of the segments
    /// listed at open: one the log rolled into since (a live log), else one a roll left
    /// under its temporary name (`NNN.log.tmp`: a roll in progress, or a crash in the middle
    /// of one), which the live log appends to and recovery would take in, as [`inspect`]
    /// counts it. Never `read` itself (an empty segment starts at `next`), nor its renamed
    /// self. After a temporary segment, another only once the live log renamed that one into
    /// place: a directory that still holds it is a crash's, and recovery takes in one at most.
    fn continuation(&self, read: &Path, next: Seq) -> Result<Option<SegmentFile>, LogError> {
        let listing = segment::list(&*self.storage, &self.dir)?;
        let renamed = |s: &SegmentFile| segment::temp_path(&s.path) == read;
        let rolled = listing
            .segments
            .iter()
            .find(|s| s.first_seq == next && s.path != read && !renamed(s));
        if let Some(seg) = rolled {
            return Ok(Some(seg.clone()));
        }
        let read_temp = read.file_name().is_some_and(segment::is_temp_name);
        let moved =
            !listing.temps.iter().any(|t| t == read) && listing.segments.iter().any(renamed);
        if read_temp && !moved {
            return Ok(None);
        }
        let pending = listing
            .pending_segments()
            .find(|s| s.first_seq == next && s.path != read);
        Ok(pending)
    }

    /// `seg`, a roll's segment under its temporary name, failed to open with `error`. A header
    /// that never became complete means the log ends before it (recovery removes it); a file
    /// that is gone was renamed into place by the live log since it was listed (read it
    /// there), or removed by a recovery as one that does not continue the log (the end).
    fn pending_gone(&mut self, seg: SegmentFile, error: LogError) -> Result<(), LogError> {
        let LogError::Io { source, .. } = &error else {
            return Ok(());
        };
        if source.kind() != io::ErrorKind::NotFound {
            return Err(error);
        }
        let listing = segment::list(&*self.storage, &self.dir)?;
        if let Some(renamed) = listing
            .segments
            .into_iter()
            .find(|s| s.first_seq == seg.first_seq)
        {
            self.pending.push_back(renamed);
        }
        Ok(())
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
    let pending = listing
        .pending_segments()
        .find(|seg| Some(seg.first_seq) == next);
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
#[path = "reader_tests.rs"]
mod tests;
