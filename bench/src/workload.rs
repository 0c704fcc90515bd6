//! What a benchmark run publishes: the [`Workload`] description, the deterministic [`Plan`]
//! generated from it before timing starts, and the [`BenchMsg`] that travels through every peer.

use std::fmt;
use std::time::Instant;

/// Payload sizes in bytes that [`BenchMsg`] is instantiated for (`Workload::payload` must be one).
pub const PAYLOADS: [usize; 2] = [16, 256];

/// How each producer picks the topic of its next message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distribution {
    /// Every topic equally likely.
    Uniform,
    /// Topic `k` (0-based) with probability proportional to `1 / (k + 1)^s`; topic 0 is the hottest.
    Zipf(f64),
}

/// A benchmark workload: who publishes how much to which topics.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Number of publishing threads (at most `u16::MAX`).
    pub producers: usize,
    /// Number of topics, named `"topic-{i}"` for `i` in `0..topics`.
    pub topics: usize,
    /// Total messages over all producers; producer `p` publishes [`Workload::producer_messages`].
    pub messages: u64,
    /// Payload bytes per message: one of [`PAYLOADS`].
    pub payload: usize,
    /// Topic choice per message.
    pub distribution: Distribution,
    /// Seed of the topic streams: the same workload and seed give the same plan.
    pub seed: u64,
}

/// Why a [`Workload`] cannot be planned.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkloadError {
    /// `producers` is 0 or above `u16::MAX`.
    Producers(usize),
    /// `topics` is 0 or above `u32::MAX`.
    Topics(usize),
    /// `payload` is not one of [`PAYLOADS`].
    Payload(usize),
    /// The Zipf exponent is negative or not finite.
    ZipfExponent(f64),
}

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Producers(n) => write!(f, "producers must be in 1..={}, got {n}", u16::MAX),
            Self::Topics(n) => write!(f, "topics must be in 1..={}, got {n}", u32::MAX),
            Self::Payload(n) => write!(f, "payload must be one of {PAYLOADS:?} bytes, got {n}"),
            Self::ZipfExponent(s) => write!(f, "zipf exponent must be finite and >= 0, got {s}"),
        }
    }
}

impl std::error::Error for WorkloadError {}

/// The name of topic `i`.
pub fn topic_name(i: usize) -> String {
    format!("topic-{i}")
}

impl Workload {
    /// Checks every field; [`Workload::plan`] calls it.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        if self.producers == 0 || self.producers > usize::from(u16::MAX) {
            return Err(WorkloadError::Producers(self.producers));
        }
        if self.topics == 0 || u32::try_from(self.topics).is_err() {
            return Err(WorkloadError::Topics(self.topics));
        }
        if !PAYLOADS.contains(&self.payload) {
            return Err(WorkloadError::Payload(self.payload));
        }
        match self.distribution {
            Distribution::Zipf(s) if !(s.is_finite() && s >= 0.0) => {
                Err(WorkloadError::ZipfExponent(s))
            }
            _ => Ok(()),
        }
    }

    /// Messages producer `p` publishes: an even split, the first `messages % producers` get one more.
    pub fn producer_messages(&self, p: usize) -> u64 {
        let n = self.producers as u64;
        self.messages / n + u64::from((p as u64) < self.messages % n)
    }

    /// All topic names, index = topic id.
    pub fn topic_names(&self) -> Vec<String> {
        (0..self.topics).map(topic_name).collect()
    }

    /// Generates every producer's topic stream (the expensive part, done before timing) and the
    /// per-(producer, topic) message counts the checkers verify against.
    pub fn plan(&self) -> Result<Plan, WorkloadError> {
        self.validate()?;
        let zipf = match self.distribution {
            Distribution::Uniform => None,
            Distribution::Zipf(s) => Some(Zipf::new(self.topics, s)),
        };
        let mut counts = vec![0u64; self.producers * self.topics];
        let publishers = (0..self.producers)
            .map(|p| {
                let mut rng = SplitMix64::for_stream(self.seed, p as u64);
                let topics: Vec<u32> = (0..self.producer_messages(p))
                    .map(|_| match &zipf {
                        Some(z) => z.sample(&mut rng),
                        None => rng.below(self.topics as u32),
                    })
                    .collect();
                let row = &mut counts[p * self.topics..][..self.topics];
                for &t in &topics {
                    row[t as usize] += 1;
                }
                Publisher {
                    // Cannot truncate: validate() bounds producers by u16::MAX.
                    producer: p as u16,
                    topics,
                    next_seq: vec![0; self.topics],
                }
            })
            .collect();
        Ok(Plan {
            publishers,
            expected: Expected {
                producers: self.producers,
                topics: self.topics,
                counts,
            },
        })
    }
}

/// A generated workload: one [`Publisher`] per producer thread, and what the handlers must see.
#[derive(Debug)]
pub struct Plan {
    /// Producer `p` at index `p`; each moves into its producer thread.
    pub publishers: Vec<Publisher>,
    /// Message counts per (producer, topic), shared by the checkers.
    pub expected: Expected,
}

/// One producer's pre-generated topic stream. Sequence numbers are dense per (producer, topic):
/// the `k`-th message this producer sends to topic `t` has `seq == k`.
#[derive(Debug)]
pub struct Publisher {
    producer: u16,
    topics: Vec<u32>,
    next_seq: Vec<u64>,
}

impl Publisher {
    /// The producer index stamped into every message.
    pub fn producer(&self) -> u16 {
        self.producer
    }

    /// The topic index of each message, in publication order.
    pub fn topics(&self) -> &[u32] {
        &self.topics
    }

    /// Builds every message in order and hands it to `send`. One message in `sampling.every` is
    /// stamped with the publish time (`sent_at != 0`); the rest carry 0 and cost no clock read.
    pub fn publish_all<const N: usize>(
        mut self,
        sampling: Sampling,
        mut send: impl FnMut(BenchMsg<N>),
    ) {
        // Counts down to the next sampled message; with sampling off it never reaches 0.
        let mut countdown = if sampling.every == 0 { u64::MAX } else { 1 };
        for &topic in &self.topics {
            let seq = &mut self.next_seq[topic as usize];
            countdown -= 1;
            let sent_at = if countdown == 0 {
                countdown = sampling.every;
                sampling.now_ns()
            } else {
                0
            };
            send(BenchMsg {
                producer: self.producer,
                topic,
                seq: *seq,
                sent_at,
                payload: [0; N],
            });
            *seq += 1;
        }
    }
}

/// How many messages each (producer, topic) pair carries in a [`Plan`].
#[derive(Clone, Debug)]
pub struct Expected {
    producers: usize,
    topics: usize,
    /// `counts[p * topics + t]`.
    counts: Vec<u64>,
}

impl Expected {
    /// Number of producers.
    pub fn producers(&self) -> usize {
        self.producers
    }

    /// Number of topics.
    pub fn topics(&self) -> usize {
        self.topics
    }

    /// Messages producer `p` sends to topic `t` (0 when either is out of range).
    pub fn count(&self, p: usize, t: usize) -> u64 {
        if p < self.producers && t < self.topics {
            self.counts[p * self.topics + t]
        } else {
            0
        }
    }
}

/// Latency sampling: a time base shared by publishers and handlers, and the sampling period.
///
/// Only every `every`-th message of each producer is stamped (`every == 0` turns sampling off),
/// so `Instant::now()` stays off the hot path of all other messages; a handler reads the clock
/// only for stamped messages. Samples measure publish → handler entry in ns, which includes
/// routing and queueing. The default period used by the peers is 64.
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    base: Instant,
    every: u64,
}

impl Sampling {
    /// A new time base starting now, stamping one message in `every` (0 = none).
    pub fn new(every: u64) -> Self {
        Self {
            base: Instant::now(),
            every,
        }
    }

    /// The sampling period.
    pub fn every(&self) -> u64 {
        self.every
    }

    /// Nanoseconds since the base, at least 1 (0 means "not sampled" in [`BenchMsg::sent_at`]).
    pub fn now_ns(&self) -> u64 {
        // Truncation is harmless: u64 nanoseconds last 584 years.
        (self.base.elapsed().as_nanos() as u64).max(1)
    }
}

/// The message every peer moves: fixed size, `Copy`, no heap allocation. `N` is the payload size
/// (see [`PAYLOADS`]): 40 bytes in total for `N = 16`, 280 for `N = 256`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchMsg<const N: usize> {
    /// Producer index.
    pub producer: u16,
    /// Topic index; its name is [`topic_name`]`(topic)`.
    pub topic: u32,
    /// Sequence number, dense per (producer, topic).
    pub seq: u64,
    /// Publish time in ns from the run's [`Sampling`] base; 0 when this message is not sampled.
    pub sent_at: u64,
    /// Opaque payload bytes.
    pub payload: [u8; N],
}

impl<const N: usize> BenchMsg<N> {
    /// An all-zero message, for pre-filling ring slots.
    pub const ZERO: Self = Self {
        producer: 0,
        topic: 0,
        seq: 0,
        sent_at: 0,
        payload: [0; N],
    };
}

/// SplitMix64: tiny, fast, and good enough to pick topics.
struct SplitMix64(u64);

impl SplitMix64 {
    /// Stream `stream` of `seed`: the state starts at a mixed point of the 2^64 cycle so that
    /// streams do not overlap in practice (seeding `seed + stream` would only shift one stream).
    fn for_stream(seed: u64, stream: u64) -> Self {
        Self(mix(seed ^ mix(stream.wrapping_add(1))))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` by multiply-high (bias below 2^-32 for `n < 2^32`).
    fn below(&mut self, n: u32) -> u32 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u32
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The SplitMix64 finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Zipf(s) over `0..n` by inverse transform: a precomputed CDF and a binary search per sample.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += (k as f64).powf(-s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut SplitMix64) -> u32 {
        let u = rng.unit();
        // First k with cdf[k] > u; the min() guards against the last entry rounding below 1.0.
        let k = self
            .cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1);
        // Cannot truncate: validate() bounds topics by u32::MAX.
        k as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(distribution: Distribution) -> Workload {
        Workload {
            producers: 3,
            topics: 64,
            messages: 30_001,
            payload: 16,
            distribution,
            seed: 7,
        }
    }

    #[test]
    fn zipf_favours_topic_zero_stays_in_range_and_is_deterministic() {
        let zipf = Zipf::new(64, 1.0);
        let mut rng = SplitMix64::for_stream(42, 0);
        let mut hist = [0u64; 64];
        for _ in 0..200_000 {
            hist[zipf.sample(&mut rng) as usize] += 1;
        }
        let top = (0..64).max_by_key(|&k| hist[k]).unwrap();
        assert_eq!(top, 0);
        // Zipf(1): p0 = 2 p1 = 64 p63; leave room for sampling noise.
        assert!(
            hist[0] > hist[1] * 3 / 2 && hist[1] > hist[63] * 16,
            "{hist:?}"
        );
        assert!(hist.iter().all(|&n| n > 0), "every topic drawn: {hist:?}");

        let draw = |seed| {
            let mut rng = SplitMix64::for_stream(seed, 3);
            (0..1000).map(|_| zipf.sample(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(9), draw(9));
        assert_ne!(draw(9), draw(10));
    }

    #[test]
    fn plan_is_deterministic_and_counts_match_streams() {
        for dist in [Distribution::Uniform, Distribution::Zipf(1.0)] {
            let w = workload(dist);
            let a = w.plan().unwrap();
            let b = w.plan().unwrap();
            assert_eq!(a.publishers.len(), 3);
            let mut total = 0;
            for (p, (x, y)) in a.publishers.iter().zip(&b.publishers).enumerate() {
                assert_eq!(x.topics(), y.topics());
                assert_eq!(x.topics().len() as u64, w.producer_messages(p));
                assert!(x.topics().iter().all(|&t| (t as usize) < w.topics));
                for t in 0..w.topics {
                    let n = x.topics().iter().filter(|&&u| u as usize == t).count() as u64;
                    assert_eq!(a.expected.count(p, t), n);
                    total += n;
                }
            }
            assert_eq!(total, w.messages);
            assert_ne!(a.publishers[0].topics(), a.publishers[1].topics());
        }
    }

    #[test]
    fn publish_all_numbers_densely_and_samples_every_kth() {
        let w = workload(Distribution::Zipf(1.0));
        let mut plan = w.plan().unwrap();
        let publisher = plan.publishers.remove(1);
        let topics = publisher.topics().to_vec();
        let mut next = vec![0u64; w.topics];
        let mut sampled = 0;
        let mut i = 0;
        publisher.publish_all::<16>(Sampling::new(8), |m| {
            assert_eq!((m.producer, m.topic), (1, topics[i]));
            assert_eq!(m.seq, next[m.topic as usize]);
            next[m.topic as usize] += 1;
            assert_eq!(m.sent_at != 0, i % 8 == 0);
            sampled += u64::from(m.sent_at != 0);
            i += 1;
        });
        assert_eq!(i, topics.len());
        assert_eq!(sampled, (topics.len() as u64).div_ceil(8));
    }

    #[test]
    fn invalid_workloads_are_errors() {
        let ok = workload(Distribution::Uniform);
        let bad = [
            (
                Workload {
                    producers: 0,
                    ..ok.clone()
                },
                WorkloadError::Producers(0),
            ),
            (
                Workload {
                    topics: 0,
                    ..ok.clone()
                },
                WorkloadError::Topics(0),
            ),
            (
                Workload {
                    payload: 17,
                    ..ok.clone()
                },
                WorkloadError::Payload(17),
            ),
            (
                Workload {
                    distribution: Distribution::Zipf(-1.0),
                    ..ok.clone()
                },
                WorkloadError::ZipfExponent(-1.0),
            ),
        ];
        for (w, e) in bad {
            assert_eq!(w.plan().unwrap_err(), e);
        }
    }
}
