//! Ending and synchronizing a bus through `&self`: `close` through a shared bus, `flush`
//! under concurrent publishers, the order of (un)subscribe against messages published
//! before it on either publish path, and `shutdown_background`, which returns without
//! waiting for the drain.
//!
//! Every check is exact. Each wait on another thread goes through `within` (or a
//! channel with a timeout), so a hang fails the test instead of stalling the run; no
//! assertion depends on timing.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::common::{assert_quiescent_stats, names, not_exactly_once, PATIENCE};
use shardbus::{Bus, Context, Error, PublishError, Supervision, TryPublishError};

/// Runs `f` on its own thread and returns its result, or fails the test if it has not
/// finished within `PATIENCE` (the thread is then left behind).
fn within<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still waiting after {PATIENCE:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

/// Waits (yielding) until `cond` holds; fails the test after `PATIENCE`.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still waiting after {PATIENCE:?}"
        );
        thread::yield_now();
    }
}

fn counters(n: usize) -> Arc<Vec<AtomicU32>> {
    Arc::new((0..n).map(|_| AtomicU32::new(0)).collect())
}

/// Subscribes to every topic a handler that counts each message id.
fn subscribe_counting(bus: &Bus<u32>, topics: &[String], seen: &Arc<Vec<AtomicU32>>) {
    for t in topics {
        let seen = seen.clone();
        bus.subscribe(t.as_str(), move |_: &mut Context<'_, u32>, &m: &u32| {
            seen[m as usize].fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    }
}

// ---------------------------------------------------------------------------------
// close
// ---------------------------------------------------------------------------------

/// Producers publish until the bus closes under them; another thread closes it through
/// its `Arc`. Every publish that returned `Ok` is handled exactly once by the time
/// `close` returns, the one that returned `Closed` got its message back and was never
/// handled, and so were all later ones.
#[test]
fn close_through_an_arc_handles_everything_accepted_and_refuses_the_rest() {
    const PRODUCERS: u32 = 3;
    const PER: u32 = 100_000;
    let bus = Arc::new(
        Bus::<u32>::builder()
            .shards(3)
            .pin_threads(false)
            .capacity(256)
            .lane_capacity(64)
            .build()
            .unwrap(),
    );
    let topics = Arc::new(names("close", 12));
    let seen = counters((PRODUCERS * PER) as usize);
    subscribe_counting(&bus, &topics, &seen);
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (bus, topics) = (bus.clone(), topics.clone());
            let mut publisher = bus.publisher();
            thread::spawn(move || {
                // Producer 0 publishes through the bus, the others through a Publisher.
                for i in 0..PER {
                    let id = p * PER + i;
                    let topic = topics[id as usize % topics.len()].as_str();
                    let refused = if p == 0 {
                        bus.publish(topic, id).err()
                    } else {
                        publisher.publish(topic, id).err()
                    };
                    match refused {
                        None => {}
                        Some(PublishError::Closed(back)) => {
                            assert_eq!(back, id, "the refused message comes back");
                            return i;
                        }
                        Some(other) => panic!("unexpected {other:?}"),
                    }
                }
                PER
            })
        })
        .collect();
    // Close mid-stream, from a thread of its own.
    wait_until("the first handled messages", || {
        seen.iter()
            .take(1_000)
            .all(|c| c.load(Ordering::Relaxed) == 1)
    });
    let closer = bus.clone();
    let stats = within("close", move || closer.close().unwrap());
    // Nothing is handled after `close` returned: read the record now.
    let record: Vec<u32> = seen.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let accepted: Vec<u32> = producers.into_iter().map(|p| p.join().unwrap()).collect();

    let mut total = 0u64;
    for (p, &k) in accepted.iter().enumerate() {
        let ids = p as u32 * PER..(p as u32 + 1) * PER;
        for id in ids.clone() {
            let want = u32::from(id - ids.start < k);
            assert_eq!(
                record[id as usize], want,
                "producer {p} id {id}: accepted {k}"
            );
        }
        total += u64::from(k);
    }
    assert_eq!(stats.handled(), total);
    assert_eq!(stats.received(), total);
    assert_quiescent_stats(&stats);

    // Later publishes on every path give the message back; control calls are refused.
    assert!(matches!(
        bus.publish("close-0", 7),
        Err(PublishError::Closed(7))
    ));
    assert!(matches!(
        bus.try_publish("close-0", 8),
        Err(TryPublishError::Closed(8))
    ));
    let mut late = bus.publisher();
    assert!(matches!(
        late.publish("close-0", 9),
        Err(PublishError::Closed(9))
    ));
    let sub = bus.subscribe("close-0", |_: &mut Context<'_, u32>, _: &u32| {});
    assert!(matches!(sub, Err(Error::Closed)), "{sub:?}");
    // A flush has nothing left to wait for; a second close reports the same end.
    let again = bus.clone();
    within("flush after close", move || again.flush()).unwrap();
    let again = bus.clone();
    assert_eq!(
        within("second close", move || again.close().unwrap()),
        stats
    );
    // The last handle joins the (exited) shard threads.
    let last = Arc::try_unwrap(bus).expect("every other handle is gone");
    within("drop after close", move || drop(last));
    assert_eq!(
        seen.iter()
            .map(|c| u64::from(c.load(Ordering::Relaxed)))
            .sum::<u64>(),
        total
    );
}

/// Two threads close the same bus at once: both wait for the one drain and both see the
/// final statistics.
#[test]
fn concurrent_closes_both_wait_for_the_drain() {
    let bus = Arc::new(crate::common::bus(2));
    let topics = names("twice", 4);
    let seen = counters(2_000);
    subscribe_counting(&bus, &topics, &seen);
    let mut publisher = bus.publisher();
    for id in 0..2_000u32 {
        publisher
            .publish(topics[id as usize % 4].as_str(), id)
            .unwrap();
    }
    let closers: Vec<_> = (0..2)
        .map(|_| {
            let bus = bus.clone();
            thread::spawn(move || bus.close().unwrap())
        })
        .collect();
    let stats: Vec<_> = within("two closes", move || {
        closers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(stats[0], stats[1]);
    assert_eq!(stats[0].handled(), 2_000);
    assert_eq!(not_exactly_once(&seen), []);
}

// ---------------------------------------------------------------------------------
// flush
// ---------------------------------------------------------------------------------

/// While producers keep publishing (two through Publishers, one through the bus), each
/// `flush` returns only when every message whose publish had returned before the call
/// is handled. The handlers are slower than the producers, so lanes are backed up.
#[test]
fn flush_waits_for_every_message_published_before_it() {
    const PRODUCERS: usize = 3;
    const PER: u32 = 60_000;
    const ROUNDS: usize = 6;
    let bus = Arc::new(
        Bus::<u32>::builder()
            .shards(2)
            .pin_threads(false)
            .capacity(1024)
            .lane_capacity(1024)
            .build()
            .unwrap(),
    );
    let topics = Arc::new(names("flush", 8));
    let seen = counters(PRODUCERS * PER as usize);
    for t in topics.iter() {
        let seen = seen.clone();
        bus.subscribe(t.as_str(), move |_: &mut Context<'_, u32>, &m: &u32| {
            // A little work per message, so that the shards fall behind.
            let mut x = m;
            for _ in 0..200 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            std::hint::black_box(x);
            seen[m as usize].fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    }
    // progress[p]: how many of producer p's publishes have returned (Release after each).
    let progress: Arc<Vec<AtomicU64>> =
        Arc::new((0..PRODUCERS).map(|_| AtomicU64::new(0)).collect());
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (bus, topics, progress) = (bus.clone(), topics.clone(), progress.clone());
            let mut publisher = bus.publisher();
            thread::spawn(move || {
                for i in 0..PER {
                    let id = p as u32 * PER + i;
                    let topic = topics[(i as usize * 3 + p) % topics.len()].as_str();
                    if p == 0 {
                        bus.publish(topic, id).unwrap();
                    } else {
                        publisher.publish(topic, id).unwrap();
                    }
                    progress[p].store(u64::from(i) + 1, Ordering::Release);
                }
            })
        })
        .collect();
    let mut missed = Vec::new();
    let mut checked = 0u64;
    for round in 0..ROUNDS {
        let at_least = (round as u64 + 1) * u64::from(PER) / (ROUNDS as u64 + 2);
        wait_until("the producers' progress", || {
            progress
                .iter()
                .all(|p| p.load(Ordering::Acquire) >= at_least)
        });
        // Acquire: every publish counted here returned before `flush` is called.
        let before: Vec<u64> = progress.iter().map(|p| p.load(Ordering::Acquire)).collect();
        let b = bus.clone();
        within("flush", move || b.flush()).unwrap();
        for (p, &n) in before.iter().enumerate() {
            for i in 0..n as u32 {
                let id = p as u32 * PER + i;
                if seen[id as usize].load(Ordering::Relaxed) != 1 {
                    missed.push((round, id));
                }
            }
            checked += n;
        }
        assert!(
            missed.is_empty(),
            "round {round}: not handled at flush: {:?}",
            &missed[..missed.len().min(10)]
        );
    }
    assert!(checked > 0);
    for p in producers {
        p.join().unwrap();
    }
    let b = bus.clone();
    within("last flush", move || b.flush()).unwrap();
    assert_eq!(
        not_exactly_once(&seen),
        [],
        "every message handled once at the last flush"
    );
    let bus = Arc::try_unwrap(bus).expect("every other handle is gone");
    let stats = within("shutdown", move || bus.shutdown());
    assert_eq!(stats.handled(), PRODUCERS as u64 * u64::from(PER));
}

// ---------------------------------------------------------------------------------
// (un)subscribe against earlier publishes, on both publish paths
// ---------------------------------------------------------------------------------

/// A one-shard bus whose dead letters (no subscriber) are recorded, and a `gate` topic
/// whose handler blocks the shard until released.
struct Gated {
    bus: Arc<Bus<u32>>,
    letters: Arc<Mutex<Vec<u32>>>,
    entered: mpsc::Receiver<u32>,
    release: mpsc::Sender<()>,
}

fn gated_bus() -> Gated {
    let letters = Arc::new(Mutex::new(Vec::new()));
    let sink = letters.clone();
    let bus = Bus::<u32>::builder()
        .shards(1)
        .pin_threads(false)
        .dead_letter(move |letter| {
            assert_eq!(letter.topic, "late");
            sink.lock().unwrap().push(*letter.message);
        })
        .build()
        .unwrap();
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    bus.subscribe("gate", move |_: &mut Context<'_, u32>, &m: &u32| {
        entered_tx.send(m).unwrap();
        release_rx.recv_timeout(PATIENCE).unwrap();
    })
    .unwrap();
    Gated {
        bus: Arc::new(bus),
        letters,
        entered,
        release,
    }
}

impl Gated {
    /// Blocks the shard in the gate's handler.
    fn block(&self, m: u32) {
        self.bus.publish("gate", m).unwrap();
        assert_eq!(self.entered.recv_timeout(PATIENCE), Ok(m));
    }
}

/// A message published before `subscribe` is called is not delivered to the new
/// subscriber, whichever path it took: through `Bus::publish` (the shared ring, where
/// the subscribe request queues behind it) or through a `Publisher` (its own lane, which
/// the shard drains up to the request before installing the subscriber). Both go to the
/// dead-letter handler; both paths after `subscribe` returned reach the subscriber.
/// Symmetrically, a message published before `unsubscribe` reaches the subscriber on
/// both paths.
///
/// The shard is held in a handler while the requests queue, so that the subscribe
/// request and the publisher's lane are both pending when it next looks: the case where
/// the two paths used to differ. The short sleeps only make that case likely; with any
/// interleaving the outcome must be the one asserted.
#[test]
fn messages_published_before_subscribe_miss_it_on_both_paths() {
    let g = gated_bus();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut publisher = g.bus.publisher();

    g.block(100);
    g.bus.publish("late", 1).unwrap();
    publisher.publish("late", 2).unwrap();
    let (making, made) = mpsc::channel();
    let subscriber = {
        let (bus, seen) = (g.bus.clone(), seen.clone());
        thread::spawn(move || {
            bus.subscribe_supervised("late", Supervision::Resume, move || {
                // Called on the subscribing thread just before the request is queued.
                let _ = making.send(());
                let seen = seen.clone();
                move |_: &mut Context<'_, u32>, &m: &u32| seen.lock().unwrap().push(m)
            })
        })
    };
    made.recv_timeout(PATIENCE).unwrap();
    thread::sleep(Duration::from_millis(50));
    g.release.send(()).unwrap();
    let id = within("subscribe", move || subscriber.join().unwrap()).unwrap();

    g.bus.publish("late", 3).unwrap();
    publisher.publish("late", 4).unwrap();

    g.block(101);
    publisher.publish("late", 5).unwrap();
    g.bus.publish("late", 6).unwrap();
    let unsubscriber = {
        let bus = g.bus.clone();
        thread::spawn(move || bus.unsubscribe(id))
    };
    thread::sleep(Duration::from_millis(50));
    g.release.send(()).unwrap();
    within("unsubscribe", move || unsubscriber.join().unwrap()).unwrap();

    publisher.publish("late", 7).unwrap();
    g.bus.publish("late", 8).unwrap();
    let b = g.bus.clone();
    within("flush", move || b.flush()).unwrap();

    let mut got = seen.lock().unwrap().clone();
    got.sort_unstable();
    assert_eq!(got, [3, 4, 5, 6], "the subscriber's messages");
    let mut letters = g.letters.lock().unwrap().clone();
    letters.sort_unstable();
    assert_eq!(
        letters,
        [1, 2, 7, 8],
        "no subscriber: before subscribe, after unsubscribe"
    );
}

// ---------------------------------------------------------------------------------
// shutdown_background
// ---------------------------------------------------------------------------------

/// Sends on drop: tells the test that what owned it is gone.
struct DropSignal(mpsc::Sender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// `shutdown_background` returns while a handler is still blocked; intake is closed by
/// then; once the handler is released, it and the message queued behind it are handled,
/// `on_stop` runs, and the shard threads end (the bus's shared state, which each of them
/// holds, is freed).
#[test]
fn shutdown_background_returns_without_waiting_for_the_drain() {
    let (freed_tx, freed) = mpsc::channel();
    let guard = DropSignal(freed_tx);
    let bus = Bus::<u32>::builder()
        .shards(2)
        .pin_threads(false)
        // Far beyond the watchdog: a call that waited for the drain (as a drop does,
        // bounded by this) would fail the test instead of returning.
        .drop_timeout(Duration::from_secs(3600))
        // Held by the bus's shared state: dropped once every shard thread has ended and
        // the background thread has joined them and dropped the bus.
        .dead_letter(move |_| {
            let _ = &guard;
        })
        .build()
        .unwrap();
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let done = Arc::new(Mutex::new(Vec::new()));
    let stopped = Arc::new(AtomicBool::new(false));
    let (handled, stop_flag) = (done.clone(), stopped.clone());
    bus.subscribe(
        "slow",
        Slow {
            entered: entered_tx,
            release: release_rx,
            handled,
            stopped: stop_flag,
        },
    )
    .unwrap();
    let mut publisher = bus.publisher();
    bus.publish("slow", 1).unwrap();
    assert_eq!(entered.recv_timeout(PATIENCE), Ok(1));
    // Queued behind the blocked one, in the shared ring: a stop that did not drain
    // would drop it.
    bus.publish("slow", 2).unwrap();

    within("shutdown_background", move || bus.shutdown_background());
    // It returned with the handler still blocked on the channel only this test feeds.
    assert_eq!(*done.lock().unwrap(), [] as [u32; 0]);
    assert!(!stopped.load(Ordering::SeqCst));
    assert!(matches!(
        publisher.publish("slow", 3),
        Err(PublishError::Closed(3))
    ));

    drop(publisher); // it shares the bus's state too
    drop(release); // the handler's wait ends
    assert_eq!(entered.recv_timeout(PATIENCE), Ok(2));
    assert_eq!(
        freed.recv_timeout(PATIENCE),
        Ok(()),
        "the shard threads ended"
    );
    assert_eq!(
        *done.lock().unwrap(),
        [1, 2],
        "every accepted message was handled"
    );
    assert!(stopped.load(Ordering::SeqCst), "on_stop ran");
}

struct Slow {
    entered: mpsc::Sender<u32>,
    release: mpsc::Receiver<()>,
    handled: Arc<Mutex<Vec<u32>>>,
    stopped: Arc<AtomicBool>,
}

impl shardbus::Handler<u32> for Slow {
    fn handle(&mut self, _: &mut Context<'_, u32>, &m: &u32) {
        let _ = self.entered.send(m);
        // Released by the test dropping the sender (then every later wait returns at
        // once); the timeout only bounds a failing test.
        let _ = self.release.recv_timeout(PATIENCE);
        self.handled.lock().unwrap().push(m);
    }

    fn on_stop(&mut self, _: &mut Context<'_, u32>) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}
