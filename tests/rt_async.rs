//! The async publishes (`publish_async`, `publish_durable_async`) on a multi-thread tokio
//! runtime: exactly once and in order through tiny lanes and rings that fill all the
//! time; futures dropped at random points (never a duplicate, every completed publish
//! handled); a durable publish resolves only after its record survives power loss; and
//! the `Closed`, `WouldDeadlock` and `NotPersistent` paths.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::persist::{builder, crash, per_topic, persistence, seen, topic, TOPICS};
use common::{assert_quiescent_stats, not_exactly_once, PATIENCE};
use shardbus::log::SimStorage;
use shardbus::{Bus, Context, DurableError, PublishError};

/// Tasks and messages per task of the exactly-once test (about ten seconds in a debug
/// build on two loaded cores).
const TASKS: u64 = 8;
const PER_TASK: u64 = 250_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

/// Two unpinned shards with an inbox of 4 and lanes of 2: almost every publish meets a
/// full lane or ring and waits.
fn tiny_bus() -> Bus<u64> {
    Bus::<u64>::builder()
        .shards(2)
        .capacity(4)
        .lane_capacity(2)
        .pin_threads(false)
        .build()
        .unwrap()
}

/// A seeded xorshift generator: the same schedule of cancellations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Per task: the sequence number its topic's handler expects next, and how many
/// messages came out of order.
struct Order {
    next: Vec<AtomicU64>,
    out_of_order: AtomicU64,
}

/// Subscribes `task-{i}` for each task; the handler checks per-task order (each task
/// publishes `task << 32 | seq` with `seq` counting up) and counts messages per id.
fn subscribe_ordered(
    bus: &Bus<u64>,
    tasks: u64,
    order: &Arc<Order>,
    counts: &Arc<Vec<AtomicU32>>,
    per: u64,
) {
    for t in 0..tasks {
        let order = order.clone();
        let counts = counts.clone();
        bus.subscribe(
            format!("task-{t}"),
            move |_: &mut Context<'_, u64>, m: &u64| {
                let (task, seq) = ((m >> 32) as usize, m & 0xffff_ffff);
                // Only this topic's shard thread touches `next[task]`.
                let expected = order.next[task].load(Relaxed);
                if seq < expected {
                    order.out_of_order.fetch_add(1, Relaxed);
                }
                order.next[task].store(seq + 1, Relaxed);
                counts[(task as u64 * per + seq) as usize].fetch_add(1, Relaxed);
            },
        )
        .unwrap();
    }
}

fn order(tasks: u64) -> Arc<Order> {
    Arc::new(Order {
        next: (0..tasks).map(|_| AtomicU64::new(0)).collect(),
        out_of_order: AtomicU64::new(0),
    })
}

fn counters(n: u64) -> Arc<Vec<AtomicU32>> {
    Arc::new((0..n).map(|_| AtomicU32::new(0)).collect())
}

/// 8 tasks publish through `publish_async` into lanes of 2 on 2 shards (half through
/// their own `Publisher`, half through `Bus::publish_async` and its shared ring of 4):
/// every message is handled exactly once, in order per task.
#[test]
fn tasks_publish_exactly_once_in_order_through_tiny_lanes() {
    let bus = Arc::new(tiny_bus());
    let order = order(TASKS);
    let counts = counters(TASKS * PER_TASK);
    subscribe_ordered(&bus, TASKS, &order, &counts, PER_TASK);
    let rt = runtime();
    rt.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let bus = bus.clone();
                tokio::spawn(async move {
                    let topic = format!("task-{t}");
                    if t % 2 == 0 {
                        let mut p = bus.publisher();
                        for seq in 0..PER_TASK {
                            p.publish_async(topic.as_str(), t << 32 | seq)
                                .await
                                .unwrap();
                        }
                    } else {
                        for seq in 0..PER_TASK {
                            bus.publish_async(topic.as_str(), t << 32 | seq)
                                .await
                                .unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            tokio::time::timeout(PATIENCE * 2, t)
                .await
                .expect("publishers stalled")
                .unwrap();
        }
    });
    let bus = Arc::into_inner(bus).unwrap();
    let stats = bus.shutdown();
    assert_eq!(stats.received(), TASKS * PER_TASK);
    assert_quiescent_stats(&stats);
    assert_eq!(order.out_of_order.load(Relaxed), 0, "per-task order");
    assert_eq!(not_exactly_once(&counts), vec![]);
}

/// Publishes raced against a random number of yields (`select!`; seeded): a future
/// dropped before it completed published nothing, one that completed `Ok` was handled
/// exactly once; no message is handled twice, and per-task order holds among those
/// handled. Half the tasks use a `Publisher`, half `Bus::publish_async`.
#[test]
fn dropped_publish_futures_never_duplicate_and_completed_ones_are_handled() {
    const TASKS: u64 = 4;
    const PER: u64 = 20_000;
    let bus = Arc::new(tiny_bus());
    let order = order(TASKS);
    let counts = counters(TASKS * PER);
    subscribe_ordered(&bus, TASKS, &order, &counts, PER);
    let completed: Arc<Vec<AtomicU32>> = counters(TASKS * PER);
    let rt = runtime();
    rt.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let bus = bus.clone();
                let completed = completed.clone();
                tokio::spawn(async move {
                    let topic = format!("task-{t}");
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                    let mut p = bus.publisher();
                    let mut dropped = 0u64;
                    for seq in 0..PER {
                        let yields = rng.next() % 4;
                        let racer = async {
                            for _ in 0..yields {
                                tokio::task::yield_now().await;
                            }
                        };
                        let msg = t << 32 | seq;
                        let done = if t % 2 == 0 {
                            tokio::select! {
                                biased;
                                r = p.publish_async(topic.as_str(), msg) => Some(r),
                                () = racer => None,
                            }
                        } else {
                            tokio::select! {
                                biased;
                                r = bus.publish_async(topic.as_str(), msg) => Some(r),
                                () = racer => None,
                            }
                        };
                        match done {
                            Some(r) => {
                                r.unwrap();
                                completed[(t * PER + seq) as usize].store(1, Relaxed);
                            }
                            None => dropped += 1,
                        }
                    }
                    dropped
                })
            })
            .collect();
        let mut dropped = 0;
        for t in tasks {
            dropped += tokio::time::timeout(PATIENCE * 2, t)
                .await
                .expect("stalled")
                .unwrap();
        }
        // The race must actually drop futures, or the test proves nothing.
        assert!(dropped > 0, "no future was dropped");
    });
    let bus = Arc::into_inner(bus).unwrap();
    let stats = bus.shutdown();
    assert_quiescent_stats(&stats);
    assert_eq!(order.out_of_order.load(Relaxed), 0, "per-task order");
    let mut ok = 0;
    for (i, (c, done)) in counts.iter().zip(completed.iter()).enumerate() {
        let (c, done) = (c.load(Relaxed), done.load(Relaxed));
        assert!(c <= 1, "message {i} handled {c} times");
        assert_eq!(c, done, "message {i}: handled {c}, completed {done}");
        ok += u64::from(done);
    }
    assert_eq!(stats.received(), ok);
}

/// `publish_durable_async` (from a `Publisher` and from the bus) resolves only once the
/// record is synced: after a power loss right after the last `Ok`, replay at the next
/// `build()` shows every confirmed message, in order per topic.
#[test]
fn publish_durable_async_resolves_after_the_commit() {
    let sim = SimStorage::new();
    let first = seen();
    let bus = Arc::new(builder(2, persistence(&sim), &first).build().unwrap());
    let rt = runtime();
    const N: usize = 200;
    rt.block_on(async {
        let a = {
            let bus = bus.clone();
            tokio::spawn(async move {
                let mut p = bus.publisher();
                for i in (0..N).step_by(2) {
                    p.publish_durable_async(topic(i), i.to_string())
                        .await
                        .unwrap();
                }
            })
        };
        let b = {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in (1..N).step_by(2) {
                    bus.publish_durable_async(topic(i), i.to_string())
                        .await
                        .unwrap();
                }
            })
        };
        tokio::time::timeout(PATIENCE, a)
            .await
            .expect("stalled")
            .unwrap();
        tokio::time::timeout(PATIENCE, b)
            .await
            .expect("stalled")
            .unwrap();
    });
    // Power loss now: only what was synced survives.
    crash(Arc::into_inner(bus).unwrap(), &sim, None);
    let second = seen();
    let bus = builder(2, persistence(&sim), &second).build().unwrap();
    let (by_topic, all_replay) = per_topic(&second);
    assert!(all_replay);
    for (t, seen) in by_topic.iter().enumerate() {
        // Each topic's confirmed messages, in order (a publisher's and the bus's
        // publishes to one topic interleave, each in its own order).
        let mut expected: Vec<usize> = (0..N).filter(|n| n % TOPICS == t).collect();
        let mut got = seen.clone();
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(got, expected, "topic {t}");
        let evens: Vec<_> = seen.iter().filter(|n| *n % 2 == 0).collect();
        assert!(evens.windows(2).all(|w| w[0] < w[1]), "topic {t} order");
    }
    bus.shutdown();
}

/// After shutdown: `Closed` with the message, from every async publish.
#[test]
fn async_publishes_after_shutdown_are_closed_with_the_message() {
    let sim = SimStorage::new();
    let bus = builder(1, persistence(&sim), &seen()).build().unwrap();
    let mut p = bus.publisher();
    let rt = runtime();
    rt.block_on(async {
        p.publish_async("t00", "first".to_owned()).await.unwrap();
    });
    bus.close().unwrap();
    rt.block_on(async {
        assert!(matches!(
            p.publish_async("t00", "a".to_owned()).await,
            Err(PublishError::Closed(m)) if m == "a"
        ));
        assert!(matches!(
            bus.publish_async("t00", "b".to_owned()).await,
            Err(PublishError::Closed(m)) if m == "b"
        ));
        assert!(matches!(
            p.publish_durable_async("t00", "c".to_owned()).await,
            Err(DurableError::Closed(m)) if m == "c"
        ));
        assert!(matches!(
            bus.publish_durable_async("t00", "d".to_owned()).await,
            Err(DurableError::Closed(m)) if m == "d"
        ));
    });
}

/// A durable async publish on a memory-only bus: `NotPersistent` with the message.
#[test]
fn publish_durable_async_on_a_memory_bus_is_not_persistent() {
    let bus = tiny_bus();
    let mut p = bus.publisher();
    let rt = runtime();
    rt.block_on(async {
        assert!(matches!(
            p.publish_durable_async("x", 7).await,
            Err(DurableError::NotPersistent(7))
        ));
        assert!(matches!(
            bus.publish_durable_async("x", 8).await,
            Err(DurableError::NotPersistent(8))
        ));
    });
}

/// Awaited on a shard thread of the bus (a handler driving the future to completion
/// with a minimal executor), a publish that would have to wait returns `WouldDeadlock`
/// with the message, from a `Publisher` lane and from the shared ring; the shard is not parked and keeps handling.
#[test]
fn async_publish_on_a_shard_thread_that_would_wait_is_would_deadlock() {
    let bus = Arc::new(
        Bus::<u64>::builder()
            .shards(1)
            .capacity(4)
            .lane_capacity(2)
            .pin_threads(false)
            .build()
            .unwrap(),
    );
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(AtomicU64::new(0));
    {
        let (weak, outcomes, seen) = (Arc::downgrade(&bus), outcomes.clone(), seen.clone());
        bus.subscribe("go", move |_: &mut Context<'_, u64>, _: &u64| {
            let Some(bus) = weak.upgrade() else { return };
            let mut out = outcomes.lock().unwrap();
            // Fill the lane (2) and then the ring (4) that nobody drains while this
            // handler runs: the next publish of each would have to wait.
            let mut p = bus.publisher();
            let mut lane = Vec::new();
            for i in 0..3 {
                lane.push(block_on(p.publish_async("sink", i)));
            }
            let mut ring = Vec::new();
            for i in 0..5 {
                ring.push(block_on(bus.publish_async("sink", 10 + i)));
            }
            out.push(format!("{lane:?}"));
            out.push(format!("{ring:?}"));
        })
        .unwrap();
        bus.subscribe("sink", move |_: &mut Context<'_, u64>, _: &u64| {
            seen.fetch_add(1, Relaxed);
        })
        .unwrap();
    }
    bus.publish("go", 0).unwrap();
    // Not `flush` yet: its request would take a ring slot while the handler fills it.
    let deadline = std::time::Instant::now() + PATIENCE;
    while outcomes.lock().unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "handler stalled");
        std::thread::sleep(Duration::from_millis(1));
    }
    bus.flush().unwrap();
    let out = outcomes.lock().unwrap().clone();
    // The lane registration took one ring slot: 3 more fit in the ring.
    assert_eq!(
        out,
        vec![
            "[Ok(()), Ok(()), Err(WouldDeadlock(..))]".to_owned(),
            "[Ok(()), Ok(()), Ok(()), Err(WouldDeadlock(..)), Err(WouldDeadlock(..))]".to_owned(),
        ]
    );
    let bus = Arc::into_inner(bus).unwrap();
    let stats = bus.shutdown();
    // "go", 2 lane messages, 3 ring messages.
    assert_eq!(seen.load(Relaxed), 5);
    assert_eq!(stats.received(), 6);
}

/// Polls `f` to completion on this thread, parking between polls.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "future stalled");
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

/// The futures are `Send` (for `T: Send`), so a multi-thread executor can move them.
#[test]
fn async_publish_futures_are_send() {
    fn assert_send<F: std::future::Future + Send>(f: F) -> F {
        f
    }
    let bus = tiny_bus();
    let mut p = bus.publisher();
    drop(assert_send(p.publish_async("x", 1)));
    drop(assert_send(p.publish_durable_async("x", 2)));
    drop(assert_send(bus.publish_async("x", 3)));
    drop(assert_send(bus.publish_durable_async("x", 4)));
    // Nothing was polled, so nothing was published.
    assert_eq!(bus.shutdown().received(), 0);
}

/// A durable publish dropped after its push (while it waits for the commit) stays
/// published: the message is handled; one dropped before its first poll published
/// nothing.
#[test]
fn a_durable_publish_dropped_after_its_push_is_still_delivered() {
    let sim = SimStorage::new();
    let handled = seen();
    let bus = builder(1, persistence(&sim), &handled).build().unwrap();
    let mut p = bus.publisher();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    {
        // One poll: the lane is registered and has room, so the push happens on it; the
        // wait for the commit may or may not have finished.
        let mut f = std::pin::pin!(p.publish_durable_async(topic(0), "kept".to_owned()));
        let _ = f.as_mut().poll(&mut cx);
    }
    {
        let mut f = std::pin::pin!(bus.publish_durable_async(topic(1), "kept too".to_owned()));
        let _ = f.as_mut().poll(&mut cx);
    }
    drop(p.publish_durable_async(topic(2), "never polled".to_owned()));
    bus.flush().unwrap();
    // A lane and the shared ring: no order between the two.
    let mut got: Vec<String> = handled
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.1.clone())
        .collect();
    got.sort();
    assert_eq!(got, vec!["kept".to_owned(), "kept too".to_owned()]);
    assert_eq!(bus.shutdown().received(), 2);
}

/// The awaited publish keeps the topic's shard and index apart in its future: each
/// message reaches its own topic's handler, on that topic's shard, in order, whether the
/// topic is given by name, by this bus's handle, or by another bus's handle (resolved
/// again by name); an invalid name gives the message back and leaves the publisher
/// usable.
#[test]
fn publish_async_routes_each_topic_to_its_shard_and_refuses_an_invalid_name() {
    const NAMES: [&str; 6] = ["a", "b.c", "d", "e.f.g", "h", "i"];
    const PER_TOPIC: u64 = 50;
    let bus = Bus::<u64>::builder()
        .shards(4)
        .pin_threads(false)
        .build()
        .unwrap();
    let other = Bus::<u64>::builder()
        .shards(3)
        .pin_threads(false)
        .build()
        .unwrap();
    type Log = Arc<Mutex<Vec<(String, usize, u64)>>>;
    let log: Log = Arc::default();
    for name in NAMES {
        let log = log.clone();
        bus.subscribe(name, move |cx: &mut Context<'_, u64>, m: &u64| {
            let shard = cx.shard().index();
            log.lock().unwrap().push((cx.topic().to_owned(), shard, *m));
        })
        .unwrap();
    }
    let mut p = bus.publisher();
    runtime().block_on(async {
        for i in 0..PER_TOPIC {
            for (k, name) in NAMES.into_iter().enumerate() {
                let m = i * 100 + k as u64;
                match k % 3 {
                    0 => p.publish_async(name, m).await.unwrap(),
                    1 => p.publish_async(bus.topic(name).unwrap(), m).await.unwrap(),
                    _ => p
                        .publish_async(other.topic(name).unwrap(), m)
                        .await
                        .unwrap(),
                }
            }
            match p.publish_async("bad..name", u64::MAX - i).await {
                Err(PublishError::InvalidTopic(back)) => assert_eq!(back, u64::MAX - i),
                other => panic!("an invalid name: {other:?}"),
            }
        }
    });
    drop(p);
    let shards: Vec<usize> = NAMES
        .iter()
        .map(|n| bus.shard_of(n).unwrap().index())
        .collect();
    assert_eq!(bus.shutdown().handled(), PER_TOPIC * NAMES.len() as u64);
    drop(other.shutdown());
    let log = log.lock().unwrap();
    for (k, name) in NAMES.into_iter().enumerate() {
        let seen: Vec<(usize, u64)> = log
            .iter()
            .filter(|e| e.0 == name)
            .map(|e| (e.1, e.2))
            .collect();
        let want: Vec<(usize, u64)> = (0..PER_TOPIC)
            .map(|i| (shards[k], i * 100 + k as u64))
            .collect();
        assert_eq!(seen, want, "topic {name}");
    }
}
