//! The async publishes allocate nothing per message once warmed up: on the fast path (a
//! lane with room) and when they wait (a full lane, a full shared ring).
//!
//! A counting global allocator counts every allocation in the process; the file holds a
//! single test so that no other test thread allocates while it measures. The futures are
//! driven by a minimal executor on the test thread (poll, park until woken) whose waker
//! is made once, before measuring: what is counted is the library's work, not an
//! executor's. Each scenario warms up, then publishes 20,000 messages in rounds of 500,
//! waiting after each round until the handlers have seen every message, and asserts that
//! the allocation count did not move.
//!
//! To make the waits certain rather than a matter of timing, the handlers run only while
//! the test thread lets them ([`OPEN`]): while the publisher has room they are held, so
//! the lane or inbox fills; the executor opens the gate when a future returns `Pending`
//! and closes it again once the future completes. A publisher with a lane or inbox of a
//! few slots therefore pends at least once every few messages (asserted), and one with
//! more room than a round never pends (asserted too).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use shardbus::{Bus, Context, Topic};

mod common;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

use common::allocations;

/// Whether the handlers may run (see the file's docs). Release/Acquire: the test thread's
/// stores pair with the handlers' loads; only the gate's state is exchanged.
static OPEN: AtomicBool = AtomicBool::new(true);

/// Unparks the test thread.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls futures to completion on this thread with one waker made up front; counts the
/// polls that returned `Pending`.
struct Executor {
    waker: Waker,
    pending: u64,
}

impl Executor {
    fn new() -> Self {
        Self {
            waker: Waker::from(Arc::new(Unpark(std::thread::current()))),
            pending: 0,
        }
    }

    fn block_on<F: std::future::Future>(&mut self, f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = TaskContext::from_waker(&self.waker);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                OPEN.store(false, Ordering::Release);
                return v;
            }
            self.pending += 1;
            OPEN.store(true, Ordering::Release);
            let parked = Instant::now();
            std::thread::park_timeout(Duration::from_secs(30));
            assert!(parked.elapsed() < Duration::from_secs(30), "lost wake-up");
        }
    }
}

const WARMUP: u64 = 5_000;
const MEASURED: u64 = 20_000;
const ROUND: u64 = 500;

fn wait_for(counter: &AtomicU64, n: u64) {
    OPEN.store(true, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Acquire: pairs with the handlers' Release increments.
    while counter.load(Ordering::Acquire) < n {
        assert!(Instant::now() < deadline, "the handlers stalled");
        std::thread::yield_now();
    }
    OPEN.store(false, Ordering::Release);
}

/// Runs `publish(seq)` for `WARMUP` messages, then measures `MEASURED` more; returns the
/// allocations counted during the measured messages.
fn measure(handled: &AtomicU64, mut publish: impl FnMut(u64)) -> u64 {
    let mut seq = 0;
    let mut run = |n: u64, seq: &mut u64| {
        for _ in 0..n / ROUND {
            for _ in 0..ROUND {
                publish(*seq);
                *seq += 1;
            }
            wait_for(handled, *seq);
        }
    };
    run(WARMUP, &mut seq);
    let before = allocations();
    run(MEASURED, &mut seq);
    allocations() - before
}

/// Two unpinned shards with an inbox of `capacity` and lanes of `lane`, a counting
/// subscriber on one topic per shard.
fn bus(capacity: usize, lane: usize) -> (Bus<u64>, Vec<Topic>, Arc<AtomicU64>) {
    let bus = Bus::<u64>::builder()
        .shards(2)
        .capacity(capacity)
        .lane_capacity(lane)
        .pin_threads(false)
        .build()
        .unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let mut topics = Vec::new();
    for shard in 0..2 {
        let topic = (0..)
            .map(|i| bus.topic(&format!("t{i}")).unwrap())
            .find(|t| t.shard().index() == shard)
            .unwrap();
        let counter = handled.clone();
        bus.subscribe(topic, move |_: &mut Context<'_, u64>, _: &u64| {
            // Held while the gate is closed (see the file's docs).
            while !OPEN.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            // Release: pairs with the Acquire load in `wait_for`.
            counter.fetch_add(1, Ordering::Release);
        })
        .unwrap();
        topics.push(topic);
    }
    (bus, topics, handled)
}

/// `Publisher::publish_async` with lanes of `lane`: (allocations, polls that pended).
fn publisher_async(lane: usize) -> (u64, u64) {
    let (bus, topics, handled) = bus(1024, lane);
    let mut publisher = bus.publisher();
    let mut exec = Executor::new();
    let n = measure(&handled, |seq| {
        exec.block_on(publisher.publish_async(topics[(seq % 2) as usize], seq))
            .unwrap();
    });
    drop(publisher);
    bus.shutdown();
    (n, exec.pending)
}

/// `Bus::publish_async` with an inbox of `capacity`: (allocations, polls that pended).
fn bus_async(capacity: usize) -> (u64, u64) {
    let (bus, topics, handled) = bus(capacity, 1024);
    let mut exec = Executor::new();
    let n = measure(&handled, |seq| {
        exec.block_on(bus.publish_async(topics[(seq % 2) as usize], seq))
            .unwrap();
    });
    bus.shutdown();
    (n, exec.pending)
}

#[test]
fn async_publish_allocates_nothing_per_message() {
    // Lanes and an inbox larger than a round: never full, never a wait.
    assert_eq!(
        publisher_async(4096),
        (0, 0),
        "Publisher::publish_async, lane with room"
    );
    assert_eq!(
        bus_async(4096),
        (0, 0),
        "Bus::publish_async, inbox with room"
    );
    // Lanes of 2 (inboxes of 4) on 2 shards: with the handlers held unless a future is
    // pending, between two waits go by at most what fits in each shard's lane (inbox)
    // plus a message in each handler's hands; the bound below takes half of that count
    // for margin (each round's end also lets the handlers drain everything).
    let bound = |cap: u64| (WARMUP + MEASURED) / (2 * (cap + 2) + 1) / 2;
    let (waiting, pended) = publisher_async(2);
    assert!(pended >= bound(2), "lane waits: {pended}");
    assert_eq!(waiting, 0, "Publisher::publish_async, full lanes");
    let (waiting, pended) = bus_async(4);
    assert!(pended >= bound(4), "inbox waits: {pended}");
    assert_eq!(waiting, 0, "Bus::publish_async, full inbox");
}
