//! Dispatch: the shard's actors, the names of its topics, supervision of a panicking
//! handler and the dead-letter hand-off.

use std::collections::HashMap;

use super::*;
use crate::shutdown::ShutdownFlags;

/// The names of the shard's topics, by index (see `intern`): learned from the bus's
/// registry the first time an index beyond the table reaches the shard.
pub(crate) struct Names {
    pub(super) shard: ShardId,
    pub(super) keys: Vec<TopicKey>,
}

impl Names {
    /// Makes sure `index` has its name. One compare when it has.
    #[inline]
    pub(super) fn learn(&mut self, index: u32, topics: &Topics) {
        if index as usize >= self.keys.len() {
            self.learn_from(topics);
        }
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
}

impl<T: Send + 'static> Actors<T> {
    /// Learns the message's topic name if new, then dispatches it.
    #[inline(always)]
    pub(super) fn learn_and_dispatch(&mut self, names: &mut Names, env: Envelope<T>, replay: bool) {
        names.learn(env.topic, &self.shared.topics);
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

    /// A message the forced stop leaves unhandled: dropped here, counted.
    #[cold]
    #[inline(never)]
    fn abandon(&mut self, env: Envelope<T>) {
        self.counters.dropped += 1;
        drop(env);
    }

    /// Delivers one message to every subscriber of its topic, in subscription order.
    /// The topic's name must have been learned.
    #[inline(always)]
    pub(super) fn dispatch(&mut self, names: &Names, env: Envelope<T>, replay: bool) {
        let c = &mut self.counters;
        c.received += 1;
        let start = (c.received % SAMPLE_EVERY == 1).then(std::time::Instant::now);
        let topic = names.key(env.topic);
        match self.subs.get_mut(env.topic as usize) {
            // The lone subscriber, the common case: no loop, nothing to retain.
            Some(subs) if subs.len() == 1 => {
                c.handled += 1;
                let sub = &mut subs[0];
                let mut ctx = Context {
                    topic,
                    subscription: sub.id,
                    out: &mut self.out,
                    replay,
                };
                if let Err(payload) = sub.call(&mut ctx, |a, ctx| a.handle(ctx, &env.msg)) {
                    let (shared, id, where_is) = (&self.shared, self.id, &mut self.where_is);
                    if supervise_panic(shared, id, where_is, c, sub, &mut ctx, &env, &*payload)
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
                subs.retain_mut(|sub| {
                    let mut ctx = Context {
                        topic,
                        subscription: sub.id,
                        out: &mut *out,
                        replay,
                    };
                    let Err(payload) = sub.call(&mut ctx, |a, ctx| a.handle(ctx, &env.msg)) else {
                        return true;
                    };
                    supervise_panic(shared, id, where_is, c, sub, &mut ctx, &env, &*payload)
                        != Verdict::Remove
                });
            }
            _ => {
                c.unrouted += 1;
                c.dead_letters += 1;
                let reason = DeadLetterReason::NoSubscriber;
                dead_letter(&self.shared, self.id, topic, &env, reason, replay);
                return;
            }
        }
        if let Some(start) = start {
            let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.shared.counters[self.id.0].record_handler_ns(ns);
        }
    }

    /// Hands a drained message to the handlers if it is in the log, else to the
    /// dead-letter handler.
    /// The topic's name must have been learned.
    pub(super) fn deliver(&mut self, names: &Names, env: Envelope<T>, fate: Fate<'_>) {
        match fate {
            Fate::Logged => self.dispatch(names, env, false),
            Fate::NotLogged(error) => {
                self.not_logged(names, env, DeadLetterReason::NotLogged { error })
            }
            Fate::NotEncoded(error) => {
                self.not_logged(names, env, DeadLetterReason::EncodeFailed { error });
            }
        }
    }

    /// A drained message that is not in the log: counted and dead-lettered, not handled.
    fn not_logged(&mut self, names: &Names, env: Envelope<T>, reason: DeadLetterReason<'_>) {
        self.counters.received += 1;
        self.counters.dead_letters += 1;
        let topic = names.key(env.topic);
        dead_letter(&self.shared, self.id, topic, &env, reason, false);
    }

    /// Installs a subscription: runs the actor's `on_start` (supervised like a panic in
    /// `handle`). Returns whether it was kept.
    pub(super) fn install(
        &mut self,
        names: &mut Names,
        topic: u32,
        mut sub: Subscriber<T>,
    ) -> bool {
        names.learn(topic, &self.shared.topics);
        let mut ctx = Context {
            topic: names.key(topic),
            subscription: sub.id,
            out: &mut self.out,
            replay: false,
        };
        if sub.call(&mut ctx, |a, ctx| a.on_start(ctx)).is_err() {
            // An actor that cannot start is supervised like a panic in `handle`.
            self.counters.panics += 1;
            match sub.after_panic(&mut ctx, &mut self.counters.panics) {
                Verdict::Remove => {
                    self.counters.stopped += 1;
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
                self.install(names, topic, sub);
                ack.send(Ack::Ok);
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
                        subscription: id,
                        out: &mut self.out,
                        replay: false,
                    };
                    if sub.call(&mut ctx, |a, ctx| a.on_stop(ctx)).is_err() {
                        self.counters.panics += 1;
                    }
                }
                ack.send(Ack::Ok);
                None
            }
            Control::AddLane(lane) => Some(lane),
        }
    }

    /// Runs every actor's `on_stop`.
    pub(super) fn stop_all(&mut self, names: &Names) {
        for (index, subs) in self.subs.iter_mut().enumerate() {
            for sub in subs.iter_mut() {
                let mut ctx = Context {
                    topic: names.key(index as u32),
                    subscription: sub.id,
                    out: &mut self.out,
                    replay: false,
                };
                if sub.call(&mut ctx, |a, ctx| a.on_stop(ctx)).is_err() {
                    self.counters.panics += 1;
                }
            }
        }
    }
}

/// After a handler panicked on `env`: counts it, sends the message to the dead-letter
/// handler and applies the subscriber's supervision policy.
#[cold]
#[allow(clippy::too_many_arguments)]
fn supervise_panic<T: 'static>(
    shared: &Shared<T>,
    shard: ShardId,
    where_is: &mut HashMap<SubscriptionId, u32>,
    c: &mut LocalCounters,
    sub: &mut Subscriber<T>,
    ctx: &mut Context<'_, T>,
    env: &Envelope<T>,
    payload: &(dyn std::any::Any + Send),
) -> Verdict {
    c.panics += 1;
    c.dead_letters += 1;
    let reason = DeadLetterReason::Panicked {
        subscription: sub.id,
        panic: panic_text(payload),
    };
    dead_letter(shared, shard, ctx.topic, env, reason, ctx.replay);
    let verdict = sub.after_panic(ctx, &mut c.panics);
    match verdict {
        Verdict::Keep => {}
        Verdict::Restarted => c.restarts += 1,
        Verdict::Remove => {
            c.stopped += 1;
            where_is.remove(&sub.id);
        }
    }
    verdict
}

fn dead_letter<T>(
    shared: &Shared<T>,
    shard: ShardId,
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
        // A panicking dead-letter handler must not take the shard down; the panic hook
        // has already reported it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(letter)));
    }
}
