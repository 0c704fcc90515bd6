//! A codec that panics. On the shard thread a panic in `encode` is caught: its message is
//! dead-lettered (`EncodePanicked`), not logged, not handled, counted in
//! `panic_sites.encode`, and the shard goes on (a later `publish_durable` is confirmed,
//! `shutdown()` returns). A panic in `decode` at replay fails `build()` with
//! `Error::Decode`. On the publishing thread (a durable publish encodes there first) the
//! panic is the caller's own and unwinds in the caller, leaving the bus as it was.
//!
//! The panics are deliberate (their text goes to the captured stderr of the test).
//! Every wait is bounded: `within` turns a hang into a failure.

use std::sync::Arc;

use crate::common::persist::persistence;
use crate::common::{reason_text, within, Log};
use shardbus::log::SimStorage;
use shardbus::{
    Bus, Codec, Context, DeadLetterReason, DecodeError, EncodeError, Error, PanicSites,
};

/// A message whose codec panics: `encode` on text starting with "boom", `decode` on
/// text starting with "dud". It says it never fails (`CAN_FAIL = false`), so a plain
/// publish is not encoded on the publishing thread: the shard meets the panic.
#[derive(Debug, Clone, PartialEq)]
struct Volatile(String);

impl Codec for Volatile {
    const CAN_FAIL: bool = false;
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(self.0.as_bytes());
        if self.0.starts_with("boom") {
            panic!("{} does not encode", self.0);
        }
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let text = String::from_utf8(bytes.to_vec()).map_err(DecodeError::new)?;
        if text.starts_with("dud") {
            panic!("{text} does not decode");
        }
        Ok(Volatile(text))
    }
}

fn v(s: &str) -> Volatile {
    Volatile(s.to_owned())
}

/// A one-shard persistent bus whose handlers of "a" and "b" record "topic text" and
/// whose dead letters are recorded as "topic text reason".
fn build_bus(sim: &SimStorage, seen: &Arc<Log<String>>) -> Result<Bus<Volatile>, Error> {
    let letters = Log::new();
    bus_with_letters(sim, seen, &letters)
}

fn bus_with_letters(
    sim: &SimStorage,
    seen: &Arc<Log<String>>,
    letters: &Arc<Log<String>>,
) -> Result<Bus<Volatile>, Error> {
    let sink = letters.clone();
    let mut b = Bus::<Volatile>::builder()
        .shards(1)
        .pin_threads(false)
        .persist(persistence(sim))
        .dead_letter(move |letter| {
            let why = match letter.reason {
                DeadLetterReason::EncodePanicked { panic } => format!("encode panicked: {panic}"),
                other => format!("{other:?}"),
            };
            sink.push(format!("{} {} {why}", letter.topic, letter.message.0));
        });
    for topic in ["a", "b"] {
        let seen = seen.clone();
        b = b.subscribe(
            topic,
            move |ctx: &mut Context<'_, Volatile>, m: &Volatile| {
                seen.push(format!("{} {}", ctx.topic(), m.0));
            },
        );
    }
    b.build()
}

#[test]
fn a_panic_in_encode_on_the_shard_dead_letters_its_message_and_the_shard_goes_on() {
    let sim = SimStorage::new();
    let (seen, letters) = (Log::new(), Log::new());
    let bus = bus_with_letters(&sim, &seen, &letters).unwrap();
    let mut p = bus.publisher();
    p.publish("a", v("one")).unwrap();
    p.publish("a", v("boom")).unwrap();
    p.publish("a", v("two")).unwrap();
    // Another topic of the same shard, durably (same lane, so in order): confirmed, not
    // left waiting.
    within("publish_durable after the panic", move || {
        p.publish_durable("b", v("three")).unwrap();
    });
    seen.wait_len(3);
    letters.wait_len(1);
    let stats = within("shutdown", move || bus.shutdown());
    assert_eq!(seen.snapshot(), ["a one", "a two", "b three"]);
    assert_eq!(
        letters.snapshot(),
        ["a boom encode panicked: boom does not encode"]
    );
    let s = &stats.shards[0];
    assert_eq!((s.received, s.handled, s.dead_letters), (4, 3, 1));
    assert_eq!(s.panics, 1);
    let mut want = PanicSites::default();
    want.encode = 1;
    assert_eq!(s.panic_sites, want);

    // Nothing of the panicking message is in the log: a build from it replays nothing
    // (the shutdown checkpointed the rest) and decodes nothing it cannot.
    let again = Log::new();
    let bus = within("build", {
        let sim = sim.clone();
        let again = again.clone();
        move || build_bus(&sim, &again).unwrap()
    });
    assert_eq!(again.snapshot(), Vec::<String>::new());
    within("shutdown", move || bus.shutdown());
}

#[test]
fn a_panic_in_encode_on_the_publishing_thread_unwinds_in_the_caller_and_the_bus_goes_on() {
    let sim = SimStorage::new();
    let seen = Log::new();
    let bus = Arc::new(build_bus(&sim, &seen).unwrap());
    // A durable publish encodes on this thread first: the codec's panic is the caller's.
    let b = bus.clone();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        b.publish_durable("a", v("boom"))
    }));
    let payload = caught.expect_err("the codec's panic reaches the caller");
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("boom does not encode")
    );
    // Nothing was pushed, and the thread's encoding buffer is free for the next publish.
    let b = bus.clone();
    within("publish_durable after the panic", move || {
        b.publish_durable("a", v("fine")).unwrap();
    });
    seen.wait_len(1);
    let bus = Arc::try_unwrap(bus).unwrap_or_else(|_| panic!("one owner"));
    let stats = within("shutdown", move || bus.shutdown());
    assert_eq!(seen.snapshot(), ["a fine"]);
    let s = &stats.shards[0];
    assert_eq!(
        (s.received, s.handled, s.dead_letters, s.panics),
        (1, 1, 0, 0)
    );
}

#[test]
fn a_panic_in_decode_at_replay_fails_the_build_with_a_decode_error() {
    let sim = SimStorage::new();
    let seen = Log::new();
    let bus = build_bus(&sim, &seen).unwrap();
    bus.publish_durable("a", v("first")).unwrap();
    bus.publish_durable("a", v("dud")).unwrap();
    seen.wait_len(2);
    // A crash: no checkpoint, both records are replayed at the next build.
    std::mem::forget(bus);
    sim.crash(None);

    let again = Log::new();
    let result = within("build", {
        let sim = sim.clone();
        let again = again.clone();
        move || build_bus(&sim, &again).map(drop)
    });
    match result {
        Err(Error::Decode { seq, source, .. }) => {
            assert_eq!(seq.0, 1);
            assert_eq!(
                source.to_string(),
                "Codec::decode panicked: dud does not decode"
            );
        }
        other => panic!("{other:?}"),
    }
    // The record before it was replayed to its handler; nothing after.
    assert_eq!(again.snapshot(), ["a first"]);
}

/// Drops of [`Bomb`]s, by id, in order (one test uses them).
static BOMB_DROPS: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// A logged message whose `Drop` records its id in [`BOMB_DROPS`], then panics if it was
/// made to; its handlers panic on a `poison`ed one.
#[derive(Debug)]
struct Bomb {
    id: u32,
    explode: bool,
    poison: bool,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        BOMB_DROPS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(self.id);
        if self.explode {
            panic!("bomb {} went off", self.id);
        }
    }
}

impl Codec for Bomb {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&[u8::from(self.explode), u8::from(self.poison)]);
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes {
            [a, b, c, d, explode, poison] => Ok(Bomb {
                id: u32::from_le_bytes([*a, *b, *c, *d]),
                explode: *explode == 1,
                poison: *poison == 1,
            }),
            _ => Err(DecodeError::new("not a bomb")),
        }
    }
}

/// The handlers of a persistent shard read each logged message where the write-ahead batch
/// holds it, and the shard drops it there: every message is dropped exactly once, in
/// order, also when a handler or the message's `Drop` panics, with the single subscriber,
/// with two, and with none; under `Never` and under `Batch` (whose batches wait for their
/// sync in the pipeline before delivery).
#[test]
fn a_logged_message_is_dropped_once_where_it_lies_even_when_its_handler_or_drop_panics() {
    use shardbus::FsyncPolicy;
    for fsync in [FsyncPolicy::Never, FsyncPolicy::Batch] {
        BOMB_DROPS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        let sim = SimStorage::new();
        let (seen, letters) = (Log::new(), Log::new());
        let sink = letters.clone();
        let mut b = Bus::<Bomb>::builder()
            .shards(1)
            .pin_threads(false)
            .persist(persistence(&sim).fsync(fsync))
            .dead_letter(move |letter| {
                let why = reason_text(letter.reason);
                sink.push(format!("{} {} {why}", letter.topic, letter.message.id));
            });
        // "lone" has one subscriber, "fan" two (the last one's call drops the message);
        // "ghost" has none (dropped after its dead letter).
        for (topic, who) in [("lone", "l"), ("fan", "f1"), ("fan", "f2")] {
            let seen = seen.clone();
            b = b.subscribe(topic, move |_: &mut Context<'_, Bomb>, m: &Bomb| {
                seen.push(format!("{who} {}", m.id));
                if m.poison {
                    panic!("poisoned {}", m.id);
                }
            });
        }
        let bus = b.build().unwrap();
        let mut p = bus.publisher();
        let topics = [
            "lone", "lone", "fan", "fan", "ghost", "ghost", "lone", "lone",
        ];
        for (id, topic) in (1..).zip(topics) {
            let bomb = Bomb {
                id,
                explode: id % 2 == 1,
                poison: id == 7,
            };
            p.publish(topic, bomb).unwrap();
        }
        seen.wait_len(8);
        letters.wait_len(3);
        let stats = within("shutdown", move || bus.shutdown());
        assert_eq!(
            seen.snapshot(),
            ["l 1", "l 2", "f1 3", "f2 3", "f1 4", "f2 4", "l 7", "l 8"],
            "{fsync:?}"
        );
        assert_eq!(
            letters.snapshot(),
            [
                "ghost 5 no subscriber",
                "ghost 6 no subscriber",
                "lone 7 panicked: poisoned 7"
            ],
            "{fsync:?}"
        );
        assert_eq!(
            *BOMB_DROPS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            [1, 2, 3, 4, 5, 6, 7, 8],
            "{fsync:?}: each message dropped exactly once, in order"
        );
        let s = &stats.shards[0];
        assert_eq!((s.received, s.handled, s.unrouted), (8, 6, 2), "{fsync:?}");
        assert_eq!((s.panics, s.dead_letters), (5, 3), "{fsync:?}");
        let mut want = PanicSites::default();
        want.drop = 4;
        want.handle = 1;
        assert_eq!(s.panic_sites, want, "{fsync:?}");
    }
}
