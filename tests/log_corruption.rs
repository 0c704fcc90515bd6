//! Corruption before the end of the log: an error with the exact path and offset by default,
//! nothing changed on disk and the good records before it still readable; cut there with
//! `truncate_on_corruption`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{config, expected, refs, seq_of, Msg};
use shardbus::log::{inspect, FsyncPolicy, LogConfig, Reader, Seq, ShardLog, SimStorage, Storage};
use shardbus::log::{CorruptReason, LogError};

const DIR: &str = "/data/shard-002";
const SEGMENT: u64 = 300;

struct Fixture {
    sim: SimStorage,
    msgs: Vec<Msg>,
    paths: Vec<PathBuf>,
}

impl Fixture {
    fn new() -> Self {
        let sim = SimStorage::new();
        let msgs: Vec<Msg> = (0..30).map(|i| Msg::new(i, 10)).collect();
        let (mut log, _) = ShardLog::open(
            Arc::new(sim.clone()),
            DIR,
            config(SEGMENT, FsyncPolicy::Batch),
        )
        .unwrap();
        log.append(&refs(&msgs)).unwrap();
        let paths = log.segment_paths();
        log.close().unwrap();
        assert!(paths.len() >= 3, "{paths:?}");
        Fixture { sim, msgs, paths }
    }

    fn storage(&self) -> Arc<dyn Storage> {
        Arc::new(self.sim.clone())
    }

    /// (first seq, offsets of each record) of segment `i`.
    fn layout(&self, i: usize) -> (u64, Vec<u64>) {
        let first = seq_of(&self.paths[i]);
        let next = self
            .paths
            .get(i + 1)
            .map_or(self.msgs.len() as u64, |p| seq_of(p));
        let mut at = 16;
        let offsets = (first..next)
            .map(|s| {
                let o = at;
                at += self.msgs[s as usize].encoded_len();
                o
            })
            .collect();
        (first, offsets)
    }

    fn snapshot(&self) -> Vec<Option<Vec<u8>>> {
        self.paths.iter().map(|p| self.sim.contents(p)).collect()
    }

    fn reader_outcome(&self) -> (Vec<shardbus::log::Record>, Option<LogError>) {
        let mut good = Vec::new();
        for item in Reader::open(self.storage(), DIR, Seq(0)).unwrap() {
            match item {
                Ok(r) => good.push(r),
                Err(e) => return (good, Some(e)),
            }
        }
        (good, None)
    }

    fn open(&self, truncate: bool) -> Result<ShardLog, LogError> {
        let cfg = LogConfig {
            truncate_on_corruption: truncate,
            ..config(SEGMENT, FsyncPolicy::Batch)
        };
        ShardLog::open(self.storage(), DIR, cfg).map(|(log, _)| log)
    }
}

fn check_middle_damage(f: &Fixture, seg: usize, rec: usize, at_in_record: u64) {
    let (first, offsets) = f.layout(seg);
    let path = &f.paths[seg];
    let offset = offsets[rec];
    f.sim
        .modify(path, |d| d[(offset + at_in_record) as usize] ^= 0x40);
    let bad_seq = first + rec as u64;

    let before = f.snapshot();
    let err = f.open(false).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { path: p, offset: o, reason: CorruptReason::CrcMismatch { .. } } if p == path && *o == offset),
        "{err}"
    );
    assert_eq!(f.snapshot(), before, "a Corrupt error changes nothing");
    // The good records before the damage are all there, then the same error.
    let (good, err) = f.reader_outcome();
    assert_eq!(good, expected(&f.msgs[..bad_seq as usize], 0));
    assert!(matches!(err, Some(LogError::Corrupt { offset: o, .. }) if o == offset));
    let report = inspect(&f.sim, Path::new(DIR)).unwrap();
    assert_eq!(report.segments[seg].crc_failures, 1);
    assert!(!report.is_clean());

    // With the option: cut exactly there, later segments removed, the rest kept.
    let (mut log, r) = {
        let cfg = LogConfig {
            truncate_on_corruption: true,
            ..config(SEGMENT, FsyncPolicy::Batch)
        };
        ShardLog::open(f.storage(), DIR, cfg).unwrap()
    };
    let t = r.report().truncated.clone().expect("truncation reported");
    assert_eq!(
        (&t.path, t.offset, t.first_dropped_seq),
        (path, offset, Seq(bad_seq))
    );
    assert_eq!(t.removed_segments, f.paths[seg + 1..].to_vec());
    let dropped: u64 = before[seg..]
        .iter()
        .map(|c| c.as_ref().unwrap().len() as u64)
        .sum::<u64>()
        - offset;
    assert_eq!(t.dropped_bytes, dropped);
    assert_eq!(r.next_seq(), Seq(bad_seq));
    assert_eq!(r.report().records, bad_seq);
    let replayed: Vec<_> = r.replay().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(replayed, expected(&f.msgs[..bad_seq as usize], 0));
    // The log goes on from there.
    assert_eq!(
        log.append(&refs(&f.msgs[..1])).unwrap(),
        Seq(bad_seq)..Seq(bad_seq + 1)
    );
    log.close().unwrap();
    assert!(inspect(&f.sim, Path::new(DIR)).unwrap().is_clean());
}

#[test]
fn damage_in_a_middle_record_of_the_last_segment() {
    let f = Fixture::new();
    let last = f.paths.len() - 1;
    let (_, offsets) = f.layout(last);
    assert!(offsets.len() >= 3);
    check_middle_damage(&f, last, 1, 20);
}

#[test]
fn damage_in_the_final_record_of_a_non_last_segment() {
    let f = Fixture::new();
    let (_, offsets) = f.layout(0);
    check_middle_damage(&f, 0, offsets.len() - 1, 30);
}

#[test]
fn damage_in_the_first_record_of_a_middle_segment() {
    let f = Fixture::new();
    check_middle_damage(&f, 1, 0, 9);
}

#[test]
fn an_incomplete_record_in_a_non_last_segment_is_corrupt() {
    let f = Fixture::new();
    let (_, offsets) = f.layout(0);
    let last_off = *offsets.last().unwrap();
    f.sim
        .modify(&f.paths[0], |d| d.truncate(last_off as usize + 5));
    let err = f.open(false).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { path, offset, reason: CorruptReason::TruncatedFrame { available: 5 } } if *path == f.paths[0] && *offset == last_off),
        "{err}"
    );
}

#[test]
fn a_sequence_gap_inside_a_segment_is_corrupt() {
    // Two valid records whose seqs skip: written by hand as a raw segment.
    let f = Fixture::new();
    let (first, offsets) = f.layout(1);
    let second = offsets[1] as usize;
    let third = offsets[2] as usize;
    // Drop record 1 of segment 1: record 2 then follows record 0.
    f.sim.modify(&f.paths[1], |d| {
        d.drain(second..third);
    });
    let err = f.open(false).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { path, offset, reason: CorruptReason::SeqMismatch { expected, found } }
            if *path == f.paths[1] && *offset == second as u64 && *expected == Seq(first + 1) && *found == Seq(first + 2)),
        "{err}"
    );
}
