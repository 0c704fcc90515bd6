//! [`PartitionedTopic`]: a partitioned topic resolved once, every partition at hand.

use crate::intern::{TopicCache, TopicId, Topics};
use crate::route::{ShardId, TopicKey};
use crate::sync::plain::Arc;
use crate::topic::sealed::ToTopicPriv;

/// A partitioned topic resolved once: the shard and table index of each of its
/// partitions, so that a keyed publish through it hashes the key and indexes an array,
/// nothing else (no name hash, no lookup, no lock, no allocation). Made by
/// [`Bus::partitioned_topic`](crate::Bus::partitioned_topic); pass it by reference to
/// the `*_keyed` publishes. A plain publish through it goes to the plain topic of the same
/// name. Used with another bus than the one that made it, it is resolved again there by
/// its name (still correct, only slower).
#[derive(Clone)]
pub struct PartitionedTopic {
    pub(crate) key: TopicKey,
    /// The process-unique id of the bus that made the handle.
    pub(crate) bus: u64,
    /// `ids[p]`: where partition `p` lives.
    pub(crate) ids: Arc<[TopicId]>,
}

impl PartitionedTopic {
    /// The topic's name.
    pub fn name(&self) -> &str {
        self.key.as_str()
    }

    /// The number of partitions.
    pub fn partitions(&self) -> usize {
        self.ids.len()
    }

    /// The shard partition `partition` lives on; `None` if out of range.
    pub fn shard_of_partition(&self, partition: usize) -> Option<ShardId> {
        self.ids.get(partition).map(|id| id.shard)
    }
}

impl std::fmt::Debug for PartitionedTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionedTopic")
            .field("name", &self.name())
            .field("partitions", &self.ids.len())
            .finish()
    }
}

// The sealed trait's methods take and return crate-private types (see `topic::sealed`):
// nothing outside the crate can call them.
#[allow(private_interfaces)]
impl ToTopicPriv for PartitionedTopic {
    fn name(&self) -> &str {
        PartitionedTopic::name(self)
    }

    fn id_in(&self, topics: &Topics, cache: Option<&mut TopicCache>) -> Option<TopicId> {
        topics.cached(&self.key, cache)
    }

    fn key_in(&self, _: &Topics) -> Option<TopicKey> {
        Some(self.key)
    }

    #[inline]
    fn part_id(
        &self,
        topics: &Topics,
        part: u16,
        cache: Option<&mut TopicCache>,
    ) -> Option<TopicId> {
        if self.bus == topics.bus {
            // The bus's partition count made `ids`, and `part` is below it.
            if let Some(&id) = self.ids.get(usize::from(part)) {
                return Some(id);
            }
        }
        let key = self.key.with_part(part)?;
        topics.cached(&key, cache)
    }
}
