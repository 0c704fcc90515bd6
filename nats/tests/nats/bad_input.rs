//! Bad input gets a typed error (with the message back where there is one) or a dead
//! letter with the raw bytes: never a panic, a hang or a silent loss.

use crate::common::*;
use shardbus_nats::server::ServerConfig;
use shardbus_nats::{Bridge, BridgeError, BridgeOptions, Delivery, ExportError, JetStreamImport};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_a_connect_error_within_the_timeout() {
    // A loopback port with nothing listening on it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let opts = BridgeOptions::default().connect_timeout(Duration::from_secs(1));
    // The watchdog is the bound: well past the 1 s timeout, far below a hang.
    let err = bounded(10, Bridge::connect(&url, plain_bus(), opts))
        .await
        .unwrap_err();
    match err {
        BridgeError::Connect {
            url: u, timeout, ..
        } => {
            assert_eq!(u, url);
            assert_eq!(timeout, Duration::from_secs(1));
        }
        other => panic!("expected Connect, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_subjects_are_typed_errors() {
    let Some(server) = server() else { return };
    bounded(30, async {
        let err = Bridge::connect(&server.url(), plain_bus(), BridgeOptions::default().prefix("bad prefix"))
            .await
            .unwrap_err();
        assert!(matches!(err, BridgeError::InvalidSubject { reason: "contains whitespace", .. }), "{err:?}");
        let err = Bridge::connect(&server.url(), plain_bus(), BridgeOptions::default().max_in_flight(0))
            .await
            .unwrap_err();
        assert!(matches!(err, BridgeError::InvalidOption { option: "max_in_flight", .. }), "{err:?}");

        let failed: Arc<Mutex<Vec<ExportError<Order>>>> = Arc::default();
        let sink = Arc::clone(&failed);
        let source = plain_bus();
        let opts = BridgeOptions::default()
            .subject_fn(|_, o: &Order| format!("orders.{}", o.key))
            .on_export_failure(move |e| sink.lock().unwrap().push(e));
        let bridge = Bridge::connect(&server.url(), Arc::clone(&source), opts).await.unwrap();
        for (subject, reason) in [
            ("orders..x", "empty token"),
            ("orders.>.x", "`>` must be the last token"),
            ("", "empty subject"),
        ] {
            let err = bridge.import(subject, "inbound").await.unwrap_err();
            assert!(
                matches!(&err, BridgeError::InvalidSubject { subject: s, reason: r } if s == subject && *r == reason),
                "{subject:?}: {err:?}"
            );
        }
        let _export = bridge.export("orders", Delivery::Core).unwrap();
        // The key makes the subject: a key with a space or a wildcard cannot go out.
        source.publish("orders", Order::new("has space", 1)).unwrap();
        source.publish("orders", Order::new("*", 2)).unwrap();
        source.publish("orders", Order::new("fine", 3)).unwrap();
        assert!(wait_until(Duration::from_secs(10), || bridge.stats().exported + bridge.stats().export_failed >= 3).await);
        let failed = failed.lock().unwrap();
        assert_eq!(failed.len(), 2);
        assert!(matches!(&failed[0], ExportError::InvalidSubject { subject, reason: "contains whitespace", .. } if subject == "orders.has space"));
        assert_eq!(failed[0].msg(), &Order::new("has space", 1), "the message is given back");
        assert!(matches!(&failed[1], ExportError::InvalidSubject { reason: "wildcards are only allowed in subscriptions", .. }));
        assert_eq!(bridge.stats().exported, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_over_max_payload_is_given_back() {
    let config = ServerConfig::default().max_payload(1024);
    let Some(server) = server_with(config) else {
        return;
    };
    bounded(30, async {
        let failed: Arc<Mutex<Vec<ExportError<Order>>>> = Arc::default();
        let sink = Arc::clone(&failed);
        let source = plain_bus();
        let (dest, seen) = collecting_bus("inbound");
        let opts =
            BridgeOptions::default().on_export_failure(move |e| sink.lock().unwrap().push(e));
        let out = Bridge::connect(&server.url(), Arc::clone(&source), opts)
            .await
            .unwrap();
        assert_eq!(out.max_payload(), 1024);
        let inn = Bridge::connect(&server.url(), dest, BridgeOptions::default())
            .await
            .unwrap();
        let _import = inn.import("orders", "inbound").await.unwrap();
        for delivery in [Delivery::Core, Delivery::JetStream] {
            let export = out.export("orders", delivery).unwrap();
            let big = Order {
                key: "big".into(),
                seq: 1,
                pad: 2000,
            };
            source.publish("orders", big.clone()).unwrap();
            assert!(
                wait_until(Duration::from_secs(10), || failed.lock().unwrap().len()
                    == 1)
                .await
            );
            let error = failed.lock().unwrap().pop().unwrap();
            assert!(
                matches!(
                    &error,
                    ExportError::PayloadTooLarge {
                        size: 2006,
                        max: 1024,
                        ..
                    }
                ),
                "{error:?}"
            );
            assert_eq!(error.into_inner(), big, "the message is given back");
            export.stop().await;
        }
        // The small one still goes through.
        let _export = out.export("orders", Delivery::Core).unwrap();
        source.publish("orders", Order::new("small", 2)).unwrap();
        assert!(wait_until(Duration::from_secs(10), || seen.lock().unwrap().len() == 1).await);
        assert_eq!(seen.lock().unwrap()[0], Order::new("small", 2));
        assert_eq!(out.stats().export_failed, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_payload_is_a_dead_letter_with_the_raw_bytes() {
    let Some(server) = server() else { return };
    bounded(30, async {
        let dead: Arc<Mutex<Vec<shardbus_nats::ImportDeadLetter>>> = Arc::default();
        let sink = Arc::clone(&dead);
        let (bus, seen) = collecting_bus("inbound");
        let opts = BridgeOptions::default().on_dead_letter(move |d| sink.lock().unwrap().push(d));
        let bridge = Bridge::connect(&server.url(), bus, opts).await.unwrap();
        let _core = bridge.import("raw.core", "inbound").await.unwrap();
        bridge.ensure_stream("RAW", &["raw.js"]).await.unwrap();
        let _js = bridge
            .import_jetstream(
                JetStreamImport::new("RAW", "raw", "raw.js", "inbound")
                    .ack_wait(Duration::from_secs(1)),
            )
            .await
            .unwrap();
        bridge.client().flush().await.unwrap();
        let client = bridge.client();
        client
            .publish("raw.core", "\u{0}garbage".into())
            .await
            .unwrap();
        client.publish("raw.core", "k:1:".into()).await.unwrap();
        let js = bridge.jetstream();
        js.publish("raw.js", "not:a:number".into())
            .await
            .unwrap()
            .await
            .unwrap();
        js.publish("raw.js", "k:2:".into())
            .await
            .unwrap()
            .await
            .unwrap();
        client.flush().await.unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || seen.lock().unwrap().len() == 2
                && dead.lock().unwrap().len() == 2)
            .await
        );
        // Terminated, not redelivered: past the 1 s ack wait there is still one dead letter each.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut dead = dead.lock().unwrap().clone();
        dead.sort_by(|a, b| a.subject.cmp(&b.subject));
        assert_eq!(dead.len(), 2);
        assert_eq!(
            (dead[0].subject.as_str(), &dead[0].payload[..]),
            ("raw.core", &b"\0garbage"[..])
        );
        assert_eq!(
            (dead[1].subject.as_str(), &dead[1].payload[..]),
            ("raw.js", &b"not:a:number"[..])
        );
        let mut got = seen.lock().unwrap().clone();
        got.sort_by_key(|o| o.seq);
        assert_eq!(got, [Order::new("k", 1), Order::new("k", 2)]);
        let s = bridge.stats();
        assert_eq!(
            (s.dead_letters, s.imported, s.import_redelivered),
            (2, 2, 0)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bus_slows_a_core_import_and_the_drops_are_counted() {
    let Some(server) = server() else { return };
    bounded(60, async {
        // A bus with two-slot rings whose handler is held: the import waits in
        // `publish_async`, the client's subscription buffer (4) fills, and the client
        // drops for it, which the bridge counts.
        let bus = shardbus::Bus::<Order>::builder()
            .shards(1)
            .capacity(2)
            .lane_capacity(2)
            .build()
            .unwrap();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let handled = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = Arc::clone(&handled);
        bus.subscribe(
            "inbound",
            move |_: &mut shardbus::Context<'_, Order>, _: &Order| {
                if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(30));
                }
            },
        )
        .unwrap();
        let bus = Arc::new(bus);
        let bridge = Bridge::connect(
            &server.url(),
            Arc::clone(&bus),
            BridgeOptions::default().subscription_capacity(4),
        )
        .await
        .unwrap();
        let _import = bridge.import("flood", "inbound").await.unwrap();
        let sender = async_nats::connect(server.url()).await.unwrap();
        for o in orders(1, 200) {
            let mut buf = Vec::new();
            shardbus::Codec::encode(&o, &mut buf).unwrap();
            sender.publish("flood", buf.into()).await.unwrap();
        }
        sender.flush().await.unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || bridge
                .stats()
                .slow_consumer_events
                >= 1)
            .await
        );
        release.send(()).unwrap();
        // Everything still buffered arrives; what was dropped is counted, not lost silently.
        let imported = || bridge.stats().imported;
        let mut last = imported();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if imported() == last {
                break;
            }
            last = imported();
        }
        // Every message the import published is handled before the counts are compared
        // (`flush` blocks: off the runtime's workers).
        let flushed = Arc::clone(&bus);
        tokio::task::spawn_blocking(move || flushed.flush().unwrap())
            .await
            .unwrap();
        let s = bridge.stats();
        assert!(s.imported >= 1 && s.imported < 200, "{s:?}");
        // One event per drop, as far as the client's event queue (128) holds them.
        assert!(
            s.slow_consumer_events >= 1 && s.imported + s.slow_consumer_events <= 200,
            "{s:?}"
        );
        assert_eq!(
            handled.load(std::sync::atomic::Ordering::SeqCst),
            s.imported
        );
        eprintln!("flood: {s:?}");
    })
    .await;
}

/// A message type whose codec decodes anything but refuses to encode words starting
/// with "bad": a persistent bus refuses those at the publish.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Word(String);

impl shardbus::Codec for Word {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), shardbus::EncodeError> {
        if self.0.starts_with("bad") {
            return Err(shardbus::EncodeError::new("a bad word"));
        }
        out.extend_from_slice(self.0.as_bytes());
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, shardbus::DecodeError> {
        let text = std::str::from_utf8(bytes).map_err(shardbus::DecodeError::new)?;
        Ok(Word(text.to_owned()))
    }
}

/// A payload that decodes but that the bus refuses (it does not encode for the log) is a
/// dead letter with its raw bytes, core and JetStream (then terminated, not redelivered),
/// and the imports go on with the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_bus_refuses_to_encode_is_a_dead_letter_and_the_import_goes_on() {
    use shardbus_nats::ImportFailure;
    let Some(server) = server() else { return };
    bounded(30, async {
        let dir = server.dir().join("bus");
        let bus = shardbus::Bus::<Word>::builder()
            .shards(1)
            .persist(shardbus::Persistence::new(&dir))
            .build()
            .unwrap();
        let seen: Arc<Mutex<Vec<Word>>> = Arc::default();
        let sink = Arc::clone(&seen);
        bus.subscribe(
            "inbound",
            move |_: &mut shardbus::Context<'_, Word>, w: &Word| {
                sink.lock().unwrap().push(w.clone());
            },
        )
        .unwrap();
        let dead: Arc<Mutex<Vec<shardbus_nats::ImportDeadLetter>>> = Arc::default();
        let sink = Arc::clone(&dead);
        let opts = BridgeOptions::default().on_dead_letter(move |d| sink.lock().unwrap().push(d));
        let bridge = Bridge::connect(&server.url(), Arc::new(bus), opts)
            .await
            .unwrap();
        let _core = bridge.import("w.core", "inbound").await.unwrap();
        bridge.ensure_stream("W", &["w.js"]).await.unwrap();
        let _js = bridge
            .import_jetstream(
                JetStreamImport::new("W", "w", "w.js", "inbound").ack_wait(Duration::from_secs(1)),
            )
            .await
            .unwrap();
        bridge.client().flush().await.unwrap();
        let client = bridge.client();
        client.publish("w.core", "bad one".into()).await.unwrap();
        client.publish("w.core", "good one".into()).await.unwrap();
        let js = bridge.jetstream();
        for word in ["bad two", "good two"] {
            js.publish("w.js", word.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        assert!(
            wait_until(Duration::from_secs(10), || seen.lock().unwrap().len() == 2
                && dead.lock().unwrap().len() == 2
                && bridge.stats().import_acked == 1)
            .await,
            "{:?}",
            bridge.stats()
        );
        let mut got = seen.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, [Word("good one".into()), Word("good two".into())]);
        let mut dead: Vec<(String, Vec<u8>, bool)> = dead
            .lock()
            .unwrap()
            .iter()
            .map(|d| {
                let encode = matches!(d.error, ImportFailure::Encode(_));
                (d.subject.clone(), d.payload.to_vec(), encode)
            })
            .collect();
        dead.sort();
        assert_eq!(
            dead,
            [
                ("w.core".to_owned(), b"bad one".to_vec(), true),
                ("w.js".to_owned(), b"bad two".to_vec(), true),
            ]
        );
        // Terminated, not redelivered: nothing is pending on the consumer.
        let stream = js.get_stream("W").await.unwrap();
        let pending = async {
            let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                stream.get_consumer("w").await.unwrap();
            consumer.info().await.unwrap().num_ack_pending
        };
        assert_eq!(pending.await, 0);
        let s = bridge.stats();
        assert_eq!((s.imported, s.dead_letters, s.import_refused), (2, 2, 0));
    })
    .await;
}
