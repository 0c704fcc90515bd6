//! Which shard, if any, the current thread runs: a thread-local marker that a shard
//! thread sets when it starts and clears when it exits.
//!
//! A blocking call on the bus (`Bus::subscribe`, `Bus::unsubscribe`, a `publish` that
//! would wait for room, a durable publish) made from a handler waits for shards, its own
//! among them, which cannot make progress while the handler waits: the bus asks
//! [`is_shard_of`] first and returns a `WouldDeadlock` error instead of hanging. A thread
//! of another bus is no shard of this one, so calls across buses stay allowed.

use std::cell::Cell;

crate::sync::thread_local! {
    /// `(bus id, shard index)` on a shard thread; `None` on every other thread.
    // Not a `const { .. }` initializer: loom's `thread_local!` does not take one, and both
    // builds share this line.
    #[allow(clippy::missing_const_for_thread_local)]
    static CURRENT: Cell<Option<(u64, usize)>> = Cell::new(None);
}

/// Marks the calling thread as shard `shard` of bus `bus` until the guard drops.
pub(crate) fn enter(bus: u64, shard: usize) -> Entered {
    CURRENT.with(|c| c.set(Some((bus, shard))));
    Entered(())
}

/// Clears the marker when the shard thread leaves its loop (also on unwinding).
pub(crate) struct Entered(());

impl Drop for Entered {
    fn drop(&mut self) {
        // `try_with`: at thread exit the slot may already be gone; nothing to clear then.
        let _ = CURRENT.try_with(|c| c.set(None));
    }
}

/// Whether the calling thread is a shard thread of bus `bus`. Only on the paths where a
/// call would wait, never on the publish fast path.
#[cold]
#[inline(never)]
pub(crate) fn is_shard_of(bus: u64) -> bool {
    CURRENT
        .try_with(|c| matches!(c.get(), Some((b, _)) if b == bus))
        .unwrap_or(false)
}
