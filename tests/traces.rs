//! The `tracing` events of rare events: supervision restarts and stops, and the end of a
//! shutdown, each inside the span of its shard thread (or of the shutdown). A small
//! subscriber, installed as the global default of this test binary (the events come from
//! the shard threads), records every event with its fields and the span it happened in.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use shardbus::{Bus, Context, Handler, Supervision};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A span's name and its fields (as text).
type SpanInfo = (String, HashMap<String, String>);

/// One event: its message, its other fields (as text), and the innermost span entered on
/// its thread.
#[derive(Debug, Clone)]
struct Seen {
    message: String,
    fields: HashMap<String, String>,
    span: Option<SpanInfo>,
}

#[derive(Default)]
struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

#[derive(Default)]
struct Recorder {
    next_id: AtomicU64,
    spans: Mutex<HashMap<u64, SpanInfo>>,
    events: Mutex<Vec<Seen>>,
}

thread_local! {
    static ENTERED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

impl Subscriber for &'static Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = Fields::default();
        span.record(&mut fields);
        self.spans
            .lock()
            .unwrap()
            .insert(id, (span.metadata().name().to_owned(), fields.0));
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        let span = ENTERED
            .with(|e| e.borrow().last().copied())
            .and_then(|id| self.spans.lock().unwrap().get(&id).cloned());
        self.events.lock().unwrap().push(Seen {
            message,
            fields: fields.0,
            span,
        });
    }

    fn enter(&self, span: &Id) {
        ENTERED.with(|e| e.borrow_mut().push(span.into_u64()));
    }

    fn exit(&self, _: &Id) {
        ENTERED.with(|e| {
            e.borrow_mut().pop();
        });
    }
}

fn recorder() -> &'static Recorder {
    static RECORDER: OnceLock<&'static Recorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let r: &'static Recorder = Box::leak(Box::default());
        tracing::subscriber::set_global_default(r).expect("the only subscriber of this binary");
        // The handlers' panics are expected: keep them off the test's output.
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&"traced panic") {
                report(info);
            }
        }));
        r
    })
}

/// Events whose `topic` field is `topic`, as (message, shard span's `shard` field).
fn events_of(topic: &str) -> Vec<(String, Option<String>)> {
    recorder()
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.fields.get("topic").map(String::as_str) == Some(topic))
        .map(|e| {
            let shard = e
                .span
                .as_ref()
                .filter(|(name, _)| name == "shardbus_shard")
                .and_then(|(_, fields)| fields.get("shard").cloned());
            (e.message.clone(), shard)
        })
        .collect()
}

/// Panics on every message that is 0.
struct PanicsOnZero;

impl Handler<u32> for PanicsOnZero {
    fn handle(&mut self, _: &mut Context<'_, u32>, msg: &u32) {
        if *msg == 0 {
            panic!("traced panic");
        }
    }
}

#[test]
fn supervision_restarts_and_stops_and_the_shutdown_are_traced_once_each() {
    let rec = recorder();
    let bus = Bus::<u32>::builder()
        .shards(2)
        .pin_threads(false)
        .build()
        .unwrap();
    let restarted = "traces-restarted";
    let stopped = "traces-stopped";
    let resumed = "traces-resumed";
    bus.subscribe_supervised(restarted, Supervision::Restart, || PanicsOnZero)
        .unwrap();
    bus.subscribe_supervised(stopped, Supervision::Stop, || PanicsOnZero)
        .unwrap();
    bus.subscribe_supervised(resumed, Supervision::Resume, || PanicsOnZero)
        .unwrap();
    for msg in [0, 1, 0, 2, 0] {
        bus.publish(restarted, msg).unwrap();
        bus.publish(stopped, msg).unwrap();
        bus.publish(resumed, msg).unwrap();
    }
    let shard_of = |t: &str| Some(bus.shard_of(t).unwrap().index().to_string());
    let (restarted_shard, stopped_shard) = (shard_of(restarted), shard_of(stopped));
    let stats = bus.shutdown();
    // Three panics on `restarted`, one on `stopped` (then unrouted), three on `resumed`.
    assert_eq!(stats.panics(), 7);
    assert_eq!(stats.handled(), 5 + 1 + 5);

    let restart = "actor restarted after a panic (Supervision::Restart)".to_owned();
    assert_eq!(events_of(restarted), vec![(restart, restarted_shard); 3]);
    let stop = "subscription stopped after a panic".to_owned();
    assert_eq!(events_of(stopped), vec![(stop, stopped_shard)]);
    // A resumed actor is counted, not traced.
    assert_eq!(events_of(resumed), vec![]);

    let events = rec.events.lock().unwrap();
    let shut: Vec<&Seen> = events
        .iter()
        .filter(|e| e.message == "bus shut down")
        .collect();
    assert_eq!(shut.len(), 1, "{shut:?}");
    assert_eq!(
        shut[0].fields.get("handled").map(String::as_str),
        Some("11")
    );
    assert_eq!(
        shut[0].fields.get("undrained").map(String::as_str),
        Some("0")
    );
    assert_eq!(
        shut[0].span.as_ref().map(|(name, _)| name.as_str()),
        Some("shardbus_shutdown")
    );
}
