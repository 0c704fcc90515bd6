//! Keyed partitions: one hot topic spread over every shard, per-key order kept.
//!
//! A *partitioned* topic has a fixed number of partitions (the bus's
//! [`Builder::partitions`](crate::Builder::partitions), 64 by default). Partition `p` of
//! topic `name` is an ordinary topic of the registry, keyed `(name, p)`, that lives on
//! shard `p * shards / partitions`: the partitions go to the shards in contiguous, even
//! runs, so every shard holds some. A partitioned subscription installs one actor instance
//! per partition, each built by the subscription's factory and supervised on its own.
//!
//! A keyed publish hashes its key once with the key hash (an integer by one multiply,
//! Fibonacci hashing; byte slices with the routing hash, ahash under the router's fixed
//! keys: see `key.rs`), reduces the hash onto `0..partitions` (multiply-shift) and publishes to
//! that partition exactly as a plain publish publishes to a topic: through the caller's
//! topic cache (no lock after the first sight, no allocation), into the same rings and
//! lanes, with the same errors. Messages with one key go to one partition, on one shard,
//! into one instance, in publish order; different keys spread over all shards.
//!
//! Why a fixed partition count rather than one partition per shard: the partition is the
//! unit of order and of persistence. A key's partition never changes when the shard count
//! does, so a persistent bus reopened with another shard count moves whole partitions
//! (each record names its partition) and per-key order holds through the replay without
//! re-hashing any key; and each partition being an ordinary subscription, dispatch,
//! supervision, shutdown and the log need no new path. The price: a partitioned
//! subscription holds `partitions` actor instances (per shard, `partitions / shards` of
//! them), and a partition count smaller than the shard count leaves shards idle.

mod context;
mod handle;
mod key;
mod stats;

use std::hash::Hash;

use crate::error::Error;
use crate::handler::{Context, Handler, SubscriptionId, Supervision};
use crate::intern::{TopicCache, TopicId, Topics};
use crate::route::TopicKey;
use crate::supervise::Factory;
use crate::sync::{plain, Arc};
use crate::topic::{sealed::ToTopicPriv, ToTopic};

pub use handle::PartitionedTopic;
pub(crate) use key::{reduce, KeyHasher};
pub use stats::PartitionStats;
pub(crate) use stats::{PanicGuard, PartCounters, Registry};

/// The default number of partitions of a partitioned topic
/// ([`Builder::partitions`](crate::Builder::partitions)).
pub const DEFAULT_PARTITIONS: u16 = 64;

/// The largest partition count [`Builder::partitions`](crate::Builder::partitions) takes.
pub const MAX_PARTITIONS: usize = 4096;

/// One partition of a topic, as something to publish to or subscribe to: the topic's key
/// with the partition's number mixed in.
pub(crate) struct Part<'a, U: ?Sized> {
    topic: &'a U,
    part: u16,
}

impl<'a, U: ToTopic + ?Sized> Part<'a, U> {
    /// Partition `part` of `topic`.
    pub(crate) fn new(topic: &'a U, part: u16) -> Self {
        Part { topic, part }
    }

    /// The partition of `key`'s messages on `topics`' bus.
    #[inline(always)]
    pub(crate) fn of_key<K: Hash>(topics: &Topics, topic: &'a U, key: K) -> Self {
        Part::new(topic, topics.router.part_of(key))
    }
}

impl<U: ToTopicPriv + ?Sized> ToTopicPriv for Part<'_, U> {
    fn name(&self) -> &str {
        self.topic.name()
    }

    #[inline]
    fn id_in(&self, topics: &Topics, cache: Option<&mut TopicCache>) -> Option<TopicId> {
        self.topic.part_id(topics, self.part, cache)
    }

    #[inline]
    fn key_in(&self, topics: &Topics) -> Option<TopicKey> {
        self.topic.key_in(topics)?.with_part(self.part)
    }

    fn name_len(&self) -> usize {
        // The record's topic field: the name, the marker and the partition's digits.
        let digits = self.part.checked_ilog10().map_or(1, |d| d as usize + 1);
        self.topic.name_len() + crate::route::PART_MARK.len() + digits
    }
}

/// The handle of a partitioned subscription
/// ([`Bus::subscribe_partitioned`](crate::Bus::subscribe_partitioned)): one subscription
/// per partition, each with its own actor instance. End it with
/// [`Bus::unsubscribe_partitioned`](crate::Bus::unsubscribe_partitioned); read its
/// per-partition counters with [`stats`](Self::stats).
#[derive(Clone)]
pub struct PartitionedSubscription {
    pub(crate) topic: String,
    /// `ids[p]`: the subscription of partition `p`.
    pub(crate) ids: Vec<SubscriptionId>,
    pub(crate) counters: Vec<Arc<PartCounters>>,
}

impl PartitionedSubscription {
    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The subscription of each partition, by partition number.
    pub fn ids(&self) -> &[SubscriptionId] {
        &self.ids
    }

    /// Each partition's instance counters, by partition number (see [`PartitionStats`]).
    /// Cheap: relaxed loads, no message to the shards.
    pub fn stats(&self) -> Vec<PartitionStats> {
        self.ids
            .iter()
            .zip(&self.counters)
            .enumerate()
            .map(|(p, (id, c))| c.snapshot(p, *id))
            .collect()
    }
}

impl std::fmt::Debug for PartitionedSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionedSubscription")
            .field("topic", &self.topic)
            .field("partitions", &self.ids.len())
            .finish()
    }
}

/// An actor instance of one partition: the user's actor, counted.
struct Instance<H> {
    inner: H,
    counters: Arc<PartCounters>,
}

impl<T, H: Handler<T>> Handler<T> for Instance<H> {
    fn on_start(&mut self, ctx: &mut Context<'_, T>) {
        self.inner.on_start(ctx);
    }

    #[inline]
    fn handle(&mut self, ctx: &mut Context<'_, T>, msg: &T) {
        // A call that does not return unwinds through the guard, which counts the panic;
        // one that returns forgets it and counts the message handled.
        let guard = PanicGuard(&self.counters);
        self.inner.handle(ctx, msg);
        std::mem::forget(guard);
        self.counters.handled();
    }

    fn on_stop(&mut self, ctx: &mut Context<'_, T>) {
        self.inner.on_stop(ctx);
    }
}

/// Everything one partition's subscription needs: its first actor and the factory that
/// restarts it (counting restarts).
pub(crate) struct PartActor<T> {
    pub(crate) part: u16,
    pub(crate) actor: Box<dyn Handler<T>>,
    pub(crate) factory: Option<Factory<T>>,
    pub(crate) policy: Supervision,
    pub(crate) counters: Arc<PartCounters>,
}

/// The instances of a partitioned subscription, one per partition, from `factory`
/// (called with the partition's number). Under [`Supervision::Restart`] each instance is
/// restarted from the same factory, with its own number.
pub(crate) fn instances<T, H, F>(
    partitions: u16,
    policy: Supervision,
    factory: F,
) -> Vec<PartActor<T>>
where
    T: 'static,
    H: Handler<T>,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    let factory = plain::Arc::new(factory);
    (0..partitions)
        .map(|part| {
            let counters = Arc::new(PartCounters::new());
            let actor: Box<dyn Handler<T>> = Box::new(Instance {
                inner: factory(usize::from(part)),
                counters: counters.clone(),
            });
            let restart: Factory<T> = {
                let (factory, counters) = (factory.clone(), counters.clone());
                Box::new(move || {
                    counters.restarted();
                    Box::new(Instance {
                        inner: factory(usize::from(part)),
                        counters: counters.clone(),
                    }) as Box<dyn Handler<T>>
                })
            };
            PartActor {
                part,
                actor,
                factory: Some(restart),
                policy,
                counters,
            }
        })
        .collect()
}

/// The typed error for a partitioned subscription's topic name: empty, or longer than
/// [`MAX_PARTITIONED_TOPIC_LEN`](crate::MAX_PARTITIONED_TOPIC_LEN).
pub(crate) fn check_name(topics: &Topics, topic: &str) -> Result<TopicKey, Error> {
    let key = topics.router.key_or_error(topic)?;
    // A plain subject, as every other name published to: no wildcard token, no empty
    // token, no whitespace or control character (checked before any factory runs).
    if let Err(reason) = crate::subject::check_name(topic) {
        return Err(Error::InvalidSubject {
            name: topic.to_owned(),
            reason,
        });
    }
    if topic.len() > crate::route::MAX_PARTITIONED_TOPIC_LEN {
        return Err(Error::InvalidTopic {
            len: topic.len(),
            max: crate::route::MAX_PARTITIONED_TOPIC_LEN,
        });
    }
    Ok(key)
}

/// The key of partition `part` of a topic [`check_name`] accepted.
pub(crate) fn part_key(key: &TopicKey, part: u16) -> Result<TopicKey, Error> {
    key.with_part(part).ok_or(Error::InvalidTopic {
        len: key.as_str().len(),
        max: crate::route::MAX_PARTITIONED_TOPIC_LEN,
    })
}

/// The typed error for a partition count out of range.
pub(crate) fn check_count(partitions: usize) -> Result<u16, Error> {
    match u16::try_from(partitions) {
        Ok(n) if (1..=MAX_PARTITIONS).contains(&partitions) => Ok(n),
        _ => Err(Error::InvalidPartitions {
            requested: partitions,
            max: MAX_PARTITIONS,
        }),
    }
}
