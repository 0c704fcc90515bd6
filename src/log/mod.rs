//! The per-shard persistence log.
//!
//! Each shard owns one [`ShardLog`] in its own directory (`DIR/gen-G/shard-NNN/`). The shard loop:
//!
//! 1. **open**: [`ShardLog::open`] creates the directory if needed, recovers the log (validates
//!    every record, cuts a torn tail) and returns a [`Recovered`];
//! 2. **replay**: [`Recovered::replay`] streams the records after the checkpoint to the handlers;
//! 3. **append + commit**: each drained batch is [`ShardLog::append`]ed (one write), then
//!    [`ShardLog::commit`] syncs it as the [`FsyncPolicy`] says, before the handlers run;
//! 4. **checkpoint**: now and then, [`ShardLog::checkpoint`] records how far every handler got,
//!    and [`ShardLog::retain`] deletes old segments wholly below it;
//! 5. **close**: [`ShardLog::close`] syncs what is left.
//!
//! ```
//! use std::sync::Arc;
//! use shardbus::log::{FsyncPolicy, LogConfig, RecordRef, Seq, ShardLog, SimStorage};
//!
//! # fn main() -> Result<(), shardbus::log::LogError> {
//! let storage = Arc::new(SimStorage::new()); // `FsStorage` in production
//! let config = LogConfig { fsync: FsyncPolicy::Batch, ..LogConfig::default() };
//!
//! let (mut log, recovered) = ShardLog::open(storage.clone(), "/data/shard-000", config.clone())?;
//! assert_eq!(recovered.replay()?.count(), 0); // a new log: nothing to replay
//!
//! let seqs = log.append(&[RecordRef::new("orders", b"one"), RecordRef::new("orders", b"two")])?;
//! assert_eq!(seqs, Seq(0)..Seq(2));
//! log.commit()?; // durable from here on
//! log.checkpoint(Seq(0))?; // the handlers are done with record 0
//! drop(log); // a crash
//!
//! let (log, recovered) = ShardLog::open(storage, "/data/shard-000", config)?;
//! let replay: Vec<_> = recovered.replay()?.collect::<Result<_, _>>()?;
//! assert_eq!((replay.len(), replay[0].seq, &replay[0].payload[..]), (1, Seq(1), &b"two"[..]));
//! assert_eq!(log.next_seq(), Seq(2));
//! log.close()?;
//! # Ok(()) }
//! ```
//!
//! # On disk
//!
//! A shard directory holds segment files named by their first sequence number, zero-padded to
//! 20 digits (`00000000000000000000.log`), and a `checkpoint` file. A segment is a 16-byte
//! header (`b"SHBUSLOG"`, version byte 1, 7 reserved zero bytes) followed by records:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `len`: u32 LE, bytes after the `crc` field |
//! | 4 | 4 | `crc`: u32 LE, CRC32C of the `len` bytes after it |
//! | 8 | 8 | `seq`: u64 LE |
//! | 16 | 8 | `timestamp_nanos`: u64 LE, since the UNIX epoch |
//! | 24 | 2 | `topic_len`: u16 LE |
//! | 26 | `topic_len` | topic, UTF-8 |
//! | 26 + `topic_len` | rest | payload |
//!
//! `docs/persistence.md` has the full format, the checkpoint and meta files and the recovery
//! rules.
//!
//! # Storage
//!
//! All file access goes through the [`Storage`] trait: [`FsStorage`] for the real filesystem,
//! [`SimStorage`] to simulate power loss and inject faults in tests.

#![forbid(unsafe_code)]

mod checkpoint;
mod config;
mod error;
mod meta;
mod reader;
mod record;
mod recover;
mod scanner;
mod segment;
mod shard_log;
mod small_file;
mod storage;
mod syncer;

pub use checkpoint::load_checkpoint;
pub use config::{
    FsyncPolicy, LogConfig, RetentionLimit, DEFAULT_MAX_RECORD_SIZE, DEFAULT_SEGMENT_SIZE,
};
pub use error::{CorruptReason, IoOp, LogError};
pub(crate) use meta::{parse_generation_name, write_meta};
pub use meta::{read_meta, BusMeta, META_FILE};
pub use reader::{inspect, Reader, SegmentInfo, ShardReport};
pub(crate) use record::now_nanos;
pub use record::{Record, RecordRef, Seq, MIN_RECORD_LEN};
pub use recover::{recover, Recovered, RecoveryOptions, RecoveryReport, Truncation};
pub use shard_log::ShardLog;
pub use storage::{DirLock, FsStorage, SimStorage, Storage, StorageFile, LOCK_FILE};
#[cfg_attr(not(feature = "metrics"), allow(unused_imports))]
pub(crate) use syncer::SyncObserver;
