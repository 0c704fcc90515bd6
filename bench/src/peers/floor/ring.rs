//! A minimal bounded SPSC ring, the throughput ceiling of one hand-off, written the way the
//! fastest SPSC queues are (rigtorp's `SPSCQueue`, the disruptor's batch consumer):
//!
//! - each side keeps the other side's index cached and re-reads it only when the cache says
//!   full (producer) or empty (consumer), so in steady state neither side touches the other's
//!   cache line;
//! - each side publishes its own index in batches: the producer every [`BATCH`] items of
//!   [`Producer::push`] and once per [`Producer::push_slice`], the consumer once per run of
//!   [`Consumer::drain`] (the disruptor's batch consumer); and always before it waits, so
//!   neither side can wait for items or slots the other has not published yet;
//! - the producer's index, the consumer's index and the read-only part (slot pointer, mask) sit
//!   on their own cache lines ([`CachePadded`]), and each end keeps the slot pointer and mask in
//!   its own struct, so a push or a pop reads no shared line but the slot's.
//!
//! Indices count items since creation and wrap; `index & mask` is the slot.

use std::cell::UnsafeCell;
use std::hint;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

/// Largest number of items [`Producer::push`] writes between two publications of its index.
const BATCH: usize = 32;

/// Creates a ring of `capacity` (rounded up to a power of two, at least 1) slots.
pub(crate) fn channel<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    channel_from(capacity, 0)
}

/// [`channel`] with both indices starting at `start`, to test wrap-around.
fn channel_from<T: Send>(capacity: usize, start: usize) -> (Producer<T>, Consumer<T>) {
    let capacity = capacity.max(1).next_power_of_two();
    let shared = Arc::new(Shared {
        producer: CachePadded::new(ProducerIndex {
            tail: AtomicUsize::new(start),
            closed: AtomicBool::new(false),
        }),
        head: CachePadded::new(AtomicUsize::new(start)),
        slots: (0..capacity)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect(),
        mask: capacity - 1,
    });
    let batch = BATCH.min(capacity);
    // A pointer to every slot, as `UnsafeCell::get` gives one: `UnsafeCell` is
    // `repr(transparent)` and its contents may be written through a pointer derived from a
    // shared reference. The slots never move: they live in the `Arc` each end holds.
    let slots = shared.slots.as_ptr().cast::<MaybeUninit<T>>().cast_mut();
    let producer = Producer {
        slots,
        mask: capacity - 1,
        tail: start,
        published: start,
        head: start,
        batch,
        shared: Arc::clone(&shared),
    };
    let consumer = Consumer {
        slots,
        mask: capacity - 1,
        head: start,
        released: start,
        tail: start,
        run: (capacity / 4).max(1),
        shared,
    };
    (producer, consumer)
}

struct Shared<T> {
    /// Written by the producer, read by the consumer.
    producer: CachePadded<ProducerIndex>,
    /// Written by the consumer, read by the producer: items below it have been read.
    head: CachePadded<AtomicUsize>,
    /// Slots in `[head, tail)` hold items and belong to the consumer; all others belong to the
    /// producer. Read-only apart from the slot contents.
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
}

struct ProducerIndex {
    /// Items below it are written.
    tail: AtomicUsize,
    /// Set once, after the final `tail`, when the producer is dropped.
    closed: AtomicBool,
}

// `channel_from` creates exactly one `Producer` and one `Consumer` (neither is `Clone`),
// and the head/tail protocol gives each slot to one of them at a time, so a `T` is only ever
// moved from the producer's thread to the consumer's: `T: Send` is all sharing needs.
// SAFETY: by the ownership stated in the lines just above.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both sides published their final index when they were dropped, and `&mut self` means
        // they are gone: `[head, tail)` are exactly the written, unread items.
        let tail = *self.producer.tail.get_mut();
        let mut i = *self.head.get_mut();
        while i != tail {
            // slot `i` is in `[head, tail)`, so the producer initialised it and the
            // consumer never read it; we are the last owner and drop each such slot once.
            // SAFETY: by the ownership stated in the lines just above.
            unsafe { self.slots[i & self.mask].get_mut().assume_init_drop() };
            i = i.wrapping_add(1);
        }
    }
}

/// The writing end.
pub(crate) struct Producer<T> {
    /// `shared.slots`' first slot, cached so a push reads no shared line but the slot's.
    slots: *mut MaybeUninit<T>,
    mask: usize,
    /// Next index to write; only this side knows it until published.
    tail: usize,
    /// Last `tail` stored to `shared`.
    published: usize,
    /// Cached consumer head: never ahead of the real one.
    head: usize,
    batch: usize,
    /// Keeps `slots` alive.
    shared: Arc<Shared<T>>,
}

// the only field that is not `Send` on its own is `slots`, a pointer into the slots the
// `Arc` beside it keeps alive; the producer writes through it only into slots the protocol gives
// it, from whichever single thread owns the `Producer`, and a `T` moved that way needs `T: Send`.
// SAFETY: by the ownership stated in the lines just above.
unsafe impl<T: Send> Send for Producer<T> {}

impl<T> Producer<T> {
    /// Appends `value`, spinning while the ring is full.
    #[inline]
    pub(crate) fn push(&mut self, value: T) {
        if self.tail.wrapping_sub(self.head) > self.mask {
            self.wait_for_room(1);
        }
        // `tail - head <= mask` with `head` no newer than the consumer's, so slot
        // `tail` is outside `[head, tail)`: it belongs to the producer, and the consumer does not
        // touch it until a published tail covers it. Only this producer writes slots; `slots`
        // points at `mask + 1` slots kept alive by `shared`.
        // SAFETY: by the ownership stated in the lines just above.
        unsafe { (*self.slots.add(self.tail & self.mask)).write(value) };
        self.tail = self.tail.wrapping_add(1);
        if self.tail.wrapping_sub(self.published) >= self.batch {
            self.publish();
        }
    }

    /// Appends every item of `items` in order, spinning while the ring is full; publishes the
    /// tail once per stretch of free slots (once per call when there is room for all of them).
    #[inline]
    pub(crate) fn push_slice(&mut self, mut items: &[T])
    where
        T: Copy,
    {
        let capacity = self.mask + 1;
        while !items.is_empty() {
            let mut free = capacity - self.tail.wrapping_sub(self.head);
            if free < items.len() {
                // Acquire: pairs with the Release store in `Consumer::release`, so the
                // consumer's reads of the slots below `head` happen before we overwrite them.
                self.head = self.shared.head.load(Ordering::Acquire);
                free = capacity - self.tail.wrapping_sub(self.head);
                if free == 0 {
                    self.wait_for_room(1);
                    free = capacity - self.tail.wrapping_sub(self.head);
                }
            }
            // Up to the free slots and the end of the array (the rest wraps to slot 0).
            let at = self.tail & self.mask;
            let n = items.len().min(free).min(capacity - at);
            // slots `tail..tail + n` are free (`n <= capacity - (tail - head)`), so they
            // belong to the producer as in `push`; `at + n <= capacity` keeps the copy inside the
            // slots, and the source is a caller's slice that cannot overlap them.
            // SAFETY: by the ownership stated in the lines just above.
            unsafe {
                std::ptr::copy_nonoverlapping(items.as_ptr(), self.slots.add(at).cast::<T>(), n);
            }
            self.tail = self.tail.wrapping_add(n);
            items = &items[n..];
        }
        self.publish();
    }

    /// Publishes what we hold back (the consumer may be waiting for exactly that), then spins
    /// until at least `need` slots are free.
    #[cold]
    fn wait_for_room(&mut self, need: usize) {
        let capacity = self.mask + 1;
        self.publish();
        loop {
            // Acquire: pairs with the Release store in `Consumer::release`, so the consumer's
            // reads of the slots below `head` happen before we overwrite them.
            self.head = self.shared.head.load(Ordering::Acquire);
            if capacity - self.tail.wrapping_sub(self.head) >= need {
                return;
            }
            hint::spin_loop();
        }
    }

    #[inline]
    fn publish(&mut self) {
        // Release: publishes the slot writes below `tail`; pairs with the Acquire loads of `tail`
        // in `Consumer::wait_for_items`.
        self.shared
            .producer
            .tail
            .store(self.tail, Ordering::Release);
        self.published = self.tail;
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        self.publish();
        // Release: orders the final `tail` store before `closed`; pairs with the Acquire load of
        // `closed` in `Consumer::wait_for_items`, which then re-reads the final `tail`.
        self.shared.producer.closed.store(true, Ordering::Release);
    }
}

/// The reading end.
pub(crate) struct Consumer<T> {
    /// `shared.slots`' first slot, cached so a pop reads no shared line but the slot's.
    slots: *mut MaybeUninit<T>,
    mask: usize,
    /// Next index to read; only this side knows it until released.
    head: usize,
    /// Last `head` stored to `shared`.
    released: usize,
    /// Cached producer tail: never ahead of the real one.
    tail: usize,
    /// Most items one [`Consumer::drain`] run takes before it releases them.
    run: usize,
    /// Keeps `slots` alive.
    shared: Arc<Shared<T>>,
}

// as for `Producer`: `slots` points into slots the `Arc` keeps alive, read only where the
// protocol gives them to the consumer, by whichever single thread owns the `Consumer`.
// SAFETY: by the ownership stated in the lines just above.
unsafe impl<T: Send> Send for Consumer<T> {}

impl<T> Consumer<T> {
    /// The disruptor's batch consumer: waits for items, then hands every published item (at
    /// most a quarter of the ring) to `f` in order and releases their slots once. `false` once
    /// the producer is gone and every item was taken.
    #[inline]
    pub(crate) fn drain(&mut self, mut f: impl FnMut(T)) -> bool {
        if self.head == self.tail && !self.wait_for_items() {
            return false;
        }
        let n = self.tail.wrapping_sub(self.head).min(self.run);
        for _ in 0..n {
            // `head < tail` with `tail` no newer than the published one, so the producer
            // wrote slot `head` and the Acquire load made the write visible; it stays ours until
            // the release below. Only this consumer reads slots, and each index once.
            // SAFETY: by the ownership stated in the lines just above.
            let value = unsafe { (*self.slots.add(self.head & self.mask)).assume_init_read() };
            self.head = self.head.wrapping_add(1);
            f(value);
        }
        self.release();
        true
    }

    /// Releases what we hold back (the producer may be waiting for exactly those slots), then
    /// spins until the producer published more items (`true`) or closed with none left.
    #[cold]
    fn wait_for_items(&mut self) -> bool {
        self.release();
        loop {
            // Acquire: pairs with the Release store in `Producer::publish`, so the slot writes
            // below `tail` happen before our reads.
            self.tail = self.shared.producer.tail.load(Ordering::Acquire);
            if self.head != self.tail {
                return true;
            }
            // Acquire: pairs with the Release store in `Producer::drop`; after it, the load
            // below sees the final `tail` (the load above may have been older).
            if self.shared.producer.closed.load(Ordering::Acquire) {
                // Acquire: as above.
                self.tail = self.shared.producer.tail.load(Ordering::Acquire);
                return self.head != self.tail;
            }
            hint::spin_loop();
        }
    }

    #[inline]
    fn release(&mut self) {
        // Release: orders our reads of the slots below `head` before the producer reuses them;
        // pairs with the Acquire loads of `head` in `Producer::push_slice` and
        // `Producer::wait_for_room`.
        self.shared.head.store(self.head, Ordering::Release);
        self.released = self.head;
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        // `Shared::drop` relies on the final head to drop the unread items.
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    /// Everything `c` drains until the producer is gone, one `Vec` per run.
    fn runs(c: &mut Consumer<usize>) -> Vec<Vec<usize>> {
        let mut runs = Vec::new();
        loop {
            let mut run = Vec::new();
            if !c.drain(|i| run.push(i)) {
                return runs;
            }
            runs.push(run);
        }
    }

    #[test]
    fn fifo_in_runs_of_at_most_a_quarter_then_false_after_producer_drop() {
        let (mut p, mut c) = channel(16);
        for i in 0..10 {
            p.push(i);
        }
        drop(p);
        assert_eq!(
            runs(&mut c),
            [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
        );
        assert!(!c.drain(|_| unreachable!()));
    }

    /// Catches a full/empty test that breaks when the indices wrap past `usize::MAX`.
    #[test]
    fn wraps_around_usize_max_exactly_once_in_order() {
        const N: usize = 100_000;
        let (mut p, mut c) = channel_from(8, usize::MAX - 3);
        let consumer = thread::spawn(move || {
            let mut seen = vec![0u8; N];
            let mut next = 0;
            while c.drain(|i: usize| {
                assert_eq!(i, next, "in order");
                seen[i] += 1;
                next += 1;
            }) {}
            seen
        });
        for i in 0..N {
            p.push(i);
        }
        drop(p);
        assert!(consumer.join().unwrap().iter().all(|&n| n == 1));
    }

    /// Catches a slice copy that runs past the end of the slots, overwrites unread items or
    /// loses the tail of a slice when it wraps (slices longer than the ring, odd sizes, indices
    /// past `usize::MAX`), and a drain that skips or repeats items.
    #[test]
    fn slices_and_drains_wrap_exactly_once_in_order() {
        const N: usize = 100_000;
        let (mut p, mut c) = channel_from(16, usize::MAX - 5);
        let consumer = thread::spawn(move || {
            let mut seen = vec![0u8; N];
            let mut next = 0;
            while c.drain(|i: usize| {
                assert_eq!(i, next, "in order");
                seen[i] += 1;
                next += 1;
            }) {}
            seen
        });
        let items: Vec<usize> = (0..N).collect();
        let mut at = 0;
        for len in [1, 7, 16, 40, 3].into_iter().cycle() {
            let end = (at + len).min(N);
            p.push_slice(&items[at..end]);
            at = end;
            if at == N {
                break;
            }
        }
        drop(p);
        assert!(consumer.join().unwrap().iter().all(|&n| n == 1));
    }

    /// Catches leaked or doubly dropped items left in the ring at shutdown.
    #[test]
    fn unread_items_are_dropped_exactly_once() {
        let token = Arc::new(());
        let (mut p, mut c) = channel(8);
        for _ in 0..6 {
            p.push(Arc::clone(&token));
        }
        drop(p);
        c.run = 1;
        assert!(c.drain(drop));
        assert_eq!(Arc::strong_count(&token), 6);
        drop(c);
        assert_eq!(Arc::strong_count(&token), 1);
    }
}
