//! Subject patterns through the public API: `*` / `>` subscriptions on every form (bus,
//! builder, handler), topics that exist before the pattern and topics first seen after
//! it, one actor per matching topic on its shard, unsubscribe everywhere, supervision,
//! subscribe and unsubscribe racing publishes (exact counts), and the typed refusal of
//! names that are not plain subjects on every publish form.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;

use shardbus::{
    Bus, Context, DurableError, Error, Handler, Pattern, PublishError, SubjectError, Supervision,
    TryPublishError,
};

/// What the pattern actors saw: per topic, the messages in order; and how many actors
/// the factory made.
#[derive(Default)]
struct Seen {
    by_topic: Mutex<BTreeMap<String, Vec<u64>>>,
    made: AtomicUsize,
    stopped: AtomicUsize,
}

impl Seen {
    fn topics(&self) -> Vec<String> {
        self.by_topic.lock().unwrap().keys().cloned().collect()
    }
    fn of(&self, topic: &str) -> Vec<u64> {
        self.by_topic
            .lock()
            .unwrap()
            .get(topic)
            .cloned()
            .unwrap_or_default()
    }
    fn total(&self) -> usize {
        self.by_topic.lock().unwrap().values().map(Vec::len).sum()
    }
}

struct Recorder {
    seen: Arc<Seen>,
    /// The topic this actor serves (set by its first message): one actor per topic.
    topic: Option<String>,
}

impl Handler<u64> for Recorder {
    fn handle(&mut self, ctx: &mut Context<'_, u64>, msg: &u64) {
        let topic = self.topic.get_or_insert_with(|| ctx.topic().to_owned());
        assert_eq!(topic, ctx.topic(), "one actor serves one topic");
        let mut seen = self.seen.by_topic.lock().unwrap();
        seen.entry(ctx.topic().to_owned()).or_default().push(*msg);
    }
    fn on_stop(&mut self, _: &mut Context<'_, u64>) {
        self.seen.stopped.fetch_add(1, Relaxed);
    }
}

fn recorder(seen: &Arc<Seen>) -> impl FnMut() -> Recorder + Send + 'static {
    let seen = seen.clone();
    move || {
        seen.made.fetch_add(1, Relaxed);
        Recorder {
            seen: seen.clone(),
            topic: None,
        }
    }
}

#[test]
fn a_pattern_gets_existing_and_new_topics_and_nothing_else() {
    let bus = Bus::<u64>::builder().shards(3).build().unwrap();
    // Topics that exist before the pattern: published to, resolved, subscribed.
    bus.publish("orders.eu.created", 0).unwrap();
    let handle = bus.topic("orders.us.created").unwrap();
    bus.subscribe(
        "orders.asia.created",
        |_: &mut Context<'_, u64>, _: &u64| {},
    )
    .unwrap();
    bus.flush().unwrap();
    let seen = Arc::new(Seen::default());
    let id = bus
        .subscribe_pattern("orders.*.created", Supervision::Resume, recorder(&seen))
        .unwrap();
    // The three existing topics already have their actors.
    assert_eq!(seen.made.load(Relaxed), 3);
    for n in 1..=3 {
        bus.publish("orders.eu.created", n).unwrap();
        bus.publish(handle, 10 + n).unwrap();
        bus.publish("orders.asia.created", 20 + n).unwrap();
        // Topics first seen after the pattern, on whichever shard.
        for i in 0..6 {
            bus.publish(format!("orders.new{i}.created"), 100 * i + n)
                .unwrap();
        }
        // No match: too deep, too shallow, other root.
        bus.publish("orders.eu.created.x", 0).unwrap();
        bus.publish("orders.created", 0).unwrap();
        bus.publish("billing.eu.created", 0).unwrap();
    }
    bus.flush().unwrap();
    assert_eq!(seen.of("orders.eu.created"), [1, 2, 3]);
    assert_eq!(seen.of("orders.us.created"), [11, 12, 13]);
    assert_eq!(seen.of("orders.asia.created"), [21, 22, 23]);
    for i in 0..6 {
        assert_eq!(
            seen.of(&format!("orders.new{i}.created")),
            [100 * i + 1, 100 * i + 2, 100 * i + 3]
        );
    }
    assert_eq!(seen.topics().len(), 9);
    assert_eq!(seen.made.load(Relaxed), 9);
    // Unsubscribe removes it on every shard: each actor's `on_stop` runs once.
    bus.unsubscribe(id).unwrap();
    assert_eq!(seen.stopped.load(Relaxed), 9);
    assert!(matches!(
        bus.unsubscribe(id),
        Err(Error::UnknownSubscription(_))
    ));
    bus.publish("orders.eu.created", 99).unwrap();
    bus.publish("orders.late.created", 99).unwrap();
    let stats = bus.shutdown();
    assert_eq!(seen.total(), 27);
    assert_eq!(seen.made.load(Relaxed), 9, "no actor after the unsubscribe");
    // Unrouted: 9 without a match, the first one (before the pattern), the 2 after.
    assert_eq!(stats.unrouted(), 12);
}

#[test]
fn full_wildcard_matches_one_or_more_trailing_tokens() {
    let bus = Bus::<u64>::builder().shards(2).build().unwrap();
    let seen = Arc::new(Seen::default());
    bus.subscribe_pattern("a.>", Supervision::Resume, recorder(&seen))
        .unwrap();
    let all = Arc::new(Seen::default());
    bus.subscribe_pattern(">", Supervision::Resume, recorder(&all))
        .unwrap();
    for (i, name) in ["a", "a.b", "a.b.c", "b.a", "a.b.c.d.e.f"]
        .iter()
        .enumerate()
    {
        bus.publish(*name, i as u64).unwrap();
    }
    bus.shutdown();
    assert_eq!(seen.topics(), ["a.b", "a.b.c", "a.b.c.d.e.f"]);
    assert_eq!(all.topics().len(), 5);
}

#[test]
fn patterns_beside_plain_subscribers_and_each_other() {
    let bus = Bus::<u64>::builder().shards(2).build().unwrap();
    let plain = Arc::new(AtomicU64::new(0));
    let p = plain.clone();
    bus.subscribe("x.y", move |_: &mut Context<'_, u64>, m: &u64| {
        p.fetch_add(*m, Relaxed);
    })
    .unwrap();
    let (one, two) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    bus.subscribe_pattern("x.*", Supervision::Resume, recorder(&one))
        .unwrap();
    bus.subscribe_pattern("*.y", Supervision::Resume, recorder(&two))
        .unwrap();
    for n in 1..=4 {
        bus.publish("x.y", n).unwrap();
    }
    bus.shutdown();
    assert_eq!(plain.load(Relaxed), 10);
    assert_eq!(one.of("x.y"), [1, 2, 3, 4]);
    assert_eq!(two.of("x.y"), [1, 2, 3, 4]);
}

#[test]
fn builder_and_handler_patterns() {
    let early = Arc::new(Seen::default());
    let late = Arc::new(Seen::default());
    let late2 = late.clone();
    let ids = Arc::new(Mutex::new(None));
    let ids2 = ids.clone();
    let bus = Bus::<u64>::builder()
        .shards(2)
        .subscribe_pattern("ev.*", Supervision::Resume, recorder(&early))
        .subscribe("ctl", move |ctx: &mut Context<'_, u64>, m: &u64| {
            if *m == 0 {
                let id = ctx
                    .subscribe_pattern("ev.>", Supervision::Resume, recorder(&late2))
                    .unwrap();
                *ids2.lock().unwrap() = Some(id);
            } else {
                let id = ids2.lock().unwrap().take().unwrap();
                ctx.unsubscribe(id).unwrap();
            }
        })
        .build()
        .unwrap();
    assert_eq!(bus.initial_subscriptions().len(), 2);
    bus.publish("ev.a", 1).unwrap();
    bus.publish("ctl", 0).unwrap();
    bus.flush().unwrap();
    // The handler's request reaches every shard without waiting: a flush after it has
    // passed every shard's intake behind it.
    bus.flush().unwrap();
    bus.publish("ev.a", 2).unwrap();
    bus.publish("ev.b", 3).unwrap();
    bus.flush().unwrap();
    bus.publish("ctl", 1).unwrap();
    bus.flush().unwrap();
    bus.flush().unwrap();
    bus.publish("ev.a", 4).unwrap();
    bus.shutdown();
    assert_eq!(early.of("ev.a"), [1, 2, 4]);
    assert_eq!(early.of("ev.b"), [3]);
    assert_eq!(late.of("ev.a"), [2]);
    assert_eq!(late.of("ev.b"), [3]);
    assert_eq!(late.stopped.load(Relaxed), 2);
}

#[test]
fn bad_patterns_are_typed_errors() {
    let bus = Bus::<u64>::builder().shards(2).build().unwrap();
    for (bad, why) in [
        ("a.>.b", SubjectError::FullWildcardNotLast),
        ("a..*", SubjectError::EmptyToken),
        ("", SubjectError::EmptyToken),
        ("a. *", SubjectError::Whitespace),
    ] {
        let r = bus.subscribe_pattern(bad, Supervision::Resume, || {
            |_: &mut Context<'_, u64>, _: &u64| {}
        });
        assert!(
            matches!(&r, Err(Error::InvalidSubject { name, reason }) if name == bad && reason == &why),
            "{bad:?}: {r:?}"
        );
    }
    let built = Bus::<u64>::builder()
        .subscribe_pattern("a.>.b", Supervision::Resume, || {
            |_: &mut Context<'_, u64>, _: &u64| {}
        })
        .build();
    assert!(matches!(built, Err(Error::InvalidSubject { .. })));
    // A plain subscription to a wildcard name points at the pattern form.
    let r = bus.subscribe("a.*", |_: &mut Context<'_, u64>, _: &u64| {});
    assert!(matches!(
        r,
        Err(Error::InvalidSubject {
            reason: SubjectError::Wildcard,
            ..
        })
    ));
    bus.shutdown();
}

#[test]
fn names_that_are_not_plain_subjects_are_refused_on_every_publish_form() {
    let bad = ["a.*", ">", "a.>", "a..b", ".a", "a.", "a b", "a\tb"];
    let bus = Bus::<u64>::builder().shards(2).build().unwrap();
    let got = Arc::new(AtomicU64::new(0));
    // A handler tries each bad name with both of its publish forms, then a good one.
    bus.subscribe("probe", move |ctx: &mut Context<'_, u64>, _: &u64| {
        for name in bad {
            assert!(matches!(
                ctx.publish(name, 7),
                Err(PublishError::InvalidTopic(7))
            ));
            assert!(matches!(
                ctx.try_publish(name, 8),
                Err(TryPublishError::InvalidTopic(8))
            ));
        }
        ctx.publish("good.name", 1).unwrap();
    })
    .unwrap();
    let g2 = got.clone();
    bus.subscribe("good.name", move |_: &mut Context<'_, u64>, m: &u64| {
        g2.fetch_add(*m, Relaxed);
    })
    .unwrap();
    let mut publisher = bus.publisher();
    for name in bad {
        // Twice: the second time through the caches' (missed) path again, never stored.
        for _ in 0..2 {
            assert!(matches!(
                bus.publish(name, 1),
                Err(PublishError::InvalidTopic(1))
            ));
            assert!(matches!(
                bus.try_publish(name, 2),
                Err(TryPublishError::InvalidTopic(2))
            ));
            assert!(matches!(
                bus.publish_durable(name, 3),
                Err(DurableError::InvalidTopic(3))
            ));
            assert!(matches!(
                publisher.publish(name, 4),
                Err(PublishError::InvalidTopic(4))
            ));
            assert!(matches!(
                publisher.try_publish(name, 5),
                Err(TryPublishError::InvalidTopic(5))
            ));
            assert!(matches!(
                publisher.publish_durable(name, 6),
                Err(DurableError::InvalidTopic(6))
            ));
            let mut batch = vec![1, 2, 3];
            assert!(matches!(
                publisher.publish_batch(name, &mut batch),
                Err(PublishError::InvalidTopic(()))
            ));
            assert_eq!(batch, [1, 2, 3], "the batch is given back whole");
            assert!(matches!(
                bus.topic(name),
                Err(Error::InvalidSubject { name: n, .. }) if n == name
            ));
        }
    }
    // The async forms, polled on this thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for name in bad {
            assert!(matches!(
                bus.publish_async(name, 9).await,
                Err(PublishError::InvalidTopic(9))
            ));
            assert!(matches!(
                publisher.publish_async(name, 10).await,
                Err(PublishError::InvalidTopic(10))
            ));
            assert!(matches!(
                bus.publish_durable_async(name, 11).await,
                Err(DurableError::InvalidTopic(11))
            ));
            assert!(matches!(
                publisher.publish_durable_async(name, 12).await,
                Err(DurableError::InvalidTopic(12))
            ));
        }
    });
    // Plain names keep working, wildcard characters inside a token included.
    for name in ["good.name", "good-name_1", "a*", "x>y", "é.ü"] {
        bus.publish(name, 0).unwrap();
        publisher.publish(name, 0).unwrap();
        bus.topic(name).unwrap();
    }
    bus.publish("probe", 0).unwrap();
    drop(publisher);
    let stats = bus.shutdown();
    assert_eq!(got.load(Relaxed), 1);
    // Only the good names' messages were accepted: 2 x 5, the probe and its onward one.
    assert_eq!(stats.received(), 12);
}

/// A handler that panics on its third message.
struct Fragile {
    seen: Arc<Seen>,
    n: u32,
}

impl Handler<u64> for Fragile {
    fn handle(&mut self, ctx: &mut Context<'_, u64>, msg: &u64) {
        self.n += 1;
        if self.n == 3 {
            panic!("third");
        }
        let mut seen = self.seen.by_topic.lock().unwrap();
        seen.entry(ctx.topic().to_owned()).or_default().push(*msg);
    }
}

#[test]
fn each_patterns_actor_is_supervised_on_its_own() {
    for policy in [Supervision::Resume, Supervision::Restart, Supervision::Stop] {
        let bus = Bus::<u64>::builder().shards(2).build().unwrap();
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        bus.subscribe_pattern("p.*", policy, move || {
            s.made.fetch_add(1, Relaxed);
            Fragile {
                seen: s.clone(),
                n: 0,
            }
        })
        .unwrap();
        for n in 1..=5 {
            bus.publish("p.a", n).unwrap();
            bus.publish("p.b", 10 + n).unwrap();
        }
        let stats = bus.shutdown();
        assert_eq!(
            stats
                .shards
                .iter()
                .map(|s| s.panic_sites.handle)
                .sum::<u64>(),
            2
        );
        match policy {
            // Resume keeps the actor (its count goes on); Restart makes a fresh one
            // (which counts from 0 again: 2 more, then panics on the 3rd it sees, never).
            Supervision::Resume | Supervision::Restart => {
                assert_eq!(seen.of("p.a"), [1, 2, 4, 5]);
                assert_eq!(seen.of("p.b"), [11, 12, 14, 15]);
                let made = if policy == Supervision::Restart { 4 } else { 2 };
                assert_eq!(seen.made.load(Relaxed), made);
            }
            // Stop ends that topic's actor only.
            _ => {
                assert_eq!(seen.of("p.a"), [1, 2]);
                assert_eq!(seen.of("p.b"), [11, 12]);
                assert_eq!(stats.unrouted(), 4);
            }
        }
    }
}

#[test]
fn a_panicking_factory_is_counted_and_leaves_that_topic_without_an_actor() {
    let bus = Bus::<u64>::builder().shards(1).build().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let got = Arc::new(AtomicU64::new(0));
    let g = got.clone();
    bus.subscribe_pattern("f.*", Supervision::Resume, move || {
        if c.fetch_add(1, Relaxed) == 0 {
            panic!("first factory call");
        }
        let g = g.clone();
        move |_: &mut Context<'_, u64>, m: &u64| {
            g.fetch_add(*m, Relaxed);
        }
    })
    .unwrap();
    bus.publish("f.a", 1).unwrap(); // the factory panics: no actor for f.a
    bus.publish("f.b", 2).unwrap();
    bus.publish("f.a", 4).unwrap();
    let stats = bus.shutdown();
    assert_eq!(got.load(Relaxed), 2);
    assert_eq!(stats.shards[0].panic_sites.factory, 1);
    assert_eq!(stats.unrouted(), 2);
}

/// Subscribe and unsubscribe of a pattern while publishers run: for every topic, what
/// the pattern's actor saw is one contiguous run of that topic's sequence, in order,
/// that holds every message published after the subscribe returned and before the
/// unsubscribe was called, and nothing published after the unsubscribe returned.
#[test]
fn subscribe_and_unsubscribe_racing_publishes() {
    use std::sync::atomic::AtomicBool;
    const TOPICS: u64 = 8;
    /// A bound on each topic's sequence, should the main thread stall.
    const CAP: u64 = 2_000_000;
    let wait_all = |progress: &[AtomicU64], at_least: &[u64]| {
        while progress
            .iter()
            .zip(at_least)
            .any(|(p, &n)| p.load(Relaxed) < n.min(CAP))
        {
            thread::yield_now();
        }
    };
    let snapshot =
        |progress: &[AtomicU64]| -> Vec<u64> { progress.iter().map(|p| p.load(Relaxed)).collect() };
    for round in 0..3 {
        let bus = Arc::new(Bus::<u64>::builder().shards(3).build().unwrap());
        let progress: Arc<Vec<AtomicU64>> =
            Arc::new((0..TOPICS).map(|_| AtomicU64::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let publishers: Vec<_> = (0..2)
            .map(|p| {
                let (bus, progress, stop) = (bus.clone(), progress.clone(), stop.clone());
                thread::spawn(move || {
                    let mut publisher = bus.publisher();
                    // Publisher p owns topics p, p + 2, ...; messages are 1, 2, ... per
                    // topic, published until told to stop.
                    let mut seq = 0;
                    while !stop.load(Relaxed) && seq < CAP {
                        seq += 1;
                        for t in (p..TOPICS).step_by(2) {
                            let name = format!("race.t{t}.{round}");
                            if p == 0 {
                                publisher.publish(name, seq).unwrap();
                            } else {
                                bus.publish(name, seq).unwrap();
                            }
                            progress[t as usize].store(seq, Relaxed);
                        }
                    }
                })
            })
            .collect();
        let seen = Arc::new(Seen::default());
        // Some traffic first, then subscribe mid-stream.
        wait_all(&progress, &[200; TOPICS as usize]);
        let id = bus
            .subscribe_pattern("race.*.>", Supervision::Resume, recorder(&seen))
            .unwrap();
        let after_sub = snapshot(&progress);
        wait_all(
            &progress,
            &after_sub.iter().map(|n| n + 500).collect::<Vec<_>>(),
        );
        let before_unsub = snapshot(&progress);
        bus.unsubscribe(id).unwrap();
        let after_unsub = snapshot(&progress);
        wait_all(
            &progress,
            &after_unsub.iter().map(|n| n + 200).collect::<Vec<_>>(),
        );
        stop.store(true, Relaxed);
        for p in publishers {
            p.join().unwrap();
        }
        let published: u64 = snapshot(&progress).iter().sum();
        bus.flush().unwrap();
        for t in 0..TOPICS {
            let got = seen.of(&format!("race.t{t}.{round}"));
            let t = t as usize;
            assert!(!got.is_empty(), "topic {t}: nothing");
            let (first, last) = (got[0], *got.last().unwrap());
            assert_eq!(
                got,
                (first..=last).collect::<Vec<_>>(),
                "topic {t}: a contiguous run"
            );
            // A publisher records its progress after the publish returns, so when a
            // snapshot is taken one message per topic may be published and not yet
            // recorded: it was published before the subscription took effect (and may be
            // missed), or before the unsubscription did (and may be seen). Hence the + 1
            // of slack on each side, and no more.
            assert!(
                first <= after_sub[t] + 2,
                "topic {t}: {first} > {}",
                after_sub[t] + 2
            );
            assert!(
                last >= before_unsub[t],
                "topic {t}: {last} < {}",
                before_unsub[t]
            );
            assert!(
                last <= after_unsub[t] + 1,
                "topic {t}: {last} > {}",
                after_unsub[t] + 1
            );
        }
        assert_eq!(seen.made.load(Relaxed), TOPICS as usize);
        assert_eq!(seen.stopped.load(Relaxed), TOPICS as usize);
        let stats = Arc::try_unwrap(bus).ok().unwrap().shutdown();
        assert_eq!(stats.received(), published);
        assert_eq!(stats.handled() + stats.unrouted(), published);
        assert_eq!(stats.handled(), seen.total() as u64);
    }
}

#[test]
fn the_pattern_type_is_public() {
    let p = Pattern::parse("a.*.c").unwrap();
    assert!(p.matches("a.b.c"));
    assert_eq!(p.to_string(), "a.*.c");
    let _ = Bus::<u64>::shards;
}
