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

    /// `Bus::publish` by name: the id through the calling thread's cache of this bus;
    /// `None` for an invalid name.
    #[inline]
    pub(crate) fn thread_by_name(&self, name: &str) -> Option<TopicId> {
        let cell = self.thread_caches.get_or(RefCell::default);
        match cell.try_borrow_mut() {
            Ok(mut cache) => cache.by_name(self, name),
            // Only reentrant use could get here (see `thread_cached`).
            Err(_) => self.resolve(&self.router.key(name)?),
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
/// known topic costs one hash-map probe and no lock, and to a name it resolved recently
/// from the same place in memory (a string literal, a `String` kept for the purpose) a
/// probe of [`NameMemo`]: no hash, no copy of the name, a compare of its bytes.
#[derive(Default)]
pub(crate) struct TopicCache {
    ids: TopicMap<TopicId>,
    memo: NameMemo,
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

    /// The id of topic `name`, interning it the first time; `None` for an invalid name.
    /// The hit (the name's bytes are those remembered in its memo slot) is inline and
    /// never hashes; everything else is out of line.
    #[inline(always)]
    pub(crate) fn by_name(&mut self, topics: &Topics, name: &str) -> Option<TopicId> {
        match self.memo.find(name) {
            Some(id) => Some(id),
            None => self.by_name_slow(topics, name),
        }
    }

    /// [`by_name`](Self::by_name) past the memo: hashes the name (rejecting an invalid
    /// one), finds or interns it, and remembers it in the memo.
    #[cold]
    #[inline(never)]
    fn by_name_slow(&mut self, topics: &Topics, name: &str) -> Option<TopicId> {
        let key = topics.router.key(name)?;
        let id = self.get(topics, &key)?;
        self.memo.remember(name, key, id);
        Some(id)
    }
}

/// Slots of a [`NameMemo`] (a power of two): enough that a publisher cycling through a few
/// dozen names from fixed buffers mostly finds each in its slot.
const MEMO_SLOTS: usize = 256;

/// A small direct-mapped memo of names to ids, indexed by where the name's bytes live.
///
/// A name is placed in the slot its address and length pick, so one published from the
/// same buffer each time (a literal, a kept `String`) finds its slot at once. A slot is
/// trusted only when its remembered bytes equal the name's: the address only chooses
/// where to look, never decides a hit, so a buffer reused for another name (a `String`
/// cleared and refilled) can never return a stale id, and the same name from another
/// buffer is still answered right (from the map, then remembered at its own slot).
///
/// In front of the slots sits the last name found: its id is read from a fixed place in
/// the memo, so a publisher that keeps to one name starts its push without waiting for
/// the slot's address (computed from the name's); the compare of its bytes, against the
/// slot it came from, runs beside the push as a predicted branch.
#[derive(Default)]
struct NameMemo {
    /// About 24 KiB, allocated by the first name remembered: a resolver that only ever
    /// sees handles pays nothing for it.
    slots: Option<Box<[MemoSlot; MEMO_SLOTS]>>,
    /// The slot of the name found last and its id (a copy of the slot's). Written with
    /// every slot written, so it never names a slot that holds another id; meaningless
    /// while `slots` is `None`.
    last: Last,
}

#[derive(Clone, Copy)]
struct Last {
    slot: usize,
    id: TopicId,
}

impl Default for Last {
    fn default() -> Self {
        Last {
            slot: 0,
            id: EMPTY_SLOT.id,
        }
    }
}

#[derive(Clone, Copy)]
struct MemoSlot {
    /// The name's length; `usize::MAX` for an empty slot (no `&str` is that long).
    len: usize,
    /// The name's bytes (`key.as_str()`, `len` of them).
    key: TopicKey,
    id: TopicId,
}

const EMPTY_SLOT: MemoSlot = MemoSlot {
    len: usize::MAX,
    key: TopicKey::EMPTY,
    id: TopicId {
        shard: crate::route::ShardId(0),
        index: 0,
    },
};

impl NameMemo {
    /// The slot for a name at `addr` of `len` bytes: a multiplicative hash of both (three
    /// instructions), its top bits.
    #[inline(always)]
    fn slot_of(name: &str) -> usize {
        let addr = name.as_ptr() as usize as u64;
        let mixed = (addr ^ name.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> (64 - MEMO_SLOTS.trailing_zeros())) as usize
    }

    #[inline(always)]
    fn find(&mut self, name: &str) -> Option<TopicId> {
        let slots = self.slots.as_deref()?;
        if matches(&slots[self.last.slot % MEMO_SLOTS], name) {
            return Some(self.last.id);
        }
        let at = Self::slot_of(name);
        let slot = &slots[at];
        if matches(slot, name) {
            self.last = Last {
                slot: at,
                id: slot.id,
            };
            Some(slot.id)
        } else {
            None
        }
    }

    fn remember(&mut self, name: &str, key: TopicKey, id: TopicId) {
        let slots = self
            .slots
            .get_or_insert_with(|| Box::new([EMPTY_SLOT; MEMO_SLOTS]));
        let at = Self::slot_of(name);
        slots[at] = MemoSlot {
            len: name.len(),
            key,
            id,
        };
        self.last = Last { slot: at, id };
    }
}

/// Whether `slot` remembers `name`.
#[inline(always)]
fn matches(slot: &MemoSlot, name: &str) -> bool {
    slot.len == name.len() && same_bytes(slot.key.inline_bytes(), name.as_bytes())
}

/// Whether `name` (at most [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN) bytes, checked by the
/// caller's length compare) equals the first `name.len()` bytes of `known`. Word-wide
/// compares that overlap at the end instead of a call to `memcmp`: a name of 4 to 16
/// bytes costs two or four loads and compares.
#[inline(always)]
fn same_bytes(known: &[u8; crate::route::MAX_TOPIC_LEN], name: &[u8]) -> bool {
    let n = name.len();
    let word = |b: &[u8], at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    let half = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]));
    if n >= 8 {
        if n > 16 {
            return known[..n] == *name;
        }
        word(known, 0) == word(name, 0) && word(known, n - 8) == word(name, n - 8)
    } else if n >= 4 {
        half(known, 0) == half(name, 0) && half(known, n - 4) == half(name, n - 4)
    } else if n > 0 {
        known[0] == name[0] && known[n / 2] == name[n / 2] && known[n - 1] == name[n - 1]
    } else {
        // Empty names are never remembered (and an empty slot's length matches none).
        false
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

    /// A `String` cleared and refilled keeps its buffer: the second name sits at the first
    /// one's address with the same length, so it lands in the same memo slot. Only a compare
    /// of the bytes tells them apart.
    #[test]
    fn a_reused_buffer_never_hits_the_previous_names_entry() {
        let topics = Topics::new(Router::new(4), 7);
        let mut cache = TopicCache::default();
        let mut name = String::with_capacity(32);
        // Lengths 1..=40 cover every branch of the byte compare; names differ in their
        // first, middle or last byte only.
        for len in 1..=40usize {
            for at in [0, len / 2, len - 1] {
                name.clear();
                name.extend(std::iter::repeat_n('a', len));
                let addr = name.as_ptr();
                let first = cache.by_name(&topics, &name).unwrap();
                assert_eq!(cache.by_name(&topics, &name), Some(first));
                let mut bytes = name.clone().into_bytes();
                bytes[at] = b'b';
                name.clear();
                name.push_str(std::str::from_utf8(&bytes).unwrap());
                assert_eq!(name.as_ptr(), addr, "the buffer is reused");
                let second = cache.by_name(&topics, &name).unwrap();
                let expected = topics.intern(&topics.router.key(&name).unwrap());
                assert_eq!(second, expected, "{name:?}");
                assert_ne!(second, first, "{name:?}");
                // Again, now from the slot it took over (and as the last name found).
                assert_eq!(cache.by_name(&topics, &name), Some(second), "{name:?}");
                // And back: the first name again, from the same buffer.
                name.clear();
                name.extend(std::iter::repeat_n('a', len));
                assert_eq!(cache.by_name(&topics, &name), Some(first));
            }
        }
        // Invalid names are never remembered, whatever sits in their slot.
        assert_eq!(cache.by_name(&topics, ""), None);
        assert_eq!(cache.by_name(&topics, &"x".repeat(56)), None);
        // The same name from another buffer gets the same id.
        let elsewhere = String::from("aaaa");
        assert_eq!(
            cache.by_name(&topics, &elsewhere),
            cache.by_name(&topics, "aaaa")
        );
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
