//! Keyed publishes from a handler.

use std::hash::Hash;

use super::{Part, PartitionedSubscription};
use crate::error::{Error, PublishError, TryPublishError};
use crate::handler::{Context, Handler, Supervision};
use crate::topic::ToTopic;

impl<T> Context<'_, T> {
    /// [`publish`](Self::publish) to the partition of `key` of a partitioned topic (see
    /// [`Bus::subscribe_partitioned`](crate::Bus::subscribe_partitioned)): never blocks,
    /// queues in the overflow when the target lane is full, gives the message back in each
    /// error. What this handler's shard publishes with one key is handled in order, by one
    /// instance.
    #[inline]
    pub fn publish_keyed(
        &mut self,
        topic: impl ToTopic,
        key: impl Hash,
        msg: T,
    ) -> Result<(), PublishError<T>> {
        let part = Part::of_key(&self.out.shared().topics, &topic, key);
        self.out.publish(part, msg)
    }

    /// [`try_publish`](Self::try_publish) to the partition of `key`: `Full` with the
    /// message back rather than queueing it.
    pub fn try_publish_keyed(
        &mut self,
        topic: impl ToTopic,
        key: impl Hash,
        msg: T,
    ) -> Result<(), TryPublishError<T>> {
        let part = Part::of_key(&self.out.shared().topics, &topic, key);
        self.out.try_publish(part, msg)
    }

    /// The partition of the message being handled, for an instance of a partitioned
    /// subscription; `None` on a plain topic.
    pub fn partition(&self) -> Option<usize> {
        self.topic.part().map(usize::from)
    }
}

impl<T: Send + 'static> Context<'_, T> {
    /// [`Bus::subscribe_partitioned`](crate::Bus::subscribe_partitioned) from a handler,
    /// without waiting: every partition's request is sent at once and takes effect as
    /// [`Context::subscribe`]'s does, on each partition's shard. The instances are made
    /// here, on this thread. Errors: `InvalidTopic` or `InvalidSubject` (before anything is
    /// made or sent); `Closed` (shutdown has begun; partitions already sent are
    /// unsubscribed again).
    pub fn subscribe_partitioned<H, F>(
        &mut self,
        topic: &str,
        policy: Supervision,
        factory: F,
    ) -> Result<PartitionedSubscription, Error>
    where
        H: Handler<T>,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let topics = &self.out.shared().topics;
        super::check_name(topics, topic)?;
        let partitions = topics.router.partitions();
        let mut sub = PartitionedSubscription {
            topic: topic.to_owned(),
            ids: Vec::with_capacity(usize::from(partitions)),
            counters: Vec::with_capacity(usize::from(partitions)),
        };
        for inst in super::instances(partitions, policy, factory) {
            let part = Part::new(topic, inst.part);
            let id = match self
                .out
                .subscribe(&part, inst.actor, inst.factory, inst.policy)
            {
                Ok(id) => id,
                Err(e) => {
                    // Closed midway (shutdown began): take back what was sent, so that no
                    // partition is left without a handle (each also ends with the shutdown).
                    for id in sub.ids.drain(..) {
                        let _ = self.unsubscribe(id);
                    }
                    return Err(e);
                }
            };
            sub.ids.push(id);
            sub.counters.push(inst.counters);
        }
        self.out.shared().partitioned.add(sub.clone());
        Ok(sub)
    }
}
