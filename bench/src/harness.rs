//! What every runner shares, the peers and the shardbus runner alike: options, results, errors,
//! the start gate and core pinning.
//!
//! Every runner runs a [`Workload`](crate::Workload) the same way: generate the plan, allocate the
//! checkers, spawn and pin threads, line them up at a [`Gate`], then time from the gate opening to
//! the moment the last handler has handled its last planned message (thread teardown is not timed).

use std::fmt;
use std::io;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use core_affinity::CoreId;

use crate::verify::{Checker, Consume, Verdict};
use crate::workload::{Sampling, WorkloadError};

/// Runs `$f::<N>(args)` with `N` = the workload's payload size.
macro_rules! by_payload {
    ($payload:expr, $f:ident($($arg:expr),*)) => {
        match $payload {
            16 => $f::<16>($($arg),*),
            256 => $f::<256>($($arg),*),
            n => Err($crate::workload::WorkloadError::Payload(n).into()),
        }
    };
}
pub(crate) use by_payload;

/// Knobs shared by the peers; [`RunOpts::default`] is what `shardbus bench` uses.
#[derive(Clone, Debug)]
pub struct RunOpts {
    /// Latency sampling period K: one message in K per producer is timed (0 = none). Default 64.
    pub sample_every: u64,
    /// Capacity of every channel, inbox and ring (the disruptor rounds it up to a power of two).
    /// Default 1024.
    pub capacity: usize,
    /// Pin threads to cores where the peer documents it. Default true.
    pub pin: bool,
    /// Shard threads of `crossbeam_router`. Default: the number of cores.
    pub shards: usize,
    /// `seed` refuses workloads needing more threads (topics + producers). Default 16,384.
    pub max_threads: usize,
    /// How idle shardbus shards wait ([`runner`](crate::runner) only). Default: shardbus's default,
    /// [`WaitStrategy::Park`](shardbus::WaitStrategy::Park).
    pub wait: shardbus::WaitStrategy,
    /// [`runner`](crate::runner) only: 0 publishes message by message (`Publisher::publish`); `n > 0`
    /// gathers up to `n` messages per topic and hands them over with `Publisher::publish_batch`.
    /// Default 0.
    pub batch: usize,
    /// [`runner::run`](crate::runner::run) only: build a persistent bus (a fresh log directory per run).
    /// Default `None`: memory-only.
    pub persist: Option<crate::persist::PersistOpts>,
    /// [`runner`](crate::runner) only: the shardbus bus's fences. Default: shardbus's default,
    /// [`Fences::SeqCst`](shardbus::Fences::SeqCst).
    pub fences: shardbus::Fences,
    /// [`runner`](crate::runner) only: publish by topic name (`publish("topic-3", msg)`, the
    /// form of the README's quickstart) instead of through pre-resolved `Topic` handles.
    /// Default false.
    pub by_name: bool,
    /// What every runner's consumer does per message: the exactly-once checker (default) or
    /// only a count and a checksum ([`Consume`]). Under `Checksum` no message is stamped for
    /// latency (see [`RunOpts::sampling`]).
    pub consume: Consume,
}

impl Default for RunOpts {
    fn default() -> Self {
        Self {
            sample_every: 64,
            capacity: 1024,
            pin: true,
            shards: available_cores(),
            max_threads: 16_384,
            wait: shardbus::WaitStrategy::default(),
            batch: 0,
            persist: None,
            fences: shardbus::Fences::default(),
            by_name: false,
            consume: Consume::Verify,
        }
    }
}

/// What a peer run measured.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// From the start gate opening to the last planned message handled.
    pub elapsed: Duration,
    /// Messages handled (same as `verdict.handled`).
    pub handled: u64,
    /// Exactly-once, order and latency outcome.
    pub verdict: Verdict,
    /// Messages handled by each handler thread (shard, topic thread or consumer).
    pub per_thread_handled: Vec<u64>,
}

impl RunResult {
    /// Handled messages per second of `elapsed`.
    pub fn msgs_per_sec(&self) -> f64 {
        self.handled as f64 / self.elapsed.as_secs_f64()
    }
}

/// Why a peer did not run or why its result was discarded.
#[derive(Debug)]
pub enum Error {
    /// The workload is invalid.
    Workload(WorkloadError),
    /// An option is out of range.
    Opts(&'static str),
    /// The peer does not apply to this workload shape.
    Unsupported(&'static str),
    /// `seed` would need more threads than [`RunOpts::max_threads`].
    TooManyThreads {
        /// Topic handler threads plus producer threads.
        needed: usize,
        /// The cap.
        max: usize,
    },
    /// A busy-spinning peer needs more cores than are available.
    Cores {
        /// Cores the peer needs.
        needed: usize,
        /// Cores available to this process.
        available: usize,
    },
    /// A thread could not be spawned.
    Spawn {
        /// The thread's name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// The shardbus bus refused the setup (build, topic or subscription).
    Bus(String),
    /// Pinning was requested and failed for some threads; the measurement was discarded.
    Pin {
        /// Threads that could not be pinned.
        failed: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Workload(e) => write!(f, "invalid workload: {e}"),
            Self::Opts(why) => write!(f, "invalid options: {why}"),
            Self::Unsupported(why) => write!(f, "not applicable: {why}"),
            Self::TooManyThreads { needed, max } => {
                write!(f, "needs {needed} threads, max_threads is {max}")
            }
            Self::Cores { needed, available } => {
                write!(f, "needs {needed} cores, {available} available")
            }
            Self::Spawn { name, source } => write!(f, "cannot spawn thread {name}: {source}"),
            Self::Bus(e) => write!(f, "shardbus: {e}"),
            Self::Pin { failed } => write!(f, "{failed} thread(s) could not be pinned"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Workload(e) => Some(e),
            Self::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<WorkloadError> for Error {
    fn from(e: WorkloadError) -> Self {
        Self::Workload(e)
    }
}

impl From<shardbus::Error> for Error {
    fn from(e: shardbus::Error) -> Self {
        Self::Bus(e.to_string())
    }
}

impl RunOpts {
    /// The latency sampling of a run: every [`RunOpts::sample_every`]-th message, or none under
    /// [`Consume::Checksum`] (its consumers read no clock, so its producers stamp nothing).
    pub fn sampling(&self) -> Sampling {
        match self.consume {
            Consume::Verify => Sampling::new(self.sample_every),
            Consume::Checksum => Sampling::new(0),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.capacity == 0 {
            return Err(Error::Opts("capacity must be at least 1"));
        }
        if self.shards == 0 {
            return Err(Error::Opts("shards must be at least 1"));
        }
        Ok(())
    }
}

/// Cores available to this process.
fn available_cores() -> usize {
    thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// The start line. Threads call [`Gate::wait`] when set up; the runner calls [`Gate::open`] once
/// all of them are there and takes the start time, or [`Gate::cancel`] when setup failed.
pub(crate) struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

struct GateState {
    waiting: usize,
    /// `Some(true)`: go; `Some(false)`: abandon the run.
    verdict: Option<bool>,
}

impl Gate {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(GateState {
                waiting: 0,
                verdict: None,
            }),
            changed: Condvar::new(),
        }
    }

    /// Blocks until the gate opens (`true`) or the run is cancelled (`false`).
    pub(crate) fn wait(&self) -> bool {
        let mut s = self.lock();
        s.waiting += 1;
        self.changed.notify_all();
        loop {
            if let Some(go) = s.verdict {
                return go;
            }
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Blocks until `parties` threads wait, then releases them; returns the start time.
    pub(crate) fn open(&self, parties: usize) -> Instant {
        let mut s = self.lock();
        while s.waiting < parties {
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.verdict = Some(true);
        let start = Instant::now();
        self.changed.notify_all();
        start
    }

    /// Releases every current and future waiter with `false`.
    pub(crate) fn cancel(&self) {
        self.lock().verdict = Some(false);
        self.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Core pinning that never panics: failures are counted and turned into [`Error::Pin`] after the
/// run by [`Cores::check`].
pub(crate) struct Cores {
    /// Empty when pinning is off or the platform cannot list cores.
    ids: Vec<CoreId>,
    available: usize,
    failed: AtomicUsize,
}

impl Cores {
    pub(crate) fn detect(pin: bool) -> Self {
        let ids = if pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        Self {
            ids,
            available: available_cores(),
            failed: AtomicUsize::new(0),
        }
    }

    pub(crate) fn available(&self) -> usize {
        self.available
    }

    /// Busy-spinning peers need a core per spinning thread.
    pub(crate) fn require(&self, needed: usize) -> Result<(), Error> {
        if self.available < needed {
            return Err(Error::Cores {
                needed,
                available: self.available,
            });
        }
        Ok(())
    }

    /// The OS id of the `i`-th core (modulo the core count), if pinning is on.
    pub(crate) fn id(&self, i: usize) -> Option<usize> {
        (!self.ids.is_empty()).then(|| self.ids[i % self.ids.len()].id)
    }

    /// Pins the calling thread to the `i`-th core (modulo the core count), if pinning is on.
    pub(crate) fn pin(&self, i: usize) {
        if self.ids.is_empty() {
            return;
        }
        if !core_affinity::set_for_current(self.ids[i % self.ids.len()]) {
            // Relaxed: read by check() after every pinning thread was joined, which orders it.
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Call after joining every thread that pinned itself.
    pub(crate) fn check(&self) -> Result<(), Error> {
        // Relaxed: see pin().
        match self.failed.load(Ordering::Relaxed) {
            0 => Ok(()),
            failed => Err(Error::Pin { failed }),
        }
    }
}

/// Spawns a named scoped thread, turning an OS refusal into [`Error::Spawn`].
pub(crate) fn spawn<'scope, T: Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    name: String,
    stack: Option<usize>,
    f: impl FnOnce() -> T + Send + 'scope,
) -> Result<ScopedJoinHandle<'scope, T>, Error> {
    let mut builder = thread::Builder::new().name(name.clone());
    if let Some(bytes) = stack {
        builder = builder.stack_size(bytes);
    }
    builder
        .spawn_scoped(scope, f)
        .map_err(|source| Error::Spawn { name, source })
}

/// Joins a scoped thread, re-raising its panic.
pub(crate) fn join<T>(handle: ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Builds the result: elapsed runs from `start` to the latest checker completion. A checker that
/// expected nothing does not extend it; one that never completed ends it at "now" (and its verdict
/// shows the missing messages).
pub(crate) fn finish(start: Instant, checkers: Vec<Checker>) -> RunResult {
    let now = Instant::now();
    let end = checkers
        .iter()
        .map(|c| match c.done_at() {
            Some(t) => t,
            None if c.expected() == 0 => start,
            None => now,
        })
        .max()
        .unwrap_or(start);
    let per_thread_handled = checkers.iter().map(Checker::handled).collect();
    let verdict = Verdict::merge(checkers);
    RunResult {
        elapsed: end.saturating_duration_since(start),
        handled: verdict.handled,
        verdict,
        per_thread_handled,
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{Mutex, MutexGuard, PoisonError};

    use super::{Error, RunOpts, RunResult};
    use crate::workload::{Distribution, Workload};

    pub(crate) const DISTRIBUTIONS: [Distribution; 2] =
        [Distribution::Uniform, Distribution::Zipf(1.0)];

    /// The small workload of the peer tests.
    pub(crate) fn small(producers: usize, distribution: Distribution, payload: usize) -> Workload {
        Workload {
            producers,
            topics: 64,
            messages: 20_000,
            payload,
            distribution,
            seed: 11,
        }
    }

    /// Busy-spinning tests take this lock: two of them sharing two cores would crawl.
    pub(crate) fn one_spinner_at_a_time() -> MutexGuard<'static, ()> {
        static LOCK: Mutex<()> = Mutex::new(());
        LOCK.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn opts() -> RunOpts {
        RunOpts {
            sample_every: 16,
            capacity: 64,
            ..RunOpts::default()
        }
    }

    pub(crate) fn assert_exact(w: &Workload, r: Result<RunResult, Error>) {
        let r = r.unwrap_or_else(|e| panic!("{w:?}: {e}"));
        let v = &r.verdict;
        assert_eq!(
            (
                v.handled,
                v.duplicates,
                v.missing,
                v.order_violations,
                v.unexpected
            ),
            (w.messages, 0, 0, 0, 0),
            "{w:?}"
        );
        assert_eq!(r.handled, w.messages);
        assert_eq!(r.per_thread_handled.iter().sum::<u64>(), w.messages);
        assert!(!v.latency.is_empty(), "some messages were sampled");
    }
}
