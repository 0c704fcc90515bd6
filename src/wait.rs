//! How an idle shard waits for work, and how a publisher waits for room.

use crate::sync::Backoff;

/// What a shard thread does when it finds no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Spin on the inbox. Lowest latency; the shard's core stays at 100%.
    BusySpin,
    /// Spin briefly, then `yield` to the OS scheduler between polls. Low latency; the
    /// core stays busy unless other threads want it.
    Yield,
    /// Spin, then yield (crossbeam `Backoff`), then park until a publisher unparks the
    /// shard. An idle shard uses no CPU; the first message after a park pays a wake-up.
    /// The default.
    #[default]
    Park,
}

/// A publisher waiting for room in a full ring: spin, then yield, then sleep briefly
/// (shards do not signal freed space, so a publisher polls; the sleep bounds its CPU).
pub(crate) fn publisher_pause(backoff: &Backoff) {
    if backoff.is_completed() {
        #[cfg(not(shardbus_loom))]
        std::thread::sleep(std::time::Duration::from_micros(20));
        #[cfg(shardbus_loom)]
        crate::sync::thread::yield_now();
    } else {
        backoff.snooze();
    }
}
