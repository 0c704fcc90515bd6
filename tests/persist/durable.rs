//! Durable publishing through the public API: every fsync policy confirms durable
//! publishes, a memory-only bus gives the message back, power loss (`SimStorage`) keeps
//! every confirmed message, and the pipelined commit never hands a handler a record that
//! is not yet logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::persist::{
    builder, crash, expected_per_topic, meta, per_topic, persistence, publish, seen, topic,
    wait_seen, DIR, TOPICS,
};
use shardbus::log::{FsyncPolicy, Reader, Seq, SimStorage, Storage};
use shardbus::{Bus, Context, DurableError};

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
    power_loss_keeps_confirmed(FsyncPolicy::Batch, None);
}

/// The policies whose durable confirmation waits for a sync.
const CONFIRM_BY_SYNCING: [FsyncPolicy; 3] = [
    FsyncPolicy::Batch,
    FsyncPolicy::Interval(Duration::from_millis(5)),
    FsyncPolicy::Always,
];

/// The same across segment rolls: 300-byte segments make each shard roll every few
/// records, each roll finished by the log's I/O thread behind the shard (1 ms simulated
/// syncs make later appends overlap it). Under every policy that confirms by syncing, a
/// message confirmed after a roll survives power loss, and so does everything before it.
#[test]
fn power_loss_across_segment_rolls_keeps_every_confirmed_message() {
    for policy in CONFIRM_BY_SYNCING {
        power_loss_keeps_confirmed(policy, Some(300));
    }
}

/// A message confirmed while the segment before its own is still being synced behind the
/// shard: with 100 ms simulated syncs, each roll's syncs are still running when the shard
/// appends after it, and power loss comes right after the confirmations. Each policy
/// that confirms by syncing confirms only once the roll is done, so everything confirmed
/// survives.
#[test]
fn a_message_confirmed_just_after_a_roll_survives_power_loss() {
    for policy in CONFIRM_BY_SYNCING {
        let sim = SimStorage::new();
        let s = seen();
        let p = |sim: &SimStorage| persistence(sim).fsync(policy).segment_size(300);
        let bus = builder(1, p(&sim), &s).build().unwrap();
        publish(&bus, 0, 8);
        sim.set_sync_delay(Duration::from_millis(100));
        publish(&bus, 8, 16);
        crash(bus, &sim, None);
        sim.set_sync_delay(Duration::ZERO);
        let again = seen();
        let bus = builder(1, p(&sim), &again).build().unwrap();
        let (got, _) = per_topic(&again);
        let all = expected_per_topic(0..24);
        assert_eq!(got, all, "{policy:?}: a confirmed message was lost");
        let dir = meta(&sim).shard_dir(Path::new(DIR), 0);
        assert!(
            sim_segments(&sim, &dir).len() >= 3,
            "{policy:?}: too few rolls"
        );
        bus.shutdown();
    }
}

fn power_loss_keeps_confirmed(policy: FsyncPolicy, segment_size: Option<u64>) {
    for tear in [None, Some(1), Some(40), Some(333), Some(usize::MAX)] {
        let sim = SimStorage::new();
        let persistence = |sim: &SimStorage| {
            let p = persistence(sim).fsync(policy);
            match segment_size {
                Some(size) => p.segment_size(size),
                None => p,
            }
        };
        if segment_size.is_some() {
            sim.set_sync_delay(Duration::from_millis(1));
        }
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
        sim.set_sync_delay(Duration::ZERO);
        let again = seen();
        let bus = builder(2, persistence(&sim), &again).build().unwrap();
        let (got, all_replay) = per_topic(&again);
        assert!(all_replay);
        let all = expected_per_topic(0..90);
        for t in 0..TOPICS {
            assert!(
                all[t].starts_with(&got[t]),
                "{policy:?} {tear:?}: topic {t} {:?}",
                got[t]
            );
            let confirmed = all[t].iter().filter(|&&n| n < 60).count();
            assert!(
                got[t].len() >= confirmed,
                "{policy:?} {tear:?}: topic {t} lost a confirmed message"
            );
        }
        if segment_size.is_some() {
            let rolled = (0..2)
                .map(|shard| meta(&sim).shard_dir(Path::new(DIR), shard))
                .all(|dir| sim_segments(&sim, &dir).len() >= 3);
            assert!(rolled, "{policy:?} {tear:?}: too few segment rolls");
        }
        bus.shutdown();
    }
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

/// A durable publish whose record would exceed `max_record_size` is refused with the
/// message back (it could never be logged, so it could never be confirmed); through the
/// bus and through a `Publisher`. Nothing of it reaches the log: a restart replays
/// exactly the messages that were confirmed.
#[test]
fn an_oversized_durable_publish_is_refused_with_the_message_back() {
    let sim = SimStorage::new();
    let s = seen();
    // 26 bytes of framing + a 3-byte topic: a payload of up to 71 bytes fits in 100.
    let bus = builder(1, persistence(&sim).max_record_size(100), &s)
        .build()
        .unwrap();
    let big = "x".repeat(72);
    match bus.publish_durable(topic(0), big.clone()) {
        Err(DurableError::TooLarge { msg, size, max }) => {
            assert_eq!((msg, size, max), (big.clone(), 101, 100));
        }
        other => panic!("an oversized durable publish was not refused: {other:?}"),
    }
    bus.publish_durable(topic(0), "y".repeat(71)).unwrap(); // exactly the maximum
    let mut p = bus.publisher();
    let err = p.publish_durable(topic(1), big.clone()).unwrap_err();
    assert!(err.is_too_large(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the message's record of 101 bytes exceeds the maximum record size of 100 bytes"
    );
    assert_eq!(err.into_inner(), Some(big));
    p.publish_durable(topic(1), "small".to_owned()).unwrap();
    wait_seen(&s, 2);
    crash(bus, &sim, None);
    let again = seen();
    let bus = builder(1, persistence(&sim), &again).build().unwrap();
    assert_eq!(
        *again.lock().unwrap(),
        [
            (topic(0), "y".repeat(71), true),
            (topic(1), "small".to_owned(), true)
        ]
    );
    bus.shutdown();
}
