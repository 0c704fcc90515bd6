//! Partitioned subscriptions made on the builder, and the partition count.

use super::Builder;
use crate::error::Error;
use crate::handler::{Handler, SubscriptionId, Supervision};
use crate::intern::Topics;
use crate::partition::{self, PartActor, PartitionedSubscription, Registry, DEFAULT_PARTITIONS};
use crate::route::Router;
use crate::shard::Startup;
use crate::supervise::Subscriber;

type MakeParts<T> = Box<dyn FnOnce(u16) -> Vec<PartActor<T>> + Send>;

/// The builder's partition count and partitioned subscriptions.
pub(super) struct PreParted<T> {
    partitions: usize,
    subs: Vec<(String, MakeParts<T>)>,
}

impl<T> Default for PreParted<T> {
    fn default() -> Self {
        Self {
            partitions: usize::from(DEFAULT_PARTITIONS),
            subs: Vec::new(),
        }
    }
}

impl<T> PreParted<T> {
    /// The bus's router: `shards` shards, the partition count asked for (or its typed
    /// error).
    pub(super) fn router(&self, shards: usize) -> Result<Router, Error> {
        Ok(Router::new(shards).with_partitions(partition::check_count(self.partitions)?))
    }
}

/// Interns every partition of every partitioned subscription and hands each instance to
/// its shard, after the plain subscriptions (their serials follow). Returns the registry
/// the bus starts with.
pub(super) fn install<T>(
    parted: PreParted<T>,
    topics: &Topics,
    initial: &mut Vec<SubscriptionId>,
    startups: &mut [Startup<T>],
) -> Result<Registry, Error> {
    let bus = topics.bus;
    {
        let registry = Registry::default();
        let partitions = topics.router.partitions();
        for (topic, make) in parted.subs {
            let key = partition::check_name(topics, &topic)?;
            let mut sub = PartitionedSubscription {
                topic,
                ids: Vec::new(),
                counters: Vec::new(),
            };
            for inst in make(partitions) {
                let id = topics.intern(&partition::part_key(&key, inst.part)?);
                let sid = SubscriptionId {
                    bus,
                    shard: id.shard.0 as u32,
                    serial: initial.len() as u64,
                };
                initial.push(sid);
                let subscriber = Subscriber {
                    id: sid,
                    actor: inst.actor,
                    factory: inst.factory,
                    policy: inst.policy,
                };
                startups[id.shard.0].subs.push((id.index, subscriber));
                sub.ids.push(sid);
                sub.counters.push(inst.counters);
            }
            registry.add(sub);
        }
        Ok(registry)
    }
}

impl<T: Send + 'static> Builder<T> {
    /// The number of partitions of every partitioned topic of the bus
    /// ([`subscribe_partitioned`](Self::subscribe_partitioned)), `1..=`
    /// [`MAX_PARTITIONS`](crate::MAX_PARTITIONS); otherwise `build()` fails with
    /// [`Error::InvalidPartitions`]. Default: [`DEFAULT_PARTITIONS`] (64).
    ///
    /// The partition, not the shard, is the unit of per-key order: a key always maps to
    /// the same partition, and partition `p` lives on shard `p * shards / partitions`. So
    /// choose at least as many partitions as shards (fewer leaves shards without work),
    /// and keep the count of a persistent bus: its records name their partition, and a
    /// bus reopened with another shard count moves whole partitions, keeping per-key
    /// order; reopened with another partition count, a record of partition `p` replays
    /// to partition `p % partitions`, which keeps the order of the records but not the
    /// key-to-partition mapping of later publishes.
    pub fn partitions(mut self, partitions: usize) -> Self {
        self.parted.partitions = partitions;
        self
    }

    /// [`Bus::subscribe_partitioned`](crate::Bus::subscribe_partitioned) on the builder:
    /// installed before the shards start, so on a persistent bus the log's replay reaches
    /// its instances (each record goes to its partition's instance, in order). An invalid
    /// topic name makes `build()` fail with [`Error::InvalidTopic`]. Its subscription is
    /// in [`Bus::partitioned`](crate::Bus::partitioned), and its partitions' ids follow
    /// the plain subscriptions' in [`Bus::initial_subscriptions`](crate::Bus::initial_subscriptions).
    pub fn subscribe_partitioned<H, F>(
        mut self,
        topic: &str,
        policy: Supervision,
        factory: F,
    ) -> Self
    where
        H: Handler<T>,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let make: MakeParts<T> = Box::new(move |n| partition::instances(n, policy, factory));
        self.parted.subs.push((topic.to_owned(), make));
        self
    }
}
