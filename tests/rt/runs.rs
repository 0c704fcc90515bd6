//! Run dispatch: a shard hands consecutive messages of one topic to its lone subscriber in
//! one run. A panic in the middle of a run must resume the run just after the failed
//! message, in order, with the supervision policy applied as for a lone message: never
//! handle a message twice, never skip the rest of the run.
//!
//! To be sure the messages form one run, a gate message on another topic of the same
//! (only) shard holds the shard in its handler until all of them are in the lane; the
//! next pass then drains them in one batch.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use shardbus::{Bus, Context, DeadLetterReason, Handler, Stats, Supervision};

const TOPIC: &str = "run";
const GATE: &str = "gate";
const MESSAGES: u32 = 12;
const POISON: [u32; 2] = [4, 8];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Start(u32),
    Handled { instance: u32, msg: u32, count: u32 },
    Stop(u32),
}

type Events = Arc<Mutex<Vec<Ev>>>;

struct Counter {
    instance: u32,
    count: u32,
    events: Events,
}

impl Handler<u32> for Counter {
    fn on_start(&mut self, _: &mut Context<'_, u32>) {
        self.events.lock().unwrap().push(Ev::Start(self.instance));
    }

    fn handle(&mut self, _: &mut Context<'_, u32>, &msg: &u32) {
        self.count += 1;
        self.events.lock().unwrap().push(Ev::Handled {
            instance: self.instance,
            msg,
            count: self.count,
        });
        if POISON.contains(&msg) {
            panic!("poisoned {msg}");
        }
    }

    fn on_stop(&mut self, _: &mut Context<'_, u32>) {
        self.events.lock().unwrap().push(Ev::Stop(self.instance));
    }
}

/// Holds the shard in its handler until the test says go.
struct Gate(Mutex<mpsc::Receiver<()>>);

impl Handler<u32> for Gate {
    fn handle(&mut self, _: &mut Context<'_, u32>, _: &u32) {
        // Bounded: the test sends within moments; a minute means it broke.
        let _ = self
            .0
            .lock()
            .unwrap()
            .recv_timeout(std::time::Duration::from_secs(60));
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Letter {
    Panicked(u32, String),
    NoSubscriber(u32),
}

struct Outcome {
    events: Vec<Ev>,
    letters: Vec<Letter>,
    stats: Stats,
}

/// One shard; the gate, then `0..MESSAGES` to TOPIC in one lane, released at once.
fn run(policy: Supervision) -> Outcome {
    let letters = Arc::new(Mutex::new(Vec::new()));
    let sink = letters.clone();
    let bus = Bus::<u32>::builder()
        .shards(1)
        .pin_threads(false)
        .dead_letter(move |letter| {
            let msg = *letter.message;
            let entry = match letter.reason {
                DeadLetterReason::Panicked { panic, .. } => Letter::Panicked(msg, panic.into()),
                DeadLetterReason::NoSubscriber => Letter::NoSubscriber(msg),
                other => panic!("unexpected dead letter {other:?}"),
            };
            sink.lock().unwrap().push(entry);
        })
        .build()
        .unwrap();
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    let (log, mut made) = (events.clone(), 0);
    bus.subscribe_supervised(TOPIC, policy, move || {
        made += 1;
        Counter {
            instance: made - 1,
            count: 0,
            events: log.clone(),
        }
    })
    .unwrap();
    let (go, wait) = mpsc::channel();
    bus.subscribe(GATE, Gate(Mutex::new(wait))).unwrap();
    let mut publisher = bus.publisher();
    publisher.publish(GATE, 0).unwrap();
    for m in 0..MESSAGES {
        publisher.publish(TOPIC, m).unwrap();
    }
    go.send(()).unwrap();
    let stats = bus.shutdown();
    let events = events.lock().unwrap().clone();
    let letters = std::mem::take(&mut *letters.lock().unwrap());
    Outcome {
        events,
        letters,
        stats,
    }
}

fn handled(instance: u32, msgs: std::ops::Range<u32>) -> Vec<Ev> {
    msgs.enumerate()
        .map(|(i, msg)| Ev::Handled {
            instance,
            msg,
            count: i as u32 + 1,
        })
        .collect()
}

fn poisoned(msg: u32) -> Letter {
    Letter::Panicked(msg, format!("poisoned {msg}"))
}

#[test]
fn a_panic_mid_run_resumes_after_the_failed_message_under_resume() {
    let o = run(Supervision::Resume);
    let mut expected = vec![Ev::Start(0)];
    expected.extend(handled(0, 0..MESSAGES));
    expected.push(Ev::Stop(0));
    assert_eq!(o.events, expected);
    assert_eq!(o.letters, [poisoned(4), poisoned(8)]);
    let s = &o.stats.shards[0];
    assert_eq!((s.panics, s.restarts, s.stopped_subscriptions), (2, 0, 0));
    // The gate's message too.
    assert_eq!((s.received, s.handled, s.dead_letters), (13, 13, 2));
}

#[test]
fn a_panic_mid_run_resumes_after_the_failed_message_under_restart() {
    let o = run(Supervision::Restart);
    let mut expected = vec![Ev::Start(0)];
    expected.extend(handled(0, 0..5));
    expected.extend([Ev::Stop(0), Ev::Start(1)]);
    expected.extend(handled(1, 5..9));
    expected.extend([Ev::Stop(1), Ev::Start(2)]);
    expected.extend(handled(2, 9..MESSAGES));
    expected.push(Ev::Stop(2));
    assert_eq!(o.events, expected);
    assert_eq!(o.letters, [poisoned(4), poisoned(8)]);
    let s = &o.stats.shards[0];
    assert_eq!((s.panics, s.restarts, s.stopped_subscriptions), (2, 2, 0));
    assert_eq!((s.received, s.handled, s.dead_letters), (13, 13, 2));
}

#[test]
fn a_panic_mid_run_stops_the_subscriber_and_the_rest_of_the_run_is_unrouted() {
    let o = run(Supervision::Stop);
    let mut expected = vec![Ev::Start(0)];
    expected.extend(handled(0, 0..5));
    expected.push(Ev::Stop(0));
    assert_eq!(o.events, expected);
    let mut letters = vec![poisoned(4)];
    letters.extend((5..MESSAGES).map(Letter::NoSubscriber));
    assert_eq!(o.letters, letters);
    let s = &o.stats.shards[0];
    assert_eq!((s.panics, s.restarts, s.stopped_subscriptions), (1, 0, 1));
    assert_eq!((s.received, s.handled, s.unrouted), (13, 6, 7));
    assert_eq!(s.dead_letters, 8);
}
