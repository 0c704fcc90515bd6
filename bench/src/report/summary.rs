//! Serializable summaries of runs, and the medians of repeated runs: what `shardbus bench`
//! prints and writes with `--json`, and what the charts and tables are drawn from when that
//! JSON is read back.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::{Consume, RunResult, Workload};

/// Latency percentiles in ns.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of samples.
    pub samples: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest sample.
    pub max: u64,
}

impl Percentiles {
    /// Reads the percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let q = |q| h.value_at_quantile(q);
        Self {
            samples: h.len(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: h.max(),
        }
    }

    /// `(quantile, ns)` points for the percentile curve, max as quantile 1.0.
    pub fn curve(&self) -> [(f64, u64); 6] {
        [
            (0.5, self.p50),
            (0.9, self.p90),
            (0.99, self.p99),
            (0.999, self.p999),
            (0.9999, self.p9999),
            (1.0, self.max),
        ]
    }
}

/// One throughput run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    /// Handled messages per second.
    pub msgs_per_sec: f64,
    /// Payload megabytes (10^6 B) per second.
    pub payload_mb_per_sec: f64,
    /// Gate to last message handled, seconds.
    pub elapsed_s: f64,
    /// Messages handled.
    pub handled: u64,
    /// Exactly once, in per-(producer, topic) order, nothing else.
    pub exact: bool,
    /// Extra deliveries.
    pub duplicates: u64,
    /// Planned messages never handled.
    pub missing: u64,
    /// Messages out of per-(producer, topic) order.
    pub order_violations: u64,
    /// Unknown or misrouted messages.
    pub unexpected: u64,
    /// Sampled publish → handler entry latency.
    pub latency: Percentiles,
    /// Handled per handler thread (per shard for shardbus and the router).
    pub per_thread_handled: Vec<u64>,
    /// What the consumers did: `verify` (every count above measured) or `checksum` (only the
    /// handled count, missing, unexpected and `checksum_mismatches`; no latency).
    #[serde(default)]
    pub consume: Consume,
    /// Under `checksum`: handler threads whose count or sum differed from the plan's.
    #[serde(default)]
    pub checksum_mismatches: u64,
}

impl RunSummary {
    /// Summarises `r`, a run of `w`.
    pub fn of(w: &Workload, r: &RunResult) -> Self {
        let v = &r.verdict;
        let rate = r.msgs_per_sec();
        Self {
            msgs_per_sec: rate,
            payload_mb_per_sec: rate * w.payload as f64 / 1e6,
            elapsed_s: r.elapsed.as_secs_f64(),
            handled: r.handled,
            exact: v.is_exact(w.messages),
            duplicates: v.duplicates,
            missing: v.missing,
            order_violations: v.order_violations,
            unexpected: v.unexpected,
            latency: Percentiles::of(&v.latency),
            per_thread_handled: r.per_thread_handled.clone(),
            consume: v.consume,
            checksum_mismatches: v.checksum_mismatches,
        }
    }
}

/// The repetitions of one runner on one workload, with the median run picked out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Series {
    /// Runner name (`shardbus`, `seed`, `crossbeam_router`, `floor/…`).
    pub name: String,
    /// Every repetition, in run order; empty when the runner did not apply (see `error`).
    pub runs: Vec<RunSummary>,
    /// Why the runner did not run, if it did not.
    pub error: Option<String>,
}

impl Series {
    /// An empty series.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            runs: Vec::new(),
            error: None,
        }
    }

    /// The run with the median rate (the upper median for an even count).
    pub fn median(&self) -> Option<&RunSummary> {
        let mut sorted: Vec<&RunSummary> = self.runs.iter().collect();
        sorted.sort_by(|a, b| a.msgs_per_sec.total_cmp(&b.msgs_per_sec));
        sorted.get(sorted.len() / 2).copied()
    }

    /// Lowest and highest rate.
    pub fn range(&self) -> Option<(f64, f64)> {
        let rates = self.runs.iter().map(|r| r.msgs_per_sec);
        let lo = rates.clone().min_by(f64::total_cmp)?;
        let hi = rates.max_by(f64::total_cmp)?;
        Some((lo, hi))
    }

    /// Whether every run verified.
    pub fn all_exact(&self) -> bool {
        self.runs.iter().all(|r| r.exact)
    }
}

/// The first series' median rate over each other series' median rate, by name: shardbus beside
/// its peers. Series without a run are left out.
pub fn ratios(series: &[Series]) -> Vec<(String, f64)> {
    let Some(ours) = series.first().and_then(Series::median) else {
        return Vec::new();
    };
    series[1..]
        .iter()
        .filter_map(|s| Some((s.name.clone(), ours.msgs_per_sec / s.median()?.msgs_per_sec)))
        .collect()
}

/// The target of a row reported without one.
const NO_TARGET: &str = "—";

/// A performance target and its verdict, computed from one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetRow {
    /// What is compared, e.g. `shardbus publish(Topic) / disruptor`.
    pub what: String,
    /// The bound as the docs state it, e.g. `>= 1.00x` or `<= 3000 ns`.
    pub target: String,
    /// The measured value, formatted like the bound; `n/a` when a side did not run.
    pub measured: String,
    /// `Some(true)` met, `Some(false)` missed, `None` not measured.
    pub met: Option<bool>,
    /// For a ratio of two rows measured in every repetition: the ratio in each repetition,
    /// in run order and formatted like `measured`, each of two runs made one after the
    /// other in that repetition ([`paired`]); `measured` is their median. Empty for a row
    /// decided otherwise, and in runs recorded before the suite paired its repetitions
    /// (they took the ratio of the two rows' medians).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_rep: Vec<String>,
}

impl TargetRow {
    /// `value >= min`, shown as a ratio (`1.23x`).
    pub fn ratio_at_least(what: impl Into<String>, value: impl Into<Measured>, min: f64) -> Self {
        Self::new(
            what,
            format!(">= {min:.2}x"),
            value,
            |v| format!("{v:.2}x"),
            |v| v >= min,
        )
    }

    /// `value >= min`, shown as a percentage (`value` is a fraction: 0.8 is 80%).
    pub fn share_at_least(what: impl Into<String>, value: impl Into<Measured>, min: f64) -> Self {
        Self::new(
            what,
            format!(">= {:.0}%", min * 100.0),
            value,
            |v| format!("{:.1}%", v * 100.0),
            |v| v >= min,
        )
    }

    /// `value <= max`, shown as a ratio (`1.23x`).
    pub fn ratio_at_most(what: impl Into<String>, value: impl Into<Measured>, max: f64) -> Self {
        Self::new(
            what,
            format!("<= {max:.2}x"),
            value,
            |v| format!("{v:.2}x"),
            |v| v <= max,
        )
    }

    /// A ratio reported without a bound (a runtime as a fraction of its floor): target `—`,
    /// verdict `—`.
    pub fn fraction(what: impl Into<String>, value: impl Into<Measured>) -> Self {
        let mut row = Self::new(
            what,
            NO_TARGET.into(),
            value,
            |v| format!("{v:.2}x"),
            |_| true,
        );
        row.met = None;
        row
    }

    /// `value <= 1`: no worse than the reference, shown to three decimals (a ratio of
    /// 1.004 is a miss, and reads as one).
    pub fn no_worse(what: impl Into<String>, value: impl Into<Measured>) -> Self {
        Self::new(
            what,
            "<= 1.000x".into(),
            value,
            |v| format!("{v:.3}x"),
            |v| v <= 1.0,
        )
    }

    /// `value <= max` nanoseconds.
    pub fn ns_at_most(what: impl Into<String>, value: impl Into<Measured>, max: f64) -> Self {
        Self::new(
            what,
            format!("<= {max:.0} ns"),
            value,
            |v| format!("{v:.0} ns"),
            |v| v <= max,
        )
    }

    fn new(
        what: impl Into<String>,
        target: String,
        value: impl Into<Measured>,
        show: impl Fn(f64) -> String,
        meets: impl Fn(f64) -> bool,
    ) -> Self {
        let Measured { value, per_rep } = value.into();
        let value = value.filter(|v| v.is_finite());
        Self {
            what: what.into(),
            target,
            measured: value.map_or_else(|| "n/a".to_owned(), &show),
            met: value.map(meets),
            per_rep: per_rep.into_iter().map(show).collect(),
        }
    }

    /// `MET`, `MISSED`, `n/a` (not measured) or `—` (no target: [`TargetRow::fraction`]).
    pub fn verdict(&self) -> &'static str {
        if self.target == NO_TARGET {
            return NO_TARGET;
        }
        match self.met {
            Some(true) => "MET",
            Some(false) => "MISSED",
            None => "n/a",
        }
    }
}

/// A target's value: one figure, or the median of per-repetition ratios ([`paired`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measured {
    /// The value the verdict reads.
    pub value: Option<f64>,
    /// The per-repetition ratios `value` is the median of, in run order (empty if none).
    pub per_rep: Vec<f64>,
}

impl From<Option<f64>> for Measured {
    fn from(value: Option<f64>) -> Self {
        Self {
            value,
            per_rep: Vec::new(),
        }
    }
}

/// The ratio `a[i] / b[i]` of every repetition both sides ran, and its median (the verdict's
/// value). The suite records the two sides for the same repetitions: a runner that fails
/// stops running (the repetitions line up from the first), and a repetition of the legs or
/// of light load counts only if every side of it ran. Repetition `i` of each side ran one after the other, in the same stretch of the
/// run: on a host whose speed moves between repetitions (vCPUs placed anew by the
/// hypervisor), a pair's ratio compares like with like where a ratio of the two sides'
/// medians could take each median from a different stretch.
pub fn paired(a: &[f64], b: &[f64]) -> Measured {
    let per_rep: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| x / y)
        .filter(|r| r.is_finite())
        .collect();
    Measured {
        value: median(&per_rep),
        per_rep,
    }
}

/// The median of `xs` (upper median for an even count); `None` if empty.
pub fn median(xs: &[f64]) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// The machine, for every table: CPU model and the cores this process may use.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo` ("unknown" elsewhere).
    pub cpu: String,
    /// Cores available to this process.
    pub cores: usize,
    /// UTC time of the run, RFC 3339 (from the system clock).
    pub date: String,
    /// How shardbus orders pushes with parks and closes here (`membarrier` or
    /// `seqcst-fence`; see `sync::asym` in the library).
    pub fences: String,
}

impl Machine {
    /// Reads the machine description now.
    pub fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            cpu,
            cores,
            date: utc_now(),
            fences: shardbus::__fence_mode().to_owned(),
        }
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`, without a date crate.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range_pick_the_middle_run() {
        let mut s = Series::new("x");
        for rate in [3.0, 1.0, 2.0] {
            s.runs.push(RunSummary {
                msgs_per_sec: rate,
                payload_mb_per_sec: 0.0,
                elapsed_s: 0.0,
                handled: 0,
                exact: true,
                duplicates: 0,
                missing: 0,
                order_violations: 0,
                unexpected: 0,
                latency: Percentiles::default(),
                per_thread_handled: vec![],
                consume: Consume::Verify,
                checksum_mismatches: 0,
            });
        }
        assert_eq!(s.median().unwrap().msgs_per_sec, 2.0);
        assert_eq!(s.range(), Some((1.0, 3.0)));
        assert_eq!(median(&[4.0, 1.0]), Some(4.0));
    }

    /// Catches a checksum mismatch that does not fail the run (and so the exit status).
    #[test]
    fn a_checksum_mismatch_is_not_exact() {
        use crate::{Checker, Distribution, Sampling, Verdict};
        let w = Workload {
            producers: 1,
            topics: 2,
            messages: 10,
            payload: 16,
            distribution: Distribution::Uniform,
            seed: 1,
        };
        let plan = w.plan().unwrap();
        let run = |skew: u64| {
            let mut c =
                Checker::for_all(&plan.expected, Sampling::new(0)).consuming(Consume::Checksum);
            let mut next = [0u64; 2];
            for &t in plan.publishers[0].topics() {
                let seq = next[t as usize];
                next[t as usize] += 1;
                c.record(&crate::BenchMsg::<16> {
                    topic: t,
                    seq: seq + u64::from(seq == 0) * skew,
                    ..crate::BenchMsg::ZERO
                });
            }
            let verdict = Verdict::merge([c]);
            RunSummary::of(
                &w,
                &RunResult {
                    elapsed: std::time::Duration::from_millis(1),
                    handled: verdict.handled,
                    verdict,
                    per_thread_handled: vec![10],
                },
            )
        };
        let good = run(0);
        assert!(good.exact && good.consume == Consume::Checksum);
        let bad = run(5);
        assert_eq!(
            (bad.exact, bad.checksum_mismatches, bad.handled),
            (false, 1, 10)
        );
    }

    #[test]
    fn targets_compare_and_format() {
        let r = TargetRow::ratio_at_least("a / b", Some(1.234), 1.0);
        assert_eq!(
            (r.target.as_str(), r.measured.as_str(), r.verdict()),
            (">= 1.00x", "1.23x", "MET")
        );
        let s = TargetRow::share_at_least("c / d", Some(0.75), 0.8);
        assert_eq!((s.measured.as_str(), s.verdict()), ("75.0%", "MISSED"));
        let n = TargetRow::ns_at_most("p99.9", Some(2999.0), 3000.0);
        assert_eq!((n.target.as_str(), n.verdict()), ("<= 3000 ns", "MET"));
        let missing = TargetRow::ratio_at_least("x", Some(f64::NAN), 1.0);
        assert_eq!((missing.measured.as_str(), missing.met), ("n/a", None));
        assert_eq!(missing.verdict(), "n/a");
        let most = TargetRow::ratio_at_most("p50 / p50", Some(1.6), 1.5);
        assert_eq!(
            (most.target.as_str(), most.verdict()),
            ("<= 1.50x", "MISSED")
        );
        let f = TargetRow::fraction("a / floor", Some(0.5));
        assert_eq!(
            (f.measured.as_str(), f.met, f.verdict()),
            ("0.50x", None, "—")
        );
    }

    /// Per-repetition ratios: pairs by index up to the shorter side, drops a ratio that is
    /// not finite (a zero rate), decides on the median, and shows each like the value.
    #[test]
    fn paired_ratios_take_the_median_of_each_repetition() {
        let m = paired(&[10.0, 30.0, 20.0, 5.0], &[10.0, 10.0, 0.0]);
        assert_eq!(m.per_rep, vec![1.0, 3.0]);
        assert_eq!(m.value, Some(3.0));
        let t = TargetRow::share_at_least("x / y", paired(&[7.0, 9.0, 8.0], &[10.0; 3]), 0.8);
        assert_eq!(t.measured, "80.0%");
        assert_eq!(t.met, Some(true));
        assert_eq!(t.per_rep, ["70.0%", "90.0%", "80.0%"]);
        let none = TargetRow::ratio_at_least("x / y", paired(&[], &[1.0]), 1.0);
        assert_eq!((none.measured.as_str(), none.met), ("n/a", None));
        assert!(none.per_rep.is_empty());
    }

    #[test]
    fn date_looks_like_rfc3339() {
        let d = utc_now();
        assert_eq!(d.len(), 20, "{d}");
        assert!(d.starts_with("20") && d.ends_with('Z'));
    }
}
