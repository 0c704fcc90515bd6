//! The one place that imports concurrency primitives.
//!
//! Everything else in the crate takes atomics, cells, `Arc`, threads, parking and
//! back-off from here. Under `--cfg shardbus_loom` these are loom's model-checked
//! versions, so the `loom-tests` crate checks our own hand-off, wake-up and shutdown
//! code as written (the pattern of tokio's `src/loom/` and crossbeam-utils' `primitive`).
//!
//! The two halves, `std.rs` and `loom.rs`, each read top to bottom on their own; the
//! lines below are the only place that chooses between them. `asym.rs` holds the
//! membarrier fences of the normal build (loom's half has its own `asym`, fences both
//! sides). Two groups are the same in both builds, on purpose: [`stat`] (statistics
//! counters) and [`plain`] (the storage side), each with its reason.

#[cfg(not(shardbus_loom))]
#[path = "std.rs"]
mod imp;

#[cfg(shardbus_loom)]
#[path = "loom.rs"]
mod imp;

#[cfg(not(shardbus_loom))]
pub(crate) mod asym;

pub(crate) use imp::*;

/// Yields to the executor once (wakes itself first): an async wait that could not make
/// its heavy fence (`asym`, "When the heavy fence fails") polls again instead of
/// sleeping on its listener. The same in both builds.
pub(crate) struct YieldNow(bool);

impl YieldNow {
    pub(crate) fn new() -> Self {
        Self(false)
    }
}

impl std::future::Future for YieldNow {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Statistics counters: always std's atomics, also under loom. They take part in no
/// protocol (every access is `Relaxed`, final values are read after `join`), so loom
/// need not explore their interleavings; keeping them out of the model keeps the
/// models' state space to the protocols that matter.
pub(crate) mod stat {
    pub(crate) use std::sync::atomic::AtomicU64;
}

/// The storage side's primitives: always std's, also under loom.
///
/// The persistent log (`crate::log`) shares an `Arc<dyn Storage>` between the bus and its
/// shards, and `SimStorage` keeps its simulated disk behind a `Mutex`. Persistence is not
/// modelled under loom (its models build memory-only buses), these take part in none of
/// the hand-off, wake-up or shutdown protocols the models check, and the log's public API
/// (`ShardLog::open(Arc<dyn Storage>, ..)`) must not change type under the loom cfg.
///
/// The log's background sync thread (`log/syncer.rs`) is on this side too: a std thread
/// that waits on a std `Condvar` and only ever does storage calls.
pub(crate) mod plain {
    pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
    /// For `SimStorage`'s simulated sync delay.
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) use std::thread::sleep;
    pub(crate) use std::thread::JoinHandle;

    /// Spawns a named std thread (also under loom: storage threads are not modelled).
    pub(crate) fn spawn_named<F>(name: String, f: F) -> std::io::Result<JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        std::thread::Builder::new().name(name).spawn(f)
    }
}

/// A process-unique bus id. A std atomic under loom too: it only makes ids unique and
/// takes part in no protocol. Relaxed: only uniqueness matters, which the RMW gives.
pub(crate) fn next_bus_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The fences a bus built now with the default [`Fences`](crate::Fences) gets:
/// `"membarrier"` or `"seqcst-fence"` (registers the process for membarrier if the
/// default asks for it and it can, as building such a bus would). For benchmark reports; a bus's own is
/// [`Bus::fence_mode`](crate::Bus::fence_mode).
#[doc(hidden)]
pub fn __fence_mode() -> &'static str {
    __fence_mode_for(crate::Fences::default())
}

/// [`__fence_mode`] for a bus built now with `requested` fences (`"seqcst-fence"` if it
/// could not be built: membarrier asked for and unavailable).
#[doc(hidden)]
pub fn __fence_mode_for(requested: crate::Fences) -> &'static str {
    asym::decide(requested)
        .unwrap_or(crate::FenceMode::SeqCst)
        .as_str()
}
