//! Dispatch: the shard's actors, the names of its topics, supervision of a panicking
//! handler and the dead-letter hand-off.

use std::collections::HashMap;
use std::mem::ManuallyDrop;

use super::*;
use crate::shutdown::ShutdownFlags;
use crate::stats::PanicSite;
use crate::supervise::traced;
use crate::supervise::{drop_guarded, Caught, Guarded};

/// The names of the shard's topics, by index (see `intern`): learned from the bus's
/// registry the first time an index beyond the table reaches the shard.
pub(crate) struct Names {
    pub(super) shard: ShardId,
    pub(super) keys: Vec<TopicKey>,
}

impl Names {
    /// Makes sure `index` has its name. One compare when it has. Returns whether new
    /// names were learned (then the shard's patterns match them: `catch_up_patterns`).
    #[inline]
    pub(super) fn learn(&mut self, index: u32, topics: &Topics) -> bool {
        if index as usize >= self.keys.len() {
            self.learn_from(topics);
            return true;
        }
        false
    }

    #[cold]
    fn learn_from(&mut self, topics: &Topics) {
        let keys = &mut self.keys;
        topics.names_since(self.shard, keys.len(), |key| keys.push(key));
    }

    /// The name of topic `index`, which [`learn`](Self::learn) has seen.
    pub(crate) fn key(&self, index: u32) -> &TopicKey {
        &self.keys[index as usize]
    }
}

/// The shard's actors and everything a dispatch touches.
pub(super) struct Actors<T> {
    pub(super) id: ShardId,
    pub(super) shared: Arc<Shared<T>>,
    /// `subs[index]`: the subscribers of topic `index`, in subscription order (the table
    /// ends at the highest index ever subscribed to).
    pub(super) subs: Vec<Vec<Subscriber<T>>>,
    pub(super) where_is: HashMap<SubscriptionId, u32>,
    pub(super) out: Outbox<T>,
    pub(super) counters: LocalCounters,
    /// The shard's pattern subscriptions (`patterns.rs`).
    pub(super) patterns: super::patterns::Patterns<T>,
}

impl<T: Send + 'static> Actors<T> {
    /// Learns the message's topic name if new, then dispatches it.
    #[inline(always)]
    pub(super) fn learn_and_dispatch(&mut self, names: &mut Names, env: Envelope<T>, replay: bool) {
        if names.learn(env.topic, &self.shared.topics) {
            // Inside the first-sight branch: nothing per message.
            self.catch_up_patterns(names);
        }
        self.dispatch(names, env, replay);
    }

    /// A memory-only pass's message: dispatched, unless the coordinator has given up the
    /// drain ([`Command::StopForced`]), in which case it is dropped and counted, and no
    /// handler starts. One load and one branch per message: the only way a shard in the
    /// middle of a batch (or stuck in a handler when the deadline passed) stops before the
    /// next handler.
    #[inline(always)]
    pub(super) fn take(&mut self, names: &mut Names, env: Envelope<T>, flags: &ShutdownFlags) {
        if flags.shard_is_abandoned() {
            self.abandon(env);
        } else {
            self.learn_and_dispatch(names, env, false);
        }
    }

    /// A message the forced stop leaves unhandled: dropped here (its `Drop` guarded),
    /// counted.
    #[cold]
    #[inline(never)]
    pub(super) fn abandon(&mut self, env: Envelope<T>) {
        self.counters.dropped += 1;
        if drop_guarded(env).is_err() {
            self.counters.panicked(PanicSite::Drop);
        }
    }

    /// Delivers one message to every subscriber of its topic, in subscription order,
    /// then drops it. The topic's name must have been learned.
    ///
    /// The drop of the message is user code too: the last subscriber's call runs it under
    /// the same `catch_unwind` as its `handle` ([`Guarded::run_then_drop`]), so a panic in
    /// either is caught at no extra cost per message. After a panic in `handle` the message
    /// is still alive: it is dead-lettered, then dropped (guarded) on that cold path.
    #[inline(always)]
    pub(super) fn dispatch(&mut self, names: &Names, env: Envelope<T>, replay: bool) {
        let mut slot = ManuallyDrop::new(env);
        // The slot is a local that only the guard uses from here on, and never drops.
        // SAFETY: `slot` holds the message, which the guard takes over (as just said).
        let mut env = unsafe { Guarded::new(&mut slot) };
        self.dispatch_guarded(names, &mut env, replay);
    }

    /// [`dispatch`](Self::dispatch) of a message where it lies: `env` owns its drop.
    #[inline(always)]
    pub(super) fn dispatch_guarded(
        &mut self,
        names: &Names,
        env: &mut Guarded<'_, Envelope<T>>,
        replay: bool,
    ) {
        let c = &mut self.counters;
        c.received += 1;
        let start = (c.received % SAMPLE_EVERY == 1).then(std::time::Instant::now);
        let index = env.get().topic;
        let topic = names.key(index);
        match self.subs.get_mut(index as usize) {
            // The lone subscriber, the common case: no loop, nothing to retain.
            Some(subs) if subs.len() == 1 => {
                c.handled += 1;
                let sub = &mut subs[0];
                let sub_id = sub.id;
                let mut ctx = Context {
                    topic,
                    subscription: &sub_id,
                    out: &mut self.out,
                    replay,
                };
                let actor = &mut *sub.actor;
                if let Err(caught) = env.run_then_drop(|env| actor.handle(&mut ctx, &env.msg)) {
                    let (shared, id, where_is) = (&self.shared, self.id, &mut self.where_is);
                    if handle_caught(shared, id, where_is, c, sub, &mut ctx, env, caught, true)
                        == Verdict::Remove
                    {
                        subs.clear();
                    }
                }
            }
            Some(subs) if !subs.is_empty() => {
                c.handled += 1;
                let (out, shared, where_is, id) =
                    (&mut self.out, &self.shared, &mut self.where_is, self.id);
                let last = subs.len() - 1;
                let mut i = 0;
                subs.retain_mut(|sub| {
                    let sub_id = sub.id;
                    let mut ctx = Context {
                        topic,
                        subscription: &sub_id,
                        out: &mut *out,
                        replay,
                    };
                    let is_last = i == last;
                    i += 1;
                    let result = if is_last {
                        // The last subscriber's call drops the message.
                        let actor = &mut *sub.actor;
                        env.run_then_drop(|env| actor.handle(&mut ctx, &env.msg))
                    } else {
                        let msg = &env.get().msg;
                        sub.call(&mut ctx, |a, ctx| a.handle(ctx, msg))
                            .map_err(Caught::Call)
                    };
                    let Err(caught) = result else {
                        return true;
                    };
                    handle_caught(shared, id, where_is, c, sub, &mut ctx, env, caught, is_last)
                        != Verdict::Remove
                });
            }
            _ => {
                c.unrouted += 1;
                c.dead_letters += 1;
                let reason = DeadLetterReason::NoSubscriber;
                dead_letter(&self.shared, self.id, c, topic, env.get(), reason, replay);
                if env.drop_now().is_err() {
                    c.panicked(PanicSite::Drop);
                }
                return;
            }
        }
        if let Some(start) = start {
            let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.shared.counters[self.id.0].record_handler_ns(ns);
        }
    }

    /// Hands a drained message to the handlers if it is in the log (where it lies in the
    /// write-ahead batch: no copy), else to the dead-letter handler.
    /// The topic's name must have been learned.
    pub(super) fn deliver(&mut self, names: &Names, env: Staged<'_, T>, fate: Fate<'_>) {
        match fate {
            Fate::Logged => self.dispatch_guarded(names, &mut env.guard(), false),
            Fate::NotLogged(error) => {
                self.not_logged(names, env.take(), DeadLetterReason::NotLogged { error })
            }
            Fate::TooLarge { size, max } => {
                // No allocation: the variant holds two numbers.
                let error = crate::log::LogError::RecordTooLarge { size, max };
                let reason = DeadLetterReason::NotLogged { error: &error };
                self.not_logged(names, env.take(), reason);
            }
            Fate::NotEncoded(error) => {
                let reason = DeadLetterReason::EncodeFailed { error };
                self.not_logged(names, env.take(), reason);
            }
            Fate::EncodePanicked(panic) => {
                // Counted where it happened, on this thread, in the log's pass.
                self.counters.panicked(PanicSite::Encode);
                let reason = DeadLetterReason::EncodePanicked { panic };
                self.not_logged(names, env.take(), reason);
            }
        }
    }

    /// A drained message that is not in the log: counted and dead-lettered, not handled.
    fn not_logged(&mut self, names: &Names, env: Envelope<T>, reason: DeadLetterReason<'_>) {
        let c = &mut self.counters;
        c.received += 1;
        c.dead_letters += 1;
        let topic = names.key(env.topic);
        dead_letter(&self.shared, self.id, c, topic, &env, reason, false);
        drop_counted(c, env);
    }

    /// Installs a subscription: runs the actor's `on_start` (supervised like a panic in
    /// `handle`). Returns whether it was kept.
    pub(super) fn install(
        &mut self,
        names: &mut Names,
        topic: u32,
        mut sub: Subscriber<T>,
    ) -> bool {
        if names.learn(topic, &self.shared.topics) {
            self.catch_up_patterns(names);
        }
        let sub_id = sub.id;
        let mut ctx = Context {
            topic: names.key(topic),
            subscription: &sub_id,
            out: &mut self.out,
            replay: false,
        };
        if sub.call(&mut ctx, |a, ctx| a.on_start(ctx)).is_err() {
            // An actor that cannot start is supervised like a panic in `handle`.
            self.counters.panicked(PanicSite::OnStart);
            let verdict = sub.after_panic(&mut ctx, &mut self.counters);
            match traced(self.id, ctx.topic, sub.id, verdict) {
                Verdict::Remove => {
                    self.counters.stopped += 1;
                    sub.retire(&mut self.counters);
                    return false;
                }
                Verdict::Restarted => self.counters.restarts += 1,
                Verdict::Keep => {}
            }
        }
        self.where_is.insert(sub.id, topic);
        let index = topic as usize;
        if self.subs.len() <= index {
            self.subs.resize_with(index + 1, Vec::new);
        }
        self.subs[index].push(sub);
        true
    }

    /// Applies a control message. Returns a lane to add to the inputs.
    pub(super) fn control(
        &mut self,
        names: &mut Names,
        control: Control<T>,
    ) -> Option<spsc::Consumer<Envelope<T>>> {
        match control {
            Control::Subscribe { topic, sub, ack } => {
                // The caller waits: it learns whether the actor started.
                let started = self.install(names, topic, sub);
                ack.send(if started { Ack::Ok } else { Ack::NotStarted });
                None
            }
            Control::Unsubscribe { id, ack } => {
                let Some(topic) = self.where_is.remove(&id) else {
                    ack.send(Ack::NotFound);
                    return None;
                };
                let subs = &mut self.subs[topic as usize];
                if let Some(pos) = subs.iter().position(|s| s.id == id) {
                    let mut sub = subs.remove(pos);
                    let mut ctx = Context {
                        topic: names.key(topic),
                        subscription: &id,
                        out: &mut self.out,
                        replay: false,
                    };
                    if sub.call(&mut ctx, |a, ctx| a.on_stop(ctx)).is_err() {
                        self.counters.panicked(PanicSite::OnStop);
                    }
                    sub.retire(&mut self.counters);
                }
                ack.send(Ack::Ok);
                None
            }
            Control::SubscribePattern { sub, ack } => {
                self.subscribe_pattern(names, sub);
                ack.send(Ack::Ok);
                None
            }
            Control::UnsubscribePattern { id, ack } => {
                let found = self.unsubscribe_pattern(names, id);
                ack.send(if found { Ack::Ok } else { Ack::NotFound });
                None
            }
            Control::AddLane(lane) => Some(lane),
            // The lanes were drained up to the control before it was applied (see
            // `Control::is_lane_barrier`), and the shared ring is in order: everything
            // published before the flush has been handled. The counters are published
            // before the answer (otherwise only after the pass, which may go on for long),
            // so that `Bus::stats` read after `flush` counts everything flushed.
            Control::Flush { ack } => {
                self.shared.counters[self.id.0].publish(&self.counters);
                ack.send(Ack::Ok);
                None
            }
        }
    }

    /// Applies the subscription changes handlers asked for on this shard's topics
    /// (`Context::subscribe`, `Context::unsubscribe`), in order. Those that the applied
    /// ones' `on_start`/`on_stop` ask for wait for the next call. One branch when there are
    /// none.
    #[inline]
    pub(super) fn apply_controls(&mut self, names: &mut Names) {
        if !self.out.own_controls.is_empty() {
            self.apply_controls_now(names);
        }
    }

    #[cold]
    fn apply_controls_now(&mut self, names: &mut Names) {
        for control in std::mem::take(&mut self.out.own_controls) {
            // Only subscribe and unsubscribe come from handlers: no lane to add.
            let _ = self.control(names, control);
        }
    }

    /// Runs every actor's `on_stop` (a panic there is caught and counted).
    pub(super) fn stop_all(&mut self, names: &Names) {
        for (index, subs) in self.subs.iter_mut().enumerate() {
            for sub in subs.iter_mut() {
                let sub_id = sub.id;
                let mut ctx = Context {
                    topic: names.key(index as u32),
                    subscription: &sub_id,
                    out: &mut self.out,
                    replay: false,
                };
                if sub.call(&mut ctx, |a, ctx| a.on_stop(ctx)).is_err() {
                    self.counters.panicked(PanicSite::OnStop);
                }
            }
        }
    }

    /// At the shard's exit, after every `on_stop` and the last message: drops every actor
    /// and factory, each `Drop` guarded. (Not in [`stop_all`](Self::stop_all): an actor
    /// whose `on_stop` has run still handles what other actors' `on_stop` publish.)
    pub(super) fn retire_all(&mut self) {
        for sub in self.subs.iter_mut().flatten() {
            sub.retire(&mut self.counters);
        }
        self.patterns.retire(&mut self.counters);
    }
}

/// After a guarded call of a subscriber's `handle` on `env` panicked: in `handle`
/// ([`Caught::Call`]) it counts the panic, sends the message to the dead-letter handler,
/// drops it if this was its `last` call, and applies the subscriber's supervision policy;
/// in the message's `Drop` ([`Caught::Drop`], the message is gone and the handler was fine)
/// it counts the panic.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
pub(super) fn handle_caught<T: 'static>(
    shared: &Shared<T>,
    shard: ShardId,
    where_is: &mut HashMap<SubscriptionId, u32>,
    c: &mut LocalCounters,
    sub: &mut Subscriber<T>,
    ctx: &mut Context<'_, T>,
    env: &mut Guarded<'_, Envelope<T>>,
    caught: Caught,
    last: bool,
) -> Verdict {
    let payload = match caught {
        Caught::Call(payload) => payload,
        Caught::Drop => {
            c.panicked(PanicSite::Drop);
            return Verdict::Keep;
        }
    };
    c.panicked(PanicSite::Handle);
    c.dead_letters += 1;
    let reason = DeadLetterReason::Panicked {
        subscription: sub.id,
        panic: panic_text(&*payload),
    };
    dead_letter(shared, shard, c, ctx.topic, env.get(), reason, ctx.replay);
    if last && env.drop_now().is_err() {
        c.panicked(PanicSite::Drop);
    }
    let verdict = traced(shard, ctx.topic, sub.id, sub.after_panic(ctx, c));
    match verdict {
        Verdict::Keep => {}
        Verdict::Restarted => c.restarts += 1,
        Verdict::Remove => {
            c.stopped += 1;
            where_is.remove(&sub.id);
            sub.retire(c);
        }
    }
    verdict
}

/// Drops `value` (a message the shard owns, off the handlers' path), catching and
/// counting a panic in its `Drop`.
#[inline]
pub(super) fn drop_counted<V>(c: &mut LocalCounters, value: V) {
    if std::mem::needs_drop::<V>() && drop_guarded(value).is_err() {
        c.panicked(PanicSite::Drop);
    }
}

/// Calls the dead-letter handler, if there is one, catching (and counting) its panic.
fn dead_letter<T>(
    shared: &Shared<T>,
    shard: ShardId,
    c: &mut LocalCounters,
    topic: &TopicKey,
    env: &Envelope<T>,
    reason: DeadLetterReason<'_>,
    replay: bool,
) {
    if let Some(f) = &shared.dead_letter {
        let letter = DeadLetter {
            topic: topic.as_str(),
            shard,
            message: &env.msg,
            reason,
            replay,
        };
        // A panicking dead-letter handler must not take the shard down: counted (there is
        // no one else to tell), and the shard goes on.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(letter))).is_err() {
            c.panicked(PanicSite::DeadLetter);
        }
    }
}
