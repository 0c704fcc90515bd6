//! Shard-count changes of a persistent bus: every unfinished message is replayed in
//! per-topic order from a new generation laid out for the new count, or `build()`
//! refuses (`OnShardCountChange::Error`); a reshard that fails half-way is redone.

use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::common::persist::{
    builder, crash, expected_per_topic, meta, per_topic, persistence, publish, seen, wait_seen, DIR,
};
use shardbus::log::{Reader, Seq, SimStorage, Storage};
use shardbus::{Error, OnShardCountChange};

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

#[test]
fn growing_the_shard_count_replays_every_topic_in_its_original_order() {
    // The other direction of the test above, and from one shard (every topic in one log)
    // to many: each topic's records, spread over new shards by the current routing, are
    // replayed exactly once each and in publish order (`per_topic` keeps the order seen).
    for (from, to) in [(1, 4), (2, 5), (3, 8)] {
        let sim = SimStorage::new();
        let s = seen();
        let bus = builder(from, persistence(&sim), &s).build().unwrap();
        publish(&bus, 0, 300);
        wait_seen(&s, 300);
        crash(bus, &sim, Some(usize::MAX));
        let s = seen();
        let bus = builder(to, persistence(&sim), &s).build().unwrap();
        assert_eq!(
            per_topic(&s),
            (expected_per_topic(0..300), true),
            "{from} -> {to} shards"
        );
        assert_eq!(meta(&sim).shards as usize, to);
        let stats = bus.shutdown();
        assert_eq!(stats.handled(), 300, "{from} -> {to} shards");
    }
}
