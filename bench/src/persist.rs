//! The persistent-log benchmarks: the [`Codec`] of [`BenchMsg`], the options that make
//! [`runner`](crate::runner) build a persistent bus, the physical limit
//! ([`raw_append`]: the same record bytes appended in the same batch sizes with one
//! `sync_data` per batch), the floor of the `Never` policy ([`raw_buffered_append`]: the same
//! records framed, checksummed and written in the same batch sizes, no sync) and recovery speed ([`recovery`]: replay of a large log at `build()`).
//!
//! Every run gets a fresh directory under the one the caller names ([`ScratchDir`]), removed
//! when the run ends, so repetitions never see each other's logs.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardbus::log::{FsyncPolicy, RetentionLimit};
use shardbus::{Bus, Codec, Context, DecodeError, EncodeError, Persistence};

use crate::harness::Error;
use crate::workload::{topic_name, BenchMsg};

/// Bytes of a log record besides its topic and payload: the 8-byte frame (length, CRC32C) and
/// the 18 fixed body bytes (sequence, timestamp, topic length); see `docs/persistence.md`.
pub const RECORD_OVERHEAD: usize = shardbus::log::MIN_RECORD_LEN;

/// The most records a persistent shard drains from one input into one write-ahead batch (one
/// append, one commit): `LOG_BATCH` in `src/shard.rs`, so the raw baseline's batch under
/// [`FsyncPolicy::Batch`].
pub const SHARD_BATCH: usize = 1024;

/// How many records a persistent bus handles between two checkpoints by default
/// ([`Persistence::checkpoint_every`]); each checkpoint syncs the log first, whatever the
/// fsync policy.
pub const CHECKPOINT_RECORDS: u64 = 10_000;

/// Fixed fields of an encoded [`BenchMsg`]: producer (2), topic (4), seq (8), sent_at (8).
const FIXED: usize = 22;

/// Little-endian, fixed size: `FIXED + N` bytes; `encode` only appends to the shard's buffer
/// and never fails (`CAN_FAIL = false`: no encoding on the publishing thread).
impl<const N: usize> Codec for BenchMsg<N> {
    const CAN_FAIL: bool = false;

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(&self.producer.to_le_bytes());
        out.extend_from_slice(&self.topic.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.sent_at.to_le_bytes());
        out.extend_from_slice(&self.payload);
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != encoded_len(N) {
            return Err(DecodeError::new(format_args!(
                "BenchMsg<{N}> is {} bytes, got {}",
                encoded_len(N),
                bytes.len()
            )));
        }
        let field = |at: usize, len: usize| &bytes[at..at + len];
        let u64_at = |at| u64::from_le_bytes(field(at, 8).try_into().unwrap_or([0; 8]));
        let mut payload = [0; N];
        payload.copy_from_slice(&bytes[FIXED..]);
        Ok(Self {
            producer: u16::from_le_bytes([bytes[0], bytes[1]]),
            topic: u32::from_le_bytes(field(2, 4).try_into().unwrap_or([0; 4])),
            seq: u64_at(6),
            sent_at: u64_at(14),
            payload,
        })
    }
}

/// Encoded size of a `BenchMsg<payload>`: the log record's payload.
pub fn encoded_len(payload: usize) -> usize {
    FIXED + payload
}

/// Size of the log record of a `BenchMsg<payload>` on topic `topic`.
pub fn record_len(topic: &str, payload: usize) -> usize {
    RECORD_OVERHEAD + topic.len() + encoded_len(payload)
}

/// Makes [`runner`](crate::runner) build a persistent bus.
#[derive(Clone, Debug)]
pub struct PersistOpts {
    /// Each run's bus directory is a fresh directory under this one, removed after the run.
    pub dir: PathBuf,
    /// The log's fsync policy.
    pub fsync: FsyncPolicy,
}

/// A fresh directory under a parent, removed (with everything in it) on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates `parent/shardbus-bench-PID-N` (and `parent` if missing).
    pub fn new(parent: &Path) -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        fs::create_dir_all(parent)?;
        loop {
            // Relaxed: a unique counter, nothing is published through it.
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("shardbus-bench-{}-{n}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Self(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory is visible and harmless.
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Bus(format!("scratch directory: {e}"))
    }
}

/// What [`raw_append`] measured.
#[derive(Clone, Debug)]
pub struct RawResult {
    /// Records appended.
    pub records: u64,
    /// Bytes appended.
    pub bytes: u64,
    /// `sync_data` calls (one per batch).
    pub syncs: u64,
    /// First write to last sync returned.
    pub elapsed: Duration,
}

impl RawResult {
    /// Records per second.
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    /// Megabytes (10^6 B) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    /// Mean `sync_data` round (write + sync) in microseconds.
    pub fn us_per_batch(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / self.syncs.max(1) as f64
    }
}

/// The physical limit of the `Batch` policy: appends `records` records of `record_len` bytes
/// to one file in a fresh directory under `dir`, `batch` records per `write_all`, then one
/// `sync_data` per batch (what a shard does per drained batch under [`FsyncPolicy::Batch`]).
/// No checksums, no framing work, no threads: the disk and the kernel only.
pub fn raw_append(
    dir: &Path,
    record_len: usize,
    batch: usize,
    records: u64,
) -> Result<RawResult, Error> {
    if record_len == 0 || batch == 0 {
        return Err(Error::Opts("raw append needs record_len > 0 and batch > 0"));
    }
    let scratch = ScratchDir::new(dir)?;
    let mut file = File::create(scratch.path().join("raw.log"))?;
    // Non-zero bytes, like a record (the file system does not special-case zeros, but be fair).
    let buf: Vec<u8> = (0..record_len * batch)
        .map(|i| (i % 251) as u8 + 1)
        .collect();
    let (mut left, mut syncs, mut bytes) = (records, 0u64, 0u64);
    let start = Instant::now();
    while left > 0 {
        let n = left.min(batch as u64) as usize;
        file.write_all(&buf[..n * record_len])?;
        file.sync_data()?;
        syncs += 1;
        bytes += (n * record_len) as u64;
        left -= n as u64;
    }
    let elapsed = start.elapsed();
    Ok(RawResult {
        records,
        bytes,
        syncs,
        elapsed,
    })
}

/// What [`raw_buffered_append`] does per record inside the timed loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawWork {
    /// Encodes the message, frames it as a log record and computes its CRC32C, as a shard
    /// does under [`FsyncPolicy::Never`].
    Frame,
    /// Nothing: the framed bytes of one batch are built before timing and written again and
    /// again (the kernel and the page cache only).
    Bytes,
}

/// The floor of [`FsyncPolicy::Never`]: `records` log records of `BenchMsg<payload>` on
/// `topics` (round robin), appended to one file in a fresh directory under `dir` with one
/// `write_all` per `batch` records and no sync, on the calling thread.
///
/// With [`RawWork::Frame`] each record is built in the timed loop exactly as the log lays it
/// out (length, CRC32C, sequence, timestamp, topic, the [`Codec`] encoding of the message);
/// what differs from a persistent bus: no thread hand-off, no segment files, index or
/// checkpoint, one clock read per batch rather than per record, and the CRC of each record
/// computed on its own (`crc32c::crc32c`; the log runs three records side by side).
pub fn raw_buffered_append(
    dir: &Path,
    topics: &[String],
    payload: usize,
    batch: usize,
    records: u64,
    work: RawWork,
) -> Result<RawResult, Error> {
    let file = |scratch: &ScratchDir| Ok(File::create(scratch.path().join("raw.log"))?);
    match payload {
        16 => raw_buffered_append_n::<16>(dir, topics, batch, records, work, file, |_, _| Ok(())),
        256 => raw_buffered_append_n::<256>(dir, topics, batch, records, work, file, |_, _| Ok(())),
        n => Err(crate::WorkloadError::Payload(n).into()),
    }
}

mod synced;
pub use synced::raw_buffered_append_synced;
pub(crate) use synced::{SyncAsker, SyncBehind};

/// Wall-clock nanoseconds since the Unix epoch, as a log record's timestamp (0 before it).
pub(crate) fn wall_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Appends the log record of `msg` on `topic` with sequence number `seq` to `buf`.
pub(crate) fn frame_record<const N: usize>(
    buf: &mut Vec<u8>,
    seq: u64,
    nanos: u64,
    topic: &str,
    msg: &BenchMsg<N>,
) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]); // len and crc, filled in below
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&nanos.to_le_bytes());
    // Cannot truncate: bench topic names are a few bytes.
    buf.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    buf.extend_from_slice(topic.as_bytes());
    // Cannot fail: `BenchMsg`'s codec only appends.
    let _ = msg.encode(buf);
    let body = start + 8;
    // Cannot truncate: a record is a few hundred bytes.
    let len = (buf.len() - body) as u32;
    let crc = crc32c::crc32c(&buf[body..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..body].copy_from_slice(&crc.to_le_bytes());
}

/// The loop of [`raw_buffered_append`]: `open` creates the file in the scratch directory;
/// `wrote(file, records)` runs after each `write_all` with the records written so far.
fn raw_buffered_append_n<const N: usize>(
    dir: &Path,
    topics: &[String],
    batch: usize,
    records: u64,
    work: RawWork,
    open: impl FnOnce(&ScratchDir) -> Result<File, Error>,
    mut wrote: impl FnMut(&File, u64) -> Result<(), Error>,
) -> Result<RawResult, Error> {
    if topics.is_empty() || batch == 0 {
        return Err(Error::Opts(
            "raw buffered append needs topics and batch > 0",
        ));
    }
    let scratch = ScratchDir::new(dir)?;
    let mut file = open(&scratch)?;
    let mut seqs = vec![0u64; topics.len()];
    let mut next = |i: u64| {
        let t = (i % topics.len() as u64) as usize;
        let msg = BenchMsg::<N> {
            producer: 0,
            // Cannot truncate: workloads have at most u32::MAX topics.
            topic: t as u32,
            seq: seqs[t],
            sent_at: 0,
            payload: [0; N],
        };
        seqs[t] += 1;
        (t, msg)
    };
    let mut buf = Vec::with_capacity(batch * record_len(&topics[topics.len() - 1], N) * 2);
    // Bytes: one batch framed before timing, written again for every batch.
    let ready = match work {
        RawWork::Bytes => {
            let mut ready = Vec::new();
            for i in 0..batch as u64 {
                let (t, msg) = next(i);
                frame_record(&mut ready, i, wall_nanos(), &topics[t], &msg);
            }
            ready
        }
        RawWork::Frame => Vec::new(),
    };
    let (mut left, mut bytes, mut seq) = (records, 0u64, 0u64);
    let start = Instant::now();
    while left > 0 {
        let n = left.min(batch as u64);
        match work {
            RawWork::Frame => {
                buf.clear();
                let nanos = wall_nanos();
                for _ in 0..n {
                    let (t, msg) = next(seq);
                    frame_record(&mut buf, seq, nanos, &topics[t], &msg);
                    seq += 1;
                }
            }
            RawWork::Bytes => {
                // A full batch, or the first `n` records of one (round robin over the topics, so
                // every batch starts at topic 0; only the last batch may be short).
                let len = if n == batch as u64 {
                    ready.len()
                } else {
                    (0..n as usize)
                        .map(|i| record_len(&topics[i % topics.len()], N))
                        .sum()
                };
                buf.clear();
                buf.extend_from_slice(&ready[..len]);
            }
        }
        file.write_all(&buf)?;
        bytes += buf.len() as u64;
        left -= n;
        wrote(&file, records - left)?;
    }
    let elapsed = start.elapsed();
    Ok(RawResult {
        records,
        bytes,
        syncs: 0,
        elapsed,
    })
}

/// What [`recovery`] measured.
#[derive(Clone, Debug)]
pub struct RecoveryResult {
    /// Log bytes on disk before the timed `build()`.
    pub log_bytes: u64,
    /// Records written (and so to replay).
    pub records: u64,
    /// Records the handlers saw during `build()` (each with `is_replay()`).
    pub replayed: u64,
    /// Writing the log (publish with `FsyncPolicy::Never`, then shutdown).
    pub write: Duration,
    /// The timed `build()`: open, scan and CRC-check every segment, replay every record.
    pub build: Duration,
}

impl RecoveryResult {
    /// Records replayed per second of `build()`.
    pub fn records_per_sec(&self) -> f64 {
        self.replayed as f64 / self.build.as_secs_f64()
    }

    /// Log megabytes (10^6 B) recovered per second of `build()`.
    pub fn mb_per_sec(&self) -> f64 {
        self.log_bytes as f64 / self.build.as_secs_f64() / 1e6
    }
}

/// Recovery speed: writes about `bytes` of log (`BenchMsg<256>` records on `topics` topics,
/// `FsyncPolicy::Never`, no checkpoint until shutdown, nothing deleted by retention) with
/// `shards` shards in a fresh directory under `dir`, removes every shard's checkpoint (so the
/// whole log is unfinished), then times `build()` of a bus subscribed to every topic: recovery
/// scans and checks every record and replays them all before `build()` returns.
pub fn recovery(
    dir: &Path,
    bytes: u64,
    shards: usize,
    topics: usize,
) -> Result<RecoveryResult, Error> {
    const N: usize = 256;
    if topics == 0 {
        return Err(Error::Opts("recovery needs topics > 0"));
    }
    let scratch = ScratchDir::new(dir)?;
    let persistence = || {
        Persistence::new(scratch.path())
            .fsync(FsyncPolicy::Never)
            .retention(RetentionLimit::default())
            .checkpoint_every(u64::MAX, Duration::from_secs(1 << 30))
    };
    let names: Vec<String> = (0..topics).map(topic_name).collect();
    let mean_record = names.iter().map(|t| record_len(t, N)).sum::<usize>() as u64 / topics as u64;
    let records = bytes.div_ceil(mean_record).max(1);

    let write_start = Instant::now();
    let bus = Bus::<BenchMsg<N>>::builder()
        .shards(shards)
        .persist(persistence())
        .build()?;
    let handles = names
        .iter()
        .map(|n| bus.topic(n))
        .collect::<Result<Vec<_>, _>>()?;
    let mut publisher = bus.publisher();
    let mut seqs = vec![0u64; topics];
    for i in 0..records {
        let t = (i % topics as u64) as usize;
        let msg = BenchMsg {
            producer: 0,
            topic: t as u32,
            seq: seqs[t],
            sent_at: 0,
            payload: [0; N],
        };
        seqs[t] += 1;
        publisher
            .publish(handles[t], msg)
            .map_err(|_| Error::Opts("bus closed while writing the recovery log"))?;
    }
    drop(publisher);
    bus.shutdown();
    let write = write_start.elapsed();

    let (mut log_bytes, mut removed) = (0u64, 0usize);
    visit(scratch.path(), &mut |path, len| {
        if path.file_name().is_some_and(|n| n == "checkpoint") {
            fs::remove_file(path)?;
            removed += 1;
        } else if path.extension().is_some_and(|e| e == "log") {
            log_bytes += len;
        }
        Ok(())
    })?;
    if removed == 0 {
        return Err(Error::Opts("the recovery log has no checkpoint to remove"));
    }

    let replayed = Arc::new(AtomicU64::new(0));
    let mut builder = Bus::<BenchMsg<N>>::builder()
        .shards(shards)
        .persist(persistence());
    for name in &names {
        let replayed = replayed.clone();
        builder = builder.subscribe(
            name.as_str(),
            move |ctx: &mut Context<'_, BenchMsg<N>>, _msg: &BenchMsg<N>| {
                if ctx.is_replay() {
                    // Relaxed: a count read after `build()` returned, which joins the replay.
                    replayed.fetch_add(1, Ordering::Relaxed);
                }
            },
        );
    }
    let build_start = Instant::now();
    let bus = builder.build()?;
    let build = build_start.elapsed();
    bus.shutdown();
    Ok(RecoveryResult {
        log_bytes,
        records,
        // Relaxed: `shutdown` joined the shard threads.
        replayed: replayed.load(Ordering::Relaxed),
        write,
        build,
    })
}

/// Calls `f(path, len)` for every file under `dir`.
fn visit(dir: &Path, f: &mut dyn FnMut(&Path, u64) -> io::Result<()>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            visit(&entry.path(), f)?;
        } else {
            f(&entry.path(), meta.len())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trips() {
        let msg = BenchMsg::<16> {
            producer: 3,
            topic: 70_000,
            seq: u64::MAX - 1,
            sent_at: 12_345,
            payload: [7; 16],
        };
        let mut out = Vec::new();
        msg.encode(&mut out).unwrap();
        assert_eq!(out.len(), encoded_len(16));
        assert_eq!(BenchMsg::<16>::decode(&out), Ok(msg));
        assert!(BenchMsg::<16>::decode(&out[1..]).is_err());
    }

    #[test]
    fn raw_append_writes_every_record() {
        let parent = std::env::temp_dir().join("shardbus-bench-test-raw");
        let r = raw_append(&parent, 72, 10, 95).unwrap();
        assert_eq!((r.records, r.bytes, r.syncs), (95, 95 * 72, 10));
        assert_eq!(fs::read_dir(&parent).unwrap().count(), 0, "scratch removed");
    }

    /// Catches a floor whose records are not laid out as the log's (length, CRC32C of the body,
    /// sequence, topic, the codec's bytes) or whose two forms write different byte counts.
    #[test]
    fn raw_buffered_append_writes_log_records_and_the_same_bytes_either_way() {
        let parent = std::env::temp_dir().join("shardbus-bench-test-raw-buffered");
        let topics: Vec<String> = (0..3).map(topic_name).collect();
        let mean = topics.iter().map(|t| record_len(t, 16)).sum::<usize>() as u64;
        for work in [RawWork::Frame, RawWork::Bytes] {
            let r = raw_buffered_append(&parent, &topics, 16, 4, 9, work).unwrap();
            assert_eq!((r.records, r.bytes, r.syncs), (9, 3 * mean, 0), "{work:?}");
        }
        assert_eq!(fs::read_dir(&parent).unwrap().count(), 0, "scratch removed");
        let mut buf = Vec::new();
        let msg = BenchMsg::<16> {
            producer: 0,
            topic: 1,
            seq: 0,
            sent_at: 0,
            payload: [0; 16],
        };
        frame_record(&mut buf, 7, 9, "topic-1", &msg);
        assert_eq!(buf.len(), record_len("topic-1", 16));
        let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 8);
        let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&buf[8..]));
        assert_eq!(u64::from_le_bytes(buf[8..16].try_into().unwrap()), 7);
        assert_eq!(BenchMsg::<16>::decode(&buf[26 + 7..]), Ok(msg));
        assert!(raw_buffered_append(&parent, &topics, 17, 4, 9, RawWork::Frame).is_err());
        assert!(raw_buffered_append(&parent, &[], 16, 4, 9, RawWork::Frame).is_err());
    }

    #[test]
    fn recovery_replays_every_record() {
        let parent = std::env::temp_dir().join("shardbus-bench-test-recovery");
        let r = recovery(&parent, 1 << 20, 2, 8).unwrap();
        assert!(r.records > 3000, "{r:?}");
        assert_eq!(r.replayed, r.records);
        assert!(r.log_bytes >= 1 << 20, "{r:?}");
    }
}
