//! Topic interning: each topic name gets a small dense index on its shard, once.
//!
//! A message travels with a `u32` index instead of its name, so an envelope of a small
//! message fits one cache line and a shard finds the topic's actors by indexing a
//! `Vec`, with no hashing and no name comparison per message.
//!
//! The registry is the one place that assigns indices. It is locked only when a topic
//! is seen for the first time by a resolver: [`Bus::topic`](crate::Bus::topic), a
//! subscription, and the first publish by *name* of that topic from a given
//! [`Publisher`](crate::Publisher), shard (`Context::publish`) or thread
//! (`Bus::publish`), each of which keeps its own [`TopicCache`]. Publishing through a
//! pre-resolved [`Topic`](crate::Topic) never touches it. A shard copies names it has
//! not seen yet out of the registry the first time one of their indices reaches it.
//!
//! Interned topics are kept for the bus's lifetime: a bus fed an unbounded stream of
//! fresh topic names grows by about 150 bytes per name in the registry and the shard's
//! table, plus about 80 bytes in each cache that has seen the name.

use std::cell::RefCell;

use crate::route::{Router, ShardId, TopicKey, TopicMap};
use crate::sync::plain::{Mutex, PoisonError};

/// Where a topic lives: its shard and its index in that shard's topic table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TopicId {
    pub(crate) shard: ShardId,
    pub(crate) index: u32,
}

/// The bus-wide topic registry, with the router and the bus's identity: everything a
/// name needs to become a [`TopicId`].
pub(crate) struct Topics {
    pub(crate) router: Router,
    /// The process-unique id of the bus, to tell its [`Topic`](crate::Topic) handles
    /// from another bus's.
    pub(crate) bus: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    ids: TopicMap<TopicId>,
    /// `names[shard][index]`.
    names: Vec<Vec<TopicKey>>,
}

impl Topics {
    pub(crate) fn new(router: Router, bus: u64) -> Self {
        let shards = router.shards();
        Self {
            router,
            bus,
            inner: Mutex::new(Inner {
                ids: TopicMap::default(),
                names: vec![Vec::new(); shards],
            }),
        }
    }

    /// The topic's id, assigning the next index on its shard the first time.
    pub(crate) fn intern(&self, key: &TopicKey) -> TopicId {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&id) = inner.ids.get(key) {
            return id;
        }
        let shard = self.router.shard_of_key(key);
        let names = &mut inner.names[shard.0];
        // More than 4 billion topics on one shard would exhaust memory long before.
        let index = names.len() as u32;
        names.push(*key);
        let id = TopicId { shard, index };
        inner.ids.insert(*key, id);
        id
    }

    /// The id through `cache`, or the calling thread's cache when there is none.
    #[inline]
    pub(crate) fn cached(&self, key: &TopicKey, cache: Option<&mut TopicCache>) -> TopicId {
        match cache {
            Some(cache) => cache.get(self, key),
            None => self.thread_cached(key),
        }
    }

    /// Looks `key` up in the calling thread's cache (`Bus::publish` by name).
    fn thread_cached(&self, key: &TopicKey) -> TopicId {
        THREAD_CACHE
            .try_with(|cell| match cell.try_borrow_mut() {
                Ok(mut slot) => {
                    let (owner, cache) = &mut *slot;
                    if *owner != self.bus {
                        *owner = self.bus;
                        *cache = TopicCache::default();
                    }
                    cache.get(self, key)
                }
                Err(_) => self.intern(key),
            })
            // The thread is exiting and its cache is gone.
            .unwrap_or_else(|_| self.intern(key))
    }

    /// Calls `add` with the names of `shard`'s topics from index `from` on. Called by
    /// the shard when an index beyond its table reaches it: whoever assigned that index
    /// did so under this lock before the message was pushed (and a push is Release, a
    /// pop Acquire), so the name is here.
    pub(crate) fn names_since(&self, shard: ShardId, from: usize, mut add: impl FnMut(TopicKey)) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for key in inner.names[shard.0].iter().skip(from) {
            add(*key);
        }
    }
}

/// A resolver's private memory of the topics it has interned: publishing by name to a
/// known topic costs one hash-map probe and no lock.
#[derive(Default)]
pub(crate) struct TopicCache {
    ids: TopicMap<TopicId>,
}

impl TopicCache {
    pub(crate) fn get(&mut self, topics: &Topics, key: &TopicKey) -> TopicId {
        if let Some(&id) = self.ids.get(key) {
            return id;
        }
        let id = topics.intern(key);
        self.ids.insert(*key, id);
        id
    }
}

thread_local! {
    /// `Bus::publish` by name: the calling thread's cache, for one bus at a time (by
    /// the bus's process-unique id). Switching buses on a thread starts it afresh.
    static THREAD_CACHE: RefCell<(u64, TopicCache)> =
        RefCell::new((u64::MAX, TopicCache::default()));
}
