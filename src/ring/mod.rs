//! The bounded rings that carry messages into a shard.
//!
//! - [`spsc`]: one producer, one consumer; a publisher's private lane into a shard and
//!   the shard-to-shard lanes. Cached indices, batched consumer, close bit in `tail`.
//! - [`mpsc`]: many producers, one consumer (Vyukov's bounded array with per-slot
//!   stamps); the shard's shared intake for `Bus::publish` and control messages.
//!
//! Both count positions in steps of two (bit 0 of the MPSC ring's `tail` word is its
//! `CLOSED` bit). A push either lands before the close position (and is drained) or is
//! refused and gives its message back: in the MPSC ring because close and push are
//! read-modify-writes on the same word, in the SPSC ring through an asymmetric-fence
//! handshake (see `spsc`). Positions wrap at `2^64`, which is a multiple of every slot
//! count, so the arithmetic is `wrapping_*` throughout.

pub mod mpsc;
pub mod spsc;

/// Bit 0 of the MPSC ring's `tail` word: the consumer closed the ring.
pub const CLOSED: u64 = 1;
/// Positions advance by two so bit 0 stays free for [`CLOSED`] (the SPSC ring counts
/// the same way, so both share the position helpers).
pub const STEP: u64 = 2;

/// Why a push failed; the value is given back.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError<T> {
    Full(T),
    Closed(T),
}

impl<T> PushError<T> {
    /// The value that was not pushed.
    pub fn into_inner(self) -> T {
        match self {
            PushError::Full(v) | PushError::Closed(v) => v,
        }
    }
}

/// The largest slot count a ring accepts.
pub const MAX_CAPACITY: usize = 1 << 30;

#[inline]
pub fn slot_index(pos: u64, mask: u64) -> usize {
    ((pos >> 1) & mask) as usize
}

/// Whether position `pos` has reached `target`, in wrapping position arithmetic (the two
/// are less than `2^63` apart).
#[inline]
pub fn reached(pos: u64, target: u64) -> bool {
    pos.wrapping_sub(target) < 1 << 63
}

#[cfg(all(test, not(shardbus_loom)))]
mod model_tests;
