//! Durable publishing from a handler, on one of the bus's own shard threads: the shards
//! confirm records between handlers, so a durable publish there would wait for itself. It
//! is refused with `DurableError::WouldDeadlock` and the message back (`Bus`, and a
//! `Publisher` the handler owns); a handler's `Context::publish` is logged as usual.
//!
//! The scenario runs on the shard thread and reports over a channel; the test waits with
//! `recv_timeout(WATCHDOG)`, a hang detector (without the detection the call hangs), not a
//! timing assertion.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use crate::common::persist::{builder, per_topic, persistence, seen, topic, wait_seen};
use shardbus::log::SimStorage;
use shardbus::{Bus, Context, DurableError};

const WATCHDOG: Duration = Duration::from_secs(10);

#[test]
fn publish_durable_from_a_handler_is_refused_with_the_message_back() {
    let sim = SimStorage::new();
    let s = seen();
    let bus = Arc::new(
        builder(1, persistence(&sim), &s)
            .drop_timeout(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let slot: Arc<OnceLock<Weak<Bus<String>>>> = Arc::new(OnceLock::new());
    slot.set(Arc::downgrade(&bus)).unwrap();
    let publisher = Mutex::new(bus.publisher());
    let (tx, rx) = mpsc::channel();
    bus.subscribe("relay", move |ctx: &mut Context<'_, String>, m: &String| {
        let outcomes = {
            let bus = slot.get().and_then(Weak::upgrade).unwrap();
            let mut publisher = publisher.lock().unwrap();
            (
                bus.publish_durable(topic(0), format!("{m}-bus"))
                    .unwrap_err(),
                publisher
                    .publish_durable(topic(0), format!("{m}-publisher"))
                    .unwrap_err(),
                publisher.wait_durable(),
            )
        };
        // What a handler does instead: its publish is logged before any handler sees it.
        ctx.publish(topic(1), "1".to_owned()).unwrap();
        tx.send(outcomes).unwrap();
    })
    .unwrap();
    bus.publish("relay", "r".to_owned()).unwrap();
    let (from_bus, from_publisher, wait) = rx
        .recv_timeout(WATCHDOG)
        .expect("no report: the handler is stuck in a durable publish");
    assert!(
        matches!(&from_bus, DurableError::WouldDeadlock(m) if m == "r-bus"),
        "{from_bus:?}"
    );
    assert_eq!(from_bus.into_inner().as_deref(), Some("r-bus"));
    assert!(
        matches!(&from_publisher, DurableError::WouldDeadlock(m) if m == "r-publisher"),
        "{from_publisher:?}"
    );
    assert!(
        matches!(wait, Err(DurableError::WouldDeadlock(()))),
        "{wait:?}"
    );
    wait_seen(&s, 1);
    let bus = Arc::try_unwrap(bus).unwrap_or_else(|_| panic!("a handler holds the bus"));
    let stats = bus.shutdown();
    // Only the handler's `Context::publish` reached the topic handlers.
    let mut expected = vec![Vec::new(); crate::common::persist::TOPICS];
    expected[1].push(1);
    assert_eq!(per_topic(&s), (expected, false));
    assert_eq!(stats.handled(), 2);
}
