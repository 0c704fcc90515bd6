//! Keyed partitions on the bus handle: partitioned subscriptions and the keyed publishes
//! (see [`crate::partition`]).

use std::hash::Hash;

use super::Bus;
use crate::error::{DurableError, Error, PublishError, TryPublishError};
use crate::handler::{Handler, Supervision};
use crate::partition::{self, Part, PartitionedSubscription, PartitionedTopic};
use crate::route::ShardId;
use crate::topic::ToTopic;

impl<T: Send + 'static> Bus<T> {
    /// The number of partitions of every partitioned topic of this bus
    /// ([`Builder::partitions`](crate::Builder::partitions)).
    pub fn partitions(&self) -> usize {
        usize::from(self.shared.topics.router.partitions())
    }

    /// The partition a key's messages go to: the key's hash reduced onto
    /// `0..partitions()` by multiply-shift, `(hash as u128 * partitions as u128) >> 64`.
    ///
    /// The hash takes what the key's `Hash` impl writes: each integer (of any width, as
    /// integers, `char`, `bool` and the integer fields of a derived `Hash` write) is
    /// mixed in as `h = (h.rotate_left(5) ^ n) * 0x9E37_79B9_7F4A_7C15` from `h = 0`, and
    /// each byte slice (`str`, `String`, `[u8]`) is first hashed with the routing ahash
    /// (fixed keys) and mixed in the same way. An integer key's partition is thus the top
    /// of `key * 0x9E37_79B9_7F4A_7C15` (Fibonacci hashing): two multiplies, sequential
    /// keys spread evenly, and the same in every build; a key with bytes in it is the
    /// same in every process of one build.
    ///
    /// ```
    /// # fn main() -> Result<(), shardbus::Error> {
    /// let bus = shardbus::Bus::<u64>::builder().shards(2).build()?;
    /// assert_eq!(bus.partitions(), 64);
    /// assert_eq!(bus.partition_of(1u64), 39); // (0x9E37_79B9_7F4A_7C15 * 64) >> 64
    /// assert_eq!(bus.partition_of(1u32), 39); // every integer width alike
    /// # bus.shutdown(); Ok(()) }
    /// ```
    pub fn partition_of(&self, key: impl Hash) -> usize {
        usize::from(self.shared.topics.router.part_of(key))
    }

    /// The shard partition `partition` of every partitioned topic lives on:
    /// `partition * shards / partitions`. `None` for a partition out of range.
    pub fn shard_of_partition(&self, partition: usize) -> Option<ShardId> {
        let router = &self.shared.topics.router;
        let part = u16::try_from(partition)
            .ok()
            .filter(|&p| p < router.partitions())?;
        Some(router.shard_of_part(part))
    }

    /// Resolves a partitioned topic once: every partition's shard and table index, for
    /// keyed publishes that hash only their key (see [`PartitionedTopic`]). Interns every
    /// partition the first time (the registry's lock); keep the handle. `InvalidTopic` for
    /// a name that is empty or longer than
    /// [`MAX_PARTITIONED_TOPIC_LEN`](crate::MAX_PARTITIONED_TOPIC_LEN).
    pub fn partitioned_topic(&self, name: &str) -> Result<PartitionedTopic, Error> {
        let topics = &self.shared.topics;
        let key = partition::check_name(topics, name)?;
        let ids = (0..topics.router.partitions())
            .map(|p| Ok(topics.intern(&partition::part_key(&key, p)?)))
            .collect::<Result<_, Error>>()?;
        Ok(PartitionedTopic {
            key,
            bus: topics.bus,
            ids,
        })
    }

    /// Subscribes a partitioned topic: `factory` builds one actor instance per partition
    /// (it is called with the partition's number, `0..partitions()`), and each instance
    /// receives the messages published to the topic with a key of its partition
    /// ([`publish_keyed`](Self::publish_keyed) and its kin), on the partition's shard, in
    /// publish order per key. Each instance is supervised on its own by `policy`: a
    /// `Restart` replaces only the instance that panicked (from the same factory, with its
    /// partition's number), a `Stop` ends only that partition's subscription (its keys' later
    /// messages then go to the dead-letter handler, `NoSubscriber`). Returns once every
    /// instance is installed.
    ///
    /// A partitioned topic and a plain topic of the same name are separate: keyed
    /// publishes reach only the partitioned subscriptions (and the pattern subscriptions
    /// whose pattern matches the name: a pattern's actor is made for each partition),
    /// plain publishes only the plain ones. A topic may have several partitioned subscriptions (each gets every keyed
    /// message, as plain subscriptions do).
    ///
    /// Errors: `InvalidTopic` for a name too long or empty, `InvalidSubject` for one that
    /// is not a plain subject (both before any instance is made); `NotStarted` if an instance's `on_start`
    /// panicked and its policy ended it (the instances installed before it are
    /// unsubscribed again); `WouldDeadlock` from a handler of this bus; `Closed`.
    ///
    /// ```
    /// use shardbus::{Bus, Context, Supervision};
    /// use std::collections::HashMap;
    ///
    /// # fn main() -> Result<(), shardbus::Error> {
    /// let bus = Bus::<(u32, u64)>::builder().shards(2).build()?;
    /// let orders = bus.subscribe_partitioned("orders", Supervision::Restart, |_partition| {
    ///     let mut totals = HashMap::<u32, u64>::new();
    ///     move |_: &mut Context<'_, (u32, u64)>, &(customer, amount): &(u32, u64)| {
    ///         *totals.entry(customer).or_default() += amount;
    ///     }
    /// })?;
    /// for i in 0..100u64 {
    ///     let customer = (i % 7) as u32;
    ///     bus.publish_keyed("orders", customer, (customer, i)).unwrap();
    /// }
    /// bus.flush()?;
    /// let handled: u64 = orders.stats().iter().map(|p| p.handled).sum();
    /// assert_eq!(handled, 100);
    /// # bus.shutdown(); Ok(()) }
    /// ```
    pub fn subscribe_partitioned<H, F>(
        &self,
        topic: &str,
        policy: Supervision,
        factory: F,
    ) -> Result<PartitionedSubscription, Error>
    where
        H: Handler<T>,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        partition::check_name(&self.shared.topics, topic)?;
        let partitions = self.shared.topics.router.partitions();
        let mut sub = PartitionedSubscription {
            topic: topic.to_owned(),
            ids: Vec::with_capacity(usize::from(partitions)),
            counters: Vec::with_capacity(usize::from(partitions)),
        };
        for inst in partition::instances(partitions, policy, factory) {
            let part = Part::new(topic, inst.part);
            match self.install(&part, inst.actor, inst.factory, inst.policy) {
                Ok(id) => {
                    sub.ids.push(id);
                    sub.counters.push(inst.counters);
                }
                Err(e) => {
                    for &id in &sub.ids {
                        // Best effort: the bus may be closing, which ends them anyway.
                        let _ = self.unsubscribe(id);
                    }
                    return Err(e);
                }
            }
        }
        self.shared.partitioned.add(sub.clone());
        Ok(sub)
    }

    /// Ends every partition's subscription of `sub` (each instance's `on_stop` runs on its
    /// shard). Partitions that had already ended (a `Stop` policy after a panic) are
    /// skipped. Returns once done; the errors of [`unsubscribe`](Self::unsubscribe)
    /// otherwise.
    pub fn unsubscribe_partitioned(&self, sub: &PartitionedSubscription) -> Result<(), Error> {
        let mut result = Ok(());
        for &id in &sub.ids {
            match self.unsubscribe(id) {
                Ok(()) | Err(Error::UnknownSubscription(_)) => {}
                Err(e) => result = Err(e),
            }
        }
        if let (Ok(()), Some(&first)) = (&result, sub.ids.first()) {
            self.shared.partitioned.remove(first);
        }
        result
    }

    /// Every partitioned subscription of this bus (the builder's and later ones) that has
    /// not been ended with [`unsubscribe_partitioned`](Self::unsubscribe_partitioned):
    /// their per-partition counters are in [`PartitionedSubscription::stats`].
    pub fn partitioned(&self) -> Vec<PartitionedSubscription> {
        self.shared.partitioned.list()
    }

    /// Publishes `msg` to the partition of `key` of a partitioned topic (see
    /// [`subscribe_partitioned`](Self::subscribe_partitioned)): as
    /// [`publish`](Self::publish), with the same errors and the message back in each.
    /// Messages one thread publishes with one key are handled in order, by one instance.
    /// The key is hashed once; nothing is locked or allocated once the calling thread
    /// has seen the partition.
    #[inline]
    pub fn publish_keyed(
        &self,
        topic: impl ToTopic,
        key: impl Hash,
        msg: T,
    ) -> Result<(), PublishError<T>> {
        self.publish(Part::of_key(&self.shared.topics, &topic, key), msg)
    }

    /// [`try_publish`](Self::try_publish) to the partition of `key`: never blocks; `Full`
    /// or `Closed` with the message back.
    pub fn try_publish_keyed(
        &self,
        topic: impl ToTopic,
        key: impl Hash,
        msg: T,
    ) -> Result<(), TryPublishError<T>> {
        self.try_publish(Part::of_key(&self.shared.topics, &topic, key), msg)
    }

    /// [`publish_durable`](Self::publish_durable) to the partition of `key`: the record
    /// names its partition, so a replay, also after a shard-count change, keeps per-key
    /// order.
    pub fn publish_durable_keyed(
        &self,
        topic: impl ToTopic,
        key: impl Hash,
        msg: T,
    ) -> Result<(), DurableError<T>> {
        self.publish_durable(Part::of_key(&self.shared.topics, &topic, key), msg)
    }

    /// [`publish_async`](Self::publish_async) to the partition of `key`.
    ///
    /// # Cancel safety
    ///
    /// As [`publish_async`](Self::publish_async): dropped before it completes, the future
    /// drops its message, which was never published.
    pub async fn publish_keyed_async(
        &self,
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
    /// As [`publish_durable_async`](Self::publish_durable_async): dropped before its push,
    /// the message was never published; dropped after it, the message stays published
    /// and only the confirmation is lost.
    pub async fn publish_durable_keyed_async(
        &self,
        topic: impl ToTopic,
        key: impl Hash,
        msg: T,
    ) -> Result<(), DurableError<T>> {
        let part = self.shared.topics.router.part_of(key);
        self.publish_durable_async(Part::new(&topic, part), msg)
            .await
    }
}
