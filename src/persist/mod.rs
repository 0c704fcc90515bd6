//! Opt-in persistence: the public configuration ([`Persistence`],
//! [`OnShardCountChange`]), opening a bus directory at `build()` (`open.rs`: its layout
//! file, recovery of every shard's log, resharding) and a persistent shard's write-ahead
//! state (`wal/`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::log::{FsStorage, FsyncPolicy, LogConfig, RetentionLimit, Storage};
use crate::sync::plain::Arc;

mod open;
pub(crate) mod wal;

pub(crate) use open::open;

/// What `build()` does when the bus directory was written with another shard count.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnShardCountChange {
    /// Re-route every unfinished record into a new layout with the current shard count
    /// (crash-safe; see [`Persistence`]). The default.
    #[default]
    Reshard,
    /// Fail with [`Error::ShardCountMismatch`](crate::Error::ShardCountMismatch) and change nothing.
    Error,
}

/// Configuration of a persistent bus: see [`Builder::persist`](crate::Builder::persist).
///
/// # One bus per directory
///
/// A bus directory belongs to one bus at a time. `build()` locks it before reading
/// anything in it, and a second bus on a directory in use, in this process or another,
/// fails to build with [`Error::DirectoryLocked`](crate::Error::DirectoryLocked) (two
/// writers would give the log two histories under the same sequence numbers). On the real
/// filesystem the lock is a `flock(2)` on the file `DIR/lock` (Unix; created empty and
/// left in place, its existence means nothing); the [`storage`](Self::storage) decides
/// ([`Storage::lock_dir`]). The bus holds it until its shard threads have closed their
/// logs: through [`Bus::shutdown`](crate::Bus::shutdown) or drop of the bus, and at once
/// when `build()` fails. A shard thread still running after
/// [`Bus::shutdown_timeout`](crate::Bus::shutdown_timeout) (a handler that never returns)
/// keeps it until it exits. The kernel drops it with a process that dies, however it
/// dies, so a crash leaves no stale lock. Readers ([`Reader`](crate::log::Reader),
/// `shardbus inspect`) take no lock and may read a directory in use.
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

    /// The largest encoded record (26 bytes of framing plus topic plus payload). A durable
    /// publish of a message whose record would be larger is refused with the message
    /// ([`DurableError::TooLarge`](crate::DurableError::TooLarge); the message is encoded
    /// on the publishing thread to know); a plain publish of it is accepted and the
    /// message then goes to the dead-letter handler
    /// ([`DeadLetterReason::NotLogged`](crate::DeadLetterReason::NotLogged)), never to the
    /// log. Default 16 MiB. Never lower it below what an existing log was written with.
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
    /// with [`LogError::Corrupt`](crate::LogError::Corrupt). Default `false`. A torn tail (an interrupted last write)
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
    /// real filesystem; tests pass a `SimStorage` (with the `test-util` feature) to
    /// simulate power loss and inject faults. The storage also locks the directory
    /// ([`Storage::lock_dir`]; see [One bus per directory](Self#one-bus-per-directory)).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// The bus directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
