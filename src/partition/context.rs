//! Keyed publishes from a handler.

use std::hash::Hash;

use super::Part;
use crate::error::{PublishError, TryPublishError};
use crate::handler::Context;
use crate::topic::ToTopic;

impl<T> Context<'_, T> {
    /// [`publish`](Self::publish) to the partition of `key` of a partitioned topic (see
    /// [`Bus::subscribe_partitioned`](crate::Bus::subscribe_partitioned)): never blocks,
    /// queues in the overflow when the target lane is full, gives the message back in each
    /// error. What this handler's shard publishes with one key is handled in order, by one
    /// instance.
    pub fn publish_keyed(
        &mut self,
        topic: impl ToTopic,
        key: impl Hash,
        msg: T,
    ) -> Result<(), PublishError<T>> {
        let part = Part::of_key(self.out.topics(), &topic, key);
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
        let part = Part::of_key(self.out.topics(), &topic, key);
        self.out.try_publish(part, msg)
    }

    /// The partition of the message being handled, for an instance of a partitioned
    /// subscription; `None` on a plain topic.
    pub fn partition(&self) -> Option<usize> {
        self.topic.part().map(usize::from)
    }
}
