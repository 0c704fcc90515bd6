//! Opt-in persistence: the configuration, and opening a bus directory at `build()`
//! (its layout file, recovery of every shard's log, resharding).
//!
//! A persistent bus keeps `DIR/meta` (shard count and generation, see `log::meta`) and
//! one log per shard in `DIR/gen-G/shard-NNN/`. At `build()`:
//!
//! 1. `meta` is read (or written, for a new directory); generations other than the
//!    current one are leftovers of an interrupted reshard and are removed.
//! 2. If the recorded shard count differs from the bus's, or a record after a shard's
//!    checkpoint has a topic that the current mapping routes elsewhere (the hash
//!    changed), the unfinished records are resharded (below), or, with
//!    [`OnShardCountChange::Error`], `build()` fails with
//!    [`Error::ShardCountMismatch`].
//! 3. Every shard's log is opened and recovered; the shard thread replays the records
//!    after its checkpoint to the builder's subscriptions before taking any new message.
//!
//! Resharding is crash-safe: the unfinished records of every old shard (those after its
//! checkpoint) are appended, in old-shard and then sequence order, to the log of the
//! shard the current mapping gives their topic, in a new generation directory; every new
//! log is synced; `meta` is switched to the new generation atomically (temp file, sync,
//! rename, directory sync); only then is the old generation removed. A crash before the
//! switch leaves the old generation current (the half-written new one is removed at the
//! next start, which reshards again); a crash after it leaves the new one current (the
//! old one is removed at the next start). A topic's records all come from one old shard
//! (the one the old mapping gave it), so per-topic order is kept. The handled history
//! before each checkpoint is not carried over: a [`Reader`](crate::log::Reader) of the new
//! generation starts at its first unfinished record.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::log::{
    self, parse_generation_name, read_meta, recover, write_meta, BusMeta, CorruptReason, FsStorage,
    FsyncPolicy, IoOp, LogConfig, LogError, Recovered, RetentionLimit, ShardLog, Storage,
};
use crate::route::Router;
use crate::sync::plain::Arc;

/// What `build()` does when the bus directory was written with another shard count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnShardCountChange {
    /// Re-route every unfinished record into a new layout with the current shard count
    /// (crash-safe; see [`Persistence`]). The default.
    #[default]
    Reshard,
    /// Fail with [`Error::ShardCountMismatch`] and change nothing.
    Error,
}

/// Configuration of a persistent bus: see [`Builder::persist`](crate::Builder::persist).
///
/// ```
/// use shardbus::log::FsyncPolicy;
/// use shardbus::Persistence;
/// use std::time::Duration;
///
/// let p = Persistence::new("/var/lib/app/bus")
///     .fsync(FsyncPolicy::Batch)
///     .segment_size(16 << 20)
///     .checkpoint_every(1_000, Duration::from_millis(200));
/// # let _ = p;
/// ```
#[derive(Debug, Clone)]
pub struct Persistence {
    pub(crate) dir: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) log: LogConfig,
    pub(crate) retention: RetentionLimit,
    pub(crate) checkpoint_records: u64,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) on_shard_count_change: OnShardCountChange,
}

/// Default [`Persistence::retention`]: each shard keeps at most 1 GiB of handled log.
pub const DEFAULT_RETENTION_BYTES: u64 = 1 << 30;

impl Persistence {
    /// Persistence in the bus directory `dir` (created if missing), with the defaults:
    /// [`FsyncPolicy::Batch`], 64 MiB segments, 16 MiB largest record, a checkpoint every
    /// 10 000 records or 1 s, retention of 1 GiB per shard, corruption is an error, and
    /// [`OnShardCountChange::Reshard`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            storage: Arc::new(FsStorage),
            log: LogConfig::default(),
            retention: RetentionLimit {
                max_bytes: Some(DEFAULT_RETENTION_BYTES),
                max_age: None,
            },
            checkpoint_records: 10_000,
            checkpoint_interval: Duration::from_secs(1),
            on_shard_count_change: OnShardCountChange::default(),
        }
    }

    /// When the log syncs; see [`FsyncPolicy`] and `docs/persistence.md` for what each
    /// policy promises after a process crash and after power loss.
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.log.fsync = policy;
        self
    }

    /// Segment file size (a new segment starts before a record that would pass it).
    /// Default 64 MiB.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.log.segment_size = bytes;
        self
    }

    /// The largest encoded record (26 bytes of framing plus topic plus payload). A message
    /// whose record would be larger goes to the dead-letter handler
    /// ([`DeadLetterReason::NotLogged`](crate::DeadLetterReason::NotLogged)). Default
    /// 16 MiB. Never lower it below what an existing log was written with.
    pub fn max_record_size(mut self, bytes: u32) -> Self {
        self.log.max_record_size = bytes;
        self
    }

    /// When handled segments are deleted (checked after each checkpoint). Only whole
    /// segments wholly at or below the checkpoint go, oldest first, and never the one
    /// being written. Default: beyond 1 GiB per shard. `RetentionLimit::default()` keeps
    /// everything.
    pub fn retention(mut self, limit: RetentionLimit) -> Self {
        self.retention = limit;
        self
    }

    /// How often each shard writes its checkpoint (the sequence number up to which every
    /// handler has finished): after `records` more records were handled, or `interval`
    /// after the last checkpoint if any record was handled since, and at clean shutdown.
    /// Everything after the checkpoint is replayed at the next start. Default 10 000
    /// records or 1 s.
    pub fn checkpoint_every(mut self, records: u64, interval: Duration) -> Self {
        self.checkpoint_records = records.max(1);
        self.checkpoint_interval = interval;
        self
    }

    /// Whether recovery cuts the log at damage before its end (dropping that record and
    /// everything after it, reported in a `tracing` warning) instead of failing `build()`
    /// with [`LogError::Corrupt`]. Default `false`. A torn tail (an interrupted last write)
    /// is always cut.
    pub fn truncate_on_corruption(mut self, truncate: bool) -> Self {
        self.log.truncate_on_corruption = truncate;
        self
    }

    /// What to do when the directory was written with another shard count. Default
    /// [`OnShardCountChange::Reshard`].
    pub fn on_shard_count_change(mut self, action: OnShardCountChange) -> Self {
        self.on_shard_count_change = action;
        self
    }

    /// The storage the log goes through. Default [`FsStorage`](crate::log::FsStorage), the
    /// real filesystem; tests pass a [`SimStorage`](crate::log::SimStorage) to simulate
    /// power loss and inject faults.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// The bus directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Opens the bus directory for `shards` shards: each shard's log and what recovery found.
pub(crate) fn open(
    p: &Persistence,
    shards: usize,
    router: &Router,
) -> Result<Vec<(ShardLog, Recovered)>, Error> {
    p.log.validate()?;
    let storage = &*p.storage;
    let dir = &p.dir;
    storage
        .create_dir_all(dir)
        .map_err(|e| LogError::io(IoOp::CreateDir, dir, e))?;
    let generations = list_generations(storage, dir)?;
    let meta = match read_meta(storage, dir)? {
        Some(meta) => meta,
        None if generations.is_empty() => {
            let meta = BusMeta {
                shards: shards as u32,
                generation: 0,
            };
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                storage
                    .sync_dir(parent)
                    .map_err(|e| LogError::io(IoOp::SyncDir, parent, e))?;
            }
            write_meta(storage, dir, meta)?;
            meta
        }
        None => {
            return Err(LogError::Corrupt {
                path: dir.join(log::META_FILE),
                offset: 0,
                reason: CorruptReason::MissingMeta,
            }
            .into())
        }
    };
    // Leftovers of an interrupted reshard: a new generation never switched to, or an
    // old one not yet removed.
    let mut removed = false;
    for g in generations.iter().filter(|g| **g != meta.generation) {
        let path = log::BusMeta {
            generation: *g,
            ..meta
        }
        .generation_dir(dir);
        storage
            .remove_dir_all(&path)
            .map_err(|e| LogError::io(IoOp::Remove, &path, e))?;
        removed = true;
    }
    if removed {
        storage
            .sync_dir(dir)
            .map_err(|e| LogError::io(IoOp::SyncDir, dir, e))?;
    }
    let meta = if meta.shards as usize != shards {
        if p.on_shard_count_change == OnShardCountChange::Error {
            return Err(Error::ShardCountMismatch {
                found: meta.shards as usize,
                expected: shards,
            });
        }
        reshard(p, meta, shards, router)?
    } else {
        meta
    };
    let logs = open_logs(p, meta, shards)?;
    if !misrouted(&logs, router)? {
        return Ok(logs);
    }
    // Same count, but the topic → shard function changed (another build of the hasher):
    // re-route too, never replay one topic on two shards.
    drop(logs);
    let meta = reshard(p, meta, shards, router)?;
    open_logs(p, meta, shards)
}

fn open_logs(
    p: &Persistence,
    meta: BusMeta,
    shards: usize,
) -> Result<Vec<(ShardLog, Recovered)>, Error> {
    let mut logs = Vec::with_capacity(shards);
    for i in 0..shards {
        let (log, recovered) =
            ShardLog::open(p.storage.clone(), meta.shard_dir(&p.dir, i), p.log.clone())?;
        report_recovery(&recovered, i);
        logs.push((log, recovered));
    }
    Ok(logs)
}

/// Whether a record after some shard's checkpoint is routed elsewhere now.
fn misrouted(logs: &[(ShardLog, Recovered)], router: &Router) -> Result<bool, Error> {
    for (i, (_, r)) in logs.iter().enumerate() {
        for rec in r.replay()? {
            let rec = rec?;
            if router.key(&rec.topic).map(|k| router.shard_of_key(&k).0) != Some(i) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn report_recovery(r: &Recovered, shard: usize) {
    let report = r.report();
    if report.torn_bytes > 0 {
        tracing::warn!(
            shard,
            torn_bytes = report.torn_bytes,
            torn_records = report.torn_records,
            "recovery cut a torn tail (an interrupted write)"
        );
    }
    if let Some(t) = &report.truncated {
        tracing::warn!(
            shard,
            path = %t.path.display(),
            offset = t.offset,
            reason = %t.reason,
            first_dropped_seq = t.first_dropped_seq.get(),
            dropped_bytes = t.dropped_bytes,
            "recovery truncated a corrupt log (truncate_on_corruption)"
        );
    }
}

fn list_generations(storage: &dyn Storage, dir: &Path) -> Result<Vec<u64>, Error> {
    let names = storage
        .list_subdirs(dir)
        .map_err(|e| LogError::io(IoOp::ListDir, dir, e))?;
    Ok(names
        .iter()
        .filter_map(|n| n.to_str().and_then(parse_generation_name))
        .collect())
}

/// Recovers old shard `i`'s log; a shard directory that was never created is empty.
fn recover_old(p: &Persistence, dir: PathBuf) -> Result<Option<Recovered>, Error> {
    match recover(p.storage.clone(), dir, p.log.recovery_options()) {
        Ok(r) => Ok(Some(r)),
        Err(LogError::DirNotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Moves every unfinished record into a new generation with `shards` shards; returns the
/// new layout. See the module docs for the crash-safety argument.
fn reshard(
    p: &Persistence,
    old: BusMeta,
    shards: usize,
    router: &Router,
) -> Result<BusMeta, Error> {
    let storage = &*p.storage;
    let dir = &p.dir;
    let new = BusMeta {
        shards: shards as u32,
        generation: old.generation + 1,
    };
    // Appending is only to logs nobody reads yet: no need to sync before the end.
    let config = LogConfig {
        fsync: FsyncPolicy::Never,
        ..p.log.clone()
    };
    let mut logs = Vec::with_capacity(shards);
    for j in 0..shards {
        logs.push(ShardLog::open(p.storage.clone(), new.shard_dir(dir, j), config.clone())?.0);
    }
    let mut moved = 0u64;
    for i in 0..old.shards as usize {
        let old_dir = old.shard_dir(dir, i);
        let Some(r) = recover_old(p, old_dir.clone())? else {
            continue;
        };
        for rec in r.replay()? {
            let rec = rec?;
            let Some(key) = router.key(&rec.topic) else {
                return Err(Error::Decode {
                    path: old_dir,
                    seq: rec.seq,
                    source: crate::DecodeError::new(format!(
                        "invalid topic name of {} bytes",
                        rec.topic.len()
                    )),
                });
            };
            logs[router.shard_of_key(&key).0].append(&[rec.as_record_ref()])?;
            moved += 1;
        }
    }
    for log in logs {
        log.close()?;
    }
    write_meta(storage, dir, new)?;
    let old_gen = old.generation_dir(dir);
    storage
        .remove_dir_all(&old_gen)
        .map_err(|e| LogError::io(IoOp::Remove, &old_gen, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| LogError::io(IoOp::SyncDir, dir, e))?;
    tracing::warn!(
        from_shards = old.shards,
        to_shards = shards,
        generation = new.generation,
        records = moved,
        "resharded the persistent log"
    );
    Ok(new)
}
