//! Pattern subscriptions on the bus: `*` / `>` subjects (see [`Pattern`](crate::Pattern)).

use super::*;
use crate::pattern::{shared_factory, PatternSub, PrePattern, PATTERN_SHARD};
use crate::shard::Startup;
use crate::subject::Pattern;
use crate::Builder;

/// Pattern subscriptions before the bus starts.
impl<T: Send + 'static> Builder<T> {
    /// Subscribes a pattern before the bus starts; mirrors
    /// [`Bus::subscribe_pattern`]: every topic that matches, on its own shard, gets an
    /// actor from `factory`. Installed on every shard after the plain builder
    /// subscriptions and before the log's replay, so on a persistent bus replayed records
    /// of matching topics reach the pattern's actors. An invalid pattern makes `build()`
    /// fail with [`Error::InvalidSubject`]. The ids come last in
    /// [`Bus::initial_subscriptions`], after the plain ones, in the order made.
    pub fn subscribe_pattern<H, F>(mut self, pattern: &str, policy: Supervision, factory: F) -> Self
    where
        H: Handler<T>,
        F: FnMut() -> H + Send + 'static,
    {
        let factory = crate::pattern::shared_factory(factory);
        self.pattern_subs
            .push((pattern.to_owned(), policy, factory));
        self
    }
}

/// `build()`'s part for the builder's patterns: parses each (an invalid one fails the
/// build), gives it the next id after the plain subscriptions' (`initial`), and hands it to
/// every shard's start-up, installed there before the replay.
pub(crate) fn pre_patterns<T>(
    pre: Vec<PrePattern<T>>,
    bus: u64,
    initial: &mut Vec<SubscriptionId>,
    startups: &mut [Startup<T>],
) -> Result<(), Error> {
    for (pattern, policy, factory) in pre {
        let parsed = Pattern::parse(&pattern).map_err(|reason| Error::InvalidSubject {
            name: pattern.clone(),
            reason,
        })?;
        let id = SubscriptionId {
            bus,
            shard: PATTERN_SHARD,
            serial: initial.len() as u64,
        };
        initial.push(id);
        let sub = PatternSub {
            id,
            pattern: crate::sync::plain::Arc::new(parsed),
            policy,
            factory,
        };
        for startup in startups.iter_mut() {
            startup.patterns.push(sub.clone());
        }
    }
    Ok(())
}

/// Pattern subscriptions.
impl<T: Send + 'static> Bus<T> {
    /// Subscribes to every topic whose name matches `pattern` (NATS syntax: `.`-separated
    /// tokens, `*` matches exactly one token, a final `>` one or more trailing tokens):
    /// the topics that already exist and every topic first published later. Returns once
    /// every shard has installed the pattern: every message published after that to a
    /// matching topic reaches it (and, as for [`subscribe`](Self::subscribe), none whose
    /// publish returned before the call).
    ///
    /// **Where the actors run.** On each topic's own shard, one actor per matching topic,
    /// made by `factory` when the shard first meets the topic (or, for topics it already
    /// knows, when the pattern arrives), and supervised by `policy` as
    /// [`subscribe_supervised`](Self::subscribe_supervised) supervises one actor. A
    /// message reaches a pattern's actor as it reaches any subscriber of its topic: no
    /// hop between shards, per-topic order as for a plain subscription, and nothing added
    /// per message (matching runs once per shard and topic, never per message). The
    /// actors of one pattern share no state unless the factory gives them some (an `Arc`
    /// it captures), or they publish onward to one topic of their own (one actor with one
    /// state, a hop through the shard-to-shard lanes, per-topic order kept).
    /// [`Context::topic`] says which topic an actor serves; its
    /// [`Context::subscription`] is that actor's own id.
    ///
    /// `factory` runs on the shard threads (under a lock: one call at a time), and again
    /// for a restart. A panic in it is counted
    /// ([`PanicSites::factory`](crate::PanicSites)) and leaves that topic without an
    /// actor of this pattern.
    ///
    /// [`unsubscribe`](Self::unsubscribe) with the returned id removes the pattern from
    /// every shard, with all its actors (each one's `on_stop` runs). A pattern is never
    /// a publish target: a name with a wildcard token is refused on every publish form.
    ///
    /// Errors: [`Error::InvalidSubject`] for a pattern with an empty token, whitespace or
    /// a `>` before its last token; [`Error::Closed`] once shutdown has begun; from a
    /// handler on one of this bus's shard threads, [`Error::WouldDeadlock`] (use
    /// [`Context::subscribe_pattern`]).
    ///
    /// ```
    /// use shardbus::{Bus, Context, Supervision};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::<u64>::builder().shards(2).build()?;
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let counter = seen.clone();
    /// let id = bus.subscribe_pattern("orders.>", Supervision::Resume, move || {
    ///     let seen = counter.clone();
    ///     move |_: &mut Context<'_, u64>, _: &u64| {
    ///         seen.fetch_add(1, Ordering::Relaxed);
    ///     }
    /// })?;
    /// bus.publish("orders.eu.created", 1)?;
    /// bus.publish("orders.us.paid", 2)?;
    /// bus.publish("billing.eu", 3)?; // no match: dead-lettered (no subscriber)
    /// assert!(bus.publish("orders.*", 4).is_err()); // never a publish target
    /// bus.flush()?;
    /// assert_eq!(seen.load(Ordering::Relaxed), 2);
    /// bus.unsubscribe(id)?;
    /// # Ok(()) }
    /// ```
    pub fn subscribe_pattern<H, F>(
        &self,
        pattern: &str,
        policy: Supervision,
        factory: F,
    ) -> Result<SubscriptionId, Error>
    where
        H: Handler<T>,
        F: FnMut() -> H + Send + 'static,
    {
        let parsed = Pattern::parse(pattern).map_err(|reason| Error::InvalidSubject {
            name: pattern.to_owned(),
            reason,
        })?;
        if current::is_shard_of(self.id) {
            return Err(Error::WouldDeadlock);
        }
        let id = SubscriptionId {
            bus: self.id,
            shard: PATTERN_SHARD,
            serial: self.shared.next_serial(),
        };
        let sub = PatternSub {
            id,
            pattern: crate::sync::plain::Arc::new(parsed),
            policy,
            factory: shared_factory(factory),
        };
        // Every shard at once, then every answer: the shards install it in parallel.
        let mut waits = Vec::with_capacity(self.shared.inboxes.len());
        for inbox in self.shared.inboxes.iter() {
            let (ack, done) = ack_pair();
            let control = Control::SubscribePattern {
                sub: sub.clone(),
                ack,
            };
            push_control(self.id, inbox, control).map_err(control_error)?;
            waits.push(done);
        }
        for done in waits {
            done.wait().map_err(|_| Error::Closed)?;
        }
        Ok(id)
    }
}

impl<T> Bus<T> {
    /// [`unsubscribe`](Self::unsubscribe) of a pattern: every shard removes it and its
    /// actors. `UnknownSubscription` if no shard held it.
    pub(super) fn unsubscribe_pattern(&self, id: SubscriptionId) -> Result<(), Error> {
        if current::is_shard_of(self.id) {
            return Err(Error::WouldDeadlock);
        }
        let mut waits = Vec::with_capacity(self.shared.inboxes.len());
        for inbox in self.shared.inboxes.iter() {
            let (ack, done) = ack_pair();
            push_control(self.id, inbox, Control::UnsubscribePattern { id, ack })
                .map_err(control_error)?;
            waits.push(done);
        }
        let mut found = false;
        for done in waits {
            match done.wait() {
                Ok(()) => found = true,
                Err(AckError::NotFound) => {}
                Err(_) => return Err(Error::Closed),
            }
        }
        if found {
            Ok(())
        } else {
            Err(Error::UnknownSubscription(id))
        }
    }
}
