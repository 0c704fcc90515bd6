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
#[derive(Debug)]
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

/// Exponential back-off for wait loops: `crossbeam_utils::Backoff`.
pub(crate) use crossbeam_utils::Backoff;

/// Thread parking: the shard parks when idle, publishers unpark it.
///
/// `crossbeam_utils::sync::{Parker, Unparker}`: a token (an `unpark` before `park` makes
/// that `park` return at once); `park_timeout` also returns after the timeout, which a
/// persistent shard uses to sync on time under `FsyncPolicy::Interval` and to write timed
/// checkpoints.
pub(crate) use crossbeam_utils::sync::{Parker, Unparker};

/// The slot for a stream consumer's waker (`stream.rs`): the `atomic-waker` crate's.
pub(crate) use atomic_waker::AtomicWaker;
