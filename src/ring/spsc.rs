//! A bounded single-producer single-consumer ring that the consumer can close.
//!
//! The producer keeps its own `tail` and a cached copy of the consumer's `head`, so a
//! push touches the consumer's cache line only when the ring looks full; the consumer
//! does the same with `tail` and publishes `head` once per batch (the disruptor's and
//! Rigtorp's cached-index scheme).
//!
//! A push is a slot write and a plain `Release` store of `tail` (no read-modify-write,
//! so the producer never stalls on the consumer's cache line), then the *light* side of
//! an asymmetric fence (`sync::asym`) and a load of the `closing` flag. Closing is the
//! consumer's rare path: store `closing`, the *heavy* fence, load `tail` as the limit it
//! will drain to, publish the limit. The fence pair makes it a store-buffering pair:
//! either the close's load sees the push (the push is drained) or the push's load sees
//! `closing`. In the second case the close may or may not have seen the push, so the
//! two agree on the limit through one compare-and-swap on `limit`: whoever comes first
//! sets it (the consumer: the `tail` it loaded; the producer: its position before this
//! push), and the producer keeps its push only if the agreed limit counts it, else takes
//! the value back. Neither side waits for the other. The same light fence orders the push before the
//! publisher's load of the shard's sleep flag (`inbox::Inbox::wake`), whose other side
//! is the shard's heavy fence before it parks.

use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use super::{reached, slot_index, PushError, STEP};
use crate::sync::{asym, Arc, AtomicBool, AtomicU64, Ordering, UnsafeCell};

/// [`CloseState::limit`] before it is agreed (positions are even).
const NO_LIMIT: u64 = u64::MAX;

/// Written by the consumer once, when it closes; read by the producer on every push
/// (a line that stays shared in the producer's cache until the close).
struct CloseState {
    /// Set first (before the heavy fence).
    closing: AtomicBool,
    /// The position the consumer drains to ([`NO_LIMIT`] until agreed): set once, by a
    /// compare-and-swap from the consumer's `close` or from a push that saw `closing`.
    limit: AtomicU64,
}

pub struct Ring<T> {
    /// Written by the consumer (`Release` after it has moved values out), read by the
    /// producer when the ring looks full.
    head: CachePadded<AtomicU64>,
    /// Written only by the producer (`Release` after the slot writes; set back by a push
    /// that a close refused); read by the consumer.
    tail: CachePadded<AtomicU64>,
    close: CachePadded<CloseState>,
    /// Whether this ring's fences are the membarrier pair (fixed at creation).
    asym: bool,
    /// Set by the producer's drop; read by the consumer to retire an empty lane.
    producer_gone: AtomicBool,
    /// Persistent buses only: the consumer's position up to which popped values are in
    /// the shard's log as durably as its fsync policy makes them. Written by the consumer
    /// (Release, after the commit); read by a producer waiting in `publish_durable`
    /// (Acquire). Untouched on a memory-only bus.
    durable: CachePadded<AtomicU64>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: u64,
}

// SAFETY: the ring hands each `T` from the producer thread to the consumer thread, so
// `T: Send` is required and sufficient; slot access is partitioned by the head/tail
// protocol (the producer writes only slots in `[tail, head + cap)`, the consumer reads
// only slots in `[head, tail)`).
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: shared references reach only the atomics; slots are owned by the single
// `Producer` or the single `Consumer` in turn, per the head/tail protocol above.
unsafe impl<T: Send> Sync for Ring<T> {}

/// The producing end. `Send`, not `Clone`: exactly one exists per ring.
pub struct Producer<T> {
    ring: Arc<Ring<T>>,
    /// The producer's own copy of `tail`.
    tail: u64,
    /// A lower bound of the consumer's `head`, refreshed when the ring looks full.
    cached_head: u64,
    closed: bool,
}

/// The consuming end. `Send`, not `Clone`: exactly one exists per ring.
pub struct Consumer<T> {
    ring: Arc<Ring<T>>,
    /// The consumer's own copy of `head`.
    head: u64,
    /// A lower bound of the producer's `tail`.
    cached_tail: u64,
    /// Set by `close`: the consumer never reads at or past this position.
    limit: Option<u64>,
    /// The last value stored into `ring.durable` (only this consumer writes it).
    durable: u64,
}

/// Makes a ring with `capacity` slots (a power of two) starting at position `start`
/// (a multiple of [`STEP`]; tests start near `u64::MAX` to cross the wrap).
pub fn channel<T>(capacity: usize, start: u64) -> (Producer<T>, Consumer<T>) {
    channel_in_mode(capacity, start, asym::mode())
}

/// [`channel`] with the fence mode given (`true` only once `asym::enable` chose it).
fn channel_in_mode<T>(capacity: usize, start: u64, asym: bool) -> (Producer<T>, Consumer<T>) {
    debug_assert!(capacity.is_power_of_two() && start % STEP == 0);
    let slots = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let ring = Arc::new(Ring {
        head: CachePadded::new(AtomicU64::new(start)),
        tail: CachePadded::new(AtomicU64::new(start)),
        close: CachePadded::new(CloseState {
            closing: AtomicBool::new(false),
            limit: AtomicU64::new(NO_LIMIT),
        }),
        asym,
        producer_gone: AtomicBool::new(false),
        durable: CachePadded::new(AtomicU64::new(start)),
        slots,
        mask: capacity as u64 - 1,
    });
    let producer = Producer {
        ring: ring.clone(),
        tail: start,
        cached_head: start,
        closed: false,
    };
    let consumer = Consumer {
        ring,
        head: start,
        cached_tail: start,
        limit: None,
        durable: start,
    };
    (producer, consumer)
}

impl<T> Ring<T> {
    fn span(&self) -> u64 {
        (self.mask + 1) * STEP
    }

    /// Whether the ring holds nothing, as seen by a third thread (the shutdown
    /// coordinator). `SeqCst`: these loads take part in the quiescence check's total
    /// order with the shards' `idle`/`activity` stores (see `shutdown`).
    pub fn is_empty_seqcst(&self) -> bool {
        let tail = self.tail.load(Ordering::SeqCst);
        self.head.load(Ordering::SeqCst) == tail
    }
}

impl<T> Producer<T> {
    /// Pushes one value; never blocks.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        if self.closed {
            return Err(PushError::Closed(value));
        }
        if self.free() == 0 {
            self.refresh_head();
            if self.is_closed_now() {
                return Err(PushError::Closed(value));
            }
            if self.free() == 0 {
                return Err(PushError::Full(value));
            }
        }
        self.write(self.tail, value);
        if self.commit(1) {
            Ok(())
        } else {
            Err(PushError::Closed(
                self.take_back(1).pop().unwrap_or_else(|| unreachable!()),
            ))
        }
    }

    /// Publishes the `n` values written from `self.tail` on. `false` if a close came
    /// first: the values are still in their slots, for [`take_back`](Self::take_back).
    #[inline]
    fn commit(&mut self, n: u64) -> bool {
        let next = self.tail.wrapping_add(n * STEP);
        // Release: publishes the slot writes; pairs with the consumer's Acquire load of
        // `tail` (`ready_up_to`, `close`).
        self.ring.tail.store(next, Ordering::Release);
        // The light side of the pair with `Consumer::close` (and with the shard's park,
        // for the caller's load of the sleep flag): see the module docs.
        asym::light(self.ring.asym);
        // Ordered after the store above by the fence pair. Acquire: pairs with the
        // Release store in `Consumer::close`, so `settle_close` sees the consumer's
        // `head` as of the close.
        if self.ring.close.closing.load(Ordering::Acquire) {
            return self.settle_close(next);
        }
        self.tail = next;
        true
    }

    /// A push that met a close: kept only if the agreed limit counts it.
    #[cold]
    fn settle_close(&mut self, next: u64) -> bool {
        self.closed = true;
        // Every earlier push saw `closing` unset, so the close's load of `tail` sees it
        // (the fence pair): our position before this push is a limit both sides can
        // agree on, unless the consumer popped into this push before it closed (it
        // stops popping from the close until the limit is agreed, and its `head` as of
        // the close is visible to us through `closing`). Acquire: pairs with the
        // consumer's Release store of `head`.
        let head = self.ring.head.load(Ordering::Acquire);
        let mine = if reached(head, self.tail.wrapping_add(STEP)) {
            next
        } else {
            self.tail
        };
        // If the consumer agreed first, its limit is our position or `next` (it loaded
        // `tail` once, before or after our store). AcqRel/Acquire: the agreement is the
        // only thing exchanged; nothing is read on the strength of it but the values
        // the producer itself wrote.
        let limit = match self.ring.close.limit.compare_exchange(
            NO_LIMIT,
            mine,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => mine,
            Err(agreed) => agreed,
        };
        if reached(limit, next) {
            self.tail = next;
            true
        } else {
            false
        }
    }

    /// The position the next push takes: after a push, the position just past it.
    pub fn position(&self) -> u64 {
        self.tail
    }

    /// Whether the consumer has declared everything before `target` durable (see
    /// `Ring::durable`).
    pub fn is_durable(&self, target: u64) -> bool {
        // Acquire: pairs with the consumer's Release store in `publish_durable`, after
        // its commit; what the caller does next happens after that commit.
        reached(self.ring.durable.load(Ordering::Acquire), target)
    }

    /// Free slots, refreshing the cached `head` when the cache shows none.
    /// `Err(())` once the ring is closed.
    pub fn free_slots(&mut self) -> Result<usize, ()> {
        if self.closed {
            return Err(());
        }
        if self.free() == 0 {
            self.refresh_head();
            if self.is_closed_now() {
                return Err(());
            }
        }
        Ok(self.free() as usize)
    }

    /// Pushes exactly `n` values from `values` (`n` at most `free_slots()`, and
    /// `values` yields at least `n`) with one atomic read-modify-write for all of them.
    /// If the ring turns out to be closed the values are given back, in order.
    pub fn push_n(&mut self, n: usize, values: impl Iterator<Item = T>) -> Result<(), Vec<T>> {
        debug_assert!(n as u64 <= self.free());
        let mut written = 0;
        for value in values.take(n) {
            self.write(self.tail.wrapping_add(written as u64 * STEP), value);
            written += 1;
        }
        // As in `push`, one store and one fence for the whole batch.
        if self.commit(written as u64) {
            Ok(())
        } else {
            Err(self.take_back(written))
        }
    }

    /// Free slots as far as this producer knows.
    #[inline]
    fn free(&self) -> u64 {
        (self.ring.span() - self.tail.wrapping_sub(self.cached_head)) / STEP
    }

    fn refresh_head(&mut self) {
        // Acquire: pairs with the consumer's Release store of `head`, so the consumer
        // has finished moving values out of the slots we are about to reuse.
        self.cached_head = self.ring.head.load(Ordering::Acquire);
    }

    fn is_closed_now(&mut self) -> bool {
        // Relaxed is enough: a stale `false` only reports `Full` for a ring that is
        // closing; a push decides for certain (`commit`).
        if self.ring.close.closing.load(Ordering::Relaxed) {
            self.closed = true;
        }
        self.closed
    }

    #[inline]
    fn write(&mut self, pos: u64, value: T) {
        let slot = &self.ring.slots[slot_index(pos, self.ring.mask)];
        // SAFETY: this producer owns the slot: `pos` is in `[tail, cached_head + cap)`, so
        // the consumer has released it (its Release store of `head` past it was
        // Acquire-loaded into `cached_head`) and will not read it until our store of
        // `tail` publishes it, and this producer is the ring's only writer.
        slot.with_mut(|p| unsafe { (*p).write(value) });
    }

    /// Undoes the `n` writes of a push that a close refused. The consumer's limit is
    /// `self.tail` and it never reads at or past it, so these slots are still ours.
    #[cold]
    fn take_back(&mut self, n: usize) -> Vec<T> {
        self.closed = true;
        let values = (0..n)
            .map(|i| {
                let slot = &self.ring.slots
                    [slot_index(self.tail.wrapping_add(i as u64 * STEP), self.ring.mask)];
                // SAFETY: this producer owns the slot: it wrote it in this push and the
                // consumer's limit is at or before it (see above), so the value is
                // initialised and no one else can reach it.
                slot.with(|p| unsafe { (*p).assume_init_read() })
            })
            .collect();
        // Restore `tail` to the positions that hold values, so `Ring::drop` drops
        // exactly those. Relaxed: after closing the consumer reads values only up to its
        // limit, and the final drop synchronises through `Arc`.
        self.ring.tail.store(self.tail, Ordering::Relaxed);
        values
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Release: the consumer's Acquire load of `producer_gone` followed by a load of
        // `tail` then sees every push of this producer.
        self.ring.producer_gone.store(true, Ordering::Release);
    }
}

impl<T> Consumer<T> {
    /// Values ready to pop, refreshing the cached `tail` when the cache shows fewer
    /// than `want` (one load of the producer's cache line per batch, not per value).
    #[inline]
    fn ready_up_to(&mut self, want: u64) -> u64 {
        let n = self.cached_tail.wrapping_sub(self.head) / STEP;
        if n >= want {
            return n;
        }
        // Acquire: pairs with the producer's Release store of `tail`, so the slot writes
        // before it are visible.
        let tail = self.ring.tail.load(Ordering::Acquire);
        self.cached_tail = match self.limit {
            // After a close, `tail` may briefly count a push that is being undone.
            Some(limit) => limit,
            None => tail,
        };
        self.cached_tail.wrapping_sub(self.head) / STEP
    }

    /// Values ready to pop.
    pub fn ready(&mut self) -> u64 {
        self.ready_up_to(1)
    }

    /// Whether a value is ready, for the sleep re-check (after the shard's store of its
    /// sleep flag and its heavy fence: the other side of the pair is the producer's
    /// store of `tail`, light fence, sleep-flag load). `SeqCst` also puts the load in
    /// the shutdown coordinator's total order.
    pub fn has_ready_seqcst(&self) -> bool {
        if self.cached_tail != self.head {
            return true;
        }
        let tail = self.ring.tail.load(Ordering::SeqCst);
        match self.limit {
            Some(limit) => limit != self.head && tail != self.head,
            None => tail != self.head,
        }
    }

    /// Pops up to `max` values into `f`, publishing `head` once at the end (or as far
    /// as it got, if `f` unwinds). Returns how many were popped.
    #[inline]
    pub fn pop_batch(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let n = self.ready_up_to(max as u64).min(max as u64) as usize;
        if n == 0 {
            return 0;
        }
        let mut guard = HeadGuard {
            consumer: self,
            popped: 0,
        };
        while guard.popped < n {
            let pos = guard.consumer.head.wrapping_add(guard.popped as u64 * STEP);
            let slot = &guard.consumer.ring.slots[slot_index(pos, guard.consumer.ring.mask)];
            // SAFETY: this consumer owns the slot: `pos` is in `[head, cached_tail)`, so the
            // producer published it with its store of `tail` (Acquire-loaded in `ready`) and
            // will not write it again until our Release store of `head` passes it. The value
            // is moved out exactly once; `HeadGuard` advances `head` past it even on unwind.
            let value = slot.with(|p| unsafe { (*p).assume_init_read() });
            guard.popped += 1;
            f(value);
        }
        n
    }

    /// Closes the ring: later pushes fail with `Closed`, and the consumer reads only the
    /// values pushed before this call. Idempotent.
    pub fn close(&mut self) {
        if self.limit.is_some() {
            return;
        }
        // The store, then the heavy fence: the consumer's side of the pair with
        // `Producer::commit` (see the module docs). Release: publishes our last store
        // of `head` to a producer that sees `closing` (`settle_close`).
        self.ring.close.closing.store(true, Ordering::Release);
        asym::heavy(self.ring.asym);
        // Acquire: pairs with the producer's Release store; the values before `tail`
        // are visible.
        let tail = self.ring.tail.load(Ordering::Acquire);
        // Agree on the limit with a producer that saw `closing` (`settle_close`): it
        // may have set its own position (at most `tail`) first. AcqRel/Acquire: as there.
        let limit = match self.ring.close.limit.compare_exchange(
            NO_LIMIT,
            tail,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => tail,
            Err(agreed) => agreed,
        };
        self.limit = Some(limit);
        self.cached_tail = limit;
    }

    /// Whether the producer has gone and everything it pushed has been popped: the lane
    /// can be retired.
    pub fn is_finished(&mut self) -> bool {
        // Acquire: pairs with the producer's Release store in its drop; the `ready`
        // below then sees its last push.
        self.ring.producer_gone.load(Ordering::Acquire) && self.ready() == 0
    }

    /// Whether `close` has been called and everything before the close is popped.
    pub fn is_closed_and_drained(&mut self) -> bool {
        self.limit.is_some() && self.ready() == 0
    }

    /// Declares every value popped so far durable (persistent buses, after a commit).
    pub fn publish_durable(&mut self) {
        if self.durable != self.head {
            self.durable = self.head;
            // Release: the commit that made these values durable happens before a
            // producer's Acquire load that sees this position.
            self.ring.durable.store(self.head, Ordering::Release);
        }
    }

    pub fn ring(&self) -> &Arc<Ring<T>> {
        &self.ring
    }

    /// Values queued, for statistics (`head` is ours; `tail` may be a little stale).
    pub fn depth(&self) -> u64 {
        // Relaxed: a statistic; no memory is read on the strength of it.
        let tail = self.ring.tail.load(Ordering::Relaxed);
        let tail = match self.limit {
            Some(limit) => limit,
            None => tail,
        };
        tail.wrapping_sub(self.head) / STEP
    }
}

struct HeadGuard<'a, T> {
    consumer: &'a mut Consumer<T>,
    popped: usize,
}

impl<T> Drop for HeadGuard<'_, T> {
    fn drop(&mut self) {
        let c = &mut *self.consumer;
        c.head = c.head.wrapping_add(self.popped as u64 * STEP);
        // Release: the values are moved out; pairs with the producer's Acquire load in
        // `refresh_head` before it reuses these slots.
        c.ring.head.store(c.head, Ordering::Release);
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        // A consumer that goes away closes the ring, so the producer gets `Closed`
        // instead of filling a ring no one reads. Values left in it are dropped with
        // the ring.
        self.close();
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // Relaxed: `&mut self` means both ends are gone; `Arc`'s drop synchronised them.
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let mut pos = head;
        while pos != tail {
            let slot = &self.slots[slot_index(pos, self.mask)];
            // SAFETY: the ring's drop owns every slot (both ends are gone): positions in
            // `[head, tail)` hold values pushed and never popped (undone pushes were
            // subtracted from `tail`), each dropped here once.
            slot.with_mut(|p| unsafe { (*p).assume_init_drop() });
            pos = pos.wrapping_add(STEP);
        }
    }
}

#[cfg(all(test, not(shardbus_loom)))]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn fifo_and_full() {
        let (mut p, mut c) = channel::<u32>(4, 0);
        for i in 0..4 {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(9), Err(PushError::Full(9)));
        let mut got = vec![];
        assert_eq!(c.pop_batch(3, |v| got.push(v)), 3);
        p.push(4).unwrap();
        c.pop_batch(10, |v| got.push(v));
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn close_gives_values_back_and_drains_the_rest() {
        let (mut p, mut c) = channel::<String>(4, u64::MAX - 3);
        p.push("a".into()).unwrap();
        p.push("b".into()).unwrap();
        c.close();
        assert_eq!(p.push("c".into()), Err(PushError::Closed("c".into())));
        assert_eq!(p.free_slots(), Err(()));
        let (mut p2, mut c2) = channel::<String>(4, 0);
        c2.close();
        assert_eq!(
            p2.push_n(1, ["d".to_string()].into_iter()),
            Err(vec!["d".to_string()])
        );
        let mut got = vec![];
        c.pop_batch(10, |v| got.push(v));
        assert_eq!(got, vec!["a", "b"]);
        assert!(c.is_closed_and_drained());
    }

    #[test]
    fn batch_push_wraps() {
        let (mut p, mut c) = channel::<u64>(8, u64::MAX - 5);
        let mut next = 0;
        let mut model = VecDeque::new();
        for round in 0..50u64 {
            let batch: Vec<u64> = (0..(round % 7 + 1))
                .map(|_| {
                    next += 1;
                    next
                })
                .collect();
            let n = p.free_slots().unwrap().min(batch.len());
            p.push_n(n, batch.iter().copied()).unwrap();
            model.extend(batch[..n].iter().copied());
            let mut got = vec![];
            c.pop_batch((round % 3 + 1) as usize, |v| got.push(v));
            for v in got {
                assert_eq!(Some(v), model.pop_front());
            }
        }
    }

    #[test]
    fn drops_each_value_once() {
        let counter = std::sync::Arc::new(());
        {
            let (mut p, mut c) = channel(4, u64::MAX - 1);
            for _ in 0..3 {
                p.push(counter.clone()).unwrap();
            }
            c.pop_batch(1, drop);
            assert_eq!(std::sync::Arc::strong_count(&counter), 3);
            drop(p);
            assert_eq!(c.ready(), 2);
            assert!(!c.is_finished());
        }
        assert_eq!(std::sync::Arc::strong_count(&counter), 1);
    }

    /// A close racing a producer thread, with real threads, in both fence modes (the
    /// membarrier one where the kernel offers it): every push that returned `Ok` is
    /// drained exactly once and in order, the push that returned `Closed` gave back
    /// exactly the value it was given, and nothing after it was accepted. (The
    /// interleavings are explored exhaustively by the loom model
    /// `spsc_close_races_push`; this runs the real fences.)
    #[test]
    fn close_races_a_pushing_thread() {
        crate::sync::asym::enable();
        for asym in [false, crate::sync::asym::mode()] {
            for round in 0..300u64 {
                let (mut p, mut c) = channel_in_mode::<u64>(8, u64::MAX - 7, asym);
                let producer = std::thread::spawn(move || {
                    let mut accepted = 0u64;
                    loop {
                        match p.push(accepted) {
                            Ok(()) => accepted += 1,
                            Err(PushError::Full(v)) => {
                                assert_eq!(v, accepted);
                                std::hint::spin_loop();
                            }
                            Err(PushError::Closed(v)) => {
                                assert_eq!(v, accepted);
                                assert_eq!(p.push(u64::MAX), Err(PushError::Closed(u64::MAX)));
                                return accepted;
                            }
                        }
                    }
                });
                let mut got = Vec::new();
                // Pop a varying amount before closing, so the close lands anywhere.
                while (got.len() as u64) < round % 40 {
                    c.pop_batch(3, |v| got.push(v));
                }
                c.close();
                while c.pop_batch(8, |v| got.push(v)) > 0 {}
                assert!(c.is_closed_and_drained());
                let accepted = producer.join().unwrap();
                let want: Vec<u64> = (0..accepted).collect();
                assert_eq!(got, want, "asym {asym}, round {round}");
            }
        }
    }

    #[test]
    fn unwinding_consumer_keeps_accounting() {
        let (mut p, mut c) = channel::<Box<u32>>(4, 0);
        for i in 0..4 {
            p.push(Box::new(i)).unwrap();
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.pop_batch(4, |v| assert_ne!(*v, 1));
        }));
        assert!(r.is_err());
        let mut got = vec![];
        c.pop_batch(4, |v| got.push(*v));
        assert_eq!(got, vec![2, 3]);
    }
}
