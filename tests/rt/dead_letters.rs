//! Dead letters: messages to topics without subscribers reach the dead-letter handler
//! with their topic and shard, in order per source, and the statistics count them.
//!
//! Every check is exact (counts, contents, order). Nothing waits on a timer for
//! correctness: tests wait on channels or condition variables; timeouts only bound a
//! test that would otherwise hang on a bug.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::common::{assert_quiescent_stats, names};
use shardbus::{Bus, Context, DeadLetterReason, ShardId};

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
