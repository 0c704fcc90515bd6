//! What a message is published to: a topic name or a pre-resolved [`Topic`] handle,
//! both through the sealed [`ToTopic`].

use crate::intern::TopicId;
use crate::route::{ShardId, TopicKey};

/// A pre-resolved topic: its shard and its index in that shard's topic table computed
/// once, so that publishing through it neither hashes, nor looks anything up, nor
/// allocates. Made by [`Bus::topic`](crate::Bus::topic). A handle used with another bus
/// than the one that made it is resolved again there by its name (still correct, only
/// slower).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Topic {
    pub(crate) id: TopicId,
    /// The process-unique id of the bus that made the handle.
    pub(crate) bus: u64,
    pub(crate) key: TopicKey,
}

impl Topic {
    /// The topic's name.
    pub fn name(&self) -> &str {
        self.key.as_str()
    }

    /// The shard the topic is routed to.
    pub fn shard(&self) -> ShardId {
        self.id.shard
    }
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.name())
            .field("shard", &self.id.shard.0)
            .finish()
    }
}

/// Something a message can be published to: a topic name (`&str`, `String`, or a
/// reference to either) or a pre-resolved [`Topic`] handle.
///
/// The keyed publishes (`publish_keyed` and its kin) also take a
/// [`PartitionedTopic`](crate::PartitionedTopic) by reference, which has every partition
/// resolved.
///
/// Sealed: the resolution machinery lives on a private supertrait, so the trait cannot be
/// implemented outside this crate and shows nothing but what it accepts.
///
/// ```compile_fail
/// struct MyTopic;
/// impl shardbus::ToTopic for MyTopic {} // the private supertrait is not implemented
/// ```
pub trait ToTopic: sealed::ToTopicPriv {}

impl<U: sealed::ToTopicPriv + ?Sized> ToTopic for U {}

// The supertrait is public (a bound of the public `ToTopic`) but cannot be named outside the
// crate; its methods take and return crate-private types (`Topics`, `TopicCache`, `TopicId`),
// so code outside can neither implement it nor call `id_in` (it has no `Topics` to pass).
// Those types stay `pub(crate)`, no hidden `pub` type reachable: hence the allow.
#[allow(private_interfaces, unnameable_types)]
pub(crate) mod sealed {
    use super::Topic;
    use crate::intern::{TopicCache, TopicId, Topics};

    /// The machinery behind [`ToTopic`](super::ToTopic).
    pub trait ToTopicPriv {
        /// The topic's id on `topics`' bus, interning it (through `cache`, or the calling
        /// thread's cache) the first time; `None` for an invalid name.
        fn id_in(&self, topics: &Topics, cache: Option<&mut TopicCache>) -> Option<TopicId>;

        /// The topic's name, as given (not yet validated).
        fn name(&self) -> &str;

        /// The name's length in bytes, for [`Error::InvalidTopic`](crate::Error::InvalidTopic).
        fn name_len(&self) -> usize {
            self.name().len()
        }

        /// The topic's key (name and hash) on `topics`' bus, `None` for an invalid name:
        /// what a keyed publish derives its partition's key from. A handle has it already.
        #[inline]
        fn key_in(&self, topics: &Topics) -> Option<crate::route::TopicKey> {
            topics.router.key(self.name())
        }

        /// The id of partition `part` of this topic on `topics`' bus, interning it
        /// (through `cache`, or the calling thread's) the first time; `None` for an
        /// invalid name. A [`PartitionedTopic`](crate::PartitionedTopic) handle has them
        /// all already.
        #[inline]
        fn part_id(
            &self,
            topics: &Topics,
            part: u16,
            cache: Option<&mut TopicCache>,
        ) -> Option<TopicId> {
            let key = self.key_in(topics)?.with_part(part)?;
            topics.cached(&key, cache)
        }
    }

    impl ToTopicPriv for str {
        fn name(&self) -> &str {
            self
        }

        #[inline(always)]
        fn id_in(&self, topics: &Topics, cache: Option<&mut TopicCache>) -> Option<TopicId> {
            match cache {
                Some(cache) => cache.by_name(topics, self),
                None => topics.thread_by_name(self),
            }
        }
    }

    impl ToTopicPriv for String {
        fn name(&self) -> &str {
            self
        }

        #[inline(always)]
        fn id_in(&self, topics: &Topics, cache: Option<&mut TopicCache>) -> Option<TopicId> {
            self.as_str().id_in(topics, cache)
        }
    }

    impl ToTopicPriv for Topic {
        fn name(&self) -> &str {
            Topic::name(self)
        }
        #[inline]
        fn key_in(&self, _: &Topics) -> Option<crate::route::TopicKey> {
            Some(self.key)
        }

        #[inline]
        fn id_in(&self, topics: &Topics, cache: Option<&mut TopicCache>) -> Option<TopicId> {
            if self.bus == topics.bus {
                Some(self.id)
            } else {
                // A handle from another bus (perhaps with another shard count) is resolved
                // again by name, never misrouted.
                topics.cached(&self.key, cache)
            }
        }
    }

    impl<U: ToTopicPriv + ?Sized> ToTopicPriv for &U {
        fn name(&self) -> &str {
            (**self).name()
        }
        #[inline]
        fn key_in(&self, topics: &Topics) -> Option<crate::route::TopicKey> {
            (**self).key_in(topics)
        }
        #[inline]
        fn part_id(
            &self,
            topics: &Topics,
            part: u16,
            cache: Option<&mut TopicCache>,
        ) -> Option<TopicId> {
            (**self).part_id(topics, part, cache)
        }

        #[inline(always)]
        fn id_in(&self, topics: &Topics, cache: Option<&mut TopicCache>) -> Option<TopicId> {
            (**self).id_in(topics, cache)
        }
    }
}
