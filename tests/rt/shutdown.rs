//! Shutdown through the public API: the graceful drain (everything accepted is handled,
//! onward publishes included), `Closed` after shutdown with the message given back, and
//! destructor accounting (every message created is dropped exactly once, whether it
//! was handled, dead-lettered or given back). The deadline shutdown is in
//! `shutdown_timeout.rs`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread;

use crate::common::{
    name_on_shard, not_exactly_once, subscribe_counting, tracked_bus, Ledger, Tracked, PATIENCE,
};
use shardbus::{Bus, Context, PublishError, Publisher, Topic, TryPublishError};

// ---------------------------------------------------------------------------------
// Graceful drain
// ---------------------------------------------------------------------------------

#[test]
fn shutdown_handles_everything_accepted() {
    const PER_THREAD: u32 = 10_000;
    let ledger = Ledger::new(4 * PER_THREAD);
    let bus = tracked_bus(3)
        .capacity(64)
        .lane_capacity(16)
        .build()
        .unwrap();
    let topics: Vec<String> = (0..30).map(|i| format!("drain-{i}")).collect();
    for t in &topics {
        subscribe_counting(&bus, t, &ledger);
    }
    thread::scope(|s| {
        for k in 0..4 {
            let (bus, ledger, topics) = (&bus, &ledger, &topics);
            let mut publisher = bus.publisher();
            s.spawn(move || {
                for i in 0..PER_THREAD as usize {
                    let topic = topics[(i * 7 + k) % topics.len()].as_str();
                    let m = ledger.make();
                    if k == 0 {
                        bus.publish(topic, m).unwrap();
                    } else {
                        publisher.publish(topic, m).unwrap();
                    }
                }
            });
        }
    });
    // No waiting: whatever is still queued must be drained by `shutdown`.
    let stats = bus.shutdown();
    let total = 4 * PER_THREAD;
    assert_eq!(ledger.created(), total);
    assert_eq!(ledger.handled_total(), u64::from(total));
    assert!((0..total).all(|id| ledger.handled(id) == 1));
    assert_eq!(stats.received(), u64::from(total));
    assert_eq!(stats.handled(), u64::from(total));
    assert_eq!(stats.dropped(), 0);
    ledger.assert_dropped_once();
}

/// What a publishing thread saw while the bus shut down under it.
#[derive(Default)]
struct Outcome {
    accepted: Vec<u32>,
    refused: Vec<u32>,
}

/// Publishes once, in one of four ways; returns whether the shard refused (`Closed`).
fn publish_one(
    publisher: &mut Publisher<Tracked>,
    mode: usize,
    topic: Topic,
    ledger: &Arc<Ledger>,
    out: &mut Outcome,
) -> bool {
    match mode {
        0 | 1 => {
            let m = ledger.make();
            let id = m.id;
            match publisher.publish(topic, m) {
                Ok(()) => out.accepted.push(id),
                Err(PublishError::Closed(back)) => {
                    assert_eq!(back.id, id, "Closed gives the very message back");
                    out.refused.push(id);
                    return true;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        2 => {
            let mut m = ledger.make();
            let id = m.id;
            loop {
                match publisher.try_publish(topic, m) {
                    Ok(()) => {
                        out.accepted.push(id);
                        break;
                    }
                    Err(TryPublishError::Full(back)) => {
                        assert_eq!(back.id, id, "Full gives the very message back");
                        m = back;
                        thread::yield_now();
                    }
                    Err(TryPublishError::Closed(back)) => {
                        assert_eq!(back.id, id, "Closed gives the very message back");
                        out.refused.push(id);
                        return true;
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
        }
        _ => {
            let mut batch: Vec<Tracked> = (0..10).map(|_| ledger.make()).collect();
            let ids: Vec<u32> = batch.iter().map(|m| m.id).collect();
            match publisher.publish_batch(topic, &mut batch) {
                Ok(()) => {
                    assert!(batch.is_empty());
                    out.accepted.extend(&ids);
                }
                Err(PublishError::Closed(())) => {
                    // What is left is a suffix of the batch, in order; what was
                    // removed was accepted.
                    let left: Vec<u32> = batch.iter().map(|m| m.id).collect();
                    let split = ids.len() - left.len();
                    assert_eq!(left, ids[split..], "unaccepted messages, in order");
                    out.accepted.extend(&ids[..split]);
                    out.refused.extend(left);
                    return true;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    false
}

/// Publishes round-robin over `topics` until every shard has refused. Shards close
/// their intake one by one, so one may still accept after another refused; but a
/// shard that refused never accepts again.
fn publish_until_closed(
    mut publisher: Publisher<Tracked>,
    mode: usize,
    topics: Vec<Topic>,
    ledger: Arc<Ledger>,
    started: mpsc::Sender<()>,
) -> Outcome {
    let shards = 1 + topics.iter().map(|t| t.shard().index()).max().unwrap();
    let mut closed = vec![false; shards];
    let mut out = Outcome::default();
    let mut signalled = false;
    for topic in topics.iter().cycle() {
        if closed.iter().all(|&c| c) {
            break;
        }
        if !signalled && out.accepted.len() >= 500 {
            started.send(()).unwrap();
            signalled = true;
        }
        let shard = topic.shard().index();
        let accepted_before = out.accepted.len();
        let refused = publish_one(&mut publisher, mode, *topic, &ledger, &mut out);
        if closed[shard] {
            assert!(
                refused && out.accepted.len() == accepted_before,
                "mode {mode}: shard {shard} accepted after it refused"
            );
        }
        closed[shard] |= refused;
    }
    if !signalled {
        started.send(()).unwrap();
    }
    out
}

#[test]
fn shutdown_while_publishing_handles_exactly_the_accepted_messages() {
    for round in 0..3 {
        let ledger = Ledger::new(4_000_000);
        let bus = tracked_bus(2)
            .capacity(64)
            .lane_capacity(32)
            .build()
            .unwrap();
        let names: Vec<String> = (0..8).map(|i| format!("race-{i}")).collect();
        for n in &names {
            subscribe_counting(&bus, n, &ledger);
        }
        let topics: Vec<Topic> = names.iter().map(|n| bus.topic(n).unwrap()).collect();
        assert!(topics.iter().any(|t| t.shard().index() == 0));
        assert!(topics.iter().any(|t| t.shard().index() == 1));
        let (started, all_started) = mpsc::channel();
        let threads: Vec<_> = (0..4)
            .map(|mode| {
                let (publisher, topics) = (bus.publisher(), topics.clone());
                let (ledger, started) = (ledger.clone(), started.clone());
                thread::spawn(move || {
                    publish_until_closed(publisher, mode, topics, ledger, started)
                })
            })
            .collect();
        for _ in 0..4 {
            all_started.recv_timeout(PATIENCE).unwrap();
        }
        let stats = bus.shutdown();
        let outcomes: Vec<Outcome> = threads.into_iter().map(|t| t.join().unwrap()).collect();

        let mut accepted = 0u64;
        for (mode, o) in outcomes.iter().enumerate() {
            assert!(!o.refused.is_empty(), "round {round}, mode {mode}");
            for &id in &o.accepted {
                assert_eq!(ledger.handled(id), 1, "round {round}: accepted {id}");
            }
            for &id in &o.refused {
                assert_eq!(ledger.handled(id), 0, "round {round}: refused {id}");
            }
            accepted += o.accepted.len() as u64;
        }
        assert_eq!(ledger.handled_total(), accepted, "round {round}");
        assert_eq!(stats.received(), accepted, "round {round}");
        assert_eq!(stats.handled(), accepted, "round {round}");
        assert_eq!(stats.dropped(), 0, "round {round}");
        ledger.assert_dropped_once();
    }
}

/// Tokens hop around topics on 4 shards, each hop published by the actor that handled
/// the previous one; `shutdown` is called right after the tokens are injected and
/// must follow every chain to its end (lanes of 2 slots force the overflow path).
#[test]
fn shutdown_follows_what_actors_publish_onward() {
    const TOKENS: u32 = 32;
    const LAST_HOP: u32 = 100;
    for round in 0..5 {
        let bus = Bus::<(u32, u32)>::builder()
            .shards(4)
            .pin_threads(false)
            .lane_capacity(2)
            .build()
            .unwrap();
        // Two topics per shard, interleaved: 0,1,2,3,0,1,2,3 by shard, so that every
        // hop changes shard; one extra topic on shard 3 makes a local hop (3 → 3).
        let mut ring: Vec<Topic> = Vec::new();
        for k in 0..2 {
            for s in 0..4 {
                ring.push(
                    bus.topic(&name_on_shard(&bus, &format!("c{k}"), s))
                        .unwrap(),
                );
            }
        }
        ring.push(bus.topic(&name_on_shard(&bus, "c2", 3)).unwrap());
        let ring = Arc::new(ring);
        let deliveries: Arc<Vec<AtomicU32>> = Arc::new(
            (0..TOKENS * (LAST_HOP + 1))
                .map(|_| AtomicU32::new(0))
                .collect(),
        );
        let faults = Arc::new(AtomicU64::new(0));
        for (index, topic) in ring.iter().enumerate() {
            let (ring, deliveries, faults) = (ring.clone(), deliveries.clone(), faults.clone());
            bus.subscribe(
                *topic,
                move |ctx: &mut Context<'_, (u32, u32)>, &(token, hop): &(u32, u32)| {
                    if (token + hop) as usize % ring.len() != index {
                        faults.fetch_add(1, Relaxed);
                    }
                    deliveries[(token * (LAST_HOP + 1) + hop) as usize].fetch_add(1, Relaxed);
                    if hop < LAST_HOP {
                        let next = ring[(token + hop + 1) as usize % ring.len()];
                        if ctx.publish(next, (token, hop + 1)).is_err() {
                            faults.fetch_add(1, Relaxed);
                        }
                    }
                },
            )
            .unwrap();
        }
        for token in 0..TOKENS {
            bus.publish(ring[token as usize % ring.len()], (token, 0))
                .unwrap();
        }
        let stats = bus.shutdown();
        assert_eq!(faults.load(Relaxed), 0, "round {round}");
        let bad = not_exactly_once(&deliveries);
        assert!(
            bad.is_empty(),
            "round {round}: (token*hops+hop, times) {bad:?}"
        );
        assert_eq!(stats.received(), u64::from(TOKENS * (LAST_HOP + 1)));
        assert_eq!(stats.handled(), stats.received());
        assert_eq!(stats.dropped(), 0);
    }
}

// ---------------------------------------------------------------------------------
// Closed after shutdown
// ---------------------------------------------------------------------------------

#[test]
fn publishers_outliving_the_bus_get_closed_with_the_very_message() {
    let ledger = Ledger::new(100);
    let bus = tracked_bus(2).build().unwrap();
    subscribe_counting(&bus, "t", &ledger);
    let mut used = bus.publisher();
    used.publish("t", ledger.make()).unwrap();
    let mut unused = bus.publisher();
    let stats = bus.shutdown();
    assert_eq!(stats.handled(), 1);

    let mut cloned = used.clone();
    for (name, publisher) in [
        ("used", &mut used),
        ("unused", &mut unused),
        ("cloned", &mut cloned),
    ] {
        let m = ledger.make();
        let id = m.id;
        match publisher.publish("t", m) {
            Err(PublishError::Closed(back)) => assert_eq!(back.id, id, "{name}"),
            other => panic!("{name}: publish after shutdown: {other:?}"),
        }
        let m = ledger.make();
        let id = m.id;
        match publisher.try_publish("t", m) {
            Err(e @ TryPublishError::Closed(_)) => {
                assert!(e.is_closed() && !e.is_full(), "{name}");
                assert_eq!(e.into_inner().id, id, "{name}");
            }
            other => panic!("{name}: try_publish after shutdown: {other:?}"),
        }
        let mut batch: Vec<Tracked> = (0..3).map(|_| ledger.make()).collect();
        let ids: Vec<u32> = batch.iter().map(|m| m.id).collect();
        assert!(matches!(
            publisher.publish_batch("t", &mut batch),
            Err(PublishError::Closed(()))
        ));
        let left: Vec<u32> = batch.iter().map(|m| m.id).collect();
        assert_eq!(left, ids, "{name}: the whole batch is left, in order");
    }
    assert_eq!(ledger.handled_total(), 1);
    drop((used, unused, cloned));
    ledger.assert_dropped_once();
}

// ---------------------------------------------------------------------------------
// Destructor accounting
// ---------------------------------------------------------------------------------

/// Publishes `n` messages over every path a message can take: handled, handled by a
/// panicking handler (dead letter), unrouted (no subscriber, no dead-letter handler),
/// refused for an invalid topic. Returns (handled, unrouted, refused).
fn publish_everywhere(bus: &Bus<Tracked>, ledger: &Arc<Ledger>, n: u32) -> (u64, u64, u64) {
    let live: Vec<String> = (0..4).map(|i| format!("live-{i}")).collect();
    for t in &live {
        subscribe_counting(bus, t, ledger);
    }
    let counter = ledger.clone();
    bus.subscribe("boom", move |_: &mut Context<'_, Tracked>, m: &Tracked| {
        counter.handle(m);
        if m.id.is_multiple_of(2) {
            panic!("boom {}", m.id);
        }
    })
    .unwrap();
    let mut publisher = bus.publisher();
    let (mut handled, mut unrouted, mut refused) = (0, 0, 0);
    for i in 0..n {
        let m = ledger.make();
        let topic = match i % 10 {
            0..=5 => live[i as usize % live.len()].clone(),
            6 | 7 => "boom".to_owned(),
            8 => format!("nobody-{}", i % 3),
            _ => String::new(),
        };
        let result = if i % 2 == 0 {
            publisher.publish(topic.as_str(), m)
        } else {
            bus.publish(topic.as_str(), m)
        };
        match (result, i % 10) {
            (Ok(()), 0..=7) => handled += 1,
            (Ok(()), 8) => unrouted += 1,
            (Err(PublishError::InvalidTopic(back)), 9) => {
                drop(back);
                refused += 1;
            }
            (other, _) => panic!("message {i}: {other:?}"),
        }
    }
    (handled, unrouted, refused)
}

#[test]
fn every_message_is_dropped_exactly_once_after_shutdown() {
    let ledger = Ledger::new(10_000);
    let bus = tracked_bus(3).capacity(32).build().unwrap();
    let (handled, unrouted, refused) = publish_everywhere(&bus, &ledger, 10_000);
    let stats = bus.shutdown();
    assert_eq!(ledger.created(), 10_000);
    assert_eq!(ledger.handled_total(), handled);
    assert_eq!(stats.received(), handled + unrouted);
    assert_eq!(stats.handled(), handled);
    assert_eq!(stats.unrouted(), unrouted);
    assert_eq!(stats.panics(), 1_000);
    assert_eq!(refused, 1_000);
    assert_eq!(stats.dropped(), 0);
    ledger.assert_dropped_once();
}

#[test]
fn every_message_is_dropped_exactly_once_after_dropping_the_bus() {
    let ledger = Ledger::new(10_000);
    let bus = tracked_bus(3).capacity(32).build().unwrap();
    let (handled, _, _) = publish_everywhere(&bus, &ledger, 10_000);
    // No `shutdown`: the drop drains (within `drop_timeout`) and stops.
    drop(bus);
    assert_eq!(
        ledger.handled_total(),
        handled,
        "dropping the bus drains it"
    );
    ledger.assert_dropped_once();
}

// ---------------------------------------------------------------------------------
// Publishing from `on_stop`
// ---------------------------------------------------------------------------------

/// An actor whose `on_stop` publishes `count` messages to each of `targets`, noting
/// which came back refused.
struct Farewell {
    targets: Vec<String>,
    count: u32,
    ledger: Arc<Ledger>,
    refused: Arc<AtomicU64>,
    stopped: Arc<AtomicU64>,
}

impl shardbus::Handler<Tracked> for Farewell {
    fn handle(&mut self, _: &mut Context<'_, Tracked>, m: &Tracked) {
        self.ledger.handle(m);
    }

    fn on_stop(&mut self, ctx: &mut Context<'_, Tracked>) {
        self.stopped.fetch_add(1, Relaxed);
        for target in &self.targets {
            for _ in 0..self.count {
                if let Err(e) = ctx.publish(target.as_str(), self.ledger.make()) {
                    assert!(e.is_closed(), "{e:?}");
                    self.refused.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

/// At a graceful shutdown, what an actor's `on_stop` publishes, to a topic of its own
/// shard and to one of another shard, is delivered: counted exactly, nothing dropped.
/// Both receivers have an `on_stop` of their own (the same-shard one runs on the same
/// shard, before or after the publisher's): they still get the messages.
#[test]
fn shutdown_delivers_what_on_stop_publishes_on_the_same_and_another_shard() {
    const COUNT: u32 = 25;
    let ledger = Ledger::new(1_000);
    let bus = tracked_bus(2).build().unwrap();
    let (leaving, same, other) = (
        name_on_shard(&bus, "leaving", 0),
        name_on_shard(&bus, "same", 0),
        name_on_shard(&bus, "other", 1),
    );
    let (refused, stopped) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let farewell = |targets: Vec<String>, count| Farewell {
        targets,
        count,
        ledger: ledger.clone(),
        refused: refused.clone(),
        stopped: stopped.clone(),
    };
    bus.subscribe(same.as_str(), farewell(Vec::new(), 0))
        .unwrap();
    bus.subscribe(other.as_str(), farewell(Vec::new(), 0))
        .unwrap();
    bus.subscribe(leaving.as_str(), farewell(vec![same, other], COUNT))
        .unwrap();
    bus.publish(leaving.as_str(), ledger.make()).unwrap();

    let stats = bus.shutdown();
    assert_eq!(stopped.load(Relaxed), 3, "every on_stop ran once");
    assert_eq!(refused.load(Relaxed), 0, "nothing refused");
    assert_eq!(ledger.created(), 1 + 2 * COUNT);
    assert_eq!(ledger.handled_total(), u64::from(1 + 2 * COUNT));
    assert!((0..ledger.created()).all(|id| ledger.handled(id) == 1));
    assert_eq!(stats.shards[0].handled, u64::from(1 + COUNT));
    assert_eq!(stats.shards[1].handled, u64::from(COUNT));
    assert_eq!((stats.dropped(), stats.unrouted()), (0, 0));
    ledger.assert_dropped_once();
}

/// A cascade of `on_stop` publishes: each message handled on one shard makes one on
/// the other until a hop count runs out, so the drain after the `on_stop` calls runs
/// several rounds across shards before the bus is quiet.
#[test]
fn shutdown_follows_a_cascade_started_by_on_stop() {
    const HOPS: u32 = 50;
    let bus = Bus::<u32>::builder()
        .shards(2)
        .pin_threads(false)
        .build()
        .unwrap();
    let (a, b) = (name_on_shard(&bus, "a", 0), name_on_shard(&bus, "b", 1));
    let seen = Arc::new(AtomicU64::new(0));
    for (me, next) in [(a.clone(), b.clone()), (b.clone(), a.clone())] {
        let seen = seen.clone();
        bus.subscribe(me.as_str(), move |ctx: &mut Context<'_, u32>, n: &u32| {
            seen.fetch_add(1, Relaxed);
            if *n < HOPS {
                ctx.publish(next.as_str(), n + 1).unwrap();
            }
        })
        .unwrap();
    }
    struct Starter(String);
    impl shardbus::Handler<u32> for Starter {
        fn handle(&mut self, _: &mut Context<'_, u32>, _: &u32) {}
        fn on_stop(&mut self, ctx: &mut Context<'_, u32>) {
            ctx.publish(self.0.as_str(), 1).unwrap();
        }
    }
    bus.subscribe("starter", Starter(a)).unwrap();
    let stats = bus.shutdown();
    assert_eq!(seen.load(Relaxed), u64::from(HOPS));
    assert_eq!(stats.handled(), u64::from(HOPS));
    assert_eq!(stats.dropped(), 0);
}
