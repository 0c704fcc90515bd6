//! Routing: names, strings and `Topic` handles route alike; the mapping depends only on
//! the shard count; handles from a bus with another shard count are rerouted; topic names
//! are interned per bus, once, even when first seen by several threads at once.
//!
//! Every check is exact (counts, contents, order). Nothing waits on a timer for
//! correctness: tests wait on channels or condition variables; timeouts only bound a
//! test that would otherwise hang on a bug.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread;

use crate::common::{bus, names, Log};
use shardbus::{Bus, Context, DeadLetterReason, Topic};

#[test]
fn names_strings_and_topic_handles_route_alike() {
    let bus = bus(4);
    let log = Log::new();
    let sink = log.clone();
    bus.subscribe("orders", move |ctx: &mut Context<'_, u32>, m: &u32| {
        sink.push((ctx.shard(), *m));
    })
    .unwrap();
    let handle = bus.topic("orders").unwrap();
    assert_eq!(handle.name(), "orders");
    assert_eq!(handle.shard(), bus.shard_of("orders").unwrap());
    let owned = "orders".to_owned();
    bus.publish("orders", 0).unwrap();
    bus.publish(&owned, 1).unwrap();
    bus.publish(owned.clone(), 2).unwrap();
    bus.publish(handle, 3).unwrap();
    let by_ref: &Topic = &handle;
    bus.publish(by_ref, 4).unwrap();
    let stats = bus.shutdown();
    let shard = handle.shard();
    assert_eq!(
        log.snapshot(),
        (0..5).map(|m| (shard, m)).collect::<Vec<_>>()
    );
    assert_eq!(stats.unrouted(), 0);
}

#[test]
fn routing_is_the_same_for_buses_with_the_same_shard_count() {
    let a = bus(5);
    let b = bus(5);
    let mut used = [false; 5];
    for name in names("route", 500) {
        let s = a.shard_of(&name).unwrap();
        assert_eq!(s, b.shard_of(&name).unwrap(), "{name}");
        used[s.index()] = true;
    }
    assert_eq!(used, [true; 5]);
    a.shutdown();
    b.shutdown();
}

#[test]
fn topic_handles_from_a_bus_with_another_shard_count_are_rerouted() {
    let wide = bus(8);
    let narrow = bus(3);
    // Topics whose shard on the wide bus does not exist on the narrow one.
    let foreign: Vec<Topic> = (0..)
        .map(|i| wide.topic(&format!("re-{i}")).unwrap())
        .filter(|t| t.shard().index() >= 3)
        .take(5)
        .collect();
    let log = Log::new();
    for t in &foreign {
        let sink = log.clone();
        narrow
            .subscribe(t.name(), move |ctx: &mut Context<'_, u32>, m: &u32| {
                sink.push((ctx.topic().to_owned(), ctx.shard(), *m));
            })
            .unwrap();
    }
    for (i, t) in foreign.iter().enumerate() {
        narrow.publish(*t, i as u32).unwrap();
    }
    let expected: Vec<_> = foreign
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let name = t.name().to_owned();
            let shard = narrow.shard_of(&name).unwrap();
            (name, shard, i as u32)
        })
        .collect();
    let stats = narrow.shutdown();
    wide.shutdown();
    let mut seen = log.snapshot();
    seen.sort_by_key(|e| e.2);
    assert_eq!(seen, expected);
    assert_eq!(stats.unrouted(), 0);
}

/// Topic names are interned per bus (a small index per shard travels with each
/// message). One thread publishing by name to two buses in turn, with the same names
/// routed differently (2 and 3 shards) and subscribed differently, must reach each bus's
/// own subscribers: a stale per-thread cache from the other bus would misdeliver.
#[test]
fn one_thread_publishing_by_name_to_two_buses_reaches_each_bus() {
    let a = bus(2);
    let b = bus(3);
    let topics = names("both", 20);
    let (log_a, log_b) = (Log::new(), Log::new());
    // Subscribe in opposite orders, so the two buses number their topics differently.
    for name in &topics {
        let sink = log_a.clone();
        a.subscribe(name.as_str(), move |ctx: &mut Context<'_, u32>, m: &u32| {
            sink.push((ctx.topic().to_owned(), *m));
        })
        .unwrap();
    }
    for name in topics.iter().rev() {
        let sink = log_b.clone();
        b.subscribe(name.as_str(), move |ctx: &mut Context<'_, u32>, m: &u32| {
            sink.push((ctx.topic().to_owned(), *m));
        })
        .unwrap();
    }
    let mut expect_a = Vec::new();
    let mut expect_b = Vec::new();
    for round in 0..5u32 {
        for (i, name) in topics.iter().enumerate() {
            let m = round * 100 + i as u32;
            a.publish(name.as_str(), m).unwrap();
            b.publish(name.as_str(), m + 10_000).unwrap();
            expect_a.push((name.clone(), m));
            expect_b.push((name.clone(), m + 10_000));
        }
    }
    let (sa, sb) = (a.shutdown(), b.shutdown());
    assert_eq!((sa.unrouted(), sb.unrouted()), (0, 0));
    let (mut got_a, mut got_b) = (log_a.snapshot(), log_b.snapshot());
    got_a.sort_by_key(|e| e.1);
    got_b.sort_by_key(|e| e.1);
    assert_eq!(got_a, expect_a);
    assert_eq!(got_b, expect_b);
}

/// Fresh topic names first seen in the middle of traffic, from several threads at
/// once, by name and through handles: every message reaches its topic's subscriber
/// exactly once, with its name, and handles and names agree on the topic. Half the
/// names are never subscribed: the shard learns them from the publishers alone, and
/// their dead letters carry the right name.
#[test]
fn topics_first_seen_concurrently_are_interned_once() {
    const THREADS: u32 = 4;
    const TOPICS: u32 = 200;
    let dead: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let sink = dead.clone();
    let bus = Bus::<u32>::builder()
        .shards(3)
        .pin_threads(false)
        .dead_letter(move |letter| {
            assert!(matches!(letter.reason, DeadLetterReason::NoSubscriber));
            let mut dead = sink.lock().unwrap();
            dead.entry(letter.topic.to_owned())
                .or_default()
                .push(*letter.message);
        })
        .build()
        .unwrap();
    let bus = Arc::new(bus);
    let counts: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    for t in (0..TOPICS).filter(|t| t % 2 == 0) {
        let sink = counts.clone();
        bus.subscribe(
            format!("fresh-{t}"),
            move |ctx: &mut Context<'_, u32>, m: &u32| {
                let mut counts = sink.lock().unwrap();
                counts.entry(ctx.topic().to_owned()).or_default().push(*m);
            },
        )
        .unwrap();
    }
    let threads: Vec<_> = (0..THREADS)
        .map(|p| {
            let bus = bus.clone();
            thread::spawn(move || {
                let mut publisher = bus.publisher();
                // Each thread walks the topics in its own order, alternating the paths.
                for k in 0..TOPICS {
                    let t = (k * 7 + p * 53) % TOPICS;
                    let name = format!("fresh-{t}");
                    let m = p * TOPICS + t;
                    match k % 3 {
                        0 => bus.publish(name.as_str(), m).unwrap(),
                        1 => publisher.publish(name.as_str(), m).unwrap(),
                        _ => publisher.publish(bus.topic(&name).unwrap(), m).unwrap(),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let Ok(bus) = Arc::try_unwrap(bus) else {
        panic!("the publisher threads have ended");
    };
    let stats = bus.shutdown();
    assert_eq!(stats.handled(), u64::from(THREADS * TOPICS / 2));
    assert_eq!(stats.unrouted(), u64::from(THREADS * TOPICS / 2));
    let (counts, dead) = (counts.lock().unwrap(), dead.lock().unwrap());
    assert_eq!(counts.len() + dead.len(), TOPICS as usize);
    for t in 0..TOPICS {
        let name = format!("fresh-{t}");
        let seen = if t % 2 == 0 { &counts } else { &dead };
        let mut got = seen[&name].clone();
        got.sort_unstable();
        let want: Vec<u32> = (0..THREADS).map(|p| p * TOPICS + t).collect();
        assert_eq!(got, want, "topic {name}");
    }
}

/// Publishing by name remembers recent names by where their bytes live. A `String`
/// cleared and refilled with another name of the same length keeps its buffer, so the
/// second name sits where the first one did: each message must still reach the topic its
/// name says, from a `Publisher`, from `Bus::publish` and from a handler
/// (`Context::publish`).
#[test]
fn a_reused_string_buffer_publishes_each_name_to_its_own_topic() {
    let bus = bus(1);
    let log = Log::new();
    for topic in ["alpha-1", "alpha-2", "bravo-1", "bravo-2"] {
        let sink = log.clone();
        bus.subscribe(topic, move |ctx: &mut Context<'_, u32>, m: &u32| {
            sink.push((ctx.topic().to_owned(), *m));
        })
        .unwrap();
    }
    // The handler republishes each message of "alpha-*" to "bravo-*" through one buffer.
    bus.subscribe("relay", {
        let mut name = String::with_capacity(16);
        move |ctx: &mut Context<'_, u32>, m: &u32| {
            name.clear();
            name.push_str(if m.is_multiple_of(2) {
                "bravo-1"
            } else {
                "bravo-2"
            });
            ctx.publish(name.as_str(), 100 + m).unwrap();
        }
    })
    .unwrap();
    let mut publisher = bus.publisher();
    let mut name = String::with_capacity(16);
    let addr = name.as_ptr();
    let mut expected = Vec::new();
    for m in 0..8u32 {
        name.clear();
        name.push_str(if m.is_multiple_of(2) {
            "alpha-1"
        } else {
            "alpha-2"
        });
        assert_eq!(name.as_ptr(), addr, "the buffer is reused");
        if m < 4 {
            publisher.publish(name.as_str(), m).unwrap();
        } else {
            bus.publish(name.as_str(), m).unwrap();
        }
        expected.push((name.clone(), m));
        publisher.publish("relay", m).unwrap();
        let relayed = if m.is_multiple_of(2) {
            "bravo-1"
        } else {
            "bravo-2"
        };
        expected.push((relayed.to_owned(), 100 + m));
    }
    let stats = bus.shutdown();
    // Each message on the topic its name said (the order between a handler's publishes
    // and the publisher's is not promised: compared as sorted lists).
    let mut got = log.snapshot();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    assert_eq!(stats.unrouted(), 0);
}
