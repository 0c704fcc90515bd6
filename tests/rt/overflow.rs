//! Actor-to-actor overflow: a handler's cross-shard publish that meets a full lane waits
//! in its shard's overflow queue, which is bounded (`Builder::overflow_limit`); past the
//! bound `Context::publish` refuses with the message back, and the depth, its peak and
//! the refusals are in the statistics.
//!
//! Every check is exact (counts, contents). Nothing waits on a timer for correctness.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::common::{assert_quiescent_stats, name_on_shard, PATIENCE};
use shardbus::{Bus, Context, PublishError};

/// What the actors of the cycle saw.
#[derive(Default)]
struct Tally {
    handled: AtomicU64,
    attempts: AtomicU64,
    refused: AtomicU64,
    /// Any other outcome: a refusal with the wrong message, or another error.
    faults: AtomicU64,
}

/// Subscribes an actor to `me` that, for a message of depth `d < depth`, publishes two
/// messages of depth `d + 1` to `next`.
fn amplifier(bus: &Bus<u32>, me: &str, next: String, depth: u32, tally: &Arc<Tally>) {
    let tally = tally.clone();
    bus.subscribe(me, move |ctx: &mut Context<'_, u32>, d: &u32| {
        tally.handled.fetch_add(1, Relaxed);
        if *d >= depth {
            return;
        }
        for _ in 0..2 {
            tally.attempts.fetch_add(1, Relaxed);
            match ctx.publish(next.as_str(), d + 1) {
                Ok(()) => {}
                Err(PublishError::Full(back)) if back == d + 1 => {
                    tally.refused.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    tally.faults.fetch_add(1, Relaxed);
                }
            }
        }
    })
    .unwrap();
}

/// Each message on shard 0 makes two on shard 1 and back, for 14 generations (32,767
/// messages if nothing were refused), through 2-slot lanes. The overflow queues would
/// grow to thousands; bounded at 16, they stay at or below it, the excess is refused
/// back to the handlers, and every publish is accounted for.
#[test]
fn an_amplifying_actor_cycle_is_refused_at_the_overflow_limit() {
    const LIMIT: u64 = 16;
    const DEPTH: u32 = 14;
    let bus = Bus::<u32>::builder()
        .shards(2)
        .pin_threads(false)
        .capacity(2)
        .lane_capacity(2)
        .overflow_limit(LIMIT as usize)
        .build()
        .unwrap();
    let a = name_on_shard(&bus, "a", 0);
    let b = name_on_shard(&bus, "b", 1);
    let tally = Arc::new(Tally::default());
    amplifier(&bus, &a, b.clone(), DEPTH, &tally);
    amplifier(&bus, &b, a.clone(), DEPTH, &tally);
    bus.publish(a.as_str(), 0).unwrap();
    let stats = bus.shutdown();

    let handled = tally.handled.load(Relaxed);
    let attempts = tally.attempts.load(Relaxed);
    let refused = tally.refused.load(Relaxed);
    assert_eq!(tally.faults.load(Relaxed), 0, "only Full refusals");
    assert!(
        refused > 0,
        "the cycle outgrew the bound ({handled} handled)"
    );
    assert_eq!(
        handled,
        1 + attempts - refused,
        "every accepted publish was handled once"
    );
    assert_eq!(stats.handled(), handled);
    assert_eq!(stats.overflow_refused(), refused);
    for s in &stats.shards {
        assert!(
            s.overflow_peak <= LIMIT,
            "shard {}: overflow peak {} above the limit",
            s.shard,
            s.overflow_peak
        );
        assert_eq!(s.overflow_depth, 0, "shard {}: overflow drained", s.shard);
    }
    // A refusal happens only at the bound: some shard reached it.
    assert!(stats.shards.iter().any(|s| s.overflow_peak == LIMIT));
    assert_quiescent_stats(&stats);
}

/// Polls `done` until it holds; panics after `PATIENCE` (a bug, not a slow machine).
fn wait_until(mut done: impl FnMut() -> bool) {
    let give_up = std::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(std::time::Instant::now() < give_up, "waited {PATIENCE:?}");
        std::thread::yield_now();
    }
}

/// With no overflow queue (`overflow_limit(0)`), a handler's publish into a full lane is
/// refused at once, and what was accepted is handled.
#[test]
fn overflow_limit_zero_refuses_as_soon_as_the_lane_is_full() {
    let bus = Bus::<u32>::builder()
        .shards(2)
        .pin_threads(false)
        .capacity(2)
        .lane_capacity(2)
        .overflow_limit(0)
        .build()
        .unwrap();
    let a = name_on_shard(&bus, "a", 0);
    let b = name_on_shard(&bus, "b", 1);
    let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
    let seen = Arc::new(AtomicU64::new(0));
    let sink = seen.clone();
    let mut first = true;
    // The receiver holds its shard on the first message, so its lane fills.
    bus.subscribe(b.as_str(), move |_: &mut Context<'_, u32>, _: &u32| {
        sink.fetch_add(1, Relaxed);
        if std::mem::take(&mut first) {
            let _ = gate_rx.recv_timeout(PATIENCE);
        }
    })
    .unwrap();
    let outcome = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = outcome.clone();
    let target = b.clone();
    bus.subscribe(a.as_str(), move |ctx: &mut Context<'_, u32>, _: &u32| {
        let mut record = record.lock().unwrap();
        for m in 0..8 {
            record.push(match ctx.publish(target.as_str(), m) {
                Ok(()) => None,
                Err(PublishError::Full(back)) => Some(back),
                Err(e) => panic!("{e:?}"),
            });
        }
    })
    .unwrap();
    bus.publish(b.as_str(), 100).unwrap();
    wait_until(|| seen.load(Relaxed) > 0);
    bus.publish(a.as_str(), 0).unwrap();
    // Wait for the publishing handler, then release the receiver.
    wait_until(|| outcome.lock().unwrap().len() == 8);
    gate_tx.send(()).unwrap();
    let stats = bus.shutdown();
    let outcome = outcome.lock().unwrap();
    // The 2-slot lane takes the first two; the rest come back, each the very message.
    let expected: Vec<Option<u32>> = (0..8).map(|m| (m >= 2).then_some(m)).collect();
    assert_eq!(*outcome, expected);
    assert_eq!(seen.load(Relaxed), 1 + 2);
    assert_eq!(stats.overflow_refused(), 6);
    assert!(stats.shards.iter().all(|s| s.overflow_peak == 0));
}
