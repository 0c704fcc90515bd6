//! Actors publishing to actors: ping-pong across shards, many chains of hops across
//! full lanes, and `Context::publish` refusing an invalid topic with the message back.
//!
//! Every check is exact (counts, contents, order). Nothing waits on a timer for
//! correctness: tests wait on channels or condition variables; timeouts only bound a
//! test that would otherwise hang on a bug.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};

use crate::common::{assert_quiescent_stats, name_on_shard, not_exactly_once, Log, PATIENCE};
use shardbus::{Bus, Context, Handler, PublishError, ShardId, Topic, TryPublishError};

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
        bus.subscribe(me.as_str(), player).unwrap();
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
            bus.subscribe(*topic, hopper).unwrap();
        }
    }

    fn verify(&self, tokens: u32) {
        assert_eq!(
            self.faults.load(Relaxed),
            0,
            "misrouted hop or failed publish"
        );
        let bad = not_exactly_once(&self.deliveries);
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
