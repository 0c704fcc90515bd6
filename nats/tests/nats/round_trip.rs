//! Bus → NATS → bus, core and JetStream: exact counts, contents and per-key order.

use crate::common::*;
use shardbus_nats::{Bridge, BridgeOptions, Delivery, JetStreamImport};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_round_trip_keeps_contents_and_per_key_order() {
    let Some(server) = server() else { return };
    bounded(60, async {
        let source = plain_bus();
        let (sink, seen) = collecting_bus("inbound");
        let out = Bridge::connect(
            &server.url(),
            Arc::clone(&source),
            BridgeOptions::default().prefix("a"),
        )
        .await
        .unwrap();
        let inn = Bridge::connect(&server.url(), Arc::clone(&sink), BridgeOptions::default())
            .await
            .unwrap();
        // `import` returns once the server has the subscription.
        let _import = inn.import("a.orders", "inbound").await.unwrap();
        let _export = out.export("orders", Delivery::Core).unwrap();
        let sent = orders(4, 100);
        for o in &sent {
            source.publish("orders", o.clone()).unwrap();
        }
        assert!(
            wait_until(Duration::from_secs(20), || seen.lock().unwrap().len()
                >= 400)
            .await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = seen.lock().unwrap().clone();
        assert_eq!(got.len(), 400, "exactly what was sent");
        let mut sorted = got.clone();
        sorted.sort_by(|a, b| (&a.key, a.seq).cmp(&(&b.key, b.seq)));
        let mut expected = sent.clone();
        expected.sort_by(|a, b| (&a.key, a.seq).cmp(&(&b.key, b.seq)));
        assert_eq!(sorted, expected);
        assert_per_key_order(&got);
        assert_eq!(out.stats().exported, 400);
        assert_eq!(out.stats().export_failed, 0);
        assert_eq!(inn.stats().imported, 400);
        assert_eq!(inn.stats().dead_letters, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_round_trip_acks_every_message_once() {
    let Some(server) = server() else { return };
    bounded(60, async {
        let source = plain_bus();
        let (sink, seen) = collecting_bus("inbound");
        let opts = BridgeOptions::default()
            .prefix("js")
            .subject_fn(|topic, o: &Order| format!("{topic}.{}", o.key));
        let out = Bridge::connect(&server.url(), Arc::clone(&source), opts.max_in_flight(8))
            .await
            .unwrap();
        out.ensure_stream("ORD", &["js.>"]).await.unwrap();
        let _export = out.export("orders", Delivery::JetStream).unwrap();
        let sent = orders(4, 100);
        for o in &sent {
            source.publish("orders", o.clone()).unwrap();
        }
        assert!(wait_until(Duration::from_secs(20), || out.stats().exported >= 400).await);
        let s = out.stats();
        assert_eq!(
            (s.exported, s.export_failed, s.export_duplicates),
            (400, 0, 0)
        );
        assert!(s.export_in_flight_max <= 8, "window bounded: {s:?}");

        let inn = Bridge::connect(
            &server.url(),
            Arc::clone(&sink),
            BridgeOptions::default().ack_batch(32),
        )
        .await
        .unwrap();
        let _import = inn
            .import_jetstream(JetStreamImport::new(
                "ORD",
                "reader",
                "js.orders.>",
                "inbound",
            ))
            .await
            .unwrap();
        assert!(wait_until(Duration::from_secs(20), || inn.stats().import_acked >= 400).await);
        let got = seen.lock().unwrap().clone();
        assert_eq!(got.len(), 400);
        assert_per_key_order(&got);
        for (key, seqs) in by_key(&got) {
            assert_eq!(seqs, (0..100).collect::<Vec<_>>(), "key {key}");
        }
        let s = inn.stats();
        assert_eq!(
            (s.imported, s.import_acked, s.import_redelivered),
            (400, 400, 0)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_import_acks_only_after_the_subscribers_handled_it() {
    let Some(server) = server() else { return };
    bounded(60, async {
        let bus = shardbus::Bus::<Order>::builder().shards(1).build().unwrap();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = std::sync::Mutex::new(gate);
        let handled = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = Arc::clone(&handled);
        bus.subscribe(
            "inbound",
            move |_: &mut shardbus::Context<'_, Order>, _: &Order| {
                // The first message holds the handler until the test releases it.
                if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(30));
                }
            },
        )
        .unwrap();
        let bus = Arc::new(bus);
        let inn = Bridge::connect(&server.url(), Arc::clone(&bus), BridgeOptions::default())
            .await
            .unwrap();
        inn.ensure_stream("HOLD", &["hold.>"]).await.unwrap();
        let js = inn.jetstream().clone();
        for seq in 0..10u64 {
            let mut buf = Vec::new();
            shardbus::Codec::encode(&Order::new("k", seq), &mut buf).unwrap();
            js.publish("hold.k", buf.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let _import = inn
            .import_jetstream(JetStreamImport::new("HOLD", "holder", "hold.>", "inbound"))
            .await
            .unwrap();
        assert!(wait_until(Duration::from_secs(10), || inn.stats().imported >= 1).await);
        // The handler is held: nothing may be acknowledged yet.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            inn.stats().import_acked,
            0,
            "acknowledged before it was handled"
        );
        release.send(()).unwrap();
        assert!(wait_until(Duration::from_secs(10), || inn.stats().import_acked >= 10).await);
        assert_eq!(handled.load(std::sync::atomic::Ordering::SeqCst), 10);
        assert_eq!(inn.stats().import_acked, 10);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_import_into_a_persistent_bus_commits_then_acks() {
    let Some(server) = server() else { return };
    let dir = server.dir().join("bus");
    bounded(60, async {
        let seen: Seen = Arc::default();
        let sink = Arc::clone(&seen);
        let bus = shardbus::Bus::<Order>::builder()
            .shards(2)
            .persist(shardbus::Persistence::new(&dir))
            .subscribe(
                "inbound",
                move |_: &mut shardbus::Context<'_, Order>, o: &Order| {
                    sink.lock().unwrap().push(o.clone());
                },
            )
            .build()
            .unwrap();
        let bus = Arc::new(bus);
        let inn = Bridge::connect(&server.url(), Arc::clone(&bus), BridgeOptions::default())
            .await
            .unwrap();
        inn.ensure_stream("DUR", &["dur.>"]).await.unwrap();
        let js = inn.jetstream().clone();
        for o in orders(2, 20) {
            let mut buf = Vec::new();
            shardbus::Codec::encode(&o, &mut buf).unwrap();
            js.publish(format!("dur.{}", o.key), buf.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let import = inn
            .import_jetstream(JetStreamImport::new("DUR", "durable", "dur.>", "inbound"))
            .await
            .unwrap();
        // Acknowledged after `wait_durable` returned for its batch: in the local log.
        assert!(wait_until(Duration::from_secs(20), || inn.stats().import_acked >= 40).await);
        import.stop().await;
        assert!(wait_until(Duration::from_secs(10), || seen.lock().unwrap().len() >= 40).await);
        let got = seen.lock().unwrap().clone();
        assert_per_key_order(&got);
        assert_eq!(got.len(), 40);
        let s = inn.stats();
        assert_eq!((s.imported, s.import_acked, s.import_refused), (40, 40, 0));
    })
    .await;
}

/// On a persistent bus, a JetStream import acknowledges only once every subscriber has
/// handled the message, not only once it is committed: a subscriber added at run time
/// gets no replay after a crash, so acknowledging at the commit could lose the message
/// for it. Here that subscriber is held on its first message: nothing is acknowledged
/// until it is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_import_acks_only_after_runtime_subscribers_handled_it() {
    let Some(server) = server() else { return };
    bounded(60, async {
        let dir = server.dir().join("bus");
        let bus = shardbus::Bus::<Order>::builder()
            .shards(1)
            // No sync: the records are committed at the append, so the commit is
            // confirmed before the handlers run whatever the log's pipelining does.
            .persist(shardbus::Persistence::new(&dir).fsync(shardbus::FsyncPolicy::Never))
            .build()
            .unwrap();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = std::sync::Mutex::new(gate);
        let handled = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = Arc::clone(&handled);
        bus.subscribe(
            "inbound",
            move |_: &mut shardbus::Context<'_, Order>, _: &Order| {
                // Held until the test lets go (bounded: the sender is dropped at the end).
                let _ = gate.lock().unwrap().recv();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            },
        )
        .unwrap();
        let bridge = Bridge::connect(&server.url(), Arc::new(bus), BridgeOptions::default())
            .await
            .unwrap();
        bridge.ensure_stream("HELD", &["held"]).await.unwrap();
        let import = bridge
            .import_jetstream(JetStreamImport::new("HELD", "held", "held", "inbound"))
            .await
            .unwrap();
        let mut payload = Vec::new();
        shardbus::Codec::encode(&Order::new("k", 1), &mut payload).unwrap();
        let js = bridge.jetstream();
        js.publish("held", payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(wait_until(Duration::from_secs(10), || bridge.stats().imported == 1).await);
        // Committed by now (a group commit takes far less), but not handled.
        assert!(
            !wait_until(Duration::from_secs(1), || bridge.stats().import_acked > 0).await,
            "acknowledged before the subscriber handled it"
        );
        release.send(()).unwrap();
        assert!(wait_until(Duration::from_secs(10), || bridge.stats().import_acked == 1).await);
        assert_eq!(handled.load(std::sync::atomic::Ordering::SeqCst), 1);
        import.stop().await;
    })
    .await;
}

/// A clean stop of a JetStream import leaves no acknowledgement pending: the final acks
/// are flushed to the server before `stop` returns, so another connection sees the
/// consumer with nothing pending right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_jetstream_import_leaves_nothing_pending() {
    let Some(server) = server() else { return };
    bounded(60, async {
        let (sink, seen) = collecting_bus("inbound");
        let bridge = Bridge::connect(&server.url(), sink, BridgeOptions::default())
            .await
            .unwrap();
        bridge.ensure_stream("STOPS", &["stops"]).await.unwrap();
        let js = bridge.jetstream();
        for o in orders(2, 50) {
            let mut payload = Vec::new();
            shardbus::Codec::encode(&o, &mut payload).unwrap();
            js.publish("stops", payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let import = bridge
            .import_jetstream(JetStreamImport::new("STOPS", "stops", "stops", "inbound"))
            .await
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || seen.lock().unwrap().len()
                == 100)
            .await
        );
        import.stop().await;
        let other = async_nats::connect(server.url()).await.unwrap();
        let stream = async_nats::jetstream::new(other)
            .get_stream("STOPS")
            .await
            .unwrap();
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer("stops").await.unwrap();
        let info = consumer.info().await.unwrap();
        assert_eq!(
            (info.num_ack_pending, info.ack_floor.stream_sequence),
            (0, 100)
        );
        assert_eq!(bridge.stats().import_acked, 100);
    })
    .await;
}

/// `import` returns once the server has the subscription: a message published on another
/// connection right after it is imported. Each of 100 imports gets its own subject and is
/// followed at once by one message from a plain client; all 100 arrive. Before `import`
/// waited for its round trip, some of the first messages were published ahead of the
/// subscription and lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_is_at_the_server_when_it_returns() {
    let Some(server) = server() else { return };
    bounded(60, async {
        let (sink, seen) = collecting_bus("inbound");
        let inn = Bridge::connect(&server.url(), Arc::clone(&sink), BridgeOptions::default())
            .await
            .unwrap();
        let publisher = async_nats::connect(server.url()).await.unwrap();
        let mut links = Vec::new();
        for i in 0..100u64 {
            let subject = format!("race.{i}");
            links.push(inn.import(&subject, "inbound").await.unwrap());
            let mut payload = Vec::new();
            shardbus::Codec::encode(&Order::new("race", i), &mut payload).unwrap();
            publisher.publish(subject, payload.into()).await.unwrap();
            publisher.flush().await.unwrap();
        }
        assert!(
            wait_until(Duration::from_secs(20), || seen.lock().unwrap().len()
                >= 100)
            .await,
            "imported {} of 100",
            seen.lock().unwrap().len()
        );
        let mut got: Vec<u64> = seen.lock().unwrap().iter().map(|o| o.seq).collect();
        got.sort_unstable();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(inn.stats().imported, 100);
    })
    .await;
}
