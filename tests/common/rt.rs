//! Buses for the runtime tests: how to build one, how long to wait on it, which topic
//! names land where, and what its statistics must say once it is quiet.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use shardbus::{Bus, Stats};

/// Bounds every wait on another thread: a bug shows as a failure, not a hang.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Runs `f` on a thread of its own and returns what it returns; fails the test if that
/// takes longer than [`PATIENCE`], so that a hang (a shutdown that never returns, a
/// publish that waits forever) shows as a failure. The stuck thread is abandoned.
pub fn within<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(r) => r,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{what}: hung"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

/// A bus of `u32` messages on `shards` unpinned shards (the tests share the machine's
/// cores), otherwise with the defaults.
pub fn bus(shards: usize) -> Bus<u32> {
    Bus::<u32>::builder()
        .shards(shards)
        .pin_threads(false)
        .build()
        .unwrap()
}

/// `count` topic names `prefix-0`, `prefix-1`, ...
pub fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// The first name `prefix-i` routed to `shard`.
pub fn name_on_shard<T: Send + 'static>(bus: &Bus<T>, prefix: &str, shard: usize) -> String {
    (0..100_000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|n| bus.shard_of(n).unwrap().index() == shard)
        .unwrap_or_else(|| panic!("no topic on shard {shard}"))
}

/// What every shard's statistics say at quiescence: everything received was handled or
/// unrouted, nothing dropped, nothing queued.
pub fn assert_quiescent_stats(stats: &Stats) {
    for s in &stats.shards {
        assert_eq!(
            s.received,
            s.handled + s.unrouted,
            "shard {}: received = handled + unrouted",
            s.shard
        );
        assert_eq!(s.dropped, 0, "shard {}: nothing dropped", s.shard);
        assert_eq!(s.queue_depth, 0, "shard {}: nothing queued", s.shard);
    }
}

/// The exactly-once check of a counter per message id: the first ten `(id, count)`
/// pairs whose count is not 1, empty when every id was counted exactly once.
pub fn not_exactly_once(counters: &[AtomicU32]) -> Vec<(usize, u32)> {
    counters
        .iter()
        .map(|d| d.load(Relaxed))
        .enumerate()
        .filter(|&(_, n)| n != 1)
        .take(10)
        .collect()
}
