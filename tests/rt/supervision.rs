//! Panic supervision through the public API: `Resume`, `Restart` and `Stop`, the
//! dead letters a panic produces, the statistics, and the isolation of other actors.
//!
//! The panics are deliberate. Their messages go to stderr through the default panic
//! hook, which libtest captures per test (shard threads inherit the capture of the
//! test thread that built the bus), so they show only when a test fails; the global
//! hook is left alone because tests run in parallel in one process.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use shardbus::{
    Bus, Context, DeadLetterReason, Error, Handler, ShardId, Stats, SubscriptionId, Supervision,
};

const TOPIC: &str = "supervised";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Start(u32),
    /// `count` is the actor's own state: messages it has handled, this one included.
    Handled {
        instance: u32,
        msg: u32,
        count: u32,
    },
    Stop(u32),
    Dropped(u32),
}

type Events = Arc<Mutex<Vec<Ev>>>;

/// What a `Counter` does besides counting.
#[derive(Clone, Copy, Default)]
struct Faults {
    /// `handle` panics on these messages.
    poison: &'static [u32],
    /// `on_start` panics in these instances.
    bad_start: &'static [u32],
    /// `on_stop` panics.
    bad_stop: bool,
}

/// An actor with state (a counter) that logs its lifecycle.
struct Counter {
    instance: u32,
    count: u32,
    faults: Faults,
    events: Events,
}

impl Handler<u32> for Counter {
    fn on_start(&mut self, _: &mut Context<'_, u32>) {
        self.events.lock().unwrap().push(Ev::Start(self.instance));
        if self.faults.bad_start.contains(&self.instance) {
            panic!("instance {} cannot start", self.instance);
        }
    }

    fn handle(&mut self, _: &mut Context<'_, u32>, &msg: &u32) {
        self.count += 1;
        self.events.lock().unwrap().push(Ev::Handled {
            instance: self.instance,
            msg,
            count: self.count,
        });
        if self.faults.poison.contains(&msg) {
            panic!("poisoned {msg}");
        }
    }

    fn on_stop(&mut self, _: &mut Context<'_, u32>) {
        self.events.lock().unwrap().push(Ev::Stop(self.instance));
        if self.faults.bad_stop {
            panic!("instance {} cannot stop", self.instance);
        }
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.events.lock().unwrap().push(Ev::Dropped(self.instance));
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Letter {
    Panicked {
        msg: u32,
        subscription: SubscriptionId,
        panic: String,
    },
    NoSubscriber {
        msg: u32,
    },
    Unexpected(String),
}

type RawLetters = Arc<Mutex<Vec<(String, ShardId, Letter)>>>;

/// A bus whose dead-letter handler records every letter with its topic and shard.
fn bus_with_letters(shards: usize) -> (Bus<u32>, RawLetters) {
    let letters: RawLetters = Arc::new(Mutex::new(Vec::new()));
    let sink = letters.clone();
    let bus = Bus::<u32>::builder()
        .shards(shards)
        .pin_threads(false)
        .dead_letter(move |letter| {
            let msg = *letter.message;
            let entry = match letter.reason {
                DeadLetterReason::NoSubscriber => Letter::NoSubscriber { msg },
                DeadLetterReason::Panicked {
                    subscription,
                    panic,
                } => Letter::Panicked {
                    msg,
                    subscription,
                    panic: panic.to_owned(),
                },
                other => Letter::Unexpected(format!("{other:?}")),
            };
            let topic = letter.topic.to_owned();
            sink.lock().unwrap().push((topic, letter.shard, entry));
        })
        .build()
        .unwrap();
    (bus, letters)
}

/// The letters, after checking that each names TOPIC and TOPIC's shard.
fn letters_of(raw: &RawLetters, shard: ShardId) -> Vec<Letter> {
    let raw = raw.lock().unwrap();
    raw.iter()
        .map(|(topic, s, letter)| {
            assert_eq!((topic.as_str(), *s), (TOPIC, shard), "{letter:?}");
            letter.clone()
        })
        .collect()
}

struct Outcome {
    id: SubscriptionId,
    shard: ShardId,
    /// Start/Handled/Stop, in order.
    events: Vec<Ev>,
    /// Instances dropped, in order.
    dropped: Vec<u32>,
    instances: u32,
    letters: Vec<Letter>,
    stats: Stats,
}

/// Subscribes a supervised `Counter` to TOPIC, publishes `0..messages` in order from
/// one `Publisher`, shuts down.
fn run(policy: Supervision, faults: Faults, messages: u32) -> Outcome {
    let (bus, letters) = bus_with_letters(2);
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    let instances = Arc::new(AtomicU32::new(0));
    let (log, made) = (events.clone(), instances.clone());
    let id = bus
        .subscribe_supervised(TOPIC, policy, move || Counter {
            instance: made.fetch_add(1, Relaxed),
            count: 0,
            faults,
            events: log.clone(),
        })
        .unwrap();
    let mut publisher = bus.publisher();
    for m in 0..messages {
        publisher.publish(TOPIC, m).unwrap();
    }
    let shard = bus.shard_of(TOPIC).unwrap();
    let stats = bus.shutdown();
    let events = events.lock().unwrap().clone();
    let dropped = events
        .iter()
        .filter_map(|e| match e {
            Ev::Dropped(i) => Some(*i),
            _ => None,
        })
        .collect();
    let events = events
        .into_iter()
        .filter(|e| !matches!(e, Ev::Dropped(_)))
        .collect();
    let letters = letters_of(&letters, shard);
    Outcome {
        id,
        shard,
        events,
        dropped,
        instances: instances.load(Relaxed),
        letters,
        stats,
    }
}

fn handled(instance: u32, msgs: std::ops::Range<u32>, first_count: u32) -> Vec<Ev> {
    msgs.enumerate()
        .map(|(i, msg)| Ev::Handled {
            instance,
            msg,
            count: first_count + i as u32,
        })
        .collect()
}

fn panicked(o: &Outcome, msg: u32) -> Letter {
    Letter::Panicked {
        msg,
        subscription: o.id,
        panic: format!("poisoned {msg}"),
    }
}

fn shard_stats(o: &Outcome) -> &shardbus::ShardStats {
    &o.stats.shards[o.shard.index()]
}

const POISON: Faults = Faults {
    poison: &[3, 7],
    bad_start: &[],
    bad_stop: false,
};

#[test]
fn resume_keeps_the_actor_and_its_state() {
    let o = run(Supervision::Resume, POISON, 10);
    let mut expected = vec![Ev::Start(0)];
    // The count goes on through both panics: same actor, same state.
    expected.extend(handled(0, 0..10, 1));
    expected.push(Ev::Stop(0));
    assert_eq!(o.events, expected);
    assert_eq!(o.instances, 1, "the factory made one actor");
    assert_eq!(o.dropped, [0]);
    assert_eq!(o.letters, [panicked(&o, 3), panicked(&o, 7)]);
    let s = shard_stats(&o);
    assert_eq!((s.panics, s.restarts, s.stopped_subscriptions), (2, 0, 0));
    assert_eq!((s.received, s.handled, s.unrouted), (10, 10, 0));
    assert_eq!(s.dead_letters, 2);
    assert_eq!(o.stats.panics(), 2);
}

#[test]
fn restart_replaces_the_actor_with_a_fresh_one_from_the_factory() {
    let o = run(Supervision::Restart, POISON, 10);
    let mut expected = vec![Ev::Start(0)];
    expected.extend(handled(0, 0..4, 1));
    // The replaced actor is stopped (once) before the fresh one starts; the fresh
    // one's count starts over.
    expected.extend([Ev::Stop(0), Ev::Start(1)]);
    expected.extend(handled(1, 4..8, 1));
    expected.extend([Ev::Stop(1), Ev::Start(2)]);
    expected.extend(handled(2, 8..10, 1));
    // The last one is stopped when the subscription ends.
    expected.push(Ev::Stop(2));
    assert_eq!(o.events, expected);
    assert_eq!(
        o.instances, 3,
        "the factory was called again for each restart"
    );
    assert_eq!(o.dropped, [0, 1, 2], "each actor dropped once");
    assert_eq!(o.letters, [panicked(&o, 3), panicked(&o, 7)]);
    let s = shard_stats(&o);
    assert_eq!((s.panics, s.restarts, s.stopped_subscriptions), (2, 2, 0));
    assert_eq!((s.received, s.handled, s.unrouted), (10, 10, 0));
    assert_eq!(s.dead_letters, 2);
}

#[test]
fn stop_ends_the_subscription_and_later_messages_have_no_subscriber() {
    let (bus, letters) = bus_with_letters(2);
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    let instances = Arc::new(AtomicU32::new(0));
    let (log, made) = (events.clone(), instances.clone());
    let id = bus
        .subscribe_supervised(TOPIC, Supervision::Stop, move || Counter {
            instance: made.fetch_add(1, Relaxed),
            count: 0,
            faults: POISON,
            events: log.clone(),
        })
        .unwrap();
    // Through the shared inbox, like `unsubscribe` below: once `unsubscribe` is
    // answered, every message before it has been dispatched.
    for m in 0..10 {
        bus.publish(TOPIC, m).unwrap();
    }
    let again = bus.unsubscribe(id);
    let shard = bus.shard_of(TOPIC).unwrap();
    let stats = bus.shutdown();

    assert!(
        matches!(again, Err(Error::UnknownSubscription(x)) if x == id),
        "a stopped subscription is gone: {again:?}"
    );
    let events = events.lock().unwrap().clone();
    let mut expected = vec![Ev::Start(0)];
    expected.extend(handled(0, 0..4, 1));
    expected.push(Ev::Stop(0));
    expected.push(Ev::Dropped(0));
    assert_eq!(events, expected);
    assert_eq!(instances.load(Relaxed), 1);
    let mut want = vec![Letter::Panicked {
        msg: 3,
        subscription: id,
        panic: "poisoned 3".to_owned(),
    }];
    want.extend((4..10).map(|msg| Letter::NoSubscriber { msg }));
    assert_eq!(letters_of(&letters, shard), want);
    let s = &stats.shards[shard.index()];
    assert_eq!((s.panics, s.restarts, s.stopped_subscriptions), (1, 0, 1));
    assert_eq!((s.received, s.handled, s.unrouted), (10, 4, 6));
    assert_eq!(s.dead_letters, 7);
}

#[test]
fn a_panicking_actor_does_not_disturb_the_other_subscribers_of_its_topic() {
    let (bus, letters) = bus_with_letters(2);
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let fragile = bus
        .subscribe_supervised(TOPIC, Supervision::Stop, move || Counter {
            instance: 0,
            count: 0,
            faults: POISON,
            events: log.clone(),
        })
        .unwrap();
    let steady = Arc::new(Mutex::new(Vec::new()));
    let sink = steady.clone();
    bus.subscribe(TOPIC, move |_: &mut Context<'_, u32>, m: &u32| {
        sink.lock().unwrap().push(*m);
    })
    .unwrap();
    let mut publisher = bus.publisher();
    for m in 0..10 {
        publisher.publish(TOPIC, m).unwrap();
    }
    let shard = bus.shard_of(TOPIC).unwrap();
    let stats = bus.shutdown();
    assert_eq!(*steady.lock().unwrap(), (0..10).collect::<Vec<_>>());
    assert_eq!(
        letters_of(&letters, shard),
        [Letter::Panicked {
            msg: 3,
            subscription: fragile,
            panic: "poisoned 3".to_owned()
        }],
        "the topic still has a subscriber: no NoSubscriber letters"
    );
    let mut expected = vec![Ev::Start(0)];
    expected.extend(handled(0, 0..4, 1));
    expected.extend([Ev::Stop(0), Ev::Dropped(0)]);
    assert_eq!(*events.lock().unwrap(), expected);
    assert_eq!(stats.handled(), 10);
    assert_eq!(stats.unrouted(), 0);
    assert_eq!(stats.panics(), 1);
}

#[test]
fn dead_letters_carry_the_panic_text_of_every_payload_kind() {
    let (bus, letters) = bus_with_letters(1);
    let id = bus
        .subscribe(TOPIC, |_: &mut Context<'_, u32>, m: &u32| match m {
            0 => panic!("a static message"),
            1 => panic!("formatted {}", m),
            2 => std::panic::panic_any(42u64),
            _ => {}
        })
        .unwrap();
    for m in 0..4 {
        bus.publish(TOPIC, m).unwrap();
    }
    let shard = bus.shard_of(TOPIC).unwrap();
    let stats = bus.shutdown();
    let texts = [
        "a static message",
        "formatted 1",
        "<non-string panic payload>",
    ];
    let expected: Vec<Letter> = texts
        .iter()
        .enumerate()
        .map(|(msg, text)| Letter::Panicked {
            msg: msg as u32,
            subscription: id,
            panic: (*text).to_owned(),
        })
        .collect();
    assert_eq!(letters_of(&letters, shard), expected);
    assert_eq!((stats.panics(), stats.handled()), (3, 4));
}

#[test]
fn an_actor_that_cannot_start_is_restarted() {
    let faults = Faults {
        poison: &[],
        bad_start: &[0],
        bad_stop: false,
    };
    let o = run(Supervision::Restart, faults, 3);
    // The actor that could not start is replaced, and stopped first like any other.
    let mut expected = vec![Ev::Start(0), Ev::Stop(0), Ev::Start(1)];
    expected.extend(handled(1, 0..3, 1));
    expected.push(Ev::Stop(1));
    assert_eq!(o.events, expected);
    assert_eq!(o.instances, 2);
    assert_eq!(o.dropped, [0, 1]);
    assert_eq!(o.letters, [], "no message was involved");
    let s = shard_stats(&o);
    assert_eq!((s.panics, s.restarts, s.stopped_subscriptions), (1, 1, 0));
    assert_eq!((s.handled, s.dead_letters), (3, 0));
}

#[test]
fn panics_in_on_stop_are_counted_at_unsubscribe_and_at_shutdown() {
    let (bus, _letters) = bus_with_letters(2);
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    let faults = Faults {
        bad_stop: true,
        ..Faults::default()
    };
    let mut ids = Vec::new();
    for instance in 0..2 {
        let log = events.clone();
        let actor = Counter {
            instance,
            count: 0,
            faults,
            events: log,
        };
        ids.push(bus.subscribe(TOPIC, actor).unwrap());
    }
    bus.unsubscribe(ids[0]).unwrap();
    let stats = bus.shutdown();
    let events = events.lock().unwrap().clone();
    for instance in 0..2 {
        let stops = events.iter().filter(|e| **e == Ev::Stop(instance)).count();
        assert_eq!(stops, 1, "instance {instance}: on_stop once");
    }
    assert_eq!(stats.panics(), 2, "one at unsubscribe, one at shutdown");
    assert_eq!(stats.dead_letters(), 0);
}

/// `ShardStats::panics` counts "handler panics caught". A panic in `on_stop` is
/// counted when `unsubscribe` or shutdown ends the subscription (test above); it must
/// be counted when the `Stop` policy ends it too.
#[test]
fn a_panic_in_on_stop_under_the_stop_policy_is_counted() {
    let faults = Faults {
        poison: &[1],
        bad_start: &[],
        bad_stop: true,
    };
    let o = run(Supervision::Stop, faults, 3);
    let mut expected = vec![Ev::Start(0)];
    expected.extend(handled(0, 0..2, 1));
    expected.push(Ev::Stop(0));
    assert_eq!(o.events, expected);
    let s = shard_stats(&o);
    assert_eq!(s.stopped_subscriptions, 1);
    assert_eq!(
        s.panics, 2,
        "caught: the panic in handle(1) and the one in on_stop"
    );
}

/// Like above: a restarted actor whose `on_start` panics ends the subscription; both
/// that panic and the one that caused the restart were caught and must be counted.
#[test]
fn a_panic_in_on_start_after_a_restart_is_counted() {
    let faults = Faults {
        poison: &[1],
        bad_start: &[1],
        bad_stop: false,
    };
    let o = run(Supervision::Restart, faults, 3);
    let mut expected = vec![Ev::Start(0)];
    expected.extend(handled(0, 0..2, 1));
    expected.extend([Ev::Stop(0), Ev::Start(1)]);
    assert_eq!(o.events, expected, "the replacement failed to start");
    assert_eq!(
        o.letters,
        [panicked(&o, 1), Letter::NoSubscriber { msg: 2 },]
    );
    let s = shard_stats(&o);
    assert_eq!(s.stopped_subscriptions, 1);
    assert_eq!(
        s.panics, 2,
        "caught: the panic in handle(1) and the one in the new actor's on_start"
    );
}

/// Under `Restart`, each replaced actor's `on_stop` runs exactly once, before its
/// replacement's `on_start` and before it is dropped; a panic in that `on_stop` is
/// counted and the restart goes on.
#[test]
fn restart_stops_each_replaced_actor_once_before_the_next_starts() {
    let faults = Faults {
        poison: &[1, 2],
        bad_start: &[],
        bad_stop: true,
    };
    let (bus, _letters) = bus_with_letters(1);
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    let instances = Arc::new(AtomicU32::new(0));
    let (log, made) = (events.clone(), instances.clone());
    bus.subscribe_supervised(TOPIC, Supervision::Restart, move || Counter {
        instance: made.fetch_add(1, Relaxed),
        count: 0,
        faults,
        events: log.clone(),
    })
    .unwrap();
    let mut publisher = bus.publisher();
    for m in 0..4 {
        publisher.publish(TOPIC, m).unwrap();
    }
    let stats = bus.shutdown();
    let handled_by = |instance, msg, count| Ev::Handled {
        instance,
        msg,
        count,
    };
    // Each restart: the old actor's on_stop, its drop, then the new one's on_start.
    let expected = vec![
        Ev::Start(0),
        handled_by(0, 0, 1),
        handled_by(0, 1, 2),
        Ev::Stop(0),
        Ev::Dropped(0),
        Ev::Start(1),
        handled_by(1, 2, 1),
        Ev::Stop(1),
        Ev::Dropped(1),
        Ev::Start(2),
        handled_by(2, 3, 1),
        Ev::Stop(2),
        Ev::Dropped(2),
    ];
    assert_eq!(*events.lock().unwrap(), expected);
    assert_eq!(instances.load(Relaxed), 3);
    assert_eq!(stats.shards[0].restarts, 2);
    assert_eq!(
        stats.panics(),
        5,
        "two in handle, three in on_stop (two restarts, one shutdown)"
    );
}
