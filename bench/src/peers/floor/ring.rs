//! A minimal bounded SPSC ring, the throughput ceiling of one hand-off: each side keeps the other
//! side's index cached and re-reads it only when the cache says full (producer) or empty
//! (consumer), and publishes its own index every [`BATCH`] items and always before it waits, so
//! neither side can wait for items or slots the other has not published yet.
//!
//! Indices count items since creation and wrap; `index & mask` is the slot.

use std::cell::UnsafeCell;
use std::hint;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

/// Largest number of items a side handles between two publications of its index.
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
    let producer = Producer {
        shared: Arc::clone(&shared),
        tail: start,
        published: start,
        head: start,
        batch,
    };
    let consumer = Consumer {
        shared,
        head: start,
        released: start,
        tail: start,
        batch,
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

// SAFETY: `channel_from` creates exactly one `Producer` and one `Consumer` (neither is `Clone`),
// and the head/tail protocol gives each slot to one of them at a time, so a `T` is only ever
// moved from the producer's thread to the consumer's: `T: Send` is all sharing needs.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both sides published their final index when they were dropped, and `&mut self` means
        // they are gone: `[head, tail)` are exactly the written, unread items.
        let tail = *self.producer.tail.get_mut();
        let mut i = *self.head.get_mut();
        while i != tail {
            // SAFETY: slot `i` is in `[head, tail)`, so the producer initialised it and the
            // consumer never read it; we are the last owner and drop each such slot once.
            unsafe { self.slots[i & self.mask].get_mut().assume_init_drop() };
            i = i.wrapping_add(1);
        }
    }
}

/// The writing end.
pub(crate) struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Next index to write; only this side knows it until published.
    tail: usize,
    /// Last `tail` stored to `shared`.
    published: usize,
    /// Cached consumer head: never ahead of the real one.
    head: usize,
    batch: usize,
}

impl<T> Producer<T> {
    /// Appends `value`, spinning while the ring is full.
    pub(crate) fn push(&mut self, value: T) {
        let capacity = self.shared.mask + 1;
        if self.tail.wrapping_sub(self.head) == capacity {
            // The consumer may be waiting for exactly the items we hold back.
            self.publish();
            loop {
                // Acquire: pairs with the Release store in `Consumer::release`, so the consumer's
                // reads of the slots below `head` happen before we overwrite them.
                self.head = self.shared.head.load(Ordering::Acquire);
                if self.tail.wrapping_sub(self.head) < capacity {
                    break;
                }
                hint::spin_loop();
            }
        }
        let slot = &self.shared.slots[self.tail & self.shared.mask];
        // SAFETY: `tail - head < capacity` with `head` no newer than the consumer's, so slot
        // `tail` is outside `[head, tail)`: it belongs to the producer, and the consumer does not
        // touch it until a published tail covers it. Only this producer writes slots.
        unsafe { (*slot.get()).write(value) };
        self.tail = self.tail.wrapping_add(1);
        if self.tail.wrapping_sub(self.published) >= self.batch {
            self.publish();
        }
    }

    fn publish(&mut self) {
        // Release: publishes the slot writes below `tail`; pairs with the Acquire loads of `tail`
        // in `Consumer::pop`.
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
        // `closed` in `Consumer::pop`, which then re-reads the final `tail`.
        self.shared.producer.closed.store(true, Ordering::Release);
    }
}

/// The reading end.
pub(crate) struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Next index to read; only this side knows it until released.
    head: usize,
    /// Last `head` stored to `shared`.
    released: usize,
    /// Cached producer tail: never ahead of the real one.
    tail: usize,
    batch: usize,
}

impl<T> Consumer<T> {
    /// Takes the oldest item, spinning while the ring is empty; `None` once the producer is gone
    /// and every item was taken.
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.head == self.tail {
            // The producer may be waiting for exactly the slots we hold back.
            self.release();
            loop {
                // Acquire: pairs with the Release store in `Producer::publish`, so the slot
                // writes below `tail` happen before our reads.
                self.tail = self.shared.producer.tail.load(Ordering::Acquire);
                if self.head != self.tail {
                    break;
                }
                // Acquire: pairs with the Release store in `Producer::drop`; after it, the load
                // below sees the final `tail` (the load above may have been older).
                if self.shared.producer.closed.load(Ordering::Acquire) {
                    // Acquire: as above.
                    self.tail = self.shared.producer.tail.load(Ordering::Acquire);
                    if self.head == self.tail {
                        return None;
                    }
                    break;
                }
                hint::spin_loop();
            }
        }
        let slot = &self.shared.slots[self.head & self.shared.mask];
        // SAFETY: `head < tail` with `tail` no newer than the published one, so the producer
        // wrote slot `head` and the Acquire load made the write visible; it stays ours until a
        // released head passes it. Only this consumer reads slots, and each index once.
        let value = unsafe { (*slot.get()).assume_init_read() };
        self.head = self.head.wrapping_add(1);
        if self.head.wrapping_sub(self.released) >= self.batch {
            self.release();
        }
        Some(value)
    }

    fn release(&mut self) {
        // Release: orders our reads of the slots below `head` before the producer reuses them;
        // pairs with the Acquire load of `head` in `Producer::push`.
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

    #[test]
    fn fifo_then_none_after_producer_drop() {
        let (mut p, mut c) = channel(4);
        for i in 0..3 {
            p.push(i);
        }
        drop(p);
        assert_eq!(
            (c.pop(), c.pop(), c.pop(), c.pop()),
            (Some(0), Some(1), Some(2), None)
        );
    }

    /// Catches a full/empty test that breaks when the indices wrap past `usize::MAX`.
    #[test]
    fn wraps_around_usize_max_exactly_once_in_order() {
        const N: usize = 100_000;
        let (mut p, mut c) = channel_from(8, usize::MAX - 3);
        let consumer = thread::spawn(move || {
            let mut seen = vec![0u8; N];
            let mut next = 0;
            while let Some(i) = c.pop() {
                assert_eq!(i, next, "in order");
                seen[i] += 1;
                next += 1;
            }
            seen
        });
        for i in 0..N {
            p.push(i);
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
        drop(c.pop());
        assert_eq!(Arc::strong_count(&token), 6);
        drop(c);
        assert_eq!(Arc::strong_count(&token), 1);
    }
}
