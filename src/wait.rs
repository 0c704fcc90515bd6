//! How an idle shard waits for work, and how a publisher waits for room.

use crate::sync::Backoff;

/// What a shard thread does when it finds no work.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WaitStrategy {
    /// Spin on the inbox: a pass over the shard's inputs, one spin-loop hint, the next
    /// pass. Lowest latency; the shard's core stays at 100%.
    BusySpin,
    /// Spin briefly, then `yield` to the OS scheduler between polls. Low latency; the
    /// core stays busy unless other threads want it.
    Yield,
    /// Spin, then yield (crossbeam `Backoff`), then park until a publisher unparks the
    /// shard. An idle shard uses no CPU; the first message after a park pays a wake-up.
    /// How many empty polls come before the park adapts to the traffic, up to
    /// [`Builder::spin_before_park`](crate::Builder::spin_before_park).
    /// The default.
    #[default]
    Park,
}

/// The default of [`Builder::spin_before_park`](crate::Builder::spin_before_park): the
/// most empty polls a parking shard makes before it parks. Eleven is crossbeam
/// `Backoff`'s whole course (seven spins of 1 to 64 hints, then four yields), the same
/// as a crossbeam-channel receiver spins before it blocks.
pub(crate) const DEFAULT_SPIN_BEFORE_PARK: u32 = 11;

/// The fewest polls the adaptive budget shrinks to: the seven spins of `Backoff`'s course
/// (1 to 64 hints), a few microseconds in all. Only the four yields adapt away. With one
/// poll as the floor, a shard fed a message every 10 µs parked for more of its messages than
/// a crossbeam-channel receiver, and its median publish → handler entry fell among the
/// parked ones: microseconds instead of a few hundred nanoseconds (see docs/benchmarks.md,
/// "The idle shard").
const FEWEST_POLLS: u32 = 7;

// The builder's setting lives beside the budget it sets (`builder.rs` is at its size limit).
impl<T: Send + 'static> crate::Builder<T> {
    /// With [`WaitStrategy::Park`] (the default): the most empty polls an idle shard makes
    /// before it parks. Default 11, crossbeam `Backoff`'s whole course: seven spins
    /// (1 to 64 spin-loop hints each) then four `yield`s, each followed by a pass over the
    /// shard's inputs. The budget adapts below this most: it halves each time the shard
    /// parks after polling in vain (down to the seven spins, or to this most if it is
    /// smaller), and doubles each time a poll finds a message. So a shard fed a steady
    /// stream keeps spinning through short gaps (no wake-up for its publishers to pay), and
    /// one fed a message every 100 µs soon spins a few microseconds after each message, no
    /// yields, and parks. `0` parks at the first empty pass: the least CPU, a wake-up for
    /// nearly every message after a pause. At most 11: the polls follow the back-off's
    /// course, which ends after its eleventh step, so a larger value is taken as 11.
    /// Ignored by [`BusySpin`](WaitStrategy::BusySpin) and [`Yield`](WaitStrategy::Yield).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = shardbus::Bus::<u64>::builder()
    ///     .shards(1)
    ///     .spin_before_park(2)
    ///     .build()?;
    /// bus.publish("ticks", 1)?;
    /// assert_eq!(bus.shutdown().received(), 1);
    /// # Ok(()) }
    /// ```
    pub fn spin_before_park(mut self, polls: u32) -> Self {
        self.spin_before_park = polls.min(DEFAULT_SPIN_BEFORE_PARK);
        self
    }
}

/// The adaptive spin-before-park budget of a [`WaitStrategy::Park`] shard: how many empty
/// polls (a back-off step, then a pass over the inputs) it makes before it parks.
///
/// Spinning pays when a message arrives during it (no park, no wake-up for the
/// publisher); it is waste when the shard parks anyway. So the budget halves each time it
/// ran out and the shard parked (down to [`FEWEST_POLLS`], the back-off's spins), and
/// doubles (up to the configured most) each time a poll found work. Under a steady stream
/// the budget stays large and the shard rarely parks; at light load (a message every
/// 100 µs or 1 ms) it shrinks to the spins, and the shard's cost per message is close to a
/// blocking channel's: a wake-up, a pass that finds the message, the spins (each followed
/// by a pass), the park; a channel's receiver also yields four times. Owned by the shard
/// thread.
pub(crate) struct SpinBudget {
    /// Polls allowed before the next park, `1..=max` (`0` when `max` is `0`).
    limit: u32,
    max: u32,
    /// Empty polls since the last pass that found work (or the last wake-up).
    polls: u32,
}

impl SpinBudget {
    pub(crate) fn new(max: u32) -> Self {
        Self {
            limit: max,
            max,
            polls: 0,
        }
    }

    /// An empty pass: whether to poll again (after a back-off step) rather than park.
    #[inline]
    pub(crate) fn poll_again(&mut self) -> bool {
        if self.polls < self.limit {
            self.polls += 1;
            true
        } else {
            false
        }
    }

    /// A pass found work. If it came while polling, polling paid: the budget grows.
    #[inline]
    pub(crate) fn found_work(&mut self) {
        if self.polls > 0 {
            self.grow();
        }
        self.polls = 0;
    }

    /// Only after a poll, so `limit` (and `max`) is at least 1.
    #[cold]
    fn grow(&mut self) {
        self.limit = self.limit.saturating_mul(2).min(self.max);
    }

    /// The shard is about to park: the polls found nothing, the budget shrinks.
    pub(crate) fn parked(&mut self) {
        self.limit = (self.limit / 2).max(self.max.min(FEWEST_POLLS));
        self.polls = 0;
    }

    /// The current budget (tests).
    #[cfg(test)]
    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn spin_before_park_is_at_most_the_back_offs_course() {
        let b = crate::Bus::<u64>::builder().spin_before_park(100);
        assert_eq!(b.spin_before_park, super::DEFAULT_SPIN_BEFORE_PARK);
        let b = crate::Bus::<u64>::builder().spin_before_park(3);
        assert_eq!(b.spin_before_park, 3);
    }

    use super::SpinBudget;

    /// Polls `n` times or until the budget says park; returns the polls made.
    fn idle(b: &mut SpinBudget, n: u32) -> u32 {
        let mut made = 0;
        while made < n && b.poll_again() {
            made += 1;
        }
        made
    }

    #[test]
    fn the_budget_shrinks_when_polls_find_nothing_and_grows_when_they_find_work() {
        let mut b = SpinBudget::new(11);
        assert_eq!(idle(&mut b, 100), 11, "the full budget at first");
        b.parked();
        assert_eq!(b.limit(), 7, "halved, but never below the spins");
        assert_eq!(idle(&mut b, 100), 7);
        b.parked();
        b.parked();
        assert_eq!(b.limit(), 7);
        // A wake-up, a pass with work, no polls: nothing learned.
        b.found_work();
        assert_eq!(b.limit(), 7);
        // Work found by a poll: the budget doubles, up to the most.
        assert_eq!(idle(&mut b, 1), 1);
        b.found_work();
        assert_eq!(b.limit(), 11, "capped at the most");
        // A most below the spins is not adapted at all.
        let mut small = SpinBudget::new(2);
        small.parked();
        assert_eq!(small.limit(), 2);
        assert_eq!(idle(&mut small, 100), 2);
    }

    #[test]
    fn a_zero_budget_parks_at_once() {
        let mut b = SpinBudget::new(0);
        assert!(!b.poll_again());
        b.parked();
        b.found_work();
        assert!(!b.poll_again());
        assert_eq!(b.limit(), 0);
    }
}
