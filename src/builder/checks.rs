//! The builder's checks of its settings before anything is allocated or started: thread
//! names, ring capacities and the memory they take, and the default shard count.

use crate::error::Error;
use crate::inbox::{Envelope, Item};
use crate::ring::{mpsc, spsc, MAX_CAPACITY};

use super::MAX_THREAD_NAME;

/// The last shard's thread name must fit Linux's 15 bytes, and a name has no NUL.
pub(super) fn check_thread_name(prefix: &str, shards: usize) -> Result<(), Error> {
    let longest = format!("{prefix}-{}", shards - 1);
    if longest.len() > MAX_THREAD_NAME || prefix.contains('\0') {
        return Err(Error::InvalidThreadName {
            name: longest,
            max: MAX_THREAD_NAME,
        });
    }
    Ok(())
}

/// Bytes the rings of a bus take at `build()`: each shard's inbox (`capacity` slots) and
/// the lanes between every ordered pair of shards (`lane_capacity` slots each).
/// Saturating: a product beyond `u64` is refused as more than any machine has.
pub(super) fn ring_bytes<T>(shards: usize, capacity: usize, lane_capacity: usize) -> u64 {
    let inbox = (capacity as u64).saturating_mul(mpsc::Ring::<Item<T>>::slot_size() as u64);
    let lane = (lane_capacity as u64).saturating_mul(spsc::slot_size::<Envelope<T>>() as u64);
    let shards = shards as u64;
    shards
        .saturating_mul(inbox)
        .saturating_add(shards.saturating_mul(shards - 1).saturating_mul(lane))
}

/// Refuses rings of `bytes` that no allocation could give (beyond `isize::MAX`) or that
/// exceed the machine's memory, RAM plus swap, where it is known (Linux).
pub(super) fn check_memory(bytes: u64) -> Result<(), Error> {
    let limit = crate::os::memory_total().unwrap_or(u64::MAX);
    if bytes > isize::MAX as u64 || bytes > limit {
        return Err(Error::OutOfMemory { bytes });
    }
    Ok(())
}

pub(super) fn check_capacity(what: &'static str, capacity: usize) -> Result<(), Error> {
    if capacity < 2 || !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
        return Err(Error::InvalidCapacity {
            what,
            capacity,
            max: MAX_CAPACITY,
        });
    }
    Ok(())
}

#[cfg(not(shardbus_loom))]
pub(super) fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(crate::MAX_SHARDS)
}

#[cfg(shardbus_loom)]
pub(super) fn default_shards() -> usize {
    1
}
