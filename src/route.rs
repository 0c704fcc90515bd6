//! Topic → shard routing.
//!
//! A topic name is hashed once with ahash under fixed keys ([`ROUTE_SEEDS`]); the 64-bit
//! hash picks the shard by Lemire's multiply-shift range reduction,
//! `shard = (hash as u128 * shards as u128) >> 64`. Fixed keys make the mapping the same
//! in every process of the same build (ahash's output may differ between ahash versions
//! and CPU feature sets, so it is not promised across builds; persisted records carry
//! their topic name and are re-routed on recovery).
//!
//! A unit test pins the routing of a fixed table of topic names for 2, 3, 8 and 64
//! shards, so that a change of routing (an ahash upgrade, a build with other CPU
//! features) is noticed; what it means for a persistent bus is in `docs/persistence.md`,
//! "Routing changes".

use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::error::Error;

/// The longest topic name, in bytes. Names are kept inline (in [`Topic`](crate::Topic) handles and
/// in the topic caches) so that resolving one allocates nothing.
pub const MAX_TOPIC_LEN: usize = 55;

/// The fixed ahash keys of the router.
const ROUTE_SEEDS: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

/// The index of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ShardId(pub(crate) usize);

impl ShardId {
    /// The shard's index, `0..shards`.
    pub fn index(self) -> usize {
        self.0
    }
}

/// A topic name with its hash, stored inline (64 bytes): the key of the topic
/// registry and caches (`intern`), and the name a shard reports for a topic index.
#[derive(Clone, Copy)]
pub(crate) struct TopicKey {
    hash: u64,
    len: u8,
    bytes: [u8; MAX_TOPIC_LEN],
}

impl TopicKey {
    pub(crate) fn as_str(&self) -> &str {
        // The key owns its inline bytes, and they are UTF-8: a `TopicKey` is only
        // made by `Router::key`, which copies all the bytes of a `&str` (checked to fit)
        // and nothing else into `bytes[..len]`. Skipping the check keeps an O(len) scan
        // off every dispatch.
        // SAFETY: by the ownership stated in the lines just above.
        unsafe { std::str::from_utf8_unchecked(self.name_bytes()) }
    }

    fn name_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// All the inline bytes: the name, then zeros.
    pub(crate) fn inline_bytes(&self) -> &[u8; MAX_TOPIC_LEN] {
        &self.bytes
    }

    /// A key that names no topic (a placeholder in an empty cache slot).
    pub(crate) const EMPTY: Self = Self {
        hash: 0,
        len: 0,
        bytes: [0; MAX_TOPIC_LEN],
    };
}

impl PartialEq for TopicKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.name_bytes() == other.name_bytes()
    }
}

impl Eq for TopicKey {}

impl Hash for TopicKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl std::fmt::Debug for TopicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TopicKey").field(&self.as_str()).finish()
    }
}

/// A hasher that passes a precomputed `u64` through, for maps keyed by [`TopicKey`].
#[derive(Default)]
pub(crate) struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `TopicKey`; fold anything else in for safety.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(crate) type TopicMap<V> =
    std::collections::HashMap<TopicKey, V, BuildHasherDefault<PassThroughHasher>>;

/// The topic → shard function of one bus.
#[derive(Clone)]
pub(crate) struct Router {
    hasher: ahash::RandomState,
    shards: usize,
}

impl Router {
    pub(crate) fn new(shards: usize) -> Self {
        let [k0, k1, k2, k3] = ROUTE_SEEDS;
        Self {
            hasher: ahash::RandomState::with_seeds(k0, k1, k2, k3),
            shards,
        }
    }

    /// A router with other keys: a stand-in for another build's routing (another ahash
    /// version or CPU feature set), for tests of what a routing change does.
    #[cfg(test)]
    pub(crate) fn with_seeds(shards: usize, [k0, k1, k2, k3]: [u64; 4]) -> Self {
        Self {
            hasher: ahash::RandomState::with_seeds(k0, k1, k2, k3),
            shards,
        }
    }

    pub(crate) fn shards(&self) -> usize {
        self.shards
    }

    /// Hashes and copies a topic name, or `None` if it is empty or too long.
    pub(crate) fn key(&self, name: &str) -> Option<TopicKey> {
        let len = name.len();
        if len == 0 || len > MAX_TOPIC_LEN {
            return None;
        }
        let mut bytes = [0; MAX_TOPIC_LEN];
        bytes[..len].copy_from_slice(name.as_bytes());
        let len = u8::try_from(len).ok()?;
        Some(TopicKey {
            hash: self.hasher.hash_one(name),
            len,
            bytes,
        })
    }

    pub(crate) fn shard_of_key(&self, key: &TopicKey) -> ShardId {
        // Lemire's range reduction: uniform for a uniform hash, no division.
        let shard = (u128::from(key.hash) * self.shards as u128) >> 64;
        ShardId(shard as usize)
    }

    /// Hashes a name, or the typed error for a name that is empty or too long.
    pub(crate) fn key_or_error(&self, name: &str) -> Result<TopicKey, Error> {
        self.key(name).ok_or(Error::InvalidTopic {
            len: name.len(),
            max: MAX_TOPIC_LEN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(r: &Router, name: &str) -> ShardId {
        r.shard_of_key(&r.key(name).unwrap())
    }

    #[test]
    fn same_topic_same_shard_across_routers() {
        let a = Router::new(8);
        let b = Router::new(8);
        for i in 0..1000 {
            let name = format!("topic-{i}");
            assert_eq!(shard(&a, &name), shard(&b, &name));
        }
    }

    #[test]
    fn shards_are_all_used_and_in_range() {
        let r = Router::new(4);
        let mut seen = [0usize; 4];
        for i in 0..4000 {
            seen[shard(&r, &format!("t{i}")).0] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }

    #[test]
    fn names_round_trip_and_limits() {
        let r = Router::new(2);
        let long = "x".repeat(MAX_TOPIC_LEN);
        assert_eq!(r.key(&long).unwrap().as_str(), long);
        assert_eq!(r.key("é-topic").unwrap().as_str(), "é-topic");
        assert!(matches!(
            r.key_or_error(""),
            Err(Error::InvalidTopic { len: 0, .. })
        ));
        let too_long = "x".repeat(MAX_TOPIC_LEN + 1);
        assert!(matches!(
            r.key_or_error(&too_long),
            Err(Error::InvalidTopic { len: 56, .. })
        ));
    }

    /// The routing of this build, pinned: names and their shards for 2, 3, 8 and 64 shards,
    /// computed once and pasted. If this fails, topic → shard routing changed (an ahash
    /// upgrade, other CPU features such as AES, a change to the seeds or the reduction):
    /// in-process behaviour is unaffected, but a persistent bus reopened by the new build
    /// re-routes its records on replay (see "Routing changes" in `docs/persistence.md`).
    /// Update the table only on purpose, and say so in the changelog.
    #[test]
    fn routing_is_pinned_for_a_fixed_table_of_topics() {
        const TABLE: [(&str, [usize; 4]); 16] = [
            ("a", [0, 1, 3, 30]),
            ("orders", [0, 0, 1, 8]),
            ("payments", [1, 1, 4, 34]),
            ("user.created", [0, 0, 0, 6]),
            ("user.deleted", [1, 1, 4, 34]),
            ("metrics/cpu", [0, 1, 3, 31]),
            ("metrics/mem", [1, 2, 7, 60]),
            ("topic-0", [0, 0, 0, 2]),
            ("topic-1", [0, 0, 0, 3]),
            ("topic-15", [1, 2, 5, 47]),
            ("ticks", [0, 0, 0, 0]),
            ("é-topic", [1, 2, 5, 47]),
            ("日本語", [1, 1, 4, 37]),
            ("x", [1, 1, 4, 39]),
            ("Orders", [0, 0, 0, 4]),
            (
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                [1, 1, 5, 41],
            ),
        ];
        let routers = [2, 3, 8, 64].map(Router::new);
        let mut changed = Vec::new();
        for (name, expected) in TABLE {
            let got = routers.clone().map(|r| shard(&r, name).0);
            if got != expected {
                changed.push((name, expected, got));
            }
        }
        assert!(
            changed.is_empty(),
            "routing changed for (name, pinned shards for 2/3/8/64, now): {changed:?}"
        );
    }

    #[test]
    fn keys_compare_by_name() {
        let r = Router::new(1);
        assert_eq!(r.key("a").unwrap(), r.key("a").unwrap());
        assert_ne!(r.key("a").unwrap(), r.key("b").unwrap());
    }
}
