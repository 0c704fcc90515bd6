//! The consuming end of the SPSC ring: batch pop, readiness, the close and the durable mark.

use std::cell::Cell;

use super::*;
use crate::sync::with_mut_stretch;

impl<T> Consumer<T> {
    /// Values ready to pop, refreshing the cached `tail` when the cache shows fewer
    /// than `want` (one load of the producer's cache line per batch, not per value).
    #[inline]
    fn ready_up_to(&mut self, want: u64) -> u64 {
        let n = self.cached_tail.wrapping_sub(self.head) / STEP;
        if n >= want {
            return n;
        }
        if n == 0 {
            // Empty as far as the cache knows: the line of the value at `head`, if one has
            // landed, is asked for beside `tail`'s rather than after it. Every empty poll
            // asks again: only a fetch made after the producer's write brings the value.
            crate::sync::prefetch_read(self.ring.slot(self.head));
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
        let popped = Cell::new(0);
        let (stretches, _guard) = self.batch(n, &popped, false);
        for stretch in stretches {
            for slot in stretch {
                // This consumer owns the slot: it is in `[head, cached_tail)`, so the
                // producer published it with its store of `tail` (Acquire-loaded in
                // `ready`) and will not write it again until our Release store of `head`
                // passes it. The value is moved out exactly once; `HeadGuard` advances
                // `head` past it even on unwind.
                // SAFETY: by the ownership stated in the lines just above.
                let value = slot.with(|p| unsafe { (*p).assume_init_read() });
                popped.set(popped.get() + 1);
                f(value);
            }
        }
        n
    }

    /// [`pop_batch`](Self::pop_batch) that hands `f` the values where they lie, without
    /// moving them out of their slots first: `f(first, len)` gets a pointer to the first
    /// of `len` values that lie one after the other, once per stretch of contiguous slots
    /// (at most two: the batch may wrap; one value at a time under loom). `taken` counts
    /// the batch's values `f` has taken (moved out or dropped in place): set to 0 here,
    /// advanced by `f` after each value it takes, in order. Returns how many were handed
    /// on. If `f` unwinds, `head` is published past the `taken` values, not further, and
    /// if a value was handed on but not taken, its slot (at `head`) stays the consumer's
    /// until [`front_after_unwind`](Self::front_after_unwind) moves past it.
    ///
    /// # Safety
    ///
    /// When `f` returns, it has taken every value of its stretch, each exactly once, and
    /// counted them in `taken`. When it unwinds, it has taken exactly the values `taken`
    /// counts, or those and the next, which it was dropping; the caller then calls
    /// `front_after_unwind` before any other pop, saying which.
    #[inline]
    pub unsafe fn pop_batch_in_place(
        &mut self,
        max: usize,
        taken: &Cell<usize>,
        mut f: impl FnMut(*mut T, usize),
    ) -> usize {
        taken.set(0);
        let n = self.ready_up_to(max as u64).min(max as u64) as usize;
        if n == 0 {
            return 0;
        }
        let (stretches, _guard) = self.batch(n, taken, true);
        for stretch in stretches {
            if stretch.is_empty() {
                continue;
            }
            // The slots are in `[head, cached_tail)`: the producer published the values
            // with its store of `tail` (Acquire-loaded in `ready`) and will not write the
            // slots again until our Release store of `head` passes them. `f` takes them
            // (the caller's contract) and counts them in `taken`, which the guard reads:
            // after an unwind it stops `head` before the first value not taken, and that
            // slot stays ours.
            with_mut_stretch(stretch, |first, len| f(first.cast::<T>(), len));
        }
        n
    }

    /// After an unwind out of [`pop_batch_in_place`](Self::pop_batch_in_place): if `f`
    /// unwound with a value handed on but not taken, moves past that value (it sits at
    /// `head`) and returns it if `live`, that is, if `f` failed on it with the value still
    /// whole; with `live` false (`f` failed while dropping it) the value is gone and the
    /// slot is only moved past. If the unwind came from elsewhere (the wake of an async
    /// producer after the batch), `head` is already past every value handed on: nothing to
    /// do, `None`.
    ///
    /// # Safety
    ///
    /// Called once, right after such an unwind and before any other pop, with `live` false
    /// exactly when `f` unwound out of the drop of the first value it had not counted.
    pub unsafe fn front_after_unwind(&mut self, live: bool) -> Option<T> {
        if !std::mem::take(&mut self.front_held) {
            return None;
        }
        let slot = &self.ring.slots[slot_index(self.head, self.ring.mask)];
        // The slot at `head` is ours (`pop_batch_in_place` stopped `head` before it), and
        // by the caller's contract it holds the value exactly when `live`; this is the
        // value's one move out.
        // SAFETY: by the ownership and the contract stated in the lines just above.
        let value = live.then(|| slot.with(|p| unsafe { (*p).assume_init_read() }));
        self.head = self.head.wrapping_add(STEP);
        // Release: the value is moved out (or was dropped by `f`); pairs with the
        // producer's Acquire load in `refresh_head` before it reuses this slot.
        self.ring.head.store(self.head, Ordering::Release);
        self.ring.wake_room(self.head, self.cached_tail);
        value
    }

    /// [`pop_batch`](Self::pop_batch) that publishes `head` before it hands each value
    /// on, so that another thread's count of what waits ([`Ring::depth_seen`]) never
    /// includes a value already taken, even while `f` runs (the shard-to-shard lanes:
    /// the shutdown coordinator counts what waits for a shard stuck in a handler). One
    /// store per value instead of per batch; the producer reads `head` only when the
    /// ring looks full, as before.
    #[inline]
    pub fn pop_each(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let n = self.ready_up_to(max as u64).min(max as u64) as usize;
        for _ in 0..n {
            let pos = self.head;
            let slot = &self.ring.slots[slot_index(pos, self.ring.mask)];
            // This consumer owns the slot: `pos` is in `[head, cached_tail)`, so the
            // producer published it with its store of `tail` (Acquire-loaded in `ready`) and
            // will not write it again until our Release store of `head` below passes it.
            // The value is moved out exactly once: `head` passes it before `f` runs.
            // SAFETY: by the ownership stated in the lines just above.
            let value = slot.with(|p| unsafe { (*p).assume_init_read() });
            self.head = pos.wrapping_add(STEP);
            // Release: the value is moved out; pairs with the producer's Acquire load in
            // `refresh_head` before it reuses this slot.
            self.ring.head.store(self.head, Ordering::Release);
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
        if !asym::heavy(self.ring.asym) {
            // No barrier on the producer's CPU could be forced (`sync::asym`, "When the
            // heavy fence fails"): give a push that missed `closing` time for its `tail`
            // store to become visible before the load below.
            asym::grace();
        }
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
        // An async producer waiting for room must see the close (`poll_room` re-checks
        // `closing`, stored above); the waker slot orders the rest.
        self.ring.room.waker.wake();
    }

    /// The `n` slots from `head` on (`n` at most what is ready), as at most two stretches
    /// of the slot array (the batch may wrap), and the guard that publishes `head` past
    /// what was popped from them. Split borrows of `self`: the stretches borrow the ring,
    /// the guard `head`.
    #[inline(always)]
    #[allow(clippy::type_complexity)]
    fn batch<'a>(
        &'a mut self,
        n: usize,
        popped: &'a Cell<usize>,
        in_place: bool,
    ) -> ([&'a [UnsafeCell<MaybeUninit<T>>]; 2], HeadGuard<'a, T>) {
        let Consumer {
            ring,
            head,
            cached_tail,
            front_held,
            ..
        } = self;
        let ring: &Ring<T> = ring;
        let start = slot_index(*head, ring.mask);
        let first = n.min(ring.slots.len() - start);
        let stretches = [&ring.slots[start..start + first], &ring.slots[..n - first]];
        let guard = HeadGuard {
            ring,
            head,
            cached_tail: *cached_tail,
            popped,
            in_place: if in_place { n } else { 0 },
            front_held,
        };
        (stretches, guard)
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

impl<T> Ring<T> {
    /// After a pop batch moved the consumer's `head` to `head`: wakes an async producer
    /// waiting for room. The consumer's side of the handshake in [`RoomWaiter`]: the light
    /// fence orders the `head` store before the flag load; when no one waits, that load is
    /// all it costs.
    #[inline]
    fn wake_room(&self, head: u64, cached_tail: u64) {
        asym::light(self.asym);
        let room = &self.room;
        // Acquire: pairs with the producer's Release store after it registered, so the
        // wake below finds its waker. The swap (only when set) lets one wake serve one wait.
        if room.waiting.load(Ordering::Acquire)
            && self.is_at_low_water(head, cached_tail)
            && room.waiting.swap(false, Ordering::AcqRel)
        {
            room.waker.wake();
        }
    }

    /// Whether what waits in the ring, as far as the consumer has seen (`cached_tail`, at
    /// most the producer's `tail`), is at most half the capacity. An underestimate only
    /// wakes a waiter early.
    #[inline]
    fn is_at_low_water(&self, head: u64, cached_tail: u64) -> bool {
        let waiting = cached_tail.wrapping_sub(head) / STEP;
        waiting * 2 <= self.mask + 1
    }
}

/// Publishes the consumer's `head` past the values a pop took, when the pop ends or
/// unwinds.
struct HeadGuard<'a, T> {
    ring: &'a Ring<T>,
    head: &'a mut u64,
    cached_tail: u64,
    /// The values taken from the batch so far (counted by the pop, or by `f` of
    /// `pop_batch_in_place`).
    popped: &'a Cell<usize>,
    /// `pop_batch_in_place`'s batch size (0 for `pop_batch`): dropped by an unwind with
    /// fewer taken, the guard was left by a panic of `f`, and the first value not taken is
    /// still in its slot.
    in_place: usize,
    front_held: &'a mut bool,
}

impl<T> Drop for HeadGuard<'_, T> {
    fn drop(&mut self) {
        let popped = self.popped.get();
        if popped < self.in_place && std::thread::panicking() {
            *self.front_held = true;
        }
        *self.head = self.head.wrapping_add(popped as u64 * STEP);
        // Release: the values are moved out; pairs with the producer's Acquire load in
        // `refresh_head` before it reuses these slots.
        self.ring.head.store(*self.head, Ordering::Release);
        self.ring.wake_room(*self.head, self.cached_tail);
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
