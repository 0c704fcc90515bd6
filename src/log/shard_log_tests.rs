//! Unit tests of `shard_log.rs`.

use super::*;
use crate::log::SimStorage;
use std::io;
use std::time::Duration;

const DIR: &str = "/data/shard-007";

fn config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        segment_size: 256,
        fsync,
        ..LogConfig::default()
    }
}

fn open(sim: &SimStorage, fsync: FsyncPolicy) -> (ShardLog, Recovered) {
    ShardLog::open(Arc::new(sim.clone()), DIR, config(fsync)).unwrap()
}

fn rec(payload: &[u8]) -> RecordRef<'_> {
    RecordRef {
        timestamp_nanos: 1,
        topic: "t",
        payload,
    }
}

fn all(log: &ShardLog) -> Vec<Vec<u8>> {
    log.reader(log.first_seq())
        .unwrap()
        .map(|r| r.unwrap().payload)
        .collect()
}

#[test]
fn invalid_config_is_rejected() {
    let sim = SimStorage::new();
    for (config, reason) in [
        (
            LogConfig {
                segment_size: 16,
                ..LogConfig::default()
            },
            "segment_size",
        ),
        (
            LogConfig {
                max_record_size: 25,
                ..LogConfig::default()
            },
            "max_record_size",
        ),
    ] {
        let err = ShardLog::open(Arc::new(sim.clone()), DIR, config).unwrap_err();
        assert!(
            matches!(err, LogError::InvalidConfig { reason: r } if r.starts_with(reason)),
            "{err}"
        );
    }
}

#[test]
fn too_large_record_writes_nothing_and_does_not_poison() {
    let sim = SimStorage::new();
    let (mut log, _) = ShardLog::open(
        Arc::new(sim.clone()),
        DIR,
        LogConfig {
            max_record_size: 100,
            ..LogConfig::default()
        },
    )
    .unwrap();
    let big = [0u8; 75]; // 8 + 18 + 1 + 75 = 102
    let err = log.append(&[rec(b"ok"), rec(&big)]).unwrap_err();
    assert!(matches!(
        err,
        LogError::RecordTooLarge {
            size: 102,
            max: 100
        }
    ));
    assert_eq!(log.next_seq(), Seq(0));
    assert_eq!(log.size_bytes(), 16);
    assert_eq!(log.append(&[rec(&big[..73])]).unwrap(), Seq(0)..Seq(1));
}

#[test]
fn batch_policy_syncs_on_commit_only() {
    let sim = SimStorage::new();
    let (mut log, _) = open(&sim, FsyncPolicy::Batch);
    let seg = log.segment_paths()[0].clone();
    log.append(&[rec(b"a"), rec(b"b")]).unwrap();
    assert_eq!(sim.unsynced_len(&seg), Some(2 * 28));
    log.commit().unwrap();
    assert_eq!(sim.unsynced_len(&seg), Some(0));
}

#[test]
fn always_policy_syncs_every_record_and_never_policy_does_not() {
    let sim = SimStorage::new();
    let (mut log, _) = open(&sim, FsyncPolicy::Always);
    let seg = log.segment_paths()[0].clone();
    log.append(&[rec(b"a"), rec(b"b")]).unwrap();
    assert_eq!(sim.unsynced_len(&seg), Some(0));
    // The second record's sync fails: the first is durable, the second is not.
    sim.fail_next_sync(io::Error::from_raw_os_error(5));
    assert!(log.append(&[rec(b"c"), rec(b"d")]).is_err());
    assert_eq!(sim.unsynced_len(&seg), Some(28));
    drop(log);

    let sim = SimStorage::new();
    let (mut log, _) = open(&sim, FsyncPolicy::Never);
    log.append(&[rec(b"a")]).unwrap();
    log.commit().unwrap();
    assert_eq!(sim.unsynced_len(&log.segment_paths()[0]), Some(28));
}

#[test]
fn interval_policy_syncs_once_the_oldest_append_is_old_enough() {
    let sim = SimStorage::new();
    let (mut log, _) = open(&sim, FsyncPolicy::Interval(Duration::from_millis(100)));
    let seg = log.segment_paths()[0].clone();
    log.append(&[rec(b"a")]).unwrap();
    log.commit().unwrap();
    assert_eq!(sim.unsynced_len(&seg), Some(28));
    std::thread::sleep(Duration::from_millis(120));
    log.append(&[rec(b"b")]).unwrap();
    log.commit().unwrap();
    assert_eq!(sim.unsynced_len(&seg), Some(0));
}

#[test]
fn roll_syncs_the_full_segment_and_creates_the_next_durably() {
    let sim = SimStorage::new();
    let (mut log, _) = open(&sim, FsyncPolicy::Never);
    // 16 + 8 * 28 = 240 <= 256: the ninth record starts a new segment.
    let batch: Vec<_> = (0..9).map(|_| rec(b"x")).collect();
    assert_eq!(log.append(&batch).unwrap(), Seq(0)..Seq(9));
    let paths = log.segment_paths();
    assert_eq!(paths.len(), 2);
    assert_eq!(paths[1], Path::new(DIR).join("00000000000000000008.log"));
    assert_eq!(sim.unsynced_len(&paths[0]), Some(0));
    assert_eq!(sim.unsynced_len(&paths[1]), Some(28));
    sim.crash(None);
    let (log, r) = open(&sim, FsyncPolicy::Never);
    assert_eq!((r.next_seq(), log.segment_paths()), (Seq(8), paths));
}

#[test]
fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
    let sim = SimStorage::new();
    let (mut log, _) = open(&sim, FsyncPolicy::Batch);
    let big = [7u8; 300];
    log.append(&[rec(b"a"), rec(&big), rec(b"b")]).unwrap();
    assert_eq!(log.segment_paths().len(), 3);
    assert_eq!(all(&log), [b"a".to_vec(), big.to_vec(), b"b".to_vec()]);
}

#[test]
fn a_failed_sync_poisons_every_later_call() {
    let sim = SimStorage::new();
    let (mut log, _) = open(&sim, FsyncPolicy::Batch);
    log.append(&[rec(b"a")]).unwrap();
    sim.fail_next_sync(io::Error::from_raw_os_error(28));
    let err = log.commit().unwrap_err();
    assert!(
        matches!(&err, LogError::Io { op: IoOp::SyncData, source, .. } if source.raw_os_error() == Some(28))
    );
    assert!(log.is_poisoned());
    // Even though the storage would now succeed, nothing is retried.
    assert!(matches!(log.commit(), Err(LogError::Poisoned { .. })));
    assert!(matches!(log.sync(), Err(LogError::Poisoned { .. })));
    assert!(matches!(
        log.append(&[rec(b"b")]),
        Err(LogError::Poisoned { .. })
    ));
    assert!(matches!(
        log.checkpoint(Seq(0)),
        Err(LogError::Poisoned { .. })
    ));
    assert!(matches!(
        log.retain(Seq(0), RetentionLimit::default()),
        Err(LogError::Poisoned { .. })
    ));
    // Every `Poisoned` error shares the error that poisoned the log, and its source chain
    // reaches the storage's `io::Error`.
    let Err(LogError::Poisoned { cause, .. }) = log.commit() else {
        panic!("not poisoned");
    };
    let Err(closed) = log.close() else {
        panic!("close after a failed sync succeeded");
    };
    let LogError::Poisoned { cause: again, .. } = &closed else {
        panic!("{closed:?}");
    };
    assert!(Arc::ptr_eq(&cause, again));
    assert!(
        matches!(&*cause, LogError::Io { op: IoOp::SyncData, source, .. } if source.raw_os_error() == Some(28))
    );
    let first = std::error::Error::source(&closed).expect("the cause is the source");
    let io = first
        .source()
        .and_then(|e| e.downcast_ref::<io::Error>())
        .expect("then the io::Error");
    assert_eq!(io.kind(), io::ErrorKind::StorageFull);
    assert!(std::error::Error::source(io).is_none());
}

#[test]
fn a_failed_append_poisons_and_recovery_cuts_the_partial_write() {
    let sim = SimStorage::new();
    let (mut log, _) = open(&sim, FsyncPolicy::Batch);
    log.append(&[rec(b"a")]).unwrap();
    log.commit().unwrap();
    sim.fail_next_append(io::Error::from_raw_os_error(28), 40);
    let err = log.append(&[rec(b"b"), rec(b"c")]).unwrap_err();
    assert!(matches!(
        err,
        LogError::Io {
            op: IoOp::Append,
            ..
        }
    ));
    assert!(matches!(
        log.append(&[rec(b"d")]),
        Err(LogError::Poisoned { .. })
    ));
    drop(log);
    // A process restart (no power loss): the partial write is in the file and is cut.
    let (log, r) = open(&sim, FsyncPolicy::Batch);
    assert_eq!(
        (r.next_seq(), r.report().torn_bytes, r.report().torn_records),
        (Seq(2), 12, 1)
    );
    assert_eq!(all(&log), [b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn checkpoint_syncs_the_log_first_and_is_range_checked() {
    let sim = SimStorage::new();
    let (mut log, _) = open(&sim, FsyncPolicy::Never);
    log.append(&[rec(b"a"), rec(b"b")]).unwrap();
    assert!(matches!(
        log.checkpoint(Seq(2)),
        Err(LogError::CheckpointOutOfRange {
            checkpoint: Seq(2),
            next_seq: Seq(2),
            ..
        })
    ));
    assert!(!log.is_poisoned());
    log.checkpoint(Seq(1)).unwrap();
    assert_eq!(sim.unsynced_len(&log.segment_paths()[0]), Some(0));
    sim.crash(None);
    let (_, r) = open(&sim, FsyncPolicy::Never);
    assert_eq!(
        (r.checkpoint(), r.next_seq(), r.replay().unwrap().count()),
        (Some(Seq(1)), Seq(2), 0)
    );
}

#[test]
fn the_sync_thread_syncs_before_it_checkpoints_and_covers_what_came_before() {
    let sim = SimStorage::new();
    let (mut log, _) = open(&sim, FsyncPolicy::Never);
    assert!(log.start_syncer("sb-io-test".to_owned()));
    let seg = log.segment_paths().pop().unwrap();
    log.append(&[rec(b"a"), rec(b"b")]).unwrap();
    sim.set_sync_delay(Duration::from_millis(5));
    let ticket = log.request_sync().unwrap().unwrap();
    // Appended after the request: the ticket does not claim it.
    log.append(&[rec(b"c")]).unwrap();
    assert_eq!(log.poll_synced(Some(ticket)).unwrap(), ticket);
    assert!(!log.is_synced());
    // A checkpoint past the durable end: the thread syncs the log first.
    log.checkpoint_async(Seq(2)).unwrap();
    assert_eq!(log.last_checkpoint(), None, "written later, by the thread");
    log.sync().unwrap(); // waits for the thread
    assert_eq!(log.last_checkpoint(), Some(Seq(2)));
    assert_eq!(sim.unsynced_len(&seg), Some(0));
    drop(log);
    sim.crash(None);
    let (log, r) = open(&sim, FsyncPolicy::Never);
    assert_eq!((r.checkpoint(), log.next_seq()), (Some(Seq(2)), Seq(3)));
}

#[test]
fn a_failed_sync_on_the_sync_thread_poisons_the_log() {
    let sim = SimStorage::new();
    let (mut log, _) = open(&sim, FsyncPolicy::Batch);
    assert!(log.start_syncer("sb-io-test".to_owned()));
    log.append(&[rec(b"a")]).unwrap();
    sim.fail_next_sync(io::Error::from_raw_os_error(5));
    let ticket = log.request_sync().unwrap().unwrap();
    let err = log.poll_synced(Some(ticket)).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::Io {
                op: IoOp::SyncData,
                ..
            }
        ),
        "{err}"
    );
    assert!(log.is_poisoned());
    assert!(matches!(
        log.append(&[rec(b"b")]),
        Err(LogError::Poisoned { .. })
    ));
    assert!(matches!(
        log.poll_synced(None),
        Err(LogError::Poisoned { .. })
    ));
    assert!(matches!(
        log.checkpoint_async(Seq(0)),
        Err(LogError::Poisoned { .. })
    ));
}

const SEG_8: &str = "00000000000000000008.log";
const SEG_8_TMP: &str = "00000000000000000008.log.tmp";

/// With the sync thread: eight records fill the first segment, the ninth starts the second
/// (under its temporary name until the thread has synced the first), the tenth follows it.
/// With `fail_roll`, the roll's first sync fails: the thread stops with the new segment
/// still under its temporary name, two records in it, as a crash in the middle of the
/// roll leaves it; the log is then poisoned.
fn roll_behind_the_sync_thread(sim: &SimStorage, fail_roll: bool) -> ShardLog {
    let (mut log, _) = open(sim, FsyncPolicy::Never);
    assert!(log.start_syncer("sb-io-test".to_owned()));
    if fail_roll {
        sim.fail_next_sync(io::Error::from_raw_os_error(5));
    }
    let batch: Vec<_> = (0..9).map(|_| rec(b"x")).collect();
    assert_eq!(log.append(&batch).unwrap(), Seq(0)..Seq(9));
    assert_eq!(log.append(&[rec(b"y")]).unwrap(), Seq(9)..Seq(10));
    if fail_roll {
        // Waits for the thread, which failed.
        assert!(matches!(
            log.sync(),
            Err(LogError::Io {
                op: IoOp::SyncData,
                ..
            })
        ));
    }
    log
}

fn names(sim: &SimStorage) -> Vec<String> {
    let mut names: Vec<String> = sim
        .list_dir(Path::new(DIR))
        .unwrap()
        .into_iter()
        .map(|n| n.into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_sync_asked_for_after_a_roll_on_the_sync_thread_covers_the_roll() {
    let sim = SimStorage::new();
    // The roll's syncs take a while, so the appends and the request overlap them.
    sim.set_sync_delay(Duration::from_millis(20));
    let mut log = roll_behind_the_sync_thread(&sim, false);
    let ticket = log.request_sync().unwrap().unwrap();
    assert_eq!(log.poll_synced(Some(ticket)).unwrap(), ticket);
    assert!(log.is_synced());
    // The full segment was synced, the new one renamed into place, and it is synced too.
    let paths = log.segment_paths();
    assert_eq!(paths[1], Path::new(DIR).join(SEG_8));
    assert_eq!(names(&sim), ["00000000000000000000.log", SEG_8]);
    assert_eq!(
        (sim.unsynced_len(&paths[0]), sim.unsynced_len(&paths[1])),
        (Some(0), Some(0))
    );
    drop(log);
    sim.crash(None);
    let (log, r) = open(&sim, FsyncPolicy::Never);
    assert_eq!((r.next_seq(), log.segment_paths()), (Seq(10), paths));
    assert_eq!(all(&log).concat(), b"xxxxxxxxxy");
}

#[test]
fn a_process_crash_in_the_middle_of_a_roll_keeps_the_segment_that_continues_the_log() {
    let sim = SimStorage::new();
    let log = roll_behind_the_sync_thread(&sim, true);
    drop(log);
    assert_eq!(names(&sim), ["00000000000000000000.log", SEG_8_TMP]);
    // `inspect` sees the log as recovery will take it: the new segment last.
    let seen = crate::log::inspect(&sim, Path::new(DIR)).unwrap();
    assert!(seen.is_clean(), "{seen:#?}");
    let segments: Vec<_> = seen.segments.iter().map(|s| (&s.path, s.records)).collect();
    let first = Path::new(DIR).join("00000000000000000000.log");
    let tmp = Path::new(DIR).join(SEG_8_TMP);
    assert_eq!(segments, [(&first, 8), (&tmp, 2)]);
    // The process is gone, the OS is not: the page cache holds everything written.
    let (log, r) = open(&sim, FsyncPolicy::Never);
    assert_eq!(
        r.report().finished_segment.as_deref(),
        Some(Path::new(DIR).join(SEG_8).as_path())
    );
    assert!(r.report().removed_temp_files.is_empty());
    assert_eq!((r.next_seq(), r.report().segments), (Seq(10), 2));
    assert_eq!(names(&sim), ["00000000000000000000.log", SEG_8]);
    assert_eq!(all(&log).concat(), b"xxxxxxxxxy");
    // Taken in durably: both segments were synced, the name too.
    drop(log);
    sim.crash(None);
    let (_, r) = open(&sim, FsyncPolicy::Never);
    assert_eq!(r.next_seq(), Seq(10));
}

#[test]
fn power_loss_in_the_middle_of_a_roll_removes_a_segment_that_does_not_continue_the_log() {
    let sim = SimStorage::new();
    let log = roll_behind_the_sync_thread(&sim, true);
    drop(log);
    // Say the temporary name reached the disk, but no data of either segment did.
    sim.sync_dir(Path::new(DIR)).unwrap();
    sim.crash(None);
    let seen = crate::log::inspect(&sim, Path::new(DIR)).unwrap();
    assert_eq!((seen.segments.len(), seen.is_clean()), (1, true));
    let (log, r) = open(&sim, FsyncPolicy::Never);
    let tmp = Path::new(DIR).join(SEG_8_TMP);
    assert_eq!(r.report().removed_temp_files, [tmp]);
    assert_eq!(r.report().finished_segment, None);
    assert_eq!((r.next_seq(), r.report().torn_bytes), (Seq(0), 0));
    assert_eq!(names(&sim), ["00000000000000000000.log"]);
    assert!(all(&log).is_empty());
}

#[test]
fn a_segment_whose_header_never_reached_the_disk_is_removed_even_where_it_would_fit() {
    let sim = SimStorage::new();
    let mut log = first_segment_full_behind_the_sync_thread(&sim);
    log.sync().unwrap(); // the first segment is durable, full
    sim.fail_next_sync(io::Error::from_raw_os_error(5));
    log.append(&[rec(b"y")]).unwrap(); // the roll, which fails on the thread
    assert!(log.sync().is_err());
    drop(log);
    sim.sync_dir(Path::new(DIR)).unwrap();
    sim.crash(None); // the new segment's name survives, its header does not
    let (log, r) = open(&sim, FsyncPolicy::Never);
    assert_eq!(
        r.report().removed_temp_files,
        [Path::new(DIR).join(SEG_8_TMP)]
    );
    assert_eq!(
        (r.report().finished_segment.as_deref(), r.next_seq()),
        (None, Seq(8))
    );
    assert_eq!(all(&log).concat(), b"xxxxxxxx");
}

/// A log with the sync thread, its first segment filled by eight records (the ninth rolls).
fn first_segment_full_behind_the_sync_thread(sim: &SimStorage) -> ShardLog {
    let (mut log, _) = open(sim, FsyncPolicy::Never);
    assert!(log.start_syncer("sb-io-test".to_owned()));
    let batch: Vec<_> = (0..8).map(|_| rec(b"x")).collect();
    assert_eq!(log.append(&batch).unwrap(), Seq(0)..Seq(8));
    log
}

/// A copy of the shard directory as it is now (what a crash of the process would leave).
fn copy_of(sim: &SimStorage) -> SimStorage {
    let copy = SimStorage::new();
    copy.create_dir_all(Path::new(DIR)).unwrap();
    for name in names(sim) {
        let path = Path::new(DIR).join(name);
        let mut file = copy.create(&path).unwrap();
        file.append(&sim.contents(&path).unwrap()).unwrap();
    }
    copy
}

/// Retention while a roll is in flight keeps the newest full segment: recovery takes in the
/// new segment, still under its temporary name, only where it continues one. Without it a
/// crash then left that segment alone, recovery removed it, and the durable checkpoint lay
/// outside an empty log (`CheckpointOutOfRange`).
#[test]
fn retention_keeps_the_full_segment_a_roll_in_flight_continues() {
    let sim = SimStorage::new();
    let mut log = first_segment_full_behind_the_sync_thread(&sim);
    log.checkpoint(Seq(7)).unwrap();
    assert_eq!(log.last_checkpoint(), Some(Seq(7)));
    // The roll's syncs take long enough to be in flight through what follows.
    sim.set_sync_delay(Duration::from_secs(1));
    assert_eq!(log.append(&[rec(b"y")]).unwrap(), Seq(8)..Seq(9));
    let first = Path::new(DIR).join("00000000000000000000.log");
    let none = RetentionLimit {
        max_bytes: Some(0),
        max_age: None,
    };
    assert_eq!(log.retain(Seq(7), none).unwrap(), Vec::<PathBuf>::new());
    assert_eq!(
        names(&sim),
        ["00000000000000000000.log", SEG_8_TMP, "checkpoint"]
    );
    let (crashed, r) = ShardLog::open(Arc::new(copy_of(&sim)), DIR, config(FsyncPolicy::Never))
        .expect("a crash in the middle of the roll recovers");
    assert_eq!((r.next_seq(), r.report().records), (Seq(9), 9));
    drop(crashed);
    // Once the roll is done, the full segment goes.
    log.sync().unwrap();
    assert_eq!(log.retain(Seq(7), none).unwrap(), [first]);
    assert_eq!(names(&sim), [SEG_8, "checkpoint"]);
}
