//! Error types.
//!
//! Hot-path errors ([`PublishError`], [`TryPublishError`]) give the message back, and
//! their `Debug` does not require `T: Debug`. Setup errors are one [`Error`] enum;
//! storage errors are [`LogError`] (inside [`Error::Log`]), whose distinct
//! [`LogError::Corrupt`] carries the file and byte offset of damage.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::log::Seq;

/// An error from building the bus or from a control operation (subscribe, unsubscribe).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was asked for zero shards.
    #[error("shard count must be at least 1")]
    ZeroShards,
    /// More shards were requested than the runtime supports.
    #[error("shard count {requested} exceeds the maximum of {max}")]
    TooManyShards {
        /// The requested count.
        requested: usize,
        /// The largest count accepted.
        max: usize,
    },
    /// An inbox or lane capacity that is zero, not a power of two, or too large.
    #[error("{what} capacity {capacity} must be a power of two between 2 and {max}")]
    InvalidCapacity {
        /// Which capacity (`"inbox"` or `"lane"`).
        what: &'static str,
        /// The rejected value.
        capacity: usize,
        /// The largest value accepted.
        max: usize,
    },
    /// A topic name that is empty or longer than [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN) bytes.
    #[error("invalid topic name (length {len}): topic names are 1..={max} bytes")]
    InvalidTopic {
        /// The byte length of the rejected name.
        len: usize,
        /// The largest length accepted.
        max: usize,
    },
    /// A subscription id that this bus did not hand out.
    #[error("unknown subscription {0:?}")]
    UnknownSubscription(crate::SubscriptionId),
    /// The bus is shutting down or has shut down.
    #[error("the bus is closed")]
    Closed,
    /// The persistent log failed: bad or damaged files (a distinct
    /// [`LogError::Corrupt`] with the file and byte offset), an I/O error with its path,
    /// an unusable directory.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The bus directory was written with another shard count and the bus was built with
    /// [`OnShardCountChange::Error`](crate::OnShardCountChange::Error).
    #[error("the log directory holds {found} shards but the bus was built with {expected}")]
    ShardCountMismatch {
        /// The shard count recorded in the directory.
        found: usize,
        /// The shard count of the bus being built.
        expected: usize,
    },
    /// A record to replay does not decode as the bus's message type (or its topic is not
    /// a valid topic name). Nothing is skipped: the bus does not start.
    #[error("record {seq} in {} does not decode: {source}", path.display())]
    Decode {
        /// The shard log directory.
        path: PathBuf,
        /// The record's sequence number.
        seq: Seq,
        /// What the codec said.
        #[source]
        source: crate::DecodeError,
    },
    /// A shard thread could not be spawned.
    #[error("could not spawn shard thread {shard}: {source}")]
    Spawn {
        /// The shard whose thread failed to start.
        shard: usize,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// The error of a blocking publish: the bus is closed, or the topic is invalid. The
/// message is given back.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum PublishError<T> {
    /// The bus is shutting down or has shut down; the message was not accepted.
    Closed(T),
    /// The topic name is empty or longer than [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN).
    InvalidTopic(T),
}

/// The error of a non-blocking publish. The message is given back.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum TryPublishError<T> {
    /// The target inbox is full right now.
    Full(T),
    /// The bus is shutting down or has shut down; the message was not accepted.
    Closed(T),
    /// The topic name is empty or longer than [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN).
    InvalidTopic(T),
}

/// The error of [`Bus::publish_durable`](crate::Bus::publish_durable) and
/// [`Publisher::publish_durable`](crate::Publisher::publish_durable). Every variant but
/// `Unconfirmed` gives the message back: it was not accepted.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum DurableError<T> {
    /// The bus is shutting down or has shut down, or the target shard's log has failed
    /// (see [`Bus::log_error`](crate::Bus::log_error)) and its intake is closed.
    Closed(T),
    /// The topic name is empty or longer than [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN).
    InvalidTopic(T),
    /// The bus was built without [`Builder::persist`](crate::Builder::persist).
    NotPersistent(T),
    /// The message was accepted, but the shard stopped before confirming its record
    /// durable: its log failed (an fsync error poisons it), or a deadline shutdown
    /// dropped it. The record may or may not be in the log; if it is, it is replayed at
    /// the next start. It was not handled in this process.
    Unconfirmed,
}

impl<T> DurableError<T> {
    /// Takes the message back, if it was not accepted.
    pub fn into_inner(self) -> Option<T> {
        match self {
            Self::Closed(t) | Self::InvalidTopic(t) | Self::NotPersistent(t) => Some(t),
            Self::Unconfirmed => None,
        }
    }
}

impl<T> fmt::Debug for DurableError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed(_) => f.write_str("Closed(..)"),
            Self::InvalidTopic(_) => f.write_str("InvalidTopic(..)"),
            Self::NotPersistent(_) => f.write_str("NotPersistent(..)"),
            Self::Unconfirmed => f.write_str("Unconfirmed"),
        }
    }
}

impl<T> fmt::Display for DurableError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed(_) => f.write_str("publishing on a closed bus or a failed shard log"),
            Self::InvalidTopic(_) => f.write_str("invalid topic name"),
            Self::NotPersistent(_) => f.write_str("durable publish on a memory-only bus"),
            Self::Unconfirmed => {
                f.write_str("the shard stopped before confirming the record durable")
            }
        }
    }
}

impl<T> std::error::Error for DurableError<T> {}

impl<T> PublishError<T> {
    /// Takes the message back.
    pub fn into_inner(self) -> T {
        match self {
            Self::Closed(t) | Self::InvalidTopic(t) => t,
        }
    }
}

impl<T> TryPublishError<T> {
    /// Takes the message back.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(t) | Self::Closed(t) | Self::InvalidTopic(t) => t,
        }
    }

    /// Whether the inbox was full.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full(_))
    }

    /// Whether the bus was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed(_))
    }
}

impl<T> From<PublishError<T>> for TryPublishError<T> {
    fn from(e: PublishError<T>) -> Self {
        match e {
            PublishError::Closed(t) => Self::Closed(t),
            PublishError::InvalidTopic(t) => Self::InvalidTopic(t),
        }
    }
}

impl<T> fmt::Debug for PublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed(_) => f.write_str("Closed(..)"),
            Self::InvalidTopic(_) => f.write_str("InvalidTopic(..)"),
        }
    }
}

impl<T> fmt::Debug for TryPublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::Closed(_) => f.write_str("Closed(..)"),
            Self::InvalidTopic(_) => f.write_str("InvalidTopic(..)"),
        }
    }
}

impl<T> fmt::Display for PublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed(_) => f.write_str("publishing on a closed bus"),
            Self::InvalidTopic(_) => f.write_str("invalid topic name"),
        }
    }
}

impl<T> fmt::Display for TryPublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("publishing into a full inbox"),
            Self::Closed(_) => f.write_str("publishing on a closed bus"),
            Self::InvalidTopic(_) => f.write_str("invalid topic name"),
        }
    }
}

impl<T> std::error::Error for PublishError<T> {}
impl<T> std::error::Error for TryPublishError<T> {}

/// Every error the persistence log can return.
///
/// `Corrupt` is the only variant that means "the bytes on disk are not what the writer wrote";
/// the header variants (`BadMagic`, `UnsupportedVersion`, `TruncatedHeader`) mean "this is not a
/// segment (or checkpoint) this code can read" and are never "repaired" by truncation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// An operating-system call failed. If it happened while writing, the log is now poisoned.
    #[error("{op} failed on {}: {source}", path.display())]
    Io {
        /// What the log was doing.
        op: IoOp,
        /// The file or directory it was doing it to.
        path: PathBuf,
        /// The error the operating system (or the storage) returned.
        #[source]
        source: io::Error,
    },
    /// The shard directory does not exist (only returned by operations that do not create it).
    #[error("log directory {} does not exist", path.display())]
    DirNotFound {
        /// The missing directory.
        path: PathBuf,
    },
    /// Bytes on disk fail validation at a known place.
    #[error("corrupt log file {} at byte {offset}: {reason}", path.display())]
    Corrupt {
        /// The segment (or checkpoint) file.
        path: PathBuf,
        /// Byte offset inside `path` of the first damaged record (or field).
        offset: u64,
        /// What exactly failed.
        reason: CorruptReason,
    },
    /// The file does not start with the expected magic bytes.
    #[error("{} is not a shardbus log file: magic {found:02x?}", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The 8 bytes found where the magic should be.
        found: [u8; 8],
    },
    /// The file was written in a format version this code cannot read.
    #[error("{} has unsupported format version {version}", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version byte found.
        version: u8,
    },
    /// The file is shorter than its fixed-size header.
    #[error("{} is {len} bytes, shorter than its header", path.display())]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
    },
    /// A record to append is larger than the configured maximum. Nothing of the batch was written.
    #[error("record of {size} bytes exceeds the maximum record size of {max} bytes")]
    RecordTooLarge {
        /// Encoded size of the record (frame header included).
        size: u64,
        /// The configured maximum.
        max: u32,
    },
    /// A record's topic is longer than the format's 16-bit length field allows.
    #[error("topic of {len} bytes exceeds {} bytes", u16::MAX)]
    TopicTooLong {
        /// Length of the topic in bytes.
        len: usize,
    },
    /// The checkpoint does not lie inside the log: beyond its end, or before its first record
    /// (records needed for replay are missing).
    #[error(
        "checkpoint {checkpoint} in {} is outside the log (first seq {first_seq}, next seq {next_seq})",
        path.display()
    )]
    CheckpointOutOfRange {
        /// The checkpoint file, or the shard directory when checking a requested checkpoint.
        path: PathBuf,
        /// The checkpoint sequence number.
        checkpoint: Seq,
        /// The first sequence number still in the log.
        first_seq: Seq,
        /// The sequence number the next appended record will get.
        next_seq: Seq,
    },
    /// A reader asked for records that retention already deleted.
    #[error("seq {requested} is no longer in {} (first seq {first_seq})", path.display())]
    SeqUnavailable {
        /// The shard directory.
        path: PathBuf,
        /// The requested sequence number.
        requested: Seq,
        /// The first sequence number still in the log.
        first_seq: Seq,
    },
    /// A configuration value is out of range.
    #[error("invalid log configuration: {reason}")]
    InvalidConfig {
        /// Which rule was broken.
        reason: &'static str,
    },
    /// An earlier write or sync failed; the log accepts nothing until it is reopened (and
    /// recovered). Retrying a failed fsync is unsafe: the kernel may have dropped the dirty pages
    /// and cleared the error.
    #[error("log {} is poisoned by an earlier failure: {cause}", path.display())]
    Poisoned {
        /// The shard directory.
        path: PathBuf,
        /// The message of the error that poisoned the log.
        cause: String,
    },
}

impl LogError {
    /// Builds an [`LogError::Io`]; used as `.map_err(|e| LogError::io(op, path, e))`.
    pub(crate) fn io(op: IoOp, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// The operation an [`LogError::Io`] failed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoOp {
    /// Creating the shard directory.
    CreateDir,
    /// Listing the shard directory.
    ListDir,
    /// Creating (or truncating) a file.
    Create,
    /// Opening a file for appending or reading.
    Open,
    /// Reading a file.
    Read,
    /// Appending to a file.
    Append,
    /// `fdatasync` of a file.
    SyncData,
    /// `fsync` of a directory.
    SyncDir,
    /// Renaming a file.
    Rename,
    /// Removing a file.
    Remove,
    /// Truncating a file.
    Truncate,
    /// Reading a file's length.
    Len,
}

impl fmt::Display for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoOp::CreateDir => "create dir",
            IoOp::ListDir => "list dir",
            IoOp::Create => "create",
            IoOp::Open => "open",
            IoOp::Read => "read",
            IoOp::Append => "append",
            IoOp::SyncData => "sync_data",
            IoOp::SyncDir => "sync dir",
            IoOp::Rename => "rename",
            IoOp::Remove => "remove",
            IoOp::Truncate => "truncate",
            IoOp::Len => "stat",
        })
    }
}

/// Why bytes were judged corrupt (the `reason` of [`LogError::Corrupt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptReason {
    /// A reserved header byte is not zero.
    ReservedHeaderBytes,
    /// Fewer than the 8 bytes of a record's `len` and `crc` fields remain.
    TruncatedFrame {
        /// Bytes left in the file.
        available: u64,
    },
    /// The `len` field is below the minimum body size or above the maximum record size.
    InvalidLength {
        /// The `len` field.
        len: u32,
    },
    /// The `len` field points past the end of the file.
    TruncatedRecord {
        /// The `len` field.
        len: u32,
        /// Bytes after the `crc` field left in the file.
        available: u64,
    },
    /// The CRC32C over the record body does not match its `crc` field.
    CrcMismatch {
        /// The `crc` field.
        stored: u32,
        /// The CRC computed over the bytes read.
        computed: u32,
    },
    /// The record's CRC is valid but its topic length overruns the body or the topic is not UTF-8.
    BadTopic,
    /// A record's sequence number does not continue its predecessor's (gap or reorder).
    SeqMismatch {
        /// The sequence number that had to come next.
        expected: Seq,
        /// The sequence number found.
        found: Seq,
    },
    /// A segment's name (its first sequence number) does not continue the previous segment.
    SegmentSeqMismatch {
        /// The sequence number the previous segment ends before.
        expected: Seq,
        /// The first sequence number in this segment's name.
        found: Seq,
    },
    /// A segment's name says it starts at or beyond [`Seq::LIMIT`](crate::log::Seq::LIMIT),
    /// which no log reaches.
    SeqOutOfRange {
        /// The first sequence number in the segment's name.
        found: Seq,
    },
    /// The file became shorter while it was being read.
    UnexpectedEof,
    /// The checkpoint file does not have the fixed checkpoint size.
    CheckpointLength {
        /// Its length in bytes.
        len: u64,
    },
    /// The bus directory's `meta` file does not have its fixed size.
    MetaLength {
        /// Its length in bytes.
        len: u64,
    },
    /// The bus directory holds shard logs (`gen-*` directories) but no `meta` file saying
    /// which of them is current.
    MissingMeta,
}

impl fmt::Display for CorruptReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptReason::ReservedHeaderBytes => f.write_str("reserved header byte is not zero"),
            CorruptReason::TruncatedFrame { available } => {
                write!(f, "record frame cut short: only {available} bytes left")
            }
            CorruptReason::InvalidLength { len } => write!(f, "invalid record length {len}"),
            CorruptReason::TruncatedRecord { len, available } => write!(
                f,
                "record length {len} runs past the end of the file ({available} bytes left)"
            ),
            CorruptReason::CrcMismatch { stored, computed } => write!(
                f,
                "crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            CorruptReason::BadTopic => f.write_str("topic overruns the record or is not UTF-8"),
            CorruptReason::SeqMismatch { expected, found } => {
                write!(f, "sequence gap: expected seq {expected}, found {found}")
            }
            CorruptReason::SegmentSeqMismatch { expected, found } => write!(
                f,
                "segment starts at seq {found} but the previous segment ends before {expected}"
            ),
            CorruptReason::SeqOutOfRange { found } => write!(
                f,
                "segment starts at seq {found}, at or beyond the limit of 2^63"
            ),
            CorruptReason::UnexpectedEof => f.write_str("file shrank while being read"),
            CorruptReason::CheckpointLength { len } => {
                write!(f, "checkpoint file is {len} bytes")
            }
            CorruptReason::MetaLength { len } => write!(f, "meta file is {len} bytes"),
            CorruptReason::MissingMeta => {
                f.write_str("shard logs without a meta file naming the current generation")
            }
        }
    }
}
