//! Records to append to a `ShardLog` and read back: the fixtures of the `log_*` tests.

use std::path::Path;
use std::sync::Arc;

use shardbus::log::{
    FsyncPolicy, LogConfig, Record, RecordRef, Seq, ShardLog, SimStorage, Storage,
};

/// An owned record to append, so tests can compare what they wrote with what they read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub timestamp_nanos: u64,
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Msg {
    pub fn new(i: u64, payload_len: usize) -> Self {
        Msg {
            timestamp_nanos: 1_000 + i,
            topic: format!("topic-{}", i % 3),
            payload: (0..payload_len)
                .map(|b| (b as u64 * 31 + i) as u8)
                .collect(),
        }
    }

    pub fn rec(&self) -> RecordRef<'_> {
        RecordRef {
            timestamp_nanos: self.timestamp_nanos,
            topic: &self.topic,
            payload: &self.payload,
        }
    }

    pub fn encoded_len(&self) -> u64 {
        self.rec().encoded_len()
    }

    pub fn with_seq(&self, seq: u64) -> Record {
        Record {
            seq: Seq(seq),
            timestamp_nanos: self.timestamp_nanos,
            topic: self.topic.clone(),
            payload: self.payload.clone(),
        }
    }
}

/// `msgs` as the records the log must return, numbered from `first`.
pub fn expected(msgs: &[Msg], first: u64) -> Vec<Record> {
    msgs.iter()
        .zip(first..)
        .map(|(m, seq)| m.with_seq(seq))
        .collect()
}

pub fn refs(msgs: &[Msg]) -> Vec<RecordRef<'_>> {
    msgs.iter().map(Msg::rec).collect()
}

pub fn config(segment_size: u64, fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        segment_size,
        fsync,
        ..LogConfig::default()
    }
}

pub fn sim_open(sim: &SimStorage, dir: &str, config: LogConfig) -> ShardLog {
    ShardLog::open(Arc::new(sim.clone()), dir, config)
        .unwrap()
        .0
}

/// Every record of the log in `dir`, read through a fresh `Reader`; panics on an error.
pub fn read_all(storage: Arc<dyn Storage>, dir: &Path) -> Vec<Record> {
    shardbus::log::Reader::open(storage, dir, Seq(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The first sequence number of a segment, from its file name (`00000000000000000030.log`).
pub fn seq_of(path: &Path) -> u64 {
    path.file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches(".log")
        .parse()
        .unwrap()
}
