//! Messages that do not encode: a publish of one is refused with the message back (every
//! publish path, a handler's included), nothing of it reaches the log, and the next
//! `build()` replays exactly the messages that were accepted. A codec that fails only on
//! the shard thread (not deterministic) has its message dead-lettered, never logged. With
//! the `postcard` feature, the same for a `PostcardCodec` type that postcard refuses.

use std::cell::Cell;
use std::sync::{Arc, Mutex};

use crate::common::persist::persistence;
use crate::common::PATIENCE;
use shardbus::log::SimStorage;
use shardbus::{
    Bus, Codec, Context, DeadLetterReason, DecodeError, DurableError, EncodeError, Persistence,
    PublishError, TryPublishError,
};

/// An order; one marked `poisoned` does not encode. Encoded as its id, 8 bytes.
#[derive(Debug, Clone, PartialEq)]
struct Order {
    id: u64,
    poisoned: bool,
}

impl Codec for Order {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.poisoned {
            return Err(EncodeError::new(format_args!(
                "order {} is poisoned",
                self.id
            )));
        }
        out.extend_from_slice(&self.id.to_le_bytes());
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let id: [u8; 8] = bytes.try_into().map_err(DecodeError::new)?;
        Ok(good(u64::from_le_bytes(id)))
    }
}

fn good(id: u64) -> Order {
    Order {
        id,
        poisoned: false,
    }
}

fn bad(id: u64) -> Order {
    Order { id, poisoned: true }
}

/// (id, replay) of every order the handlers saw.
type Seen = Arc<Mutex<Vec<(u64, bool)>>>;

/// What the "forward" handler's `ctx.publish` said, in order.
type Forwarded = Arc<Mutex<Vec<String>>>;

/// A one-shard bus of `T` on `p` whose handler of "orders" records (id, replay); with
/// `forward`, a handler of "forward" republishes message `n` as `make(n + 100)` to
/// "orders" through its context, recording what `ctx.publish` said. (Without, the replay
/// of a "forward" record is dead-lettered rather than published again.)
fn bus<T: Codec + Send + 'static>(
    p: Persistence,
    seen: &Seen,
    forward: Option<&Forwarded>,
    id: fn(&T) -> u64,
    make: fn(u64) -> T,
) -> Result<Bus<T>, shardbus::Error> {
    let seen = seen.clone();
    let mut b = Bus::<T>::builder()
        .shards(1)
        .pin_threads(false)
        .persist(p)
        .subscribe("orders", move |ctx: &mut Context<'_, T>, o: &T| {
            seen.lock().unwrap().push((id(o), ctx.is_replay()));
        });
    if let Some(forwarded) = forward.cloned() {
        b = b.subscribe("forward", move |ctx: &mut Context<'_, T>, o: &T| {
            let n = id(o) + 100;
            let said = match ctx.publish("orders", make(n)) {
                Ok(()) => format!("{n} ok"),
                Err(PublishError::Encode { error, .. }) => format!("{n} refused: {error}"),
                Err(e) => format!("{n} {e}"),
            };
            forwarded.lock().unwrap().push(said);
        });
    }
    b.build()
}

fn wait_seen(seen: &Seen, n: usize) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while seen.lock().unwrap().len() < n {
        assert!(std::time::Instant::now() < deadline, "handlers stalled");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Waits (at most [`PATIENCE`]) until `bus`'s published counters show `n` dead letters.
fn wait_dead_letters<T: Send + 'static>(bus: &Bus<T>, n: u64) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while bus.stats().dead_letters() < n && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Order `n`, poisoned if `n` is odd (what the forwarding handler makes).
fn order_of(n: u64) -> Order {
    Order {
        id: n,
        poisoned: n % 2 == 1,
    }
}

fn assert_refused(e: PublishError<Order>, id: u64) {
    assert_eq!(
        e.encode_error().map(ToString::to_string),
        Some(format!("order {id} is poisoned"))
    );
    assert_eq!(e.into_inner(), bad(id));
}

fn assert_try_refused(e: TryPublishError<Order>, id: u64) {
    match e {
        TryPublishError::Encode { msg, error } => {
            assert_eq!(
                (msg, error.to_string()),
                (bad(id), format!("order {id} is poisoned"))
            );
        }
        other => panic!("{other:?}"),
    }
}

fn assert_durable_refused(e: DurableError<Order>, id: u64) {
    match e {
        DurableError::Encode { msg, error } => {
            assert_eq!(
                (msg, error.to_string()),
                (bad(id), format!("order {id} is poisoned"))
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unencodable_message_is_refused_with_the_message_and_never_logged() {
    let sim = SimStorage::new();
    let seen: Seen = Arc::default();
    let forwarded = Forwarded::default();
    let b = bus(
        persistence(&sim),
        &seen,
        Some(&forwarded),
        |o: &Order| o.id,
        order_of,
    )
    .unwrap();
    let mut p = b.publisher();
    b.publish("orders", good(1)).unwrap();
    assert_refused(b.publish("orders", bad(2)).unwrap_err(), 2);
    assert_try_refused(b.try_publish("orders", bad(3)).unwrap_err(), 3);
    assert_durable_refused(b.publish_durable("orders", bad(4)).unwrap_err(), 4);
    assert_refused(p.publish("orders", bad(5)).unwrap_err(), 5);
    assert_try_refused(p.try_publish("orders", bad(6)).unwrap_err(), 6);
    assert_durable_refused(p.publish_durable("orders", bad(7)).unwrap_err(), 7);
    // A batch: the messages before the bad one go; it and the rest stay, in order.
    let mut batch = vec![good(8), good(9), bad(10), good(11)];
    let e = p.publish_batch("orders", &mut batch).unwrap_err();
    assert_eq!(
        e.encode_error().map(ToString::to_string).as_deref(),
        Some("order 10 is poisoned")
    );
    assert_eq!(batch, [bad(10), good(11)]);
    // A handler's publish: 0 + 100 encodes, 1 + 100 does not.
    p.publish("forward", good(0)).unwrap();
    p.publish("forward", good(1)).unwrap();
    p.publish_durable("orders", good(12)).unwrap();
    wait_seen(&seen, 5);
    let want: Vec<(u64, bool)> = [1, 8, 9, 100, 12].map(|id| (id, false)).into();
    let mut got = seen.lock().unwrap().clone();
    got.sort_unstable(); // the forwarded 100 races the publisher's 12
    let mut sorted = want.clone();
    sorted.sort_unstable();
    assert_eq!(got, sorted);
    assert_eq!(
        *forwarded.lock().unwrap(),
        ["100 ok", "101 refused: order 101 is poisoned"]
    );
    assert_eq!(b.stats().dead_letters(), 0);

    // A crash (no checkpoint): the next build replays exactly the accepted messages.
    std::mem::forget(b);
    sim.crash(None);
    let again: Seen = Arc::default();
    let b = match bus(persistence(&sim), &again, None, |o| o.id, order_of) {
        Ok(b) => b,
        Err(e) => panic!("the next build failed: {e}"),
    };
    let mut replayed = again.lock().unwrap().clone();
    replayed.sort_unstable();
    assert_eq!(
        replayed,
        sorted.iter().map(|(id, _)| (*id, true)).collect::<Vec<_>>()
    );
    b.shutdown();
}

thread_local! {
    /// Set on the test's publishing thread: `Flaky` encodes there and nowhere else.
    static PUBLISHING: Cell<bool> = const { Cell::new(false) };
}

/// A codec that is not deterministic: it encodes on the publishing thread and fails on
/// the shard's. `CAN_FAIL` is `FALLIBLE`: either way the shard's failure is dead-lettered.
#[derive(Debug, Clone, PartialEq)]
struct Flaky<const FALLIBLE: bool>(u64);

impl<const FALLIBLE: bool> Codec for Flaky<FALLIBLE> {
    const CAN_FAIL: bool = FALLIBLE;
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.0 % 2 == 1 && !PUBLISHING.with(Cell::get) {
            return Err(EncodeError::new(format_args!(
                "{} fails off the publisher",
                self.0
            )));
        }
        out.extend_from_slice(&self.0.to_le_bytes());
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let id: [u8; 8] = bytes.try_into().map_err(DecodeError::new)?;
        Ok(Flaky(u64::from_le_bytes(id)))
    }
}

fn flaky_is_dead_lettered_never_logged<const FALLIBLE: bool>() {
    PUBLISHING.with(|p| p.set(true));
    let sim = SimStorage::new();
    let seen: Seen = Arc::default();
    let letters: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let l = letters.clone();
    let s = seen.clone();
    let b = Bus::<Flaky<FALLIBLE>>::builder()
        .shards(1)
        .pin_threads(false)
        .persist(persistence(&sim))
        .subscribe(
            "orders",
            move |ctx: &mut Context<'_, _>, o: &Flaky<FALLIBLE>| {
                s.lock().unwrap().push((o.0, ctx.is_replay()));
            },
        )
        .dead_letter(move |d| {
            if let DeadLetterReason::EncodeFailed { error } = d.reason {
                l.lock().unwrap().push((d.message.0, error.to_string()));
            }
        })
        .build()
        .unwrap();
    for i in 0..4 {
        b.publish("orders", Flaky(i)).unwrap();
    }
    b.publish_durable("orders", Flaky(4)).unwrap();
    wait_seen(&seen, 3);
    assert_eq!(*seen.lock().unwrap(), [(0, false), (2, false), (4, false)]);
    assert_eq!(
        *letters.lock().unwrap(),
        [
            (1, "1 fails off the publisher".to_owned()),
            (3, "3 fails off the publisher".to_owned())
        ]
    );
    // The shard publishes its counters after each pass: the pass that handled 4 may still
    // be finishing when the handler's record is seen.
    wait_dead_letters(&b, 2);
    assert_eq!(b.stats().dead_letters(), 2);
    std::mem::forget(b);
    sim.crash(None);
    let again: Seen = Arc::default();
    let a = again.clone();
    let b = Bus::<Flaky<FALLIBLE>>::builder()
        .shards(1)
        .pin_threads(false)
        .persist(persistence(&sim))
        .subscribe(
            "orders",
            move |ctx: &mut Context<'_, _>, o: &Flaky<FALLIBLE>| {
                a.lock().unwrap().push((o.0, ctx.is_replay()));
            },
        )
        .build()
        .unwrap();
    assert_eq!(*again.lock().unwrap(), [(0, true), (2, true), (4, true)]);
    b.shutdown();
}

#[test]
fn a_message_that_fails_only_on_the_shard_is_dead_lettered_never_logged() {
    flaky_is_dead_lettered_never_logged::<true>();
    flaky_is_dead_lettered_never_logged::<false>();
}

#[cfg(feature = "postcard")]
mod serde_codec {
    use serde::ser::{Error as _, SerializeStruct, Serializer};
    use serde::{Deserialize, Serialize};

    use super::*;

    /// An order through `PostcardCodec`; a poisoned one does not serialize (its `Serialize`
    /// fails, as one with a field postcard cannot represent does).
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    struct SerdeOrder {
        id: u64,
        poisoned: bool,
    }

    impl Serialize for SerdeOrder {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if self.poisoned {
                return Err(S::Error::custom("a poisoned order"));
            }
            let mut st = s.serialize_struct("SerdeOrder", 2)?;
            st.serialize_field("id", &self.id)?;
            st.serialize_field("poisoned", &self.poisoned)?;
            st.end()
        }
    }

    impl shardbus::PostcardCodec for SerdeOrder {}

    fn order(n: u64) -> SerdeOrder {
        SerdeOrder {
            id: n,
            poisoned: n % 2 == 1,
        }
    }

    #[test]
    fn an_unserializable_message_is_refused_and_the_next_build_replays_the_rest() {
        let sim = SimStorage::new();
        let seen: Seen = Arc::default();
        let b = bus(persistence(&sim), &seen, None, |o: &SerdeOrder| o.id, order).unwrap();
        let mut p = b.publisher();
        b.publish("orders", order(0)).unwrap();
        let e = b.publish("orders", order(1)).unwrap_err();
        assert!(e.encode_error().is_some(), "{e:?}");
        assert_eq!(e.into_inner(), order(1));
        let e = p.publish_durable("orders", order(3)).unwrap_err();
        assert!(e.encode_error().is_some(), "{e:?}");
        assert_eq!(e.into_inner(), Some(order(3)));
        assert!(b
            .try_publish("orders", order(5))
            .unwrap_err()
            .encode_error()
            .is_some());
        p.publish_durable("orders", order(2)).unwrap();
        wait_seen(&seen, 2);
        assert_eq!(*seen.lock().unwrap(), [(0, false), (2, false)]);

        // A crash (no checkpoint): before the fix the record of order 1 was logged with
        // an empty payload and this build failed to decode it.
        std::mem::forget(b);
        sim.crash(None);
        let again: Seen = Arc::default();
        let b = match bus(persistence(&sim), &again, None, |o| o.id, order) {
            Ok(b) => b,
            Err(e) => panic!("the next build failed: {e}"),
        };
        assert_eq!(*again.lock().unwrap(), [(0, true), (2, true)]);
        b.shutdown();
    }
}
