//! The counters of each partition's actor instance, and the bus's list of partitioned
//! subscriptions.

use crate::handler::SubscriptionId;
use crate::route::ShardId;
use crate::sync::{plain, AtomicU64, Ordering};

use super::PartitionedSubscription;

/// One partition's instance of a partitioned subscription, as counted so far
/// ([`PartitionedSubscription::stats`], [`Bus::partitioned`](crate::Bus::partitioned)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionStats {
    /// The partition's number, `0..partitions`.
    pub partition: usize,
    /// The shard the partition lives on.
    pub shard: ShardId,
    /// The partition's subscription.
    pub subscription: SubscriptionId,
    /// Messages the instance handled (its `handle` returned).
    pub handled: u64,
    /// Calls of the instance's `handle` that panicked.
    pub panics: u64,
    /// Times the instance was replaced by a fresh one from the factory
    /// ([`Supervision::Restart`](crate::Supervision::Restart)).
    pub restarts: u64,
}

/// The counters of one partition's instance. Written only by the shard thread the
/// partition lives on (its `handle` and its restarts run there), read by anyone: each is a
/// single-writer monotone count, so the writer's load-and-store is `Relaxed` and so is
/// every read (a reader wants a recent value, nothing ordered with it).
pub(crate) struct PartCounters {
    handled: AtomicU64,
    panics: AtomicU64,
    restarts: AtomicU64,
}

/// Adds one to a counter that only the calling thread writes: a plain load and store,
/// no read-modify-write.
#[inline]
fn bump(counter: &AtomicU64) {
    // Relaxed: this thread is the only writer (see `PartCounters`).
    let n = counter.load(Ordering::Relaxed);
    // Relaxed: as above; readers pair with nothing.
    counter.store(n + 1, Ordering::Relaxed);
}

impl PartCounters {
    pub(crate) fn new() -> Self {
        Self {
            handled: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn handled(&self) {
        bump(&self.handled);
    }

    /// A call of the instance's `handle` that panicked: counted by [`PanicGuard`] as the
    /// panic unwinds through the instance (never on the path of a call that returns).
    fn panicked(&self) {
        bump(&self.panics);
    }

    pub(crate) fn restarted(&self) {
        bump(&self.restarts);
    }

    pub(crate) fn snapshot(&self, partition: usize, id: SubscriptionId) -> PartitionStats {
        // Relaxed: monotone counters, nothing to order with (see `PartCounters`).
        let handled = self.handled.load(Ordering::Relaxed);
        let panics = self.panics.load(Ordering::Relaxed);
        PartitionStats {
            partition,
            shard: ShardId(id.shard as usize),
            subscription: id,
            handled,
            panics,
            restarts: self.restarts.load(Ordering::Relaxed),
        }
    }
}

/// Counts a panic of an instance's `handle` as it unwinds: made before the call and
/// forgotten after it returns, so the call that returns pays nothing for it (one counter
/// store per message in all, `handled`).
pub(crate) struct PanicGuard<'a>(pub(crate) &'a PartCounters);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        self.0.panicked();
    }
}

/// The bus's partitioned subscriptions, for [`Bus::partitioned`](crate::Bus::partitioned).
/// Locked only to add, remove or list one (never on a publish or a dispatch).
#[derive(Default)]
pub(crate) struct Registry {
    subs: plain::Mutex<Vec<PartitionedSubscription>>,
}

impl Registry {
    pub(crate) fn add(&self, sub: PartitionedSubscription) {
        self.lock().push(sub);
    }

    pub(crate) fn remove(&self, first: SubscriptionId) {
        self.lock().retain(|s| s.ids.first() != Some(&first));
    }

    pub(crate) fn list(&self) -> Vec<PartitionedSubscription> {
        self.lock().clone()
    }

    fn lock(&self) -> plain::MutexGuard<'_, Vec<PartitionedSubscription>> {
        self.subs
            .lock()
            .unwrap_or_else(plain::PoisonError::into_inner)
    }
}
