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

/// A ring's slots could not be allocated: `bytes` were asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocError {
    pub bytes: usize,
}

/// `n` slots made by `init`, allocated fallibly: a failed allocation (or a size beyond
/// what an allocation can be) is an error, not an abort of the process.
pub fn try_slots<S>(n: usize, init: impl FnMut(usize) -> S) -> Result<Box<[S]>, AllocError> {
    let bytes = n.saturating_mul(std::mem::size_of::<S>());
    let mut slots = Vec::new();
    slots
        .try_reserve_exact(n)
        .map_err(|_| AllocError { bytes })?;
    // Within the reserved capacity: no reallocation.
    slots.extend((0..n).map(init));
    Ok(slots.into_boxed_slice())
}

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

#[cfg(all(test, not(shardbus_loom)))]
mod tests {
    use super::*;

    #[test]
    fn slots_that_cannot_be_allocated_are_an_error_not_an_abort() {
        // Beyond what an allocation can be (`isize::MAX`), and 1 PiB: more than the
        // address space a process gets, so the allocator refuses it.
        assert_eq!(
            try_slots::<u64>(1 << 60, |_| 0).unwrap_err(),
            AllocError { bytes: 1 << 63 }
        );
        assert_eq!(
            try_slots::<[u8; 1024]>(1 << 40, |_| [0; 1024]).unwrap_err(),
            AllocError { bytes: 1 << 50 }
        );
        let slots = try_slots(4, |i| i * 10).unwrap();
        assert_eq!(&*slots, [0, 10, 20, 30]);
    }
}
