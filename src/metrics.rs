//! The `metrics` feature: each shard's counters and gauges, and its log's appended bytes,
//! size and fsync times, exported through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! The shard loop already keeps its counters in plain locals ([`LocalCounters`]) and stores
//! them for [`Bus::stats`](crate::Bus::stats) after each pass that did work. This module turns
//! them into `metrics` calls away from the per-message path: [`ShardMetrics::after_pass`]
//! exports what changed since the last export on every [`FLUSH_EVERY`]-th busy pass and on the
//! first idle pass after work, and [`ShardMetrics::flush`] exports once more when the shard
//! stops, so that the values are exact once `shutdown` returns. The fsync histogram is fed by
//! the log itself, one sample per `fdatasync` (on the shard thread or the log's sync thread):
//! an fsync costs far more than the two clock reads.
//!
//! Every series has the labels `bus` ([`Builder::metrics_label`](crate::Builder::metrics_label))
//! and `shard` (the shard's index). The handles are registered when the bus is built, with the
//! recorder installed then: install the recorder (exporter) before building the bus.
//!
//! Without the feature every type here is empty and every call compiles to nothing.

use crate::log::ShardLog;
use crate::stats::LocalCounters;

/// A busy shard exports its counters once every this many passes that did work (and when it
/// next finds nothing to do). A pass moves up to a batch per input, so under load an export
/// covers hundreds to thousands of messages; under a trickle the idle pass after each burst
/// exports it.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) const FLUSH_EVERY: u32 = 64;

/// The bus-wide setting: the value of the `bus` label.
#[derive(Debug, Clone)]
pub(crate) struct BusMetrics {
    #[cfg(feature = "metrics")]
    label: crate::sync::plain::Arc<str>,
}

impl BusMetrics {
    /// `label` is [`Builder::metrics_label`](crate::Builder::metrics_label)'s value.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(label: &str) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            label: label.into(),
        }
    }
}

#[cfg(feature = "metrics")]
pub(crate) use on::ShardMetrics;

#[cfg(not(feature = "metrics"))]
pub(crate) use off::ShardMetrics;

#[cfg(feature = "metrics")]
mod on {
    use super::{BusMetrics, LocalCounters, ShardLog, FLUSH_EVERY};
    use crate::log::SyncObserver;
    use crate::sync::plain::Arc;
    use metrics::{Counter, Gauge, Label, Unit};

    /// One exported value of a shard: its name, kind, description and where the shard keeps
    /// it. A new statistic is one line of [`SHARD_VALUES`].
    struct Exported {
        name: &'static str,
        kind: Kind,
        help: &'static str,
        read: fn(&LocalCounters) -> u64,
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Kind {
        /// Monotone: exported as the increase since the last export.
        Counter,
        /// Sampled: exported as its current value.
        Gauge,
    }

    /// Every value of [`LocalCounters`] that is exported, in no particular order.
    const SHARD_VALUES: &[Exported] = &[
        Exported {
            name: "shardbus_received_total",
            kind: Kind::Counter,
            help: "Messages the shard took from its inputs.",
            read: |c| c.received,
        },
        Exported {
            name: "shardbus_handled_total",
            kind: Kind::Counter,
            help: "Messages delivered to at least one subscriber.",
            read: |c| c.handled,
        },
        Exported {
            name: "shardbus_unrouted_total",
            kind: Kind::Counter,
            help: "Messages whose topic had no subscriber.",
            read: |c| c.unrouted,
        },
        Exported {
            name: "shardbus_dead_letters_total",
            kind: Kind::Counter,
            help: "Calls of the dead-letter handler (unrouted, panicked on, not logged).",
            read: |c| c.dead_letters,
        },
        Exported {
            name: "shardbus_panics_total",
            kind: Kind::Counter,
            help: "Panics of actor code caught by the shard.",
            read: |c| c.panics,
        },
        Exported {
            name: "shardbus_restarts_total",
            kind: Kind::Counter,
            help: "Actors restarted by their supervision policy.",
            read: |c| c.restarts,
        },
        Exported {
            name: "shardbus_stopped_subscriptions_total",
            kind: Kind::Counter,
            help: "Subscriptions stopped by their supervision policy.",
            read: |c| c.stopped,
        },
        Exported {
            name: "shardbus_dropped_total",
            kind: Kind::Counter,
            help: "Accepted messages dropped undelivered (a deadline shutdown).",
            read: |c| c.dropped,
        },
        Exported {
            name: "shardbus_queue_depth",
            kind: Kind::Gauge,
            help: "Messages queued for the shard at its last sample.",
            read: |c| c.depth,
        },
        Exported {
            name: "shardbus_queue_high_water",
            kind: Kind::Gauge,
            help: "The largest queue depth sampled.",
            read: |c| c.high_water,
        },
        Exported {
            name: "shardbus_overflow_depth",
            kind: Kind::Gauge,
            help: "Messages actors published to other shards waiting in the overflow queue.",
            read: |c| c.overflow_depth,
        },
        Exported {
            name: "shardbus_overflow_peak",
            kind: Kind::Gauge,
            help: "The deepest the overflow queue has been.",
            read: |c| c.overflow_peak,
        },
        Exported {
            name: "shardbus_overflow_refused_total",
            kind: Kind::Counter,
            help: "Actors' publishes refused past the overflow limit (given back as Full).",
            read: |c| c.overflow_refused,
        },
    ];

    const LOG_APPENDED: &str = "shardbus_log_appended_bytes_total";
    const LOG_SIZE: &str = "shardbus_log_size_bytes";
    const LOG_FSYNC: &str = "shardbus_log_fsync_seconds";

    enum Handle {
        Counter(Counter),
        Gauge(Gauge),
    }

    /// A persistent shard's log values.
    struct LogHandles {
        appended: Counter,
        size: Gauge,
        last_appended: u64,
        last_size: u64,
    }

    /// One shard's metric handles and what it exported last. Owned by the shard thread.
    pub(crate) struct ShardMetrics {
        /// `SHARD_VALUES[i]`'s handle.
        handles: Box<[Handle]>,
        /// `SHARD_VALUES[i]`'s value at the last export.
        last: Box<[u64]>,
        log: Option<LogHandles>,
        /// Busy passes since the shard started (wrapping).
        passes: u32,
        /// Whether a pass did work since the last export.
        pending: bool,
    }

    impl ShardMetrics {
        /// Registers shard `shard`'s series with the recorder installed now; a persistent
        /// shard's `log` gets the fsync histogram.
        pub(crate) fn new(bus: &BusMetrics, shard: usize, log: Option<&mut ShardLog>) -> Self {
            describe();
            let labels = [
                Label::new("bus", bus.label.to_string()),
                Label::new("shard", shard.to_string()),
            ];
            let handles = SHARD_VALUES
                .iter()
                .map(|v| match v.kind {
                    Kind::Counter => Handle::Counter(metrics::counter!(v.name, labels.iter())),
                    Kind::Gauge => {
                        let g = metrics::gauge!(v.name, labels.iter());
                        g.set(0.0);
                        Handle::Gauge(g)
                    }
                })
                .collect();
            let log = log.map(|log| {
                let fsync = metrics::histogram!(LOG_FSYNC, labels.iter());
                log.observe_fsync(SyncObserver(Arc::new(move |took| {
                    fsync.record(took.as_secs_f64());
                })));
                let size = metrics::gauge!(LOG_SIZE, labels.iter());
                let last_size = log.size_bytes();
                size.set(last_size as f64);
                LogHandles {
                    appended: metrics::counter!(LOG_APPENDED, labels.iter()),
                    size,
                    last_appended: log.appended_bytes(),
                    last_size,
                }
            });
            Self {
                handles,
                last: vec![0; SHARD_VALUES.len()].into_boxed_slice(),
                log,
                passes: 0,
                pending: false,
            }
        }

        /// After each pass of the shard loop (`did`: items the pass moved): exports on every
        /// [`FLUSH_EVERY`]-th busy pass and on the first idle pass after work; otherwise a
        /// couple of instructions.
        #[inline]
        pub(crate) fn after_pass(
            &mut self,
            did: usize,
            counters: &LocalCounters,
            log: Option<&ShardLog>,
        ) {
            if did > 0 {
                self.pending = true;
                self.passes = self.passes.wrapping_add(1);
                if !self.passes.is_multiple_of(FLUSH_EVERY) {
                    return;
                }
            } else if !self.pending {
                return;
            }
            self.flush(counters, log);
        }

        /// Exports every value that changed since the last export.
        #[cold]
        #[inline(never)]
        pub(crate) fn flush(&mut self, counters: &LocalCounters, log: Option<&ShardLog>) {
            self.pending = false;
            for ((value, handle), last) in SHARD_VALUES
                .iter()
                .zip(self.handles.iter())
                .zip(self.last.iter_mut())
            {
                let now = (value.read)(counters);
                if now == *last {
                    continue;
                }
                match handle {
                    // Monotone; `saturating_sub` only guards the export against a bug.
                    Handle::Counter(c) => c.increment(now.saturating_sub(*last)),
                    Handle::Gauge(g) => g.set(now as f64),
                }
                *last = now;
            }
            if let (Some(h), Some(log)) = (self.log.as_mut(), log) {
                let appended = log.appended_bytes();
                if appended != h.last_appended {
                    h.appended
                        .increment(appended.saturating_sub(h.last_appended));
                    h.last_appended = appended;
                }
                let size = log.size_bytes();
                if size != h.last_size {
                    h.size.set(size as f64);
                    h.last_size = size;
                }
            }
        }
    }

    /// Describes every series to the recorder (units and help texts). Cheap; a recorder
    /// keeps the first description of a name.
    fn describe() {
        for v in SHARD_VALUES {
            match v.kind {
                Kind::Counter => metrics::describe_counter!(v.name, Unit::Count, v.help),
                Kind::Gauge => metrics::describe_gauge!(v.name, Unit::Count, v.help),
            }
        }
        metrics::describe_counter!(
            LOG_APPENDED,
            Unit::Bytes,
            "Bytes the shard appended to its log."
        );
        metrics::describe_gauge!(
            LOG_SIZE,
            Unit::Bytes,
            "Bytes of the shard's log segments on disk."
        );
        metrics::describe_histogram!(
            LOG_FSYNC,
            Unit::Seconds,
            "Time of each fdatasync of the shard's active log segment."
        );
    }
}

#[cfg(not(feature = "metrics"))]
mod off {
    use super::{BusMetrics, LocalCounters, ShardLog};

    /// Without the `metrics` feature: nothing to keep, nothing to do.
    pub(crate) struct ShardMetrics;

    impl ShardMetrics {
        #[inline(always)]
        pub(crate) fn new(_bus: &BusMetrics, _shard: usize, _log: Option<&mut ShardLog>) -> Self {
            Self
        }

        #[inline(always)]
        pub(crate) fn after_pass(&mut self, _: usize, _: &LocalCounters, _: Option<&ShardLog>) {}

        #[inline(always)]
        pub(crate) fn flush(&mut self, _: &LocalCounters, _: Option<&ShardLog>) {}
    }
}
