//! Ending a bus: the shutdown forms, the drain on a shard thread, what a stop reports,
//! and `Drop`.

use super::*;

/// See `Bus::finish_elsewhere`: takes the deadline and the shard threads' handles.
pub(super) type FinishElsewhere =
    Box<dyn Fn(Option<Duration>, Vec<JoinHandle<()>>) -> std::io::Result<()> + Send + Sync>;

/// The least time [`Bus::shutdown_timeout`] gives the shards, after its deadline, to
/// finish the call in progress and exit (it gives the timeout again if that is longer).
/// A shard that has seen the deadline starts no handler, so it needs only this long
/// unless a call does not return.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// What [`Bus::shutdown_timeout`] reports.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The final statistics.
    pub stats: Stats,
    /// Accepted messages the deadline left unhandled: dropped (each exactly once) by the
    /// shards that stopped, plus, for each shard in [`in_call`](Self::in_call), the
    /// messages waiting in its shared inbox ring and in the lanes from the other shards
    /// (see [`Bus::shutdown_timeout`]).
    pub undrained: u64,
    /// Shard threads that had not exited by the end of the grace period (a handler
    /// that does not return); they were detached. The length of `in_call`.
    pub unjoined: usize,
    /// The shards whose thread was still inside a call (a handler, `on_stop`, the
    /// dead-letter handler) when the grace period ended, in shard order. That one call
    /// is the only user code that may still run there, besides `on_stop` (see
    /// [`Bus::shutdown_timeout`]).
    pub in_call: Vec<ShardId>,
}

impl<T> Bus<T> {
    /// Shuts down gracefully: stops intake (later publishes get `Closed` with their
    /// message), handles every message already accepted, including what handlers
    /// publish onward while draining, runs every actor's `on_stop`, handles what those
    /// publish (see [`Handler::on_stop`]), joins the shard threads and returns the final
    /// statistics.
    ///
    /// Waits as long as the drain takes; a workload that never quiesces (actors that
    /// publish to each other forever) needs [`shutdown_timeout`](Self::shutdown_timeout).
    ///
    /// Called (or the last handle dropped) in a handler on one of this bus's own shard
    /// threads, it cannot wait for the drain, which needs that very thread: it closes
    /// intake and leaves the drain, the `on_stop` calls and the joins to a thread of its
    /// own, as [`shutdown_background`](Self::shutdown_background) does, and returns the
    /// statistics as of the call (`shutdown_timeout`'s report counts every shard
    /// unjoined).
    pub fn shutdown(mut self) -> Stats {
        self.stop(None).stats
    }

    /// Like [`shutdown`](Self::shutdown), but drains only until `timeout`. Then each
    /// shard stops: it starts no further handler (a memory-only shard checks between
    /// messages, so one in the middle of a batch stops after the call in progress),
    /// drops what is left (each message exactly once, without handling it), runs
    /// `on_stop` (whose publishes are then refused with `Closed`) and exits. What was
    /// dropped is counted in `undrained`, and `undrained + handled + dead letters`
    /// accounts for every accepted message.
    ///
    /// Shard threads get the same time again, but at least [`STOP_GRACE`], to finish the
    /// call in progress and exit. No handler runs after this returns, except on a shard
    /// still inside a call then (a handler that does not return), listed in
    /// [`ShutdownReport::in_call`] and detached: there the call in progress finishes,
    /// then the shard starts no other handler, runs `on_stop`, drops what it holds and
    /// exits. For such a shard `undrained` counts the messages waiting in its shared
    /// inbox ring (a queued subscription or `Publisher` registration counts as one too)
    /// and in the lanes from the other shards, never the one in the call nor one before
    /// it; what waits in `Publisher` lanes into it, and what its own actors queued for
    /// later (to its own topics, or in its overflow queue), is not in the report: it is
    /// dropped when the call returns and counted in its
    /// [`ShardStats::dropped`](crate::ShardStats::dropped) then.
    ///
    /// On a persistent bus the check is per pass rather than per message: a shard
    /// finishes the logged batch it is handling (its records are in the log), and the
    /// batches whose sync is still in flight, before it stops; what it has not logged is
    /// dropped as above.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> ShutdownReport {
        self.stop(Some(timeout))
    }

    /// Closes intake and waits until every accepted message is handled, including what
    /// handlers publish onward while draining; then every actor's `on_stop` runs and the
    /// shard threads exit. Returns the final statistics, as
    /// [`shutdown`](Self::shutdown) does, but through `&self`: for a bus shared in an
    /// `Arc`, which `shutdown` would need to unwrap.
    ///
    /// Later publishes (through the bus or any [`Publisher`]) get `Closed` with their
    /// message back, and subscribes get [`Error::Closed`]. The shard threads are joined
    /// by whichever comes last of the bus's drop or `shutdown` (they have exited by then,
    /// so neither waits). A second `close`, also on another thread at the same time,
    /// waits for the same end and returns the same statistics.
    ///
    /// Waits as long as the drain takes, as `shutdown` does. From a handler on one of
    /// this bus's shard threads it would wait for its own shard: it returns
    /// [`Error::WouldDeadlock`] and does nothing.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// let bus = Arc::new(shardbus::Bus::<u64>::builder().shards(2).build()?);
    /// bus.subscribe("ticks", |_: &mut shardbus::Context<'_, u64>, _: &u64| {})?;
    /// let producer = {
    ///     let bus = bus.clone();
    ///     std::thread::spawn(move || bus.publish("ticks", 1).unwrap())
    /// };
    /// producer.join().unwrap();
    /// let stats = bus.close()?;
    /// assert_eq!(stats.handled(), 1);
    /// assert!(bus.publish("ticks", 2).is_err()); // Closed(2)
    /// # Ok(()) }
    /// ```
    pub fn close(&self) -> Result<Stats, Error> {
        if current::is_shard_of(self.id) {
            return Err(Error::WouldDeadlock);
        }
        // AcqRel: one caller wins and runs the protocol; the others wait for its end
        // below (the shards' exit flags carry the happens-before from there).
        if !self.closed.swap(true, Ordering::AcqRel) {
            shutdown::begin(&self.shared);
            shutdown::drain_and_stop(&self.shared, None);
        }
        // `has_exited` is an Acquire load: the final counters are visible after it.
        shutdown::wait_exited(&self.shared, None);
        Ok(self.stats())
    }

    /// Waits until every message published before this call has been handled: passed
    /// to every subscriber of its topic (or to the dead-letter handler), on every shard.
    /// Shuts nothing down; publishing goes on meanwhile on other threads.
    ///
    /// "Published before" means: published through [`publish`](Self::publish),
    /// [`try_publish`](Self::try_publish), [`publish_durable`](Self::publish_durable) or
    /// any [`Publisher`], by a publish call that returned `Ok` before `flush` was called
    /// (on this thread, or on another thread that this one has synchronized with, as a
    /// joined thread or a received channel message gives). Messages published later,
    /// even while `flush` waits, may or may not be handled when it returns. Messages
    /// that handlers publish onward ([`Context::publish`]) are not waited for, nor
    /// those handlers publish in reply to flushed messages. Subscription changes that
    /// the flushed messages' handlers asked for on their own shard
    /// ([`Context::subscribe`] and its kin) are in effect when it returns; those for
    /// another shard take effect when that shard takes them from its ring.
    ///
    /// How: a marker goes through each shard's shared ring (behind every message pushed
    /// there before it); on taking it, the shard first handles everything in its
    /// publishers' lanes up to their current ends, which includes every message pushed
    /// before the marker, then answers. `flush` returns when every shard has answered.
    ///
    /// On a bus that is closing (see [`close`](Self::close)), waits for the drain
    /// instead, which handles everything accepted. [`Error::Closed`] if a shard's log
    /// has failed (see [`log_error`](Self::log_error)): its intake is closed. From a
    /// handler on one of this bus's shard threads, [`Error::WouldDeadlock`] (it would wait
    /// for its own shard).
    pub fn flush(&self) -> Result<(), Error> {
        if current::is_shard_of(self.id) {
            return Err(Error::WouldDeadlock);
        }
        let mut answers = Vec::with_capacity(self.shared.inboxes.len());
        let mut refused = false;
        for inbox in self.shared.inboxes.iter() {
            let (ack, done) = ack_pair();
            match push_control(self.id, inbox, Control::Flush { ack }) {
                Ok(()) => answers.push(done),
                Err(_) => refused = true,
            }
        }
        // Each answer is a Release store that the Acquire load in `wait` reads: what the
        // handlers did before the shard answered is visible to the caller.
        for done in answers {
            refused |= done.wait().is_err();
        }
        if !refused {
            return Ok(());
        }
        if self.shared.is_closing() {
            // The drain handles everything accepted; quiescence says it has.
            shutdown::wait_quiescent(&self.shared, None);
            // Acquire: pairs with the SeqCst fences the shards make before reporting
            // idle, so their handlers' effects are visible here.
            fence(Ordering::Acquire);
            return Ok(());
        }
        Err(Error::Closed)
    }

    /// Closes intake and returns at once, without waiting for the drain: a background
    /// thread (named `sb-shutdown`) drains every accepted message as
    /// [`shutdown`](Self::shutdown) does, runs every `on_stop`, joins the shard threads
    /// and ends. The calling thread waits for none of it: for use where blocking is not
    /// allowed (an async runtime's worker), after tokio's `Runtime::shutdown_background`.
    ///
    /// When it returns, later publishes (through [`Publisher`]s made before) get
    /// `Closed` with their message back. Nothing here waits for the drain: if the process
    /// exits first, what was not yet handled is lost, and a workload that never quiesces
    /// keeps the background thread and the shards running. If the system refuses a new
    /// thread, the drain runs on the calling thread as a drop does (see the type's docs:
    /// bounded by twice `drop_timeout`) and a warning is logged.
    pub fn shutdown_background(self)
    where
        T: Send + 'static,
    {
        shutdown::begin(&self.shared);
        let spawned = thread::spawn_named("sb-shutdown".to_string(), move || {
            let bus = self;
            let _ = bus.shutdown();
        });
        if let Err(error) = spawned {
            // The closure, with the bus, was dropped inside the failed spawn: `Drop` has
            // already shut it down on this thread.
            tracing::warn!(%error, "no thread for the background shutdown; drained on drop");
        }
    }

    fn stop(&mut self, timeout: Option<Duration>) -> ShutdownReport {
        self.shut_down = true;
        let _span = tracing::info_span!(
            "shardbus_shutdown",
            shards = self.shared.inboxes.len(),
            timeout = ?timeout
        )
        .entered();
        // Relaxed: `&mut self`, so any `close` has returned, and its effects happened
        // before this borrow began.
        if self.closed.load(Ordering::Relaxed) {
            return self.join_closed();
        }
        if current::is_shard_of(self.id) {
            return self.stop_elsewhere(timeout);
        }
        let start = Instant::now();
        let dropped_before = self.stats().dropped();
        shutdown::begin(&self.shared);
        let deadline = timeout.map(|t| start + t);
        // Whether or not the drain finished, phase 3 counts what is left as undrained.
        let drained = shutdown::drain_and_stop(&self.shared, deadline);
        let grace = deadline.map(|d| d + timeout.unwrap_or_default().max(STOP_GRACE));
        let running = shutdown::wait_exited(&self.shared, grace);
        let threads = std::mem::take(&mut self.threads);
        if running.is_empty() {
            for t in threads {
                // A shard thread catches every handler panic, so `join` fails only on
                // a bug in shardbus itself; the statistics still stand.
                let _ = t.join();
            }
        }
        let stats = self.stats();
        let queued: u64 = running
            .iter()
            .map(|&i| shutdown::queued_on(&self.shared, i))
            .sum();
        if !running.is_empty() {
            tracing::warn!(
                unjoined = running.len(),
                "shard threads still running at the deadline were detached"
            );
        }
        tracing::info!(
            drained,
            handled = stats.handled(),
            undrained = stats.dropped() - dropped_before + queued,
            "bus shut down"
        );
        ShutdownReport {
            undrained: stats.dropped() - dropped_before + queued,
            stats,
            unjoined: running.len(),
            in_call: running.into_iter().map(ShardId).collect(),
        }
    }
}

impl<T> Bus<T> {
    /// [`stop`](Self::stop) on one of this bus's own shard threads (the last handle
    /// dropped, or `shutdown` called, in a handler): waiting here for the drain would wait
    /// for this very thread. So intake closes here and a thread of its own (`sb-shutdown`)
    /// drains, stops and joins, as [`shutdown_background`](Self::shutdown_background)
    /// does; the report holds the statistics as of now, with every shard unjoined.
    fn stop_elsewhere(&mut self, timeout: Option<Duration>) -> ShutdownReport {
        shutdown::begin(&self.shared);
        let threads = std::mem::take(&mut self.threads);
        let unjoined = threads.len();
        if let Err(error) = (self.finish_elsewhere)(timeout, threads) {
            // No thread to wait on: stop the shards now (what is left is dropped and
            // counted); they exit on their own once this handler returns.
            tracing::warn!(%error, "no thread for a shutdown begun on a shard thread");
            shutdown::stop(&self.shared, false);
        }
        ShutdownReport {
            stats: self.stats(),
            undrained: 0,
            unjoined,
            in_call: Vec::new(),
        }
    }

    /// [`stop`](Self::stop) after [`close`](Self::close): the drain and the stop are
    /// done and every shard thread has exited; only the joins are left.
    fn join_closed(&mut self) -> ShutdownReport {
        let unjoined = shutdown::wait_exited(&self.shared, None).len();
        for t in std::mem::take(&mut self.threads) {
            // As in `stop`: `join` fails only on a bug in shardbus itself.
            let _ = t.join();
        }
        ShutdownReport {
            stats: self.stats(),
            undrained: 0,
            unjoined,
            in_call: Vec::new(),
        }
    }
}

impl<T> Drop for Bus<T> {
    /// Shuts down with the builder's `drop_timeout` if `shutdown` was not called (see
    /// the type's docs, "Drop").
    fn drop(&mut self) {
        if !self.shut_down {
            self.stop(Some(self.drop_timeout));
        }
    }
}
