//! What the bus, its publishers and its shards share: the topic registry, one [`Inbox`]
//! per shard (with its shutdown flags), the statistics, the shard-to-shard rings (for
//! shutdown) and the bus-wide settings.

use crossbeam_utils::CachePadded;

use crate::codec::{CodecFns, EncodeError};
use crate::error::{PublishError, TryPublishError};
use crate::handler::DeadLetterFn;
use crate::inbox::{Envelope, Inbox, LogStatus};
use crate::intern::Topics;
use crate::log::MIN_RECORD_LEN;
use crate::ring::spsc;
use crate::stats::ShardCounters;
use crate::sync::{Arc, AtomicU64, AtomicUsize, Ordering};

/// A shard-to-shard ring, as the shutdown coordinator sees it.
pub(crate) type PeerRing<T> = Arc<spsc::Ring<Envelope<T>>>;

/// Everything the bus, its publishers and its shards share.
pub(crate) struct Shared<T> {
    /// The router and the topic registry.
    pub(crate) topics: Topics,
    /// What a publish must check before it pushes, as bits, so that the common case (none)
    /// is one load and one branch: [`CLOSING`], set once when shutdown begins, before any
    /// shard closes its intake, so that a publish that starts after `shutdown` was called
    /// is refused on every shard alike (the per-ring close bits then settle the publishes
    /// already under way); [`CHECK_ENCODE`], set at `build()` on a persistent bus whose
    /// codec can fail.
    pub(crate) gate: AtomicUsize,
    pub(crate) inboxes: Box<[Inbox<T>]>,
    pub(crate) counters: Box<[CachePadded<ShardCounters>]>,
    /// Shard-to-shard rings, `[from * shards + to]` (`None` on the diagonal), for the
    /// shutdown coordinator's quiescence check.
    pub(crate) peer_rings: Box<[Option<PeerRing<T>>]>,
    pub(crate) lane_capacity: usize,
    /// The most messages one shard's overflow queues hold together
    /// (`Builder::overflow_limit`).
    pub(crate) overflow_limit: usize,
    pub(crate) dead_letter: Option<DeadLetterFn<T>>,
    pub(crate) wait: crate::wait::WaitStrategy,
    /// `Builder::spin_before_park`: the most empty polls before a parking shard parks.
    pub(crate) spin_before_park: u32,
    /// Whether the bus was built with persistence.
    pub(crate) persistent: bool,
    /// Persistent buses: the codec, for the checks a publishing thread makes before it
    /// pushes ([`Shared::check_encode`], [`Shared::check_record`]). Set at `build()`,
    /// never changed.
    pub(crate) codec: Option<CodecFns<T>>,
    /// Persistent buses: the largest record the logs take (`Persistence::max_record_size`).
    pub(crate) max_record_size: u32,
    /// The next subscription serial of the bus, taken by `Bus::subscribe` and its kin on
    /// any thread and by `Context::subscribe` on the shards. Starts after the builder's
    /// subscriptions, whose serials come first.
    pub(crate) next_serial: AtomicU64,
    /// The bus's partitioned subscriptions (`Bus::partitioned`); locked only to add,
    /// remove or list one.
    pub(crate) partitioned: crate::partition::Registry,
    /// The fences chosen at `build()` (`Builder::fences`), which every ring and inbox of
    /// the bus was made with; never changed.
    pub(crate) fences: crate::fences::FenceMode,
    /// The `metrics` feature's bus-wide setting (its `bus` label); empty without it.
    pub(crate) metrics: crate::metrics::BusMetrics,
}

/// [`Shared::gate`]: shutdown has begun.
pub(crate) const CLOSING: usize = 1;
/// [`Shared::gate`]: plain publishes encode the message first ([`Shared::check_encode`]).
pub(crate) const CHECK_ENCODE: usize = 2;

/// Why [`Shared::admit`] refuses a message; it comes back in either case.
pub(crate) enum Refused<T> {
    /// Shutdown has begun.
    Closed(T),
    /// The codec cannot encode it.
    Encode(T, EncodeError),
}

impl<T> From<Refused<T>> for PublishError<T> {
    fn from(r: Refused<T>) -> Self {
        match r {
            Refused::Closed(msg) => PublishError::Closed(msg),
            Refused::Encode(msg, error) => PublishError::Encode { msg, error },
        }
    }
}

impl<T> From<Refused<T>> for TryPublishError<T> {
    fn from(r: Refused<T>) -> Self {
        match r {
            Refused::Closed(msg) => TryPublishError::Closed(msg),
            Refused::Encode(msg, error) => TryPublishError::Encode { msg, error },
        }
    }
}

/// Why the publishing thread refuses a message for the log (see [`Shared::check_record`]).
pub(crate) enum Unloggable {
    /// The codec refused it.
    Encode(EncodeError),
    /// Its record would be this many bytes, over the maximum.
    TooLarge(u64),
}

impl<T> Shared<T> {
    /// A subscription serial no other subscription of the bus has.
    pub(crate) fn next_serial(&self) -> u64 {
        // Relaxed: only uniqueness matters, which the RMW gives.
        self.next_serial.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether this bus's rings use the membarrier pair of fences (`sync::asym`), for a
    /// ring made after `build()` (a publisher's lane).
    pub(crate) fn asym(&self) -> bool {
        self.fences == crate::fences::FenceMode::Membarrier
    }

    /// The state of shard `shard`'s log.
    pub(crate) fn log_status(&self, shard: usize) -> &LogStatus {
        &self.inboxes[shard].log
    }

    /// Plain publishes (`publish`, `try_publish`, `publish_batch`, `Context::publish`):
    /// on a persistent bus whose codec can fail ([`Codec::CAN_FAIL`](crate::Codec)),
    /// encodes `msg` once on the publishing thread ([`CodecFns::encoded_len`]), so that a
    /// message the shard could not log is refused here with the message back, not lost
    /// after the publish returned. Otherwise one branch and nothing else.
    #[inline]
    pub(crate) fn check_encode(&self, msg: T) -> Result<T, (T, EncodeError)> {
        // The codec, not the gate: a handler's publish (`Context::publish`) must not add an
        // atomic load (a point the loom models would explore) for a setting fixed at build.
        match &self.codec {
            Some(codec) if codec.can_fail => encode_check(codec, msg),
            _ => Ok(msg),
        }
    }

    /// The publish path's one check before a push from outside the bus: refused if
    /// shutdown has begun, or if the message must be encoded first and does not encode.
    /// When neither applies (the common case): one load and one branch.
    #[inline]
    pub(crate) fn admit(&self, msg: T) -> Result<T, Refused<T>> {
        if self.gate_is_clear() {
            Ok(msg)
        } else {
            self.admit_slow(msg)
        }
    }

    /// Whether a publish needs no check at all (the common case): the first half of
    /// [`admit`](Self::admit), for paths that keep the message out of a `Result` until
    /// they know. Relaxed: as in `is_closing`.
    #[inline]
    pub(crate) fn gate_is_clear(&self) -> bool {
        self.gate.load(Ordering::Relaxed) == 0
    }

    /// The second half of [`admit`](Self::admit), when the gate is not clear.
    #[cold]
    #[inline(never)]
    pub(crate) fn admit_slow(&self, msg: T) -> Result<T, Refused<T>> {
        if self.is_closing() {
            return Err(Refused::Closed(msg));
        }
        self.check_encode(msg)
            .map_err(|(msg, error)| Refused::Encode(msg, error))
    }

    /// Shutdown begins: every later publish is refused. SeqCst: ordered before every
    /// shard's close (which it happens-before through the shutdown flags anyway).
    pub(crate) fn begin_closing(&self) {
        // A plain store, as the old closing flag's: the other bit is fixed at build, so
        // no read-modify-write is needed (and the loom models see the same operation).
        let check = match &self.codec {
            Some(codec) if codec.can_fail => CHECK_ENCODE,
            _ => 0,
        };
        self.gate.store(CLOSING | check, Ordering::SeqCst);
    }

    /// Durable publishes of a persistent bus: encodes `msg` on the publishing thread
    /// whatever the codec, and checks that its record (topic of `topic_len` bytes) fits
    /// the maximum record size: a durable publish is confirmed only once its record is
    /// logged, so one that never can be is refused here.
    pub(crate) fn check_record(&self, topic_len: usize, msg: &T) -> Result<(), Unloggable> {
        let Some(codec) = &self.codec else {
            return Ok(());
        };
        let payload = codec.encoded_len(msg).map_err(Unloggable::Encode)?;
        let size = (MIN_RECORD_LEN + topic_len) as u64 + payload as u64;
        if size > u64::from(self.max_record_size) {
            return Err(Unloggable::TooLarge(size));
        }
        Ok(())
    }

    /// Whether shutdown has begun. Relaxed is enough: this is only a fast path; the
    /// close bit on each ring, set by an RMW, is what decides a racing publish.
    #[inline]
    pub(crate) fn is_closing(&self) -> bool {
        self.gate.load(Ordering::Relaxed) & CLOSING != 0
    }
}

/// [`Shared::check_encode`]'s encoding, out of line: the publish paths inline only the
/// branch that skips it.
#[inline(never)]
fn encode_check<T>(codec: &CodecFns<T>, msg: T) -> Result<T, (T, EncodeError)> {
    match codec.encoded_len(&msg) {
        Ok(_) => Ok(msg),
        Err(e) => Err((msg, e)),
    }
}
