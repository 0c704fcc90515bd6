//! The log's configuration: `LogConfig`, its [`FsyncPolicy`], and the [`RetentionLimit`]
//! that the log applies after a checkpoint.

use std::time::Duration;

use super::error::LogError;
use super::record;
use super::recover::RecoveryOptions;
use super::segment::HEADER_LEN;
#[cfg(doc)]
use super::ShardLog;

/// Default segment size ([`Persistence::segment_size`](crate::Persistence::segment_size)):
/// 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Default maximum record size
/// ([`Persistence::max_record_size`](crate::Persistence::max_record_size)): 16 MiB.
pub const DEFAULT_MAX_RECORD_SIZE: u32 = 16 << 20;

/// When the log calls `sync_data`, and so what survives a crash.
///
/// A *process crash* (panic, kill, OOM) never loses an appended record under any policy:
/// the log's append (one per drained batch) hands its bytes to the operating system before it
/// returns, and the page
/// cache outlives the process. *Power loss* (or a kernel crash) loses whatever was not synced.
/// What is lost is always a suffix of the log: a segment is synced before the next one is
/// part of the log (started after it, or, with the log's sync thread, renamed into place
/// after it), recovery takes in a segment left in the middle of a roll only if it continues
/// the log, and it cuts a torn tail. Under every policy the log also syncs at each segment
/// roll and before writing a checkpoint, so a durable checkpoint never points past the
/// durable end of the log.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// Never sync for durability: only at segment roll and before a checkpoint. Power loss may
    /// lose every record appended since the last of those (the OS writes dirty pages back on
    /// its own schedule, which promises nothing).
    Never,
    /// The log's commit (after each appended batch) syncs everything appended so far. After
    /// the commit returns,
    /// every record appended before it survives power loss; records appended after the last
    /// successful commit may be lost. Group commit: one sync per batch.
    #[default]
    Batch,
    /// The log's commit syncs only once the oldest unsynced record was appended at least this
    /// long ago. Power loss may lose the records appended since the last sync: at most this
    /// duration's worth plus the time between two commits (there is no background thread:
    /// with no commit, nothing is synced).
    Interval(Duration),
    /// The log's append writes and syncs each record before the next one, and returns once
    /// the last is durable: nothing an append returned `Ok` for is lost to power loss; of a
    /// batch cut short by it, a prefix survives. One write and one `fdatasync` per record.
    Always,
}

/// Configuration of a [`ShardLog`].
///
/// Public only with the `test-util` feature (tests, benchmarks, fuzzing); not a stable API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A new segment is started before a record that would make the current one larger than
    /// this (a segment always takes at least one record). Default 64 MiB; must exceed 16.
    pub segment_size: u64,
    /// Largest encoded record, 8-byte frame header included. Default 16 MiB; at least 26. Never
    /// lower it below what an existing log was written with: recovery would call it corrupt.
    pub max_record_size: u32,
    /// When to sync.
    pub fsync: FsyncPolicy,
    /// See [`RecoveryOptions::truncate_on_corruption`]. Default `false`.
    pub truncate_on_corruption: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_size: DEFAULT_SEGMENT_SIZE,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            fsync: FsyncPolicy::default(),
            truncate_on_corruption: false,
        }
    }
}

impl LogConfig {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), LogError> {
        if self.segment_size <= HEADER_LEN {
            return Err(LogError::InvalidConfig {
                reason: "segment_size must exceed the 16-byte segment header",
            });
        }
        if (self.max_record_size as usize) < record::MIN_RECORD_LEN {
            return Err(LogError::InvalidConfig {
                reason: "max_record_size must be at least 26 bytes (an empty record)",
            });
        }
        Ok(())
    }

    /// The recovery options this configuration implies.
    pub fn recovery_options(&self) -> RecoveryOptions {
        RecoveryOptions {
            truncate_on_corruption: self.truncate_on_corruption,
            max_record_size: self.max_record_size,
        }
    }
}

/// When the log deletes old segments (wholly below the checkpoint, after a checkpoint).
/// `None` means no limit of that kind.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionLimit {
    /// Delete while the log's total size is above this many bytes.
    pub max_bytes: Option<u64>,
    /// Delete segments whose newest record timestamp is older than this.
    pub max_age: Option<Duration>,
}
