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
//! table, plus about 80 bytes in each cache that has seen the name. Every cache goes with
//! its owner: a `Publisher`'s with the publisher, a shard's with the shard, and the
//! per-thread caches of `Bus::publish` with the bus's shared state (they are the bus's,
//! one per thread that published by name, not the threads'), so a dropped bus leaves
//! nothing behind in a thread that never publishes again.

use std::cell::RefCell;

use thread_local::ThreadLocal;

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
    /// `Bus::publish` by name: each calling thread's cache of this bus's topics, owned by
    /// the bus (dropped with it, whichever threads filled it). Finding the calling
    /// thread's is lock-free: a thread-id lookup and one load.
    thread_caches: ThreadLocal<RefCell<TopicCache>>,
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
            thread_caches: ThreadLocal::new(),
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
        names.push(key.with_record_name());
        let id = TopicId { shard, index };
        inner.ids.insert(*key, id);
        id
    }

    /// The id of a name a resolver meets for the first time: `None` if it is not a plain
    /// subject (a wildcard token, an empty token, whitespace: `subject::check_name`).
    /// Every cache's miss comes here, so a cached name is never checked again.
    pub(crate) fn resolve(&self, key: &TopicKey) -> Option<TopicId> {
        crate::subject::check_name(key.as_str()).ok()?;
        Some(self.intern(key))
    }

    /// The id through `cache`, or the calling thread's cache when there is none; `None`
    /// for a name that is not a plain subject.
    #[inline]
    pub(crate) fn cached(&self, key: &TopicKey, cache: Option<&mut TopicCache>) -> Option<TopicId> {
        match cache {
            Some(cache) => cache.get(self, key),
            None => self.thread_cached(key),
        }
    }

    /// Looks `key` up in the calling thread's cache of this bus (`Bus::publish` by name).
    fn thread_cached(&self, key: &TopicKey) -> Option<TopicId> {
        let cell = self.thread_caches.get_or(RefCell::default);
        match cell.try_borrow_mut() {
            Ok(mut cache) => cache.get(self, key),
            // Only reentrant use could get here (nothing on this path calls back into a
            // publish); the registry answers without the cache.
            Err(_) => self.resolve(key),
        }
    }

    /// How many topics the calling thread's cache of this bus holds (tests).
    #[cfg(test)]
    pub(crate) fn thread_cache_len(&self) -> usize {
        self.thread_caches
            .get()
            .and_then(|cell| cell.try_borrow().ok().map(|cache| cache.ids.len()))
            .unwrap_or(0)
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
    pub(crate) fn get(&mut self, topics: &Topics, key: &TopicKey) -> Option<TopicId> {
        if let Some(&id) = self.ids.get(key) {
            return Some(id);
        }
        let id = topics.resolve(key)?;
        self.ids.insert(*key, id);
        Some(id)
    }
}

#[cfg(test)]
thread_local! {
    /// Entries of [`TopicCache`]s dropped on this thread (tests: what a dropped bus freed).
    static FREED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
impl Drop for TopicCache {
    fn drop(&mut self) {
        FREED.with(|f| f.set(f.get() + self.ids.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{mpsc, Arc};

    fn keys(topics: &Topics, prefix: &str, n: usize) -> Vec<TopicKey> {
        (0..n)
            .map(|i| topics.router.key(&format!("{prefix}-{i}")).unwrap())
            .collect()
    }

    #[test]
    fn the_per_thread_caches_are_the_buss_and_go_with_it() {
        let topics = Arc::new(Topics::new(Router::new(4), 7));
        // Another thread publishes by name to 1,000 topics (each twice: one entry each),
        // then never again, and stays alive.
        let (resolved, wait) = (mpsc::channel(), mpsc::channel::<()>());
        let other = {
            let topics = topics.clone();
            let (resolved, wait) = (resolved.0, wait.1);
            std::thread::spawn(move || {
                let names = keys(&topics, "other", 1000);
                for key in names.iter().chain(&names) {
                    topics.cached(key, None);
                }
                let len = topics.thread_cache_len();
                drop(topics);
                resolved.send(len).unwrap();
                let _ = wait.recv();
            })
        };
        assert_eq!(resolved.1.recv().unwrap(), 1000);
        // This thread's own cache: 10 of the same names, 5 new ones.
        let mut mine = keys(&topics, "other", 10);
        mine.extend(keys(&topics, "mine", 5));
        for key in &mine {
            topics.cached(key, None);
        }
        assert_eq!(topics.thread_cache_len(), 15);
        // The same ids through the cache as through the registry.
        for key in &mine {
            assert_eq!(topics.cached(key, None), Some(topics.intern(key)));
        }
        // The last owner of the bus's state is this thread: dropping it frees every
        // thread's cache here, the other thread's included, though it is still alive.
        let before = FREED.with(std::cell::Cell::get);
        assert_eq!(Arc::strong_count(&topics), 1);
        drop(topics);
        assert_eq!(FREED.with(std::cell::Cell::get) - before, 1015);
        wait.0.send(()).unwrap();
        other.join().unwrap();
    }
}
