//! Pattern exports (`Local::Pattern`): every matching topic, existing and later ones, each
//! to its own subject, exact contents and per-subject order; core and JetStream; and a
//! stop, an abort and a bus close that leave nothing running.

use crate::common::*;
use futures_util::StreamExt;
use shardbus::{Bus, Codec, Context, DeadLetterReason};
use shardbus_nats::{Bridge, BridgeOptions, Delivery, Local};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Messages per topic.
const PER_TOPIC: u64 = 60;

/// A two-shard bus that counts its `NoSubscriber` dead letters, with `orders.eu` and
/// `orders.us` made known before any export (each has had a subscriber and a message;
/// the subscriber is gone again, so the pattern's actors are their only subscribers).
fn bus_with_existing_topics() -> (Arc<Bus<Order>>, Arc<AtomicU64>) {
    let unrouted = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&unrouted);
    let bus = Bus::<Order>::builder()
        .shards(2)
        .dead_letter(move |d| {
            if matches!(d.reason, DeadLetterReason::NoSubscriber) {
                count.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .expect("bus");
    for topic in ["orders.eu", "orders.us"] {
        let id = bus
            .subscribe(topic, |_: &mut Context<'_, Order>, _: &Order| {})
            .expect("subscribe");
        bus.publish(topic, Order::new("before", 0))
            .expect("publish");
        bus.flush().expect("flush");
        bus.unsubscribe(id).expect("unsubscribe");
    }
    (Arc::new(bus), unrouted)
}

/// The topics a test publishes to: two that existed before the export, one first
/// published after it, and one that does not match.
const TOPICS: [&str; 3] = ["orders.eu", "orders.us", "orders.new.first"];
const OTHER: &str = "billing.eu";

/// Publishes `PER_TOPIC` messages to each of `TOPICS` (key = topic, seq 0..), interleaved,
/// and the same to `OTHER`.
fn publish_all(bus: &Bus<Order>) {
    for seq in 0..PER_TOPIC {
        for topic in TOPICS.iter().chain([&OTHER]) {
            bus.publish(*topic, Order::new(*topic, seq))
                .expect("publish");
        }
    }
}

/// Asserts that `got` (subject, message, in arrival order) holds exactly the messages of
/// `TOPICS`, each on `<prefix>.<topic>`, in publish order per subject.
fn assert_exact(prefix: &str, got: &[(String, Order)]) {
    let mut per_subject: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (subject, o) in got {
        assert_eq!(subject, &format!("{prefix}.{}", o.key), "subject of {o:?}");
        per_subject.entry(subject.clone()).or_default().push(o.seq);
    }
    let expected: BTreeMap<String, Vec<u64>> = TOPICS
        .iter()
        .map(|t| (format!("{prefix}.{t}"), (0..PER_TOPIC).collect()))
        .collect();
    assert_eq!(per_subject, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_pattern_export_covers_existing_and_new_topics_in_order() {
    let Some(server) = server() else { return };
    bounded(60, async {
        let (bus, unrouted) = bus_with_existing_topics();
        let client = async_nats::connect(server.url()).await.unwrap();
        let mut sub = client.subscribe("p.>").await.unwrap();
        // At the server before the bridge (another connection) publishes.
        shardbus_nats::round_trip(&client, Duration::from_secs(10))
            .await
            .unwrap();
        let got: Arc<Mutex<Vec<(String, Order)>>> = Arc::default();
        let sink = Arc::clone(&got);
        let reader = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let o = Order::decode(&m.payload).expect("decodes");
                sink.lock().unwrap().push((m.subject.to_string(), o));
            }
        });
        let bridge = Bridge::connect(
            &server.url(),
            Arc::clone(&bus),
            BridgeOptions::default().prefix("p"),
        )
        .await
        .unwrap();
        let link = bridge
            .export(Local::pattern("orders.>"), Delivery::Core)
            .unwrap();
        publish_all(&bus);
        let total = TOPICS.len() * PER_TOPIC as usize;
        assert!(
            wait_until(Duration::from_secs(20), || got.lock().unwrap().len()
                >= total)
            .await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_exact("p", &got.lock().unwrap());
        let s = bridge.stats();
        assert_eq!(
            (s.exported, s.export_failed, s.export_overflow),
            (total as u64, 0, 0)
        );
        // Every `billing.eu` message had no subscriber.
        assert_eq!(unrouted.load(Ordering::SeqCst), PER_TOPIC);
        // Closing the bus ends the export on its own.
        bus.close().unwrap();
        assert!(wait_until(Duration::from_secs(10), || link.is_finished()).await);
        reader.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_pattern_export_stores_each_topic_on_its_subject_in_order() {
    let Some(server) = server() else { return };
    bounded(60, async {
        let (bus, _) = bus_with_existing_topics();
        let bridge = Bridge::connect(
            &server.url(),
            Arc::clone(&bus),
            BridgeOptions::default().prefix("js").max_in_flight(8),
        )
        .await
        .unwrap();
        bridge.ensure_stream("PAT", &["js.>"]).await.unwrap();
        let link = bridge
            .export(Local::pattern("orders.>"), Delivery::JetStream)
            .unwrap();
        publish_all(&bus);
        let total = TOPICS.len() as u64 * PER_TOPIC;
        assert!(wait_until(Duration::from_secs(20), || bridge.stats().exported >= total).await);
        link.stop().await;
        let s = bridge.stats();
        assert_eq!(
            (
                s.exported,
                s.export_failed,
                s.export_duplicates,
                s.export_overflow
            ),
            (total, 0, 0, 0)
        );
        assert!(s.export_in_flight_max <= 8, "window bounded: {s:?}");
        // The stream, read in its own order: exactly the messages, per subject in order.
        let stream = bridge.jetstream().get_stream("PAT").await.unwrap();
        let mut got = Vec::new();
        for seq in 1..=total {
            let m = stream.get_raw_message(seq).await.unwrap();
            got.push((m.subject.to_string(), Order::decode(&m.payload).unwrap()));
        }
        assert!(
            stream.get_raw_message(total + 1).await.is_err(),
            "nothing beyond"
        );
        assert_exact("js", &got);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_pattern_export_removes_its_actors() {
    let Some(server) = server() else { return };
    bounded(60, async {
        let (bus, unrouted) = bus_with_existing_topics();
        let failed = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&failed);
        let bridge = Bridge::connect(
            &server.url(),
            Arc::clone(&bus),
            BridgeOptions::default().prefix("s").on_export_failure(
                move |_: shardbus_nats::ExportError<Order>| {
                    count.fetch_add(1, Ordering::SeqCst);
                },
            ),
        )
        .await
        .unwrap();
        // Stop: every message published before it is exported, none after it reaches an
        // actor (the topics have no subscriber again).
        let link = bridge
            .export(Local::pattern("orders.*"), Delivery::Core)
            .unwrap();
        for seq in 0..10 {
            bus.publish("orders.eu", Order::new("orders.eu", seq))
                .unwrap();
        }
        bus.flush().unwrap();
        link.stop().await;
        assert_eq!(bridge.stats().exported, 10);
        let before = unrouted.load(Ordering::SeqCst);
        for seq in 0..5 {
            bus.publish("orders.eu", Order::new("orders.eu", seq))
                .unwrap();
            bus.publish("orders.late", Order::new("orders.late", seq))
                .unwrap();
        }
        bus.flush().unwrap();
        assert_eq!(unrouted.load(Ordering::SeqCst) - before, 10);
        assert_eq!(bridge.stats().exported, 10);

        // Abort (as a crash of the task would): the pattern is ended too, without a
        // stop. What the hand-off held at the abort is dropped with the task, as a topic
        // export's stream would be; a message that reaches an actor once the task is gone
        // goes to the export-failure handler (`Ended`); and once the pattern is gone,
        // the topics have no subscriber again.
        let link = bridge
            .export(Local::pattern("orders.*"), Delivery::Core)
            .unwrap();
        bus.publish("orders.eu", Order::new("orders.eu", 100))
            .unwrap();
        assert!(wait_until(Duration::from_secs(10), || bridge.stats().exported == 11).await);
        link.abort();
        let before = unrouted.load(Ordering::SeqCst);
        let mut published = 0;
        let gone = wait_until(Duration::from_secs(10), || {
            bus.publish("orders.eu", Order::new("orders.eu", 200 + published))
                .unwrap();
            published += 1;
            bus.flush().unwrap();
            unrouted.load(Ordering::SeqCst) > before
        })
        .await;
        assert!(gone, "the aborted export's pattern is still subscribed");
        let (unrouted_now, failed_now) = (
            unrouted.load(Ordering::SeqCst),
            failed.load(Ordering::SeqCst),
        );
        assert!(unrouted_now - before + failed_now <= published);
        for seq in 0..5 {
            bus.publish("orders.eu", Order::new("orders.eu", 300 + seq))
                .unwrap();
            bus.publish("orders.later", Order::new("orders.later", seq))
                .unwrap();
        }
        bus.flush().unwrap();
        assert_eq!(unrouted.load(Ordering::SeqCst) - unrouted_now, 10);
        assert_eq!(failed.load(Ordering::SeqCst), failed_now);
        assert_eq!(bridge.stats().exported, 11);
        assert_eq!(bridge.stats().export_failed, failed_now);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_export_that_falls_behind_counts_and_gives_back_the_overflow() {
    let Some(server) = server() else { return };
    bounded(60, async {
        let bus = plain_bus();
        let given_back: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let sink = Arc::clone(&given_back);
        let bridge = Bridge::connect(
            &server.url(),
            Arc::clone(&bus),
            BridgeOptions::default()
                .prefix("o")
                .stream_capacity(4)
                .max_in_flight(1)
                .on_export_failure(move |e: shardbus_nats::ExportError<Order>| {
                    if let shardbus_nats::ExportError::Overflow {
                        msg,
                        topic,
                        capacity,
                    } = e
                    {
                        assert_eq!(capacity, 4);
                        sink.lock().unwrap().push((topic, msg.seq));
                    }
                }),
        )
        .await
        .unwrap();
        // JetStream without a stream for the subjects: every publish waits for an
        // acknowledgement that does not come, so the export falls behind at once.
        let link = bridge
            .export(Local::pattern("slow.*"), Delivery::JetStream)
            .unwrap();
        for seq in 0..200 {
            bus.publish("slow.a", Order::new("slow.a", seq)).unwrap();
        }
        bus.flush().unwrap();
        let s = bridge.stats();
        let over = given_back.lock().unwrap().clone();
        assert!(s.export_overflow > 0, "{s:?}");
        assert_eq!(s.export_overflow, over.len() as u64);
        assert!(over.iter().all(|(t, _)| t == "slow.a"));
        assert!(
            over.windows(2).all(|w| w[0].1 < w[1].1),
            "given back in order"
        );
        link.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_export_maps_each_topic_and_refuses_a_bad_pattern() {
    let Some(server) = server() else { return };
    bounded(60, async {
        let bus = plain_bus();
        let client = async_nats::connect(server.url()).await.unwrap();
        let mut sub = client.subscribe("m.>").await.unwrap();
        // At the server before the bridge (another connection) publishes.
        shardbus_nats::round_trip(&client, Duration::from_secs(10))
            .await
            .unwrap();
        // The mapping function sees each message's own topic.
        let bridge = Bridge::connect(
            &server.url(),
            Arc::clone(&bus),
            BridgeOptions::default()
                .prefix("m")
                .subject_fn(|topic, o: &Order| format!("{topic}.{}", o.seq % 2)),
        )
        .await
        .unwrap();
        for bad in ["orders.>.x", "orders..x", ""] {
            let err = bridge
                .export(Local::pattern(bad), Delivery::Core)
                .expect_err(bad);
            assert!(
                matches!(
                    err,
                    shardbus_nats::BridgeError::Bus(shardbus::Error::InvalidSubject { .. })
                ),
                "{bad:?}: {err:?}"
            );
        }
        let link = bridge
            .export(Local::pattern("*.in"), Delivery::Core)
            .unwrap();
        for seq in 0..4 {
            bus.publish("a.in", Order::new("a", seq)).unwrap();
            bus.publish("b.in", Order::new("b", seq)).unwrap();
            bus.publish("c.out", Order::new("c", seq)).unwrap();
        }
        bus.flush().unwrap();
        link.stop().await;
        let mut got = Vec::new();
        while got.len() < 8 {
            let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .expect("a message within 10 s")
                .unwrap();
            got.push((m.subject.to_string(), Order::decode(&m.payload).unwrap()));
        }
        client.flush().await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), sub.next())
                .await
                .is_err(),
            "nothing more"
        );
        for key in ["a", "b"] {
            let mine: Vec<(String, u64)> = got
                .iter()
                .filter(|(_, o)| o.key == key)
                .map(|(s, o)| (s.clone(), o.seq))
                .collect();
            let expected: Vec<(String, u64)> = (0..4)
                .map(|seq| (format!("m.{key}.in.{}", seq % 2), seq))
                .collect();
            assert_eq!(mine, expected);
        }
        assert_eq!(bridge.stats().exported, 8);
    })
    .await;
}
