//! Subscriptions and the `Handler` lifecycle: `on_start`, the messages and `on_stop`,
//! once each and in order; `unsubscribe` stops delivery, runs `on_stop` and is not
//! repeatable; a subscription id this bus did not hand out is unknown.
//!
//! Every check is exact (counts, contents, order). Nothing waits on a timer for
//! correctness: tests wait on channels or condition variables; timeouts only bound a
//! test that would otherwise hang on a bug.

use std::sync::{Arc, Mutex};

use crate::common::{bus, name_on_shard, Log};
use shardbus::{Bus, Context, Error, Handler, ShardId, SubscriptionId};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Start,
    Msg(u32),
    Stop,
    /// A callback saw a context that does not match its subscription.
    BadContext(&'static str),
}

/// An actor that logs its lifecycle and checks its context in every callback.
struct Lifecycle {
    topic: String,
    shard: ShardId,
    id: Arc<Mutex<Option<SubscriptionId>>>,
    log: Arc<Log<Ev>>,
}

impl Lifecycle {
    fn check(&self, ctx: &Context<'_, u32>, at: &'static str) {
        let id = *self.id.lock().unwrap();
        let id_ok = id.is_none_or(|id| id == ctx.subscription());
        if ctx.topic() != self.topic || ctx.shard() != self.shard || !id_ok || ctx.is_replay() {
            self.log.push(Ev::BadContext(at));
        }
    }
}

impl Handler<u32> for Lifecycle {
    fn on_start(&mut self, ctx: &mut Context<'_, u32>) {
        // The id is not known before `subscribe` returns: remember the one we see.
        *self.id.lock().unwrap() = Some(ctx.subscription());
        self.check(ctx, "on_start");
        self.log.push(Ev::Start);
    }

    fn handle(&mut self, ctx: &mut Context<'_, u32>, m: &u32) {
        self.check(ctx, "handle");
        self.log.push(Ev::Msg(*m));
    }

    fn on_stop(&mut self, ctx: &mut Context<'_, u32>) {
        self.check(ctx, "on_stop");
        self.log.push(Ev::Stop);
    }
}

fn lifecycle_actor(bus: &Bus<u32>, topic: &str) -> (Lifecycle, Arc<Log<Ev>>) {
    let log = Log::new();
    let actor = Lifecycle {
        topic: topic.to_owned(),
        shard: bus.shard_of(topic).unwrap(),
        id: Arc::new(Mutex::new(None)),
        log: log.clone(),
    };
    (actor, log)
}

fn msgs(range: std::ops::Range<u32>) -> Vec<Ev> {
    range.map(Ev::Msg).collect()
}

#[test]
fn handler_lifecycle_runs_start_messages_stop_once_each_in_order() {
    let bus = bus(2);
    let (actor, log) = lifecycle_actor(&bus, "life");
    let seen_id = actor.id.clone();
    let id = bus.subscribe("life", actor).unwrap();
    // `subscribe` returns once installed: `on_start` has run.
    assert_eq!(log.snapshot(), [Ev::Start]);
    assert_eq!(*seen_id.lock().unwrap(), Some(id));
    let mut publisher = bus.publisher();
    for i in 0..100 {
        publisher.publish("life", i).unwrap();
    }
    let stats = bus.shutdown();
    let expected: Vec<Ev> = std::iter::once(Ev::Start)
        .chain(msgs(0..100))
        .chain(std::iter::once(Ev::Stop))
        .collect();
    assert_eq!(log.snapshot(), expected);
    assert_eq!(stats.handled(), 100);
}

#[test]
fn unsubscribe_stops_delivery_runs_on_stop_and_is_not_repeatable() {
    let bus = bus(2);
    let (actor, a_log) = lifecycle_actor(&bus, "u");
    let a = bus.subscribe("u", actor).unwrap();
    let b_log = Log::new();
    let b_sink = b_log.clone();
    let b = bus
        .subscribe("u", move |_: &mut Context<'_, u32>, m: &u32| {
            b_sink.push(*m)
        })
        .unwrap();
    assert_ne!(a, b);

    let mut publisher = bus.publisher();
    for i in 0..50 {
        publisher.publish("u", i).unwrap();
    }
    // Once `b` has seen message 49 its dispatch (to `a` as well) is complete.
    b_log.wait_len(50);
    bus.unsubscribe(a).unwrap();
    let at_return = a_log.snapshot();
    let expected: Vec<Ev> = std::iter::once(Ev::Start)
        .chain(msgs(0..50))
        .chain(std::iter::once(Ev::Stop))
        .collect();
    assert_eq!(
        at_return, expected,
        "on_stop ran before unsubscribe returned"
    );

    for i in 50..100 {
        publisher.publish("u", i).unwrap();
    }
    for i in 100..110 {
        bus.publish("u", i).unwrap();
    }
    match bus.unsubscribe(a) {
        Err(Error::UnknownSubscription(id)) => assert_eq!(id, a),
        other => panic!("second unsubscribe: {other:?}"),
    }

    // Unsubscribing the last subscriber makes later messages unrouted.
    let c_log = Log::new();
    let c_sink = c_log.clone();
    let c = bus
        .subscribe("solo", move |_: &mut Context<'_, u32>, m: &u32| {
            c_sink.push(*m)
        })
        .unwrap();
    bus.publish("solo", 1).unwrap();
    c_log.wait_len(1);
    bus.unsubscribe(c).unwrap();
    bus.publish("solo", 2).unwrap();
    publisher.publish("solo", 3).unwrap();

    let stats = bus.shutdown();
    assert_eq!(
        a_log.snapshot(),
        expected,
        "nothing after unsubscribe, no 2nd stop"
    );
    // `b` has two sources (the publisher's lane, the shared inbox): each in order.
    let b_seen = b_log.snapshot();
    let lane: Vec<u32> = b_seen.iter().copied().filter(|&m| m < 100).collect();
    let shared: Vec<u32> = b_seen.iter().copied().filter(|&m| m >= 100).collect();
    assert_eq!(lane, (0..100).collect::<Vec<_>>());
    assert_eq!(shared, (100..110).collect::<Vec<_>>());
    assert_eq!(c_log.snapshot(), [1]);
    assert_eq!(stats.unrouted(), 2);
    assert_eq!(stats.handled(), 111);
}

/// `Error::UnknownSubscription` is "a subscription id that this bus did not hand
/// out": an id from another bus must not end a subscription of this one.
#[test]
fn a_subscription_id_from_another_bus_is_unknown() {
    let first = bus(2);
    let second = bus(2);
    let foreign = first
        .subscribe("t", |_: &mut Context<'_, u32>, _: &u32| {})
        .unwrap();
    let log = Log::new();
    let sink = log.clone();
    let mine = second
        .subscribe("t", move |_: &mut Context<'_, u32>, m: &u32| sink.push(*m))
        .unwrap();

    let outcome = second.unsubscribe(foreign);
    second.publish("t", 7).unwrap();
    let stats = second.shutdown();
    first.shutdown();
    assert!(
        matches!(outcome, Err(Error::UnknownSubscription(id)) if id == foreign),
        "unsubscribing {foreign:?} (from another bus) on a bus whose own subscription is \
         {mine:?}: {outcome:?}"
    );
    assert_eq!(log.snapshot(), [7], "this bus's subscriber still receives");
    assert_eq!(stats.unrouted(), 0);
}

#[test]
fn a_subscription_id_for_a_shard_this_bus_lacks_is_unknown() {
    let wide = bus(8);
    let narrow = bus(2);
    let topic = name_on_shard(&wide, "far", 7);
    let id = wide
        .subscribe(topic.as_str(), |_: &mut Context<'_, u32>, _: &u32| {})
        .unwrap();
    assert_eq!(id.shard().index(), 7);
    assert!(matches!(
        narrow.unsubscribe(id),
        Err(Error::UnknownSubscription(x)) if x == id
    ));
    narrow.shutdown();
    wide.shutdown();
}
