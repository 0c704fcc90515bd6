//! Replay through the public API: at `build()`, before any new message, the unfinished
//! messages of the last run come back marked as replays, in per-topic order; a clean
//! shutdown checkpoints, so nothing replays; a replayed record without a subscriber is
//! dead-lettered with the replay flag; a message an actor publishes onward is not lost
//! to the sending shard's checkpoint.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::persist::{
    builder, crash, expected_per_topic, per_topic, persistence, publish, seen, topic, wait_seen,
    Seen, DIR,
};
use crate::common::PATIENCE;
use shardbus::log::SimStorage;
use shardbus::{Bus, Context, DeadLetterReason, Persistence};

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
                    // Bounded, so a failing test cannot leave this shard held forever.
                    let deadline = Instant::now() + PATIENCE;
                    while hold && !gate.load(Ordering::SeqCst) && Instant::now() < deadline {
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
    wait_for(&blocked, "the receiving shard entering the holding handler");
    let mut p = bus.publisher();
    p.publish(a.as_str(), "1".into()).unwrap();
    p.wait_durable().unwrap();
    wait_for(&forwarded, "the sender publishing onward");
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

/// Waits until `flag` is set; fails the test after [`PATIENCE`] instead of hanging.
fn wait_for(flag: &std::sync::atomic::AtomicBool, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !flag.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
