//! The loom half of the shim (`--cfg shardbus_loom`): loom's atomics, `Arc`, threads and
//! `UnsafeCell`, a `Backoff` that yields to the model scheduler, the park token built on
//! loom's `Mutex` and `Condvar`, and both asymmetric fences as `fence(SeqCst)`.

pub(crate) use loom::cell::UnsafeCell;

/// The std version hands `f` a whole stretch of contiguous cells; loom's cells carry their
/// access tracking beside the value, so here `f` gets one cell at a time, each inside its
/// `with_mut` (the accesses stay visible to the model).
pub(crate) fn with_mut_stretch<T>(cells: &[UnsafeCell<T>], mut f: impl FnMut(*mut T, usize)) {
    for cell in cells {
        cell.with_mut(|p| f(p, 1));
    }
}
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
pub(crate) use loom::sync::Arc;

/// Thread-local storage: loom's `thread_local!`, so that each model thread has its own.
pub(crate) use loom::thread_local;

/// The Dekker completion of the std half (see there). loom models SeqCst *accesses* as
/// AcqRel (its README, "Unsupported features") and only SeqCst *fences* fully, so here it
/// is the equivalent `fence(SeqCst)`.
#[inline(always)]
pub(crate) fn dekker_after_rmw() {
    fence(Ordering::SeqCst);
}

/// Thread spawning, `yield_now`, the current thread handle.
pub(crate) mod thread {
    pub(crate) use loom::thread::{current, park, yield_now, JoinHandle, Thread};

    /// Spawns a thread; loom threads have no names or builder, so the name is dropped.
    pub(crate) fn spawn_named<F, R>(_name: String, f: F) -> std::io::Result<JoinHandle<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        Ok(loom::thread::spawn(f))
    }
}

/// The asymmetric fences (`sync/asym.rs`) under loom: both sides are `fence(SeqCst)`,
/// which is what the models check; membarrier is never chosen.
pub(crate) mod asym {
    use loom::sync::atomic::{fence, Ordering};

    use crate::fences::{FenceMode, Fences};

    /// SeqCst fences for every bus under loom, whatever was asked for.
    pub(crate) fn decide(requested: Fences) -> Result<FenceMode, std::io::Error> {
        let _ = requested;
        Ok(FenceMode::SeqCst)
    }

    /// The hot path's side: a SeqCst fence.
    #[inline(always)]
    pub(crate) fn light(asym: bool) {
        let _ = asym;
        fence(Ordering::SeqCst);
    }

    /// The rare path's side: a SeqCst fence, which always holds.
    #[must_use]
    pub(crate) fn heavy(asym: bool) -> bool {
        let _ = asym;
        fence(Ordering::SeqCst);
        true
    }

    /// Never reached under loom ([`heavy`] always holds).
    pub(crate) fn grace() {}
}

/// A cache hint: nothing to model.
pub(crate) fn prefetch_write<T>(_p: *const T) {}

/// No hints under loom.
pub(crate) fn prefetch_read<T>(_p: *const T) {}

/// One pause of a busy-wait loop: a yield to the model scheduler (see [`Backoff`]).
pub(crate) fn spin_hint() {
    loom::thread::yield_now();
}

/// Exponential back-off for wait loops. Every step yields to the model scheduler, or
/// loom would report a spinning wait loop as a livelock.
#[derive(Debug, Default)]
pub(crate) struct Backoff(std::cell::Cell<u32>);

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

/// Thread parking: the same token protocol as crossbeam's `Parker` (an `unpark` before
/// `park` makes that `park` return at once), built on loom's `Mutex` and `Condvar`.
pub(crate) use self::park::{Parker, Unparker};

mod park {
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

/// The waker slot of a publisher's lane and of a stream's consumer: loom's `AtomicWaker`, the same contract as the
/// `atomic-waker` crate's of the normal build (a `wake` racing a `register` wakes the
/// registered waker), modelled.
pub(crate) struct WakerSlot(loom::future::AtomicWaker);

impl WakerSlot {
    pub(crate) fn new() -> Self {
        Self(loom::future::AtomicWaker::new())
    }
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.0.register_by_ref(waker);
    }
    pub(crate) fn wake(&self) {
        self.0.wake();
    }
}

/// The loom stand-in for `event_listener::Event` with the same contract: a listener is
/// registered when it is created, and a `notify_all` after that wakes it whether or not
/// it has been polled. A generation counter under a loom `Mutex`: a listener remembers the
/// generation it was created in and is ready once the generation moved on.
pub(crate) struct WaitList(loom::sync::Mutex<(u64, Vec<std::task::Waker>)>);

impl WaitList {
    pub(crate) fn new() -> Self {
        Self(loom::sync::Mutex::new((0, Vec::new())))
    }

    pub(crate) fn notify_all(&self) {
        let wakers = {
            let mut g = self.0.lock().unwrap();
            g.0 += 1;
            std::mem::take(&mut g.1)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// A listener registered now (see the type's docs).
    pub(crate) fn listen(&self) -> WaitListener<'_> {
        WaitListener {
            list: self,
            generation: self.0.lock().unwrap().0,
        }
    }
}

/// A registered listener of the loom [`WaitList`]; a future.
pub(crate) struct WaitListener<'a> {
    list: &'a WaitList,
    generation: u64,
}

impl std::future::Future for WaitListener<'_> {
    type Output = ();
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let mut g = self.list.0.lock().unwrap();
        if g.0 != self.generation {
            return std::task::Poll::Ready(());
        }
        g.1.push(cx.waker().clone());
        std::task::Poll::Pending
    }
}

/// `wait_list_listen!(list => name)`: see the normal build's half.
macro_rules! wait_list_listen {
    ($list:expr => $name:ident) => {
        let mut $name = ::core::pin::pin!($list.listen());
    };
}
pub(crate) use wait_list_listen;
