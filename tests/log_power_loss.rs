//! Power loss on `SimStorage`.
//!
//! The rule asserted, exactly: let S be the records appended before the last sync (a successful
//! `commit` under `FsyncPolicy::Batch`, or a segment roll, which syncs the full segment), and
//! U = u1, u2, ... the records appended after it, all in the last segment, with encoded sizes
//! s1, s2, .... A crash that keeps the first `t` bytes of the unsynced tail (`crash(Some(t))`;
//! `None` keeps 0) recovers S followed by u1..uk, where k is the largest number with
//! s1 + ... + sk <= t: whole records of the unsynced tail that reached the disk intact survive,
//! in order; the partial record after them is cut, and `torn_bytes` is exactly
//! min(t, s1 + ... + sm) - (s1 + ... + sk).

mod common;

use std::io;
use std::path::Path;
use std::sync::Arc;

use common::{config, expected, read_all, refs, Msg};
use proptest::prelude::*;
use shardbus::log::{FsyncPolicy, Seq, ShardLog, SimStorage, Storage};
use shardbus::log::{IoOp, LogError};

const DIR: &str = "/power/shard-000";
const HEADER: u64 = 16;

/// Appends `batches` (each `(payload sizes, commit after it)`), crashes with `tear`, recovers,
/// and checks the rule above against an independent model of where syncs happened.
fn run(segment_size: u64, batches: &[(Vec<usize>, bool)], tear: Option<usize>) {
    let sim = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let (mut log, _) = ShardLog::open(
        Arc::clone(&storage),
        DIR,
        config(segment_size, FsyncPolicy::Batch),
    )
    .unwrap();

    let mut msgs: Vec<Msg> = Vec::new();
    // The model: bytes and records in the current segment, and how many records are durable.
    let (mut seg_bytes, mut seg_records, mut durable) = (HEADER, 0u64, 0usize);
    for (sizes, commit) in batches {
        let batch: Vec<Msg> = sizes
            .iter()
            .enumerate()
            .map(|(j, &n)| Msg::new((msgs.len() + j) as u64, n))
            .collect();
        for m in &batch {
            if seg_records > 0 && seg_bytes + m.encoded_len() > segment_size {
                durable = msgs.len(); // the roll synced everything before this record
                seg_bytes = HEADER;
                seg_records = 0;
            }
            seg_bytes += m.encoded_len();
            seg_records += 1;
            msgs.push(m.clone());
        }
        log.append(&refs(&batch)).unwrap();
        if *commit {
            log.commit().unwrap();
            durable = msgs.len();
        }
    }
    let unsynced: Vec<u64> = msgs[durable..].iter().map(Msg::encoded_len).collect();
    let active = log.segment_paths().last().unwrap().clone();
    assert_eq!(
        sim.unsynced_len(&active),
        Some(unsynced.iter().sum::<u64>() as usize),
        "model agrees with the storage"
    );
    drop(log);

    sim.crash(tear);

    let kept_bytes = (tear.unwrap_or(0) as u64).min(unsynced.iter().sum());
    let (mut k, mut whole) = (0, 0);
    while k < unsynced.len() && whole + unsynced[k] <= kept_bytes {
        whole += unsynced[k];
        k += 1;
    }
    let survivors = durable + k;

    let (mut log, r) = ShardLog::open(
        Arc::clone(&storage),
        DIR,
        config(segment_size, FsyncPolicy::Batch),
    )
    .unwrap();
    assert_eq!(r.next_seq(), Seq(survivors as u64));
    assert_eq!(r.report().records, survivors as u64);
    assert_eq!(r.report().torn_bytes, kept_bytes - whole);
    assert_eq!(r.report().torn_records, u64::from(kept_bytes > whole));
    assert_eq!(
        read_all(Arc::clone(&storage), Path::new(DIR)),
        expected(&msgs[..survivors], 0)
    );
    // And the log continues right after the survivors.
    let more = [Msg::new(999, 3)];
    assert_eq!(
        log.append(&refs(&more)).unwrap(),
        Seq(survivors as u64)..Seq(survivors as u64 + 1)
    );
}

#[test]
fn synced_batches_survive_and_the_unsynced_tail_is_cut_at_every_tear() {
    let batches = vec![
        (vec![10, 20, 5], true),
        (vec![7; 4], true),
        (vec![3, 30, 0, 12], false),
        (vec![9, 9], false),
    ];
    // Without a tear, then with every tear length across the unsynced tail and beyond it.
    run(4096, &batches, None);
    for t in 0..=260 {
        run(4096, &batches, Some(t));
    }
}

#[test]
fn a_roll_makes_the_full_segment_durable_even_without_commit() {
    let batches = vec![(vec![50; 6], true), (vec![40; 10], false)];
    for t in [None, Some(0), Some(33), Some(10_000)] {
        run(300, &batches, t);
    }
}

#[test]
fn a_failed_fsync_poisons_and_power_loss_keeps_what_was_synced() {
    let sim = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let (mut log, _) =
        ShardLog::open(Arc::clone(&storage), DIR, config(4096, FsyncPolicy::Batch)).unwrap();
    let msgs: Vec<Msg> = (0..4).map(|i| Msg::new(i, 8)).collect();
    log.append(&refs(&msgs[..2])).unwrap();
    log.commit().unwrap();
    log.append(&refs(&msgs[2..])).unwrap();
    sim.fail_next_sync(io::Error::from_raw_os_error(28)); // ENOSPC
    let err = log.commit().unwrap_err();
    assert!(
        matches!(&err, LogError::Io { op: IoOp::SyncData, source, .. } if source.raw_os_error() == Some(28)),
        "{err}"
    );
    for err in [
        log.commit().unwrap_err(),
        log.append(&refs(&msgs[..1])).unwrap_err(),
        log.sync().unwrap_err(),
    ] {
        assert!(
            matches!(&err, LogError::Poisoned { path, cause } if path == Path::new(DIR)
                && matches!(&**cause, LogError::Io { op: IoOp::SyncData, source, .. } if source.raw_os_error() == Some(28))),
            "{err}"
        );
    }
    drop(log);
    sim.crash(None);
    let (_, r) = ShardLog::open(storage, DIR, config(4096, FsyncPolicy::Batch)).unwrap();
    assert_eq!(r.next_seq(), Seq(2));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn power_loss_keeps_the_synced_prefix_and_whole_surviving_records(
        segment_size in 100u64..600,
        batches in prop::collection::vec((prop::collection::vec(0usize..80, 0..6), any::<bool>()), 1..8),
        tear in prop::option::of(0usize..700),
    ) {
        run(segment_size, &batches, tear);
    }
}
