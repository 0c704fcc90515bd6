//! Keyed partitions: one actor instance per partition, per-key order, every shard used,
//! every publish form, per-instance supervision and counters, typed errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use shardbus::{
    Bus, Context, Error, PublishError, Supervision, TryPublishError, MAX_PARTITIONED_TOPIC_LEN,
    MAX_PARTITIONS,
};

/// (partition, shard, key, sequence) as the instances saw them.
type Seen = Arc<Mutex<Vec<(usize, usize, u64, u64)>>>;

fn recording(bus: &Bus<(u64, u64)>, topic: &str, seen: &Seen) -> shardbus::PartitionedSubscription {
    let seen = seen.clone();
    bus.subscribe_partitioned(topic, Supervision::Resume, move |part| {
        let seen = seen.clone();
        move |ctx: &mut Context<'_, (u64, u64)>, &(key, n): &(u64, u64)| {
            assert_eq!(ctx.partition(), Some(part));
            assert_eq!(ctx.topic(), "orders");
            seen.lock()
                .unwrap()
                .push((part, ctx.shard().index(), key, n));
        }
    })
    .unwrap()
}

/// Exactly once, per-key order, one partition (and shard) per key, every shard used.
fn check(bus: &Bus<(u64, u64)>, seen: &Seen, keys: u64, per_key: u64) {
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len() as u64, keys * per_key);
    let mut by_key: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut shards = vec![0usize; bus.shards()];
    for &(part, shard, key, n) in seen.iter() {
        assert_eq!(part, bus.partition_of(key), "key {key} in its partition");
        assert_eq!(Some(shard), bus.shard_of_partition(part).map(|s| s.index()));
        by_key.entry(key).or_default().push(n);
        shards[shard] += 1;
    }
    for (key, ns) in by_key {
        assert_eq!(
            ns,
            (0..per_key).collect::<Vec<_>>(),
            "key {key} in publish order"
        );
    }
    assert!(
        shards.iter().all(|&n| n > 0),
        "every shard handled some: {shards:?}"
    );
}

#[test]
fn same_key_one_instance_in_order_and_keys_spread_over_every_shard() {
    let bus = Bus::<(u64, u64)>::builder()
        .shards(3)
        .pin_threads(false)
        .build()
        .unwrap();
    assert_eq!(bus.partitions(), 64);
    let seen: Seen = Arc::default();
    let sub = recording(&bus, "orders", &seen);
    assert_eq!(sub.ids().len(), 64);
    let mut publisher = bus.publisher();
    for n in 0..50 {
        for key in 0..40u64 {
            // Both publish paths, each key on one of them (order is per publisher).
            if key % 2 == 0 {
                publisher.publish_keyed("orders", key, (key, n)).unwrap();
            } else {
                bus.publish_keyed("orders", key, (key, n)).unwrap();
            }
        }
    }
    bus.flush().unwrap();
    check(&bus, &seen, 40, 50);
    let stats = sub.stats();
    assert_eq!(stats.iter().map(|p| p.handled).sum::<u64>(), 2000);
    assert!(stats.iter().all(|p| p.panics == 0 && p.restarts == 0));
    assert_eq!(bus.partitioned().len(), 1);
    let total = bus.shutdown();
    assert_eq!((total.handled(), total.unrouted()), (2000, 0));
}

#[test]
fn try_batch_durable_async_and_handler_forms_route_by_key() {
    let bus = Bus::<(u64, u64)>::builder()
        .shards(2)
        .pin_threads(false)
        .build()
        .unwrap();
    let seen: Seen = Arc::default();
    recording(&bus, "orders", &seen);
    // A relay: a handler publishes keyed from its Context (plain topic "in").
    bus.subscribe(
        "in",
        |ctx: &mut Context<'_, (u64, u64)>, &(key, n): &(u64, u64)| {
            if n % 2 == 0 {
                ctx.publish_keyed("orders", key, (key, n)).unwrap();
            } else {
                ctx.try_publish_keyed("orders", key, (key, n)).unwrap();
            }
        },
    )
    .unwrap();
    let mut publisher = bus.publisher();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Order holds per publisher: each key goes through one form, 12 messages each.
    for key in 0..40u64 {
        match key % 5 {
            0 => {
                let mut batch: Vec<_> = (0..12).map(|i| (key, i)).collect();
                publisher
                    .publish_batch_keyed("orders", key, &mut batch)
                    .unwrap();
                assert!(batch.is_empty());
            }
            1 => (0..12).for_each(|n| {
                publisher
                    .try_publish_keyed("orders", key, (key, n))
                    .unwrap()
            }),
            2 => rt.block_on(async {
                for n in 0..12 {
                    publisher
                        .publish_keyed_async("orders", key, (key, n))
                        .await
                        .unwrap();
                    bus.publish_keyed_async("orders", key + 1000, (key + 1000, n))
                        .await
                        .unwrap();
                }
            }),
            3 => (0..12).for_each(|n| bus.try_publish_keyed("orders", key, (key, n)).unwrap()),
            _ => (0..12).for_each(|n| bus.publish("in", (key, n)).unwrap()),
        }
        // Durable forms on a memory-only bus: the message back.
        assert!(matches!(
            bus.publish_durable_keyed("orders", key, (key, 99)),
            Err(shardbus::DurableError::NotPersistent((_, 99)))
        ));
        assert!(matches!(
            publisher.publish_durable_keyed("orders", key, (key, 99)),
            Err(shardbus::DurableError::NotPersistent((_, 99)))
        ));
    }
    bus.flush().unwrap();
    // `flush` does not wait for what handlers publish onward: the relay's keyed publishes
    // to a partition on the other shard go through a shard-to-shard lane. Wait (bounded)
    // until the bus has handled all of them: 48 keys × 12 on "orders", 8 keys × 12 on "in".
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while bus.stats().handled() < 48 * 12 + 8 * 12 && std::time::Instant::now() < deadline {
        bus.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // 40 keys, and 8 more (1000 + k) through the bus's async form.
    check(&bus, &seen, 48, 12);
    bus.shutdown();
}

#[test]
fn closed_and_full_keyed_publishes_give_the_message_back() {
    let bus = Bus::<(u64, u64)>::builder()
        .shards(1)
        .capacity(2)
        .lane_capacity(2)
        .pin_threads(false)
        .build()
        .unwrap();
    // An instance that blocks until told, so the ring and the lane fill.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let wait = Arc::new(Mutex::new(wait));
    bus.subscribe_partitioned("orders", Supervision::Resume, move |_| {
        let wait = wait.clone();
        move |_: &mut Context<'_, (u64, u64)>, _: &(u64, u64)| {
            let _ = wait.lock().unwrap().recv();
        }
    })
    .unwrap();
    let mut full_bus = None;
    for n in 0..64 {
        if let Err(TryPublishError::Full(msg)) = bus.try_publish_keyed("orders", 7u64, (7, n)) {
            full_bus = Some(msg);
            break;
        }
    }
    assert!(
        matches!(full_bus, Some((7, _))),
        "the ring filled, message back"
    );
    let mut publisher = bus.publisher();
    let mut full_lane = None;
    for n in 0..64 {
        if let Err(TryPublishError::Full(msg)) = publisher.try_publish_keyed("orders", 7u64, (7, n))
        {
            full_lane = Some(msg);
            break;
        }
    }
    assert!(
        matches!(full_lane, Some((7, _))),
        "the lane filled, message back"
    );
    for _ in 0..256 {
        let _ = go.send(());
    }
    drop(go);
    bus.close().unwrap();
    assert!(matches!(
        bus.publish_keyed("orders", 1u64, (1, 1)),
        Err(PublishError::Closed((1, 1)))
    ));
    assert!(matches!(
        bus.try_publish_keyed("orders", 1u64, (1, 2)),
        Err(TryPublishError::Closed((1, 2)))
    ));
    assert!(matches!(
        publisher.publish_keyed("orders", 1u64, (1, 3)),
        Err(PublishError::Closed((1, 3)))
    ));
    assert!(matches!(
        publisher.try_publish_keyed("orders", 1u64, (1, 4)),
        Err(TryPublishError::Closed((1, 4)))
    ));
    let mut batch = vec![(1, 5), (1, 6)];
    assert!(matches!(
        publisher.publish_batch_keyed("orders", 1u64, &mut batch),
        Err(PublishError::Closed(()))
    ));
    assert_eq!(
        batch,
        [(1, 5), (1, 6)],
        "nothing accepted, all left in the batch"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(matches!(
        rt.block_on(bus.publish_keyed_async("orders", 1u64, (1, 7))),
        Err(PublishError::Closed((1, 7)))
    ));
    assert!(matches!(
        rt.block_on(publisher.publish_keyed_async("orders", 1u64, (1, 8))),
        Err(PublishError::Closed((1, 8)))
    ));
}

#[test]
fn supervision_and_counters_are_per_instance() {
    let bus = Bus::<(u64, u64)>::builder()
        .shards(2)
        .pin_threads(false)
        .build()
        .unwrap();
    let restart = bus
        .subscribe_partitioned("r", Supervision::Restart, |_| {
            |_: &mut Context<'_, (u64, u64)>, &m: &(u64, u64)| assert_ne!(m, (5, 13), "boom")
        })
        .unwrap();
    let stop = bus
        .subscribe_partitioned("s", Supervision::Stop, |_| {
            |_: &mut Context<'_, (u64, u64)>, &m: &(u64, u64)| assert_ne!(m, (5, 13), "boom")
        })
        .unwrap();
    let resume = bus
        .subscribe_partitioned("m", Supervision::Resume, |_| {
            |_: &mut Context<'_, (u64, u64)>, &m: &(u64, u64)| assert_ne!(m, (5, 13), "boom")
        })
        .unwrap();
    let bad = 5u64;
    let good = (0..1000u64)
        .find(|&k| bus.partition_of(k) != bus.partition_of(bad))
        .unwrap();
    for n in 0..20 {
        for topic in ["r", "s", "m"] {
            bus.publish_keyed(topic, bad, (bad, n)).unwrap();
            bus.publish_keyed(topic, good, (good, n)).unwrap();
        }
    }
    bus.flush().unwrap();
    let (pb, pg) = (bus.partition_of(bad), bus.partition_of(good));
    let r = restart.stats();
    assert_eq!((r[pb].handled, r[pb].panics, r[pb].restarts), (19, 1, 1));
    assert_eq!((r[pg].handled, r[pg].panics, r[pg].restarts), (20, 0, 0));
    let s = stop.stats();
    // Stop ends only the bad key's partition: its later messages are unrouted.
    assert_eq!((s[pb].handled, s[pb].panics, s[pb].restarts), (13, 1, 0));
    assert_eq!((s[pg].handled, s[pg].panics), (20, 0));
    let m = resume.stats();
    // Resume keeps the instance: the panicking message is the only one not handled.
    assert_eq!((m[pb].handled, m[pb].panics, m[pb].restarts), (19, 1, 0));
    assert_eq!((m[pg].handled, m[pg].panics), (20, 0));
    let stats = bus.shutdown();
    assert_eq!(stats.panics(), 3);
    assert_eq!(
        stats.unrouted(),
        6,
        "the stopped partition's 6 later messages"
    );
}

#[test]
fn unsubscribe_partitioned_ends_every_instance() {
    let bus = Bus::<(u64, u64)>::builder()
        .shards(2)
        .pin_threads(false)
        .build()
        .unwrap();
    let seen: Seen = Arc::default();
    let sub = recording(&bus, "orders", &seen);
    bus.publish_keyed("orders", 1u64, (1, 0)).unwrap();
    bus.unsubscribe_partitioned(&sub).unwrap();
    assert!(bus.partitioned().is_empty());
    for key in 0..100u64 {
        bus.publish_keyed("orders", key, (key, 1)).unwrap();
    }
    let stats = bus.shutdown();
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(stats.unrouted(), 100);
}

#[test]
fn plain_and_partitioned_topics_of_one_name_are_separate() {
    let bus = Bus::<(u64, u64)>::builder()
        .shards(2)
        .pin_threads(false)
        .build()
        .unwrap();
    let seen: Seen = Arc::default();
    recording(&bus, "orders", &seen);
    let plain = Arc::new(Mutex::new(0));
    let p = plain.clone();
    bus.subscribe(
        "orders",
        move |_: &mut Context<'_, (u64, u64)>, _: &(u64, u64)| {
            *p.lock().unwrap() += 1;
        },
    )
    .unwrap();
    bus.publish("orders", (0, 0)).unwrap();
    bus.publish_keyed("orders", 3u64, (3, 0)).unwrap();
    bus.shutdown();
    assert_eq!(*plain.lock().unwrap(), 1);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn bad_input_is_a_typed_error() {
    for n in [0, MAX_PARTITIONS + 1] {
        let err = Bus::<u64>::builder()
            .shards(1)
            .partitions(n)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidPartitions { requested, .. } if requested == n));
    }
    let bus = Bus::<u64>::builder()
        .shards(2)
        .partitions(3)
        .pin_threads(false)
        .build()
        .unwrap();
    assert_eq!(bus.partitions(), 3);
    assert_eq!(bus.shard_of_partition(3), None);
    let long = "x".repeat(MAX_PARTITIONED_TOPIC_LEN + 1);
    let handler = |_| |_: &mut Context<'_, u64>, _: &u64| {};
    assert!(matches!(
        bus.subscribe_partitioned(&long, Supervision::Resume, handler),
        Err(Error::InvalidTopic {
            max: MAX_PARTITIONED_TOPIC_LEN,
            ..
        })
    ));
    assert!(matches!(
        bus.subscribe_partitioned("", Supervision::Resume, handler),
        Err(Error::InvalidTopic { len: 0, .. })
    ));
    assert!(matches!(
        bus.publish_keyed(&long, 1u8, 5),
        Err(PublishError::InvalidTopic(5))
    ));
    assert!(matches!(
        bus.publish_keyed("", 1u8, 6),
        Err(PublishError::InvalidTopic(6))
    ));
    let mut p = bus.publisher();
    assert!(matches!(
        p.try_publish_keyed(&long, 1u8, 7),
        Err(TryPublishError::InvalidTopic(7))
    ));
    // The builder's form fails `build()`.
    let err = Bus::<u64>::builder()
        .subscribe_partitioned(&long, Supervision::Resume, handler)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTopic { .. }));
    bus.shutdown();
}

#[test]
fn a_partitioned_topic_handle_routes_as_the_name_does() {
    let bus = Bus::<(u64, u64)>::builder()
        .shards(3)
        .pin_threads(false)
        .build()
        .unwrap();
    let other = Bus::<(u64, u64)>::builder()
        .shards(2)
        .partitions(8)
        .pin_threads(false)
        .build()
        .unwrap();
    let handle = bus.partitioned_topic("orders").unwrap();
    assert_eq!((handle.name(), handle.partitions()), ("orders", 64));
    for p in 0..64 {
        assert_eq!(handle.shard_of_partition(p), bus.shard_of_partition(p));
    }
    let (seen, seen_other): (Seen, Seen) = Default::default();
    recording(&bus, "orders", &seen);
    recording(&other, "orders", &seen_other);
    let mut publisher = bus.publisher();
    let mut other_publisher = other.publisher();
    for n in 0..30 {
        for key in 0..20u64 {
            publisher.publish_keyed(&handle, key, (key, n)).unwrap();
            // Another bus's handle (another partition count): resolved there by name.
            other_publisher
                .publish_keyed(&handle, key, (key, n))
                .unwrap();
        }
    }
    bus.flush().unwrap();
    other.flush().unwrap();
    check(&bus, &seen, 20, 30);
    check(&other, &seen_other, 20, 30);
    let long = "x".repeat(MAX_PARTITIONED_TOPIC_LEN + 1);
    assert!(matches!(
        bus.partitioned_topic(&long),
        Err(Error::InvalidTopic {
            max: MAX_PARTITIONED_TOPIC_LEN,
            ..
        })
    ));
    bus.shutdown();
    other.shutdown();
}

#[test]
fn a_handler_subscribes_a_partitioned_topic_without_waiting() {
    let bus = Bus::<(u64, u64)>::builder()
        .shards(2)
        .pin_threads(false)
        .build()
        .unwrap();
    let seen: Seen = Arc::default();
    let made = Arc::new(Mutex::new(None));
    let (s, m) = (seen.clone(), made.clone());
    bus.subscribe(
        "setup",
        move |ctx: &mut Context<'_, (u64, u64)>, _: &(u64, u64)| {
            let s = s.clone();
            let sub = ctx
                .subscribe_partitioned("orders", Supervision::Resume, move |part| {
                    let s = s.clone();
                    move |ctx: &mut Context<'_, (u64, u64)>, &(key, n): &(u64, u64)| {
                        assert_eq!(ctx.partition(), Some(part));
                        s.lock().unwrap().push((part, ctx.shard().index(), key, n));
                    }
                })
                .unwrap();
            *m.lock().unwrap() = Some(sub);
        },
    )
    .unwrap();
    bus.publish("setup", (0, 0)).unwrap();
    // The requests went out when the handler ran; a flush orders them before what follows.
    bus.flush().unwrap();
    bus.flush().unwrap();
    assert_eq!(bus.partitioned().len(), 1);
    for n in 0..10 {
        for key in 0..30u64 {
            bus.publish_keyed("orders", key, (key, n)).unwrap();
        }
    }
    bus.flush().unwrap();
    check(&bus, &seen, 30, 10);
    let sub = made.lock().unwrap().take().unwrap();
    assert_eq!(sub.stats().iter().map(|p| p.handled).sum::<u64>(), 300);
    bus.shutdown();
}

/// A handler's keyed publish into a full lane, with no overflow queue, gives the message
/// back (`Full`), in both forms; what was accepted is handled.
#[test]
fn a_handlers_keyed_publish_into_a_full_lane_gives_the_message_back() {
    let bus = Bus::<(u64, u64)>::builder()
        .shards(2)
        .partitions(2)
        .pin_threads(false)
        .capacity(2)
        .lane_capacity(2)
        .overflow_limit(0)
        .build()
        .unwrap();
    // Partition 1 lives on shard 1; the publishing handler on shard 0.
    assert_eq!(bus.shard_of_partition(1).unwrap().index(), 1);
    let key = (0..).find(|&k: &u64| bus.partition_of(k) == 1).unwrap();
    let a = (0..)
        .map(|i| format!("a{i}"))
        .find(|n| bus.shard_of(n).unwrap().index() == 0)
        .unwrap();
    let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
    let gate_rx = Arc::new(Mutex::new(gate_rx));
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    // The instance holds its shard on its first message, so the lane into it fills.
    bus.subscribe_partitioned("orders", Supervision::Resume, move |part| {
        let (sink, gate_rx) = (sink.clone(), gate_rx.clone());
        let mut first = true;
        move |ctx: &mut Context<'_, (u64, u64)>, &(k, n): &(u64, u64)| {
            sink.lock().unwrap().push((part, ctx.shard().index(), k, n));
            if std::mem::take(&mut first) {
                let _ = gate_rx.lock().unwrap().recv();
            }
        }
    })
    .unwrap();
    let outcome = Arc::new(Mutex::new(Vec::new()));
    let record = outcome.clone();
    bus.subscribe(
        a.as_str(),
        move |ctx: &mut Context<'_, (u64, u64)>, _: &(u64, u64)| {
            let mut record = record.lock().unwrap();
            for n in 1..9 {
                record.push(match ctx.publish_keyed("orders", key, (key, n)) {
                    Ok(()) => None,
                    Err(PublishError::Full(back)) => Some(back),
                    Err(e) => panic!("{e:?}"),
                });
            }
            record.push(match ctx.try_publish_keyed("orders", key, (key, 9)) {
                Ok(()) => None,
                Err(TryPublishError::Full(back)) => Some(back),
                Err(e) => panic!("{e:?}"),
            });
        },
    )
    .unwrap();
    bus.publish_keyed("orders", key, (key, 0)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the instance never ran"
        );
        std::thread::yield_now();
    }
    bus.publish(a.as_str(), (0, 0)).unwrap();
    while outcome.lock().unwrap().len() < 9 {
        assert!(
            std::time::Instant::now() < deadline,
            "the publisher never ran"
        );
        std::thread::yield_now();
    }
    gate_tx.send(()).unwrap();
    let stats = bus.shutdown();
    // The 2-slot lane takes the first two; the rest come back, each the very message.
    let expected: Vec<Option<(u64, u64)>> = (1..10).map(|n| (n >= 3).then_some((key, n))).collect();
    assert_eq!(*outcome.lock().unwrap(), expected);
    let ns: Vec<u64> = seen.lock().unwrap().iter().map(|s| s.3).collect();
    assert_eq!(ns, [0, 1, 2]);
    assert_eq!(stats.overflow_refused(), 6, "the 6 blocking-form refusals");
}

#[test]
fn sequential_integer_keys_spread_evenly_and_their_partitions_are_pinned() {
    let bus = Bus::<u64>::builder()
        .shards(2)
        .pin_threads(false)
        .build()
        .unwrap();
    assert_eq!(bus.partitions(), 64);
    // An integer key's partition is the top of `key * 0x9E37_79B9_7F4A_7C15` (Fibonacci
    // hashing): fixed, whatever the build. If this fails, key → partition changed, and a
    // log written before replays its keys into other partitions than new publishes use.
    let pinned: Vec<usize> = (0..8u64).map(|k| bus.partition_of(k)).collect();
    assert_eq!(pinned, [0, 39, 15, 54, 30, 5, 45, 20]);
    assert_eq!(bus.partition_of(1u32), 39, "every integer width alike");
    assert_eq!(bus.partition_of(u64::MAX), 24);
    // 1,024 sequential keys over 64 partitions: 16 each on average, every one within
    // 15..=18 (deterministic), and each shard's half of the partitions takes half the keys.
    let mut counts = [0u32; 64];
    for k in 0..1024u64 {
        counts[bus.partition_of(k)] += 1;
    }
    assert_eq!(counts.iter().sum::<u32>(), 1024);
    assert_eq!(
        (counts.iter().min(), counts.iter().max()),
        (Some(&15), Some(&18)),
        "{counts:?}"
    );
    let first_half: u32 = counts[..32].iter().sum();
    assert_eq!(first_half, 512);
    bus.shutdown();
}

#[test]
fn partitioned_names_must_be_plain_subjects_on_every_form() {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let bus = Bus::<u64>::builder()
        .shards(2)
        .partitions(4)
        .pin_threads(false)
        .build()
        .unwrap();
    let made = Arc::new(AtomicUsize::new(0));
    for name in ["orders.*", "orders.>", "a b", "a..b", "nul\0p1"] {
        let counted = made.clone();
        let factory = move |_| {
            counted.fetch_add(1, Relaxed);
            |_: &mut Context<'_, u64>, _: &u64| {}
        };
        assert!(
            matches!(
                bus.subscribe_partitioned(name, Supervision::Resume, factory),
                Err(Error::InvalidSubject { .. })
            ),
            "{name:?}"
        );
        assert!(
            matches!(
                bus.partitioned_topic(name),
                Err(Error::InvalidSubject { .. })
            ),
            "{name:?}"
        );
        assert!(
            matches!(
                bus.publish_keyed(name, 1u64, 9),
                Err(PublishError::InvalidTopic(9))
            ),
            "{name:?}"
        );
        let err = Bus::<u64>::builder()
            .partitions(4)
            .subscribe_partitioned(name, Supervision::Resume, |_| {
                |_: &mut Context<'_, u64>, _: &u64| {}
            })
            .build()
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidSubject { .. }),
            "{name:?}: {err:?}"
        );
    }
    // Refused before any instance was made.
    assert_eq!(made.load(Relaxed), 0);
}
