//! Subscriber streams (`Bus::subscribe_stream`): delivery in order (async and blocking),
//! a slow consumer's overflow and dead letters, a quiet topic, shutdown and drop.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use futures_core::Stream;
use shardbus::{Bus, DeadLetterReason, Error};

/// What the dead-letter handler saw: (message, reason as text).
type Letters = Arc<Mutex<Vec<(u64, &'static str)>>>;

fn bus_with_letters(shards: usize) -> (Bus<u64>, Letters) {
    let letters: Letters = Arc::default();
    let sink = letters.clone();
    let bus = Bus::<u64>::builder()
        .shards(shards)
        .dead_letter(move |letter| {
            let reason = match letter.reason {
                DeadLetterReason::StreamFull { .. } => "full",
                DeadLetterReason::StreamClosed { .. } => "closed",
                DeadLetterReason::NoSubscriber => "none",
                _ => "other",
            };
            sink.lock().unwrap().push((*letter.message, reason));
        })
        .build()
        .unwrap();
    (bus, letters)
}

/// A bound on every wait in these tests: a lost wake-up fails the test instead of
/// hanging it.
const BOUND: Duration = Duration::from_secs(20);

/// Runs `f` on a thread and fails if it does not end within [`BOUND`].
fn bounded<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(BOUND).expect("timed out: a lost wake-up?")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_consumer_gets_every_message_in_order_then_none() {
    let bus = Bus::<u64>::builder().shards(2).build().unwrap();
    // Channel and overflow hold 2 x 1024: all 2000 get through however far the
    // consumer lags (a fast publisher outruns it: the overflow is used).
    let mut stream = bus.subscribe_stream("ticks", 1024).unwrap();
    let consumer = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(v) = stream.recv_async().await {
            got.push(v);
        }
        got
    });
    let mut publisher = bus.publisher();
    let producer = std::thread::spawn(move || {
        for i in 0..2000 {
            publisher.publish("ticks", i).unwrap();
        }
    });
    producer.join().unwrap();
    let stats = tokio::task::spawn_blocking(move || bus.shutdown())
        .await
        .unwrap();
    let got = tokio::time::timeout(BOUND, consumer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, (0..2000).collect::<Vec<_>>());
    assert_eq!(stats.dead_letters(), 0);
}

/// The `Stream` implementation, polled directly (no `StreamExt`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_trait_yields_in_order_then_ends() {
    let bus = Bus::<u64>::builder().shards(1).build().unwrap();
    let mut stream = bus.subscribe_stream("s", 8).unwrap();
    let consumer = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(v) = poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await {
            got.push(v);
        }
        got
    });
    for i in 0..5 {
        bus.publish("s", i).unwrap();
    }
    tokio::task::spawn_blocking(move || bus.shutdown())
        .await
        .unwrap();
    let got = tokio::time::timeout(BOUND, consumer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, [0, 1, 2, 3, 4]);
}

#[test]
fn blocking_consumer_on_a_thread_gets_every_message_in_order() {
    let bus = Bus::<u64>::builder().shards(2).build().unwrap();
    // As above: room for 2 x 1024, so every message gets through.
    let mut stream = bus.subscribe_stream("ticks", 1024).unwrap();
    let consumer = std::thread::spawn(move || {
        let mut got = Vec::new();
        while let Some(v) = stream.recv() {
            got.push(v);
        }
        got
    });
    for i in 0..2000 {
        bus.publish("ticks", i).unwrap();
    }
    bus.flush().unwrap();
    let stats = bounded(move || bus.shutdown());
    let got = bounded(move || consumer.join().unwrap());
    assert_eq!(got, (0..2000).collect::<Vec<_>>());
    assert_eq!(stats.dead_letters(), 0);
}

/// A consumer that takes nothing while 20 messages arrive at a stream of capacity 4:
/// 4 wait in the channel, 4 in the overflow, 12 are dead-lettered as `StreamFull`. Then
/// the consumer takes the 8, in order.
#[test]
fn slow_consumer_fills_the_overflow_to_its_bound_then_dead_letters() {
    let (bus, letters) = bus_with_letters(2);
    let mut stream = bus.subscribe_stream("slow", 4).unwrap();
    let shard = stream.subscription().shard().index();
    let barrier = Arc::new(Barrier::new(2));
    let gate = barrier.clone();
    let consumer = std::thread::spawn(move || {
        gate.wait();
        let mut got = Vec::new();
        while let Some(v) = stream.recv() {
            got.push(v);
        }
        got
    });
    for i in 0..20 {
        bus.publish("slow", i).unwrap();
    }
    bus.flush().unwrap();
    let stats = bus.stats();
    assert_eq!(stats.shards[shard].stream_overflow, 4);
    assert_eq!(stats.shards[shard].stream_overflow_peak, 4);
    assert_eq!(stats.shards[shard].stream_dead_letters, 12);
    let full: Vec<(u64, &str)> = (8..20).map(|i| (i, "full")).collect();
    assert_eq!(*letters.lock().unwrap(), full);

    barrier.wait();
    let stats = bounded(move || bus.shutdown());
    let got = bounded(move || consumer.join().unwrap());
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    assert_eq!(got.len() as u64 + stats.stream_dead_letters(), 20);
    assert_eq!(stats.dead_letters(), 12);
    assert_eq!(stats.shards[shard].stream_overflow, 0, "all taken");
    assert_eq!(stats.shards[shard].stream_overflow_peak, 4);
}

/// Messages in the overflow when the topic goes quiet reach the consumer with no further
/// message to move them, and after that new messages go through the channel again.
#[test]
fn a_quiet_topic_strands_nothing_in_the_overflow() {
    let (bus, letters) = bus_with_letters(1);
    let mut stream = bus.subscribe_stream("quiet", 2).unwrap();
    for i in 0..4 {
        bus.publish("quiet", i).unwrap();
    }
    bus.flush().unwrap();
    assert_eq!(bus.stats().shards[0].stream_overflow, 2);
    // Nothing more is published: the consumer alone must get all four.
    let got = bounded(move || {
        let got: Vec<u64> = (0..4).map(|_| stream.recv().unwrap()).collect();
        (got, stream)
    });
    let (got, mut stream) = got;
    assert_eq!(got, [0, 1, 2, 3]);
    assert_eq!(stream.try_recv(), None);
    assert_eq!(bus.stats().shards[0].stream_overflow, 0);
    // Back to the channel: two fit there, two more in the overflow, none dead.
    for i in 4..8 {
        bus.publish("quiet", i).unwrap();
    }
    bus.flush().unwrap();
    assert_eq!(bus.stats().shards[0].stream_overflow, 2);
    let got: Vec<u64> = std::iter::from_fn(|| stream.try_recv()).collect();
    assert_eq!(got, [4, 5, 6, 7]);
    assert!(letters.lock().unwrap().is_empty());
    assert_eq!(bus.shutdown().shards[0].stream_overflow_peak, 2);
}

/// After shutdown the stream yields what it holds (channel and overflow), then `None`,
/// and an async consumer waiting on an empty stream is woken with `None`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_the_stream_after_the_remaining_messages() {
    let bus = Bus::<u64>::builder().shards(2).build().unwrap();
    let mut full = bus.subscribe_stream("a", 2).unwrap();
    let mut empty = bus.subscribe_stream("b", 2).unwrap();
    let waiter = tokio::spawn(async move { empty.recv_async().await });
    for i in 0..3 {
        bus.publish("a", i).unwrap();
    }
    tokio::task::spawn_blocking(move || bus.shutdown())
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(BOUND, waiter).await.unwrap().unwrap(),
        None
    );
    assert_eq!(full.recv_async().await, Some(0));
    assert_eq!(full.recv_async().await, Some(1));
    assert_eq!(full.recv_async().await, Some(2));
    assert_eq!(full.recv_async().await, None);
    assert_eq!(full.recv_async().await, None);
    assert_eq!(full.try_recv(), None);
}

/// A thread blocked in `recv` on an empty stream is woken by the shutdown and gets `None`.
#[test]
fn shutdown_wakes_a_blocked_recv_with_none() {
    let bus = Bus::<u64>::builder().shards(1).build().unwrap();
    let mut stream = bus.subscribe_stream("idle", 2).unwrap();
    let ready = Arc::new(Barrier::new(2));
    let go = ready.clone();
    let consumer = std::thread::spawn(move || {
        go.wait();
        (stream.recv(), stream.recv())
    });
    ready.wait();
    bounded(move || bus.shutdown());
    assert_eq!(bounded(move || consumer.join().unwrap()), (None, None));
}

/// Unsubscribing the stream's id ends it after what it holds.
#[test]
fn unsubscribing_ends_the_stream_after_what_it_holds() {
    let bus = Bus::<u64>::builder().shards(1).build().unwrap();
    let mut stream = bus.subscribe_stream("u", 4).unwrap();
    bus.publish("u", 7).unwrap();
    bus.unsubscribe(stream.subscription()).unwrap();
    let got = bounded(move || (stream.recv(), stream.recv()));
    assert_eq!(got, (Some(7), None));
    assert_eq!(bus.shutdown().unrouted(), 0);
}

/// Dropping the stream ends its subscription: a message published after the drop finds
/// no subscriber; one published before it but not yet handled (the shard is held up by
/// another handler) is dead-lettered as `StreamClosed`; nothing reaches the stream after.
#[test]
fn dropping_the_stream_stops_delivery() {
    let (bus, letters) = bus_with_letters(1);
    let hold = Arc::new(Barrier::new(2));
    let held = hold.clone();
    bus.subscribe(
        "hold",
        move |_: &mut shardbus::Context<'_, u64>, _: &u64| {
            held.wait();
        },
    )
    .unwrap();
    let mut stream = bus.subscribe_stream("t", 4).unwrap();
    bus.publish("t", 0).unwrap();
    bus.flush().unwrap();
    assert_eq!(stream.try_recv(), Some(0));
    // The shard is held in the "hold" handler while 1 waits behind it.
    bus.publish("hold", 100).unwrap();
    bus.publish("t", 1).unwrap();
    drop(stream);
    bus.publish("t", 2).unwrap();
    hold.wait();
    bus.flush().unwrap();
    bus.publish("t", 3).unwrap();
    let stats = bus.shutdown();
    assert_eq!(
        *letters.lock().unwrap(),
        [(1, "closed"), (2, "none"), (3, "none")]
    );
    assert_eq!(stats.stream_dead_letters(), 1);
    assert_eq!(stats.unrouted(), 2);
    assert_eq!(stats.dead_letters(), 3);
    assert_eq!(stats.shards[0].stream_overflow, 0);
}

#[test]
fn a_bad_capacity_is_an_error() {
    let bus = Bus::<u64>::builder().shards(1).build().unwrap();
    for capacity in [0, 1, 3, 1 << 31] {
        match bus.subscribe_stream("t", capacity) {
            Err(Error::InvalidCapacity {
                what: "stream",
                capacity: c,
                ..
            }) => assert_eq!(c, capacity),
            other => panic!("{capacity}: {other:?}"),
        }
    }
}

/// `recv_async`'s future and the stream are `Send` (for a multi-threaded runtime).
#[test]
fn futures_are_send() {
    fn send<F: Future + Send>(_: &F) {}
    let bus = Bus::<u64>::builder().shards(1).build().unwrap();
    let mut stream = bus.subscribe_stream("t", 2).unwrap();
    send(&stream.recv_async());
    std::thread::spawn(move || drop(stream)).join().unwrap();
}

/// From a handler of the same bus, `subscribe_stream` would wait for its own shard: it is
/// refused with `WouldDeadlock` and subscribes nothing.
#[test]
fn subscribe_stream_from_a_handler_is_refused() {
    let bus = Arc::new(Bus::<u64>::builder().shards(1).build().unwrap());
    let slot: Arc<std::sync::OnceLock<std::sync::Weak<Bus<u64>>>> = Arc::default();
    slot.set(Arc::downgrade(&bus)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let handler_slot = slot.clone();
    bus.subscribe("ctl", move |_: &mut shardbus::Context<'_, u64>, _: &u64| {
        let bus = handler_slot.get().unwrap().upgrade().unwrap();
        let refused = matches!(bus.subscribe_stream("t", 2), Err(Error::WouldDeadlock));
        drop(bus);
        tx.send(refused).unwrap();
    })
    .unwrap();
    bus.publish("ctl", 0).unwrap();
    assert!(rx.recv_timeout(BOUND).unwrap());
    bus.publish("t", 1).unwrap();
    let bus = Arc::try_unwrap(bus).unwrap_or_else(|_| panic!("a handler still holds the bus"));
    assert_eq!(bus.shutdown().unrouted(), 1, "nothing subscribed to \"t\"");
}
