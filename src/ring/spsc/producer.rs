//! The producing end of the SPSC ring: push, batch push, and the push's half of the close
//! handshake.

use super::*;
use crate::sync::with_mut_stretch;

impl<T> Producer<T> {
    /// Pushes one value; never blocks.
    ///
    /// Always inlined: called out of line, the value reaches the slot through memory (the
    /// caller stores it field by field, the push loads it whole), a load that cannot take
    /// its data from those stores and so waits for every older store to leave the store
    /// buffer, including the previous push's slot and `tail` stores, which miss while the
    /// consumer reads those lines. Inlined, the value goes from registers to the slot.
    #[inline(always)]
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
        // A line a few pushes on is asked for now (see `prefetch_distance`).
        crate::sync::prefetch_write(self.ring.slot(self.tail.wrapping_add(self.ahead)));
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

    /// An async producer facing a full ring: `Ready` once a push may succeed (there is
    /// room, or the ring is closed and the push reports it), otherwise registers
    /// `cx`'s waker and returns `Pending`; the consumer wakes it after its next pop
    /// batch (or its close). See [`RoomWaiter`] for the handshake.
    pub fn poll_room(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use std::task::Poll;
        if self.has_room_or_closed() {
            return Poll::Ready(());
        }
        let room = &self.ring.room;
        room.waker.register(cx.waker());
        // Release: the registration happens before a consumer's Acquire load that sees
        // the flag, so its wake finds the waker.
        room.waiting.store(true, Ordering::Release);
        // The heavy side of the pair with the consumer's light fence after its `head`
        // store (`Ring::wake_room`): orders the flag store before the re-check below.
        if !asym::heavy(self.ring.asym) {
            // No barrier could be forced on the consumer's CPU (`sync::asym`): poll again
            // rather than risk a missed wake-up.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if self.has_room_or_closed() {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Whether a push would not meet `Full` now (refreshing the cached `head`).
    fn has_room_or_closed(&mut self) -> bool {
        if self.closed || self.free() > 0 {
            return true;
        }
        self.refresh_head();
        self.free() > 0 || self.is_closed_now()
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
    /// `values` yields at least `n`) with one store of `tail` (and one fence) for them all.
    /// If the ring turns out to be closed the values are given back, in order.
    ///
    /// Batches of at least [`STAGE_FROM`] values of a type that [`stage_len`] admits are
    /// gathered in a stack buffer first and copied into their slots a buffer at a time
    /// (`write_staged`): the copy writes each slot line with a few full-width stores, where
    /// writing each value's fields into its slot takes a store per field, each waiting in
    /// the store queue for a line the consumer's cache holds (it read the slot a lap ago).
    /// The measured effect is in `docs/benchmarks.md`, "The batch push, staged".
    ///
    /// `values` must not panic: values it has yielded before a panic are leaked, not
    /// dropped (the ring's own callers pass draining iterators, which do not).
    pub fn push_n(&mut self, n: usize, values: impl Iterator<Item = T>) -> Result<(), Vec<T>> {
        debug_assert!(n as u64 <= self.free());
        let written = match stage_len::<T>() {
            len if len > 0 && n >= STAGE_FROM => self.write_staged(n, len, values),
            _ => self.write_direct(n, values),
        };
        // As in `push`, one store and one fence for the whole batch.
        if self.commit(written as u64) {
            Ok(())
        } else {
            Err(self.take_back(written))
        }
    }

    /// [`push_n`](Self::push_n)'s writes through a [`Stage`] of `len` values: at most
    /// `len` values at a time are moved into the stage, then copied into contiguous slots
    /// from `tail` on (a stretch ends at the ring's end or the stage's). Returns how many
    /// were written (fewer than `n` only if `values` ran out).
    #[inline]
    fn write_staged(&mut self, n: usize, len: usize, values: impl Iterator<Item = T>) -> usize {
        let mut stage = Stage([MaybeUninit::uninit(); STAGE_BYTES]);
        let first: *mut MaybeUninit<T> = stage.0.as_mut_ptr().cast();
        // The stage is this call's own, `len` values of `T` fit in its bytes, and it is
        // aligned for `T` (`stage_len`); `MaybeUninit` asks nothing of those bytes.
        // SAFETY: by the ownership, size and alignment stated in the lines just above.
        let staged = unsafe { std::slice::from_raw_parts_mut(first, len) };
        let mut values = values.take(n);
        let mut written = 0;
        while written < n {
            let (start, to_end) = self.stretch_from(written, n);
            let stretch = to_end.min(len);
            let mut filled = 0;
            // One bound check for the stretch (`stretch <= len`), none per value.
            for cell in &mut staged[..stretch] {
                let Some(value) = values.next() else { break };
                cell.write(value);
                filled += 1;
            }
            let mut copied = 0;
            with_mut_stretch(&self.ring.slots[start..start + filled], |first, count| {
                // The slots `[start, start + filled)` are this producer's: their positions
                // are in `[tail, cached_head + cap)` (`n` is at most the free slots), as in
                // `write`; they are on the heap, the stage on this call's stack, so the two
                // do not overlap. The stage's values `[copied, copied + count)` were written
                // just above and are moved out exactly once, here: the stage holds
                // `MaybeUninit`s, whose drop runs no `T` destructor.
                // SAFETY: by the ownership stated in the lines just above.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        staged[copied..copied + count].as_ptr().cast::<T>(),
                        first.cast::<T>(),
                        count,
                    );
                }
                copied += count;
            });
            written += filled;
            if filled < stretch {
                break; // `values` ran out
            }
        }
        written
    }

    /// [`push_n`](Self::push_n)'s writes straight into the slots, for small batches and for
    /// types too large (or too aligned) to stage. Returns how many were written.
    #[inline]
    fn write_direct(&mut self, n: usize, values: impl Iterator<Item = T>) -> usize {
        // Every line the batch writes is asked for first, so that their trips from the
        // consumer's cache overlap (see `prefetch_distance`).
        let per_line = (LINE_BYTES / std::mem::size_of::<T>().max(1)).max(1);
        for at in (0..n).step_by(per_line) {
            crate::sync::prefetch_write(self.ring.slot(self.tail.wrapping_add(at as u64 * STEP)));
        }
        let mut values = values.take(n);
        let mut written = 0;
        // Slot by slot over at most two stretches of contiguous slots (to the ring's end,
        // then from its start): no position arithmetic or index check per value.
        while written < n {
            let (start, stretch) = self.stretch_from(written, n);
            let before = written;
            for (slot, value) in self.ring.slots[start..start + stretch]
                .iter()
                .zip(&mut values)
            {
                // This producer owns the slot: its position is in `[tail, cached_head +
                // cap)` (`n` is at most the free slots), as in `write`.
                // SAFETY: by the ownership stated in the lines just above.
                slot.with_mut(|p| unsafe { (*p).write(value) });
                written += 1;
            }
            if written - before < stretch {
                break; // `values` ran out
            }
        }
        written
    }

    /// Where a batch of `n` values goes on after its first `written`: the slot index of the
    /// next value, and how many of the rest fit from it to the ring's end.
    #[inline]
    fn stretch_from(&self, written: usize, n: usize) -> (usize, usize) {
        let start = slot_index(
            self.tail.wrapping_add(written as u64 * STEP),
            self.ring.mask,
        );
        (start, (n - written).min(self.ring.slots.len() - start))
    }

    /// Whether the consumer has popped everything pushed so far: a fresh (Acquire) load
    /// of `head`, whatever the cache says. Acquire: pairs with the consumer's Release
    /// store of `head`, so the values are moved out before the caller relies on it.
    pub fn is_drained(&mut self) -> bool {
        self.refresh_head();
        self.cached_head == self.tail
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
        let slot = self.ring.slot(pos);
        // This producer owns the slot: `pos` is in `[tail, cached_head + cap)`, so
        // the consumer has released it (its Release store of `head` past it was
        // Acquire-loaded into `cached_head`) and will not read it until our store of
        // `tail` publishes it, and this producer is the ring's only writer.
        // SAFETY: by the ownership stated in the lines just above.
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
                // This producer owns the slot: it wrote it in this push, and the
                // consumer's limit is `self.tail`, at or before it, so the consumer never
                // reads it; the value is initialised and no one else can reach it.
                // SAFETY: by the ownership stated in the lines just above.
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
