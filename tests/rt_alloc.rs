//! The publish → handle path allocates nothing per message once warmed up (plain and keyed).
//!
//! A counting global allocator counts every allocation in the process. The file holds a single
//! test so that no other test thread allocates while it measures; the measured window contains
//! only this thread's publishing and the shard threads' handling (the test harness's main thread
//! is blocked waiting for the test). Each scenario warms up (lanes registered, queues at their
//! working size; a persistent pass's buffers at the largest batch a measured round can bring,
//! see `STALL_AT`), then publishes 100,000 messages in rounds of 1,000, waiting after each round
//! until the handlers have seen every message (so no overflow queue grows past its warmed-up
//! size), and asserts that the allocation count did not move at all.
//!
//! The persistent scenarios add the write-ahead log (on the real filesystem, `Never`: no sync)
//! and a codec that can fail, so that every publish also encodes its message on the
//! publishing thread first (into a reused per-thread buffer), and a durable publish always.

use std::hint;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shardbus::log::FsyncPolicy;
use shardbus::{Bus, Codec, Context, DecodeError, EncodeError, Persistence, Topic, WaitStrategy};

mod common;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

use common::allocations;

/// A message with a payload, moved by value as a benchmark message is.
#[derive(Clone, Copy)]
struct Msg {
    seq: u64,
    _payload: [u8; 16],
}

/// Little-endian `seq` and payload; `CAN_FAIL` stays `true`, so that a persistent bus
/// encodes every message on the publishing thread before it pushes it.
impl Codec for Msg {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self._payload);
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let seq: [u8; 8] = bytes[..8.min(bytes.len())]
            .try_into()
            .map_err(DecodeError::new)?;
        Ok(msg(u64::from_le_bytes(seq)))
    }
}

const WARMUP: u64 = 10_000;
const MEASURED: u64 = 100_000;
const ROUND: u64 = 1_000;

/// Messages `measure` has published so far, stored after each round (before its wait).
static PUBLISHED: AtomicU64 = AtomicU64::new(0);

/// The first message of the warm-up's last round, which has `2 × ROUND` messages. In a bus
/// whose counting handlers stall (`subscribe_counting`), its handler and the next message's
/// (on the other shard) wait until that whole round is published (`ROUND` messages per shard
/// fit in a lane of the default 1,024 slots), so that each shard's next pass takes
/// `ROUND − 1` messages at once: more than the `ROUND / 2` a measured round brings to one
/// shard, the largest batch a measured pass can take. The persistent pass stages a batch, encodes it and
/// builds its records in buffers that grow to the largest batch seen (five of them); without
/// the stall, whether the warm-up ever saw one that large depended on how the threads were
/// scheduled (on a loaded machine a measured pass once took a larger one: 5 allocations; a
/// warm-up in rounds of 10 before a stalled measured round: 60).
const STALL_AT: u64 = WARMUP - ROUND;

/// What a stalled handler waits for: the warm-up's last round all published.
const STALL_UNTIL: u64 = STALL_AT + 2 * ROUND;

/// Waits (spinning, which allocates nothing) until `counter` reaches `n`; fails after 60 s
/// (a message that never reaches the handler, say one dead-lettered by the log).
fn wait_for(counter: &AtomicU64, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut spins = 0u32;
    // Acquire: pairs with the handlers' Release increments.
    while counter.load(Ordering::Acquire) < n {
        hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1 << 16) {
            assert!(
                std::time::Instant::now() < deadline,
                "the handlers stalled at {} of {n}",
                counter.load(Ordering::Relaxed)
            );
        }
    }
}

/// Runs `publish(seq)` for `WARMUP + ROUND` messages (the last round twice as long, see
/// [`STALL_AT`]), then measures `MEASURED` more; returns the allocations counted during the
/// measured messages.
fn measure(handled: &AtomicU64, mut publish: impl FnMut(u64)) -> u64 {
    let mut seq = 0;
    // Release: pairs with the Acquire load of a stalled handler (`wait_for`).
    PUBLISHED.store(0, Ordering::Release);
    let mut run = |rounds: u64, round: u64, seq: &mut u64| {
        for _ in 0..rounds {
            for _ in 0..round {
                publish(*seq);
                *seq += 1;
            }
            // Release: as above.
            PUBLISHED.store(*seq, Ordering::Release);
            wait_for(handled, *seq);
        }
    };
    run(WARMUP / ROUND - 1, ROUND, &mut seq);
    // The round of the stall (`STALL_AT`).
    run(1, 2 * ROUND, &mut seq);
    let before = allocations();
    run(MEASURED / ROUND, ROUND, &mut seq);
    allocations() - before
}

/// A bus with a counting subscriber on one topic per shard; returns the topics and the counter.
fn bus(wait: WaitStrategy) -> (Bus<Msg>, Vec<Topic>, Arc<AtomicU64>) {
    let bus = Bus::<Msg>::builder()
        .shards(2)
        .wait_strategy(wait)
        .build()
        .unwrap();
    subscribe_counting(bus, false)
}

/// A persistent `bus` in `dir`: no sync, no checkpoint and one segment for the whole run
/// (so the log neither rolls nor writes a checkpoint file while measured).
/// With `stall`, its handlers stall once in the warm-up ([`STALL_AT`]); not for durable
/// publishes, which each wait for the shard's next pass.
fn persistent_bus(
    wait: WaitStrategy,
    dir: &std::path::Path,
    stall: bool,
) -> (Bus<Msg>, Vec<Topic>, Arc<AtomicU64>) {
    let bus = Bus::<Msg>::builder()
        .shards(2)
        .wait_strategy(wait)
        .persist(
            Persistence::new(dir)
                .fsync(FsyncPolicy::Never)
                .segment_size(64 << 20)
                .checkpoint_every(u64::MAX, std::time::Duration::from_secs(3600)),
        )
        .build()
        .unwrap();
    subscribe_counting(bus, stall)
}

/// Subscribes a counting handler to one topic per shard of `bus`; with `stall`, the handlers
/// of the messages [`STALL_AT`] and the next wait for their round to be published.
fn subscribe_counting(bus: Bus<Msg>, stall: bool) -> (Bus<Msg>, Vec<Topic>, Arc<AtomicU64>) {
    let handled = Arc::new(AtomicU64::new(0));
    let mut topics = Vec::new();
    for shard in 0..2 {
        let topic = (0..)
            .map(|i| bus.topic(&format!("t{i}")).unwrap())
            .find(|t| t.shard().index() == shard)
            .unwrap();
        let counter = handled.clone();
        bus.subscribe(topic, move |_: &mut Context<'_, Msg>, m: &Msg| {
            if stall && (m.seq == STALL_AT || m.seq == STALL_AT + 1) {
                wait_for(&PUBLISHED, STALL_UNTIL);
            }
            // Release: pairs with the Acquire load in `wait_for`.
            counter.fetch_add(1, Ordering::Release);
        })
        .unwrap();
        topics.push(topic);
    }
    (bus, topics, handled)
}

fn msg(seq: u64) -> Msg {
    Msg {
        seq,
        _payload: [0; 16],
    }
}

fn publisher_publish(wait: WaitStrategy) -> u64 {
    let (bus, topics, handled) = bus(wait);
    let mut publisher = bus.publisher();
    let n = measure(&handled, |seq| {
        publisher
            .publish(topics[(seq % 2) as usize], msg(seq))
            .unwrap();
    });
    drop(publisher);
    bus.shutdown();
    n
}

fn publisher_publish_batch(wait: WaitStrategy) -> u64 {
    let (bus, topics, handled) = bus(wait);
    let mut publisher = bus.publisher();
    let mut batch = Vec::with_capacity(64);
    let mut pending = 0u64;
    let n = measure(&handled, |seq| {
        batch.push(msg(seq));
        pending += 1;
        // `measure` waits after every 1,000 messages: flush by then (1,000 = 15 × 64 + 40).
        if batch.len() == 64 || pending.is_multiple_of(ROUND) {
            let topic = &topics[((seq / 64) % 2) as usize];
            publisher.publish_batch(topic, &mut batch).unwrap();
        }
    });
    drop(publisher);
    bus.shutdown();
    n
}

fn bus_publish(wait: WaitStrategy, by_name: bool) -> u64 {
    let (bus, topics, handled) = bus(wait);
    let names: Vec<String> = topics.iter().map(|t| t.name().to_owned()).collect();
    let n = measure(&handled, |seq| {
        let i = (seq % 2) as usize;
        if by_name {
            bus.publish(names[i].as_str(), msg(seq)).unwrap();
        } else {
            bus.publish(topics[i], msg(seq)).unwrap();
        }
    });
    bus.shutdown();
    n
}

/// A relay actor on shard 0 forwards every message with `ctx.publish` to a topic on shard 1.
fn handler_publish_cross_shard(wait: WaitStrategy) -> u64 {
    let bus = Bus::<Msg>::builder()
        .shards(2)
        .wait_strategy(wait)
        .build()
        .unwrap();
    let on = |shard: usize, prefix: &str| {
        (0..)
            .map(|i| bus.topic(&format!("{prefix}{i}")).unwrap())
            .find(|t| t.shard().index() == shard)
            .unwrap()
    };
    let (relay, sink) = (on(0, "relay"), on(1, "sink"));
    let handled = Arc::new(AtomicU64::new(0));
    let counter = handled.clone();
    bus.subscribe(sink, move |_: &mut Context<'_, Msg>, m: &Msg| {
        assert!(m.seq < u64::MAX);
        // Release: pairs with the Acquire load in `wait_for`.
        counter.fetch_add(1, Ordering::Release);
    })
    .unwrap();
    bus.subscribe(relay, move |ctx: &mut Context<'_, Msg>, m: &Msg| {
        ctx.publish(sink, *m).unwrap();
    })
    .unwrap();
    let mut publisher = bus.publisher();
    let n = measure(&handled, |seq| {
        publisher.publish(relay, msg(seq)).unwrap();
    });
    drop(publisher);
    bus.shutdown();
    n
}

/// A temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("shardbus-rt-alloc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `Publisher::publish` (or `publish_durable`) on a persistent bus whose codec can fail.
fn persistent_publisher(wait: WaitStrategy, durable: bool) -> u64 {
    let dir = TempDir::new(if durable { "durable" } else { "publish" });
    let (bus, topics, handled) = persistent_bus(wait, &dir.0, !durable);
    let mut publisher = bus.publisher();
    let n = measure(&handled, |seq| {
        let topic = topics[(seq % 2) as usize];
        if durable {
            publisher.publish_durable(topic, msg(seq)).unwrap();
        } else {
            publisher.publish(topic, msg(seq)).unwrap();
        }
    });
    drop(publisher);
    bus.shutdown();
    n
}

/// Keyed publishes to a partitioned topic whose instances count: through a `Publisher` by
/// name and by `PartitionedTopic`, through the bus by name, and from a handler (a relay on
/// a plain topic).
fn keyed_publish(wait: WaitStrategy, form: usize) -> u64 {
    let bus = Bus::<Msg>::builder()
        .shards(2)
        .wait_strategy(wait)
        .build()
        .unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let counter = handled.clone();
    bus.subscribe_partitioned("orders", shardbus::Supervision::Resume, move |_| {
        let counter = counter.clone();
        move |_: &mut Context<'_, Msg>, _: &Msg| {
            // Release: pairs with the Acquire load in `wait_for`.
            counter.fetch_add(1, Ordering::Release);
        }
    })
    .unwrap();
    bus.subscribe("relay", |ctx: &mut Context<'_, Msg>, m: &Msg| {
        let m = Msg { ..*m };
        ctx.publish_keyed("orders", m.seq % 97, m).unwrap();
    })
    .unwrap();
    let topic = bus.partitioned_topic("orders").unwrap();
    let mut publisher = bus.publisher();
    let n = measure(&handled, |seq| {
        let key = seq % 97;
        match form {
            0 => publisher.publish_keyed("orders", key, msg(seq)).unwrap(),
            1 => publisher.publish_keyed(&topic, key, msg(seq)).unwrap(),
            2 => bus.publish_keyed("orders", key, msg(seq)).unwrap(),
            _ => publisher.publish("relay", msg(seq)).unwrap(),
        }
    });
    drop(publisher);
    bus.shutdown();
    n
}

#[test]
fn publish_to_handle_allocates_nothing_per_message() {
    // The counter is live: one boxed value is one counted allocation.
    let before = allocations();
    drop(hint::black_box(Box::new(7u64)));
    assert_eq!(
        allocations() - before,
        1,
        "the counting allocator is installed"
    );
    for wait in [WaitStrategy::Park, WaitStrategy::BusySpin] {
        assert_eq!(publisher_publish(wait), 0, "Publisher::publish, {wait:?}");
        assert_eq!(
            publisher_publish_batch(wait),
            0,
            "Publisher::publish_batch, {wait:?}"
        );
        assert_eq!(
            bus_publish(wait, false),
            0,
            "Bus::publish(&Topic), {wait:?}"
        );
        assert_eq!(bus_publish(wait, true), 0, "Bus::publish(&str), {wait:?}");
        assert_eq!(
            handler_publish_cross_shard(wait),
            0,
            "Context::publish to another shard, {wait:?}"
        );
    }
    // Keyed publishes to a partitioned topic.
    for (form, what) in [
        "Publisher::publish_keyed(&str)",
        "Publisher::publish_keyed(&PartitionedTopic)",
        "Bus::publish_keyed(&str)",
        "Context::publish_keyed(&str)",
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(keyed_publish(WaitStrategy::Park, form), 0, "{what}");
    }
    // Persistent: the log's pass, and the encoding on the publishing thread.
    let wait = WaitStrategy::Park;
    assert_eq!(
        persistent_publisher(wait, false),
        0,
        "persistent Publisher::publish, a codec that can fail"
    );
    assert_eq!(
        persistent_publisher(wait, true),
        0,
        "persistent Publisher::publish_durable"
    );
}
