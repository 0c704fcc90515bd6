//! Pattern subscriptions as they travel to the shards: the parsed pattern, the id, the
//! supervision policy and the factory every shard builds its instances with.
//!
//! Where a pattern's actors run: on each topic's own shard, one instance per matching
//! topic, built by the factory when the shard first learns the topic or the pattern
//! (`shard/patterns.rs`). No hop, no new cross-shard protocol: a message reaches a
//! pattern's instance exactly as it reaches a plain subscriber, so per-topic order,
//! supervision, replay and the hot path are those of a plain subscription.

use crate::handler::SubscriptionId;
use crate::handler::{Handler, Supervision};
use crate::subject::Pattern;
use crate::supervise::Factory;
use crate::sync::plain::{Arc, Mutex, PoisonError};

/// The `shard` field of a pattern subscription's [`SubscriptionId`]: a pattern lives on
/// every shard, so its id names none.
pub(crate) const PATTERN_SHARD: u32 = u32::MAX;

/// A pattern's factory, shared by every shard that builds instances with it. Called only
/// when an instance is made (a shard's first sight of a matching topic, a restart): the
/// lock is never taken per message.
pub(crate) type SharedFactory<T> = Arc<Mutex<dyn FnMut() -> Box<dyn Handler<T>> + Send>>;

/// A builder's pattern subscription before `build()`: the pattern as given, the policy,
/// the shared factory.
pub(crate) type PrePattern<T> = (String, Supervision, SharedFactory<T>);

/// One pattern subscription, as each shard receives it.
pub(crate) struct PatternSub<T> {
    pub(crate) id: SubscriptionId,
    pub(crate) pattern: Arc<Pattern>,
    pub(crate) policy: Supervision,
    pub(crate) factory: SharedFactory<T>,
}

impl<T> Clone for PatternSub<T> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            pattern: self.pattern.clone(),
            policy: self.policy,
            factory: self.factory.clone(),
        }
    }
}

/// Wraps a user's factory for sharing between the shards.
pub(crate) fn shared_factory<T: 'static, H, F>(mut factory: F) -> SharedFactory<T>
where
    H: Handler<T>,
    F: FnMut() -> H + Send + 'static,
{
    Arc::new(Mutex::new(move || {
        Box::new(factory()) as Box<dyn Handler<T>>
    }))
}

impl<T: 'static> PatternSub<T> {
    /// Makes one instance (the caller guards the call: the factory is user code).
    pub(crate) fn make(&self) -> Box<dyn Handler<T>> {
        let mut factory = self.factory.lock().unwrap_or_else(PoisonError::into_inner);
        (*factory)()
    }

    /// The per-instance factory a restart calls: the shared one.
    pub(crate) fn instance_factory(&self) -> Factory<T> {
        let shared = self.factory.clone();
        Box::new(move || {
            let mut factory = shared.lock().unwrap_or_else(PoisonError::into_inner);
            (*factory)()
        })
    }
}

/// Whether `id` names a pattern subscription.
pub(crate) fn is_pattern(id: SubscriptionId) -> bool {
    id.shard == PATTERN_SHARD
}
