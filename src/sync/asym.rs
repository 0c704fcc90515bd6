//! Asymmetric fences: a cheap *light* fence on the hot path (a publisher's push) paired
//! with an expensive *heavy* fence on the rare path (a shard about to park, a lane being
//! closed), together as strong as a `SeqCst` fence on both sides (C++ P1202's
//! `asymmetric_thread_fence_light`/`_heavy`; folly's `asymmetricLightBarrier`).
//!
//! On Linux the heavy fence is `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`: before it
//! returns, every other running thread of the process has executed a full memory
//! barrier (and a thread not running has passed one in its context switch), so the
//! light side needs only to keep the compiler from reordering: a `compiler_fence`.
//! Argument for the store-buffering pair it serves (publisher: store `tail`, light,
//! load a flag; shard: store the flag, heavy, load `tail`): the barrier the heavy fence
//! forces on the publisher's CPU falls either before the publisher's store (then the
//! flag store, made before the heavy fence, is visible to the later load), or after
//! the store (then the store is drained from the store buffer before the shard's load).
//!
//! Where `membarrier` is unavailable (another OS, an old kernel, a seccomp filter), or
//! the environment variable `SHARDBUS_NO_MEMBARRIER` is set when the first bus is built,
//! both sides are `fence(SeqCst)`. Each ring and inbox decides at creation ([`mode`]),
//! and the mode is fixed for the process by the first bus built, before any of that
//! bus's rings exist, so the two sides of a pair always agree. (Under loom both sides are
//! `fence(SeqCst)`, which is what the models check: `loom.rs`.)

use std::sync::atomic::{compiler_fence, fence, Ordering};

static MODE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Decides the mode for the process (once): registers for expedited membarrier.
/// Called by `Builder::build` before it makes any ring.
pub(crate) fn enable() {
    MODE.get_or_init(register);
}

/// Whether rings and inboxes made now use membarrier. `false` until [`enable`].
#[inline]
pub(crate) fn mode() -> bool {
    MODE.get().copied().unwrap_or(false)
}

/// The hot path's side.
#[inline(always)]
pub(crate) fn light(asym: bool) {
    if asym {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The rare path's side.
pub(crate) fn heavy(asym: bool) {
    fence(Ordering::SeqCst);
    if asym {
        membarrier();
    }
}

#[cfg(target_os = "linux")]
const CMD_QUERY: libc::c_long = 0;
#[cfg(target_os = "linux")]
const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
#[cfg(target_os = "linux")]
const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

#[cfg(target_os = "linux")]
fn register() -> bool {
    if std::env::var_os("SHARDBUS_NO_MEMBARRIER").is_some() {
        return false;
    }
    // SAFETY: `membarrier` takes two integers and touches no memory of ours.
    let supported = unsafe { libc::syscall(libc::SYS_membarrier, CMD_QUERY, 0, 0) };
    if supported < 0 || supported & CMD_PRIVATE_EXPEDITED == 0 {
        return false;
    }
    let register = CMD_REGISTER_PRIVATE_EXPEDITED;
    // SAFETY: `membarrier` takes integers only and touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, register, 0, 0) };
    r == 0
}

#[cfg(not(target_os = "linux"))]
fn register() -> bool {
    false
}

#[cfg(target_os = "linux")]
fn membarrier() {
    // SAFETY: `membarrier` takes integers only and touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, CMD_PRIVATE_EXPEDITED, 0, 0) };
    // After a successful registration the kernel documents no failure for this
    // command; if one ever came, the pairing would be unsound, so stop loudly.
    if r != 0 {
        let e = std::io::Error::last_os_error();
        eprintln!("shardbus: membarrier failed after registration: {e}");
        std::process::abort();
    }
}

#[cfg(not(target_os = "linux"))]
fn membarrier() {
    unreachable!("asymmetric mode is only enabled on Linux")
}
