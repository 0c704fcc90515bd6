//! The fuzz input: a shard log written through `ShardLog` from fuzz-chosen records, then an
//! optional power loss, then fuzz-chosen damage to its files, all in a `SimStorage` (no disk
//! I/O). Starting from a valid log lets the fuzzer get past the magic bytes and CRCs and reach
//! the deep paths: torn tails, resync after a bad CRC, sequence gaps, the checkpoint range.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arbitrary::Arbitrary;
use shardbus::log::{
    FsyncPolicy, LogConfig, Record, RecordRef, RetentionLimit, Seq, ShardLog, SimStorage, Storage,
};

/// The shard directory every scenario writes.
pub const DIR: &str = "/fuzz/shard-000";
/// No damage makes a file longer than this (see [`crate::alloc_limit`]).
pub const MAX_FILE_LEN: usize = 256 << 10;
const MAX_RECORDS: usize = 48;
const MAX_TOPIC_LEN: usize = 24;
const MAX_PAYLOAD_LEN: usize = 200;

/// A record to append (topic and payload are clamped to keep a run fast).
#[derive(Debug, Clone, Arbitrary)]
pub struct Rec {
    timestamp_nanos: u64,
    topic: String,
    payload: Vec<u8>,
}

impl Rec {
    fn to_record(&self, seq: Seq) -> Record {
        let mut end = self.topic.len().min(MAX_TOPIC_LEN);
        while !self.topic.is_char_boundary(end) {
            end -= 1;
        }
        Record {
            seq,
            timestamp_nanos: self.timestamp_nanos,
            topic: self.topic[..end].to_owned(),
            payload: self.payload[..self.payload.len().min(MAX_PAYLOAD_LEN)].to_vec(),
        }
    }
}

/// The largest sequence number a scenario names: below `Seq::LIMIT` (2^63), at or beyond which
/// recovery calls a segment name corrupt (`CorruptReason::SeqOutOfRange`, covered by a unit
/// test in `src/log/recover.rs`), with room for the records a scenario appends.
pub const MAX_SEQ: u64 = (1 << 63) - (1 << 20);

/// A sequence number: mostly small (near the real ones), sometimes large.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum SeqPick {
    /// `0..=255`.
    Small(u8),
    /// Any value up to [`MAX_SEQ`] (larger ones are clamped).
    Any(u64),
}

impl SeqPick {
    /// The sequence number picked.
    pub fn get(self) -> Seq {
        match self {
            SeqPick::Small(s) => Seq(u64::from(s)),
            SeqPick::Any(s) => Seq(s.min(MAX_SEQ)),
        }
    }
}

/// A file name in the shard directory.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Name {
    /// `{seq:020}.log`
    Segment(SeqPick),
    /// `{seq:020}.log.tmp`, a leftover of an interrupted segment creation.
    SegmentTemp(SeqPick),
    /// `checkpoint`
    Checkpoint,
    /// `checkpoint.tmp`
    CheckpointTemp,
    /// A name the log does not own (it must ignore it).
    Other,
}

impl Name {
    fn path(self) -> PathBuf {
        Path::new(DIR).join(match self {
            Name::Segment(s) => format!("{:020}.log", s.get().get()),
            Name::SegmentTemp(s) => format!("{:020}.log.tmp", s.get().get()),
            Name::Checkpoint => "checkpoint".to_owned(),
            Name::CheckpointTemp => "checkpoint.tmp".to_owned(),
            Name::Other => "notes.txt".to_owned(),
        })
    }
}

/// One change to the shard directory after the log was written. `file` picks one of the files
/// present (sorted by name, modulo their number); offsets are taken modulo the file length.
#[derive(Debug, Clone, Arbitrary)]
pub enum Damage {
    /// XOR one byte with a non-zero mask.
    Flip { file: u8, at: u16, mask: u8 },
    /// Overwrite bytes in place (never past the end).
    Overwrite { file: u8, at: u16, bytes: Vec<u8> },
    /// Cut `cut` (modulo length + 1) bytes off the end.
    Truncate { file: u8, cut: u16 },
    /// Append zeros, as a filesystem leaves after extending a file whose data never landed.
    Zeros { file: u8, len: u16 },
    /// Append raw bytes.
    Append { file: u8, bytes: Vec<u8> },
    /// Append a well-formed record (valid length and CRC) with any sequence number.
    AppendRecord { file: u8, seq: SeqPick, rec: Rec },
    /// Remove a file.
    Remove { file: u8 },
    /// Rename a file (replacing any file of that name).
    Rename { file: u8, to: Name },
    /// Create (or replace) a file: the valid header of its kind if `header`, then `bytes`.
    Create {
        name: Name,
        header: bool,
        bytes: Vec<u8>,
    },
    /// Write a well-formed checkpoint file with any sequence number.
    Checkpoint(SeqPick),
}

/// The whole input: how the log is written, and what happens to it afterwards.
#[derive(Debug, Clone, Arbitrary)]
pub struct Scenario {
    /// Appended in batches of `batch % 8 + 1`, each committed.
    records: Vec<Rec>,
    batch: u8,
    /// `segment_size` is `17 + segment_room % 1024`: small, so logs have several segments.
    segment_room: u16,
    /// `FsyncPolicy::Never` instead of `Batch` (what a power loss keeps then differs).
    fsync_never: bool,
    /// Checkpoint the record at this index (modulo the record count).
    checkpoint: Option<u16>,
    /// After the checkpoint, `retain` down to this many bytes (deletes old segments).
    retain_bytes: Option<u16>,
    /// Power loss after writing (instead of a clean close), keeping this many bytes of each
    /// file's unsynced tail.
    crash: Option<Option<u16>>,
    /// Damage, applied in order.
    damage: Vec<Damage>,
}

/// A scenario written to storage, with what was written.
pub struct Built {
    /// The storage holding [`DIR`].
    pub sim: SimStorage,
    /// Every record appended, in order (`written[i].seq == Seq(i)`).
    pub written: Vec<Record>,
    /// The checkpoint written, if any.
    pub checkpoint: Option<Seq>,
    /// Whether every record written is durable: the log was closed cleanly, or each batch
    /// was committed under `FsyncPolicy::Batch` before the power loss. Otherwise a power loss
    /// keeps some prefix of the records.
    pub all_durable: bool,
    /// Whether any damage was applied.
    pub damaged: bool,
}

impl Scenario {
    /// Writes the log and applies the crash and the damage.
    pub fn build(&self) -> Built {
        let sim = SimStorage::new();
        let config = LogConfig {
            segment_size: 17 + u64::from(self.segment_room % 1024),
            fsync: if self.fsync_never {
                FsyncPolicy::Never
            } else {
                FsyncPolicy::Batch
            },
            ..LogConfig::default()
        };
        let (mut log, _) =
            ShardLog::open(Arc::new(sim.clone()), DIR, config).expect("a new log opens");
        let written: Vec<Record> = (0u64..)
            .zip(self.records.iter().take(MAX_RECORDS))
            .map(|(i, r)| r.to_record(Seq(i)))
            .collect();
        for batch in written.chunks(usize::from(self.batch % 8) + 1) {
            let refs: Vec<RecordRef<'_>> = batch.iter().map(Record::as_record_ref).collect();
            log.append(&refs).expect("append to SimStorage");
            log.commit().expect("commit to SimStorage");
        }
        let count = written.len() as u64;
        let checkpoint = self
            .checkpoint
            .filter(|_| count > 0)
            .map(|c| Seq(u64::from(c) % count));
        if let Some(c) = checkpoint {
            log.checkpoint(c).expect("checkpoint in range");
            if let Some(max_bytes) = self.retain_bytes {
                let limit = RetentionLimit {
                    max_bytes: Some(u64::from(max_bytes)),
                    max_age: None,
                };
                log.retain(c, limit).expect("retain on SimStorage");
            }
        }
        match self.crash {
            None => log.close().expect("close on SimStorage"),
            Some(tear) => {
                drop(log);
                sim.crash(tear.map(usize::from));
            }
        }
        for damage in &self.damage {
            damage.apply(&sim);
        }
        Built {
            sim,
            written,
            checkpoint,
            all_durable: self.crash.is_none() || !self.fsync_never,
            damaged: !self.damage.is_empty(),
        }
    }
}

impl Damage {
    fn apply(&self, sim: &SimStorage) {
        let dir = Path::new(DIR);
        let mut files = sim.list_dir(dir).unwrap_or_default();
        files.sort();
        let pick = |i: u8| {
            let n = files.len();
            (n > 0).then(|| dir.join(&files[usize::from(i) % n]))
        };
        let grow = |file: u8, tail: &[u8]| {
            if let Some(path) = pick(file) {
                sim.modify(&path, |d| {
                    if d.len() + tail.len() <= MAX_FILE_LEN {
                        d.extend_from_slice(tail);
                    }
                });
            }
        };
        match self {
            Damage::Flip { file, at, mask } => {
                if let Some(path) = pick(*file) {
                    sim.modify(&path, |d| {
                        if !d.is_empty() {
                            let i = usize::from(*at) % d.len();
                            d[i] ^= (*mask).max(1);
                        }
                    });
                }
            }
            Damage::Overwrite { file, at, bytes } => {
                if let Some(path) = pick(*file) {
                    sim.modify(&path, |d| {
                        let start = usize::from(*at) % (d.len() + 1);
                        for (dst, src) in d[start..].iter_mut().zip(bytes) {
                            *dst = *src;
                        }
                    });
                }
            }
            Damage::Truncate { file, cut } => {
                if let Some(path) = pick(*file) {
                    sim.modify(&path, |d| {
                        d.truncate(d.len() - usize::from(*cut) % (d.len() + 1))
                    });
                }
            }
            Damage::Zeros { file, len } => grow(*file, &vec![0; usize::from(*len)]),
            Damage::Append { file, bytes } => grow(*file, bytes),
            Damage::AppendRecord { file, seq, rec } => {
                grow(*file, &encode_record(&rec.to_record(seq.get())));
            }
            Damage::Remove { file } => {
                if let Some(path) = pick(*file) {
                    sim.remove_file(&path).expect("remove a listed file");
                }
            }
            Damage::Rename { file, to } => {
                if let Some(path) = pick(*file) {
                    sim.rename(&path, &to.path())
                        .expect("rename within the directory");
                }
            }
            Damage::Create {
                name,
                header,
                bytes,
            } => {
                let mut contents = match (header, name) {
                    (true, Name::Segment(_) | Name::SegmentTemp(_)) => segment_header().to_vec(),
                    (true, Name::Checkpoint | Name::CheckpointTemp) => checkpoint_header().to_vec(),
                    _ => Vec::new(),
                };
                contents.extend_from_slice(bytes);
                create(sim, &name.path(), &contents);
            }
            Damage::Checkpoint(seq) => {
                create(sim, &Name::Checkpoint.path(), &encode_checkpoint(seq.get()));
            }
        }
    }
}

fn create(sim: &SimStorage, path: &Path, contents: &[u8]) {
    let mut file = sim.create(path).expect("create in the shard directory");
    file.append(contents).expect("append to SimStorage");
}

// The encoders below follow the byte tables of docs/persistence.md, independently of the
// crate's own (private) encoders.

fn segment_header() -> [u8; 16] {
    let mut h = [0; 16];
    h[..8].copy_from_slice(b"SHBUSLOG");
    h[8] = 1;
    h
}

fn checkpoint_header() -> [u8; 12] {
    let mut h = [0; 12];
    h[..8].copy_from_slice(b"SHBUSCKP");
    h[8] = 1;
    h
}

/// A record frame: `len`, CRC32C of the body, then `seq`, `timestamp_nanos`, `topic_len`,
/// topic, payload.
pub fn encode_record(rec: &Record) -> Vec<u8> {
    let mut body = Vec::with_capacity(18 + rec.topic.len() + rec.payload.len());
    body.extend_from_slice(&rec.seq.get().to_le_bytes());
    body.extend_from_slice(&rec.timestamp_nanos.to_le_bytes());
    body.extend_from_slice(&(rec.topic.len() as u16).to_le_bytes());
    body.extend_from_slice(rec.topic.as_bytes());
    body.extend_from_slice(&rec.payload);
    let mut frame = Vec::with_capacity(8 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    frame
}

fn encode_checkpoint(seq: Seq) -> Vec<u8> {
    let mut file = checkpoint_header().to_vec();
    file.extend_from_slice(&seq.get().to_le_bytes());
    let crc = crc32c::crc32c(&file);
    file.extend_from_slice(&crc.to_le_bytes());
    file
}

/// The `max_record_size` a reader validates against.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum MaxRecord {
    /// `DEFAULT_MAX_RECORD_SIZE` (16 MiB), what `inspect` uses.
    Default,
    /// `26 + n`: small enough that written records may exceed it.
    Small(u16),
    /// `u32::MAX`: a `len` field is then bounded only by the file.
    Huge,
}

impl MaxRecord {
    /// The value.
    pub fn get(self) -> u32 {
        match self {
            MaxRecord::Default => shardbus::log::DEFAULT_MAX_RECORD_SIZE,
            MaxRecord::Small(n) => 26 + u32::from(n),
            MaxRecord::Huge => u32::MAX,
        }
    }
}
