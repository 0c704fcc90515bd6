//! The persistence log: its on-disk format, its errors, and a read-only view of it.
//!
//! A persistent bus ([`Builder::persist`](crate::Builder::persist)) writes each shard's
//! messages to that shard's log in its own directory (`DIR/gen-G/shard-NNN/`). This module is
//! what a program outside the bus needs to look at those logs, without writing:
//!
//! - [`Reader`] streams the records of a shard log from a sequence number on, validating
//!   every one ([`Record`], [`Seq`]);
//! - [`inspect`] reports on every segment and the checkpoint of a shard log, and
//!   [`inspect_bus`] on every shard log of a bus directory ([`ShardReport`],
//!   [`SegmentInfo`], [`BusReport`]); damage is reported, never repaired;
//! - [`LogError`] (with [`IoOp`] and [`CorruptReason`]) is every error the log returns;
//! - [`Storage`] is the file access the log goes through ([`FsStorage`], the real
//!   filesystem, by default), and [`FsyncPolicy`] and [`RetentionLimit`] configure the
//!   log through [`Persistence`](crate::Persistence).
//!
//! A reader may run while the bus writes (it reads what is there and stops at a torn tail).
//!
//! ```no_run
//! use std::path::Path;
//! use shardbus::log::{inspect_bus, FsStorage, Reader, Seq};
//!
//! # fn main() -> Result<(), shardbus::log::LogError> {
//! let dir = Path::new("/var/lib/app/bus"); // the `Persistence` directory
//! if let Some(bus) = inspect_bus(&FsStorage, dir)? {
//!     println!("{} shards, generation {}, clean: {}", bus.shards, bus.generation, bus.is_clean());
//!     for log in &bus.logs {
//!         for record in Reader::open(std::sync::Arc::new(FsStorage), &log.dir, Seq(0))? {
//!             let record = record?;
//!             println!("{} {} {} bytes", record.seq, record.topic, record.payload.len());
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The log's engine itself (the shard's `ShardLog`, `recover`, `read_meta`, the simulated
//! `SimStorage`) is public only with the `test-util` feature, for tests, benchmarks and
//! fuzzing; it is not a stable API.
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
//! All file access goes through the [`Storage`] trait: [`FsStorage`] for the real filesystem;
//! with the `test-util` feature, `SimStorage` simulates power loss and injects faults.

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

pub use config::{FsyncPolicy, RetentionLimit, DEFAULT_MAX_RECORD_SIZE, DEFAULT_SEGMENT_SIZE};
pub use error::{CorruptReason, IoOp, LogError};
pub use meta::META_FILE;
pub(crate) use meta::{parse_generation_name, write_meta};
pub use reader::{inspect, inspect_bus, BusReport, Reader, SegmentInfo, ShardReport};
pub(crate) use record::now_nanos;
pub(crate) use record::{begin_frame, finish_frame, frame_is, split_partition, PART_MARK};
pub use record::{Record, Seq, MIN_RECORD_LEN};
pub use storage::{DirLock, FsStorage, Storage, StorageFile, LOCK_FILE};

// The log's engine: public with `test-util` (tests, benchmarks, fuzzing), crate-private
// without it. Not a stable API.
#[cfg(all(test, not(feature = "test-util")))]
pub(crate) use storage::SimStorage;
#[cfg_attr(not(feature = "metrics"), allow(unused_imports))]
pub(crate) use syncer::SyncObserver;
#[cfg(not(feature = "test-util"))]
#[allow(unused_imports)]
pub(crate) use {
    checkpoint::load_checkpoint,
    config::LogConfig,
    meta::{read_meta, BusMeta},
    record::RecordRef,
    recover::{recover, Recovered, RecoveryOptions, RecoveryReport, Truncation},
    shard_log::ShardLog,
};
#[cfg(feature = "test-util")]
pub use {
    checkpoint::load_checkpoint,
    config::LogConfig,
    meta::{read_meta, BusMeta},
    record::RecordRef,
    recover::{recover, Recovered, RecoveryOptions, RecoveryReport, Truncation},
    shard_log::ShardLog,
    storage::SimStorage,
};
