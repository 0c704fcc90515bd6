//! A bounded multi-producer single-consumer ring with a close bit.
//!
//! Dmitry Vyukov's bounded array queue (the design of crossbeam's `ArrayQueue` and of
//! crossbeam-channel's array flavor), reduced to one consumer: every slot carries a
//! stamp saying whose turn it is. For a slot at position `pos` (even):
//! - `stamp == pos`: free for the producer that claims `pos`;
//! - `stamp == pos + 1`: holds the value pushed at `pos`;
//! - the consumer frees it for the next lap with `stamp = pos + 2 * cap`.
//!
//! Producers claim a position with a CAS on `tail`; the consumer closes the ring with
//! `fetch_or(CLOSED)` on the same word, so each push is ordered before or after the close.

use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use super::{slot_index, try_slots, AllocError, PushError, CLOSED, STEP};
use crate::sync::{asym, AtomicU64, AtomicUsize, Backoff, Ordering, UnsafeCell, WaitList};

struct Slot<T> {
    stamp: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

pub struct Ring<T> {
    /// Written only by the consumer; read by anyone for statistics and the coordinator.
    head: CachePadded<AtomicU64>,
    /// Claimed by producers (CAS); `CLOSED` set once by the consumer.
    tail: CachePadded<AtomicU64>,
    /// Async producers waiting for room (`Bus::publish_async`), see [`Room`].
    room: CachePadded<Room>,
    slots: Box<[Slot<T>]>,
    mask: u64,
}

/// Async producers waiting for room in a full ring: their count and their list.
///
/// The wake-up handshake is a store-buffering pair, as the park's:
/// - a producer ([`Room::enter`], then a push retry): register a listener, increment
///   `waiters` (SeqCst RMW), the heavy fence, retry the push; wait only if still full;
/// - the consumer (after a pop batch, [`Consumer::pop_batch`]): the stamp stores, the
///   light fence, load `waiters`; if non-zero, notify every listener.
///
/// One side comes first: the retry finds the freed slot, or the consumer sees the count
/// and wakes the listener (registered before the increment).
pub(crate) struct Room {
    /// Producers between their registration and the end of their wait: incremented and
    /// decremented by them, read by the consumer after each pop batch.
    waiters: AtomicUsize,
    /// Producers register listeners; the consumer notifies.
    list: WaitList,
    /// Whether the bus's fences are the membarrier pair (fixed at creation).
    asym: bool,
}

/// A producer counted in [`Room::waiters`]; uncounted on drop (also when its future is
/// dropped mid-wait).
pub(crate) struct Waiting<'a>(&'a Room);

impl Room {
    /// The waiter list, to register a listener on before [`enter`](Self::enter).
    pub(crate) fn list(&self) -> &WaitList {
        &self.list
    }

    /// Counts the caller as waiting and makes the heavy fence; the caller then retries
    /// its push and waits on its listener only if the ring is still full. `false` in the
    /// guard's second field if the heavy fence could not be made (`sync::asym`): then
    /// the caller must not sleep on the listener (poll again instead).
    pub(crate) fn enter(&self) -> (Waiting<'_>, bool) {
        // SeqCst RMW: the producer's store of the Dekker pair (see the type's docs).
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let fenced = asym::heavy(self.asym);
        (Waiting(self), fenced)
    }

    /// The consumer's side, after a pop batch: wakes the waiters, if any.
    #[inline]
    fn wake(&self) {
        asym::light(self.asym);
        // Acquire: pairs with the waiter's increment (SeqCst), after its registration.
        if self.waiters.load(Ordering::Acquire) != 0 {
            self.list.notify_all();
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        // Relaxed: the count only decides whether the consumer notifies; a stale
        // non-zero costs one spare notify.
        self.0.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

// SAFETY: values move from producer threads to the consumer thread (`T: Send`); slot
// access is partitioned by the stamps (a producer writes a slot only after winning its
// position and seeing `stamp == pos`; the consumer reads it only after `stamp == pos+1`).
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: shared references reach only the atomics and, through the stamps' protocol
// above, one slot at a time per thread; values are `T: Send`.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// A ring of `capacity` slots (a power of two) starting at position `start` (even).
    /// Aborts, as any allocation, if memory runs out: tests and models; the builder uses
    /// [`try_new`](Self::try_new).
    #[cfg(any(test, shardbus_loom))]
    pub fn new(capacity: usize, start: u64) -> Self {
        match Self::try_new(capacity, start) {
            Ok(ring) => ring,
            Err(e) => std::alloc::handle_alloc_error(
                std::alloc::Layout::from_size_align(e.bytes, 8)
                    .unwrap_or(std::alloc::Layout::new::<u64>()),
            ),
        }
    }

    /// [`new`](Self::new), with a failed allocation returned as an error.
    pub(crate) fn try_new(capacity: usize, start: u64) -> Result<Self, AllocError> {
        debug_assert!(capacity.is_power_of_two() && start.is_multiple_of(STEP));
        let cap = capacity as u64;
        let mask = cap - 1;
        // Slot `j` is first used by the position `start + i * STEP` with
        // `slot_index(that position) == j`, i.e. `i = (j - start / STEP) mod cap`.
        let slots = try_slots(capacity, |j| {
            let i = (j as u64).wrapping_sub(start >> 1) & mask;
            let pos = start.wrapping_add(i * STEP);
            Slot {
                stamp: AtomicU64::new(pos),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            }
        })?;
        Ok(Self {
            head: CachePadded::new(AtomicU64::new(start)),
            tail: CachePadded::new(AtomicU64::new(start)),
            room: CachePadded::new(Room {
                waiters: AtomicUsize::new(0),
                list: WaitList::new(),
                asym: false,
            }),
            slots,
            mask,
        })
    }

    /// Bytes of one slot of a ring of `T`: what each unit of capacity costs.
    pub fn slot_size() -> usize {
        std::mem::size_of::<Slot<T>>()
    }

    fn span(&self) -> u64 {
        (self.mask + 1) * STEP
    }

    /// The ring with the bus's fence mode for its async waiters (SeqCst fences until
    /// then; `true`: the membarrier
    /// pair, which only a bus whose `asym::decide` chose it may ask for). Before the ring
    /// is shared.
    pub fn with_asym(mut self, asym: bool) -> Self {
        self.room.asym = asym;
        self
    }

    /// Pushes one value, waiting without blocking the thread while the ring is full (see
    /// [`Room`]); returns the position it took. `may_wait` is asked once, before the
    /// first wait: `false` gives `Full` back instead. The value is pushed within one poll;
    /// a future dropped before that drops it unpushed.
    pub async fn push_at_async(
        &self,
        mut value: T,
        may_wait: impl FnOnce() -> bool,
    ) -> Result<u64, PushError<T>> {
        let mut may_wait = Some(may_wait);
        loop {
            match self.push_at(value) {
                Ok(pos) => return Ok(pos),
                Err(PushError::Full(back)) => value = back,
                Err(e) => return Err(e),
            }
            if let Some(ask) = may_wait.take() {
                if !ask() {
                    return Err(PushError::Full(value));
                }
            }
            // Register, count in, fence, retry: see `Room`.
            crate::sync::wait_list_listen!(self.room.list() => listener);
            let (_waiting, fenced) = self.room.enter();
            match self.push_at(value) {
                Ok(pos) => return Ok(pos),
                Err(PushError::Full(back)) => value = back,
                Err(e) => return Err(e),
            }
            if fenced {
                (&mut listener).await;
            } else {
                crate::sync::YieldNow::new().await;
            }
        }
    }

    /// Pushes one value from any thread; never blocks.
    #[inline]
    pub fn push(&self, value: T) -> Result<(), PushError<T>> {
        self.push_at(value).map(|_| ())
    }

    /// Pushes one value; returns the position it took.
    pub fn push_at(&self, value: T) -> Result<u64, PushError<T>> {
        let backoff = Backoff::new();
        // Relaxed: only a guess at the next position; the CAS below validates it.
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            if tail & CLOSED != 0 {
                return Err(PushError::Closed(value));
            }
            let slot = &self.slots[slot_index(tail, self.mask)];
            // Acquire: pairs with the consumer's Release store of the stamp, so its
            // read of the previous lap's value is done before we overwrite the slot.
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == tail {
                // SeqCst: the RMW orders this push with the consumer's close; SeqCst
                // also orders it before the caller's load of the shard's sleep flag.
                match self.tail.compare_exchange_weak(
                    tail,
                    tail.wrapping_add(STEP),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // This producer owns the slot: it won position `tail`,
                        // whose stamp says the slot is free; no other producer can win it
                        // until the consumer frees it again, and the consumer will not
                        // read it until the stamp below.
                        // SAFETY: by the ownership stated in the lines just above.
                        slot.value.with_mut(|p| unsafe { (*p).write(value) });
                        // Release: publishes the value; pairs with the consumer's
                        // Acquire load of the stamp.
                        slot.stamp.store(tail.wrapping_add(1), Ordering::Release);
                        return Ok(tail);
                    }
                    Err(current) => {
                        tail = current;
                        backoff.spin();
                    }
                }
            } else if stamp.wrapping_add(self.span()) == tail.wrapping_add(1) {
                // The slot still holds the value from one lap ago: full, unless the
                // tail moved meanwhile. SeqCst (a plain load on x86): a retry must see
                // the latest `tail`, or a stale value could be re-read forever.
                let current = self.tail.load(Ordering::SeqCst);
                if current == tail {
                    return Err(PushError::Full(value));
                }
                tail = current;
            } else {
                backoff.spin();
                // SeqCst: as above, a retry must not spin on a stale `tail`.
                tail = self.tail.load(Ordering::SeqCst);
            }
        }
    }
}

/// The consuming end's state, owned by the shard thread.
pub struct Consumer {
    head: u64,
    limit: Option<u64>,
}

impl Consumer {
    pub fn new<T>(ring: &Ring<T>) -> Self {
        // Relaxed: called before the ring is shared.
        Self {
            head: ring.head.load(Ordering::Relaxed),
            limit: None,
        }
    }

    /// Pops up to `max` ready values into `f`. Stops early at a slot that a producer has
    /// claimed but not yet written (it will be ready on a later call). Returns the count.
    pub fn pop_batch<T>(&mut self, ring: &Ring<T>, max: usize, mut f: impl FnMut(T)) -> usize {
        let mut n = 0;
        while n < max {
            if self.limit == Some(self.head) {
                break;
            }
            let slot = &ring.slots[slot_index(self.head, ring.mask)];
            // Acquire: pairs with the producer's Release store of the stamp, making its
            // value write visible.
            if slot.stamp.load(Ordering::Acquire) != self.head.wrapping_add(1) {
                break;
            }
            // The consumer owns the slot: the stamp says it holds the value pushed
            // at `head`, only this consumer reads slots, and the value is moved out once
            // before the slot is freed.
            // SAFETY: by the ownership stated in the lines just above.
            let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
            let pos = self.head;
            self.head = pos.wrapping_add(STEP);
            // Release: our read is done; pairs with a producer's Acquire stamp load.
            slot.stamp
                .store(pos.wrapping_add(ring.span()), Ordering::Release);
            // Relaxed: `head` is read only for statistics and emptiness checks that
            // also look at the stamps.
            ring.head.store(self.head, Ordering::Relaxed);
            n += 1;
            f(value);
        }
        if n > 0 {
            ring.room.wake();
        }
        n
    }

    /// Whether a value is (or is about to be) ready. `SeqCst`: the sleep re-check's
    /// side of the Dekker pair with a producer's CAS on `tail` (see `inbox`).
    pub fn has_ready_seqcst<T>(&self, ring: &Ring<T>) -> bool {
        let tail = ring.tail.load(Ordering::SeqCst) & !CLOSED;
        let end = self.limit.unwrap_or(tail);
        end != self.head && tail != self.head
    }

    /// Closes the ring to producers; values pushed before remain to be popped.
    pub fn close<T>(&mut self, ring: &Ring<T>) {
        if self.limit.is_none() {
            // SeqCst RMW: totally ordered with every producer's CAS on `tail`.
            let prev = ring.tail.fetch_or(CLOSED, Ordering::SeqCst);
            self.limit = Some(prev & !CLOSED);
            // Waiters retry and meet the close bit.
            ring.room.list.notify_all();
        }
    }

    /// After `close`: pops every value pushed before the close, waiting out producers
    /// that have claimed a position but not yet written it.
    pub fn drain_closed<T>(&mut self, ring: &Ring<T>, mut f: impl FnMut(T)) -> usize {
        let mut total = 0;
        let backoff = Backoff::new();
        while self.limit.is_some_and(|limit| limit != self.head) {
            let n = self.pop_batch(ring, usize::MAX, &mut f);
            total += n;
            if n == 0 {
                backoff.snooze();
            }
        }
        total
    }

    pub fn is_closed(&self) -> bool {
        self.limit.is_some()
    }

    /// The position of the next value to pop.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Values queued, for statistics.
    pub fn depth<T>(&self, ring: &Ring<T>) -> u64 {
        // Relaxed: a statistic.
        let tail = ring.tail.load(Ordering::Relaxed) & !CLOSED;
        self.limit.unwrap_or(tail).wrapping_sub(self.head) / STEP
    }
}

impl<T> Ring<T> {
    /// Entries pushed and not yet popped, as another thread than the consumer sees them
    /// (the shutdown coordinator, for a shard that has not stopped). Relaxed: a count;
    /// no slot is read on the strength of it. The consumer stores `head` before it hands
    /// an entry on, so an entry being handled is not counted.
    pub fn depth_seen(&self) -> u64 {
        let tail = self.tail.load(Ordering::Relaxed) & !CLOSED;
        let head = self.head.load(Ordering::Relaxed);
        tail.wrapping_sub(head) / STEP
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // Relaxed: `&mut self`, every producer and the consumer are done.
        let mut pos = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed) & !CLOSED;
        while pos != tail {
            let slot = &self.slots[slot_index(pos, self.mask)];
            if slot.stamp.load(Ordering::Relaxed) == pos.wrapping_add(1) {
                // The ring's drop owns every slot (every producer and the
                // consumer are done), and the stamp says this one holds an unpopped
                // value, dropped here once.
                // SAFETY: by the ownership stated in the lines just above.
                slot.value.with_mut(|p| unsafe { (*p).assume_init_drop() });
            }
            pos = pos.wrapping_add(STEP);
        }
    }
}

#[cfg(all(test, not(shardbus_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fifo_full_close() {
        let ring = Ring::new(4, u64::MAX - 3);
        let mut c = Consumer::new(&ring);
        for i in 0..4 {
            ring.push(i).unwrap();
        }
        assert_eq!(ring.push(9), Err(PushError::Full(9)));
        let mut got = vec![];
        c.pop_batch(&ring, 2, |v| got.push(v));
        ring.push(4).unwrap();
        c.close(&ring);
        assert_eq!(ring.push(5), Err(PushError::Closed(5)));
        c.drain_closed(&ring, |v| got.push(v));
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn drops_unpopped_once() {
        let token = Arc::new(());
        {
            let ring = Ring::new(8, 0);
            let mut c = Consumer::new(&ring);
            for _ in 0..5 {
                ring.push(token.clone()).unwrap();
            }
            c.pop_batch(&ring, 2, drop);
            assert_eq!(Arc::strong_count(&token), 4);
        }
        assert_eq!(Arc::strong_count(&token), 1);
    }

    #[test]
    fn many_producers_exactly_once() {
        let ring = Arc::new(Ring::new(64, u64::MAX - 41));
        let mut c = Consumer::new(&ring);
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let mut v = (p << 32) | i;
                        loop {
                            match ring.push(v) {
                                Ok(()) => break,
                                Err(PushError::Full(back)) => {
                                    v = back;
                                    std::thread::yield_now();
                                }
                                Err(PushError::Closed(_)) => unreachable!(),
                            }
                        }
                    }
                })
            })
            .collect();
        let mut next = [0u64; 4];
        let mut total = 0;
        while total < 80_000 {
            total += c.pop_batch(&ring, 128, |v| {
                let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
                assert_eq!(next[p], i, "per-producer order");
                next[p] += 1;
            });
        }
        for t in producers {
            t.join().unwrap();
        }
        assert_eq!(next, [20_000; 4]);
    }
}
