//! Server faults: SIGKILL and restart mid-stream, SIGSTOP for 5 s. Each checks exactly
//! what survives. (A SIGKILL keeps the page cache: this is a process crash of the
//! server, not a power loss.)

use crate::common::*;
use shardbus_nats::{Bridge, BridgeOptions, Delivery, JetStreamImport};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Reads the whole stream back through a fresh import into a fresh bus; returns what
/// was handled once `expected` distinct messages are in (or the bound passes).
async fn read_back(url: &str, stream: &str, filter: &str, expected: usize) -> Vec<Order> {
    let (bus, seen) = collecting_bus("check");
    let bridge = Bridge::connect(url, bus, BridgeOptions::default())
        .await
        .unwrap();
    let _import = bridge
        .import_jetstream(JetStreamImport::new(stream, "checker", filter, "check"))
        .await
        .unwrap();
    let distinct = || {
        seen.lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<HashSet<_>>()
            .len()
    };
    assert!(
        wait_until(Duration::from_secs(30), || distinct() >= expected).await,
        "read back {} of {expected}",
        distinct()
    );
    // Anything more (a duplicate) would come right behind: give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = seen.lock().unwrap().clone();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_stream_loses_no_acknowledged_jetstream_message() {
    let Some(mut server) = server() else { return };
    bounded(120, async {
        let source = plain_bus();
        let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let f = Arc::clone(&failed);
        let opts = BridgeOptions::default()
            .prefix("kill")
            .max_in_flight(32)
            .ack_timeout(Duration::from_secs(1))
            .export_timeout(Duration::from_secs(60))
            .on_export_failure(move |_| {
                f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        let out = Bridge::connect(&server.url(), Arc::clone(&source), opts)
            .await
            .unwrap();
        out.ensure_stream("KILL", &["kill.>"]).await.unwrap();
        let _export = out.export("orders", Delivery::JetStream).unwrap();
        let sent = orders(4, 150);
        for o in &sent[..300] {
            source.publish("orders", o.clone()).unwrap();
        }
        // Mid-stream: some acknowledged, some in flight or still in the export's stream.
        assert!(wait_until(Duration::from_secs(20), || out.stats().exported >= 50).await);
        // Frozen first, so that the kill finds publishes in flight whatever the timing:
        // the window fills with publishes the server never answers.
        server.pause().unwrap();
        for o in &sent[300..450] {
            source.publish("orders", o.clone()).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.kill().unwrap();
        let at_kill = out.stats().exported;
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.restart().unwrap();
        for o in &sent[450..] {
            source.publish("orders", o.clone()).unwrap();
        }
        assert!(
            wait_until(Duration::from_secs(60), || out.stats().exported >= 600).await,
            "exported {:?}",
            out.stats()
        );
        let s = out.stats();
        assert_eq!(failed.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(s.export_failed, 0);
        assert!(s.reconnects >= 1, "reconnected: {s:?}");
        assert!(
            at_kill < 450,
            "the kill came mid-stream: {at_kill} exported before it"
        );
        assert!(
            s.export_retries > 0,
            "publishes in flight at the kill were sent again: {s:?}"
        );
        // Every message acknowledged is in the stream, stored once (a retry of one whose
        // acknowledgement was lost is recognised by its message id and counted).
        let got = read_back(&server.url(), "KILL", "kill.>", 600).await;
        let distinct: HashSet<_> = got.iter().cloned().collect();
        assert_eq!(distinct, sent.iter().cloned().collect::<HashSet<_>>());
        assert_eq!(
            got.len(),
            600,
            "stored once each; export duplicates acknowledged: {}",
            s.export_duplicates
        );
        eprintln!("kill/restart: {s:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopped_for_five_seconds_bounds_the_export_and_resumes() {
    let Some(server) = server() else { return };
    bounded(120, async {
        let source = plain_bus();
        let window = 16;
        let opts = BridgeOptions::default()
            .prefix("stop")
            .max_in_flight(window)
            .stream_capacity(1024)
            .ack_timeout(Duration::from_secs(1))
            .export_timeout(Duration::from_secs(60));
        let out = Bridge::connect(&server.url(), Arc::clone(&source), opts)
            .await
            .unwrap();
        out.ensure_stream("STOP", &["stop.>"]).await.unwrap();
        let _export = out.export("orders", Delivery::JetStream).unwrap();
        let sent = orders(2, 300);
        for o in &sent[..100] {
            source.publish("orders", o.clone()).unwrap();
        }
        assert!(wait_until(Duration::from_secs(20), || out.stats().exported >= 100).await);
        server.pause().unwrap();
        for o in &sent[100..] {
            source.publish("orders", o.clone()).unwrap();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let during = out.stats();
        server.resume().unwrap();
        assert!(
            wait_until(Duration::from_secs(60), || out.stats().exported >= 600).await,
            "{:?}",
            out.stats()
        );
        let s = out.stats();
        // Bounded: never more than the window in flight; the rest waited in the stream
        // (capacity 1024, so no overflow reached the bus's dead letters).
        assert!(s.export_in_flight_max <= window as u64, "{s:?}");
        assert!(during.exported <= 100 + window as u64, "{during:?}");
        assert_eq!(s.export_failed, 0);
        let stats = source.stats();
        assert_eq!((stats.dead_letters(), stats.stream_dead_letters()), (0, 0));
        let got = read_back(&server.url(), "STOP", "stop.>", 600).await;
        assert_eq!(
            got.iter().cloned().collect::<HashSet<_>>(),
            sent.iter().cloned().collect::<HashSet<_>>()
        );
        assert_eq!(got.len(), 600);
        eprintln!("sigstop: {s:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_import_redelivers_and_the_import_resumes() {
    let Some(mut server) = server() else { return };
    bounded(120, async {
        let (bus, seen) = collecting_bus("inbound");
        let inn = Bridge::connect(&server.url(), bus, BridgeOptions::default().ack_batch(16))
            .await
            .unwrap();
        inn.ensure_stream("IMP", &["imp.>"]).await.unwrap();
        let publisher = Bridge::connect(&server.url(), plain_bus(), BridgeOptions::default())
            .await
            .unwrap();
        let js = publisher.jetstream().clone();
        let publish = |o: Order| {
            let js = js.clone();
            async move {
                let mut buf = Vec::new();
                shardbus::Codec::encode(&o, &mut buf).unwrap();
                // Retried until the restarted server takes it: every message is in the stream.
                for _ in 0..100 {
                    if let Ok(ack) = js
                        .publish(format!("imp.{}", o.key), buf.clone().into())
                        .await
                    {
                        if ack.await.is_ok() {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!("could not publish {o:?}");
            }
        };
        let sent = orders(3, 100);
        let _import = inn
            .import_jetstream(
                JetStreamImport::new("IMP", "imp", "imp.>", "inbound")
                    .ack_wait(Duration::from_secs(2)),
            )
            .await
            .unwrap();
        for o in &sent[..150] {
            publish(o.clone()).await;
        }
        assert!(wait_until(Duration::from_secs(20), || seen.lock().unwrap().len() >= 30).await);
        server.kill().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.restart().unwrap();
        for o in &sent[150..] {
            publish(o.clone()).await;
        }
        let distinct = || {
            seen.lock()
                .unwrap()
                .iter()
                .cloned()
                .collect::<HashSet<_>>()
                .len()
        };
        assert!(
            wait_until(Duration::from_secs(60), || distinct() >= 300).await,
            "handled {} of 300: {:?}",
            distinct(),
            inn.stats()
        );
        let got = seen.lock().unwrap().clone();
        assert_eq!(
            got.iter().cloned().collect::<HashSet<_>>(),
            sent.iter().cloned().collect::<HashSet<_>>()
        );
        let s = inn.stats();
        assert!(s.reconnects >= 1, "{s:?}");
        // Duplicates: the server writes a consumer's acknowledgements to its store
        // asynchronously, so a SIGKILL can forget recent ones and deliver those messages
        // again with a fresh delivery count. Counted here, on the receiving side.
        let duplicates = got.len() - 300;
        eprintln!(
            "import kill: {} handled for 300 ({duplicates} duplicates), {s:?}",
            got.len()
        );
    })
    .await;
}

/// Stopping a topic export while a producer keeps publishing returns: the stop ends the
/// stream's subscription, so the final drain is finite. Here every send takes the whole
/// export timeout (no stream captures the subject: JetStream refuses, the export retries)
/// while the producer refills the stream faster than that. Every message published is
/// given to the export-failure handler or is a bus dead letter (stream full, or no
/// subscriber once the export ended): none is unaccounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_an_export_under_a_steady_producer_returns() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let Some(server) = server() else { return };
    bounded(60, async {
        let source = plain_bus();
        let opts = BridgeOptions::default()
            .max_in_flight(1)
            .stream_capacity(4)
            .export_timeout(Duration::from_millis(300));
        let out = Bridge::connect(&server.url(), Arc::clone(&source), opts)
            .await
            .unwrap();
        let export = out.export("steady", Delivery::JetStream).unwrap();
        let running = Arc::new(AtomicBool::new(true));
        let published = Arc::new(AtomicU64::new(0));
        let producer = {
            let (bus, running, published) = (
                Arc::clone(&source),
                Arc::clone(&running),
                Arc::clone(&published),
            );
            std::thread::spawn(move || {
                let mut seq = 0;
                while running.load(Ordering::SeqCst) {
                    bus.publish("steady", Order::new("k", seq)).unwrap();
                    published.fetch_add(1, Ordering::SeqCst);
                    seq += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        assert!(wait_until(Duration::from_secs(10), || out.stats().export_failed >= 2).await);
        // The watchdog: without the end of the subscription, the drain never ends.
        let stopped = tokio::time::timeout(Duration::from_secs(20), export.stop()).await;
        let failed = out.stats().export_failed;
        // Still publishing after the stop: nothing more reaches the export.
        let after = published.load(Ordering::SeqCst);
        let more = wait_until(Duration::from_secs(10), || {
            published.load(Ordering::SeqCst) >= after + 100
        })
        .await;
        running.store(false, Ordering::SeqCst);
        producer.join().unwrap();
        assert!(
            stopped.is_ok(),
            "the stop did not return while the producer kept publishing"
        );
        assert!(more);
        tokio::task::spawn_blocking({
            let bus = Arc::clone(&source);
            move || bus.flush().unwrap()
        })
        .await
        .unwrap();
        let s = out.stats();
        assert_eq!(
            s.export_failed, failed,
            "nothing reaches the export after the stop"
        );
        assert_eq!(s.exported, 0);
        assert_eq!(
            s.export_failed + source.stats().dead_letters(),
            published.load(Ordering::SeqCst),
            "every published message failed or is a dead letter: {s:?}"
        );
    })
    .await;
}
