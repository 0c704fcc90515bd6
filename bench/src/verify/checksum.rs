//! [`Consume::Checksum`]: what a checksum-only consumer adds per message, and what the sum of a
//! stream must be.

use serde::{Deserialize, Serialize};

use crate::workload::BenchMsg;

/// What every runner's consumer does with each message.
///
/// [`Consume::Verify`] runs the exactly-once checker, which costs more per message than the
/// fastest hand-offs and so caps every runner near the same figure; [`Consume::Checksum`] only
/// adds each message to a count and a sum, checked against the plan at the end, so a run shows
/// what each runtime costs by itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consume {
    /// Exactly once, per-(producer, topic) order, sampled latency ([`Checker::record`](super::Checker::record)).
    #[default]
    Verify,
    /// A count and a wrapping sum of [`checksum_term`] only; no order or duplicate check, no
    /// latency samples. A wrong count or sum (per checker, so a misroute shows too) fails the run.
    Checksum,
}

impl Consume {
    /// How `shardbus bench` and the reports name it: `verify` or `checksum`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Checksum => "checksum",
        }
    }
}

/// What [`Consume::Checksum`] adds to its sum for `msg`: the sequence number plus the topic
/// shifted by 32 bits plus the producer shifted by 48, wrapping. Linear in `seq`, so the sum a
/// (producer, topic) stream of `c` messages must give is known in closed form.
#[inline(always)]
pub fn checksum_term<const N: usize>(msg: &BenchMsg<N>) -> u64 {
    msg.seq
        .wrapping_add(u64::from(msg.topic) << 32)
        .wrapping_add(u64::from(msg.producer) << 48)
}

/// The wrapping sum of [`checksum_term`] over a stream of `count` messages (seq `0..count`).
pub(super) fn stream_checksum(producer: usize, topic: u32, count: u64) -> u64 {
    // count * (count - 1) / 2 modulo 2^64: halve the even factor first.
    let triangle = if count.is_multiple_of(2) {
        (count / 2).wrapping_mul(count.wrapping_sub(1))
    } else {
        count.wrapping_mul((count - 1) / 2)
    };
    let fixed = (u64::from(topic) << 32).wrapping_add((producer as u64) << 48);
    triangle.wrapping_add(count.wrapping_mul(fixed))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{expected, msg};
    use super::super::{Checker, Verdict};
    use super::*;
    use crate::workload::{Expected, Sampling};

    /// Every (producer, topic) stream of `e` in order, through `route(topic)`'s checker.
    fn deliver_all(e: &Expected, mut route: impl FnMut(u32, BenchMsg<16>)) {
        for p in 0..2u16 {
            for t in 0..8u32 {
                for seq in 0..e.count(usize::from(p), t as usize) {
                    route(t, msg(p, t, seq));
                }
            }
        }
    }

    #[test]
    fn checksum_mode_passes_an_exact_delivery_and_keeps_no_latency() {
        let e = expected();
        let sampling = Sampling::new(1);
        let mut even = Checker::new(&e, [0, 2, 4, 6], sampling).consuming(Consume::Checksum);
        let mut odd = Checker::new(&e, [1, 3, 5, 7], sampling).consuming(Consume::Checksum);
        assert_eq!(even.consume(), Consume::Checksum);
        deliver_all(&e, |t, mut m| {
            m.sent_at = 5;
            if t % 2 == 0 {
                even.record(&m)
            } else {
                odd.record(&m)
            }
        });
        assert!(even.done_at().is_some() && odd.done_at().is_some());
        let v = Verdict::merge([even, odd]);
        assert_eq!(
            (v.handled, v.missing, v.unexpected, v.checksum_mismatches),
            (1000, 0, 0, 0)
        );
        assert_eq!(v.consume, Consume::Checksum);
        assert!(v.is_exact(1000), "{v:?}");
        assert_eq!(v.latency.len(), 0);
    }

    #[test]
    fn checksum_mode_fails_a_loss_a_swap_and_a_misroute() {
        let e = expected();
        let all = || Checker::for_all(&e, Sampling::new(0)).consuming(Consume::Checksum);
        // One message lost: the count is short.
        let mut c = all();
        deliver_all(&e, |t, m| {
            if (m.producer, t, m.seq) != (0, 3, 1) {
                c.record(&m)
            }
        });
        let v = Verdict::merge([c]);
        assert_eq!((v.handled, v.missing, v.checksum_mismatches), (999, 1, 1));
        assert!(!v.is_exact(1000));
        // One message delivered twice in place of another: the count is right, the sum is not.
        let mut c = all();
        deliver_all(&e, |t, m| {
            let m = if (m.producer, t, m.seq) == (0, 3, 1) {
                msg(0, 3, 0)
            } else {
                m
            };
            c.record(&m)
        });
        let v = Verdict::merge([c]);
        assert_eq!((v.handled, v.missing, v.checksum_mismatches), (1000, 0, 1));
        assert!(!v.is_exact(1000));
        // Topic 1's first message handled by the even checker and topic 2's first by the odd
        // one: both counts right, the total sum right, each checker's sum wrong.
        let mut even =
            Checker::new(&e, [0, 2, 4, 6], Sampling::new(0)).consuming(Consume::Checksum);
        let mut odd = Checker::new(&e, [1, 3, 5, 7], Sampling::new(0)).consuming(Consume::Checksum);
        deliver_all(&e, |t, m| {
            let to_even = (t % 2 == 0) != (m.seq == 0 && m.producer == 0 && (t == 1 || t == 2));
            if to_even {
                even.record(&m)
            } else {
                odd.record(&m)
            }
        });
        let v = Verdict::merge([even, odd]);
        assert_eq!((v.handled, v.checksum_mismatches), (1000, 2));
        assert!(!v.is_exact(1000));
    }

    #[test]
    fn stream_checksum_is_the_sum_of_the_terms() {
        for (p, t, c) in [
            (0, 0, 0),
            (1, 7, 1),
            (3, 70_000, 2),
            (65_535, u32::MAX, 1001),
        ] {
            let direct = (0..c).fold(0u64, |s, seq| {
                s.wrapping_add(checksum_term(&BenchMsg::<16> {
                    producer: p as u16,
                    topic: t,
                    seq,
                    ..BenchMsg::ZERO
                }))
            });
            assert_eq!(stream_checksum(p, t, c), direct, "{p} {t} {c}");
        }
    }
}
