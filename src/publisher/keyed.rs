//! Keyed publishes through a [`Publisher`]'s own lanes (see [`crate::partition`]).

use std::hash::Hash;

use super::{blocking_error, Publisher};
use crate::error::{DurableError, PublishError, TryPublishError};
use crate::partition::Part;
use crate::topic::sealed::ToTopicPriv;
use crate::topic::ToTopic;

impl<T> Publisher<T> {
    /// Publishes `msg` to the partition of `key` of a partitioned topic (see
    /// [`Bus::subscribe_partitioned`](crate::Bus::subscribe_partitioned)): as
    /// [`publish`](Self::publish), with the same errors and the message back in each.
    /// Messages this publisher publishes with one key are handled in publish order, by
    /// one instance. The key is hashed once; after this publisher's first publish to the
    /// partition, nothing is locked or allocated.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use shardbus::{Bus, Context, Supervision};
    /// let bus = Bus::<u64>::builder().shards(2).build()?;
    /// bus.subscribe_partitioned("ticks", Supervision::Resume, |_| {
    ///     |_: &mut Context<'_, u64>, _: &u64| {}
    /// })?;
    /// let mut publisher = bus.publisher();
    /// for i in 0..1000u64 {
    ///     publisher.publish_keyed("ticks", i % 10, i)?;
    /// }
    /// assert_eq!(bus.shutdown().handled(), 1000);
    /// # Ok(()) }
    /// ```
    // `publish`'s body rather than a call of it, so that the whole inlines into the
    // caller as `publish` does: a call of its own here cost more than the key's hash
    // (saving and restoring registers, the result through memory).
    #[inline(always)]
    pub fn publish_keyed(
        &mut self,
        topic: impl ToTopic,
        key: impl Hash,
        msg: T,
    ) -> Result<(), PublishError<T>> {
        let topics = &self.shared.topics;
        let Some(id) = Part::of_key(topics, &topic, key).id_in(topics, Some(&mut self.cache))
        else {
            return Err(PublishError::InvalidTopic(msg));
        };
        if !self.shared.gate_is_clear() {
            return self.publish_gated(id, msg);
        }
        self.push_waiting(id, msg).map_err(blocking_error)
    }

    /// [`try_publish`](Self::try_publish) to the partition of `key`: never blocks; `Full`
    /// or `Closed` with the message back.
    pub fn try_publish_keyed(
        &mut self,
        topic: impl ToTopic,
        key: impl Hash,
        msg: T,
    ) -> Result<(), TryPublishError<T>> {
        let part = Part::of_key(&self.shared.topics, &topic, key);
        self.try_publish(part, msg)
    }

    /// [`publish_batch`](Self::publish_batch) of messages that share one key: all go to
    /// the key's partition, in order, with the same errors (what was not accepted stays in
    /// `batch`).
    pub fn publish_batch_keyed(
        &mut self,
        topic: impl ToTopic,
        key: impl Hash,
        batch: &mut Vec<T>,
    ) -> Result<(), PublishError<()>> {
        let part = Part::of_key(&self.shared.topics, &topic, key);
        self.publish_batch(part, batch)
    }

    /// [`publish_durable`](Self::publish_durable) to the partition of `key`: the record
    /// names its partition, so a replay, also after a shard-count change, keeps per-key
    /// order.
    pub fn publish_durable_keyed(
        &mut self,
        topic: impl ToTopic,
        key: impl Hash,
        msg: T,
    ) -> Result<(), DurableError<T>> {
        let part = Part::of_key(&self.shared.topics, &topic, key);
        self.publish_durable(part, msg)
    }
}

impl<T> Publisher<T> {
    /// [`publish_async`](Self::publish_async) to the partition of `key`.
    ///
    /// # Cancel safety
    ///
    /// As [`publish_async`](Self::publish_async): dropped before it completes, the future
    /// drops its message, which was never published.
    pub async fn publish_keyed_async(
        &mut self,
        topic: impl ToTopic,
        key: impl Hash,
        msg: T,
    ) -> Result<(), PublishError<T>> {
        let part = self.shared.topics.router.part_of(key);
        self.publish_async(Part::new(&topic, part), msg).await
    }

    /// [`publish_durable_async`](Self::publish_durable_async) to the partition of `key`.
    ///
    /// # Cancel safety
    ///
    /// As [`publish_durable_async`](Self::publish_durable_async).
    pub async fn publish_durable_keyed_async(
        &mut self,
        topic: impl ToTopic,
        key: impl Hash,
        msg: T,
    ) -> Result<(), DurableError<T>> {
        let part = self.shared.topics.router.part_of(key);
        self.publish_durable_async(Part::new(&topic, part), msg)
            .await
    }
}
