//! How an idle shard waits for work, and how a publisher waits for room.

use crate::sync::Backoff;

/// What a shard thread does when it finds no work.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
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
/// (a blocking publisher polls: shards signal freed space only to the async publishes'
/// registered waiters; the sleep bounds its CPU).
///
/// After the back-off completes it keeps yielding for [`YIELDS_BEFORE_SLEEP`] more polls
/// before it sleeps: a shard frees a batch of slots far sooner than a sleep returns (timer
/// slack stretches it), and a publisher that slept let the shard drain the lane dry and
/// park, so every lane-full turned into a park/unpark cycle. A publisher facing a stuck
/// shard still falls back to sleeping after about a millisecond of yields.
pub(crate) fn publisher_pause(backoff: &Backoff) {
    if backoff.is_completed() {
        #[cfg(not(shardbus_loom))]
        {
            let polls = POLLS.with(|p| {
                let n = p.get().saturating_add(1);
                p.set(n);
                n
            });
            if polls < YIELDS_BEFORE_SLEEP {
                crate::sync::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(20));
            }
        }
        #[cfg(shardbus_loom)]
        crate::sync::thread::yield_now();
    } else {
        // A fresh wait (a new or reset back-off) starts its yield budget anew.
        #[cfg(not(shardbus_loom))]
        POLLS.with(|p| p.set(0));
        backoff.snooze();
    }
}

/// Yields after the back-off completes, before a waiting publisher starts sleeping.
#[cfg(not(shardbus_loom))]
const YIELDS_BEFORE_SLEEP: u32 = 1024;

#[cfg(not(shardbus_loom))]
std::thread_local! {
    /// Polls of this thread's current wait since its back-off completed (a plain per-thread
    /// counter: no other thread reads it).
    static POLLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}
