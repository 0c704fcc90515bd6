//! Statistics: at quiescence they add up per shard and in total (received, handled,
//! unrouted, panics, dead letters), and the handler-time samples are consistent.
//!
//! Every check is exact (counts, contents, order). Nothing waits on a timer for
//! correctness: tests wait on channels or condition variables; timeouts only bound a
//! test that would otherwise hang on a bug.

use crate::common::{assert_quiescent_stats, bus, names};
use shardbus::{Context, Supervision};

#[test]
fn statistics_add_up_at_quiescence() {
    const SHARDS: usize = 3;
    let bus = bus(SHARDS);
    let subscribed = names("sub", 12);
    let unsubscribed = names("none", 6);
    for (i, name) in subscribed.iter().enumerate() {
        // Every third topic has two subscribers: one message, two deliveries.
        for _ in 0..(1 + usize::from(i % 3 == 0)) {
            bus.subscribe(name.as_str(), |_: &mut Context<'_, u32>, _: &u32| {})
                .unwrap();
        }
    }
    bus.subscribe_supervised("panicky", Supervision::Resume, || {
        |_: &mut Context<'_, u32>, m: &u32| {
            if (m / 5).is_multiple_of(10) {
                panic!("stats test: message {m}");
            }
        }
    })
    .unwrap();

    let mut received = [0u64; SHARDS];
    let (mut handled, mut unrouted, mut panics) = (0u64, 0u64, 0u64);
    let panicky = "panicky".to_owned();
    let mut publisher = bus.publisher();
    for i in 0..3_000u32 {
        let (topic, routed) = match i % 5 {
            0..=2 => (&subscribed[i as usize % subscribed.len()], true),
            3 => (&unsubscribed[i as usize % unsubscribed.len()], false),
            _ => {
                panics += u64::from((i / 5) % 10 == 0);
                (&panicky, true)
            }
        };
        if i % 2 == 0 {
            publisher.publish(topic.as_str(), i).unwrap();
        } else {
            bus.publish(topic.as_str(), i).unwrap();
        }
        received[bus.shard_of(topic).unwrap().index()] += 1;
        if routed {
            handled += 1;
        } else {
            unrouted += 1;
        }
    }
    let stats = bus.shutdown();
    assert_eq!(panics, 60, "every 10th of the 600 messages to `panicky`");
    let per_shard: Vec<u64> = stats.shards.iter().map(|s| s.received).collect();
    assert_eq!(per_shard, received, "per-shard received");
    assert_eq!(stats.received(), 3_000);
    assert_eq!(stats.handled(), handled);
    assert_eq!(stats.unrouted(), unrouted);
    assert_eq!(stats.panics(), panics);
    assert_eq!(stats.dead_letters(), unrouted + panics);
    assert_eq!(stats.dropped(), 0);
    assert_quiescent_stats(&stats);
    for (i, s) in stats.shards.iter().enumerate() {
        assert_eq!(s.shard, i);
        assert_eq!(s.dead_letters, s.unrouted + s.panics, "shard {i}");
        assert_eq!((s.restarts, s.stopped_subscriptions), (0, 0));
        assert_eq!(s.core, None, "not pinned");
        assert!(s.high_water >= s.queue_depth);
        let t = s.handler_time;
        assert!(
            t.samples <= s.received / 256 + 1,
            "one call in 256 is timed"
        );
        assert!(t.p50_ns <= t.p99_ns && t.p99_ns <= t.p999_ns && t.p999_ns <= t.max_ns);
    }
}

/// When `flush` returns, `stats` counts every message published before it. The shard
/// publishes its counters once per busy pass, after the pass; it also publishes them right
/// before it answers a flush. Here the pass that answers the flush goes on to a handler
/// that blocks until the test has read the statistics (a message the last flushed one
/// published onward, on the same shard), so only the publication at the flush can show them.
#[test]
fn stats_read_after_a_flush_count_every_message_flushed() {
    const N: u32 = 50;
    let bus = bus(1);
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    bus.subscribe("flushed", |ctx: &mut Context<'_, u32>, m: &u32| {
        if *m == N - 1 {
            ctx.publish("after", 0).unwrap();
        }
    })
    .unwrap();
    bus.subscribe("after", move |_: &mut Context<'_, u32>, _: &u32| {
        // Bounded: a missing release fails the test below, it does not hang it.
        let _ = released
            .lock()
            .unwrap()
            .recv_timeout(crate::common::PATIENCE);
    })
    .unwrap();
    for i in 0..N {
        bus.publish("flushed", i).unwrap();
    }
    bus.flush().unwrap();
    let stats = bus.stats();
    release.send(()).unwrap();
    assert_eq!(stats.received(), u64::from(N));
    assert_eq!(stats.handled(), u64::from(N));
    let end = bus.shutdown();
    assert_eq!(end.handled(), u64::from(N) + 1);
}
