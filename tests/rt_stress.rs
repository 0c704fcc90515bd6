//! A randomized whole-runtime stress test.
//!
//! Many topics (a few hot), a few partitioned topics published to by key, publishers on
//! several threads using every publish path (plain and keyed),
//! actors that publish onward to other shards, subscribes and unsubscribes, panics under
//! every supervision policy, and a shutdown in the middle of the traffic. A quarter of
//! the topics (`p.{group}.{i}`) have no plain subscriber: they are served by pattern
//! subscriptions (`p.{group}.*`, one per group), subscribed and unsubscribed in the
//! churn like the plain ones, so each message still has at most one actor. A checker then
//! verifies, for every message, that it was handled (delivered, panicked on, or
//! dead-lettered) exactly once, or given back to its publisher with `Closed`/`Full` and
//! never handled; that per-topic order (per key on a partitioned topic) holds per
//! publisher; and that the statistics add up.
//!
//! Seeded and printing its seed: `SHARDBUS_STRESS_SEED=N` replays a run,
//! `SHARDBUS_STRESS_SECS=S` runs rounds for about S seconds (default 20).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardbus::{
    Bus, Context, DeadLetterReason, Handler, PublishError, Supervision, Topic, TryPublishError,
    WaitStrategy,
};

/// xorshift64*: small, seeded, good enough to pick actions.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    id: u64,
    /// Who published it: an external source or a topic's actor (onward).
    src: u32,
    /// Per (src, topic) sequence number.
    seq: u64,
    /// The actor panics on this message.
    poison: bool,
    /// Onward hops still to make.
    hops: u8,
    /// The key of a keyed publish to a partitioned topic (`k.N`); 0 otherwise.
    key: u64,
}

/// Partitioned topics `k.0 .. k.KTOPICS` and the keys published to them.
const KTOPICS: usize = 3;
const KEYS: u64 = 8;
/// The checker's topic number of (partitioned topic `k`, key): per-key order is checked
/// as per-topic order is.
const KBASE: u32 = 1_000_000;

fn keyed_topic(k: usize, key: u64) -> u32 {
    KBASE + (k as u64 * KEYS + key) as u32
}

/// The checker's topic number of a message seen on topic `name`.
fn checker_topic(name: &str, msg: &Msg) -> u32 {
    if let Some(k) = name.strip_prefix("k.") {
        return keyed_topic(k.parse().expect("topic name"), msg.key);
    }
    topic_index(name)
}

/// What happened to a message, as seen on its shard thread, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Delivered,
    Panicked,
    Unrouted,
}

/// (topic, src, seq, id, what).
type Event = (u32, u32, u64, u64, Seen);

struct Log {
    /// Per shard: what it saw, in order.
    seen: Vec<Mutex<Vec<Event>>>,
    /// Ids accepted by the bus (publish returned `Ok`), external or onward.
    accepted: Mutex<Vec<u64>>,
    /// Ids given back with `Closed`/`Full`.
    returned: Mutex<Vec<u64>>,
    next_id: AtomicU64,
}

struct World {
    topics: Vec<Topic>,
    log: Arc<Log>,
    /// Onward sequence numbers: per (source topic, target topic), used only on the
    /// source topic's shard thread.
    onward_seq: Vec<Mutex<HashMap<u32, u64>>>,
    sources: u32,
}

/// The index of `s.{i}` or `p.{group}.{i}`: its last token.
fn topic_index(name: &str) -> u32 {
    name.rsplit('.')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("topic name")
}

/// Pattern groups: topic `i` with `i % 4 == 3` is `p.{group}.{i}`, served only by the
/// pattern `p.{group}.*`.
const GROUPS: usize = 4;

fn pattern_group(i: usize) -> Option<usize> {
    (i % 4 == 3).then_some((i / 4) % GROUPS)
}

fn topic_name(i: usize) -> String {
    match pattern_group(i) {
        Some(g) => format!("p.{g}.{i}"),
        None => format!("s.{i}"),
    }
}

fn subscribe_group(
    bus: &Bus<Msg>,
    world: &Arc<World>,
    group: usize,
    rng: &mut Rng,
) -> shardbus::SubscriptionId {
    let mut seeds = Rng(rng.next() | 1);
    let w = world.clone();
    bus.subscribe_pattern(&format!("p.{group}.*"), policy(rng.next()), move || Actor {
        world: w.clone(),
        rng: Rng(seeds.next() | 1),
    })
    .expect("subscribe a pattern on a running bus")
}

struct Actor {
    world: Arc<World>,
    rng: Rng,
}

impl Handler<Msg> for Actor {
    fn handle(&mut self, ctx: &mut Context<'_, Msg>, msg: &Msg) {
        let topic = checker_topic(ctx.topic(), msg);
        if msg.poison {
            panic!("poisoned message {}", msg.id);
        }
        let shard = ctx.shard().index();
        self.world.log.seen[shard].lock().unwrap().push((
            topic,
            msg.src,
            msg.seq,
            msg.id,
            Seen::Delivered,
        ));
        if msg.hops == 0 || topic >= KBASE {
            return;
        }
        let to = self.rng.below(self.world.topics.len() as u64) as u32;
        let seq = {
            let mut seqs = self.world.onward_seq[topic as usize].lock().unwrap();
            let s = seqs.entry(to).or_insert(0);
            *s += 1;
            *s
        };
        let onward = Msg {
            id: self.world.log.next_id.fetch_add(1, Ordering::Relaxed),
            src: self.world.sources + topic,
            seq,
            poison: self.rng.below(50) == 0,
            hops: msg.hops - 1,
            key: 0,
        };
        let id = onward.id;
        match ctx.publish(self.world.topics[to as usize], onward) {
            Ok(()) => self.world.log.accepted.lock().unwrap().push(id),
            // Closed at shutdown; Full past the shard's overflow limit (actors that
            // publish onward faster than their targets drain).
            Err(PublishError::Closed(back) | PublishError::Full(back)) => {
                assert_eq!(back.id, id, "the very message comes back");
                self.world.log.returned.lock().unwrap().push(id);
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
}

fn policy(r: u64) -> Supervision {
    match r % 3 {
        0 => Supervision::Resume,
        1 => Supervision::Restart,
        _ => Supervision::Stop,
    }
}

fn subscribe(
    bus: &Bus<Msg>,
    world: &Arc<World>,
    topic: usize,
    rng: &mut Rng,
) -> shardbus::SubscriptionId {
    let seed = rng.next() | 1;
    let w = world.clone();
    bus.subscribe_supervised(world.topics[topic], policy(rng.next()), move || Actor {
        world: w.clone(),
        rng: Rng(seed),
    })
    .expect("subscribe on a running bus")
}

fn subscribe_keyed(
    bus: &Bus<Msg>,
    world: &Arc<World>,
    k: usize,
    rng: &mut Rng,
) -> shardbus::PartitionedSubscription {
    let seed = rng.next() | 1;
    let w = world.clone();
    bus.subscribe_partitioned(&format!("k.{k}"), policy(rng.next()), move |part| Actor {
        world: w.clone(),
        rng: Rng(seed ^ part as u64),
    })
    .expect("subscribe on a running bus")
}

fn one_round(seed: u64) {
    let mut rng = Rng(seed | 1);
    let shards = 1 + rng.below(4) as usize;
    let topics_n = 16 + rng.below(200) as usize;
    let threads = 2 + rng.below(3) as u32;
    let sources = threads * 2;
    let wait = [WaitStrategy::Park, WaitStrategy::Yield, WaitStrategy::Park][rng.below(3) as usize];
    let log = Arc::new(Log {
        seen: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
        accepted: Mutex::new(Vec::new()),
        returned: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(0),
    });
    let dl_log = log.clone();
    let bus: Bus<Msg> = Bus::builder()
        .shards(shards)
        .capacity(1 << (1 + rng.below(6)))
        .lane_capacity(1 << (1 + rng.below(6)))
        .pin_threads(false)
        .wait_strategy(wait)
        .dead_letter(move |dl: shardbus::DeadLetter<'_, Msg>| {
            let topic = checker_topic(dl.topic, dl.message);
            let what = match dl.reason {
                DeadLetterReason::NoSubscriber => Seen::Unrouted,
                DeadLetterReason::Panicked { .. } => Seen::Panicked,
                _ => unreachable!(),
            };
            let m = dl.message;
            dl_log.seen[dl.shard.index()]
                .lock()
                .unwrap()
                .push((topic, m.src, m.seq, m.id, what));
        })
        .build()
        .unwrap();
    let topics: Vec<Topic> = (0..topics_n)
        .map(|i| bus.topic(&topic_name(i)).unwrap())
        .collect();
    let world = Arc::new(World {
        topics,
        log: log.clone(),
        onward_seq: (0..topics_n).map(|_| Mutex::new(HashMap::new())).collect(),
        sources,
    });
    let mut subs: Vec<Option<shardbus::SubscriptionId>> = (0..topics_n)
        .map(|t| {
            (pattern_group(t).is_none() && rng.below(10) != 0)
                .then(|| subscribe(&bus, &world, t, &mut rng))
        })
        .collect();
    let mut groups: Vec<Option<shardbus::SubscriptionId>> = (0..GROUPS)
        .map(|g| (rng.below(10) != 0).then(|| subscribe_group(&bus, &world, g, &mut rng)))
        .collect();
    let knames: Vec<String> = (0..KTOPICS).map(|k| format!("k.{k}")).collect();
    let mut ksubs: Vec<Option<shardbus::PartitionedSubscription>> = (0..KTOPICS)
        .map(|k| (rng.below(10) != 0).then(|| subscribe_keyed(&bus, &world, k, &mut rng)))
        .collect();

    let stop = AtomicBool::new(false);
    let hot = 3.min(topics_n);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (bus, world, stop, knames) = (&bus, &world, &stop, &knames);
            let mut rng = Rng(rng.next() | 1);
            s.spawn(move || {
                let mut publisher = bus.publisher();
                let mut seqs: HashMap<(u32, u32), u64> = HashMap::new();
                let mut batch = Vec::new();
                let mut closed = false;
                while !closed {
                    let mut topic = if rng.below(4) == 0 {
                        rng.below(hot as u64)
                    } else {
                        rng.below(topics_n as u64)
                    } as u32;
                    // One publish in five is keyed, to a partitioned topic.
                    let keyed = (rng.below(5) == 0)
                        .then(|| (rng.below(KTOPICS as u64) as usize, rng.below(KEYS)));
                    if let Some((k, key)) = keyed {
                        topic = keyed_topic(k, key);
                    }
                    let via_shared = rng.below(4) == 0;
                    let src = t * 2 + u32::from(via_shared);
                    let mut make = |rng: &mut Rng| {
                        let seq = seqs.entry((src, topic)).or_insert(0);
                        *seq += 1;
                        Msg {
                            id: world.log.next_id.fetch_add(1, Ordering::Relaxed),
                            src,
                            seq: *seq,
                            poison: rng.below(100) == 0,
                            hops: rng.below(3) as u8,
                            key: keyed.map_or(0, |(_, key)| key),
                        }
                    };
                    let target = world.topics[if keyed.is_some() { 0 } else { topic as usize }];
                    let mut accepted = Vec::new();
                    let mut returned = Vec::new();
                    match (via_shared, rng.below(3)) {
                        (true, 0) => {
                            let m = make(&mut rng);
                            let id = m.id;
                            let r = match keyed {
                                None => bus.try_publish(target, m),
                                Some((k, key)) => bus.try_publish_keyed(&knames[k], key, m),
                            };
                            match r {
                                Ok(()) => accepted.push(id),
                                Err(TryPublishError::Full(b)) | Err(TryPublishError::Closed(b)) => {
                                    assert_eq!(b.id, id);
                                    returned.push(id);
                                    // A refused message leaves a gap in the sequence,
                                    // which order checking allows (strictly increasing).
                                }
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                        (true, _) => {
                            let m = make(&mut rng);
                            let id = m.id;
                            let r = match keyed {
                                None => bus.publish(target, m),
                                Some((k, key)) => bus.publish_keyed(&knames[k], key, m),
                            };
                            match r {
                                Ok(()) => accepted.push(id),
                                Err(PublishError::Closed(b)) => {
                                    assert_eq!(b.id, id);
                                    returned.push(id);
                                    closed = true;
                                }
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                        (false, 0) => {
                            let m = make(&mut rng);
                            let id = m.id;
                            let r = match keyed {
                                None => publisher.try_publish(target, m),
                                Some((k, key)) => publisher.try_publish_keyed(&knames[k], key, m),
                            };
                            match r {
                                Ok(()) => accepted.push(id),
                                Err(TryPublishError::Full(b)) | Err(TryPublishError::Closed(b)) => {
                                    assert_eq!(b.id, id);
                                    returned.push(id);
                                }
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                        (false, 1) => {
                            let m = make(&mut rng);
                            let id = m.id;
                            let r = match keyed {
                                None => publisher.publish(target, m),
                                Some((k, key)) => publisher.publish_keyed(&knames[k], key, m),
                            };
                            match r {
                                Ok(()) => accepted.push(id),
                                Err(PublishError::Closed(b)) => {
                                    assert_eq!(b.id, id);
                                    returned.push(id);
                                    closed = true;
                                }
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                        (false, _) => {
                            batch.clear();
                            for _ in 0..1 + rng.below(20) {
                                batch.push(make(&mut rng));
                            }
                            let ids: Vec<u64> = batch.iter().map(|m| m.id).collect();
                            let r = match keyed {
                                None => publisher.publish_batch(target, &mut batch),
                                Some((k, key)) => {
                                    publisher.publish_batch_keyed(&knames[k], key, &mut batch)
                                }
                            };
                            match r {
                                Ok(()) => accepted.extend(ids),
                                Err(PublishError::Closed(())) => {
                                    let left: Vec<u64> = batch.iter().map(|m| m.id).collect();
                                    // What is left is a suffix of the batch, in order.
                                    assert_eq!(left[..], ids[ids.len() - left.len()..]);
                                    accepted.extend(&ids[..ids.len() - left.len()]);
                                    returned.extend(left);
                                    closed = true;
                                }
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                    }
                    world.log.accepted.lock().unwrap().extend(accepted);
                    world.log.returned.lock().unwrap().extend(returned);
                    if stop.load(Ordering::Relaxed) && rng.below(64) == 0 {
                        break;
                    }
                }
            });
        }
        // Churn subscriptions while traffic flows, then shut down in its middle.
        let until = Instant::now() + Duration::from_millis(100 + rng.below(400));
        while Instant::now() < until {
            if rng.below(8) == 0 {
                let k = rng.below(KTOPICS as u64) as usize;
                match ksubs[k].take() {
                    // A `Stop` may already have removed some of its partitions.
                    Some(sub) => bus.unsubscribe_partitioned(&sub).expect("unsubscribe"),
                    None => ksubs[k] = Some(subscribe_keyed(&bus, &world, k, &mut rng)),
                }
                continue;
            }
            let t = rng.below(topics_n as u64) as usize;
            if let Some(g) = pattern_group(t) {
                match groups[g].take() {
                    // Every shard removes it with its actors (`Stop` may have removed
                    // some already, or all: then it is unknown).
                    Some(id) => match bus.unsubscribe(id) {
                        Ok(()) | Err(shardbus::Error::UnknownSubscription(_)) => {}
                        Err(e) => panic!("{e:?}"),
                    },
                    None => groups[g] = Some(subscribe_group(&bus, &world, g, &mut rng)),
                }
                std::thread::sleep(Duration::from_millis(rng.below(5)));
                continue;
            }
            match subs[t].take() {
                Some(id) => {
                    // `Stop` may already have removed it after a panic.
                    match bus.unsubscribe(id) {
                        Ok(()) | Err(shardbus::Error::UnknownSubscription(_)) => {}
                        Err(e) => panic!("{e:?}"),
                    }
                }
                None => subs[t] = Some(subscribe(&bus, &world, t, &mut rng)),
            }
            std::thread::sleep(Duration::from_millis(rng.below(5)));
        }
        stop.store(true, Ordering::Relaxed);
        // Scoped publishers stop when they meet `Closed` (or soon after `stop`).
    });
    let stats = bus.shutdown();

    // Every message: handled exactly once, or given back and never handled.
    let accepted = std::mem::take(&mut *log.accepted.lock().unwrap());
    let returned = std::mem::take(&mut *log.returned.lock().unwrap());
    let total = log.next_id.load(Ordering::Relaxed) as usize;
    let mut handled = vec![0u8; total];
    let mut kinds = (0u64, 0u64, 0u64);
    let mut through_patterns = 0u64;
    for shard in &log.seen {
        for &(topic, _, _, id, what) in shard.lock().unwrap().iter() {
            handled[id as usize] += 1;
            if what == Seen::Delivered && topic < KBASE && pattern_group(topic as usize).is_some() {
                through_patterns += 1;
            }
            match what {
                Seen::Delivered => kinds.0 += 1,
                Seen::Panicked => kinds.1 += 1,
                Seen::Unrouted => kinds.2 += 1,
            }
        }
    }
    let mut fate = vec![0u8; total];
    for &id in &accepted {
        fate[id as usize] += 1;
        assert_eq!(
            handled[id as usize], 1,
            "seed {seed}: accepted message {id} handled {} times",
            handled[id as usize]
        );
    }
    for &id in &returned {
        fate[id as usize] += 1;
        assert_eq!(
            handled[id as usize], 0,
            "seed {seed}: returned message {id} was handled"
        );
    }
    // Messages made but neither accepted nor returned do not exist (every `make`
    // ends in one of the two), except ids burnt by a panicking actor before its
    // publish: those were never published.
    assert!(
        fate.iter().all(|&f| f <= 1),
        "seed {seed}: a message both accepted and returned"
    );

    // Per topic, per publisher: strictly increasing sequence numbers.
    for shard in &log.seen {
        let mut last: HashMap<(u32, u32), u64> = HashMap::new();
        for &(topic, src, seq, id, _) in shard.lock().unwrap().iter() {
            if let Some(prev) = last.insert((topic, src), seq) {
                assert!(
                    seq > prev,
                    "seed {seed}: topic {topic} src {src}: seq {seq} after {prev} (id {id})"
                );
            }
        }
    }

    // The keyed publishes were exercised (checked per key above).
    let keyed_seen: usize = log
        .seen
        .iter()
        .map(|s| s.lock().unwrap().iter().filter(|e| e.0 >= KBASE).count())
        .sum();
    assert!(
        keyed_seen > 0,
        "seed {seed}: no keyed message reached a shard"
    );
    println!(
        "  {} messages delivered, {through_patterns} through patterns, {keyed_seen} keyed",
        kinds.0
    );

    // The statistics add up.
    assert_eq!(stats.received(), accepted.len() as u64, "seed {seed}");
    assert_eq!(stats.dropped(), 0, "seed {seed}");
    assert_eq!(
        stats.received(),
        stats.handled() + stats.unrouted(),
        "seed {seed}"
    );
    assert_eq!(stats.unrouted(), kinds.2, "seed {seed}");
    assert_eq!(stats.panics(), kinds.1, "seed {seed}");
    assert_eq!(stats.dead_letters(), kinds.1 + kinds.2, "seed {seed}");
}

#[test]
fn randomized_runtime_stress() {
    let seed = std::env::var("SHARDBUS_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let secs: u64 = std::env::var("SHARDBUS_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!("stress seed {seed} (SHARDBUS_STRESS_SEED={seed} replays it), {secs} s");
    let end = Instant::now() + Duration::from_secs(secs);
    let mut rng = Rng(seed | 1);
    let mut rounds = 0;
    while rounds == 0 || Instant::now() < end {
        let round_seed = rng.next();
        println!("round {rounds}: seed {round_seed}");
        one_round(round_seed);
        rounds += 1;
    }
    println!("{rounds} rounds passed");
}
