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
    /// The partition of a partitioned topic ([`crate::partition`]), or [`NO_PART`] for a
    /// plain topic: `("orders", 3)` and `"orders"` are distinct topics.
    part: u16,
    /// Bytes of the record name's suffix after the name (0 for a plain topic).
    rec_extra: u8,
}

pub(crate) use crate::log::PART_MARK;

/// The longest name of a partitioned topic ([`Bus::subscribe_partitioned`](crate::Bus::subscribe_partitioned)),
/// in bytes: [`MAX_TOPIC_LEN`] less room for the partition's number, which a persistent
/// bus's records carry after the name (`docs/persistence.md`, "Partition records").
pub const MAX_PARTITIONED_TOPIC_LEN: usize = MAX_TOPIC_LEN - 7;

/// [`TopicKey::part`] of a plain topic.
pub(crate) const NO_PART: u16 = u16::MAX;

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

    /// The topic as its log records name it: the name, and for a partition the marker
    /// [`PART_MARK`] and the partition's number in decimal (kept in the inline bytes after
    /// the name; see [`Router::record_key`]).
    pub(crate) fn record_name(&self) -> &str {
        let end = usize::from(self.len) + usize::from(self.rec_extra);
        // The key owns its inline bytes, and `bytes[..len + rec_extra]` is UTF-8: the name
        // (see `as_str`) followed by the ASCII suffix `with_part` wrote.
        // SAFETY: by the ownership stated in the lines just above.
        unsafe { std::str::from_utf8_unchecked(&self.bytes[..end]) }
    }

    /// The partition of a partitioned topic, `None` for a plain one.
    pub(crate) fn part(&self) -> Option<u16> {
        (self.part != NO_PART).then_some(self.part)
    }

    /// The key of partition `part` of this topic: the same name and its own hash (the
    /// name's mixed with the partition, arithmetic only: no rehash of the name). `None` if
    /// the name is too long to leave room for the record name's suffix (longer than
    /// [`MAX_PARTITIONED_TOPIC_LEN`]). The suffix itself is written by
    /// [`with_record_name`](Self::with_record_name), once, when the registry interns it.
    #[inline]
    pub(crate) fn with_part(&self, part: u16) -> Option<TopicKey> {
        if usize::from(self.len) > MAX_PARTITIONED_TOPIC_LEN {
            return None;
        }
        let mix = (u64::from(part) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Some(TopicKey {
            hash: self.name_hash() ^ mix.rotate_left(29),
            part,
            rec_extra: 0,
            ..*self
        })
    }

    /// This key with its record name ([`record_name`](Self::record_name)) written after
    /// the name: for a partition, [`PART_MARK`] and the number in decimal. Equality and
    /// hashing ignore it.
    pub(crate) fn with_record_name(&self) -> TopicKey {
        let Some(part) = self.part() else {
            return *self;
        };
        let len = usize::from(self.len);
        let mut key = *self;
        let mut digits = [0u8; 5];
        let mut n = part;
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let suffix = &digits[at..];
        // `with_part` left room: `len <= MAX_PARTITIONED_TOPIC_LEN`.
        key.bytes[len..len + PART_MARK.len()].copy_from_slice(PART_MARK.as_bytes());
        let from = len + PART_MARK.len();
        key.bytes[from..from + suffix.len()].copy_from_slice(suffix);
        key.rec_extra = (PART_MARK.len() + suffix.len()) as u8;
        key
    }

    /// The hash of the name alone (what routes the plain topic).
    fn name_hash(&self) -> u64 {
        match self.part() {
            None => self.hash,
            Some(part) => {
                let mix = (u64::from(part) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                self.hash ^ mix.rotate_left(29)
            }
        }
    }
    /// All the inline bytes: the name, then zeros (or, in a partition's interned key, its
    /// record name's suffix: compare only the name's length of them).
    pub(crate) fn inline_bytes(&self) -> &[u8; MAX_TOPIC_LEN] {
        &self.bytes
    }

    /// A key that names no topic (a placeholder in an empty cache slot).
    pub(crate) const EMPTY: Self = Self {
        hash: 0,
        len: 0,
        bytes: [0; MAX_TOPIC_LEN],
        part: NO_PART,
        rec_extra: 0,
    };
}

impl PartialEq for TopicKey {
    fn eq(&self, other: &Self) -> bool {
        // The partition needs no compare of its own: a partition's hash is its name's XOR a
        // non-zero mix of the partition number (`with_part`), injective in the number, so
        // two keys of one name with equal hashes have the same partition.
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
        match self.part() {
            None => f.debug_tuple("TopicKey").field(&self.as_str()).finish(),
            Some(part) => f
                .debug_tuple("TopicKey")
                .field(&self.as_str())
                .field(&part)
                .finish(),
        }
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
    /// The partition count of every partitioned topic of the bus
    /// (`Builder::partitions`).
    partitions: u16,
}

impl Router {
    pub(crate) fn new(shards: usize) -> Self {
        let [k0, k1, k2, k3] = ROUTE_SEEDS;
        Self {
            hasher: ahash::RandomState::with_seeds(k0, k1, k2, k3),
            shards,
            partitions: crate::partition::DEFAULT_PARTITIONS,
        }
    }

    /// This router with `partitions` partitions per partitioned topic (at least 1,
    /// checked by the builder).
    pub(crate) fn with_partitions(mut self, partitions: u16) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// The partition count of every partitioned topic.
    pub(crate) fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The shard of partition `part` of any partitioned topic: partitions go to shards in
    /// contiguous, even runs, `part * shards / partitions`, whatever the topic's name.
    pub(crate) fn shard_of_part(&self, part: u16) -> ShardId {
        let part = usize::from(part % self.partitions);
        ShardId(part * self.shards / usize::from(self.partitions))
    }

    /// The partition of a key: the key hashed once with the key hash (integers by one
    /// multiply each, byte slices with the routing hash; see `partition::key`), reduced
    /// onto `0..partitions` by multiply-shift.
    #[inline(always)]
    pub(crate) fn part_of<K: Hash>(&self, key: K) -> u16 {
        let mut hasher = crate::partition::KeyHasher::new(&self.hasher);
        key.hash(&mut hasher);
        crate::partition::reduce(hasher.finish(), self.partitions)
    }

    /// A router with other keys: a stand-in for another build's routing (another ahash
    /// version or CPU feature set), for tests of what a routing change does.
    #[cfg(test)]
    pub(crate) fn with_seeds(shards: usize, [k0, k1, k2, k3]: [u64; 4]) -> Self {
        Self {
            hasher: ahash::RandomState::with_seeds(k0, k1, k2, k3),
            shards,
            partitions: crate::partition::DEFAULT_PARTITIONS,
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
            part: NO_PART,
            rec_extra: 0,
        })
    }

    /// The key of a log record's topic field: a plain name, or a partition's record name
    /// (`name`, [`PART_MARK`], decimal number; see [`TopicKey::record_name`]), whose
    /// partition is taken modulo this bus's partition count. `None` if invalid.
    pub(crate) fn record_key(&self, topic: &str) -> Option<TopicKey> {
        match crate::log::split_partition(topic) {
            // A name too long for a partition was never written as one: a plain topic's
            // record (from a build that accepted a NUL in a name), replayed as it reads.
            (name, Some(part)) => match self.key(name)?.with_part(part % self.partitions) {
                Some(key) => Some(key),
                None => self.key(topic),
            },
            (name, None) => self.key(name),
        }
    }

    pub(crate) fn shard_of_key(&self, key: &TopicKey) -> ShardId {
        if let Some(part) = key.part() {
            return self.shard_of_part(part);
        }
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
    fn a_record_name_too_long_for_a_partition_is_read_as_a_plain_topic() {
        // A build that accepted a NUL in a plain name could log one that reads like a
        // partition's record name; recovery takes it as the plain topic it was.
        let r = Router::new(2).with_partitions(64);
        let name = format!("{}\0p1", "x".repeat(MAX_PARTITIONED_TOPIC_LEN + 2));
        let key = r.record_key(&name).expect("a plain key");
        assert_eq!(key.part(), None);
        assert_eq!(key.as_str(), name);
        // A real partition's record name still reads as its partition.
        let part = r.record_key("orders\0p5").expect("a partition key");
        assert_eq!(part.part(), Some(5));
        assert_eq!(part.as_str(), "orders");
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
    fn partition_keys_round_trip_through_their_record_names() {
        let r = Router::new(3).with_partitions(1000);
        let name = "x".repeat(MAX_PARTITIONED_TOPIC_LEN);
        for part in [0, 7, 10, 999] {
            for name in ["orders", name.as_str()] {
                let plain = r.key(name).unwrap();
                let key = plain.with_part(part).unwrap();
                assert_ne!(key, plain, "a partition is another topic");
                assert_eq!(key.as_str(), name);
                assert_eq!(key.record_name(), name, "no suffix until interned");
                let sealed = key.with_record_name();
                assert_eq!(sealed, key, "equality ignores the record name");
                assert_eq!(sealed.record_name(), format!("{name}\0p{part}"));
                let back = r.record_key(sealed.record_name()).unwrap();
                assert_eq!((back, back.part()), (key, Some(part)));
                assert_eq!(r.shard_of_key(&back).0, part as usize * 3 / 1000);
            }
        }
        // Another partition count: the partition modulo it.
        let r8 = Router::new(2).with_partitions(8);
        assert_eq!(r8.record_key("orders\0p13").unwrap().part(), Some(5));
        // Plain names stay plain; a name too long for a partition has none.
        assert_eq!(r.record_key("orders").unwrap().part(), None);
        assert_eq!(r.record_key("orders\0px").unwrap().part(), None);
        let long = r.key(&"x".repeat(MAX_PARTITIONED_TOPIC_LEN + 1)).unwrap();
        assert!(long.with_part(0).is_none());
    }

    #[test]
    fn keys_compare_by_name() {
        let r = Router::new(1);
        assert_eq!(r.key("a").unwrap(), r.key("a").unwrap());
        assert_ne!(r.key("a").unwrap(), r.key("b").unwrap());
    }
}
