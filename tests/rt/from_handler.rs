//! Calls on the bus from a handler, on one of the bus's own shard threads: the blocking
//! ones that would wait for shards (its own among them) which cannot go on while it waits
//! are refused with a `WouldDeadlock` error instead of hanging; a blocking publish still
//! goes through while there is room; calls into another bus still block and succeed; and
//! the non-blocking forms on `Context` (`subscribe`,
//! `subscribe_supervised`, `unsubscribe`) take effect.
//!
//! Each scenario runs on the shard threads and reports over a channel; the test waits for
//! the report with `recv_timeout(WATCHDOG)`. That bound is a hang detector, not a timing
//! assertion: without the detection each scenario hangs and the test fails there.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Barrier, OnceLock, Weak};
use std::time::Duration;

use crate::common::name_on_shard;
use shardbus::{Bus, Context, Error, Handler, PublishError, Supervision};

/// How long a scenario may take to report before the test calls it a hang.
const WATCHDOG: Duration = Duration::from_secs(10);

/// A bus that its own handlers reach through a `Weak` (a strong reference held by a
/// handler would keep the bus alive forever).
type Slot = Arc<OnceLock<Weak<Bus<u32>>>>;

fn shared_bus(shards: usize, capacity: usize) -> (Arc<Bus<u32>>, Slot) {
    let bus = Arc::new(
        Bus::<u32>::builder()
            .shards(shards)
            .capacity(capacity)
            .pin_threads(false)
            // A failing (hanging) scenario leaves a shard stuck in a handler: dropping
            // the bus must not wait long for it.
            .drop_timeout(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let slot: Slot = Arc::new(OnceLock::new());
    slot.set(Arc::downgrade(&bus)).unwrap();
    (bus, slot)
}

/// Runs `f` with the bus; the strong reference is gone before `f`'s result is reported.
fn with_bus<R>(slot: &Slot, f: impl FnOnce(&Bus<u32>) -> R) -> R {
    let bus = slot.get().and_then(Weak::upgrade).expect("bus alive");
    f(&bus)
}

fn report<T>(rx: &Receiver<T>, scenario: &str) -> T {
    rx.recv_timeout(WATCHDOG).unwrap_or_else(|_| {
        panic!("{scenario}: no report within {WATCHDOG:?}: the handler is stuck in the call")
    })
}

fn counting(count: &Arc<AtomicU32>) -> impl FnMut(&mut Context<'_, u32>, &u32) + Send {
    let count = count.clone();
    move |_: &mut Context<'_, u32>, _: &u32| {
        count.fetch_add(1, Relaxed);
    }
}

fn shutdown(bus: Arc<Bus<u32>>) -> shardbus::Stats {
    Arc::try_unwrap(bus)
        .unwrap_or_else(|_| panic!("a handler still holds the bus"))
        .shutdown()
}

#[test]
fn unsubscribe_from_a_handler_on_the_subscriptions_shard_is_refused() {
    let (bus, slot) = shared_bus(1, 64);
    let seen = Arc::new(AtomicU32::new(0));
    let id = bus.subscribe("data", counting(&seen)).unwrap();
    let (tx, rx) = mpsc::channel();
    bus.subscribe("ctl", move |_: &mut Context<'_, u32>, _: &u32| {
        let r = with_bus(&slot, |bus| bus.unsubscribe(id));
        tx.send(r).unwrap();
    })
    .unwrap();
    bus.publish("ctl", 0).unwrap();
    let r = report(&rx, "Bus::unsubscribe from a handler");
    assert!(matches!(r, Err(Error::WouldDeadlock)), "{r:?}");
    // Nothing was done: the subscription still gets its messages.
    for n in 0..3 {
        bus.publish("data", n).unwrap();
    }
    let stats = shutdown(bus);
    assert_eq!(seen.load(Relaxed), 3);
    assert_eq!(stats.handled(), 4);
}

#[test]
fn subscribe_from_handlers_on_two_shards_to_each_others_topics_is_refused() {
    let (bus, slot) = shared_bus(2, 64);
    let (tx, rx) = mpsc::channel();
    let both = Arc::new(Barrier::new(2));
    for shard in 0..2 {
        let other = name_on_shard(&bus, "target", 1 - shard);
        let (slot, tx, both) = (slot.clone(), tx.clone(), both.clone());
        let topic = name_on_shard(&bus, "trigger", shard);
        bus.subscribe(topic, move |_: &mut Context<'_, u32>, _: &u32| {
            // Both handlers are in their call at once: each would wait for the other.
            both.wait();
            let r = with_bus(&slot, |bus| {
                bus.subscribe(other.as_str(), |_: &mut Context<'_, u32>, _: &u32| {})
            });
            tx.send((shard, r)).unwrap();
        })
        .unwrap();
    }
    for shard in 0..2 {
        bus.publish(name_on_shard(&bus, "trigger", shard), 0)
            .unwrap();
    }
    let mut reports: Vec<_> = (0..2)
        .map(|_| report(&rx, "Bus::subscribe from two handlers"))
        .collect();
    reports.sort_by_key(|(shard, _)| *shard);
    for (shard, r) in &reports {
        assert!(
            matches!(r, Err(Error::WouldDeadlock)),
            "shard {shard}: {r:?}"
        );
    }
    let stats = shutdown(bus);
    assert_eq!(stats.handled(), 2);
}

/// The message a test publishes to start a scenario (the others are data).
const TRIGGER: u32 = u32::MAX;

#[test]
fn blocking_publishes_into_each_others_full_inboxes_publish_while_there_is_room_then_are_refused() {
    // Inboxes of 2 slots; each handler publishes 4 messages into the other shard's inbox
    // while the other shard is in its handler too (between the two barriers), so neither
    // drains: 2 fit, then waiting for room would wait forever.
    let (bus, slot) = shared_bus(2, 2);
    let (tx, rx) = mpsc::channel();
    let start = Arc::new(Barrier::new(2));
    let end = Arc::new(Barrier::new(2));
    let data: Arc<Vec<AtomicU32>> = Arc::new((0..2).map(|_| AtomicU32::new(0)).collect());
    for shard in 0..2 {
        let other = name_on_shard(&bus, "inbox", 1 - shard);
        let (slot, tx, start, end, data) = (
            slot.clone(),
            tx.clone(),
            start.clone(),
            end.clone(),
            data.clone(),
        );
        let topic = name_on_shard(&bus, "inbox", shard);
        bus.subscribe(topic, move |_: &mut Context<'_, u32>, m: &u32| {
            if *m != TRIGGER {
                data[shard].fetch_add(1, Relaxed);
                return;
            }
            start.wait();
            let outcomes: Vec<Result<(), PublishError<u32>>> = with_bus(&slot, |bus| {
                (0..4).map(|n| bus.publish(other.as_str(), n)).collect()
            });
            end.wait();
            tx.send((shard, outcomes)).unwrap();
        })
        .unwrap();
    }
    for shard in 0..2 {
        bus.publish(name_on_shard(&bus, "inbox", shard), TRIGGER)
            .unwrap();
    }
    for _ in 0..2 {
        let (shard, outcomes) = report(&rx, "Bus::publish into full inboxes from two handlers");
        assert_eq!(outcomes.len(), 4);
        assert!(
            outcomes[0].is_ok() && outcomes[1].is_ok(),
            "shard {shard}: {outcomes:?}"
        );
        for (n, outcome) in outcomes.into_iter().enumerate().skip(2) {
            let err = outcome.unwrap_err();
            assert!(
                err.is_would_deadlock(),
                "shard {shard}, message {n}: {err:?}"
            );
            assert_eq!(err.into_inner(), n as u32, "the message comes back");
        }
    }
    let stats = shutdown(bus);
    // The two that fit on each side were delivered.
    assert_eq!(data[0].load(Relaxed), 2);
    assert_eq!(data[1].load(Relaxed), 2);
    assert_eq!(stats.handled(), 2 + 4);
}

#[test]
fn calls_into_another_bus_from_a_handler_block_and_succeed() {
    let (bus, _slot) = shared_bus(1, 64);
    let (other, other_slot) = shared_bus(1, 64);
    let seen = Arc::new(AtomicU32::new(0));
    let (tx, rx) = mpsc::channel();
    let count = seen.clone();
    bus.subscribe("go", move |_: &mut Context<'_, u32>, _: &u32| {
        let outcome = with_bus(&other_slot, |other| {
            let id = other.subscribe("b", counting(&count))?;
            other.publish("b", 1).map_err(|_| Error::Closed)?;
            other.unsubscribe(id)
        });
        tx.send(outcome).unwrap();
    })
    .unwrap();
    bus.publish("go", 0).unwrap();
    let outcome = report(&rx, "another bus's calls from a handler");
    assert!(outcome.is_ok(), "{outcome:?}");
    shutdown(bus);
    let stats = shutdown(other);
    assert_eq!(
        seen.load(Relaxed),
        1,
        "published, handled, then unsubscribed"
    );
    assert_eq!(stats.handled(), 1);
}

#[test]
fn context_subscribe_on_this_shard_is_installed_before_what_the_handler_publishes_next() {
    let (bus, _slot) = shared_bus(1, 64);
    let seen = Arc::new(AtomicU32::new(0));
    let (tx, rx) = mpsc::channel();
    let count = seen.clone();
    bus.subscribe("ctl", move |ctx: &mut Context<'_, u32>, _: &u32| {
        let id = ctx.subscribe("data", counting(&count));
        for n in 0..3 {
            ctx.publish("data", n).unwrap();
        }
        tx.send(id).unwrap();
    })
    .unwrap();
    bus.publish("ctl", 0).unwrap();
    let id = report(&rx, "Context::subscribe").unwrap();
    assert_eq!(id.shard().index(), 0);
    let stats = shutdown(bus);
    assert_eq!(
        seen.load(Relaxed),
        3,
        "every message published after the call"
    );
    assert_eq!(stats.unrouted(), 0);
    assert_eq!(stats.handled(), 4);
}

/// An actor that counts its messages and reports its start and stop.
struct Reporter {
    seen: Arc<AtomicU32>,
    events: mpsc::Sender<&'static str>,
}

impl Handler<u32> for Reporter {
    fn on_start(&mut self, _: &mut Context<'_, u32>) {
        self.events.send("start").unwrap();
    }
    fn handle(&mut self, _: &mut Context<'_, u32>, _: &u32) {
        self.seen.fetch_add(1, Relaxed);
    }
    fn on_stop(&mut self, _: &mut Context<'_, u32>) {
        self.events.send("stop").unwrap();
    }
}

#[test]
fn context_subscribe_of_an_actor_type_goes_live_on_this_shard_and_on_another() {
    for (shards, data_shard) in [(1, 0), (2, 1)] {
        let (bus, _slot) = shared_bus(shards, 64);
        let seen = Arc::new(AtomicU32::new(0));
        let (events, rx) = mpsc::channel();
        let data = name_on_shard(&bus, "data", data_shard);
        let (count, topic) = (seen.clone(), data.clone());
        bus.subscribe(
            name_on_shard(&bus, "ctl", 0),
            move |ctx: &mut Context<'_, u32>, _: &u32| {
                let actor = Reporter {
                    seen: count.clone(),
                    events: events.clone(),
                };
                ctx.subscribe(topic.as_str(), actor).unwrap();
            },
        )
        .unwrap();
        bus.publish(name_on_shard(&bus, "ctl", 0), 0).unwrap();
        assert_eq!(report(&rx, "the new actor's on_start"), "start");
        for n in 0..5 {
            bus.publish(data.as_str(), n).unwrap();
        }
        let stats = shutdown(bus);
        assert_eq!(seen.load(Relaxed), 5, "{shards} shards");
        assert_eq!(
            rx.try_iter().collect::<Vec<_>>(),
            ["stop"],
            "{shards} shards"
        );
        assert_eq!(stats.unrouted(), 0);
    }
}

#[test]
fn context_unsubscribe_stops_delivery_on_this_shard_and_on_another() {
    for (shards, data_shard) in [(1, 0), (2, 1)] {
        let (bus, _slot) = shared_bus(shards, 64);
        let seen = Arc::new(AtomicU32::new(0));
        let (events, rx) = mpsc::channel();
        let data = name_on_shard(&bus, "data", data_shard);
        let actor = Reporter {
            seen: seen.clone(),
            events,
        };
        let id = bus.subscribe(data.as_str(), actor).unwrap();
        assert_eq!(report(&rx, "on_start"), "start");
        let (tx, outcomes) = mpsc::channel();
        bus.subscribe(
            name_on_shard(&bus, "ctl", 0),
            move |ctx: &mut Context<'_, u32>, _: &u32| {
                tx.send(ctx.unsubscribe(id)).unwrap();
            },
        )
        .unwrap();
        for n in 0..4 {
            bus.publish(data.as_str(), n).unwrap();
        }
        // The request follows these 4 in the data shard's intake ring (the handler sends
        // it after `ctl`, published after them): all 4 reach the actor.
        bus.publish(name_on_shard(&bus, "ctl", 0), 0).unwrap();
        report(&outcomes, "Context::unsubscribe").unwrap();
        assert_eq!(report(&rx, "on_stop"), "stop");
        for n in 0..5 {
            bus.publish(data.as_str(), n).unwrap();
        }
        let stats = shutdown(bus);
        assert_eq!(seen.load(Relaxed), 4, "{shards} shards");
        assert_eq!(
            stats.unrouted(),
            5,
            "{shards} shards: no subscriber after it ended"
        );
        assert_eq!(rx.try_iter().count(), 0, "on_stop ran once");
    }
}

#[test]
fn context_subscribe_supervised_restarts_its_actor() {
    let (bus, _slot) = shared_bus(1, 64);
    let made = Arc::new(AtomicU32::new(0));
    let seen = Arc::new(AtomicU32::new(0));
    let (tx, rx) = mpsc::channel();
    let (made2, seen2) = (made.clone(), seen.clone());
    bus.subscribe("ctl", move |ctx: &mut Context<'_, u32>, _: &u32| {
        let (made, seen) = (made2.clone(), seen2.clone());
        let id = ctx.subscribe_supervised("data", Supervision::Restart, move || {
            made.fetch_add(1, Relaxed);
            let seen = seen.clone();
            move |_: &mut Context<'_, u32>, m: &u32| {
                assert_ne!(*m, 0, "message 0 panics");
                seen.fetch_add(1, Relaxed);
            }
        });
        // Published after the call, on this shard: handled after the install.
        for n in 0..3 {
            ctx.publish("data", n).unwrap();
        }
        tx.send(id).unwrap();
    })
    .unwrap();
    bus.publish("ctl", 0).unwrap();
    report(&rx, "Context::subscribe_supervised").unwrap();
    let stats = shutdown(bus);
    assert_eq!(made.load(Relaxed), 2, "the first actor and its replacement");
    assert_eq!(seen.load(Relaxed), 2);
    assert_eq!(stats.panics(), 1);
    let restarts: u64 = stats.shards.iter().map(|s| s.restarts).sum();
    assert_eq!(restarts, 1);
}

#[test]
fn context_subscribe_and_unsubscribe_reject_bad_input() {
    let (bus, _slot) = shared_bus(1, 64);
    let (other, _) = shared_bus(1, 64);
    let foreign = other
        .subscribe("x", |_: &mut Context<'_, u32>, _: &u32| {})
        .unwrap();
    let (tx, rx) = mpsc::channel();
    bus.subscribe("ctl", move |ctx: &mut Context<'_, u32>, _: &u32| {
        let bad_topic = ctx.subscribe("", |_: &mut Context<'_, u32>, _: &u32| {});
        let foreign_id = ctx.unsubscribe(foreign);
        tx.send((bad_topic, foreign_id)).unwrap();
    })
    .unwrap();
    bus.publish("ctl", 0).unwrap();
    let (bad_topic, foreign_id) = report(&rx, "Context calls with bad input");
    assert!(
        matches!(bad_topic, Err(Error::InvalidTopic { len: 0, .. })),
        "{bad_topic:?}"
    );
    assert!(
        matches!(foreign_id, Err(Error::UnknownSubscription(id)) if id == foreign),
        "{foreign_id:?}"
    );
    shutdown(bus);
}

#[test]
fn a_publisher_owned_by_a_handler_publishes_while_its_lane_has_room_then_is_refused() {
    // Lanes of 2 slots into the handler's own shard, which cannot drain them while the
    // handler runs: 2 fit, then `publish` and `publish_batch` give the message(s) back.
    let bus = Arc::new(
        Bus::<u32>::builder()
            .shards(1)
            .capacity(64)
            .lane_capacity(2)
            .pin_threads(false)
            .drop_timeout(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let seen = Arc::new(AtomicU32::new(0));
    bus.subscribe("data", counting(&seen)).unwrap();
    let publisher = std::sync::Mutex::new(bus.publisher());
    let (tx, rx) = mpsc::channel();
    bus.subscribe("ctl", move |_: &mut Context<'_, u32>, _: &u32| {
        let mut publisher = publisher.lock().unwrap();
        let single: Vec<_> = (0..3).map(|n| publisher.publish("data", n)).collect();
        let mut batch = vec![10, 11];
        let batched = publisher.publish_batch("data", &mut batch);
        tx.send((single, batched, batch)).unwrap();
    })
    .unwrap();
    bus.publish("ctl", 0).unwrap();
    let (single, batched, left) = report(&rx, "Publisher::publish into a full lane");
    assert!(single[0].is_ok() && single[1].is_ok(), "{single:?}");
    assert!(
        matches!(single[2], Err(PublishError::WouldDeadlock(2))),
        "{:?}",
        single[2]
    );
    assert!(
        matches!(batched, Err(PublishError::WouldDeadlock(()))),
        "{batched:?}"
    );
    assert_eq!(left, [10, 11], "the batch keeps what was not accepted");
    shutdown(bus);
    assert_eq!(seen.load(Relaxed), 2);
}

#[test]
fn close_and_flush_from_a_handler_are_refused() {
    let (bus, slot) = shared_bus(2, 64);
    let (tx, rx) = mpsc::channel();
    bus.subscribe("ctl", move |_: &mut Context<'_, u32>, _: &u32| {
        let r = with_bus(&slot, |bus| (bus.flush(), bus.close().map(|_| ())));
        tx.send(r).unwrap();
    })
    .unwrap();
    bus.publish("ctl", 0).unwrap();
    let (flush, close) = report(&rx, "close/flush from a handler");
    assert!(matches!(flush, Err(Error::WouldDeadlock)), "{flush:?}");
    assert!(matches!(close, Err(Error::WouldDeadlock)), "{close:?}");
    // Refused, so nothing was closed: the bus still takes and handles messages.
    let seen = Arc::new(AtomicU32::new(0));
    bus.subscribe("data", counting(&seen)).unwrap();
    bus.publish("data", 1).unwrap();
    bus.flush().unwrap();
    assert_eq!(seen.load(Relaxed), 1);
    assert_eq!(shutdown(bus).handled(), 2);
}

/// The last handle of a bus dropped inside one of its own handlers (the bus shut down
/// from its own shard thread): the drop cannot wait for the drain that needs this very
/// thread, so it hands the stop to a thread of its own. Every message accepted before
/// still reaches its handler, and every `on_stop` runs.
#[test]
fn the_last_handle_dropped_in_a_handler_shuts_down_without_hanging() {
    struct Stops(mpsc::Sender<&'static str>);
    impl Handler<u32> for Stops {
        fn handle(&mut self, _: &mut Context<'_, u32>, _: &u32) {}
        fn on_stop(&mut self, _: &mut Context<'_, u32>) {
            self.0.send("on_stop").unwrap();
        }
    }
    let bus = Bus::<u32>::builder()
        .shards(2)
        .pin_threads(false)
        // Beyond the watchdog: a drop that waited for its own shard would be seen.
        .drop_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let holder: Arc<std::sync::Mutex<Option<Bus<u32>>>> = Arc::new(std::sync::Mutex::new(None));
    let seen = Arc::new(AtomicU32::new(0));
    let (tx, rx) = mpsc::channel();
    let stops_on = name_on_shard(&bus, "stops", 1);
    bus.subscribe(stops_on.as_str(), Stops(tx.clone())).unwrap();
    let data = name_on_shard(&bus, "data", 1);
    bus.subscribe(data.as_str(), counting(&seen)).unwrap();
    let ctl = name_on_shard(&bus, "ctl", 0);
    let take = holder.clone();
    bus.subscribe(ctl.as_str(), move |_: &mut Context<'_, u32>, _: &u32| {
        // Dropping the bus here, on shard 0's thread.
        let bus = take.lock().unwrap().take().expect("the bus");
        drop(bus);
        tx.send("dropped").unwrap();
    })
    .unwrap();
    for i in 0..100 {
        bus.publish(data.as_str(), i).unwrap();
    }
    // The holder is locked before the publish and filled before it is released, so the
    // handler (which takes the lock) always finds the bus there.
    let mut slot = holder.lock().unwrap();
    bus.publish(ctl.as_str(), 0).unwrap();
    *slot = Some(bus);
    drop(slot);
    assert_eq!(report(&rx, "drop in a handler"), "dropped");
    assert_eq!(report(&rx, "on_stop after the drop"), "on_stop");
    assert_eq!(seen.load(Relaxed), 100);
}
