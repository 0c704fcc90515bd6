//! A persistent bus on `SimStorage` for the persistence tests: `TOPICS` topics whose
//! handlers record what they saw (`Seen`), durable publishing, a simulated crash, and
//! the per-topic view of what was seen against what was published.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardbus::log::{read_meta, SimStorage};
use shardbus::{Builder, Bus, Context, Persistence, ShardId};

use super::PATIENCE;

/// Where the bus lives in the simulated storage.
pub const DIR: &str = "/bus";
/// The topics the builder subscribes; message `n` goes to `topic(n)`.
pub const TOPICS: usize = 20;

pub fn topic(i: usize) -> String {
    format!("t{:02}", i % TOPICS)
}

/// (topic, message, replay?) as the handlers saw them, in order per shard.
pub type Seen = Arc<Mutex<Vec<(String, String, bool)>>>;

/// No checkpoint during the test: only a clean shutdown writes one.
pub fn persistence(sim: &SimStorage) -> Persistence {
    Persistence::new(DIR)
        .storage(Arc::new(sim.clone()))
        .checkpoint_every(u64::MAX, Duration::from_secs(3600))
}

/// A builder of `shards` unpinned shards persisted by `p`, with one handler per topic
/// that records into `seen`.
pub fn builder(shards: usize, p: Persistence, seen: &Seen) -> Builder<String> {
    let mut b = Bus::<String>::builder()
        .shards(shards)
        .pin_threads(false)
        .persist(p);
    for t in 0..TOPICS {
        let seen = seen.clone();
        b = b.subscribe(
            topic(t),
            move |ctx: &mut Context<'_, String>, m: &String| {
                seen.lock()
                    .unwrap()
                    .push((ctx.topic().to_owned(), m.clone(), ctx.is_replay()));
            },
        );
    }
    b
}

/// An empty record of what the handlers saw.
pub fn seen() -> Seen {
    Arc::new(Mutex::new(Vec::new()))
}

/// Publishes `n` numbered messages from `from` round-robin over the topics, durably.
pub fn publish(bus: &Bus<String>, from: usize, n: usize) {
    let mut p = bus.publisher();
    for i in from..from + n {
        p.publish(topic(i), i.to_string()).unwrap();
    }
    p.wait_durable().unwrap();
}

/// Waits until the handlers have seen `n` messages.
pub fn wait_seen(seen: &Seen, n: usize) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while seen.lock().unwrap().len() < n {
        assert!(std::time::Instant::now() < deadline, "handlers stalled");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A crash of the process: the bus's threads are abandoned (never shut down, no final
/// checkpoint), and `crash` (power loss or not) kills their file handles.
pub fn crash(bus: Bus<String>, sim: &SimStorage, tear: Option<usize>) {
    std::mem::forget(bus);
    sim.crash(tear);
}

/// Every message number the handlers saw, per topic, in order; and whether all were
/// replays.
pub fn per_topic(seen: &Seen) -> (Vec<Vec<usize>>, bool) {
    let mut by = vec![Vec::new(); TOPICS];
    let mut all_replay = true;
    for (t, m, r) in seen.lock().unwrap().iter() {
        let n: usize = m.parse().unwrap();
        assert_eq!(*t, topic(n));
        by[n % TOPICS].push(n);
        all_replay &= *r;
    }
    (by, all_replay)
}

/// What `per_topic` gives when the handlers saw exactly the messages of `range`.
pub fn expected_per_topic(range: std::ops::Range<usize>) -> Vec<Vec<usize>> {
    let mut by = vec![Vec::new(); TOPICS];
    for n in range {
        by[n % TOPICS].push(n);
    }
    by
}

/// The bus directory's meta file.
pub fn meta(sim: &SimStorage) -> shardbus::log::BusMeta {
    read_meta(sim, Path::new(DIR)).unwrap().unwrap()
}

/// The id of shard 0 (of a one-shard bus), for `Bus::log_error`.
pub fn first_shard() -> ShardId {
    Bus::<String>::builder()
        .shards(1)
        .build()
        .unwrap()
        .shard_of("any")
        .unwrap()
}
