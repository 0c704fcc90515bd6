//! Replay to pattern subscriptions: a builder's pattern is installed on every shard before
//! the replay, so the records after the checkpoint reach its actors (one per topic), in
//! per-topic order, after a crash and after a shard-count change.

use std::sync::{Arc, Mutex};

use crate::common::persist::{
    crash, expected_per_topic, meta, per_topic, persistence, publish, seen, wait_seen, Seen,
};
use shardbus::log::SimStorage;
use shardbus::{Builder, Bus, Context, Persistence, Supervision};

/// A bus whose only subscription is the pattern `*` (every one-token topic: `t00`..`t19`),
/// recording what each actor sees and counting the actors made.
fn pattern_builder(
    shards: usize,
    p: Persistence,
    seen: &Seen,
    made: &Arc<Mutex<usize>>,
) -> Builder<String> {
    let (seen, made) = (seen.clone(), made.clone());
    Bus::<String>::builder()
        .shards(shards)
        .pin_threads(false)
        .persist(p)
        .subscribe_pattern("*", Supervision::Resume, move || {
            *made.lock().unwrap() += 1;
            let seen = seen.clone();
            move |ctx: &mut Context<'_, String>, m: &String| {
                seen.lock()
                    .unwrap()
                    .push((ctx.topic().to_owned(), m.clone(), ctx.is_replay()));
            }
        })
}

/// 40 handled and checkpointed messages, then 200 handled but not checkpointed, then a
/// crash (no tear): the 200 are what a replay owes.
fn log_with_unfinished(sim: &SimStorage, shards: usize) {
    let made = Arc::new(Mutex::new(0));
    let s = seen();
    let bus = pattern_builder(shards, persistence(sim), &s, &made)
        .build()
        .unwrap();
    publish(&bus, 0, 40);
    bus.shutdown();
    let s = seen();
    let bus = pattern_builder(shards, persistence(sim), &s, &made)
        .build()
        .unwrap();
    publish(&bus, 40, 200);
    wait_seen(&s, 200);
    crash(bus, sim, Some(usize::MAX));
}

#[test]
fn a_pattern_gets_the_replay_after_a_crash() {
    let sim = SimStorage::new();
    log_with_unfinished(&sim, 3);
    let s = seen();
    let made = Arc::new(Mutex::new(0));
    let bus = pattern_builder(3, persistence(&sim), &s, &made)
        .build()
        .unwrap();
    // `build()` returned after the replay: every unfinished record, per-topic order, as
    // replay, each topic through its own actor of the pattern.
    assert_eq!(per_topic(&s), (expected_per_topic(40..240), true));
    assert_eq!(*made.lock().unwrap(), 20);
    // Topics first seen by the logged pass (not in the replay) get their actors too.
    for i in 0..5 {
        bus.publish_durable(format!("fresh{i}"), format!("f{i}"))
            .unwrap();
    }
    bus.flush().unwrap();
    let fresh: Vec<(String, String, bool)> = s.lock().unwrap().iter().skip(200).cloned().collect();
    let want: Vec<(String, String, bool)> = (0..5)
        .map(|i| (format!("fresh{i}"), format!("f{i}"), false))
        .collect();
    let mut fresh_sorted = fresh.clone();
    fresh_sorted.sort();
    assert_eq!(fresh_sorted, want);
    assert_eq!(*made.lock().unwrap(), 25);
    bus.shutdown();
}

#[test]
fn a_pattern_gets_the_replay_after_a_shard_count_change() {
    for shards in [1, 2, 5] {
        let sim = SimStorage::new();
        log_with_unfinished(&sim, 3);
        let s = seen();
        let made = Arc::new(Mutex::new(0));
        let bus = pattern_builder(shards, persistence(&sim), &s, &made)
            .build()
            .unwrap();
        assert_eq!(
            per_topic(&s),
            (expected_per_topic(40..240), true),
            "{shards} shards"
        );
        assert_eq!(meta(&sim).shards as usize, shards);
        assert_eq!(*made.lock().unwrap(), 20);
        // New traffic after the replay reaches the same actors.
        publish(&bus, 240, 20);
        wait_seen(&s, 220);
        assert_eq!(*made.lock().unwrap(), 20);
        bus.shutdown();
    }
}
