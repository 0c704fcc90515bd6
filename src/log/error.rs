//! The log's errors: [`LogError`], the operation an I/O error failed in ([`IoOp`]) and
//! why bytes were judged corrupt ([`CorruptReason`]). The crate's [`Error`](crate::Error)
//! wraps a `LogError` as [`Error::Log`](crate::Error::Log).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::sync::plain::Arc;

use super::record::Seq;

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
        /// The error that poisoned the log (also its [`source`](std::error::Error::source)),
        /// shared by every later `Poisoned` error of this log.
        #[source]
        cause: Arc<LogError>,
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

    /// A copy of this error, for returning it while the original is kept (a log keeps the
    /// error that poisoned it). An I/O error is copied with its kind and its OS error
    /// code, or with its kind and message when it has no code.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            LogError::Io { op, path, source } => LogError::Io {
                op: *op,
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
            LogError::DirNotFound { path } => LogError::DirNotFound { path: path.clone() },
            LogError::Corrupt {
                path,
                offset,
                reason,
            } => LogError::Corrupt {
                path: path.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            LogError::BadMagic { path, found } => LogError::BadMagic {
                path: path.clone(),
                found: *found,
            },
            LogError::UnsupportedVersion { path, version } => LogError::UnsupportedVersion {
                path: path.clone(),
                version: *version,
            },
            LogError::TruncatedHeader { path, len } => LogError::TruncatedHeader {
                path: path.clone(),
                len: *len,
            },
            LogError::RecordTooLarge { size, max } => LogError::RecordTooLarge {
                size: *size,
                max: *max,
            },
            LogError::TopicTooLong { len } => LogError::TopicTooLong { len: *len },
            LogError::CheckpointOutOfRange {
                path,
                checkpoint,
                first_seq,
                next_seq,
            } => LogError::CheckpointOutOfRange {
                path: path.clone(),
                checkpoint: *checkpoint,
                first_seq: *first_seq,
                next_seq: *next_seq,
            },
            LogError::SeqUnavailable {
                path,
                requested,
                first_seq,
            } => LogError::SeqUnavailable {
                path: path.clone(),
                requested: *requested,
                first_seq: *first_seq,
            },
            LogError::InvalidConfig { reason } => LogError::InvalidConfig { reason },
            LogError::Poisoned { path, cause } => LogError::Poisoned {
                path: path.clone(),
                cause: cause.clone(),
            },
        }
    }
}

/// The operation an [`LogError::Io`] failed in.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
    /// Taking a directory's lock ([`Storage::lock_dir`](crate::log::Storage::lock_dir)).
    Lock,
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
            IoOp::Lock => "lock",
        })
    }
}

/// Why bytes were judged corrupt (the `reason` of [`LogError::Corrupt`]).
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
