//! The key hash of keyed publishes: which partition a key's messages go to.
//!
//! A key is hashed through its `Hash` impl into [`KeyHasher`]: every integer the impl
//! writes (`write_u64`, `write_u32`, …, as the integers, `char`, `bool` and the integer
//! fields of a derived `Hash` do) is mixed in with one multiply by the 64-bit golden-ratio
//! constant, `h = (h.rotate_left(5) ^ n) * 0x9E37_79B9_7F4A_7C15`, starting from `h = 0`;
//! every byte slice (`str`, `String`, `[u8]`) is first hashed with the router's ahash
//! under its fixed keys and mixed in the same way. The partition is then the top of the
//! hash, `(h as u128 * partitions as u128) >> 64` (multiply-shift, no division).
//!
//! For an integer key that is Fibonacci hashing: the partition of `n` is the top bits of
//! `n * 0x9E37_79B9_7F4A_7C15`, two multiplies in all, which spreads sequential keys
//! evenly over the partitions and depends on nothing but the key and the partition count
//! (not on the ahash version or the CPU's features). A key with byte slices in it
//! depends on ahash's output, the same in every process of one build.

use std::hash::Hasher;

/// The golden-ratio multiplier of Fibonacci hashing: odd, so multiplying by it is a
/// bijection of `u64`, and its top bits spread consecutive integers evenly.
const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// The hasher a key's `Hash` impl writes into (see the module docs).
pub(crate) struct KeyHasher<'a> {
    h: u64,
    /// Hashes byte slices (the router's fixed-key ahash).
    bytes: &'a ahash::RandomState,
}

impl<'a> KeyHasher<'a> {
    #[inline(always)]
    pub(crate) fn new(bytes: &'a ahash::RandomState) -> Self {
        Self { h: 0, bytes }
    }

    #[inline(always)]
    fn mix(&mut self, n: u64) {
        self.h = (self.h.rotate_left(5) ^ n).wrapping_mul(K);
    }
}

impl Hasher for KeyHasher<'_> {
    #[inline(always)]
    fn finish(&self) -> u64 {
        self.h
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let n = self.bytes.hash_one(bytes);
        self.mix(n);
    }

    #[inline(always)]
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    #[inline(always)]
    fn write_u16(&mut self, n: u16) {
        self.mix(u64::from(n));
    }

    #[inline(always)]
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    #[inline(always)]
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    #[inline(always)]
    fn write_u128(&mut self, n: u128) {
        self.mix(n as u64);
        self.mix((n >> 64) as u64);
    }

    #[inline(always)]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    // The signed forms write their two's-complement bits, as std's defaults do, but
    // without going through `write` (a byte slice).
    #[inline(always)]
    fn write_i8(&mut self, n: i8) {
        self.write_u8(n as u8);
    }

    #[inline(always)]
    fn write_i16(&mut self, n: i16) {
        self.write_u16(n as u16);
    }

    #[inline(always)]
    fn write_i32(&mut self, n: i32) {
        self.write_u32(n as u32);
    }

    #[inline(always)]
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }

    #[inline(always)]
    fn write_i128(&mut self, n: i128) {
        self.write_u128(n as u128);
    }

    #[inline(always)]
    fn write_isize(&mut self, n: isize) {
        self.write_usize(n as usize);
    }
}

/// Reduces a key hash onto `0..partitions`: the top of the hash (multiply-shift).
#[inline(always)]
pub(crate) fn reduce(hash: u64, partitions: u16) -> u16 {
    ((u128::from(hash) * u128::from(partitions)) >> 64) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    fn hash(key: impl Hash) -> u64 {
        let state = ahash::RandomState::with_seeds(1, 2, 3, 4);
        let mut h = KeyHasher::new(&state);
        key.hash(&mut h);
        h.finish()
    }

    #[test]
    fn integer_keys_are_one_multiply_and_fixed() {
        // Pinned: the partition of an integer key depends on nothing else.
        assert_eq!(hash(0u64), 0);
        assert_eq!(hash(1u64), K);
        assert_eq!(hash(7u32), 7u64.wrapping_mul(K));
        assert_eq!(hash(-1i32), u64::from(u32::MAX).wrapping_mul(K));
        assert_eq!(reduce(hash(1u64), 64), 39);
        assert_eq!(reduce(hash(2u64), 64), 15);
        assert_eq!(reduce(u64::MAX, 64), 63);
        assert_eq!(reduce(0, 1), 0);
    }

    #[test]
    fn composite_and_byte_keys_mix_every_part() {
        assert_ne!(hash((1u32, 2u32)), hash((2u32, 1u32)));
        assert_ne!(hash("orders"), hash("orderz"));
        assert_ne!(hash("ab"), hash(("a", "b")));
        assert_eq!(hash("orders"), hash(String::from("orders")));
    }

    #[test]
    fn sequential_integer_keys_spread_evenly() {
        // 1,024 sequential keys over 64 partitions: 16 each on average; Fibonacci hashing
        // keeps every partition within 15..=18 (exact, deterministic).
        let mut counts = [0u32; 64];
        for k in 0..1024u64 {
            counts[usize::from(reduce(hash(k), 64))] += 1;
        }
        assert_eq!(counts.iter().sum::<u32>(), 1024);
        assert_eq!(counts.iter().min(), Some(&15));
        assert_eq!(counts.iter().max(), Some(&18));
        // And over a partition count that is not a power of two.
        let mut counts = [0u32; 10];
        for k in 0..1000u64 {
            counts[usize::from(reduce(hash(k), 10))] += 1;
        }
        assert_eq!(counts, [100, 100, 100, 99, 101, 100, 99, 101, 100, 100]);
    }
}
