//! A pattern export: [`Local::Pattern`](crate::Local::Pattern). A pattern subscription on
//! the bus puts one actor on each matching topic's shard; each clones its topic's
//! messages into one bounded hand-off (a tokio MPSC channel) that the export task drains
//! through the same code as a topic export ([`crate::export::run`]).
//!
//! The shards never wait: an actor that finds the hand-off full gives the message to the
//! export-failure handler ([`ExportError::Overflow`], counted in
//! [`BridgeStats::export_overflow`](crate::BridgeStats::export_overflow)), as a topic
//! export's stream gives it to the bus's dead-letter handler. Per-topic order holds: one
//! actor per topic sends in the topic's order into a FIFO channel, and the task sends in
//! the order it receives.

use crate::export::{Route, Source};
use crate::options::ExportFailureFn;
use crate::stats::Counters;
use crate::ExportError;
use shardbus::{Bus, Context, Handler, SubscriptionId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc::{self, error::TrySendError};

/// One message on its way from a shard to the export task, with its topic's route.
pub(crate) type Handed<T> = (T, Arc<Route>);

/// What a pattern export's actors share.
pub(crate) struct Handoff<T> {
    pub(crate) counters: Arc<Counters>,
    pub(crate) on_export_failure: ExportFailureFn<T>,
    pub(crate) prefix: String,
    /// A mapping function names the subjects (so a route has no fixed subject).
    pub(crate) mapped: bool,
    pub(crate) capacity: usize,
    /// The pattern subscription's id, set once `subscribe_pattern` returned.
    pub(crate) pattern: OnceLock<SubscriptionId>,
    /// Set by the first actor that finds the export task gone and unsubscribes the
    /// pattern (so the others do not ask again).
    ending: AtomicBool,
}

impl<T> Handoff<T> {
    pub(crate) fn new(
        counters: Arc<Counters>,
        on_export_failure: ExportFailureFn<T>,
        prefix: String,
        mapped: bool,
        capacity: usize,
    ) -> Self {
        Self {
            counters,
            on_export_failure,
            prefix,
            mapped,
            capacity,
            pattern: OnceLock::new(),
            ending: AtomicBool::new(false),
        }
    }

    fn fail(&self, error: ExportError<T>) {
        Counters::add(&self.counters.export_failed, 1);
        (self.on_export_failure)(error);
    }
}

/// The actor a pattern export puts on each matching topic's shard.
pub(crate) struct PatternActor<T> {
    pub(crate) tx: mpsc::Sender<Handed<T>>,
    pub(crate) shared: Arc<Handoff<T>>,
    /// This actor's topic's route, made at its first message.
    pub(crate) route: Option<Arc<Route>>,
}

impl<T: Clone + Send + Sync + 'static> Handler<T> for PatternActor<T> {
    fn handle(&mut self, ctx: &mut Context<'_, T>, msg: &T) {
        let shared = &self.shared;
        let route = self.route.get_or_insert_with(|| {
            Arc::new(Route::new(&shared.prefix, shared.mapped, ctx.topic()))
        });
        match self.tx.try_send((msg.clone(), Arc::clone(route))) {
            Ok(()) => {}
            Err(TrySendError::Full((msg, route))) => {
                Counters::add(&shared.counters.export_overflow, 1);
                shared.fail(ExportError::Overflow {
                    msg,
                    topic: route.topic().to_owned(),
                    capacity: shared.capacity,
                });
            }
            Err(TrySendError::Closed((msg, route))) => {
                // The export task is gone without unsubscribing (aborted): end the
                // pattern from here, once.
                if let Some(&id) = shared.pattern.get() {
                    // Relaxed: only de-duplicates the request; nothing is published
                    // through it.
                    if !shared.ending.swap(true, Ordering::Relaxed) {
                        let _ = ctx.unsubscribe(id);
                    }
                }
                shared.fail(ExportError::Ended {
                    msg,
                    topic: route.topic().to_owned(),
                });
            }
        }
    }
}

/// Ends a pattern subscription, waiting for the shards (so: on a blocking thread).
pub(crate) type Ender = Box<dyn FnOnce() + Send>;

/// The export task's end of a pattern export.
pub(crate) struct PatternSource<T> {
    pub(crate) rx: mpsc::Receiver<Handed<T>>,
    /// Ends the pattern subscription; taken by `close` (or the drop).
    pub(crate) end: Option<Ender>,
    pub(crate) runtime: tokio::runtime::Handle,
}

/// An [`Ender`] for pattern `id` of `bus`. An error means the bus has shut down, which
/// ended the actors already.
pub(crate) fn ender<T: Send + 'static>(bus: Arc<Bus<T>>, id: SubscriptionId) -> Ender {
    Box::new(move || {
        let _ = bus.unsubscribe(id);
    })
}

impl<T: Send + Sync + 'static> Source<T> for PatternSource<T> {
    async fn recv(&mut self) -> Option<(T, Option<Arc<Route>>)> {
        self.rx.recv().await.map(|(msg, route)| (msg, Some(route)))
    }

    fn try_recv(&mut self) -> Option<(T, Option<Arc<Route>>)> {
        self.rx
            .try_recv()
            .ok()
            .map(|(msg, route)| (msg, Some(route)))
    }

    /// Ends the pattern subscription and waits for every shard to remove its actors:
    /// then the hand-off holds all there will be.
    async fn close(&mut self) {
        if let Some(end) = self.end.take() {
            // `unsubscribe` waits for the shards: on a blocking thread, not the runtime's.
            let _ = tokio::task::spawn_blocking(end).await;
        }
    }
}

impl<T> Drop for PatternSource<T> {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            // The task was aborted: end the pattern without waiting here. (Should this
            // not run, the first actor that finds the hand-off closed ends it.)
            drop(self.runtime.spawn_blocking(end));
        }
    }
}
