//! Persistence through the public API: replay before new messages, durable publishes
//! under every fsync policy, power loss (`SimStorage`), shard-count changes, retention,
//! the log reader, fsync/full-disk poisoning and every kind of bad input at `build()`.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::persist::{
    builder, crash, expected_per_topic, first_shard, meta, per_topic, persistence, publish, seen,
    topic, wait_seen, Seen, DIR, TOPICS,
};
use shardbus::log::{
    CorruptReason, FsyncPolicy, LogError, Reader, RetentionLimit, Seq, SimStorage, Storage,
};
use shardbus::{
    Bus, Context, DeadLetterReason, DurableError, Error, OnShardCountChange, Persistence,
    PublishError,
};

#[test]
fn replay_runs_at_build_before_new_messages_and_a_clean_shutdown_checkpoints() {
    let sim = SimStorage::new();
    let first = seen();
    let bus = builder(3, persistence(&sim), &first).build().unwrap();
    assert!(bus.is_persistent());
    publish(&bus, 0, 100);
    wait_seen(&first, 100);
    crash(bus, &sim, Some(usize::MAX));

    // Restart: the 100 unfinished messages come back first, marked as replays, in
    // per-topic order; then a new message.
    let second = seen();
    let bus = builder(3, persistence(&sim), &second).build().unwrap();
    assert_eq!(per_topic(&second), (expected_per_topic(0..100), true));
    bus.publish_durable(topic(0), "100".to_owned()).unwrap();
    wait_seen(&second, 101);
    assert_eq!(second.lock().unwrap()[100], (topic(0), "100".into(), false));
    bus.shutdown();

    // A clean shutdown wrote the checkpoint: nothing to replay.
    let third = seen();
    let bus = builder(3, persistence(&sim), &third).build().unwrap();
    assert!(third.lock().unwrap().is_empty());
    bus.shutdown();
}

#[test]
fn a_replayed_record_without_a_builder_subscription_is_dead_lettered_with_the_flag() {
    let sim = SimStorage::new();
    let bus = builder(2, persistence(&sim), &seen()).build().unwrap();
    bus.publish_durable("orphan", "x".to_owned()).unwrap();
    crash(bus, &sim, None);

    let letters = Arc::new(Mutex::new(Vec::new()));
    let l = letters.clone();
    let bus = builder(2, persistence(&sim), &seen())
        .dead_letter(move |d| {
            let no_sub = matches!(d.reason, DeadLetterReason::NoSubscriber);
            l.lock()
                .unwrap()
                .push((d.topic.to_owned(), d.message.clone(), d.replay, no_sub));
        })
        .build()
        .unwrap();
    // `build()` returned after the replay: the letter is already there.
    assert_eq!(
        *letters.lock().unwrap(),
        [("orphan".to_owned(), "x".to_owned(), true, true)]
    );
    bus.shutdown();
}

#[test]
fn every_fsync_policy_confirms_durable_publishes() {
    for policy in [
        FsyncPolicy::Never,
        FsyncPolicy::Batch,
        FsyncPolicy::Interval(Duration::from_millis(5)),
        FsyncPolicy::Always,
    ] {
        let sim = SimStorage::new();
        let s = seen();
        let bus = builder(2, persistence(&sim).fsync(policy), &s)
            .build()
            .unwrap();
        for i in 0..20 {
            bus.publish_durable(topic(i), i.to_string()).unwrap();
        }
        publish(&bus, 20, 30);
        wait_seen(&s, 50);
        if policy != FsyncPolicy::Never {
            // Confirmed means synced: power loss keeps all of it.
            crash(bus, &sim, None);
            let again = seen();
            let bus = builder(2, persistence(&sim), &again).build().unwrap();
            assert_eq!(
                per_topic(&again),
                (expected_per_topic(0..50), true),
                "{policy:?}"
            );
            bus.shutdown();
        } else {
            bus.shutdown();
        }
    }
}

#[test]
fn durable_publish_on_a_memory_only_bus_gives_the_message_back() {
    let bus = Bus::<String>::builder().shards(1).build().unwrap();
    match bus.publish_durable("t", "m".to_owned()) {
        Err(DurableError::NotPersistent(m)) => assert_eq!(m, "m"),
        other => panic!("{other:?}"),
    }
    let mut p = bus.publisher();
    assert!(matches!(
        p.publish_durable("t", "m".to_owned()),
        Err(DurableError::NotPersistent(_))
    ));
    assert!(matches!(
        p.wait_durable(),
        Err(DurableError::NotPersistent(()))
    ));
    bus.shutdown();
}

/// Power loss: `SimStorage` drops everything not synced and tears the last write at an
/// arbitrary byte. Every confirmed message survives; of the rest, a per-topic prefix.
#[test]
fn power_loss_keeps_every_confirmed_message() {
    for tear in [None, Some(1), Some(40), Some(333), Some(usize::MAX)] {
        let sim = SimStorage::new();
        let s = seen();
        let bus = builder(2, persistence(&sim), &s).build().unwrap();
        publish(&bus, 0, 60); // confirmed
        let mut p = bus.publisher();
        for i in 60..90 {
            p.publish(topic(i), i.to_string()).unwrap(); // not waited for
        }
        wait_seen(&s, 90);
        drop(p);
        crash(bus, &sim, tear);
        let again = seen();
        let bus = builder(2, persistence(&sim), &again).build().unwrap();
        let (got, all_replay) = per_topic(&again);
        assert!(all_replay);
        let all = expected_per_topic(0..90);
        for t in 0..TOPICS {
            assert!(
                all[t].starts_with(&got[t]),
                "{tear:?}: topic {t} {:?}",
                got[t]
            );
            let confirmed = all[t].iter().filter(|&&n| n < 60).count();
            assert!(
                got[t].len() >= confirmed,
                "{tear:?}: topic {t} lost a confirmed message"
            );
        }
        bus.shutdown();
    }
}

/// Writes 40 handled-and-checkpointed messages, then 200 unfinished ones, with 4 shards.
fn four_shard_log(sim: &SimStorage) {
    let s = seen();
    let bus = builder(4, persistence(sim), &s).build().unwrap();
    publish(&bus, 0, 40);
    bus.shutdown(); // checkpointed: never replayed
    let s = seen();
    let bus = builder(4, persistence(sim), &s).build().unwrap();
    publish(&bus, 40, 200);
    wait_seen(&s, 200);
    crash(bus, sim, Some(usize::MAX));
}

#[test]
fn shard_count_change_replays_every_unfinished_message_in_per_topic_order() {
    for shards in [2, 3] {
        let sim = SimStorage::new();
        four_shard_log(&sim);
        assert_eq!((meta(&sim).shards, meta(&sim).generation), (4, 0));
        let s = seen();
        let bus = builder(shards, persistence(&sim), &s).build().unwrap();
        assert_eq!(
            per_topic(&s),
            (expected_per_topic(40..240), true),
            "{shards}"
        );
        let m = meta(&sim);
        assert_eq!((m.shards as usize, m.generation), (shards, 1));
        assert_eq!(
            sim.list_subdirs(Path::new(DIR)).unwrap(),
            ["gen-1"],
            "the old generation is removed"
        );
        // Every record sits in the shard the current mapping gives its topic.
        for i in 0..shards {
            let reader = Reader::open(
                Arc::new(sim.clone()),
                m.shard_dir(Path::new(DIR), i),
                Seq(0),
            )
            .unwrap();
            for rec in reader {
                let rec = rec.unwrap();
                assert_eq!(bus.shard_of(&rec.topic).unwrap().index(), i);
            }
        }
        bus.shutdown();
    }
}

#[test]
fn shard_count_change_can_be_an_error_and_a_failed_reshard_is_redone() {
    let sim = SimStorage::new();
    four_shard_log(&sim);
    let p = persistence(&sim).on_shard_count_change(OnShardCountChange::Error);
    let err = builder(2, p, &seen()).build().unwrap_err();
    assert!(
        matches!(
            err,
            Error::ShardCountMismatch {
                found: 4,
                expected: 2
            }
        ),
        "{err}"
    );
    assert_eq!(meta(&sim).shards, 4, "nothing changed");

    // A reshard that fails half-way (the disk fills while writing the new generation)
    // leaves the old generation current; the next build reshards again, completely.
    sim.fail_next_append(io::Error::from_raw_os_error(28), 3);
    assert!(builder(2, persistence(&sim), &seen()).build().is_err());
    assert_eq!(meta(&sim).generation, 0);
    sim.crash(Some(7)); // and the power goes too
    let s = seen();
    let bus = builder(2, persistence(&sim), &s).build().unwrap();
    assert_eq!(per_topic(&s), (expected_per_topic(40..240), true));
    assert_eq!((meta(&sim).shards, meta(&sim).generation), (2, 1));
    bus.shutdown();
}

/// One shard, so that the next sync is that shard's commit.
fn one_shard(sim: &SimStorage) -> (Bus<String>, Arc<Mutex<Vec<String>>>) {
    let letters = Arc::new(Mutex::new(Vec::new()));
    let l = letters.clone();
    let bus = builder(1, persistence(sim), &seen())
        .dead_letter(move |d| {
            if let DeadLetterReason::NotLogged { error } = d.reason {
                l.lock().unwrap().push(format!("{} {error}", d.message));
            }
        })
        .build()
        .unwrap();
    (bus, letters)
}

fn check_poisoned(bus: &Bus<String>, letters: &Mutex<Vec<String>>, op: &str) {
    let error = bus.log_error(first_shard()).unwrap();
    assert!(error.contains(op), "{error}");
    // The message that met the failure was not handled: it is dead-lettered.
    let letters = letters.lock().unwrap();
    assert!(letters.iter().any(|l| l.starts_with("b ")), "{letters:?}");
    drop(letters);
    // Later publishes are refused with their message back.
    match bus.publish_durable(topic(0), "c".to_owned()) {
        Err(DurableError::Closed(m)) => assert_eq!(m, "c"),
        other => panic!("{other:?}"),
    }
    match bus.publish(topic(0), "d".to_owned()) {
        Err(PublishError::Closed(m)) => assert_eq!(m, "d"),
        other => panic!("{other:?}"),
    }
    let mut p = bus.publisher();
    assert!(matches!(
        p.publish_durable(topic(0), "e".to_owned()),
        Err(DurableError::Closed(m)) if m == "e"
    ));
}

#[test]
fn an_fsync_error_poisons_the_shard_log() {
    let sim = SimStorage::new();
    let (bus, letters) = one_shard(&sim);
    bus.publish_durable(topic(0), "a".to_owned()).unwrap();
    sim.fail_next_sync(io::Error::from_raw_os_error(5)); // EIO
    assert!(matches!(
        bus.publish_durable(topic(0), "b".to_owned()),
        Err(DurableError::Unconfirmed)
    ));
    check_poisoned(&bus, &letters, "sync_data");
    bus.shutdown();
}

#[test]
fn a_full_disk_poisons_the_shard_log() {
    let sim = SimStorage::new();
    let (bus, letters) = one_shard(&sim);
    bus.publish_durable(topic(0), "a".to_owned()).unwrap();
    sim.fail_next_append(io::Error::from_raw_os_error(28), 5); // ENOSPC, 5 bytes written
    assert!(matches!(
        bus.publish_durable(topic(0), "b".to_owned()),
        Err(DurableError::Unconfirmed)
    ));
    check_poisoned(&bus, &letters, "append");
    bus.shutdown();
    // The partial write is a torn tail at the next start; "a" is intact.
    let s = seen();
    let bus = builder(1, persistence(&sim), &s).build().unwrap();
    assert!(s.lock().unwrap().iter().all(|(_, m, _)| m != "b"));
    bus.shutdown();
}

#[test]
fn an_oversized_record_is_dead_lettered_not_written() {
    let sim = SimStorage::new();
    let letters = Arc::new(Mutex::new(Vec::new()));
    let l = letters.clone();
    let s = seen();
    let bus = builder(1, persistence(&sim).max_record_size(100), &s)
        .dead_letter(move |d| {
            if let DeadLetterReason::NotLogged { error } = d.reason {
                l.lock().unwrap().push(error.to_owned());
            }
        })
        .build()
        .unwrap();
    bus.publish_durable(topic(0), "x".repeat(200)).unwrap();
    bus.publish_durable(topic(0), "small".to_owned()).unwrap();
    wait_seen(&s, 1);
    assert_eq!(letters.lock().unwrap().len(), 1);
    assert!(bus.log_error(first_shard()).is_none());
    bus.shutdown();
}

/// Writes 30 messages to a one-shard bus with 300-byte segments; returns the segments.
fn small_segments(sim: &SimStorage) -> Vec<PathBuf> {
    let s = seen();
    let bus = builder(1, persistence(sim).segment_size(300), &s)
        .build()
        .unwrap();
    publish(&bus, 0, 30);
    wait_seen(&s, 30);
    crash(bus, sim, None);
    let dir = meta(sim).shard_dir(Path::new(DIR), 0);
    let mut names = sim.list_dir(&dir).unwrap();
    names.sort();
    let segs: Vec<PathBuf> = names
        .iter()
        .filter(|n| n.to_str().unwrap().ends_with(".log"))
        .map(|n| dir.join(n))
        .collect();
    assert!(segs.len() >= 3, "{segs:?}");
    segs
}

fn build_err(p: Persistence) -> LogError {
    match builder(1, p, &seen()).build() {
        Err(Error::Log(e)) => e,
        Err(e) => panic!("not a log error: {e}"),
        Ok(_) => panic!("built on a damaged log"),
    }
}

#[test]
fn a_corrupt_middle_segment_is_an_error_unless_truncation_is_asked_for() {
    let sim = SimStorage::new();
    let segs = small_segments(&sim);
    sim.modify(&segs[1], |d| d[30] ^= 0x40);
    match build_err(persistence(&sim)) {
        LogError::Corrupt {
            path,
            offset: 16,
            reason: CorruptReason::CrcMismatch { .. },
        } => assert_eq!(path, segs[1]),
        e => panic!("{e}"),
    }
    // The explicit option cuts the log there; the records before the damage replay.
    let s = seen();
    let bus = builder(1, persistence(&sim).truncate_on_corruption(true), &s)
        .build()
        .unwrap();
    let n = s.lock().unwrap().len();
    assert!(n > 0 && n < 30, "{n}");
    let (by, _) = per_topic(&s);
    let all = expected_per_topic(0..30);
    for t in 0..TOPICS {
        assert!(all[t].starts_with(&by[t]));
    }
    bus.shutdown();
}

#[test]
fn damaged_headers_are_typed_errors() {
    let sim = SimStorage::new();
    let segs = small_segments(&sim);
    let original = sim.contents(&segs[1]).unwrap();
    sim.modify(&segs[1], |d| d.truncate(10));
    assert!(matches!(
        build_err(persistence(&sim)),
        LogError::TruncatedHeader { len: 10, ref path } if *path == segs[1]
    ));
    sim.modify(&segs[1], |d| {
        *d = original.clone();
        d[0] = b'X';
    });
    assert!(matches!(
        build_err(persistence(&sim)),
        LogError::BadMagic { ref path, .. } if *path == segs[1]
    ));
    sim.modify(&segs[1], |d| {
        *d = original.clone();
        d[8] = 9;
    });
    assert!(matches!(
        build_err(persistence(&sim).truncate_on_corruption(true)),
        LogError::UnsupportedVersion { version: 9, .. }
    ));
}

#[test]
fn a_checkpoint_beyond_the_end_of_the_log_is_an_error() {
    let sim = SimStorage::new();
    let s = seen();
    let bus = builder(1, persistence(&sim), &s).build().unwrap();
    publish(&bus, 0, 10);
    bus.shutdown(); // checkpoint 9
    let dir = meta(&sim).shard_dir(Path::new(DIR), 0);
    let seg = dir.join("00000000000000000000.log");
    sim.modify(&seg, |d| d.truncate(16)); // the records are gone, the checkpoint stays
    assert!(matches!(
        build_err(persistence(&sim)),
        LogError::CheckpointOutOfRange {
            checkpoint: Seq(9),
            next_seq: Seq(0),
            ..
        }
    ));
}

#[test]
fn bad_bus_directories_are_typed_errors() {
    // The meta file damaged.
    let sim = SimStorage::new();
    builder(1, persistence(&sim), &seen())
        .build()
        .unwrap()
        .shutdown();
    sim.modify(&Path::new(DIR).join("meta"), |d| d[14] ^= 1);
    assert!(matches!(
        build_err(persistence(&sim)),
        LogError::Corrupt {
            reason: CorruptReason::CrcMismatch { .. },
            ..
        }
    ));
    // Shard logs without a meta file.
    sim.remove_file(&Path::new(DIR).join("meta")).unwrap();
    assert!(matches!(
        build_err(persistence(&sim)),
        LogError::Corrupt {
            reason: CorruptReason::MissingMeta,
            ..
        }
    ));
    // A directory that cannot be created (a file is in the way), on the real filesystem.
    let tmp = common::TestDir::new("baddir");
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let p = Persistence::new(file.join("bus"));
    match Bus::<String>::builder().shards(1).persist(p).build() {
        Err(Error::Log(LogError::Io { path, .. })) => assert_eq!(path, file.join("bus")),
        other => panic!("{other:?}"),
    }
    // A missing directory is created.
    let missing = tmp.path().join("a/b/bus");
    let bus = Bus::<String>::builder()
        .shards(1)
        .persist(Persistence::new(&missing))
        .build()
        .unwrap();
    bus.publish_durable("t", "m".to_owned()).unwrap();
    bus.shutdown();
    assert!(missing.join("meta").exists());
}

#[test]
fn a_payload_that_does_not_decode_stops_the_build() {
    let sim = SimStorage::new();
    let bus = Bus::<Vec<u8>>::builder()
        .shards(1)
        .persist(persistence(&sim))
        .build()
        .unwrap();
    bus.publish_durable("t", vec![0xff, 0xfe]).unwrap();
    crash_bytes(bus, &sim);
    match builder(1, persistence(&sim), &seen()).build() {
        Err(Error::Decode { seq: Seq(0), .. }) => {}
        other => panic!("{other:?}"),
    }
}

fn crash_bytes(bus: Bus<Vec<u8>>, sim: &SimStorage) {
    std::mem::forget(bus);
    sim.crash(None);
}

#[test]
fn retention_deletes_handled_segments_and_the_reader_reads_from_a_seq() {
    let sim = SimStorage::new();
    let s = seen();
    let p = persistence(&sim)
        .segment_size(300)
        .checkpoint_every(10, Duration::from_millis(1))
        .retention(RetentionLimit {
            max_bytes: Some(600),
            max_age: None,
        });
    let bus = builder(1, p, &s).build().unwrap();
    for i in 0..100 {
        bus.publish_durable(topic(i), i.to_string()).unwrap();
    }
    bus.shutdown();
    let dir = meta(&sim).shard_dir(Path::new(DIR), 0);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    // The oldest segments are gone...
    assert!(matches!(
        Reader::open(storage.clone(), &dir, Seq(0)),
        Err(LogError::SeqUnavailable {
            requested: Seq(0),
            ..
        })
    ));
    let size: u64 = sim
        .list_dir(&dir)
        .unwrap()
        .iter()
        .filter(|n| n.to_str().unwrap().ends_with(".log"))
        .map(|n| sim.file_len(&dir.join(n)).unwrap())
        .sum();
    assert!(size <= 600 + 300, "{size}");
    // ... and the rest reads back in order from any seq still there.
    let got: Vec<(u64, String)> = Reader::open(storage, &dir, Seq(95))
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            (r.seq.get(), String::from_utf8(r.payload).unwrap())
        })
        .collect();
    let want: Vec<(u64, String)> = (95..100).map(|i| (i, i.to_string())).collect();
    assert_eq!(got, want);
}

/// A message an actor publishes onward to another shard lives in memory until that
/// shard logs it. The sending shard must therefore not checkpoint past the record that
/// caused it before the receiving shard has made it durable, or a crash in between
/// loses it. Here the receiving shard is held inside a handler, the sender checkpoints
/// after every record, and the process crashes: the causing record must be replayed,
/// and the onward message then delivered.
#[test]
fn onward_messages_are_not_lost_to_a_checkpoint() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let sim = SimStorage::new();
    let probe = Bus::<String>::builder()
        .shards(2)
        .pin_threads(false)
        .build()
        .unwrap();
    let a = "a".to_owned();
    let shard_a = probe.shard_of(&a).unwrap();
    let other = |prefix: &str| {
        (0..100)
            .map(|i| format!("{prefix}{i}"))
            .find(|t| probe.shard_of(t).unwrap() != shard_a)
            .unwrap()
    };
    let (b, block) = (other("b"), other("block"));
    drop(probe);

    let gate = Arc::new(AtomicBool::new(false));
    let blocked = Arc::new(AtomicBool::new(false));
    let forwarded = Arc::new(AtomicBool::new(false));
    let make = |seen_b: &Seen, hold: bool| {
        let p = Persistence::new(DIR)
            .storage(Arc::new(sim.clone()))
            .checkpoint_every(1, Duration::ZERO);
        let (gate, blocked, forwarded, seen_b) = (
            gate.clone(),
            blocked.clone(),
            forwarded.clone(),
            seen_b.clone(),
        );
        let b_topic = b.clone();
        Bus::<String>::builder()
            .shards(2)
            .pin_threads(false)
            .persist(p)
            .subscribe(
                a.clone(),
                move |ctx: &mut Context<'_, String>, m: &String| {
                    ctx.publish(b_topic.as_str(), format!("onward {m}"))
                        .unwrap();
                    forwarded.store(true, Ordering::SeqCst);
                },
            )
            .subscribe(b.clone(), move |_: &mut Context<'_, String>, m: &String| {
                seen_b
                    .lock()
                    .unwrap()
                    .push((String::new(), m.clone(), false));
            })
            .subscribe(
                block.clone(),
                move |_: &mut Context<'_, String>, _: &String| {
                    blocked.store(true, Ordering::SeqCst);
                    while hold && !gate.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                },
            )
            .build()
            .unwrap()
    };

    let seen_b = seen();
    let bus = make(&seen_b, true);
    // Hold the receiving shard inside a handler, so it neither drains nor logs its lanes.
    bus.publish(block.as_str(), "hold".into()).unwrap();
    while !blocked.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut p = bus.publisher();
    p.publish(a.as_str(), "1".into()).unwrap();
    p.wait_durable().unwrap();
    while !forwarded.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Give the sender every chance to checkpoint (it may after each record); only
    // widens the window, the outcome does not depend on it.
    std::thread::sleep(Duration::from_millis(50));
    drop(p);
    crash(bus, &sim, None);
    gate.store(true, Ordering::SeqCst);

    let seen_b2 = seen();
    let bus = make(&seen_b2, false);
    wait_seen(&seen_b2, 1);
    bus.shutdown();
    let got: Vec<String> = seen_b2
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.1.clone())
        .collect();
    assert_eq!(got, vec!["onward 1".to_string()]);
    assert!(
        seen_b.lock().unwrap().is_empty(),
        "the receiver was held before it could handle"
    );
}

/// The pipelined commit (`Batch`): the shard drains and writes the next batch while the
/// last one is being synced, yet a handler only ever sees a message whose record is
/// already durable. A slow simulated sync makes the overlap happen (and the test checks
/// that it did: a handler saw unsynced bytes of a *later* batch in the log).
#[test]
fn pipelined_commit_never_hands_a_handler_an_unsynced_record() {
    pipelined_write_ahead(FsyncPolicy::Batch);
}

/// The same check under `Never` (checkpoints on the I/O thread, appends on the shard's):
/// a handler only sees a message whose record the storage has (a crash of the process
/// keeps it).
#[test]
fn never_hands_a_handler_an_unwritten_record() {
    pipelined_write_ahead(FsyncPolicy::Never);
}

fn pipelined_write_ahead(policy: FsyncPolicy) {
    const N: usize = 20_000;
    // Every record is the same size (topic "t", payload "m" and 6 digits), so message
    // `i` ends at a known offset of the one segment: 16-byte header, 26 + 1 + 7 per record.
    let end_of = |i: usize| 16 + 34 * (i as u64 + 1);
    let durable = policy != FsyncPolicy::Never;
    let sim = SimStorage::new();
    sim.set_sync_delay(Duration::from_millis(1));
    let overlapped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handled = Arc::new(Mutex::new(Vec::new()));
    let (s2, o2, h2) = (sim.clone(), overlapped.clone(), handled.clone());
    let bus = Bus::<String>::builder()
        .pin_threads(false)
        .persist(persistence(&sim).fsync(policy))
        .subscribe("t", move |_: &mut Context<'_, String>, m: &String| {
            let i: usize = m[1..].parse().unwrap();
            let dir = meta(&s2).shard_dir(Path::new(DIR), 0);
            let segs = sim_segments(&s2, &dir);
            assert_eq!(segs.len(), 1);
            let written = s2.file_len(&segs[0]).unwrap();
            let unsynced = s2.unsynced_len(&segs[0]).unwrap() as u64;
            let logged = if durable { written - unsynced } else { written };
            assert!(
                logged >= end_of(i),
                "handler saw {m} before its record was logged: {logged} < {}",
                end_of(i)
            );
            if written > end_of(i) && unsynced > 0 {
                // A later batch is in the file, not yet synced, while this one's handlers run.
                o2.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            h2.lock().unwrap().push(m.clone());
        })
        .build()
        .unwrap();
    let mut p = bus.publisher();
    for i in 0..N {
        p.publish("t", format!("m{i:06}")).unwrap();
    }
    p.wait_durable().unwrap();
    bus.shutdown();
    let handled = handled.lock().unwrap();
    let expected: Vec<String> = (0..N).map(|i| format!("m{i:06}")).collect();
    assert_eq!(*handled, expected, "exactly once, in order");
    assert!(
        !durable || overlapped.load(std::sync::atomic::Ordering::Relaxed),
        "no handler ran while a later batch was written and unsynced: no pipelining"
    );
    // The log holds exactly these records, in order.
    let dir = meta(&sim).shard_dir(Path::new(DIR), 0);
    let logged: Vec<Vec<u8>> = Reader::open(Arc::new(sim.clone()), dir, Seq(0))
        .unwrap()
        .map(|r| r.unwrap().payload)
        .collect();
    let expected: Vec<Vec<u8>> = expected.into_iter().map(String::into_bytes).collect();
    assert_eq!(logged, expected);
}

fn sim_segments(sim: &SimStorage, dir: &Path) -> Vec<PathBuf> {
    sim.list_dir(dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.to_str().unwrap().ends_with(".log"))
        .map(|n| dir.join(n))
        .collect()
}

/// A sync that fails while batches wait in the pipelined commit poisons the log: every
/// message is handled or dead-lettered (`NotLogged`) or refused at publish, exactly once;
/// the handled ones are a prefix of the published order and all survive power loss; the
/// publisher's wait reports them unconfirmed.
#[test]
fn a_sync_error_in_the_pipelined_commit_poisons_and_dead_letters() {
    const N: usize = 4000;
    let sim = SimStorage::new();
    sim.set_sync_delay(Duration::from_micros(300));
    let handled = Arc::new(Mutex::new(Vec::new()));
    let letters = Arc::new(Mutex::new(Vec::new()));
    let (h2, l2) = (handled.clone(), letters.clone());
    let bus = Bus::<String>::builder()
        .pin_threads(false)
        .persist(persistence(&sim).fsync(FsyncPolicy::Batch))
        .subscribe("t", move |_: &mut Context<'_, String>, m: &String| {
            h2.lock().unwrap().push(m.clone());
        })
        .dead_letter(move |d| {
            assert!(matches!(d.reason, DeadLetterReason::NotLogged { .. }));
            l2.lock().unwrap().push(d.message.clone());
        })
        .build()
        .unwrap();
    let mut p = bus.publisher();
    let mut refused = Vec::new();
    for i in 0..N {
        if i == N / 4 {
            sim.fail_next_sync(io::Error::from_raw_os_error(5)); // EIO
        }
        if let Err(PublishError::Closed(m)) = p.publish("t", format!("m{i:06}")) {
            refused.push(m);
        }
    }
    assert!(
        p.wait_durable().is_err(),
        "the failed sync is not confirmed"
    );
    let error = bus.log_error(first_shard()).expect("the log is poisoned");
    assert!(error.contains("sync_data"), "{error}");
    // Stop the shard (it has dead-lettered or handled everything it drained).
    bus.shutdown();
    let handled = handled.lock().unwrap().clone();
    let letters = letters.lock().unwrap().clone();
    assert!(!letters.is_empty());
    let mut all: Vec<String> = handled
        .iter()
        .chain(&letters)
        .chain(&refused)
        .cloned()
        .collect();
    all.sort();
    let expected: Vec<String> = (0..N).map(|i| format!("m{i:06}")).collect();
    assert_eq!(
        all, expected,
        "each message handled, dead-lettered or refused, once"
    );
    assert_eq!(
        handled,
        expected[..handled.len()],
        "handled: a prefix, in order"
    );

    // Power loss: every handled message was synced, so it is replayed.
    sim.crash(None);
    let replayed = Arc::new(Mutex::new(Vec::new()));
    let r2 = replayed.clone();
    let bus = Bus::<String>::builder()
        .pin_threads(false)
        .persist(persistence(&sim).fsync(FsyncPolicy::Batch))
        .subscribe("t", move |_: &mut Context<'_, String>, m: &String| {
            r2.lock().unwrap().push(m.clone());
        })
        .build()
        .unwrap();
    bus.shutdown();
    let replayed = replayed.lock().unwrap();
    assert!(
        replayed.len() >= handled.len() && replayed[..handled.len()] == handled[..],
        "handled {} messages, {} survived power loss",
        handled.len(),
        replayed.len()
    );
}
