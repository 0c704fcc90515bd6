//! Runtime behaviour through the public API: exactly-once delivery and per-publisher
//! order under load (more shards than cores included), fan-out, actors publishing
//! across shards, dead letters, unsubscribe, the `Handler` lifecycle, back-pressure
//! (`try_publish` → `Full`), routing, and statistics that add up.
//!
//! Every check is exact (counts, contents, order). Nothing waits on a timer for
//! correctness: tests wait on channels or condition variables; timeouts only bound a
//! test that would otherwise hang on a bug.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_quiescent_stats, bus, name_on_shard, names, Log, PATIENCE};
use shardbus::{
    Bus, Context, DeadLetterReason, Error, Handler, PublishError, ShardId, Stats, SubscriptionId,
    Supervision, Topic, TryPublishError, WaitStrategy,
};

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
                let id = bus.subscribe_actor(name.as_str(), recorder).unwrap();
                assert_eq!(id.shard(), bus.shard_of(name).unwrap());
                id.shard()
            })
            .collect()
    }

    /// Checks exactly-once delivery, per-(topic, publisher) order and the statistics.
    fn verify(&self, stats: &Stats, shards: &[ShardId]) {
        assert_eq!(self.misroutes.load(Relaxed), 0, "misrouted messages");
        assert_eq!(self.double_stops.load(Relaxed), 0, "on_stop ran twice");
        let bad: Vec<(usize, u32)> = self
            .deliveries
            .iter()
            .map(|d| d.load(Relaxed))
            .enumerate()
            .filter(|&(_, n)| n != 1)
            .take(10)
            .collect();
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
                    prev.map_or(true, |p| p < m.seq),
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

// ---------------------------------------------------------------------------------
// Actors publishing to actors
// ---------------------------------------------------------------------------------

/// One side of a ping-pong: checks its context, forwards `n + 1` until `last`.
struct Player {
    me: String,
    my_shard: ShardId,
    other: String,
    last: u64,
    seen: Arc<Mutex<Vec<u64>>>,
    faults: Arc<AtomicU64>,
    done: mpsc::Sender<u64>,
}

impl Handler<u64> for Player {
    fn handle(&mut self, ctx: &mut Context<'_, u64>, n: &u64) {
        if ctx.topic() != self.me || ctx.shard() != self.my_shard || ctx.is_replay() {
            self.faults.fetch_add(1, Relaxed);
        }
        self.seen.lock().unwrap().push(*n);
        if *n == self.last {
            self.done.send(*n).unwrap();
        } else if ctx.publish(self.other.as_str(), n + 1).is_err() {
            self.faults.fetch_add(1, Relaxed);
        }
    }
}

#[test]
fn actors_on_different_shards_play_ping_pong() {
    const LAST: u64 = 10_000;
    let bus = Bus::<u64>::builder()
        .shards(2)
        .pin_threads(false)
        .lane_capacity(2)
        .build()
        .unwrap();
    let ping = name_on_shard(&bus, "ping", 0);
    let pong = name_on_shard(&bus, "pong", 1);
    let faults = Arc::new(AtomicU64::new(0));
    let (done, finished) = mpsc::channel();
    let seen: Vec<_> = (0..2).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    for (i, (me, other)) in [(&ping, &pong), (&pong, &ping)].into_iter().enumerate() {
        let player = Player {
            me: me.clone(),
            my_shard: bus.shard_of(me).unwrap(),
            other: other.clone(),
            last: LAST,
            seen: seen[i].clone(),
            faults: faults.clone(),
            done: done.clone(),
        };
        bus.subscribe_actor(me.as_str(), player).unwrap();
    }
    bus.publish(ping.as_str(), 0).unwrap();
    assert_eq!(finished.recv_timeout(PATIENCE), Ok(LAST));
    let stats = bus.shutdown();
    assert_eq!(faults.load(Relaxed), 0, "wrong context or failed publish");
    let evens: Vec<u64> = (0..=LAST).step_by(2).collect();
    let odds: Vec<u64> = (1..=LAST).step_by(2).collect();
    assert_eq!(*seen[0].lock().unwrap(), evens);
    assert_eq!(*seen[1].lock().unwrap(), odds);
    assert_eq!(stats.shards[0].received, evens.len() as u64);
    assert_eq!(stats.shards[1].received, odds.len() as u64);
    assert_eq!(stats.handled(), LAST + 1);
    assert_quiescent_stats(&stats);
}

/// Many tokens hop around a ring of topics on 4 shards at once; lanes of 2 slots
/// force shard-to-shard overflow, and some hops stay on their shard (local queue).
struct Hopper {
    index: usize,
    ring: Arc<HopRing>,
    seen: Vec<(u32, u32)>,
}

struct HopRing {
    topics: Vec<Topic>,
    last_hop: u32,
    deliveries: Vec<AtomicU32>,
    faults: AtomicU64,
    logs: Mutex<Vec<Vec<(u32, u32)>>>,
    done: mpsc::Sender<u32>,
}

impl HopRing {
    /// Three topics per shard, ordered so that most hops change shard and two stay.
    fn new<T: Send + 'static>(
        bus: &Bus<T>,
        tokens: u32,
        last_hop: u32,
        done: mpsc::Sender<u32>,
    ) -> Self {
        assert_eq!(bus.shards(), 4);
        let mut per_shard: Vec<Vec<String>> = vec![Vec::new(); 4];
        for i in 0.. {
            let name = format!("hop-{i}");
            let s = bus.shard_of(&name).unwrap().index();
            if per_shard[s].len() < 3 {
                per_shard[s].push(name);
            }
            if per_shard.iter().all(|v| v.len() == 3) {
                break;
            }
        }
        let order = [
            (0, 0),
            (1, 0),
            (1, 1),
            (2, 0),
            (3, 0),
            (0, 1),
            (2, 1),
            (3, 1),
            (3, 2),
            (0, 2),
            (1, 2),
            (2, 2),
        ];
        let topics = order
            .iter()
            .map(|&(s, k)| bus.topic(&per_shard[s][k]).unwrap())
            .collect();
        Self {
            topics,
            last_hop,
            deliveries: (0..tokens * (last_hop + 1))
                .map(|_| AtomicU32::new(0))
                .collect(),
            faults: AtomicU64::new(0),
            logs: Mutex::new(Vec::new()),
            done,
        }
    }

    fn topic_of(&self, token: u32, hop: u32) -> usize {
        (token + hop) as usize % self.topics.len()
    }

    fn subscribe(self: &Arc<Self>, bus: &Bus<(u32, u32)>) {
        for (index, topic) in self.topics.iter().enumerate() {
            let hopper = Hopper {
                index,
                ring: self.clone(),
                seen: Vec::new(),
            };
            bus.subscribe_actor(*topic, hopper).unwrap();
        }
    }

    fn verify(&self, tokens: u32) {
        assert_eq!(
            self.faults.load(Relaxed),
            0,
            "misrouted hop or failed publish"
        );
        let bad: Vec<(usize, u32)> = self
            .deliveries
            .iter()
            .map(|d| d.load(Relaxed))
            .enumerate()
            .filter(|&(_, n)| n != 1)
            .take(10)
            .collect();
        assert!(bad.is_empty(), "hops seen other than once: {bad:?}");
        let logs = self.logs.lock().unwrap();
        assert_eq!(logs.len(), self.topics.len(), "on_stop once per actor");
        let total: usize = logs.iter().map(Vec::len).sum();
        assert_eq!(total, (tokens * (self.last_hop + 1)) as usize);
        for log in logs.iter() {
            let mut last: HashMap<u32, u32> = HashMap::new();
            for &(token, hop) in log {
                if let Some(prev) = last.insert(token, hop) {
                    assert!(prev < hop, "token {token}: hop {hop} after {prev}");
                }
            }
        }
    }
}

impl Handler<(u32, u32)> for Hopper {
    fn handle(&mut self, ctx: &mut Context<'_, (u32, u32)>, &(token, hop): &(u32, u32)) {
        let ring = &*self.ring;
        let here = ring.topics[self.index];
        if ring.topic_of(token, hop) != self.index
            || ctx.topic() != here.name()
            || ctx.shard() != here.shard()
        {
            ring.faults.fetch_add(1, Relaxed);
        }
        let id = (token * (ring.last_hop + 1) + hop) as usize;
        ring.deliveries[id].fetch_add(1, Relaxed);
        self.seen.push((token, hop));
        if hop == ring.last_hop {
            let _ = ring.done.send(token);
        } else {
            let next = ring.topics[ring.topic_of(token, hop + 1)];
            if ctx.publish(next, (token, hop + 1)).is_err() {
                ring.faults.fetch_add(1, Relaxed);
            }
        }
    }

    fn on_stop(&mut self, _: &mut Context<'_, (u32, u32)>) {
        self.ring
            .logs
            .lock()
            .unwrap()
            .push(std::mem::take(&mut self.seen));
    }
}

#[test]
fn many_chains_across_shards_with_full_lanes_complete_exactly_once() {
    const TOKENS: u32 = 64;
    const LAST_HOP: u32 = 200;
    let bus = Bus::<(u32, u32)>::builder()
        .shards(4)
        .pin_threads(false)
        .lane_capacity(2)
        .build()
        .unwrap();
    let (done, finished) = mpsc::channel();
    let ring = Arc::new(HopRing::new(&bus, TOKENS, LAST_HOP, done));
    ring.subscribe(&bus);
    for token in 0..TOKENS {
        let first = ring.topics[ring.topic_of(token, 0)];
        bus.publish(first, (token, 0)).unwrap();
    }
    let mut ended: Vec<u32> = (0..TOKENS)
        .map(|_| finished.recv_timeout(PATIENCE).unwrap())
        .collect();
    ended.sort_unstable();
    assert_eq!(ended, (0..TOKENS).collect::<Vec<_>>());
    let stats = bus.shutdown();
    ring.verify(TOKENS);
    assert_eq!(stats.received(), u64::from(TOKENS * (LAST_HOP + 1)));
    assert_eq!(stats.handled(), stats.received());
    assert_quiescent_stats(&stats);
}

#[test]
fn context_publish_checks_the_topic_and_gives_the_message_back() {
    let bus = Bus::<String>::builder()
        .shards(1)
        .pin_threads(false)
        .build()
        .unwrap();
    let outcomes = Log::new();
    let log = outcomes.clone();
    bus.subscribe("in", move |ctx: &mut Context<'_, String>, m: &String| {
        let long = "x".repeat(shardbus::MAX_TOPIC_LEN + 1);
        match ctx.publish("", format!("{m}/empty")) {
            Err(PublishError::InvalidTopic(back)) => log.push(back),
            other => log.push(format!("unexpected {other:?}")),
        }
        match ctx.try_publish(long.as_str(), format!("{m}/long")) {
            Err(TryPublishError::InvalidTopic(back)) => log.push(back),
            other => log.push(format!("unexpected {other:?}")),
        }
    })
    .unwrap();
    bus.publish("in", "a".to_owned()).unwrap();
    let stats = bus.shutdown();
    assert_eq!(outcomes.snapshot(), ["a/empty", "a/long"]);
    assert_eq!(stats.received(), 1, "nothing invalid was forwarded");
}

// ---------------------------------------------------------------------------------
// Dead letters
// ---------------------------------------------------------------------------------

type Letters = Arc<Mutex<Vec<(String, ShardId, u32)>>>;

#[test]
fn messages_to_topics_without_subscribers_become_dead_letters() {
    let letters: Letters = Arc::new(Mutex::new(Vec::new()));
    let other_reasons = Arc::new(AtomicU64::new(0));
    let (sink, odd) = (letters.clone(), other_reasons.clone());
    let bus = Bus::<u32>::builder()
        .shards(3)
        .pin_threads(false)
        .dead_letter(move |letter| match letter.reason {
            DeadLetterReason::NoSubscriber => {
                sink.lock()
                    .unwrap()
                    .push((letter.topic.to_owned(), letter.shard, *letter.message));
            }
            _ => {
                odd.fetch_add(1, Relaxed);
            }
        })
        .build()
        .unwrap();
    let ghosts = names("ghost", 10);
    let live = Arc::new(Mutex::new(Vec::new()));
    let log = live.clone();
    bus.subscribe("live", move |_: &mut Context<'_, u32>, m: &u32| {
        log.lock().unwrap().push(*m);
    })
    .unwrap();

    let mut publisher = bus.publisher();
    let mut expected_letters: HashMap<String, Vec<u32>> = HashMap::new();
    let mut expected_live = Vec::new();
    let mut unrouted_per_shard = [0u64; 3];
    for i in 0..600u32 {
        if i % 3 == 0 {
            publisher.publish("live", i).unwrap();
            expected_live.push(i);
        } else {
            let ghost = &ghosts[i as usize % ghosts.len()];
            if i % 2 == 0 {
                publisher.publish(ghost.as_str(), i).unwrap();
            } else {
                bus.publish(ghost.as_str(), i).unwrap();
            }
            expected_letters.entry(ghost.clone()).or_default().push(i);
            unrouted_per_shard[bus.shard_of(ghost).unwrap().index()] += 1;
        }
    }
    let shard_of: HashMap<String, ShardId> = ghosts
        .iter()
        .map(|g| (g.clone(), bus.shard_of(g).unwrap()))
        .collect();
    let stats = bus.shutdown();

    assert_eq!(other_reasons.load(Relaxed), 0);
    assert_eq!(*live.lock().unwrap(), expected_live);
    let letters = letters.lock().unwrap();
    let mut got: HashMap<String, Vec<u32>> = HashMap::new();
    for (topic, shard, msg) in letters.iter() {
        assert_eq!(*shard, shard_of[topic], "dead letter's shard for {topic}");
        got.entry(topic.clone()).or_default().push(*msg);
    }
    // Two sources per topic (a `Publisher` for even, `Bus::publish` for odd ids):
    // each in order; together exactly the published set.
    for (topic, want) in &expected_letters {
        let have = &got[topic];
        for parity in 0..2 {
            let have: Vec<u32> = have.iter().copied().filter(|m| m % 2 == parity).collect();
            let want: Vec<u32> = want.iter().copied().filter(|m| m % 2 == parity).collect();
            assert_eq!(have, want, "{topic}, parity {parity}");
        }
    }
    assert_eq!(got.len(), expected_letters.len());
    let unrouted: u64 = unrouted_per_shard.iter().sum();
    assert_eq!(letters.len() as u64, unrouted);
    assert_eq!(stats.unrouted(), unrouted);
    assert_eq!(stats.dead_letters(), unrouted);
    let per_shard: Vec<u64> = stats.shards.iter().map(|s| s.unrouted).collect();
    assert_eq!(per_shard, unrouted_per_shard);
    assert_eq!(stats.handled(), expected_live.len() as u64);
    assert_quiescent_stats(&stats);
}

// ---------------------------------------------------------------------------------
// Subscriptions and the Handler lifecycle
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Start,
    Msg(u32),
    Stop,
    /// A callback saw a context that does not match its subscription.
    BadContext(&'static str),
}

/// An actor that logs its lifecycle and checks its context in every callback.
struct Lifecycle {
    topic: String,
    shard: ShardId,
    id: Arc<Mutex<Option<SubscriptionId>>>,
    log: Arc<Log<Ev>>,
}

impl Lifecycle {
    fn check(&self, ctx: &Context<'_, u32>, at: &'static str) {
        let id = *self.id.lock().unwrap();
        let id_ok = id.map_or(true, |id| id == ctx.subscription());
        if ctx.topic() != self.topic || ctx.shard() != self.shard || !id_ok || ctx.is_replay() {
            self.log.push(Ev::BadContext(at));
        }
    }
}

impl Handler<u32> for Lifecycle {
    fn on_start(&mut self, ctx: &mut Context<'_, u32>) {
        // The id is not known before `subscribe` returns: remember the one we see.
        *self.id.lock().unwrap() = Some(ctx.subscription());
        self.check(ctx, "on_start");
        self.log.push(Ev::Start);
    }

    fn handle(&mut self, ctx: &mut Context<'_, u32>, m: &u32) {
        self.check(ctx, "handle");
        self.log.push(Ev::Msg(*m));
    }

    fn on_stop(&mut self, ctx: &mut Context<'_, u32>) {
        self.check(ctx, "on_stop");
        self.log.push(Ev::Stop);
    }
}

fn lifecycle_actor(bus: &Bus<u32>, topic: &str) -> (Lifecycle, Arc<Log<Ev>>) {
    let log = Log::new();
    let actor = Lifecycle {
        topic: topic.to_owned(),
        shard: bus.shard_of(topic).unwrap(),
        id: Arc::new(Mutex::new(None)),
        log: log.clone(),
    };
    (actor, log)
}

fn msgs(range: std::ops::Range<u32>) -> Vec<Ev> {
    range.map(Ev::Msg).collect()
}

#[test]
fn handler_lifecycle_runs_start_messages_stop_once_each_in_order() {
    let bus = bus(2);
    let (actor, log) = lifecycle_actor(&bus, "life");
    let seen_id = actor.id.clone();
    let id = bus.subscribe_actor("life", actor).unwrap();
    // `subscribe` returns once installed: `on_start` has run.
    assert_eq!(log.snapshot(), [Ev::Start]);
    assert_eq!(*seen_id.lock().unwrap(), Some(id));
    let mut publisher = bus.publisher();
    for i in 0..100 {
        publisher.publish("life", i).unwrap();
    }
    let stats = bus.shutdown();
    let expected: Vec<Ev> = std::iter::once(Ev::Start)
        .chain(msgs(0..100))
        .chain(std::iter::once(Ev::Stop))
        .collect();
    assert_eq!(log.snapshot(), expected);
    assert_eq!(stats.handled(), 100);
}

#[test]
fn unsubscribe_stops_delivery_runs_on_stop_and_is_not_repeatable() {
    let bus = bus(2);
    let (actor, a_log) = lifecycle_actor(&bus, "u");
    let a = bus.subscribe_actor("u", actor).unwrap();
    let b_log = Log::new();
    let b_sink = b_log.clone();
    let b = bus
        .subscribe("u", move |_: &mut Context<'_, u32>, m: &u32| {
            b_sink.push(*m)
        })
        .unwrap();
    assert_ne!(a, b);

    let mut publisher = bus.publisher();
    for i in 0..50 {
        publisher.publish("u", i).unwrap();
    }
    // Once `b` has seen message 49 its dispatch (to `a` as well) is complete.
    b_log.wait_len(50);
    bus.unsubscribe(a).unwrap();
    let at_return = a_log.snapshot();
    let expected: Vec<Ev> = std::iter::once(Ev::Start)
        .chain(msgs(0..50))
        .chain(std::iter::once(Ev::Stop))
        .collect();
    assert_eq!(
        at_return, expected,
        "on_stop ran before unsubscribe returned"
    );

    for i in 50..100 {
        publisher.publish("u", i).unwrap();
    }
    for i in 100..110 {
        bus.publish("u", i).unwrap();
    }
    match bus.unsubscribe(a) {
        Err(Error::UnknownSubscription(id)) => assert_eq!(id, a),
        other => panic!("second unsubscribe: {other:?}"),
    }

    // Unsubscribing the last subscriber makes later messages unrouted.
    let c_log = Log::new();
    let c_sink = c_log.clone();
    let c = bus
        .subscribe("solo", move |_: &mut Context<'_, u32>, m: &u32| {
            c_sink.push(*m)
        })
        .unwrap();
    bus.publish("solo", 1).unwrap();
    c_log.wait_len(1);
    bus.unsubscribe(c).unwrap();
    bus.publish("solo", 2).unwrap();
    publisher.publish("solo", 3).unwrap();

    let stats = bus.shutdown();
    assert_eq!(
        a_log.snapshot(),
        expected,
        "nothing after unsubscribe, no 2nd stop"
    );
    // `b` has two sources (the publisher's lane, the shared inbox): each in order.
    let b_seen = b_log.snapshot();
    let lane: Vec<u32> = b_seen.iter().copied().filter(|&m| m < 100).collect();
    let shared: Vec<u32> = b_seen.iter().copied().filter(|&m| m >= 100).collect();
    assert_eq!(lane, (0..100).collect::<Vec<_>>());
    assert_eq!(shared, (100..110).collect::<Vec<_>>());
    assert_eq!(c_log.snapshot(), [1]);
    assert_eq!(stats.unrouted(), 2);
    assert_eq!(stats.handled(), 111);
}

/// `Error::UnknownSubscription` is "a subscription id that this bus did not hand
/// out": an id from another bus must not end a subscription of this one.
#[test]
fn a_subscription_id_from_another_bus_is_unknown() {
    let first = bus(2);
    let second = bus(2);
    let foreign = first
        .subscribe("t", |_: &mut Context<'_, u32>, _: &u32| {})
        .unwrap();
    let log = Log::new();
    let sink = log.clone();
    let mine = second
        .subscribe("t", move |_: &mut Context<'_, u32>, m: &u32| sink.push(*m))
        .unwrap();

    let outcome = second.unsubscribe(foreign);
    second.publish("t", 7).unwrap();
    let stats = second.shutdown();
    first.shutdown();
    assert!(
        matches!(outcome, Err(Error::UnknownSubscription(id)) if id == foreign),
        "unsubscribing {foreign:?} (from another bus) on a bus whose own subscription is \
         {mine:?}: {outcome:?}"
    );
    assert_eq!(log.snapshot(), [7], "this bus's subscriber still receives");
    assert_eq!(stats.unrouted(), 0);
}

#[test]
fn a_subscription_id_for_a_shard_this_bus_lacks_is_unknown() {
    let wide = bus(8);
    let narrow = bus(2);
    let topic = name_on_shard(&wide, "far", 7);
    let id = wide
        .subscribe(topic.as_str(), |_: &mut Context<'_, u32>, _: &u32| {})
        .unwrap();
    assert_eq!(id.shard().index(), 7);
    assert!(matches!(
        narrow.unsubscribe(id),
        Err(Error::UnknownSubscription(x)) if x == id
    ));
    narrow.shutdown();
    wide.shutdown();
}

// ---------------------------------------------------------------------------------
// Back-pressure
// ---------------------------------------------------------------------------------

/// A handler that blocks on the first message until released; logs every message.
fn blocking_subscriber(
    bus: &Bus<u32>,
    topic: &str,
) -> (mpsc::Receiver<()>, mpsc::Sender<()>, Arc<Log<u32>>) {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let log = Log::new();
    let sink = log.clone();
    let mut first = true;
    bus.subscribe(topic, move |_: &mut Context<'_, u32>, m: &u32| {
        sink.push(*m);
        if std::mem::take(&mut first) {
            entered_tx.send(()).unwrap();
            // Bounded so that a failing test does not leave the shard stuck.
            let _ = release_rx.recv_timeout(PATIENCE);
        }
    })
    .unwrap();
    (entered, release, log)
}

#[test]
fn try_publish_on_a_full_inbox_gives_the_very_message_back() {
    let bus = Bus::<u32>::builder()
        .shards(1)
        .pin_threads(false)
        .capacity(2)
        .lane_capacity(2)
        .drop_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let (entered, release, log) = blocking_subscriber(&bus, "t");
    let mut publisher = bus.publisher();
    publisher.publish("t", 0).unwrap();
    entered.recv_timeout(PATIENCE).unwrap();
    // The shard is stuck in the handler: nothing drains from here on.

    // The publisher's lane (2 slots) fills up.
    let mut lane_accepted = Vec::new();
    let lane_full = (1..10)
        .find(|&m| match publisher.try_publish("t", m) {
            Ok(()) => {
                lane_accepted.push(m);
                false
            }
            Err(TryPublishError::Full(back)) => {
                assert_eq!(back, m, "Publisher::try_publish gives the message back");
                true
            }
            Err(e) => panic!("{e:?}"),
        })
        .expect("the lane never became full");
    assert!(
        !lane_accepted.is_empty() && lane_accepted.len() <= 2,
        "a lane of 2 took {lane_accepted:?}"
    );

    // The shared inbox (2 slots) is empty: it takes exactly two.
    assert_eq!(bus.try_publish("t", 100), Ok(()));
    assert_eq!(bus.try_publish("t", 101), Ok(()));
    match bus.try_publish("t", 102) {
        Err(e @ TryPublishError::Full(_)) => {
            assert!(e.is_full() && !e.is_closed());
            assert_eq!(e.into_inner(), 102);
        }
        other => panic!("Bus::try_publish on a full inbox: {other:?}"),
    }
    // A new `Publisher` must register its lane through the full inbox: `Full` too.
    let mut fresh = publisher.clone();
    assert!(matches!(
        fresh.try_publish("t", 200),
        Err(TryPublishError::Full(200))
    ));

    release.send(()).unwrap();
    // Blocking publishes of the refused messages go through once the shard drains.
    publisher.publish("t", lane_full).unwrap();
    bus.publish("t", 102).unwrap();
    fresh.publish("t", 200).unwrap();
    let stats = bus.shutdown();

    let seen = log.snapshot();
    let lane: Vec<u32> = seen.iter().copied().filter(|&m| m < 100).collect();
    let mut expected_lane = vec![0];
    expected_lane.extend(&lane_accepted);
    expected_lane.push(lane_full);
    assert_eq!(lane, expected_lane, "the publisher's messages, in order");
    let shared: Vec<u32> = seen
        .iter()
        .copied()
        .filter(|&m| (100..200).contains(&m))
        .collect();
    assert_eq!(shared, [100, 101, 102]);
    assert_eq!(seen.iter().filter(|&&m| m == 200).count(), 1);
    assert_eq!(seen.len(), expected_lane.len() + 4);
    assert_eq!(stats.received(), seen.len() as u64);
}

// ---------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------

#[test]
fn names_strings_and_topic_handles_route_alike() {
    let bus = bus(4);
    let log = Log::new();
    let sink = log.clone();
    bus.subscribe("orders", move |ctx: &mut Context<'_, u32>, m: &u32| {
        sink.push((ctx.shard(), *m));
    })
    .unwrap();
    let handle = bus.topic("orders").unwrap();
    assert_eq!(handle.name(), "orders");
    assert_eq!(handle.shard(), bus.shard_of("orders").unwrap());
    let owned = "orders".to_owned();
    bus.publish("orders", 0).unwrap();
    bus.publish(&owned, 1).unwrap();
    bus.publish(owned.clone(), 2).unwrap();
    bus.publish(handle, 3).unwrap();
    let by_ref: &Topic = &handle;
    bus.publish(by_ref, 4).unwrap();
    let stats = bus.shutdown();
    let shard = handle.shard();
    assert_eq!(
        log.snapshot(),
        (0..5).map(|m| (shard, m)).collect::<Vec<_>>()
    );
    assert_eq!(stats.unrouted(), 0);
}

#[test]
fn routing_is_the_same_for_buses_with_the_same_shard_count() {
    let a = bus(5);
    let b = bus(5);
    let mut used = [false; 5];
    for name in names("route", 500) {
        let s = a.shard_of(&name).unwrap();
        assert_eq!(s, b.shard_of(&name).unwrap(), "{name}");
        used[s.index()] = true;
    }
    assert_eq!(used, [true; 5]);
    a.shutdown();
    b.shutdown();
}

#[test]
fn topic_handles_from_a_bus_with_another_shard_count_are_rerouted() {
    let wide = bus(8);
    let narrow = bus(3);
    // Topics whose shard on the wide bus does not exist on the narrow one.
    let foreign: Vec<Topic> = (0..)
        .map(|i| wide.topic(&format!("re-{i}")).unwrap())
        .filter(|t| t.shard().index() >= 3)
        .take(5)
        .collect();
    let log = Log::new();
    for t in &foreign {
        let sink = log.clone();
        narrow
            .subscribe(t.name(), move |ctx: &mut Context<'_, u32>, m: &u32| {
                sink.push((ctx.topic().to_owned(), ctx.shard(), *m));
            })
            .unwrap();
    }
    for (i, t) in foreign.iter().enumerate() {
        narrow.publish(*t, i as u32).unwrap();
    }
    let expected: Vec<_> = foreign
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let name = t.name().to_owned();
            let shard = narrow.shard_of(&name).unwrap();
            (name, shard, i as u32)
        })
        .collect();
    let stats = narrow.shutdown();
    wide.shutdown();
    let mut seen = log.snapshot();
    seen.sort_by_key(|e| e.2);
    assert_eq!(seen, expected);
    assert_eq!(stats.unrouted(), 0);
}

/// Topic names are interned per bus (a small index per shard travels with each
/// message). One thread publishing by name to two buses in turn, with the same names
/// routed differently (2 and 3 shards) and subscribed differently, must reach each bus's
/// own subscribers: a stale per-thread cache from the other bus would misdeliver.
#[test]
fn one_thread_publishing_by_name_to_two_buses_reaches_each_bus() {
    let a = bus(2);
    let b = bus(3);
    let topics = names("both", 20);
    let (log_a, log_b) = (Log::new(), Log::new());
    // Subscribe in opposite orders, so the two buses number their topics differently.
    for name in &topics {
        let sink = log_a.clone();
        a.subscribe(name.as_str(), move |ctx: &mut Context<'_, u32>, m: &u32| {
            sink.push((ctx.topic().to_owned(), *m));
        })
        .unwrap();
    }
    for name in topics.iter().rev() {
        let sink = log_b.clone();
        b.subscribe(name.as_str(), move |ctx: &mut Context<'_, u32>, m: &u32| {
            sink.push((ctx.topic().to_owned(), *m));
        })
        .unwrap();
    }
    let mut expect_a = Vec::new();
    let mut expect_b = Vec::new();
    for round in 0..5u32 {
        for (i, name) in topics.iter().enumerate() {
            let m = round * 100 + i as u32;
            a.publish(name.as_str(), m).unwrap();
            b.publish(name.as_str(), m + 10_000).unwrap();
            expect_a.push((name.clone(), m));
            expect_b.push((name.clone(), m + 10_000));
        }
    }
    let (sa, sb) = (a.shutdown(), b.shutdown());
    assert_eq!((sa.unrouted(), sb.unrouted()), (0, 0));
    let (mut got_a, mut got_b) = (log_a.snapshot(), log_b.snapshot());
    got_a.sort_by_key(|e| e.1);
    got_b.sort_by_key(|e| e.1);
    assert_eq!(got_a, expect_a);
    assert_eq!(got_b, expect_b);
}

/// Fresh topic names first seen in the middle of traffic, from several threads at
/// once, by name and through handles: every message reaches its topic's subscriber
/// exactly once, with its name, and handles and names agree on the topic. Half the
/// names are never subscribed: the shard learns them from the publishers alone, and
/// their dead letters carry the right name.
#[test]
fn topics_first_seen_concurrently_are_interned_once() {
    const THREADS: u32 = 4;
    const TOPICS: u32 = 200;
    let dead: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let sink = dead.clone();
    let bus = Bus::<u32>::builder()
        .shards(3)
        .pin_threads(false)
        .dead_letter(move |letter| {
            assert_eq!(letter.reason, DeadLetterReason::NoSubscriber);
            let mut dead = sink.lock().unwrap();
            dead.entry(letter.topic.to_owned())
                .or_default()
                .push(*letter.message);
        })
        .build()
        .unwrap();
    let bus = Arc::new(bus);
    let counts: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    for t in (0..TOPICS).filter(|t| t % 2 == 0) {
        let sink = counts.clone();
        bus.subscribe(
            format!("fresh-{t}"),
            move |ctx: &mut Context<'_, u32>, m: &u32| {
                let mut counts = sink.lock().unwrap();
                counts.entry(ctx.topic().to_owned()).or_default().push(*m);
            },
        )
        .unwrap();
    }
    let threads: Vec<_> = (0..THREADS)
        .map(|p| {
            let bus = bus.clone();
            thread::spawn(move || {
                let mut publisher = bus.publisher();
                // Each thread walks the topics in its own order, alternating the paths.
                for k in 0..TOPICS {
                    let t = (k * 7 + p * 53) % TOPICS;
                    let name = format!("fresh-{t}");
                    let m = p * TOPICS + t;
                    match k % 3 {
                        0 => bus.publish(name.as_str(), m).unwrap(),
                        1 => publisher.publish(name.as_str(), m).unwrap(),
                        _ => publisher.publish(bus.topic(&name).unwrap(), m).unwrap(),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let Ok(bus) = Arc::try_unwrap(bus) else {
        panic!("the publisher threads have ended");
    };
    let stats = bus.shutdown();
    assert_eq!(stats.handled(), u64::from(THREADS * TOPICS / 2));
    assert_eq!(stats.unrouted(), u64::from(THREADS * TOPICS / 2));
    let (counts, dead) = (counts.lock().unwrap(), dead.lock().unwrap());
    assert_eq!(counts.len() + dead.len(), TOPICS as usize);
    for t in 0..TOPICS {
        let name = format!("fresh-{t}");
        let seen = if t % 2 == 0 { &counts } else { &dead };
        let mut got = seen[&name].clone();
        got.sort_unstable();
        let want: Vec<u32> = (0..THREADS).map(|p| p * TOPICS + t).collect();
        assert_eq!(got, want, "topic {name}");
    }
}

// ---------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------

#[test]
fn statistics_add_up_at_quiescence() {
    const SHARDS: usize = 3;
    let bus = bus(SHARDS);
    let subscribed = names("sub", 12);
    let unsubscribed = names("none", 6);
    for (i, name) in subscribed.iter().enumerate() {
        // Every third topic has two subscribers: one message, two deliveries.
        for _ in 0..(1 + usize::from(i % 3 == 0)) {
            bus.subscribe(name.as_str(), |_: &mut Context<'_, u32>, _: &u32| {})
                .unwrap();
        }
    }
    bus.subscribe_supervised("panicky", Supervision::Resume, || {
        |_: &mut Context<'_, u32>, m: &u32| {
            if (m / 5) % 10 == 0 {
                panic!("stats test: message {m}");
            }
        }
    })
    .unwrap();

    let mut received = [0u64; SHARDS];
    let (mut handled, mut unrouted, mut panics) = (0u64, 0u64, 0u64);
    let panicky = "panicky".to_owned();
    let mut publisher = bus.publisher();
    for i in 0..3_000u32 {
        let (topic, routed) = match i % 5 {
            0..=2 => (&subscribed[i as usize % subscribed.len()], true),
            3 => (&unsubscribed[i as usize % unsubscribed.len()], false),
            _ => {
                panics += u64::from((i / 5) % 10 == 0);
                (&panicky, true)
            }
        };
        if i % 2 == 0 {
            publisher.publish(topic.as_str(), i).unwrap();
        } else {
            bus.publish(topic.as_str(), i).unwrap();
        }
        received[bus.shard_of(topic).unwrap().index()] += 1;
        if routed {
            handled += 1;
        } else {
            unrouted += 1;
        }
    }
    let stats = bus.shutdown();
    assert_eq!(panics, 60, "every 10th of the 600 messages to `panicky`");
    let per_shard: Vec<u64> = stats.shards.iter().map(|s| s.received).collect();
    assert_eq!(per_shard, received, "per-shard received");
    assert_eq!(stats.received(), 3_000);
    assert_eq!(stats.handled(), handled);
    assert_eq!(stats.unrouted(), unrouted);
    assert_eq!(stats.panics(), panics);
    assert_eq!(stats.dead_letters(), unrouted + panics);
    assert_eq!(stats.dropped(), 0);
    assert_quiescent_stats(&stats);
    for (i, s) in stats.shards.iter().enumerate() {
        assert_eq!(s.shard, i);
        assert_eq!(s.dead_letters, s.unrouted + s.panics, "shard {i}");
        assert_eq!((s.restarts, s.stopped_subscriptions), (0, 0));
        assert_eq!(s.core, None, "not pinned");
        assert!(s.high_water >= s.queue_depth);
        let t = s.handler_time;
        assert!(t.samples <= s.received / 64 + 1, "one call in 64 is timed");
        assert!(t.p50_ns <= t.p99_ns && t.p99_ns <= t.p999_ns && t.p999_ns <= t.max_ns);
    }
}
