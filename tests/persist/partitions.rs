//! Partitioned topics on a persistent bus: each record names its partition, so the
//! replay after a crash, and after a shard-count change, gives every record to its
//! partition's instance, in per-key order.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::common::persist::{crash, meta, persistence, DIR};
use crate::common::PATIENCE;
use shardbus::log::{Reader, Seq, SimStorage};
use shardbus::{Builder, Bus, Context, Supervision};

/// (key, n, replay?, partition, shard) as the instances saw them.
type Seen = Arc<Mutex<Vec<(u64, u64, bool, usize, usize)>>>;

const KEYS: u64 = 30;

fn builder(shards: usize, sim: &SimStorage, seen: &Seen) -> Builder<String> {
    let seen = seen.clone();
    Bus::<String>::builder()
        .shards(shards)
        .pin_threads(false)
        .partitions(16)
        .persist(persistence(sim))
        .subscribe_partitioned("orders", Supervision::Resume, move |part| {
            let seen = seen.clone();
            move |ctx: &mut Context<'_, String>, m: &String| {
                assert_eq!(ctx.partition(), Some(part));
                let (key, n) = m.split_once(':').unwrap();
                let rec = (key.parse().unwrap(), n.parse().unwrap(), ctx.is_replay());
                seen.lock()
                    .unwrap()
                    .push((rec.0, rec.1, rec.2, part, ctx.shard().index()));
            }
        })
}

/// Publishes messages `from..to`, message `n` with key `n % KEYS`, durably; waits
/// until the instances have seen `to - from` more.
fn publish(bus: &Bus<String>, seen: &Seen, from: u64, to: u64) {
    let before = seen.lock().unwrap().len();
    let mut p = bus.publisher();
    for n in from..to {
        let key = n % KEYS;
        p.publish_keyed("orders", key, format!("{key}:{n}"))
            .unwrap();
    }
    p.wait_durable().unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while seen.lock().unwrap().len() < before + (to - from) as usize {
        assert!(std::time::Instant::now() < deadline, "handlers stalled");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Every message the instances saw, per key, in order; checks each went to its key's
/// partition and that partition's shard, and was a replay or not as `replay` says.
fn per_key(bus: &Bus<String>, seen: &Seen, replay: bool) -> BTreeMap<u64, Vec<u64>> {
    let mut by: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &(key, n, r, part, shard) in seen.lock().unwrap().iter() {
        assert_eq!(part, bus.partition_of(key), "key {key} in its partition");
        assert_eq!(Some(shard), bus.shard_of_partition(part).map(|s| s.index()));
        assert_eq!(r, replay, "message {n}");
        by.entry(key).or_default().push(n);
    }
    by
}

fn expected(range: std::ops::Range<u64>) -> BTreeMap<u64, Vec<u64>> {
    let mut by: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for n in range {
        by.entry(n % KEYS).or_default().push(n);
    }
    by
}

/// A 4-shard bus: 60 messages handled and checkpointed (clean shutdown), then 300
/// handled but not checkpointed when the process crashes.
fn crashed_log(sim: &SimStorage) {
    let seen = Seen::default();
    let bus = builder(4, sim, &seen).build().unwrap();
    publish(&bus, &seen, 0, 60);
    bus.shutdown();
    let seen = Seen::default();
    let bus = builder(4, sim, &seen).build().unwrap();
    publish(&bus, &seen, 60, 360);
    assert_eq!(per_key(&bus, &seen, false), expected(60..360));
    crash(bus, sim, Some(usize::MAX));
}

#[test]
fn replay_after_a_crash_keeps_per_key_order_in_each_partition() {
    let sim = SimStorage::new();
    crashed_log(&sim);
    let seen = Seen::default();
    let bus = builder(4, &sim, &seen).build().unwrap();
    // `build()` returns once the replay is done: exactly the unfinished messages.
    assert_eq!(per_key(&bus, &seen, true), expected(60..360));
    seen.lock().unwrap().clear();
    publish(&bus, &seen, 360, 420);
    assert_eq!(per_key(&bus, &seen, false), expected(360..420));
    bus.shutdown();
}

#[test]
fn replay_after_a_shard_count_change_moves_whole_partitions_in_per_key_order() {
    for shards in [3, 2, 5] {
        let sim = SimStorage::new();
        crashed_log(&sim);
        let seen = Seen::default();
        let bus = builder(shards, &sim, &seen).build().unwrap();
        assert_eq!(per_key(&bus, &seen, true), expected(60..360), "{shards}");
        let m = meta(&sim);
        assert_eq!((m.shards as usize, m.generation), (shards, 1));
        // Every record sits in the shard its partition lives on now, and names it.
        for i in 0..shards {
            let dir = m.shard_dir(Path::new(DIR), i);
            let reader = Reader::open(Arc::new(sim.clone()), dir, Seq(0)).unwrap();
            for rec in reader {
                let rec = rec.unwrap();
                let (name, part) = rec.topic.split_once("\0p").expect("a partition record");
                assert_eq!((name, rec.topic_name()), ("orders", "orders"));
                let part: usize = part.parse().unwrap();
                assert_eq!(rec.partition(), Some(part));
                assert_eq!(bus.shard_of_partition(part).unwrap().index(), i);
            }
        }
        // New messages go on in order after the replayed ones.
        seen.lock().unwrap().clear();
        publish(&bus, &seen, 360, 400);
        assert_eq!(per_key(&bus, &seen, false), expected(360..400));
        bus.shutdown();
    }
}

#[test]
fn durable_keyed_publishes_are_confirmed_and_replayed() {
    let sim = SimStorage::new();
    let seen = Seen::default();
    let bus = builder(2, &sim, &seen).build().unwrap();
    for n in 0..40u64 {
        let key = n % KEYS;
        bus.publish_durable_keyed("orders", key, format!("{key}:{n}"))
            .unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut p = bus.publisher();
    for n in 40..60u64 {
        let key = n % KEYS;
        rt.block_on(p.publish_durable_keyed_async("orders", key, format!("{key}:{n}")))
            .unwrap();
        let n = n + 20;
        let key = n % KEYS;
        rt.block_on(bus.publish_durable_keyed_async("orders", key, format!("{key}:{n}")))
            .unwrap();
        p.publish_durable_keyed("orders", key + KEYS, format!("{}:{n}", key + KEYS))
            .unwrap();
    }
    bus.flush().unwrap();
    assert_eq!(seen.lock().unwrap().len(), 100);
    crash(bus, &sim, Some(usize::MAX));
    let seen = Seen::default();
    let bus = builder(2, &sim, &seen).build().unwrap();
    assert_eq!(
        seen.lock().unwrap().len(),
        100,
        "every confirmed record replayed"
    );
    per_key(&bus, &seen, true);
    bus.shutdown();
}
