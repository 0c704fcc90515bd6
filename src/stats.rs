//! Per-shard statistics: counters written only by their shard thread and read by anyone.
//!
//! Every field of [`ShardCounters`] has one writer, the shard thread, which keeps the
//! running values in plain locals and stores them once per batch. All accesses are
//! `Relaxed`: each counter is a monotone (or, for depth, a sampled) number that no
//! reader uses to decide whether other memory is ready; after `shutdown` joins the
//! threads, the join gives the final values happens-before.

use crate::sync::stat::AtomicU64;
use std::sync::atomic::Ordering;

/// Buckets of the handler-time histogram: 16 exact buckets for 0..16 ns, then 8
/// sub-buckets per power of two up to `2^63` ns (12.5% resolution).
const BUCKETS: usize = 16 + 60 * 8;

/// How often a handler call is timed: one call in `SAMPLE_EVERY` (a power of two), so
/// that reading the clock stays off the common path.
pub(crate) const SAMPLE_EVERY: u64 = 256;

fn bucket_of(ns: u64) -> usize {
    if ns < 16 {
        return ns as usize;
    }
    let exp = 63 - u64::from(ns.leading_zeros()); // >= 4
    let sub = (ns >> (exp - 3)) & 7;
    16 + (exp as usize - 4) * 8 + sub as usize
}

/// The largest value that lands in `bucket`.
fn bucket_high(bucket: usize) -> u64 {
    if bucket < 16 {
        return bucket as u64;
    }
    let exp = (bucket - 16) / 8 + 4;
    let sub = ((bucket - 16) % 8) as u64;
    let low = (8 + sub) << (exp - 3);
    low + ((1u64 << (exp - 3)) - 1)
}

/// The counters of one shard. Padded as a whole by its owner (`CachePadded`).
pub(crate) struct ShardCounters {
    pub(crate) received: AtomicU64,
    pub(crate) handled: AtomicU64,
    pub(crate) unrouted: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) stopped: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) depth: AtomicU64,
    pub(crate) high_water: AtomicU64,
    pub(crate) overflow_depth: AtomicU64,
    pub(crate) overflow_peak: AtomicU64,
    pub(crate) overflow_refused: AtomicU64,
    /// `core + 1` when pinned, 0 when not.
    pub(crate) core: AtomicU64,
    /// `panics` split by [`PanicSite`]. Stored only when `panics` changed.
    panic_sites: [AtomicU64; PanicSite::COUNT],
    hist: Box<[AtomicU64]>,
    hist_max: AtomicU64,
    /// Subscriber streams of this shard's topics (`stream.rs`), kept apart from the
    /// shard's running values: messages waiting in their overflows (added by the shard
    /// thread before a push into an overflow, subtracted by a consumer after it pops one:
    /// two writers, so read-modify-writes), the largest such sum (the shard thread's
    /// `fetch_max` after each addition), and the messages their actors dead-lettered
    /// (the shard thread only). Relaxed like the rest: statistics, read by no protocol.
    pub(crate) stream_overflow: AtomicU64,
    pub(crate) stream_overflow_peak: AtomicU64,
    pub(crate) stream_dead_letters: AtomicU64,
}

/// The shard thread's private running values, published with [`ShardCounters::publish`].
#[derive(Default, Clone)]
pub(crate) struct LocalCounters {
    pub(crate) received: u64,
    pub(crate) handled: u64,
    pub(crate) unrouted: u64,
    pub(crate) dead_letters: u64,
    pub(crate) panics: u64,
    pub(crate) restarts: u64,
    pub(crate) stopped: u64,
    pub(crate) dropped: u64,
    pub(crate) depth: u64,
    pub(crate) high_water: u64,
    pub(crate) overflow_depth: u64,
    pub(crate) overflow_peak: u64,
    pub(crate) overflow_refused: u64,
    /// `panics` split by [`PanicSite`].
    pub(crate) panic_sites: [u64; PanicSite::COUNT],
}

/// Where on the shard thread a panic of user code was caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PanicSite {
    Handle,
    OnStart,
    OnStop,
    Factory,
    DeadLetter,
    Drop,
    Encode,
    Decode,
}

impl PanicSite {
    const COUNT: usize = 8;
}

impl LocalCounters {
    /// Counts a panic caught at `site` (in `panics` and in its site's count).
    #[cold]
    pub(crate) fn panicked(&mut self, site: PanicSite) {
        self.panics += 1;
        self.panic_sites[site as usize] += 1;
    }
}

impl ShardCounters {
    pub(crate) fn new() -> Self {
        Self {
            received: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            stopped: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            depth: AtomicU64::new(0),
            high_water: AtomicU64::new(0),
            overflow_depth: AtomicU64::new(0),
            overflow_peak: AtomicU64::new(0),
            overflow_refused: AtomicU64::new(0),
            core: AtomicU64::new(0),
            panic_sites: std::array::from_fn(|_| AtomicU64::new(0)),
            hist: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            hist_max: AtomicU64::new(0),
            stream_overflow: AtomicU64::new(0),
            stream_overflow_peak: AtomicU64::new(0),
            stream_dead_letters: AtomicU64::new(0),
        }
    }

    /// Stores the shard's running values (shard thread only).
    pub(crate) fn publish(&self, l: &LocalCounters) {
        let r = Ordering::Relaxed;
        self.received.store(l.received, r);
        self.handled.store(l.handled, r);
        self.unrouted.store(l.unrouted, r);
        self.dead_letters.store(l.dead_letters, r);
        // Only this thread writes `panics`: its own load is exact. The split is stored
        // first and only when there is something new, so a pass costs one load here.
        if self.panics.load(r) != l.panics {
            for (site, &n) in self.panic_sites.iter().zip(l.panic_sites.iter()) {
                site.store(n, r);
            }
        }
        self.panics.store(l.panics, r);
        self.restarts.store(l.restarts, r);
        self.stopped.store(l.stopped, r);
        self.dropped.store(l.dropped, r);
        self.depth.store(l.depth, r);
        self.high_water.store(l.high_water, r);
        self.overflow_depth.store(l.overflow_depth, r);
        self.overflow_peak.store(l.overflow_peak, r);
        self.overflow_refused.store(l.overflow_refused, r);
    }

    /// Records one sampled handler time (shard thread only: load + store, no RMW).
    pub(crate) fn record_handler_ns(&self, ns: u64) {
        let b = &self.hist[bucket_of(ns)];
        b.store(b.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if ns > self.hist_max.load(Ordering::Relaxed) {
            self.hist_max.store(ns, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self, shard: usize) -> ShardStats {
        let r = Ordering::Relaxed;
        let counts: Vec<u64> = self.hist.iter().map(|b| b.load(r)).collect();
        let total: u64 = counts.iter().sum();
        let pct = |q: f64| -> u64 {
            if total == 0 {
                return 0;
            }
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, &c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return bucket_high(i);
                }
            }
            bucket_high(BUCKETS - 1)
        };
        let max = self.hist_max.load(r);
        let core = self.core.load(r);
        let site = |s: PanicSite| self.panic_sites[s as usize].load(r);
        ShardStats {
            shard,
            core: core.checked_sub(1).map(|c| c as usize),
            received: self.received.load(r),
            handled: self.handled.load(r),
            unrouted: self.unrouted.load(r),
            dead_letters: self.dead_letters.load(r) + self.stream_dead_letters.load(r),
            panics: self.panics.load(r),
            panic_sites: PanicSites {
                handle: site(PanicSite::Handle),
                on_start: site(PanicSite::OnStart),
                on_stop: site(PanicSite::OnStop),
                factory: site(PanicSite::Factory),
                dead_letter: site(PanicSite::DeadLetter),
                drop: site(PanicSite::Drop),
                encode: site(PanicSite::Encode),
                decode: site(PanicSite::Decode),
            },
            restarts: self.restarts.load(r),
            stopped_subscriptions: self.stopped.load(r),
            dropped: self.dropped.load(r),
            queue_depth: self.depth.load(r),
            high_water: self.high_water.load(r),
            overflow_depth: self.overflow_depth.load(r),
            overflow_peak: self.overflow_peak.load(r),
            overflow_refused: self.overflow_refused.load(r),
            handler_time: HandlerTime {
                samples: total,
                p50_ns: pct(0.50).min(max),
                p99_ns: pct(0.99).min(max),
                p999_ns: pct(0.999).min(max),
                max_ns: max,
            },
            stream_overflow: self.stream_overflow.load(r),
            stream_overflow_peak: self.stream_overflow_peak.load(r),
            stream_dead_letters: self.stream_dead_letters.load(r),
        }
    }
}

/// Sampled handler-time percentiles of one shard, in nanoseconds.
///
/// One handler call in 256 is timed (the time of all of a message's subscribers);
/// percentiles are bucket upper bounds with 12.5% resolution, capped at the true maximum.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandlerTime {
    /// Timed calls.
    pub samples: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest timed call.
    pub max_ns: u64,
}

/// Panics of user code a shard caught, by where they happened; they add up to
/// [`ShardStats::panics`].
///
/// A panic in `handle` dead-letters its message
/// ([`DeadLetterReason::Panicked`](crate::DeadLetterReason::Panicked)) and one in the
/// codec's `encode` on the shard thread dead-letters it too
/// ([`DeadLetterReason::EncodePanicked`](crate::DeadLetterReason::EncodePanicked)); the
/// others have no message to give (a message whose `Drop` panicked is gone), so these
/// counters are their report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct PanicSites {
    /// [`Handler::handle`](crate::Handler::handle).
    pub handle: u64,
    /// [`Handler::on_start`](crate::Handler::on_start), at subscription or after a
    /// restart.
    pub on_start: u64,
    /// [`Handler::on_stop`](crate::Handler::on_stop).
    pub on_stop: u64,
    /// A supervision factory making a fresh actor (the subscription ends).
    pub factory: u64,
    /// The dead-letter handler ([`Builder::dead_letter`](crate::Builder::dead_letter)).
    pub dead_letter: u64,
    /// A message's `Drop`, when the shard dropped it (after its handlers, or dropping
    /// what a deadline shutdown left).
    pub drop: u64,
    /// [`Codec::encode`](crate::Codec::encode) on the shard thread, writing the log (the
    /// message is dead-lettered, not logged, not handled).
    pub encode: u64,
    /// [`Codec::decode`](crate::Codec::decode) replaying the log (`build()` fails with
    /// [`Error::Decode`](crate::Error::Decode)).
    pub decode: u64,
}

/// A snapshot of one shard's counters.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardStats {
    /// The shard's index.
    pub shard: usize,
    /// The core the shard thread is pinned to, if pinning succeeded.
    pub core: Option<usize>,
    /// Messages the shard took from its inbox (everything accepted and drained).
    pub received: u64,
    /// Messages delivered to at least one subscriber (including ones a subscriber
    /// panicked on).
    pub handled: u64,
    /// Messages whose topic had no subscriber (they went to the dead-letter handler).
    pub unrouted: u64,
    /// Calls of the dead-letter handler: unrouted messages plus handler panics (plus, on
    /// a persistent bus, messages not in the log, and the `stream_dead_letters`).
    pub dead_letters: u64,
    /// Panics of user code caught on the shard thread, wherever they happened (split in
    /// [`panic_sites`](Self::panic_sites)): a handler's `handle`, `on_start` or
    /// `on_stop`, a supervision factory, the dead-letter handler, a message's `Drop`, and
    /// on a persistent bus the codec's `encode` and `decode`. The shard goes on after
    /// each.
    pub panics: u64,
    /// [`panics`](Self::panics) by where they happened.
    pub panic_sites: PanicSites,
    /// Actors restarted by their supervision policy.
    pub restarts: u64,
    /// Subscriptions stopped by their supervision policy.
    pub stopped_subscriptions: u64,
    /// Accepted messages a deadline shutdown could not deliver (dropped, counted).
    pub dropped: u64,
    /// Messages queued for this shard at the last sample.
    pub queue_depth: u64,
    /// The largest queue depth sampled.
    pub high_water: u64,
    /// Messages this shard's handlers published to other shards that wait in its
    /// overflow queue for a full lane, at the last sample.
    pub overflow_depth: u64,
    /// The largest overflow depth ever reached (never above
    /// [`Builder::overflow_limit`](crate::Builder::overflow_limit)).
    pub overflow_peak: u64,
    /// Handler publishes ([`Context::publish`](crate::Context::publish)) refused with
    /// [`PublishError::Full`](crate::PublishError::Full) because the overflow queue was
    /// at its limit.
    pub overflow_refused: u64,
    /// Sampled handler-time percentiles.
    pub handler_time: HandlerTime,
    /// Subscriber streams ([`Bus::subscribe_stream`](crate::Bus::subscribe_stream)) of
    /// this shard's topics: messages waiting in their overflows now, summed over the
    /// shard's streams.
    pub stream_overflow: u64,
    /// The largest [`stream_overflow`](Self::stream_overflow) seen.
    pub stream_overflow_peak: u64,
    /// Messages the shard's streams sent to the dead-letter handler: their overflow was
    /// full ([`DeadLetterReason::StreamFull`](crate::DeadLetterReason::StreamFull)) or
    /// their consumer was gone
    /// ([`DeadLetterReason::StreamClosed`](crate::DeadLetterReason::StreamClosed)).
    /// Included in [`dead_letters`](Self::dead_letters).
    pub stream_dead_letters: u64,
}

/// A snapshot of every shard's counters. See [`Bus::stats`](crate::Bus::stats).
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// One entry per shard, in shard order.
    pub shards: Vec<ShardStats>,
}

impl Stats {
    /// Messages received, summed over shards.
    pub fn received(&self) -> u64 {
        self.shards.iter().map(|s| s.received).sum()
    }
    /// Messages handled, summed over shards.
    pub fn handled(&self) -> u64 {
        self.shards.iter().map(|s| s.handled).sum()
    }
    /// Unrouted messages, summed over shards.
    pub fn unrouted(&self) -> u64 {
        self.shards.iter().map(|s| s.unrouted).sum()
    }
    /// Dead-letter calls, summed over shards.
    pub fn dead_letters(&self) -> u64 {
        self.shards.iter().map(|s| s.dead_letters).sum()
    }
    /// Panics of user code caught on the shard threads, summed over shards.
    pub fn panics(&self) -> u64 {
        self.shards.iter().map(|s| s.panics).sum()
    }
    /// [`panics`](Self::panics) by where they happened, summed over shards.
    pub fn panic_sites(&self) -> PanicSites {
        self.shards
            .iter()
            .fold(PanicSites::default(), |a, s| PanicSites {
                handle: a.handle + s.panic_sites.handle,
                on_start: a.on_start + s.panic_sites.on_start,
                on_stop: a.on_stop + s.panic_sites.on_stop,
                factory: a.factory + s.panic_sites.factory,
                dead_letter: a.dead_letter + s.panic_sites.dead_letter,
                drop: a.drop + s.panic_sites.drop,
                encode: a.encode + s.panic_sites.encode,
                decode: a.decode + s.panic_sites.decode,
            })
    }

    /// Messages subscriber streams dead-lettered, summed over shards.
    pub fn stream_dead_letters(&self) -> u64 {
        self.shards.iter().map(|s| s.stream_dead_letters).sum()
    }
    /// Messages dropped by a deadline shutdown, summed over shards.
    pub fn dropped(&self) -> u64 {
        self.shards.iter().map(|s| s.dropped).sum()
    }
    /// Handler publishes refused at the overflow limit, summed over shards.
    pub fn overflow_refused(&self) -> u64 {
        self.shards.iter().map(|s| s.overflow_refused).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_monotonically() {
        let mut last = 0;
        for ns in [
            0,
            1,
            15,
            16,
            17,
            100,
            1_000,
            123_456,
            u64::MAX / 2,
            u64::MAX,
        ] {
            let b = bucket_of(ns);
            assert!(b < BUCKETS && b >= last, "{ns} -> {b}");
            assert!(bucket_high(b) >= ns, "{ns} above its bucket's bound");
            last = b;
        }
        assert_eq!(bucket_high(bucket_of(1000)), 1023);
    }

    #[test]
    fn percentiles() {
        let c = ShardCounters::new();
        for ns in 1..=1000 {
            c.record_handler_ns(ns);
        }
        let s = c.snapshot(0);
        assert_eq!(s.handler_time.samples, 1000);
        assert_eq!(s.handler_time.max_ns, 1000);
        assert!(
            (500..=575).contains(&s.handler_time.p50_ns),
            "{:?}",
            s.handler_time
        );
        assert_eq!(s.handler_time.p999_ns, 1000);
    }
}
