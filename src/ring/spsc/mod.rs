//! A bounded single-producer single-consumer ring that the consumer can close.
//!
//! Each side keeps its own index and a cached copy of the other's (the disruptor's and
//! Rigtorp's cached-index scheme), so it touches the other's cache line only when the ring
//! looks full (producer) or empty (consumer); the consumer publishes `head` once per batch.
//!
//! Push (`producer.rs`):
//! 1. Write the slot.
//! 2. Store `tail` (Release, no read-modify-write: publishes the slot write).
//! 3. The light side of an asymmetric fence (`sync::asym`).
//! 4. Load `closing`. If set, agree on the drain limit by one compare-and-swap on `limit`
//!    (offering the position before this push); keep the push only if the agreed limit
//!    counts it, else take the value back.
//!
//! Close (`consumer.rs`):
//! 1. Store `closing`.
//! 2. The heavy side of the fence.
//! 3. Load `tail`.
//! 4. Agree on it as the limit by the same compare-and-swap; drain to the agreed limit.
//!
//! The fence pair makes steps 2–4 of the two sides a store-buffering pair: the close sees
//! the push, or the push sees `closing`, and the compare-and-swap settles the case where
//! both do. Neither side waits for the other. The push's light fence also orders it before
//! the publisher's load of the shard's sleep flag (`inbox::Inbox::wake`), paired with the
//! shard's heavy fence before it parks.

use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use super::{reached, slot_index, PushError, STEP};
use crate::sync::{asym, Arc, AtomicBool, AtomicU64, Ordering, UnsafeCell, WakerSlot};

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

/// An async producer's wait for room in a full ring: the waker slot and the flag the
/// consumer checks after each pop batch (one load when no one waits).
///
/// The wake-up handshake is a store-buffering pair, as the park's:
/// - producer (`Producer::poll_room`): register the waker, store `waiting`, the heavy
///   fence, load `head` (re-check room) and `closing`; pend only if still full;
/// - consumer (after a pop batch): store `head`, the light fence, load `waiting`; if set
///   and the ring has drained to its low-water mark (`Ring::wake_room`),
///   clear it and wake.
///
/// One side comes first: the producer's re-check sees the freed room, or the consumer's
/// load sees `waiting` and wakes the registered waker (registered before the store).
struct RoomWaiter {
    /// Set (Release) by the producer after registering; read after each pop batch and
    /// swapped back by the consumer.
    waiting: AtomicBool,
    /// Registered by the producer (the ring's only one); woken by the consumer.
    waker: WakerSlot,
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
    /// An async producer waiting for room (`Producer::poll_room`, `Consumer` after a pop).
    room: CachePadded<RoomWaiter>,
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
    /// How far ahead of `tail` a push asks for a slot's line, in positions (see
    /// [`prefetch_distance`]).
    ahead: u64,
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
    /// Set when `f` of `pop_batch_in_place` unwound before it took every value it was
    /// handed: the first value not taken is still at `head` (see `front_after_unwind`).
    front_held: bool,
}

/// Makes a ring with `capacity` slots (a power of two) starting at position `start`
/// (a multiple of [`STEP`]; tests start near `u64::MAX` to cross the wrap).
/// Its fences are SeqCst on both sides (the loom models and tests use it).
#[cfg(any(test, shardbus_loom))]
pub fn channel<T>(capacity: usize, start: u64) -> (Producer<T>, Consumer<T>) {
    channel_in_mode(capacity, start, false)
}

/// [`channel`] with the bus's fence mode (`true`: the membarrier pair, which only a bus
/// whose `asym::decide` chose it may ask for). Aborts, as any allocation, if memory runs
/// out ([`try_channel_in_mode`] does not).
pub(crate) fn channel_in_mode<T>(
    capacity: usize,
    start: u64,
    asym: bool,
) -> (Producer<T>, Consumer<T>) {
    match try_channel_in_mode(capacity, start, asym) {
        Ok(pair) => pair,
        Err(e) => std::alloc::handle_alloc_error(
            std::alloc::Layout::from_size_align(e.bytes, 8)
                .unwrap_or(std::alloc::Layout::new::<u64>()),
        ),
    }
}

/// Bytes of one slot of a lane of `T`: what each unit of capacity costs.
pub fn slot_size<T>() -> usize {
    std::mem::size_of::<UnsafeCell<MaybeUninit<T>>>()
}

/// [`channel_in_mode`], with a failed allocation returned as an error.
pub(crate) fn try_channel_in_mode<T>(
    capacity: usize,
    start: u64,
    asym: bool,
) -> Result<(Producer<T>, Consumer<T>), super::AllocError> {
    // `Ring::slot` relies on the first: `mask` reaches exactly the slots.
    assert!(
        capacity.is_power_of_two(),
        "a ring's capacity is a power of two"
    );
    debug_assert!(start.is_multiple_of(STEP));
    let slots = super::try_slots(capacity, |_| UnsafeCell::new(MaybeUninit::uninit()))?;
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
        room: CachePadded::new(RoomWaiter {
            waiting: AtomicBool::new(false),
            waker: WakerSlot::new(),
        }),
        slots,
        mask: capacity as u64 - 1,
    });
    let producer = Producer {
        ring: ring.clone(),
        tail: start,
        cached_head: start,
        closed: false,
        ahead: prefetch_distance::<T>(capacity) * STEP,
    };
    let consumer = Consumer {
        ring,
        head: start,
        cached_tail: start,
        limit: None,
        durable: start,
        front_held: false,
    };
    Ok((producer, consumer))
}

/// How far ahead of its own a push asks for a slot's cache line to be brought over for
/// writing (`sync::prefetch_write`).
const PREFETCH_BYTES: usize = 512;

/// The cache line a batch push asks for one slot of (`Producer::push_n`, values too large
/// to stage).
const LINE_BYTES: usize = 64;

/// The stack buffer a batch push gathers values in before it copies them into their slots
/// (`Producer::push_n`), and the fewest values it must hold for a type to be staged.
const STAGE_BYTES: usize = 4096;
const STAGE_MIN: usize = 8;

/// The fewest values a batch push stages; smaller batches are written slot by slot. Below
/// it the copy cost more than it saved where measured (AMD EPYC: batches of 2, 4 and 8 ran
/// slower staged, 16 no slower, 64 faster; `docs/benchmarks.md`, "The batch push,
/// staged"), likely because the copy's wide loads wait for the stage's narrower stores.
/// Under loom, 2: its models push batches of a few values.
const STAGE_FROM: usize = if cfg!(shardbus_loom) { 2 } else { 16 };

/// See [`STAGE_BYTES`]. Aligned for any value it is asked to hold (a type of larger
/// alignment is not staged).
#[repr(C, align(64))]
struct Stage([MaybeUninit<u8>; STAGE_BYTES]);

/// Values of `T` a [`Stage`] holds, or 0 if `T` is not staged (zero-sized, aligned beyond
/// the stage, or fewer than [`STAGE_MIN`] fit).
const fn stage_len<T>() -> usize {
    let size = std::mem::size_of::<T>();
    if size == 0 || std::mem::align_of::<T>() > std::mem::align_of::<Stage>() {
        return 0;
    }
    let len = STAGE_BYTES / size;
    if len < STAGE_MIN {
        0
    } else {
        len
    }
}

/// Slots ahead of `tail` a push prefetches: [`PREFETCH_BYTES`] worth, at most a quarter of
/// the ring (a prefetch of a slot the consumer has yet to read takes its line away from
/// it), and at least the next slot (on a ring of fewer than 4).
///
/// Why: the consumer reads every slot line after the producer writes it, so each new line
/// a push writes is shared with the consumer's cache and must be taken back first, a trip
/// to the other core. With a `SeqCst` fence per push (the wake-up's), the push cannot go
/// on until that trip ends, so a stream paid one such trip per line, in turn. Asked for a
/// few lines early, the trips overlap the pushes before.
fn prefetch_distance<T>(capacity: usize) -> u64 {
    let bytes = std::mem::size_of::<T>().max(1);
    (PREFETCH_BYTES / bytes).min(capacity / 4).max(1) as u64
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

    /// Values pushed and not yet popped, as another thread than the two ends sees them
    /// (the shutdown coordinator). Relaxed: a count; no slot is read on the strength of
    /// it. Exact between batches; during one, exact only if the consumer pops with
    /// `Consumer::pop_each` (with `pop_batch` the batch counts whole until it ends). A
    /// push being undone by a close may count until it is.
    pub fn depth_seen(&self) -> u64 {
        let tail = self.tail.load(Ordering::Relaxed);
        tail.wrapping_sub(self.head.load(Ordering::Relaxed)) / STEP
    }

    /// The slot of position `pos`, without a bounds check (the push path's).
    #[inline(always)]
    fn slot(&self, pos: u64) -> &UnsafeCell<MaybeUninit<T>> {
        let at = slot_index(pos, self.mask);
        // The ring owns `slots`, which live as long as `&self`; `at` is masked by `mask`,
        // which is `slots.len() - 1` with the length a power of two (asserted where the
        // ring is made), so it is in bounds.
        // SAFETY: by the ownership and the bound stated in the lines just above.
        unsafe { self.slots.get_unchecked(at) }
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
            // The ring's drop owns every slot (both ends are gone): positions in
            // `[head, tail)` hold values pushed and never popped (undone pushes were
            // subtracted from `tail`), each dropped here once.
            // SAFETY: by the ownership stated in the lines just above.
            slot.with_mut(|p| unsafe { (*p).assume_init_drop() });
            pos = pos.wrapping_add(STEP);
        }
    }
}

mod consumer;
mod producer;

#[cfg(all(test, not(shardbus_loom)))]
pub(crate) mod tests;
