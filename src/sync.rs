//! The one place that imports concurrency primitives.
//!
//! Everything else in the crate takes atomics, cells, `Arc`, threads, parking and
//! back-off from here. Under `--cfg shardbus_loom` these are loom's model-checked
//! versions, so the `loom-tests` crate checks our own hand-off, wake-up and shutdown
//! code as written (the pattern of tokio's `src/loom/` and crossbeam-utils' `primitive`).

#[cfg(not(shardbus_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(shardbus_loom))]
pub(crate) use std::sync::Arc;

#[cfg(shardbus_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Completes a SeqCst read-modify-write on the hot path as one side of a Dekker
/// handshake (the push, then a load of the shard's sleep flag).
///
/// In the C++/Rust memory model a SeqCst RMW followed by a SeqCst load is already
/// enough: both are in the single total order of SeqCst operations. loom, however,
/// models SeqCst *accesses* as AcqRel (its README, "Unsupported features") and only
/// SeqCst *fences* fully, so under loom this is the equivalent `fence(SeqCst)`; in
/// normal builds it is nothing, keeping an extra `mfence` off every publish.
#[inline(always)]
pub(crate) fn dekker_after_rmw() {
    #[cfg(shardbus_loom)]
    fence(Ordering::SeqCst);
}
#[cfg(shardbus_loom)]
pub(crate) use loom::sync::Arc;

/// Asymmetric fences: a cheap *light* fence on the hot path (a publisher's push) paired
/// with an expensive *heavy* fence on the rare path (a shard about to park, a lane being
/// closed), together as strong as a `SeqCst` fence on both sides (C++ P1202's
/// `asymmetric_thread_fence_light`/`_heavy`; folly's `asymmetricLightBarrier`).
///
/// On Linux the heavy fence is `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`: before it
/// returns, every other running thread of the process has executed a full memory
/// barrier (and a thread not running has passed one in its context switch), so the
/// light side needs only to keep the compiler from reordering: a `compiler_fence`.
/// Argument for the store-buffering pair it serves (publisher: store `tail`, light,
/// load a flag; shard: store the flag, heavy, load `tail`): the barrier the heavy fence
/// forces on the publisher's CPU falls either before the publisher's store (then the
/// flag store, made before the heavy fence, is visible to the later load), or after
/// the store (then the store is drained from the store buffer before the shard's load).
///
/// Where `membarrier` is unavailable (another OS, an old kernel, a seccomp filter), or
/// the environment variable `SHARDBUS_NO_MEMBARRIER` is set when the first bus is built,
/// both sides are `fence(SeqCst)`. Each ring and inbox decides at creation ([`asym::mode`]),
/// and the mode is fixed for the process by the first bus built, before any of that
/// bus's rings exist, so the two sides of a pair always agree. Under loom both sides are
/// `fence(SeqCst)`, which is what the models check.
pub(crate) mod asym {
    #[cfg(not(shardbus_loom))]
    use std::sync::atomic::{compiler_fence, fence, Ordering};

    #[cfg(not(shardbus_loom))]
    static MODE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

    /// Decides the mode for the process (once): registers for expedited membarrier.
    /// Called by `Builder::build` before it makes any ring.
    pub(crate) fn enable() {
        #[cfg(not(shardbus_loom))]
        MODE.get_or_init(register);
    }

    /// Whether rings and inboxes made now use membarrier. `false` until [`enable`].
    #[inline]
    pub(crate) fn mode() -> bool {
        #[cfg(not(shardbus_loom))]
        return MODE.get().copied().unwrap_or(false);
        #[cfg(shardbus_loom)]
        false
    }

    /// The hot path's side.
    #[inline(always)]
    pub(crate) fn light(asym: bool) {
        #[cfg(not(shardbus_loom))]
        if asym {
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
        #[cfg(shardbus_loom)]
        {
            let _ = asym;
            loom::sync::atomic::fence(loom::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The rare path's side.
    pub(crate) fn heavy(asym: bool) {
        #[cfg(not(shardbus_loom))]
        {
            fence(Ordering::SeqCst);
            if asym {
                membarrier();
            }
        }
        #[cfg(shardbus_loom)]
        {
            let _ = asym;
            loom::sync::atomic::fence(loom::sync::atomic::Ordering::SeqCst);
        }
    }

    #[cfg(all(target_os = "linux", not(shardbus_loom)))]
    const CMD_QUERY: libc::c_long = 0;
    #[cfg(all(target_os = "linux", not(shardbus_loom)))]
    const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    #[cfg(all(target_os = "linux", not(shardbus_loom)))]
    const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    #[cfg(all(target_os = "linux", not(shardbus_loom)))]
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
        // SAFETY: as above.
        let r = unsafe { libc::syscall(libc::SYS_membarrier, register, 0, 0) };
        r == 0
    }

    #[cfg(all(not(target_os = "linux"), not(shardbus_loom)))]
    fn register() -> bool {
        false
    }

    #[cfg(all(target_os = "linux", not(shardbus_loom)))]
    fn membarrier() {
        // SAFETY: as in `register`.
        let r = unsafe { libc::syscall(libc::SYS_membarrier, CMD_PRIVATE_EXPEDITED, 0, 0) };
        // After a successful registration the kernel documents no failure for this
        // command; if one ever came, the pairing would be unsound, so stop loudly.
        if r != 0 {
            let e = std::io::Error::last_os_error();
            eprintln!("shardbus: membarrier failed after registration: {e}");
            std::process::abort();
        }
    }

    #[cfg(all(not(target_os = "linux"), not(shardbus_loom)))]
    fn membarrier() {
        unreachable!("asymmetric mode is only enabled on Linux")
    }
}

/// Statistics counters: always std's atomics, also under loom. They take part in no
/// protocol (every access is `Relaxed`, final values are read after `join`), so loom
/// need not explore their interleavings; keeping them out of the model keeps the
/// models' state space to the protocols that matter.
pub(crate) mod stat {
    pub(crate) use std::sync::atomic::AtomicU64;
}

/// The storage side's primitives: always std's, also under loom.
///
/// The persistent log (`crate::log`) shares an `Arc<dyn Storage>` between the bus and its
/// shards, and `SimStorage` keeps its simulated disk behind a `Mutex`. Persistence is not
/// modelled under loom (its models build memory-only buses), these take part in none of
/// the hand-off, wake-up or shutdown protocols the models check, and the log's public API
/// (`ShardLog::open(Arc<dyn Storage>, ..)`) must not change type under the loom cfg.
///
/// The log's background sync thread (`log/syncer.rs`) is on this side too: a std thread
/// that waits on a std `Condvar` and only ever does storage calls.
pub(crate) mod plain {
    pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
    pub(crate) use std::thread::{sleep, JoinHandle};

    /// Spawns a named std thread (also under loom: storage threads are not modelled).
    pub(crate) fn spawn_named<F>(name: String, f: F) -> std::io::Result<JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        std::thread::Builder::new().name(name).spawn(f)
    }
}

/// A process-unique bus id. A std atomic under loom too: it only makes ids unique and
/// takes part in no protocol. Relaxed: only uniqueness matters, which the RMW gives.
pub(crate) fn next_bus_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Thread spawning, `yield_now`, the current thread handle.
pub(crate) mod thread {
    #[cfg(not(shardbus_loom))]
    pub(crate) use std::thread::{current, park, yield_now, JoinHandle, Thread};

    #[cfg(shardbus_loom)]
    pub(crate) use loom::thread::{current, park, yield_now, JoinHandle, Thread};

    /// Spawns a named thread. loom threads have no names or builder.
    #[cfg(not(shardbus_loom))]
    pub(crate) fn spawn_named<F, R>(name: String, f: F) -> std::io::Result<JoinHandle<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        std::thread::Builder::new().name(name).spawn(f)
    }

    /// Spawns a thread; under loom the name is dropped.
    #[cfg(shardbus_loom)]
    pub(crate) fn spawn_named<F, R>(_name: String, f: F) -> std::io::Result<JoinHandle<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        Ok(loom::thread::spawn(f))
    }
}

/// An `UnsafeCell` with loom's closure-based API, so the same code compiles against both.
#[cfg(not(shardbus_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(shardbus_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Calls `f` with a const pointer to the contents.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a mutable pointer to the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(shardbus_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// Exponential back-off for wait loops.
///
/// Outside loom this is `crossbeam_utils::Backoff`. Under loom every step yields to the
/// model scheduler, or loom would report a spinning wait loop as a livelock.
#[cfg(not(shardbus_loom))]
pub(crate) use crossbeam_utils::Backoff;

#[cfg(shardbus_loom)]
#[derive(Debug, Default)]
pub(crate) struct Backoff(std::cell::Cell<u32>);

#[cfg(shardbus_loom)]
impl Backoff {
    pub(crate) fn new() -> Self {
        Self::default()
    }
    pub(crate) fn reset(&self) {
        self.0.set(0);
    }
    pub(crate) fn spin(&self) {
        loom::thread::yield_now();
    }
    pub(crate) fn snooze(&self) {
        self.0.set(self.0.get() + 1);
        loom::thread::yield_now();
    }
    pub(crate) fn is_completed(&self) -> bool {
        // Reach the parking branch after one snooze so the models explore it.
        self.0.get() >= 1
    }
}

/// Thread parking: the shard parks when idle, publishers unpark it.
///
/// Outside loom this is `crossbeam_utils::sync::{Parker, Unparker}` (a token: an
/// `unpark` before `park` makes that `park` return at once; `park_timeout` also returns
/// after the timeout, which a persistent shard uses to sync on time under
/// `FsyncPolicy::Interval` and to write timed checkpoints). Under loom it is the same
/// token protocol built on loom's `Mutex` and `Condvar`.
#[cfg(not(shardbus_loom))]
pub(crate) use crossbeam_utils::sync::{Parker, Unparker};

#[cfg(shardbus_loom)]
pub(crate) use self::loom_park::{Parker, Unparker};

#[cfg(shardbus_loom)]
mod loom_park {
    use loom::sync::{Arc, Condvar, Mutex};

    #[derive(Debug, Default)]
    struct Inner {
        token: Mutex<bool>,
        cvar: Condvar,
    }

    /// Parks the owning thread until a token is available.
    #[derive(Debug, Default)]
    pub(crate) struct Parker(Arc<Inner>);

    /// Makes a token available and wakes the parker.
    #[derive(Debug, Clone)]
    pub(crate) struct Unparker(Arc<Inner>);

    impl Parker {
        pub(crate) fn new() -> Self {
            Self::default()
        }
        pub(crate) fn park(&self) {
            let mut token = self.0.token.lock().unwrap();
            while !*token {
                token = self.0.cvar.wait(token).unwrap();
            }
            *token = false;
        }
        /// loom has no time: a plain park. Persistence (the only user of timed parks)
        /// is not modelled under loom.
        pub(crate) fn park_timeout(&self, _timeout: std::time::Duration) {
            self.park();
        }
        pub(crate) fn unparker(&self) -> Unparker {
            Unparker(self.0.clone())
        }
    }

    impl Unparker {
        pub(crate) fn unpark(&self) {
            *self.0.token.lock().unwrap() = true;
            self.0.cvar.notify_one();
        }
    }
}
