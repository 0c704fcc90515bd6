//! Property: for random records and one random damage (a truncation or a flipped byte in any
//! segment), recovery never panics, never loses a record before the damage, and reports the
//! rest: a torn tail (kept, cut, counted), or an error naming the damaged file and offset with
//! every earlier record still readable; with `truncate_on_corruption`, exactly the records
//! before the damage are kept.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{config, expected, refs, seq_of, Msg};
use proptest::prelude::*;
use proptest::sample::Index;
use shardbus::log::{
    recover, FsyncPolicy, Reader, Record, RecoveryOptions, Seq, ShardLog, SimStorage, Storage,
};
use shardbus::log::{CorruptReason, LogError};

const DIR: &str = "/prop/shard-000";

#[derive(Debug, Clone)]
enum Damage {
    /// Cut the segment to this fraction of its length (always removing at least one byte).
    Truncate(Index),
    /// XOR the byte at this position with a non-zero mask.
    Flip(Index, u8),
}

struct Layout {
    paths: Vec<PathBuf>,
    /// Per segment: (global index of its first record, offset of each record, file length).
    segs: Vec<(usize, Vec<u64>, u64)>,
}

fn write(sim: &SimStorage, msgs: &[Msg], segment_size: u64) -> Layout {
    let (mut log, _) = ShardLog::open(
        Arc::new(sim.clone()),
        DIR,
        config(segment_size, FsyncPolicy::Batch),
    )
    .unwrap();
    // Several batches, so rolls happen mid-batch and between batches.
    for chunk in msgs.chunks(3) {
        log.append(&refs(chunk)).unwrap();
        log.commit().unwrap();
    }
    let paths = log.segment_paths();
    drop(log);
    let mut segs = Vec::new();
    let mut next = 0usize;
    for (i, p) in paths.iter().enumerate() {
        let end = paths.get(i + 1).map_or(msgs.len(), |n| seq_of(n) as usize);
        let mut at = 16;
        let offsets = (next..end)
            .map(|j| {
                let o = at;
                at += msgs[j].encoded_len();
                o
            })
            .collect();
        assert_eq!(sim.contents(p).unwrap().len() as u64, at);
        segs.push((next, offsets, at));
        next = end;
    }
    Layout { paths, segs }
}

fn read(storage: &Arc<dyn Storage>) -> (Vec<Record>, Option<LogError>) {
    let mut good = Vec::new();
    let reader = match Reader::open(Arc::clone(storage), DIR, Seq(0)) {
        Ok(r) => r,
        Err(e) => return (good, Some(e)),
    };
    for item in reader {
        match item {
            Ok(r) => good.push(r),
            Err(e) => return (good, Some(e)),
        }
    }
    (good, None)
}

fn check(
    msgs: Vec<Msg>,
    segment_size: u64,
    seg: Index,
    damage: Damage,
) -> Result<(), TestCaseError> {
    let sim = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let layout = write(&sim, &msgs, segment_size);
    let s = seg.index(layout.paths.len());
    let path = layout.paths[s].clone();
    let (first, ref offsets, len) = layout.segs[s];
    let last_seg = s + 1 == layout.paths.len();

    let (at, truncate) = match damage {
        Damage::Truncate(i) => (i.index(len as usize) as u64, true),
        Damage::Flip(i, _) => (i.index(len as usize) as u64, false),
    };
    sim.modify(&path, |d| match damage {
        Damage::Truncate(_) => d.truncate(at as usize),
        Damage::Flip(_, mask) => d[at as usize] ^= mask.max(1),
    });

    // The record the damage hits: k is its global index; its frame starts at `start`.
    let header_damage = at < 16;
    let j = offsets.partition_point(|&o| o <= at).saturating_sub(1);
    let k = if header_damage { first } else { first + j };
    let start = offsets.get(j).copied().unwrap_or(16);
    // A truncation exactly at a record boundary leaves the segment clean but short.
    let boundary = truncate && !header_damage && at == start;
    let is_last_record = k + 1 == msgs.len();

    let snapshot: Vec<_> = layout.paths.iter().map(|p| sim.contents(p)).collect();
    let default = recover(Arc::clone(&storage), DIR, RecoveryOptions::default());

    if header_damage {
        let err = default.expect_err("header damage is an error");
        let path_ok = match &err {
            LogError::TruncatedHeader { path: p, len } => truncate && *len == at && *p == path,
            LogError::BadMagic { path: p, .. } => !truncate && at < 8 && *p == path,
            LogError::UnsupportedVersion { path: p, .. } => !truncate && at == 8 && *p == path,
            LogError::Corrupt {
                path: p,
                offset,
                reason: CorruptReason::ReservedHeaderBytes,
            } => !truncate && *offset == at && *p == path,
            _ => false,
        };
        prop_assert!(path_ok, "{}", err);
        prop_assert_eq!(
            &layout
                .paths
                .iter()
                .map(|p| sim.contents(p))
                .collect::<Vec<_>>(),
            &snapshot
        );
        let (good, _) = read(&storage);
        prop_assert_eq!(good, expected(&msgs[..first], 0));
        // The option does not touch headers.
        let opt = RecoveryOptions {
            truncate_on_corruption: true,
            ..RecoveryOptions::default()
        };
        prop_assert!(recover(Arc::clone(&storage), DIR, opt).is_err());
        return Ok(());
    }

    match default {
        Ok(r) => {
            // Only a torn tail recovers: the damage is in the last segment's final record
            // region (a truncation, or a flipped final record).
            prop_assert!(
                last_seg && (truncate || is_last_record),
                "damage at {} in seg {} recovered",
                at,
                s
            );
            prop_assert_eq!(r.next_seq(), Seq(k as u64));
            let torn = if truncate { at - start } else { len - start };
            prop_assert_eq!(r.report().torn_bytes, torn);
            prop_assert_eq!(r.report().torn_records, u64::from(torn > 0));
            let replayed: Vec<Record> = r.replay().unwrap().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(replayed, expected(&msgs[..k], 0));
        }
        Err(err) => {
            prop_assert!(
                !(last_seg && truncate),
                "a truncated last segment is a torn tail: {}",
                err
            );
            match &err {
                // A non-last segment cut at a record boundary: the next segment's name breaks
                // the sequence.
                LogError::Corrupt {
                    path: p,
                    offset: 0,
                    reason: CorruptReason::SegmentSeqMismatch { expected, found },
                } => {
                    prop_assert!(boundary && !last_seg);
                    prop_assert_eq!(p, &layout.paths[s + 1]);
                    prop_assert_eq!((*expected, *found), (Seq(k as u64), Seq(seq_of(p))));
                }
                LogError::Corrupt {
                    path: p, offset, ..
                } => {
                    prop_assert!(!boundary);
                    prop_assert_eq!((p, *offset), (&path, start));
                }
                other => prop_assert!(false, "unexpected error {}", other),
            }
            prop_assert_eq!(
                &layout
                    .paths
                    .iter()
                    .map(|p| sim.contents(p))
                    .collect::<Vec<_>>(),
                &snapshot,
                "unchanged"
            );
            let (good, reader_err) = read(&storage);
            prop_assert_eq!(good, expected(&msgs[..k], 0));
            let reader_corrupt = matches!(reader_err, Some(LogError::Corrupt { .. }));
            prop_assert!(reader_corrupt, "{:?}", reader_err);

            let opt = RecoveryOptions {
                truncate_on_corruption: true,
                ..RecoveryOptions::default()
            };
            let r = recover(Arc::clone(&storage), DIR, opt).unwrap();
            prop_assert_eq!(r.next_seq(), Seq(k as u64));
            let t = r.report().truncated.clone().unwrap();
            prop_assert_eq!(
                t.first_dropped_seq.get(),
                if boundary {
                    seq_of(&layout.paths[s + 1])
                } else {
                    k as u64
                }
            );
            let replayed: Vec<Record> = r.replay().unwrap().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(replayed, expected(&msgs[..k], 0));
            // Idempotent: a second recovery finds nothing to do.
            let again = recover(Arc::clone(&storage), DIR, RecoveryOptions::default()).unwrap();
            prop_assert_eq!(
                (again.next_seq(), again.report().torn_bytes),
                (Seq(k as u64), 0)
            );
            prop_assert!(again.report().truncated.is_none());
        }
    }
    Ok(())
}

fn msgs() -> impl Strategy<Value = Vec<Msg>> {
    prop::collection::vec(
        (
            0u64..u64::MAX,
            "[a-z/]{0,12}",
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        1..40,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(timestamp_nanos, topic, payload)| Msg {
                timestamp_nanos,
                topic,
                payload,
            })
            .collect()
    })
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<Index>().prop_map(Damage::Truncate),
        (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Damage::Flip(i, m)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn recovery_keeps_everything_before_the_damage(
        msgs in msgs(),
        segment_size in 60u64..500,
        seg in any::<Index>(),
        damage in damage(),
    ) {
        check(msgs, segment_size, seg, damage)?;
    }
}
