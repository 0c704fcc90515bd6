//! Handler-side verification: a [`Checker`] per handler thread records exactly-once, per-stream
//! order and sampled latency; the checkers of a run merge into one [`Verdict`]. With
//! [`Consume::Checksum`] a checker only counts and sums what it handles, and the verdict compares
//! each checker's count and sum with the plan's.

use std::time::Instant;

use hdrhistogram::Histogram;

use crate::workload::{BenchMsg, Expected, Sampling};

mod checksum;

use checksum::stream_checksum;
pub use checksum::{checksum_term, Consume};

/// Marks a topic that this checker does not own in [`Checker::slots`].
const NOT_OWNED: u32 = u32::MAX;

/// One handler thread's record of what it handled.
///
/// A checker owns a set of topics (all of them for a single consumer, one for a seed handler
/// thread, the shard's share for a router shard); its memory is one bit per message it expects
/// plus the latency samples, so thousands of checkers stay cheap. The topic sets of the checkers
/// merged into one [`Verdict`] must be disjoint. All allocation happens in [`Checker::new`],
/// before timing; [`Checker::record`] does no clock read for unsampled messages.
#[derive(Debug)]
pub struct Checker {
    sampling: Sampling,
    producers: usize,
    /// Lowest owned topic; `slots` covers `first..=last owned`.
    first: u32,
    /// Local index of topic `first + i`, or [`NOT_OWNED`].
    slots: Vec<u32>,
    /// Stream `local * producers + producer`.
    streams: Vec<Stream>,
    /// One bit per expected message; stream `s` starts at word `streams[s].word`.
    seen: Vec<u64>,
    expected: u64,
    handled: u64,
    duplicates: u64,
    order_violations: u64,
    unexpected: u64,
    /// Publish → handler-entry latencies (ns) of sampled messages; a histogram is built at merge.
    samples: Vec<u64>,
    done_at: Option<Instant>,
    /// [`Consume::Checksum`]: `record` only counts and adds to `sum`.
    checksum_only: bool,
    /// Wrapping sum of [`checksum_term`] over the handled messages (checksum mode only).
    sum: u64,
    /// What `sum` must be once the owned topics' planned messages were all handled.
    expected_sum: u64,
}

/// The messages of one (producer, topic) pair.
///
/// A stream starts in order: while every message so far was `0, 1, .., next_min - 1`, exactly
/// once and in that order, its bits in [`Checker::seen`] are not kept (they would all be set
/// below `next_min`), so a correct delivery touches only this struct. The first message that
/// is not `next_min` sets those bits and switches the stream to the bitset for good; the counts
/// come out the same as if the bits had been kept all along.
#[derive(Debug)]
struct Stream {
    /// Every later message must have `seq >= next_min` (strict order: last seen + 1).
    next_min: u64,
    count: u64,
    word: usize,
    /// Whether the bits in `seen` are kept (since the first out-of-order message).
    tracked: bool,
}

impl Checker {
    /// A checker for the topics in `owned` (ids outside the workload are ignored).
    pub fn new(
        expected: &Expected,
        owned: impl IntoIterator<Item = u32>,
        sampling: Sampling,
    ) -> Self {
        let producers = expected.producers();
        let mut owned: Vec<u32> = owned
            .into_iter()
            .filter(|&t| (t as usize) < expected.topics())
            .collect();
        owned.sort_unstable();
        owned.dedup();
        let first = owned.first().copied().unwrap_or(0);
        let span = owned.last().map_or(0, |&last| (last - first) as usize + 1);
        let mut slots = vec![NOT_OWNED; span];
        let mut streams = Vec::with_capacity(owned.len() * producers);
        let mut words = 0;
        let mut total = 0;
        let mut expected_sum = 0u64;
        for (local, &t) in owned.iter().enumerate() {
            // Cannot truncate: there are at most u32::MAX topics.
            slots[(t - first) as usize] = local as u32;
            for p in 0..producers {
                let count = expected.count(p, t as usize);
                streams.push(Stream {
                    next_min: 0,
                    count,
                    word: words,
                    tracked: false,
                });
                words += count.div_ceil(64) as usize;
                total += count;
                expected_sum = expected_sum.wrapping_add(stream_checksum(p, t, count));
            }
        }
        let samples = match sampling.every() {
            0 => 0,
            k => total / k + producers as u64,
        };
        Self {
            sampling,
            producers,
            first,
            slots,
            streams,
            seen: vec![0; words],
            expected: total,
            handled: 0,
            duplicates: 0,
            order_violations: 0,
            unexpected: 0,
            samples: Vec::with_capacity(samples as usize),
            done_at: None,
            checksum_only: false,
            sum: 0,
            expected_sum,
        }
    }

    /// Switches this checker to `consume` (call it before the run). [`Consume::Checksum`] frees
    /// the bitset and the latency buffer: [`Checker::record`] then only counts and sums.
    pub fn consuming(mut self, consume: Consume) -> Self {
        self.checksum_only = consume == Consume::Checksum;
        if self.checksum_only {
            self.seen = Vec::new();
            self.samples = Vec::new();
        }
        self
    }

    /// Whether this checker only counts and sums ([`Consume::Checksum`]).
    pub fn consume(&self) -> Consume {
        if self.checksum_only {
            Consume::Checksum
        } else {
            Consume::Verify
        }
    }

    /// A checker that owns every topic (single-consumer peers).
    pub fn for_all(expected: &Expected, sampling: Sampling) -> Self {
        // Cannot truncate: there are at most u32::MAX topics.
        Self::new(expected, 0..expected.topics() as u32, sampling)
    }

    /// Records one handled message; call it first thing in the handler. Always inlined, so
    /// every runner's handler pays the same for it whatever the compiler's unit layout (left
    /// to `#[inline]`, it was inlined or called depending on how the crate was split).
    ///
    /// With [`Consume::Checksum`] it adds [`checksum_term`] to a sum and counts, nothing else
    /// (one predictable branch ahead of the verifying path).
    #[inline(always)]
    pub fn record<const N: usize>(&mut self, msg: &BenchMsg<N>) {
        if self.checksum_only {
            self.sum = self.sum.wrapping_add(checksum_term(msg));
            self.handled += 1;
            self.finish_if_done();
            return;
        }
        if msg.sent_at != 0 {
            let now = self.sampling.now_ns();
            self.samples.push(now.saturating_sub(msg.sent_at));
        }
        self.handled += 1;
        match self.stream(msg.producer, msg.topic) {
            Some(s) if msg.seq < self.streams[s].count => {
                let stream = &mut self.streams[s];
                if !stream.tracked {
                    if msg.seq == stream.next_min {
                        // In order so far: nothing else to note.
                        stream.next_min += 1;
                        self.finish_if_done();
                        return;
                    }
                    // Every seq below `next_min` was seen exactly once: set their bits.
                    stream.tracked = true;
                    let words = &mut self.seen[stream.word..];
                    let full = (stream.next_min / 64) as usize;
                    words[..full].fill(u64::MAX);
                    let rest = stream.next_min % 64;
                    if rest > 0 {
                        words[full] |= (1u64 << rest) - 1;
                    }
                }
                if msg.seq < stream.next_min {
                    self.order_violations += 1;
                } else {
                    stream.next_min = msg.seq + 1;
                }
                let word = &mut self.seen[stream.word + (msg.seq / 64) as usize];
                let bit = 1u64 << (msg.seq % 64);
                if *word & bit != 0 {
                    self.duplicates += 1;
                }
                *word |= bit;
            }
            _ => self.unexpected += 1,
        }
        self.finish_if_done();
    }

    #[inline]
    fn finish_if_done(&mut self) {
        if self.handled == self.expected {
            self.done_at = Some(Instant::now());
        }
    }

    /// Messages handled so far.
    pub fn handled(&self) -> u64 {
        self.handled
    }

    /// Messages the owned topics carry in the plan.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// When this checker had handled [`Checker::expected`] messages; the end of the timed run.
    pub fn done_at(&self) -> Option<Instant> {
        self.done_at
    }

    fn stream(&self, producer: u16, topic: u32) -> Option<usize> {
        let p = usize::from(producer);
        let local = *self.slots.get(topic.wrapping_sub(self.first) as usize)?;
        (p < self.producers && local != NOT_OWNED).then(|| local as usize * self.producers + p)
    }
}

/// The merged outcome of a run. A correct run has `handled == messages` and every other count 0.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// Messages handled, over all checkers.
    pub handled: u64,
    /// Messages handled more than once (each extra delivery counts once).
    pub duplicates: u64,
    /// Planned messages never handled.
    pub missing: u64,
    /// Messages whose seq was not above the last seq seen for the same (producer, topic).
    pub order_violations: u64,
    /// Messages with an id the plan does not contain, or handled by a checker that does not own
    /// their topic (a misroute).
    pub unexpected: u64,
    /// Sampled publish → handler-entry latency in ns (see [`Sampling`]); empty under
    /// [`Consume::Checksum`].
    pub latency: Histogram<u64>,
    /// What the consumers did: under [`Consume::Checksum`] only `handled`, `missing`,
    /// `unexpected` (handled beyond the plan) and `checksum_mismatches` are measured.
    pub consume: Consume,
    /// [`Consume::Checksum`]: checkers whose count or sum differed from the plan's.
    pub checksum_mismatches: u64,
}

impl Verdict {
    /// Merges the checkers of one run (their topic sets must be disjoint).
    pub fn merge(checkers: impl IntoIterator<Item = Checker>) -> Self {
        let mut v = Verdict {
            handled: 0,
            duplicates: 0,
            missing: 0,
            order_violations: 0,
            unexpected: 0,
            latency: latency_histogram(),
            consume: Consume::Verify,
            checksum_mismatches: 0,
        };
        for c in checkers {
            if c.checksum_only {
                v.consume = Consume::Checksum;
                v.handled += c.handled;
                v.missing += c.expected.saturating_sub(c.handled);
                v.unexpected += c.handled.saturating_sub(c.expected);
                v.checksum_mismatches +=
                    u64::from(c.handled != c.expected || c.sum != c.expected_sum);
                continue;
            }
            v.handled += c.handled;
            v.duplicates += c.duplicates;
            v.order_violations += c.order_violations;
            v.unexpected += c.unexpected;
            for s in &c.streams {
                let seen: u64 = if s.tracked {
                    let words = &c.seen[s.word..][..s.count.div_ceil(64) as usize];
                    words.iter().map(|w| u64::from(w.count_ones())).sum()
                } else {
                    // In order throughout: exactly `0..next_min` were seen.
                    s.next_min
                };
                v.missing += s.count - seen;
            }
            for &ns in &c.samples {
                record_latency(&mut v.latency, ns);
            }
        }
        v
    }

    /// Whether exactly `messages` were handled, each once, in order, and nothing else (under
    /// [`Consume::Checksum`]: whether every checker's count and sum matched the plan).
    pub fn is_exact(&self, messages: u64) -> bool {
        self.handled == messages
            && self.checksum_mismatches == 0
            && self.duplicates == 0
            && self.missing == 0
            && self.order_violations == 0
            && self.unexpected == 0
    }
}

/// An empty auto-resizing latency histogram (ns, 3 significant figures).
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures is a valid precision")
}

/// Records `ns`, growing the histogram as needed. (`saturating_record` would not grow it: it
/// clamps to the current top, which starts at 2 ns.)
pub(crate) fn record_latency(histogram: &mut Histogram<u64>, ns: u64) {
    if histogram.record(ns).is_err() {
        // Only when growing failed (a range beyond usize); clamp instead of losing the sample.
        histogram.saturating_record(ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Distribution, Workload};

    /// A bench message of `producer`'s stream `seq` on `topic` (also the checksum tests').
    pub(super) fn msg(producer: u16, topic: u32, seq: u64) -> BenchMsg<16> {
        BenchMsg {
            producer,
            topic,
            seq,
            ..BenchMsg::ZERO
        }
    }

    /// The plan of 2 producers × 8 topics × 1,000 messages (also the checksum tests').
    pub(super) fn expected() -> Expected {
        Workload {
            producers: 2,
            topics: 8,
            messages: 1000,
            payload: 16,
            distribution: Distribution::Uniform,
            seed: 1,
        }
        .plan()
        .unwrap()
        .expected
    }

    #[test]
    fn exact_delivery_is_clean_and_split_checkers_merge() {
        let e = expected();
        let sampling = Sampling::new(0);
        let mut even = Checker::new(&e, [0, 2, 4, 6], sampling);
        let mut odd = Checker::new(&e, [1, 3, 5, 7], sampling);
        for p in 0..2u16 {
            for t in 0..8u32 {
                let c = if t % 2 == 0 { &mut even } else { &mut odd };
                for seq in 0..e.count(usize::from(p), t as usize) {
                    c.record(&msg(p, t, seq));
                }
            }
        }
        assert!(even.done_at().is_some() && odd.done_at().is_some());
        let v = Verdict::merge([even, odd]);
        assert!(v.is_exact(1000), "{v:?}");
        assert_eq!(v.latency.len(), 0);
    }

    #[test]
    fn duplicates_gaps_reorders_and_strangers_are_counted() {
        let e = expected();
        let n = e.count(0, 3);
        assert!(n >= 4);
        let mut c = Checker::new(&e, [3], Sampling::new(0));
        for seq in [0, 2, 1, 2] {
            c.record(&msg(0, 3, seq));
        }
        // Not owned, unknown producer, seq beyond the plan.
        for m in [msg(0, 4, 0), msg(9, 3, 0), msg(0, 3, n)] {
            c.record(&m);
        }
        let v = Verdict::merge([c]);
        assert_eq!(v.handled, 7);
        assert_eq!(v.duplicates, 1);
        assert_eq!(v.order_violations, 2); // 1 after 2, then 2 again
        assert_eq!(v.unexpected, 3);
        assert_eq!(v.missing, n - 3 + e.count(1, 3));
    }

    #[test]
    fn an_in_order_stream_that_goes_wrong_late_is_counted_exactly() {
        let e = Workload {
            producers: 1,
            topics: 1,
            messages: 200,
            payload: 16,
            distribution: Distribution::Uniform,
            seed: 1,
        }
        .plan()
        .unwrap()
        .expected;
        // 0..=129 in order (past two bitset words), then a duplicate of 64, a gap (131..140
        // missing), then 140..200 in order.
        let mut c = Checker::for_all(&e, Sampling::new(0));
        for seq in (0..130).chain([64]).chain(140..200) {
            c.record(&msg(0, 0, seq));
        }
        let v = Verdict::merge([c]);
        assert_eq!(v.handled, 191);
        assert_eq!(v.duplicates, 1);
        assert_eq!(v.order_violations, 1);
        assert_eq!(v.missing, 10);
        assert_eq!(v.unexpected, 0);
        // The same stream in order, then only its last message again.
        let mut c = Checker::for_all(&e, Sampling::new(0));
        for seq in (0..200).chain([199]) {
            c.record(&msg(0, 0, seq));
        }
        let v = Verdict::merge([c]);
        assert_eq!(
            (v.handled, v.duplicates, v.order_violations, v.missing),
            (201, 1, 1, 0)
        );
    }

    #[test]
    fn sampled_messages_land_in_the_histogram() {
        let e = expected();
        let sampling = Sampling::new(1);
        let mut c = Checker::for_all(&e, sampling);
        let sent = sampling.now_ns();
        c.record(&BenchMsg {
            sent_at: sent,
            ..msg(0, 0, 0)
        });
        c.record(&msg(0, 0, 1));
        assert_eq!(Verdict::merge([c]).latency.len(), 1);
    }

    #[test]
    fn histogram_grows_to_fit_large_latencies() {
        let mut h = latency_histogram();
        record_latency(&mut h, 5_000_000);
        assert!(h.max() >= 5_000_000, "max {}", h.max());
    }
}
