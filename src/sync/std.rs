//! The normal build's half of the shim: std's atomics and `Arc`, std threads,
//! crossbeam-utils' `Backoff` and `Parker`, and an `UnsafeCell` with loom's closure API.

pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
pub(crate) use std::sync::Arc;

/// Thread-local storage: std's `thread_local!` (loom's half has loom's, whose values
/// belong to the model's threads).
pub(crate) use std::thread_local;

/// Completes a SeqCst read-modify-write on the hot path as one side of a Dekker
/// handshake (the push, then a load of the shard's sleep flag).
///
/// In the C++/Rust memory model a SeqCst RMW followed by a SeqCst load is already
/// enough: both are in the single total order of SeqCst operations. So here it is
/// nothing, keeping an extra `mfence` off every publish (loom's half is a fence: loom
/// models SeqCst accesses as AcqRel).
#[inline(always)]
pub(crate) fn dekker_after_rmw() {}

/// Thread spawning, `yield_now`, the current thread handle.
pub(crate) mod thread {
    pub(crate) use std::thread::{current, park, yield_now, JoinHandle, Thread};

    /// Spawns a named thread.
    pub(crate) fn spawn_named<F, R>(name: String, f: F) -> std::io::Result<JoinHandle<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        std::thread::Builder::new().name(name).spawn(f)
    }
}

/// An `UnsafeCell` with loom's closure-based API, so the same code compiles against both.
/// Transparent, so that a slice of them is a slice of `T` laid out as such
/// ([`with_mut_stretch`]).
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

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

/// Calls `f` with a mutable pointer to the contents of the first of `cells` and their
/// count: the contents lie one after the other (the cell is transparent), and the pointer
/// may reach all of them (it is derived from the whole slice). loom's cells are not laid
/// out so: its version calls `f` once per cell, inside the cell's `with_mut`.
#[inline(always)]
pub(crate) fn with_mut_stretch<T>(cells: &[UnsafeCell<T>], mut f: impl FnMut(*mut T, usize)) {
    let first = std::cell::UnsafeCell::raw_get(cells.as_ptr().cast::<std::cell::UnsafeCell<T>>());
    f(first, cells.len());
}

/// Asks the CPU to fetch the cache line at `p` for writing (`prefetchw` on x86-64, a no-op
/// on CPUs without it; nothing elsewhere). A hint only: it changes no memory the program
/// sees, orders nothing, and never faults, whatever the address.
#[inline(always)]
pub(crate) fn prefetch_write<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // `prefetchw` reads and writes nothing the program sees and cannot fault; the memory
    // at `p` is the caller's (a slot of its ring), and is not touched.
    // SAFETY: owned by the caller; the instruction has no effect on memory.
    unsafe {
        std::arch::asm!(
            "prefetchw [{p}]",
            p = in(reg) p,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// Asks the CPU to fetch the cache line at `p` for reading (`prefetcht0` on x86-64; nothing
/// elsewhere). A hint only, as [`prefetch_write`].
#[inline(always)]
pub(crate) fn prefetch_read<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // `prefetcht0` reads and writes nothing the program sees and cannot fault; the memory
    // at `p` is a slot of the caller's ring, which the producer may be writing: the hint
    // makes no access to it.
    // SAFETY: owned by the ring (its producer may be writing it); the hint accesses nothing.
    unsafe {
        std::arch::asm!(
            "prefetcht0 [{p}]",
            p = in(reg) p,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}

/// One pause of a busy-wait loop: `std::hint::spin_loop` (`pause` on x86).
#[inline(always)]
pub(crate) fn spin_hint() {
    std::hint::spin_loop();
}

/// Exponential back-off for wait loops: `crossbeam_utils::Backoff`.
pub(crate) use crossbeam_utils::Backoff;

/// Thread parking: the shard parks when idle, publishers unpark it.
///
/// `crossbeam_utils::sync::{Parker, Unparker}`: a token (an `unpark` before `park` makes
/// that `park` return at once); `park_timeout` also returns after the timeout, which a
/// persistent shard uses to sync on time under `FsyncPolicy::Interval` and to write timed
/// checkpoints.
pub(crate) use crossbeam_utils::sync::{Parker, Unparker};

/// The waker slot of a publisher's lane (one producer waits on it, the shard wakes it)
/// and of a stream's consumer (the stream's actor wakes it):
/// the `atomic-waker` crate's `AtomicWaker`. Registration stores a clone of the waker
/// and allocates nothing.
pub(crate) struct WakerSlot(atomic_waker::AtomicWaker);

impl WakerSlot {
    pub(crate) fn new() -> Self {
        Self(atomic_waker::AtomicWaker::new())
    }

    /// Stores `waker` (replacing an older one); a `wake` racing with it wakes it.
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.0.register(waker);
    }

    /// Wakes the registered waker, if any, and empties the slot.
    pub(crate) fn wake(&self) {
        self.0.wake();
    }
}

/// A list of waiting tasks (many waiters: a shard's shared ring, its durable watermark):
/// the `event-listener` crate's `Event`. A listener is registered when it is created
/// (`wait_list_listen!`) and a later `notify_all` wakes it even
/// if it has not been polled yet. Listeners live in the waiting future (the crate's
/// stack slots): registering allocates nothing; the list's shared state is allocated
/// once, on the first listener.
pub(crate) struct WaitList(pub(crate) event_listener::Event);

impl WaitList {
    pub(crate) fn new() -> Self {
        Self(event_listener::Event::new())
    }

    /// Wakes every listener registered so far.
    pub(crate) fn notify_all(&self) {
        self.0.notify(usize::MAX);
    }
}

/// `wait_list_listen!(list => name)`: registers a listener on the [`WaitList`] `list`,
/// bound to `name`; `(&mut name).await` waits for a
/// `notify_all` made after this line.
macro_rules! wait_list_listen {
    ($list:expr => $name:ident) => {
        event_listener::listener!($list.0 => $name);
    };
}
pub(crate) use wait_list_listen;
