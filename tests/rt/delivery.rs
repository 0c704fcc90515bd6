//! Delivery through the public API: every message exactly once and in per-publisher
//! order under load (every publish path, more shards than cores, every wait strategy),
//! and fan-out to every subscriber of a topic.
//!
//! Every check is exact (counts, contents, order). Nothing waits on a timer for
//! correctness: tests wait on channels or condition variables; timeouts only bound a
//! test that would otherwise hang on a bug.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use crate::common::{assert_quiescent_stats, names, not_exactly_once, Log};
use shardbus::{Bus, Context, Handler, ShardId, Stats, Topic, TryPublishError, WaitStrategy};

// ---------------------------------------------------------------------------------
// Exactly once, in order, under load
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Msg {
    publisher: u32,
    seq: u32,
    topic: u32,
}

/// The plan of a load test: who publishes what to which topic, and what was seen.
struct Load {
    names: Vec<String>,
    publishers: u32,
    per_publisher: u32,
    /// Consecutive sequence numbers of one publisher that go to the same topic.
    run: u32,
    /// Deliveries per message id (`publisher * per_publisher + seq`).
    deliveries: Vec<AtomicU32>,
    /// Per topic, what its actor saw, handed over by `on_stop`.
    logs: Mutex<Vec<Option<Vec<Msg>>>>,
    /// A message at the wrong actor, a wrong `ctx.topic()`, an unknown id.
    misroutes: AtomicU64,
    /// `on_stop` ran twice for one actor.
    double_stops: AtomicU64,
}

impl Load {
    fn new(topics: usize, publishers: u32, per_publisher: u32, run: u32) -> Arc<Self> {
        let total = publishers as usize * per_publisher as usize;
        Arc::new(Self {
            names: names("load", topics),
            publishers,
            per_publisher,
            run,
            deliveries: (0..total).map(|_| AtomicU32::new(0)).collect(),
            logs: Mutex::new(vec![None; topics]),
            misroutes: AtomicU64::new(0),
            double_stops: AtomicU64::new(0),
        })
    }

    fn total(&self) -> u64 {
        u64::from(self.publishers) * u64::from(self.per_publisher)
    }

    /// The topic of a publisher's `seq`-th message: runs of `run` messages, spread
    /// over every topic, different publishers interleaved.
    fn topic_of(&self, publisher: u32, seq: u32) -> u32 {
        let topics = self.names.len() as u64;
        ((u64::from(seq / self.run) * 7 + u64::from(publisher) * 13) % topics) as u32
    }

    fn msg(&self, publisher: u32, seq: u32) -> Msg {
        Msg {
            publisher,
            seq,
            topic: self.topic_of(publisher, seq),
        }
    }

    /// Subscribes one recorder per topic; returns each topic's shard.
    fn subscribe(self: &Arc<Self>, bus: &Bus<Msg>) -> Vec<ShardId> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let recorder = Recorder {
                    topic: i as u32,
                    log: Vec::new(),
                    load: self.clone(),
                };
                let id = bus.subscribe(name.as_str(), recorder).unwrap();
                assert_eq!(id.shard(), bus.shard_of(name).unwrap());
                id.shard()
            })
            .collect()
    }

    /// Checks exactly-once delivery, per-(topic, publisher) order and the statistics.
    fn verify(&self, stats: &Stats, shards: &[ShardId]) {
        assert_eq!(self.misroutes.load(Relaxed), 0, "misrouted messages");
        assert_eq!(self.double_stops.load(Relaxed), 0, "on_stop ran twice");
        let bad = not_exactly_once(&self.deliveries);
        assert!(
            bad.is_empty(),
            "message ids delivered other than once (id, times): {bad:?}"
        );

        let logs = self.logs.lock().unwrap();
        let mut total = 0u64;
        let mut per_shard = vec![0u64; stats.shards.len()];
        for (topic, log) in logs.iter().enumerate() {
            let log = log
                .as_ref()
                .unwrap_or_else(|| panic!("on_stop did not run for topic {topic}"));
            let mut last: Vec<Option<u32>> = vec![None; self.publishers as usize];
            for m in log {
                assert_eq!(m.topic as usize, topic);
                let prev = &mut last[m.publisher as usize];
                assert!(
                    prev.is_none_or(|p| p < m.seq),
                    "topic {topic}, publisher {}: seq {} after {prev:?}",
                    m.publisher,
                    m.seq
                );
                *prev = Some(m.seq);
            }
            total += log.len() as u64;
            per_shard[shards[topic].index()] += log.len() as u64;
        }
        assert_eq!(total, self.total());

        // What each shard must have received, from the plan alone.
        let mut planned = vec![0u64; stats.shards.len()];
        for p in 0..self.publishers {
            for seq in 0..self.per_publisher {
                planned[shards[self.topic_of(p, seq) as usize].index()] += 1;
            }
        }
        assert_eq!(per_shard, planned);
        let received: Vec<u64> = stats.shards.iter().map(|s| s.received).collect();
        assert_eq!(received, planned, "per-shard received");
        assert_eq!(stats.received(), self.total());
        assert_eq!(stats.handled(), self.total());
        assert_eq!(stats.unrouted(), 0);
        assert_eq!(stats.panics(), 0);
        assert_eq!(stats.dead_letters(), 0);
        assert_quiescent_stats(stats);
    }
}

struct Recorder {
    topic: u32,
    log: Vec<Msg>,
    load: Arc<Load>,
}

impl Handler<Msg> for Recorder {
    fn handle(&mut self, ctx: &mut Context<'_, Msg>, m: &Msg) {
        let load = &*self.load;
        let id = m.publisher as usize * load.per_publisher as usize + m.seq as usize;
        match load.deliveries.get(id) {
            Some(d) if m.seq < load.per_publisher => {
                d.fetch_add(1, Relaxed);
            }
            _ => {
                load.misroutes.fetch_add(1, Relaxed);
            }
        }
        if m.topic != self.topic || ctx.topic() != load.names[self.topic as usize] {
            load.misroutes.fetch_add(1, Relaxed);
        }
        self.log.push(*m);
    }

    fn on_stop(&mut self, _: &mut Context<'_, Msg>) {
        let mut logs = self.load.logs.lock().unwrap();
        let slot = &mut logs[self.topic as usize];
        if slot.is_some() {
            self.load.double_stops.fetch_add(1, Relaxed);
        }
        *slot = Some(std::mem::take(&mut self.log));
    }
}

/// Each publisher thread with its own `Publisher`, pre-resolved `Topic` handles.
fn run_publishers(bus: &Bus<Msg>, load: &Arc<Load>) {
    let topics: Vec<Topic> = load.names.iter().map(|n| bus.topic(n).unwrap()).collect();
    thread::scope(|s| {
        for p in 0..load.publishers {
            let mut publisher = bus.publisher();
            let (load, topics) = (&**load, &topics);
            s.spawn(move || {
                for seq in 0..load.per_publisher {
                    let m = load.msg(p, seq);
                    publisher.publish(topics[m.topic as usize], m).unwrap();
                }
            });
        }
    });
}

/// The acceptance test: 1,000,000 messages, 4 publisher threads with their own
/// `Publisher`, 1,000 topics on 4 shards (oversubscribed on a 2-core machine).
#[test]
fn one_million_messages_exactly_once_in_order() {
    let started = Instant::now();
    let load = Load::new(1_000, 4, 250_000, 1);
    let bus = Bus::<Msg>::builder()
        .shards(4)
        .pin_threads(false)
        .build()
        .unwrap();
    let shards = load.subscribe(&bus);
    run_publishers(&bus, &load);
    let stats = bus.shutdown();
    load.verify(&stats, &shards);
    eprintln!("1M messages: {:?}", started.elapsed());
}

/// `Bus::publish` and `Bus::try_publish` from several threads sharing `&Bus`, mixed
/// with `Publisher::publish_batch` (batches larger than a lane included).
#[test]
fn shared_bus_publish_and_batches_exactly_once_in_order() {
    // Publishers 0, 1: `Bus::publish` by name (hashing on every call); 2: `Bus::
    // try_publish` retrying on `Full`; 3, 4: `publish_batch`, runs of 300 messages
    // per topic cut into batches of 1 to 150 (the lane holds 64).
    let load = Load::new(500, 5, 40_000, 300);
    let bus = Bus::<Msg>::builder()
        .shards(4)
        .pin_threads(false)
        .capacity(256)
        .lane_capacity(64)
        .build()
        .unwrap();
    let shards = load.subscribe(&bus);
    let topics: Vec<Topic> = load.names.iter().map(|n| bus.topic(n).unwrap()).collect();
    let fulls = AtomicU64::new(0);
    thread::scope(|s| {
        let (bus, load, topics, fulls) = (&bus, &*load, &topics, &fulls);
        for p in 0..2 {
            s.spawn(move || {
                for seq in 0..load.per_publisher {
                    let m = load.msg(p, seq);
                    let name = &load.names[m.topic as usize];
                    if seq % 2 == 0 {
                        bus.publish(name.as_str(), m).unwrap();
                    } else {
                        bus.publish(name, m).unwrap();
                    }
                }
            });
        }
        s.spawn(move || {
            for seq in 0..load.per_publisher {
                let mut m = load.msg(2, seq);
                loop {
                    match bus.try_publish(topics[m.topic as usize], m) {
                        Ok(()) => break,
                        Err(TryPublishError::Full(back)) => {
                            assert_eq!(back, m, "Full gives the very message back");
                            m = back;
                            fulls.fetch_add(1, Relaxed);
                            thread::yield_now();
                        }
                        Err(e) => panic!("try_publish: {e:?}"),
                    }
                }
            }
        });
        for p in 3..5 {
            let mut publisher = bus.publisher();
            s.spawn(move || {
                let sizes = [1, 7, 64, 150, 3, 75];
                let mut seq = 0;
                let mut k = 0;
                while seq < load.per_publisher {
                    let topic = load.topic_of(p, seq);
                    let run_end = (seq / load.run + 1) * load.run;
                    let end = (seq + sizes[k % sizes.len()])
                        .min(run_end)
                        .min(load.per_publisher);
                    k += 1;
                    let mut batch: Vec<Msg> = (seq..end).map(|q| load.msg(p, q)).collect();
                    publisher
                        .publish_batch(topics[topic as usize], &mut batch)
                        .unwrap();
                    assert!(batch.is_empty(), "an accepted batch is moved out");
                    seq = end;
                }
            });
        }
    });
    let stats = bus.shutdown();
    load.verify(&stats, &shards);
    eprintln!("try_publish met Full {} times", fulls.load(Relaxed));
}

/// 8 shards on a 2-core machine, pinned (pinning wraps around the cores).
#[test]
fn more_shards_than_cores_exactly_once_in_order() {
    let load = Load::new(200, 4, 50_000, 1);
    let bus = Bus::<Msg>::builder()
        .shards(8)
        .pin_threads(true)
        .build()
        .unwrap();
    let shards = load.subscribe(&bus);
    let used: std::collections::BTreeSet<_> = shards.iter().collect();
    assert_eq!(used.len(), 8, "200 topics cover all 8 shards");
    run_publishers(&bus, &load);
    let stats = bus.shutdown();
    assert_eq!(stats.shards.len(), 8);
    load.verify(&stats, &shards);
}

#[test]
fn every_wait_strategy_delivers_exactly_once_in_order() {
    for wait in [
        WaitStrategy::Park,
        WaitStrategy::Yield,
        WaitStrategy::BusySpin,
    ] {
        let load = Load::new(50, 2, 10_000, 1);
        let bus = Bus::<Msg>::builder()
            .shards(2)
            .pin_threads(false)
            .wait_strategy(wait)
            .build()
            .unwrap();
        let shards = load.subscribe(&bus);
        run_publishers(&bus, &load);
        let stats = bus.shutdown();
        load.verify(&stats, &shards);
    }
}

// ---------------------------------------------------------------------------------
// Fan-out
// ---------------------------------------------------------------------------------

#[test]
fn fan_out_gives_every_subscriber_every_message_in_publish_order() {
    const PER_SOURCE: u32 = 5_000;
    let bus = Bus::<(u32, u32)>::builder()
        .shards(2)
        .pin_threads(false)
        .capacity(64)
        .build()
        .unwrap();
    let logs: Vec<Arc<Log<(u32, u32)>>> = (0..3).map(|_| Log::new()).collect();
    for log in &logs {
        let log = log.clone();
        bus.subscribe(
            "fan",
            move |ctx: &mut Context<'_, (u32, u32)>, m: &(u32, u32)| {
                assert_eq!(ctx.topic(), "fan");
                log.push(*m);
            },
        )
        .unwrap();
    }
    thread::scope(|s| {
        // Sources 0 and 1: their own `Publisher`; source 2: `Bus::publish`.
        for source in 0..2 {
            let mut publisher = bus.publisher();
            s.spawn(move || {
                for seq in 0..PER_SOURCE {
                    publisher.publish("fan", (source, seq)).unwrap();
                }
            });
        }
        let bus = &bus;
        s.spawn(move || {
            for seq in 0..PER_SOURCE {
                bus.publish("fan", (2, seq)).unwrap();
            }
        });
    });
    let stats = bus.shutdown();
    let logs: Vec<Vec<(u32, u32)>> = logs.iter().map(|l| l.snapshot()).collect();
    // One dispatch per message reaches every subscriber: identical sequences.
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[0], logs[2]);
    for source in 0..3 {
        let seqs: Vec<u32> = logs[0]
            .iter()
            .filter(|m| m.0 == source)
            .map(|m| m.1)
            .collect();
        assert_eq!(
            seqs,
            (0..PER_SOURCE).collect::<Vec<_>>(),
            "source {source}: every message once, in publish order"
        );
    }
    assert_eq!(logs[0].len(), 3 * PER_SOURCE as usize);
    // `handled` counts messages, not deliveries.
    assert_eq!(stats.received(), u64::from(3 * PER_SOURCE));
    assert_eq!(stats.handled(), u64::from(3 * PER_SOURCE));
    assert_quiescent_stats(&stats);
}
