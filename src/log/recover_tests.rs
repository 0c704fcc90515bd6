//! Unit tests of `recover.rs`.

use super::*;
use crate::log::record::{encode, RecordRef};
use crate::log::segment::{SegmentWriter, HEADER_LEN};
use crate::log::storage::SimStorage;

const DIR: &str = "/shard-000";

/// Writes segments of `per` records each (`n` records in all) straight through the segment
/// writer; returns the segment paths and every record's (path, offset).
fn write(sim: &SimStorage, n: u64, per: u64) -> (Vec<PathBuf>, Vec<(PathBuf, u64)>) {
    let dir = Path::new(DIR);
    sim.create_dir_all(dir).unwrap();
    let (mut paths, mut at) = (Vec::new(), Vec::new());
    for first in (0..n).step_by(per as usize) {
        let mut w = SegmentWriter::create(sim, dir, Seq(first)).unwrap();
        let mut buf = Vec::new();
        for i in first..n.min(first + per) {
            at.push((w.meta.path.clone(), HEADER_LEN + buf.len() as u64));
            let payload = i.to_le_bytes();
            encode(
                &mut buf,
                Seq(i),
                &RecordRef {
                    timestamp_nanos: i,
                    topic: "t",
                    payload: &payload,
                },
            );
        }
        w.append(&buf).unwrap();
        w.sync().unwrap();
        paths.push(w.meta.path.clone());
    }
    (paths, at)
}

fn seqs(r: &Recovered) -> Vec<u64> {
    let mut v = Vec::new();
    r.for_each_after(None, |rec| v.push(rec.seq.get())).unwrap();
    v
}

fn run(sim: &SimStorage, truncate: bool) -> Result<Recovered, LogError> {
    let options = RecoveryOptions {
        truncate_on_corruption: truncate,
        ..RecoveryOptions::default()
    };
    recover(Arc::new(sim.clone()), DIR, options)
}

#[test]
fn empty_and_missing_directories() {
    let sim = SimStorage::new();
    assert!(
        matches!(run(&sim, false), Err(LogError::DirNotFound { path }) if path == Path::new(DIR))
    );
    sim.create_dir_all(Path::new(DIR)).unwrap();
    let r = run(&sim, false).unwrap();
    assert_eq!(
        (r.first_seq(), r.next_seq(), r.checkpoint()),
        (Seq(0), Seq(0), None)
    );
    assert_eq!(r.report(), &RecoveryReport::default());
    assert_eq!(r.replay().unwrap().count(), 0);
}

/// A segment named at the sequence limit (only a hand-made name gets there) is corrupt,
/// with its path, rather than a log whose appends could never count on.
#[test]
fn a_segment_named_beyond_the_sequence_limit_is_corrupt() {
    let sim = SimStorage::new();
    let (paths, _) = write(&sim, 3, 4);
    let beyond = Path::new(DIR).join(super::super::segment::segment_file_name(Seq::LIMIT));
    sim.rename(&paths[0], &beyond).unwrap();
    let err = run(&sim, true).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt {
            path,
            offset: 0,
            reason: CorruptReason::SeqOutOfRange { found: Seq::LIMIT },
        } if *path == beyond),
        "{err:?}"
    );
    // Just below the limit the name is a segment like any other (a gap, here).
    let below = Path::new(DIR).join(super::super::segment::segment_file_name(Seq(Seq::LIMIT
        .get()
        - 1)));
    sim.rename(&beyond, &below).unwrap();
    assert!(!matches!(
        run(&sim, false),
        Err(LogError::Corrupt {
            reason: CorruptReason::SeqOutOfRange { .. },
            ..
        })
    ));
}

#[test]
fn clean_log_across_segments() {
    let sim = SimStorage::new();
    write(&sim, 10, 4);
    let r = run(&sim, false).unwrap();
    assert_eq!((r.first_seq(), r.next_seq()), (Seq(0), Seq(10)));
    assert_eq!(
        (
            r.report().segments,
            r.report().records,
            r.report().torn_bytes
        ),
        (3, 10, 0)
    );
    assert_eq!(seqs(&r), (0..10).collect::<Vec<_>>());
    let mut after = Vec::new();
    assert_eq!(
        r.for_each_after(Some(Seq(6)), |rec| after.push(rec.seq.get()))
            .unwrap(),
        3
    );
    assert_eq!(after, [7, 8, 9]);
}

#[test]
fn a_gap_between_segments_is_corrupt() {
    let sim = SimStorage::new();
    let (paths, _) = write(&sim, 12, 4);
    sim.remove_file(&paths[1]).unwrap();
    let err = run(&sim, false).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::Corrupt { ref path, offset: 0, reason: CorruptReason::SegmentSeqMismatch { expected: Seq(4), found: Seq(8) } }
                if *path == paths[2]
        ),
        "{err}"
    );
    let r = run(&sim, true).unwrap();
    assert_eq!(seqs(&r), [0, 1, 2, 3]);
    let t = r.report().truncated.clone().unwrap();
    assert_eq!(
        (t.offset, t.first_dropped_seq, t.removed_segments),
        (0, Seq(8), vec![paths[2].clone()])
    );
    assert!(sim.contents(&paths[2]).is_none());
}

#[test]
fn a_damaged_non_last_segment_is_cut_there_with_the_option() {
    let sim = SimStorage::new();
    let (paths, at) = write(&sim, 12, 4);
    let (ref path, offset) = at[5];
    sim.modify(path, |d| d[offset as usize + 12] ^= 0xff);
    let snapshot: Vec<_> = paths.iter().map(|p| sim.contents(p)).collect();
    let err = run(&sim, false).unwrap_err();
    assert!(
        matches!(err, LogError::Corrupt { path: ref p, offset: o, .. } if p == path && o == offset),
        "{err}"
    );
    let after: Vec<_> = paths.iter().map(|p| sim.contents(p)).collect();
    assert_eq!(snapshot, after, "a Corrupt error changes nothing");

    let before = sim.file_len(path).unwrap() + sim.file_len(&paths[2]).unwrap();
    let r = run(&sim, true).unwrap();
    assert_eq!(seqs(&r), [0, 1, 2, 3, 4]);
    assert_eq!(r.next_seq(), Seq(5));
    let t = r.report().truncated.clone().unwrap();
    assert_eq!(t.path, paths[1]);
    assert_eq!(t.offset, offset);
    assert_eq!(t.first_dropped_seq, Seq(5));
    assert_eq!(t.removed_segments, vec![paths[2].clone()]);
    assert_eq!(t.dropped_bytes, before - offset);
    assert_eq!(sim.file_len(path).unwrap(), offset);
    // A second recovery finds a clean log.
    let r = run(&sim, false).unwrap();
    assert_eq!((r.next_seq(), r.report().truncated.clone()), (Seq(5), None));
}

#[test]
fn checkpoint_is_checked_against_the_log() {
    let sim = SimStorage::new();
    write(&sim, 5, 10);
    let dir = Path::new(DIR);
    checkpoint::store_checkpoint(&sim, dir, Seq(2)).unwrap();
    let r = run(&sim, false).unwrap();
    assert_eq!((r.checkpoint(), r.replay_from()), (Some(Seq(2)), Seq(3)));
    let replayed: Vec<u64> = r
        .replay()
        .unwrap()
        .map(|rec| rec.unwrap().seq.get())
        .collect();
    assert_eq!(replayed, [3, 4]);

    checkpoint::store_checkpoint(&sim, dir, Seq(4)).unwrap();
    assert_eq!(run(&sim, false).unwrap().replay().unwrap().count(), 0);

    checkpoint::store_checkpoint(&sim, dir, Seq(5)).unwrap();
    let err = run(&sim, false).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::CheckpointOutOfRange { checkpoint: Seq(5), first_seq: Seq(0), next_seq: Seq(5), ref path }
                if *path == dir.join("checkpoint")
        ),
        "{err}"
    );
}

#[test]
fn leftover_temp_files_are_removed() {
    let sim = SimStorage::new();
    write(&sim, 3, 10);
    let tmp = Path::new(DIR).join("00000000000000000003.log.tmp");
    drop(sim.create(&tmp).unwrap());
    let r = run(&sim, false).unwrap();
    assert_eq!(r.report().removed_temp_files, vec![tmp.clone()]);
    assert!(sim.contents(&tmp).is_none());
    assert_eq!(r.next_seq(), Seq(3));
}
