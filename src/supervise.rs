//! Subscriptions as the shard keeps them, and the supervision of their actors.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::handler::{Context, Handler, SubscriptionId, Supervision};

pub(crate) type Factory<T> = Box<dyn FnMut() -> Box<dyn Handler<T>> + Send>;

/// One subscriber of a topic, owned by its shard thread.
pub(crate) struct Subscriber<T> {
    pub(crate) id: SubscriptionId,
    pub(crate) actor: Box<dyn Handler<T>>,
    pub(crate) factory: Option<Factory<T>>,
    pub(crate) policy: Supervision,
}

/// What the shard must do with a subscriber after a call.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Keep,
    Restarted,
    Remove,
}

/// The text of a panic payload.
pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "<non-string panic payload>"
    }
}

impl<T: 'static> Subscriber<T> {
    /// Runs `f` on the actor, catching a panic. `Err` carries the payload.
    pub(crate) fn call(
        &mut self,
        ctx: &mut Context<'_, T>,
        f: impl FnOnce(&mut dyn Handler<T>, &mut Context<'_, T>),
    ) -> Result<(), Box<dyn Any + Send>> {
        let actor = &mut *self.actor;
        // AssertUnwindSafe: after a panic the actor is either dropped (Restart, Stop) or
        // kept by the user's explicit choice (Resume); the shard's own state is not
        // touched inside `f`.
        catch_unwind(AssertUnwindSafe(|| f(actor, ctx)))
    }

    /// Applies the supervision policy after a panic. Panics caught on the way (the
    /// replaced actor's `on_stop`, the factory, the new actor's `on_start`, `on_stop`)
    /// are added to `panics`.
    pub(crate) fn after_panic(&mut self, ctx: &mut Context<'_, T>, panics: &mut u64) -> Verdict {
        match (self.policy, self.factory.as_mut()) {
            (Supervision::Resume, _) | (Supervision::Restart, None) => Verdict::Keep,
            (Supervision::Restart, Some(_)) => {
                // The replaced actor is stopped as the `Stop` policy stops one: its
                // `on_stop` runs (once) before the factory makes the new one, so the two
                // never overlap. A panic there is counted; the restart goes on.
                if self.call(ctx, |a, ctx| a.on_stop(ctx)).is_err() {
                    *panics += 1;
                }
                let Some(factory) = self.factory.as_mut() else {
                    return Verdict::Keep;
                };
                match catch_unwind(AssertUnwindSafe(&mut *factory)) {
                    Ok(actor) => {
                        self.actor = actor;
                        if self.call(ctx, |a, ctx| a.on_start(ctx)).is_err() {
                            *panics += 1;
                            return Verdict::Remove;
                        }
                        Verdict::Restarted
                    }
                    Err(_) => {
                        *panics += 1;
                        Verdict::Remove
                    }
                }
            }
            (Supervision::Stop, _) => {
                if self.call(ctx, |a, ctx| a.on_stop(ctx)).is_err() {
                    *panics += 1;
                }
                Verdict::Remove
            }
        }
    }
}

/// Says in a `tracing` event what supervision did after a panic (a restart or a stop; a
/// resumed actor is only counted), and hands the verdict on. Rare: never per message
/// unless an actor panics on every message, and then the panic hook speaks too.
pub(crate) fn traced(
    shard: crate::route::ShardId,
    topic: &crate::route::TopicKey,
    subscription: SubscriptionId,
    verdict: Verdict,
) -> Verdict {
    match verdict {
        Verdict::Keep => {}
        Verdict::Restarted => tracing::info!(
            shard = shard.0,
            topic = topic.as_str(),
            subscription = ?subscription,
            "actor restarted after a panic (Supervision::Restart)"
        ),
        Verdict::Remove => tracing::warn!(
            shard = shard.0,
            topic = topic.as_str(),
            subscription = ?subscription,
            "subscription stopped after a panic"
        ),
    }
    verdict
}
