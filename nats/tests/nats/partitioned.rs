//! Partitioned scale-out: the server maps `orders.<key>` onto `orders.<p>.<key>`, three
//! buses each import their partition; one is crashed mid-stream (its import aborted, its
//! connection and bus dropped) and restarted: its partition is delivered again from the
//! consumer's ack floor, per-key order holds in every incarnation, nothing is lost.

use crate::common::*;
use shardbus_nats::server::ServerConfig;
use shardbus_nats::{Bridge, BridgeOptions, Link};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const PARTITIONS: u32 = 3;

async fn process(url: &str, partition: u32) -> (Bridge<Order>, Vec<Link>, Seen) {
    let (bus, seen) = collecting_bus("orders");
    let bridge = Bridge::connect(url, bus, BridgeOptions::default().ack_batch(16))
        .await
        .unwrap();
    let links = bridge
        .import_partitions("ORDERS", "orders", [partition], "orders", |s| {
            s.ack_wait(Duration::from_secs(2)).max_ack_pending(64)
        })
        .await
        .unwrap();
    (bridge, links, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_partitioned_buses_survive_one_crash_with_per_key_order() {
    let config = ServerConfig::default().partition("orders", PARTITIONS);
    let Some(server) = server_with(config) else {
        return;
    };
    bounded(120, async {
        let url = server.url();
        let setup = Bridge::connect(&url, plain_bus(), BridgeOptions::default())
            .await
            .unwrap();
        setup
            .ensure_stream("ORDERS", &["orders.*.*"])
            .await
            .unwrap();
        let mut procs = Vec::new();
        for p in 0..PARTITIONS {
            procs.push(process(&url, p).await);
        }
        // Publishers outside the bridge publish `orders.<key>`; the server partitions.
        let js = setup.jetstream().clone();
        let all = orders(12, 60);
        let publish = |o: &Order| {
            let js = js.clone();
            let mut buf = Vec::new();
            shardbus::Codec::encode(o, &mut buf).unwrap();
            let subject = format!("orders.{}", o.key);
            async move {
                js.publish(subject, buf.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap()
            }
        };
        let half = all.len() / 2;
        for o in &all[..half] {
            publish(o).await;
        }
        // Crash process 1 mid-stream, once it has handled some of its partition.
        assert!(
            wait_until(Duration::from_secs(20), || procs[1].2.lock().unwrap().len()
                >= 20)
            .await
        );
        let (bridge, links, crashed_seen) = procs.remove(1);
        for link in links {
            link.abort();
        }
        drop(bridge);
        for o in &all[half..] {
            publish(o).await;
        }
        let restarted = process(&url, 1).await;
        procs.insert(1, restarted);

        let incarnations = [&procs[0].2, &crashed_seen, &procs[1].2, &procs[2].2];
        let distinct = || {
            incarnations
                .iter()
                .flat_map(|s| s.lock().unwrap().clone())
                .collect::<HashSet<_>>()
                .len()
        };
        assert!(
            wait_until(Duration::from_secs(60), || distinct() >= all.len()).await,
            "handled {} of {}",
            distinct(),
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Per-key order in every incarnation; every message handled; each key in one
        // partition only.
        let mut owner: HashMap<String, usize> = HashMap::new();
        let mut handled = 0;
        for (i, seen) in incarnations.iter().enumerate() {
            let seen = seen.lock().unwrap().clone();
            assert_per_key_order(&seen);
            handled += seen.len();
            for o in &seen {
                let p = if i == 2 { 1 } else { i }; // the crashed (1) and the restarted (2) share partition 1
                assert_eq!(
                    *owner.entry(o.key.clone()).or_insert(p),
                    p,
                    "key {} in two partitions",
                    o.key
                );
            }
        }
        assert_eq!(distinct(), all.len());
        let duplicates = handled - all.len();
        let restarted = procs[1].0.stats();
        eprintln!(
            "partitioned: {handled} handled, {duplicates} duplicates; restarted: {restarted:?}"
        );
        // The crash left deliveries unacknowledged: the restarted import rewound.
        assert!(restarted.import_rewinds <= 1);
        // The survivors saw each of their messages once.
        for i in [0, 2] {
            let seen = procs[i].2.lock().unwrap().clone();
            assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());
        }
        assert_eq!(
            owner.values().collect::<HashSet<_>>().len(),
            PARTITIONS as usize,
            "every partition used"
        );
    })
    .await;
}
