//! The `metrics` feature: what the shards export through the `metrics` facade, read back
//! from a small recorder installed for this test binary (a process has one global
//! recorder, so every test here shares it and uses its own `bus` label).
#![cfg(feature = "metrics")]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use common::{name_on_shard, TestDir, PATIENCE};
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use shardbus::{Bus, Context, FsyncPolicy, Handler, Persistence, Supervision};

/// A series: its name and its labels, sorted.
type SeriesKey = (String, Vec<(String, String)>);

/// Cumulative values, as a Prometheus exporter keeps them: counters add up, a gauge holds
/// its last value, a histogram every sample. Registering a series twice gives the same
/// storage.
#[derive(Clone, Default)]
struct TestRecorder {
    counters: Arc<Mutex<HashMap<SeriesKey, Arc<AtomicU64>>>>,
    gauges: Arc<Mutex<HashMap<SeriesKey, Arc<AtomicU64>>>>,
    histograms: Arc<Mutex<HashMap<SeriesKey, Arc<Samples>>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

fn series(key: &Key) -> SeriesKey {
    let mut labels: Vec<(String, String)> = key
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect();
    labels.sort();
    (key.name().to_owned(), labels)
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut map = self.counters.lock().unwrap();
        Counter::from_arc(map.entry(series(key)).or_default().clone())
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut map = self.gauges.lock().unwrap();
        Gauge::from_arc(map.entry(series(key)).or_default().clone())
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut map = self.histograms.lock().unwrap();
        Histogram::from_arc(map.entry(series(key)).or_default().clone())
    }
}

impl TestRecorder {
    fn key(name: &str, bus: &str, shard: usize) -> SeriesKey {
        (
            name.to_owned(),
            vec![
                ("bus".to_owned(), bus.to_owned()),
                ("shard".to_owned(), shard.to_string()),
            ],
        )
    }

    /// A counter of shard `shard` of bus `bus`; `None` if never registered.
    fn counter(&self, name: &str, bus: &str, shard: usize) -> Option<u64> {
        let map = self.counters.lock().unwrap();
        map.get(&Self::key(name, bus, shard))
            .map(|c| c.load(Ordering::SeqCst))
    }

    fn gauge(&self, name: &str, bus: &str, shard: usize) -> Option<f64> {
        let map = self.gauges.lock().unwrap();
        map.get(&Self::key(name, bus, shard))
            .map(|g| f64::from_bits(g.load(Ordering::SeqCst)))
    }

    fn samples(&self, name: &str, bus: &str, shard: usize) -> Option<Vec<f64>> {
        let map = self.histograms.lock().unwrap();
        map.get(&Self::key(name, bus, shard))
            .map(|h| h.0.lock().unwrap().clone())
    }

    /// Waits (bounded) until `f` holds.
    fn wait_until(&self, what: &str, f: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !f(self) {
            assert!(Instant::now() < deadline, "waited for {what}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// The recorder of this test binary, installed once.
fn recorder() -> &'static TestRecorder {
    static RECORDER: OnceLock<TestRecorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        // The handlers' panics are expected: keep them off the test's output.
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let text = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or_default();
            if !text.starts_with("flaky") {
                report(info);
            }
        }));
        let r = TestRecorder::default();
        metrics::set_global_recorder(r.clone()).expect("the only recorder of this binary");
        r
    })
}

/// The per-shard counters as exported: `(received, handled, unrouted, dead_letters, panics,
/// restarts, stopped_subscriptions, dropped)`.
fn exported(bus: &str, shard: usize) -> [u64; 8] {
    let r = recorder();
    let c = |name: &str| {
        r.counter(name, bus, shard)
            .unwrap_or_else(|| panic!("{name} of shard {shard} of {bus} is not registered"))
    };
    [
        c("shardbus_received_total"),
        c("shardbus_handled_total"),
        c("shardbus_unrouted_total"),
        c("shardbus_dead_letters_total"),
        c("shardbus_panics_total"),
        c("shardbus_restarts_total"),
        c("shardbus_stopped_subscriptions_total"),
        c("shardbus_dropped_total"),
    ]
}

/// The same values from `Bus::stats`.
fn from_stats(s: &shardbus::ShardStats) -> [u64; 8] {
    [
        s.received,
        s.handled,
        s.unrouted,
        s.dead_letters,
        s.panics,
        s.restarts,
        s.stopped_subscriptions,
        s.dropped,
    ]
}

/// Panics on every message divisible by 100; its `on_stop` panics if `stop_panics`.
struct Flaky {
    stop_panics: bool,
}

impl Handler<u32> for Flaky {
    fn handle(&mut self, _ctx: &mut Context<'_, u32>, msg: &u32) {
        if msg.is_multiple_of(100) {
            panic!("flaky handler: message {msg}");
        }
    }

    fn on_stop(&mut self, _ctx: &mut Context<'_, u32>) {
        if self.stop_panics {
            panic!("flaky on_stop");
        }
    }
}

#[test]
fn exported_counters_are_exact_after_a_known_workload_and_after_shutdown() {
    const BUS: &str = "memory";
    let rec = recorder();
    let bus = Bus::<u32>::builder()
        .shards(2)
        .pin_threads(false)
        .metrics_label(BUS)
        .build()
        .unwrap();
    // Shard 0: a topic whose actor never panics in `handle` but panics in `on_stop` (counted
    // at shutdown), and a topic without subscribers.
    let plain = name_on_shard(&bus, "plain", 0);
    let nobody = name_on_shard(&bus, "nobody", 0);
    bus.subscribe(&*plain, Flaky { stop_panics: true }).unwrap();
    // Shard 1: an actor restarted after each of its panics, and one stopped at its first.
    let restarted = name_on_shard(&bus, "restarted", 1);
    let stopped = name_on_shard(&bus, "stopped", 1);
    bus.subscribe_supervised(&*restarted, Supervision::Restart, || Flaky {
        stop_panics: false,
    })
    .unwrap();
    bus.subscribe_supervised(&*stopped, Supervision::Stop, || Flaky {
        stop_panics: false,
    })
    .unwrap();

    let mut publisher = bus.publisher();
    for i in 1..=1000 {
        publisher.publish(&*plain, i * 7 + 1).unwrap(); // ten of these panic, see below
    }
    for i in 0..4 {
        publisher.publish(&*nobody, i).unwrap();
    }
    for i in 0..500 {
        publisher.publish(&*restarted, i).unwrap(); // 0, 100, 200, 300, 400 panic
    }
    for i in 0..3 {
        publisher.publish(&*stopped, i * 100).unwrap(); // the first panics and stops it
    }
    drop(publisher);
    // `i * 7 + 1` for 1..=1000 hits a multiple of 100 exactly when 7i = 99 (mod 100), that
    // is i = 57 (mod 100): ten panics on shard 0 too.
    let shard0 = [1004, 1000, 4, 4 + 10, 10, 0, 0, 0];
    // 500 + 3 received; 500 + 1 handled (a message a handler panicked on counts as handled);
    // the stopped subscription's last two are unrouted; 5 + 1 panics, each dead-lettered.
    let shard1 = [503, 501, 2, 2 + 6, 6, 5, 1, 0];

    // The idle pass after the workload exports it.
    rec.wait_until("the workload's counters", |_| {
        rec.counter("shardbus_received_total", BUS, 0) == Some(1004)
            && rec.counter("shardbus_received_total", BUS, 1) == Some(503)
    });
    assert_eq!(exported(BUS, 0), shard0);
    assert_eq!(exported(BUS, 1), shard1);
    let stats = bus.stats();
    assert_eq!(from_stats(&stats.shards[0]), shard0);
    assert_eq!(from_stats(&stats.shards[1]), shard1);

    let stats = bus.shutdown();
    // The stop exports once more: `on_stop` of the actor on shard 0 panicked.
    let shard0_after = [1004, 1000, 4, 14, 11, 0, 0, 0];
    assert_eq!(exported(BUS, 0), shard0_after);
    assert_eq!(exported(BUS, 1), shard1);
    assert_eq!(from_stats(&stats.shards[0]), shard0_after);
    assert_eq!(from_stats(&stats.shards[1]), shard1);
    for shard in 0..2 {
        assert_eq!(rec.gauge("shardbus_queue_depth", BUS, shard), Some(0.0));
        assert_eq!(
            rec.gauge("shardbus_queue_high_water", BUS, shard),
            Some(stats.shards[shard].high_water as f64),
            "shard {shard}"
        );
        // A memory-only bus has no log series.
        assert_eq!(
            rec.counter("shardbus_log_appended_bytes_total", BUS, shard),
            None
        );
    }
}

#[test]
fn a_persistent_shard_exports_its_log_bytes_and_fsync_times() {
    let rec = recorder();
    for (policy, label) in [
        (FsyncPolicy::Batch, "log-batch"),
        (FsyncPolicy::Always, "log-always"),
    ] {
        let dir = TestDir::new(label);
        let bus = Bus::<String>::builder()
            .shards(1)
            .pin_threads(false)
            .metrics_label(label)
            .subscribe("t", |_: &mut Context<'_, String>, _: &String| {})
            .persist(Persistence::new(dir.path()).fsync(policy))
            .build()
            .unwrap();
        const N: u64 = 20;
        // Records of one size: the second half appends exactly as many bytes as the first.
        let mut appended = Vec::new();
        let mut size = Vec::new();
        for half in 1..=2 {
            for i in 0..N {
                bus.publish_durable("t", format!("{:08}", i)).unwrap();
            }
            rec.wait_until("the durable publishes' counters", |r| {
                r.counter("shardbus_received_total", label, 0) == Some(N * half)
            });
            appended.push(
                rec.counter("shardbus_log_appended_bytes_total", label, 0)
                    .unwrap(),
            );
            size.push(rec.gauge("shardbus_log_size_bytes", label, 0).unwrap());
        }
        let stats = bus.shutdown();
        assert_eq!(stats.handled(), 2 * N, "{label}");
        assert!(appended[0] > 0, "{label}: {appended:?}");
        assert_eq!(appended[1], 2 * appended[0], "{label}: {appended:?}");
        // One segment: what the log grew by is what was appended.
        assert_eq!(
            size[1] - size[0],
            (appended[1] - appended[0]) as f64,
            "{label}: {size:?}"
        );
        // Each durable publish returned after a sync that began after its record was
        // written: one sync each at least, on the shard thread (`Always`) or on the log's
        // sync thread (`Batch`, pipelined).
        let fsyncs = rec.samples("shardbus_log_fsync_seconds", label, 0).unwrap();
        assert!(
            fsyncs.len() as u64 >= 2 * N,
            "{label}: {} syncs",
            fsyncs.len()
        );
        assert!(
            fsyncs.iter().all(|s| s.is_finite() && *s >= 0.0),
            "{label}: {fsyncs:?}"
        );
    }
}
