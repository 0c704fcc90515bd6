//! Panics of user code outside `handle`: a message's `Drop`, an actor's `Drop`,
//! `on_start`, `on_stop`, a supervision factory and the dead-letter handler. Each is
//! caught on the shard thread and counted by where it happened
//! (`ShardStats::panic_sites`); the shard's other topics go on, and `shutdown()` returns.
//!
//! The panics are deliberate (their text goes to the captured stderr of the test).
//! Every wait is bounded: `within` turns a hang into a failure.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::common::{reason_text, within, Log};
use shardbus::{Bus, Context, Handler, PanicSites, Supervision};

/// A message whose `Drop` records its id, then panics if it was made to.
struct Bomb {
    id: u32,
    /// `Drop` panics.
    explode: bool,
    /// The handler panics on it.
    poison: bool,
    drops: Arc<Mutex<Vec<u32>>>,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        self.drops.lock().unwrap().push(self.id);
        if self.explode {
            panic!("bomb {} went off", self.id);
        }
    }
}

type Drops = Arc<Mutex<Vec<u32>>>;

fn bomb(drops: &Drops, id: u32, explode: bool) -> Bomb {
    Bomb {
        id,
        explode,
        poison: false,
        drops: drops.clone(),
    }
}

/// A one-shard bus of `Bomb`s whose dead letters are recorded as "topic id reason".
fn bomb_bus() -> (Bus<Bomb>, Arc<Log<String>>) {
    let letters = Log::new();
    let sink = letters.clone();
    let bus = Bus::<Bomb>::builder()
        .shards(1)
        .pin_threads(false)
        .dead_letter(move |letter| {
            let why = reason_text(letter.reason);
            sink.push(format!("{} {} {why}", letter.topic, letter.message.id));
        })
        .build()
        .unwrap();
    (bus, letters)
}

#[test]
fn a_message_whose_drop_panics_is_counted_and_its_shard_goes_on() {
    let (bus, letters) = bomb_bus();
    let drops: Drops = Arc::default();
    let seen = Log::new();
    // "lone" has one subscriber, "fan" two (the last one's call drops the message);
    // "ghost" has none (dropped after its dead letter).
    for (topic, who) in [("lone", "l"), ("fan", "f1"), ("fan", "f2")] {
        let seen = seen.clone();
        bus.subscribe(topic, move |_: &mut Context<'_, Bomb>, m: &Bomb| {
            seen.push(format!("{who} {}", m.id));
            if m.poison {
                panic!("poisoned {}", m.id);
            }
        })
        .unwrap();
    }
    let mut publisher = bus.publisher();
    for (topic, id, explode) in [
        ("lone", 1, true),
        ("lone", 2, false),
        ("fan", 3, true),
        ("fan", 4, false),
        ("ghost", 5, true),
        ("ghost", 6, false),
    ] {
        // One source, so one order (`is_ok`: an error would hold a `Bomb`).
        assert!(publisher.publish(topic, bomb(&drops, id, explode)).is_ok());
    }
    // The handler panics on it, then its drop panics too.
    let mut both = bomb(&drops, 7, true);
    both.poison = true;
    assert!(publisher.publish("lone", both).is_ok());
    assert!(publisher.publish("lone", bomb(&drops, 8, false)).is_ok());

    seen.wait_len(8);
    letters.wait_len(3);
    let stats = within("shutdown", move || bus.shutdown());
    assert_eq!(
        seen.snapshot(),
        ["l 1", "l 2", "f1 3", "f2 3", "f1 4", "f2 4", "l 7", "l 8"]
    );
    assert_eq!(
        letters.snapshot(),
        [
            "ghost 5 no subscriber",
            "ghost 6 no subscriber",
            "lone 7 panicked: poisoned 7"
        ]
    );
    // Each message dropped exactly once, in the order the shard was done with it.
    assert_eq!(*drops.lock().unwrap(), [1, 2, 3, 4, 5, 6, 7, 8]);
    let s = &stats.shards[0];
    assert_eq!((s.received, s.handled, s.unrouted), (8, 6, 2));
    assert_eq!((s.panics, s.dead_letters), (5, 3));
    assert_eq!(
        s.panic_sites,
        sites(|p| {
            p.drop = 4;
            p.handle = 1;
        })
    );
}

/// `PanicSites` with the counts `set` gives (it is `#[non_exhaustive]`).
fn sites(set: impl FnOnce(&mut PanicSites)) -> PanicSites {
    let mut p = PanicSites::default();
    set(&mut p);
    p
}

/// An actor that records what it handles and panics when dropped.
struct Fragile {
    name: &'static str,
    seen: Arc<Log<String>>,
    /// `handle` panics on this message.
    poison: Option<u32>,
    /// `on_start` panics.
    bad_start: bool,
    /// `on_stop` panics.
    bad_stop: bool,
    /// `Drop` panics.
    bad_drop: bool,
}

impl Fragile {
    fn new(name: &'static str, seen: &Arc<Log<String>>) -> Self {
        Self {
            name,
            seen: seen.clone(),
            poison: None,
            bad_start: false,
            bad_stop: false,
            bad_drop: false,
        }
    }
}

impl Handler<u32> for Fragile {
    fn on_start(&mut self, _: &mut Context<'_, u32>) {
        self.seen.push(format!("{} start", self.name));
        if self.bad_start {
            panic!("{} cannot start", self.name);
        }
    }
    fn handle(&mut self, _: &mut Context<'_, u32>, m: &u32) {
        self.seen.push(format!("{} {m}", self.name));
        if self.poison == Some(*m) {
            panic!("{} poisoned by {m}", self.name);
        }
    }
    fn on_stop(&mut self, _: &mut Context<'_, u32>) {
        self.seen.push(format!("{} stop", self.name));
        if self.bad_stop {
            panic!("{} cannot stop", self.name);
        }
    }
}

impl Drop for Fragile {
    fn drop(&mut self) {
        self.seen.push(format!("{} dropped", self.name));
        if self.bad_drop {
            panic!("{} went off when dropped", self.name);
        }
    }
}

fn one_shard() -> Bus<u32> {
    Bus::<u32>::builder()
        .shards(1)
        .pin_threads(false)
        .build()
        .unwrap()
}

#[test]
fn an_actor_whose_drop_panics_is_counted_when_stopped_unsubscribed_or_shut_down() {
    let bus = one_shard();
    let seen = Log::new();
    // "x": stopped by its policy after a panic in `handle`; "y": unsubscribed; "z":
    // lives until shutdown. Every one panics when dropped.
    let s = seen.clone();
    bus.subscribe_supervised("x", Supervision::Stop, move || {
        let mut x = Fragile::new("x", &s);
        x.poison = Some(1);
        x.bad_drop = true;
        x
    })
    .unwrap();
    let mut y = Fragile::new("y", &seen);
    y.bad_drop = true;
    let y = bus.subscribe("y", y).unwrap();
    let mut z = Fragile::new("z", &seen);
    z.bad_drop = true;
    bus.subscribe("z", z).unwrap();
    seen.wait_len(3);

    bus.publish("x", 1).unwrap();
    bus.publish("y", 2).unwrap();
    seen.wait_len(7); // x 1, x stop, x dropped, y 2
    let bus = within("unsubscribe", move || {
        bus.unsubscribe(y).unwrap();
        bus
    });
    bus.publish("z", 3).unwrap();
    bus.publish("x", 4).unwrap(); // no subscriber any more
    seen.wait_len(10); // y stop, y dropped, z 3
    let stats = within("shutdown", move || bus.shutdown());
    assert_eq!(
        seen.snapshot(),
        [
            "x start",
            "y start",
            "z start",
            "x 1",
            "x stop",
            "x dropped",
            "y 2",
            "y stop",
            "y dropped",
            "z 3",
            "z stop",
            "z dropped",
        ]
    );
    let s = &stats.shards[0];
    assert_eq!((s.received, s.handled, s.unrouted), (4, 3, 1));
    assert_eq!((s.panics, s.stopped_subscriptions), (4, 1));
    assert_eq!(
        s.panic_sites,
        sites(|p| {
            p.handle = 1;
            p.drop = 3;
        })
    );
}

#[test]
fn panics_in_on_start_and_on_stop_are_counted_by_site_and_the_shard_goes_on() {
    let bus = one_shard();
    let seen = Log::new();
    let mut a = Fragile::new("a", &seen);
    a.bad_start = true; // Resume: kept, and handles messages
    bus.subscribe("a", a).unwrap();
    let mut b = Fragile::new("b", &seen);
    b.bad_stop = true;
    let b = bus.subscribe("b", b).unwrap();
    let mut c = Fragile::new("c", &seen);
    c.bad_stop = true;
    bus.subscribe("c", c).unwrap();
    bus.publish("a", 1).unwrap();
    bus.publish("b", 2).unwrap();
    seen.wait_len(5);
    let bus = within("unsubscribe", move || {
        bus.unsubscribe(b).unwrap();
        bus
    });
    bus.publish("c", 3).unwrap();
    seen.wait_len(8);
    let stats = within("shutdown", move || bus.shutdown());
    assert_eq!(
        seen.snapshot(),
        [
            "a start",
            "b start",
            "c start",
            "a 1",
            "b 2",
            "b stop",
            "b dropped",
            "c 3",
            // At shutdown every `on_stop` runs first (what they publish is still
            // delivered), then the shard drops the actors as it exits.
            "a stop",
            "c stop",
            "a dropped",
            "c dropped",
        ]
    );
    let s = &stats.shards[0];
    assert_eq!((s.received, s.handled), (3, 3));
    assert_eq!(s.panics, 3);
    assert_eq!(
        s.panic_sites,
        sites(|p| {
            p.on_start = 1;
            p.on_stop = 2;
        })
    );
}

#[test]
fn a_factory_that_panics_ends_its_subscription_and_is_counted() {
    let bus = one_shard();
    let seen = Log::new();
    let made = Arc::new(AtomicU32::new(0));
    let (s, m) = (seen.clone(), made.clone());
    bus.subscribe_supervised("r", Supervision::Restart, move || {
        if m.fetch_add(1, Relaxed) == 1 {
            panic!("no second actor");
        }
        let mut r = Fragile::new("r", &s);
        r.poison = Some(1);
        r
    })
    .unwrap();
    bus.subscribe("other", Fragile::new("o", &seen)).unwrap();
    seen.wait_len(2);
    bus.publish("r", 1).unwrap(); // panics; the factory panics making its successor
    bus.publish("r", 2).unwrap(); // no subscriber any more
    bus.publish("other", 3).unwrap();
    seen.wait_len(4);
    let stats = within("shutdown", move || bus.shutdown());
    assert_eq!(
        seen.snapshot(),
        [
            "r start",
            "o start",
            "r 1",
            // Restart stops the replaced actor first; then the factory panics.
            "r stop",
            "r dropped",
            "o 3",
            "o stop",
            "o dropped"
        ]
    );
    assert_eq!(made.load(Relaxed), 2);
    let s = &stats.shards[0];
    assert_eq!((s.received, s.handled, s.unrouted), (3, 2, 1));
    assert_eq!((s.panics, s.stopped_subscriptions, s.restarts), (2, 1, 0));
    assert_eq!(
        s.panic_sites,
        sites(|p| {
            p.handle = 1;
            p.factory = 1;
        })
    );
}

#[test]
fn a_dead_letter_handler_that_panics_is_counted_and_called_again() {
    let calls = Log::new();
    let sink = calls.clone();
    let bus = Bus::<u32>::builder()
        .shards(1)
        .pin_threads(false)
        .dead_letter(move |letter| {
            sink.push(*letter.message);
            if *letter.message % 2 == 1 {
                panic!("dead-letter handler failed on {}", letter.message);
            }
        })
        .build()
        .unwrap();
    let seen = Log::new();
    bus.subscribe("live", Fragile::new("live", &seen)).unwrap();
    for i in 1..=4 {
        bus.publish("ghost", i).unwrap();
    }
    bus.publish("live", 5).unwrap();
    calls.wait_len(4);
    seen.wait_len(2);
    let stats = within("shutdown", move || bus.shutdown());
    assert_eq!(calls.snapshot(), [1, 2, 3, 4]);
    let s = &stats.shards[0];
    assert_eq!((s.received, s.unrouted, s.dead_letters), (5, 4, 4));
    assert_eq!(s.panics, 2);
    assert_eq!(s.panic_sites, sites(|p| p.dead_letter = 2));
}

/// What a deadline shutdown leaves is dropped by its shard, each `Drop` guarded: a
/// handler on shard 0 stalls (until the coordinator tells the shards to stop, which
/// `try_publish` to shard 1 sees as `Closed`; the deadline is what ends it, not a timing
/// assertion) with bombs queued behind it in the shared inbox and in a publisher's lane.
#[test]
fn what_a_deadline_shutdown_leaves_is_dropped_with_each_drop_guarded() {
    let bus = Bus::<Bomb>::builder()
        .shards(2)
        .pin_threads(false)
        .build()
        .unwrap();
    let drops: Drops = Arc::default();
    let stall = crate::common::name_on_shard(&bus, "stall", 0);
    let probe = bus
        .topic(&crate::common::name_on_shard(&bus, "probe", 1))
        .unwrap();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let probes = drops.clone();
    bus.subscribe(
        stall.as_str(),
        move |ctx: &mut Context<'_, Bomb>, m: &Bomb| {
            if m.id != 0 {
                return;
            }
            entered_tx.send(()).unwrap();
            let give_up = std::time::Instant::now() + crate::common::PATIENCE;
            while std::time::Instant::now() < give_up {
                let msg = bomb(&probes, 1000, false);
                if let Err(shardbus::TryPublishError::Closed(_)) = ctx.try_publish(probe, msg) {
                    return;
                }
                // A polling interval, not synchronisation.
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        },
    )
    .unwrap();
    assert!(bus.publish(stall.as_str(), bomb(&drops, 0, false)).is_ok());
    entered
        .recv_timeout(crate::common::PATIENCE)
        .expect("the handler stalls");
    // More than one pass takes from an input (256) waits behind the stall, the last two
    // of each input exploding when dropped: 1..=300 in the shared inbox, then a new
    // publisher's lane (registered behind them) with 301..=400.
    let mut late = bus.publisher();
    for id in 1..=400 {
        let msg = bomb(&drops, id, matches!(id, 299 | 300 | 399 | 400));
        let sent = if id <= 300 {
            bus.publish(stall.as_str(), msg)
        } else {
            late.publish(stall.as_str(), msg)
        };
        assert!(sent.is_ok());
    }
    let report = within("shutdown_timeout", move || {
        bus.shutdown_timeout(std::time::Duration::from_secs(2))
    });
    drop(late);
    let mut left: Vec<u32> = drops
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|&id| id < 1000)
        .collect();
    left.sort_unstable();
    assert_eq!(
        left,
        (0..=400).collect::<Vec<_>>(),
        "each dropped exactly once"
    );
    let s = &report.stats.shards[0];
    // What the deadline left (at least the tails of both inputs) was dropped, not
    // handled; the four bombs among it were caught.
    assert_eq!(s.handled + s.dropped, 401);
    assert!(s.dropped >= 145, "{s:?}");
    assert_eq!((s.panics, s.panic_sites), (4, sites(|p| p.drop = 4)));
}

#[test]
fn a_subscription_whose_actor_cannot_start_is_refused_with_not_started() {
    let bus = one_shard();
    let seen = Log::new();
    // Stop: `on_start` panics, the subscription ends there, the caller is told.
    let s = seen.clone();
    let refused = bus.subscribe_supervised("stopped", Supervision::Stop, move || {
        let mut a = Fragile::new("s", &s);
        a.bad_start = true;
        a
    });
    let Err(shardbus::Error::NotStarted(id)) = refused else {
        panic!("{refused:?}");
    };
    assert!(matches!(
        bus.unsubscribe(id),
        Err(shardbus::Error::UnknownSubscription(_))
    ));
    // Restart whose fresh actor cannot start either: the same.
    let s = seen.clone();
    let refused = bus.subscribe_supervised("restarted", Supervision::Restart, move || {
        let mut a = Fragile::new("r", &s);
        a.bad_start = true;
        a
    });
    assert!(matches!(refused, Err(shardbus::Error::NotStarted(_))));
    // Resume (the default of `subscribe`): kept, subscribed, and it handles.
    let mut kept = Fragile::new("k", &seen);
    kept.bad_start = true;
    bus.subscribe("kept", kept).unwrap();
    bus.publish("stopped", 1).unwrap();
    bus.publish("kept", 2).unwrap();
    seen.wait_len(9);
    let stats = within("shutdown", move || bus.shutdown());
    assert_eq!(
        seen.snapshot(),
        [
            "s start",
            "s stop",
            "s dropped",
            "r start",
            // Restart stops the actor that did not start before replacing it.
            "r stop",
            "r dropped",
            "r start",
            "r dropped",
            "k start",
            "k 2",
            "k stop",
            "k dropped",
        ]
    );
    let s = &stats.shards[0];
    assert_eq!((s.received, s.handled, s.unrouted), (2, 1, 1));
    assert_eq!((s.stopped_subscriptions, s.restarts), (2, 0));
    assert_eq!(s.panics, 4);
    assert_eq!(s.panic_sites, sites(|p| p.on_start = 4));
}
