//! [`ShardLog`]: the append side of one shard's log (append, commit, checkpoint, retain).

use crate::sync::plain::Arc;
use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::segment::{SegmentMeta, SegmentWriter};
use super::syncer::{timed, SyncObserver, Syncer};

use super::{
    checkpoint, record, recover, syncer, FsyncPolicy, IoOp, LogConfig, LogError, Reader, RecordRef,
    Recovered, RetentionLimit, Seq, Storage,
};

/// The append side of one shard's log. Owned by the shard thread; not shared.
///
/// Any failed write, sync, rename or removal *poisons* the log: every later call returns
/// [`LogError::Poisoned`]. A failed `fsync` must not be retried: the kernel may have dropped the
/// dirty pages and cleared the error, so a retry that "succeeds" proves nothing. Reopen the log
/// (recovery decides what survived) or stop the shard.
///
/// Each shard owns one `ShardLog` in its own directory (`DIR/gen-G/shard-NNN/`). The shard loop:
///
/// 1. **open**: [`ShardLog::open`] creates the directory if needed, recovers the log (validates
///    every record, cuts a torn tail) and returns a [`Recovered`];
/// 2. **replay**: [`Recovered::replay`] streams the records after the checkpoint to the handlers;
/// 3. **append + commit**: each drained batch is [`ShardLog::append`]ed (one write), then
///    [`ShardLog::commit`] syncs it as the [`FsyncPolicy`] says, before the handlers run;
/// 4. **checkpoint**: now and then, [`ShardLog::checkpoint`] records how far every handler got,
///    and [`ShardLog::retain`] deletes old segments wholly below it;
/// 5. **close**: [`ShardLog::close`] syncs what is left.
///
/// ```
/// use std::sync::Arc;
/// use shardbus::log::{FsyncPolicy, LogConfig, RecordRef, Seq, ShardLog, SimStorage};
///
/// # fn main() -> Result<(), shardbus::log::LogError> {
/// let storage = Arc::new(SimStorage::new()); // `FsStorage` in production
/// let config = LogConfig { fsync: FsyncPolicy::Batch, ..LogConfig::default() };
///
/// let (mut log, recovered) = ShardLog::open(storage.clone(), "/data/shard-000", config.clone())?;
/// assert_eq!(recovered.replay()?.count(), 0); // a new log: nothing to replay
///
/// let seqs = log.append(&[RecordRef::new("orders", b"one"), RecordRef::new("orders", b"two")])?;
/// assert_eq!(seqs, Seq(0)..Seq(2));
/// log.commit()?; // durable from here on
/// log.checkpoint(Seq(0))?; // the handlers are done with record 0
/// drop(log); // a crash
///
/// let (log, recovered) = ShardLog::open(storage, "/data/shard-000", config)?;
/// let replay: Vec<_> = recovered.replay()?.collect::<Result<_, _>>()?;
/// assert_eq!((replay.len(), replay[0].seq, &replay[0].payload[..]), (1, Seq(1), &b"two"[..]));
/// assert_eq!(log.next_seq(), Seq(2));
/// log.close()?;
/// # Ok(()) }
/// ```
///
/// Public only with the `test-util` feature (tests, benchmarks, fuzzing); not a stable API.
#[derive(Debug)]
pub struct ShardLog {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    config: LogConfig,
    /// Full segments, oldest first.
    closed: VecDeque<SegmentMeta>,
    active: SegmentWriter,
    next_seq: Seq,
    /// The last checkpoint made durable (loaded at open or written by `checkpoint`).
    checkpoint: Option<Seq>,
    /// Encoding buffer, reused across batches.
    buf: Vec<u8>,
    /// Offsets in `buf` of records whose CRC is not filled in yet (sealed in `flush`).
    unsealed: Vec<usize>,
    /// When the oldest unsynced bytes of the active segment were written.
    dirty_since: Option<Instant>,
    /// Why the log is poisoned.
    poisoned: Option<Arc<LogError>>,
    /// Every record before this one is known to be durable.
    durable_end: Seq,
    /// The background sync thread, once started ([`ShardLog::start_syncer`]).
    syncer: Option<Syncer>,
    /// Sync tickets handed out and not yet seen finished, with `next_seq` at the request.
    sync_ends: VecDeque<(u64, Seq)>,
    /// Bytes written to the segments since the log was opened (for metrics).
    appended: u64,
    /// Told the time of every `sync_data` of the active segment, on whichever thread ran
    /// it (for metrics; see [`ShardLog::observe_fsync`]).
    fsync_observer: Option<SyncObserver>,
}

impl ShardLog {
    /// Opens the shard log in `dir`, creating the directory if missing, and recovers it (see
    /// [`recover`]). Returns the log, positioned after the last valid record, and what recovery
    /// found, for replay.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
        config: LogConfig,
    ) -> Result<(ShardLog, Recovered), LogError> {
        config.validate()?;
        let dir = dir.into();
        storage
            .create_dir_all(&dir)
            .map_err(|e| LogError::io(IoOp::CreateDir, &dir, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            storage
                .sync_dir(parent)
                .map_err(|e| LogError::io(IoOp::SyncDir, parent, e))?;
        }
        let recovered = recover(Arc::clone(&storage), &dir, config.recovery_options())?;
        let mut closed: VecDeque<SegmentMeta> = recovered.segments.iter().cloned().collect();
        let mut active = match closed.pop_back() {
            Some(meta) => SegmentWriter::open(&*storage, meta)?,
            None => SegmentWriter::create(&*storage, &dir, recovered.next_seq())?,
        };
        active.preallocate(config.segment_size);
        let log = ShardLog {
            storage,
            dir,
            closed,
            next_seq: recovered.next_seq(),
            checkpoint: recovered.checkpoint(),
            active,
            buf: Vec::new(),
            unsealed: Vec::new(),
            dirty_since: None,
            poisoned: None,
            durable_end: recovered.next_seq(),
            syncer: None,
            sync_ends: VecDeque::new(),
            appended: 0,
            fsync_observer: None,
            config,
        };
        Ok((log, recovered))
    }

    /// Appends a batch of records in one write (several if the batch crosses a segment
    /// boundary) and returns the sequence numbers they got. Durability follows the
    /// [`FsyncPolicy`]: with `Batch` or `Interval`, call [`ShardLog::commit`] next.
    ///
    /// Every record is checked first ([`LogError::RecordTooLarge`], [`LogError::TopicTooLong`]);
    /// if one fails, nothing is written and the log stays usable. An I/O error poisons the log;
    /// some of the batch may then be on disk, and recovery decides.
    pub fn append(&mut self, records: &[RecordRef<'_>]) -> Result<Range<Seq>, LogError> {
        self.append_iter(records.iter().copied())
    }

    /// [`ShardLog::append`] for records given by an iterator (walked twice: once to check
    /// every record, once to write), so a caller can append from its own reusable buffers
    /// without collecting a slice of [`RecordRef`]s.
    pub fn append_iter<'a, I>(&mut self, records: I) -> Result<Range<Seq>, LogError>
    where
        I: Iterator<Item = RecordRef<'a>> + Clone,
    {
        self.check_poisoned()?;
        for rec in records.clone() {
            record::check_len(&rec, self.config.max_record_size)?;
        }
        let start = self.next_seq;
        let result = self.write_batch(records);
        self.guard(result)?;
        Ok(start..self.next_seq)
    }

    /// Appends records already framed in `frames`, without copying them again: each was
    /// written by [`record::begin_frame`], its payload and [`record::finish_frame`], back
    /// to back from offset 0, numbered from [`next_seq`](Self::next_seq) on, stamped
    /// `timestamp_nanos` and checked against the maximum record size by the caller;
    /// `starts` holds their offsets. Seals them (the CRCs) in place and writes them,
    /// rolling segments and syncing as [`append`](Self::append) does.
    pub(crate) fn append_frames(
        &mut self,
        frames: &mut [u8],
        starts: &[usize],
        timestamp_nanos: u64,
    ) -> Result<Range<Seq>, LogError> {
        self.check_poisoned()?;
        let start = self.next_seq;
        let result = self.write_frames(frames, starts, timestamp_nanos);
        self.guard(result)?;
        Ok(start..self.next_seq)
    }

    /// Whether every appended record has been synced (`sync_data` returned since the last
    /// append). After a `commit` under `Interval` this says whether the sync was due.
    pub fn is_synced(&self) -> bool {
        self.dirty_since.is_none()
    }

    /// When a `commit` under [`FsyncPolicy::Interval`] will next sync: `None` if nothing
    /// is unsynced or the policy is not `Interval`.
    pub fn sync_due_at(&self) -> Option<Instant> {
        match self.config.fsync {
            FsyncPolicy::Interval(every) => self.dirty_since.map(|t| t + every),
            _ => None,
        }
    }

    /// Makes appended records durable as the [`FsyncPolicy`] requires: `Batch` syncs if anything
    /// is unsynced, `Interval` if the oldest unsynced record is old enough, `Never` and `Always`
    /// do nothing.
    pub fn commit(&mut self) -> Result<(), LogError> {
        self.check_poisoned()?;
        let due = match self.config.fsync {
            FsyncPolicy::Never | FsyncPolicy::Always => false,
            FsyncPolicy::Batch => true,
            FsyncPolicy::Interval(every) => self.dirty_since.is_some_and(|t| t.elapsed() >= every),
        };
        if due {
            let result = self.sync_active();
            self.guard(result)?;
        }
        Ok(())
    }

    /// Syncs every appended record now, whatever the policy (`sync_data` of the active segment).
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.check_poisoned()?;
        self.settle()?;
        let result = self.sync_active();
        self.guard(result)
    }

    /// [`LogError::CheckpointOutOfRange`] unless `seq` is a record of the log.
    fn check_checkpoint_range(&self, seq: Seq) -> Result<(), LogError> {
        if seq >= self.next_seq || seq.next() < self.first_seq() {
            return Err(LogError::CheckpointOutOfRange {
                path: self.dir.clone(),
                checkpoint: seq,
                first_seq: self.first_seq(),
                next_seq: self.next_seq,
            });
        }
        Ok(())
    }

    /// Durably records that every handler has finished every record up to and including `seq`.
    /// Syncs the log first, so the checkpoint never points past the durable end of the log.
    ///
    /// [`LogError::CheckpointOutOfRange`] if `seq` was never appended or is before the log's
    /// first record.
    pub fn checkpoint(&mut self, seq: Seq) -> Result<(), LogError> {
        self.check_poisoned()?;
        self.check_checkpoint_range(seq)?;
        // No checkpoint write of the sync thread may run beside this one.
        self.settle()?;
        let result = if seq < self.durable_end {
            Ok(())
        } else {
            self.sync_active()
        }
        .and_then(|()| checkpoint::store_checkpoint(&*self.storage, &self.dir, seq));
        self.guard(result)?;
        self.checkpoint = Some(seq);
        Ok(())
    }

    /// Starts the background sync thread ([`syncer`](self::syncer)): from now on
    /// [`ShardLog::request_sync`] and [`ShardLog::checkpoint_async`] hand their work to it.
    /// Returns `false` (and changes nothing) if the storage cannot clone a file handle or
    /// the thread cannot be started; the log then works on the caller's thread as before.
    /// The thread is named `thread_name` (at most 15 bytes on Linux).
    pub(crate) fn start_syncer(&mut self, thread_name: String) -> bool {
        if self.syncer.is_some() {
            return true;
        }
        let Ok(file) = self.active.try_clone_file() else {
            return false;
        };
        match Syncer::start(
            Arc::clone(&self.storage),
            self.dir.clone(),
            file,
            self.active.meta.path.clone(),
            thread_name,
            self.fsync_observer.clone(),
        ) {
            Ok(syncer) => {
                self.syncer = Some(syncer);
                true
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "no background sync thread; syncing on the shard thread");
                false
            }
        }
    }

    /// With the sync thread: asks it to sync everything appended so far and returns the
    /// ticket to wait for ([`ShardLog::poll_synced`]); `None` if nothing is unsynced.
    /// Without it: syncs now and returns `None`.
    pub(crate) fn request_sync(&mut self) -> Result<Option<u64>, LogError> {
        self.check_poisoned()?;
        if self.durable_end >= self.next_seq && self.dirty_since.is_none() {
            return Ok(None);
        }
        let Some(syncer) = self.syncer.as_mut() else {
            self.sync()?;
            return Ok(None);
        };
        let ticket = syncer.request_sync();
        self.sync_ends.push_back((ticket, self.next_seq));
        Ok(Some(ticket))
    }

    /// The last sync ticket known finished, after waiting for `wait_for` if given. Takes
    /// note of what the sync thread finished (durable end, checkpoint written); its error
    /// poisons the log.
    pub(crate) fn poll_synced(&mut self, wait_for: Option<u64>) -> Result<u64, LogError> {
        self.check_poisoned()?;
        let Some(syncer) = self.syncer.as_mut() else {
            return Ok(0);
        };
        let result = match wait_for {
            Some(ticket) => syncer.wait_synced(ticket),
            None => syncer.poll(),
        };
        let progress = self.guard(result)?;
        self.note_progress(progress);
        Ok(progress.synced)
    }

    /// Writes the checkpoint `seq` on the sync thread, after syncing the log if `seq` is not
    /// yet known durable; [`ShardLog::last_checkpoint`] says `seq` once the thread has
    /// written it (seen by a later [`ShardLog::poll_synced`]). Without the sync thread, this
    /// is [`ShardLog::checkpoint`].
    pub(crate) fn checkpoint_async(&mut self, seq: Seq) -> Result<(), LogError> {
        if self.syncer.is_none() {
            return self.checkpoint(seq);
        }
        self.check_poisoned()?;
        self.check_checkpoint_range(seq)?;
        let after = if seq < self.durable_end {
            0
        } else {
            self.request_sync()?.unwrap_or(0)
        };
        if let Some(syncer) = self.syncer.as_mut() {
            syncer.request_checkpoint(seq, after);
        }
        Ok(())
    }

    /// Waits for every request to the sync thread to finish and takes note of it.
    fn settle(&mut self) -> Result<(), LogError> {
        self.wait_for(Syncer::wait_idle)
    }

    /// With the sync thread: waits until the last roll is done and takes note of it.
    fn wait_rolled(&mut self) -> Result<(), LogError> {
        self.wait_for(Syncer::wait_rolled)
    }

    /// With the sync thread: waits as `wait` does, takes note of what the thread finished;
    /// its error poisons the log.
    fn wait_for(
        &mut self,
        wait: fn(&mut Syncer) -> Result<syncer::Progress, LogError>,
    ) -> Result<(), LogError> {
        let Some(syncer) = self.syncer.as_mut() else {
            return Ok(());
        };
        let result = wait(syncer);
        let progress = self.guard(result)?;
        self.note_progress(progress);
        Ok(())
    }

    fn note_progress(&mut self, progress: syncer::Progress) {
        while let Some(&(ticket, end)) = self.sync_ends.front() {
            if ticket > progress.synced {
                break;
            }
            self.durable_end = self.durable_end.max(end);
            self.sync_ends.pop_front();
        }
        if self.durable_end >= self.next_seq {
            self.dirty_since = None;
        }
        if let Some(c) = progress.checkpoint {
            self.checkpoint = Some(self.checkpoint.map_or(c, |old| old.max(c)));
        }
    }

    /// Deletes the oldest segments while the log is beyond `limit`, returning their paths.
    ///
    /// Only full segments (never the one being appended to, nor, while a roll is in flight, the
    /// newest full one: recovery takes in a segment under its temporary name only where it
    /// continues one) whose records are all at or below both `checkpoint` and the last durable
    /// checkpoint are deleted, oldest first, stopping at the first that is not, so the log
    /// stays contiguous and replay from the durable checkpoint stays possible. A segment goes
    /// if the log's total size exceeds `limit.max_bytes` or its newest record is older than
    /// `limit.max_age`. The directory is synced after each removal.
    pub fn retain(
        &mut self,
        checkpoint: Seq,
        limit: RetentionLimit,
    ) -> Result<Vec<PathBuf>, LogError> {
        self.check_poisoned()?;
        let Some(durable) = self.checkpoint else {
            return Ok(Vec::new());
        };
        let handled_end = checkpoint.min(durable).next();
        let now = record::now_nanos();
        let max_age = limit
            .max_age
            .map(|a| u64::try_from(a.as_nanos()).unwrap_or(u64::MAX));
        let mut total = self.size_bytes();
        let mut removed = Vec::new();
        let keep = usize::from(self.syncer.as_ref().is_some_and(Syncer::rolling));
        while let Some(seg) = self.closed.front().filter(|_| self.closed.len() > keep) {
            let over_size = limit.max_bytes.is_some_and(|max| total > max);
            let too_old = match (max_age, seg.max_timestamp_nanos) {
                (Some(age), Some(newest)) => now.saturating_sub(newest) > age,
                _ => false,
            };
            if seg.end_seq > handled_end || !(over_size || too_old) {
                break;
            }
            let (path, bytes) = (seg.path.clone(), seg.bytes);
            let result = self
                .storage
                .remove_file(&path)
                .map_err(|e| LogError::io(IoOp::Remove, &path, e))
                .and_then(|()| {
                    self.storage
                        .sync_dir(&self.dir)
                        .map_err(|e| LogError::io(IoOp::SyncDir, &self.dir, e))
                });
            self.guard(result)?;
            self.closed.pop_front();
            total -= bytes;
            removed.push(path);
        }
        Ok(removed)
    }

    /// Syncs what is left and closes the log.
    pub fn close(mut self) -> Result<(), LogError> {
        self.sync()
    }

    /// A [`Reader`] over this log from `from` on (it sees records appended so far).
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))] // test-util API
    pub fn reader(&self, from: Seq) -> Result<Reader, LogError> {
        Ok(
            Reader::open(Arc::clone(&self.storage), self.dir.clone(), from)?
                .max_record_size(self.config.max_record_size),
        )
    }

    /// The sequence number the next appended record gets.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))] // test-util API
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// The first sequence number still in the log.
    pub fn first_seq(&self) -> Seq {
        self.closed
            .front()
            .map_or(self.active.meta.first_seq, |s| s.first_seq)
    }

    /// The last durable checkpoint.
    pub fn last_checkpoint(&self) -> Option<Seq> {
        self.checkpoint
    }

    /// Total bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        self.closed.iter().map(|s| s.bytes).sum::<u64>() + self.active.meta.bytes
    }

    /// Bytes written to the segments since the log was opened.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn appended_bytes(&self) -> u64 {
        self.appended
    }

    /// From now on `observer` is told the time of every `sync_data` of the active segment,
    /// on the thread that ran it (this one or the log's sync thread). Not directory syncs
    /// or checkpoint writes.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn observe_fsync(&mut self, observer: SyncObserver) {
        if let Some(syncer) = self.syncer.as_mut() {
            syncer.set_observer(observer.clone());
        }
        self.fsync_observer = Some(observer);
    }

    /// Paths of all segment files, oldest first; the last is being appended to.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))] // test-util API
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.closed
            .iter()
            .chain([&self.active.meta])
            .map(|s| s.path.clone())
            .collect()
    }

    /// The shard directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Whether an earlier failure poisoned the log.
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))] // test-util API
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    fn sync_active(&mut self) -> Result<(), LogError> {
        // The active segment may still be under its temporary name: a sync of it proves
        // nothing until the roll is done.
        self.wait_rolled()?;
        if self.dirty_since.is_some() {
            let active = &mut self.active;
            timed(self.fsync_observer.as_ref(), || active.sync())?;
            self.dirty_since = None;
            self.durable_end = self.next_seq;
        }
        Ok(())
    }

    /// Starts a new segment at `next_seq`. Only the last segment can ever have a torn tail:
    /// without the sync thread, the full segment is synced here first; with it, the new one
    /// is started under its temporary name and the thread syncs the full one and then
    /// renames it into place (see `syncer.rs`, **roll**), off this thread.
    fn roll(&mut self) -> Result<(), LogError> {
        if self.syncer.is_none() {
            self.sync_active()?;
            let mut next = SegmentWriter::create(&*self.storage, &self.dir, self.next_seq)?;
            next.preallocate(self.config.segment_size);
            let full = std::mem::replace(&mut self.active, next);
            self.closed.push_back(full.meta);
            return Ok(());
        }
        // One roll in flight at most: recovery then has at most one segment to take in.
        self.wait_rolled()?;
        let (mut next, tmp) =
            SegmentWriter::create_pending(&*self.storage, &self.dir, self.next_seq)?;
        next.preallocate(self.config.segment_size);
        let file = next.try_clone_file()?;
        if let Some(syncer) = self.syncer.as_mut() {
            let ticket = syncer.request_roll(file, tmp, next.meta.path.clone());
            self.sync_ends.push_back((ticket, self.next_seq));
        }
        let full = std::mem::replace(&mut self.active, next);
        self.closed.push_back(full.meta);
        Ok(())
    }

    fn check_poisoned(&self) -> Result<(), LogError> {
        match &self.poisoned {
            Some(cause) => Err(LogError::Poisoned {
                path: self.dir.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Poisons the log if `result` is an error: the log keeps the error (the cause of its
    /// later `Poisoned` errors) and the caller gets a copy.
    fn guard<T>(&mut self, result: Result<T, LogError>) -> Result<T, LogError> {
        match result {
            Err(e) if self.poisoned.is_none() => {
                let copy = e.duplicate();
                self.poisoned = Some(Arc::new(e));
                Err(copy)
            }
            result => result,
        }
    }

    /// The error that poisoned the log, if one has.
    pub(crate) fn poison_cause(&self) -> Option<&Arc<LogError>> {
        self.poisoned.as_ref()
    }
}

#[path = "shard_log_write.rs"]
mod write;

#[cfg(test)]
#[path = "shard_log_tests.rs"]
mod tests;
