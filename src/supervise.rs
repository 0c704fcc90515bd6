//! Subscriptions as the shard keeps them, and the supervision of their actors.

use std::any::Any;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::handler::{Context, Handler, SubscriptionId, Supervision};
use crate::stats::{LocalCounters, PanicSite};

pub(crate) type Factory<T> = Box<dyn FnMut() -> Box<dyn Handler<T>> + Send>;

/// One subscriber of a topic, owned by its shard thread.
pub(crate) struct Subscriber<T> {
    pub(crate) id: SubscriptionId,
    pub(crate) actor: Box<dyn Handler<T>>,
    pub(crate) factory: Option<Factory<T>>,
    pub(crate) policy: Supervision,
}

/// The actor of a retired subscriber ([`Subscriber::retire`]): a zero-sized box, no
/// allocation.
struct Retired;

impl<T> Handler<T> for Retired {
    fn handle(&mut self, _: &mut Context<'_, T>, _: &T) {}
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

    /// Ends the subscription's user code: drops the actor and the factory now, each
    /// under `catch_unwind` (their `Drop` is user code), counting a panic in `c`. The
    /// subscriber is left with a no-op actor, ready to be dropped itself.
    #[cold]
    pub(crate) fn retire(&mut self, c: &mut LocalCounters) {
        let actor = std::mem::replace(&mut self.actor, Box::new(Retired));
        if drop_guarded(actor).is_err() {
            c.panicked(PanicSite::Drop);
        }
        if let Some(factory) = self.factory.take() {
            if drop_guarded(factory).is_err() {
                c.panicked(PanicSite::Drop);
            }
        }
    }

    /// Applies the supervision policy after a panic. Panics caught on the way (the
    /// replaced actor's `on_stop`, the factory, the new actor's `on_start`, `on_stop`)
    /// are counted in `c`.
    pub(crate) fn after_panic(
        &mut self,
        ctx: &mut Context<'_, T>,
        c: &mut LocalCounters,
    ) -> Verdict {
        match (self.policy, self.factory.as_mut()) {
            (Supervision::Resume, _) | (Supervision::Restart, None) => Verdict::Keep,
            (Supervision::Restart, Some(_)) => {
                // The replaced actor is stopped as the `Stop` policy stops one: its
                // `on_stop` runs (once) before the factory makes the new one, so the two
                // never overlap. A panic there is counted; the restart goes on.
                if self.call(ctx, |a, ctx| a.on_stop(ctx)).is_err() {
                    c.panicked(PanicSite::OnStop);
                }
                let Some(factory) = self.factory.as_mut() else {
                    return Verdict::Keep;
                };
                match catch_unwind(AssertUnwindSafe(&mut *factory)) {
                    Ok(actor) => {
                        // The old actor goes here: its own `Drop` is user code too.
                        let old = std::mem::replace(&mut self.actor, actor);
                        if drop_guarded(old).is_err() {
                            c.panicked(PanicSite::Drop);
                        }
                        if self.call(ctx, |a, ctx| a.on_start(ctx)).is_err() {
                            c.panicked(PanicSite::OnStart);
                            return Verdict::Remove;
                        }
                        Verdict::Restarted
                    }
                    Err(_) => {
                        c.panicked(PanicSite::Factory);
                        Verdict::Remove
                    }
                }
            }
            (Supervision::Stop, _) => {
                if self.call(ctx, |a, ctx| a.on_stop(ctx)).is_err() {
                    c.panicked(PanicSite::OnStop);
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

/// Drops `value` (user code: a message's or an actor's `Drop`), catching a panic. Off
/// the per-message path: the handlers' call covers the drop of a handled message
/// ([`Guarded::run_then_drop`]).
#[cold]
#[inline(never)]
pub(crate) fn drop_guarded<V>(value: V) -> Result<(), Box<dyn Any + Send>> {
    // AssertUnwindSafe: after a panic the value is gone (its drop glue finished
    // unwinding) and nothing else was touched.
    catch_unwind(AssertUnwindSafe(move || drop(value)))
}

/// Where a call under [`Guarded::run_then_drop`] panicked.
pub(crate) enum Caught {
    /// In the call: the value is still alive.
    Call(Box<dyn Any + Send>),
    /// In the value's `Drop`, after the call returned: the value is gone.
    Drop,
}

/// A value the shard uses and then drops under the same `catch_unwind` as the use: the
/// drop of a handled message is guarded by the handler's own call, at the cost of one
/// flag store, not a second `catch_unwind` per message.
///
/// It borrows the value where it lies (a local, or the write-ahead batch's buffer: no
/// copy of the message) and owns its drop. Whoever makes one ends it exactly once, with
/// [`run_then_drop`](Self::run_then_drop) returning anything but [`Caught::Call`], or
/// [`drop_now`](Self::drop_now). One that is dropped alive (only if the shard itself
/// unwinds, a bug) leaks its value rather than risk a double drop.
pub(crate) struct Guarded<'a, V> {
    value: &'a mut ManuallyDrop<V>,
    /// Whether `value` has not been dropped yet. Cleared just before the drop starts.
    live: bool,
}

impl<'a, V> Guarded<'a, V> {
    /// Guards the value in `value`, taking over its drop.
    ///
    /// # Safety
    ///
    /// The value in `value` is alive, and once the guard exists nothing but the guard
    /// reads, moves or drops it (not after the guard either).
    #[inline(always)]
    pub(crate) unsafe fn new(value: &'a mut ManuallyDrop<V>) -> Self {
        Self { value, live: true }
    }

    /// The value, while it is alive.
    #[inline(always)]
    pub(crate) fn get(&self) -> &V {
        debug_assert!(self.live, "a guarded value used after its drop");
        self.value
    }

    /// Runs `f` on the value, then drops the value, under one `catch_unwind`.
    #[inline(always)]
    pub(crate) fn run_then_drop(&mut self, f: impl FnOnce(&V)) -> Result<(), Caught> {
        debug_assert!(self.live, "a guarded value used after its drop");
        let Self { value, live } = self;
        // AssertUnwindSafe: after a panic in `f` the value is untouched by us (the caller
        // dead-letters and drops it); after a panic in its drop it is gone; `live` says
        // which.
        catch_unwind(AssertUnwindSafe(|| {
            f(value);
            *live = false;
            // The `Guarded` owns the value's drop (`new`'s contract). `live` was true (no
            // drop before) and is now false, so neither `drop_now` nor this method runs it
            // again, even if the drop panics part way (its drop glue finishes unwinding the
            // value's fields; the value is gone either way): this is its one drop.
            // SAFETY: by the ownership stated in the lines just above.
            unsafe { ManuallyDrop::drop(*value) }
        }))
        .map_err(|payload| {
            if *live {
                Caught::Call(payload)
            } else {
                Caught::Drop
            }
        })
    }

    /// Drops the value now if it is still alive, catching a panic in its `Drop`.
    #[cold]
    pub(crate) fn drop_now(&mut self) -> Result<(), Box<dyn Any + Send>> {
        if !std::mem::take(&mut self.live) {
            return Ok(());
        }
        // The `Guarded` owns the value's drop (`new`'s contract). `live` was true, so the
        // value is alive; it is now false, so nothing reads or drops the value again: this
        // is its one move out.
        // SAFETY: by the ownership stated in the lines just above.
        let value = unsafe { ManuallyDrop::take(self.value) };
        drop_guarded(value)
    }
}
