//! The reference suite behind `docs/benchmarks.md`: the configuration of every performance
//! target (hand-off, routing, oversubscription, core scaling, latency), shardbus beside its
//! peers in the same process, each runner repeated and the repetitions interleaved (all runners
//! once, then all again) so that a noisy phase of the host hits them alike.
//! `shardbus bench --suite --json PATH` runs it; `shardbus bench --charts PATH` draws it.

mod floors;
mod light;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::floor::PingPong;
use crate::report::{median, Machine, Percentiles, ReportError, RunSummary, Series, TargetRow};
use crate::runner::{self, BusPingPong, ClosedLoop};
use crate::{
    crossbeam_router, disruptor, floor, seed, Distribution, Error, RunOpts, RunResult, Workload,
};
use shardbus::WaitStrategy;

pub use floors::{
    persistence_workload, targets, LegRow, PersistFloors, RawSeries, HANDOFF_CHECKSUM,
    ROUTING_CHECKSUM,
};
pub use light::{pace, targets as light_targets, LightRow, LightSide, INTERVALS_US};

type Runner = fn(&Workload, &RunOpts) -> Result<RunResult, Error>;

/// A workload as the report shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadDesc {
    /// Producer threads.
    pub producers: usize,
    /// Topics.
    pub topics: usize,
    /// Messages per run.
    pub messages: u64,
    /// Payload bytes.
    pub payload: usize,
    /// `uniform` or `zipf(s)`.
    pub distribution: String,
}

impl WorkloadDesc {
    /// Describes `w`.
    pub fn of(w: &Workload) -> Self {
        Self {
            producers: w.producers,
            topics: w.topics,
            messages: w.messages,
            payload: w.payload,
            distribution: match w.distribution {
                Distribution::Uniform => "uniform".into(),
                Distribution::Zipf(s) => format!("zipf({s})"),
            },
        }
    }
}

/// One workload, every runner that applies.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Group {
    /// Short key (`handoff`, `routing-64`, …).
    pub key: String,
    /// What it measures.
    pub title: String,
    /// The workload.
    pub workload: WorkloadDesc,
    /// Shards (shardbus) or shard threads (router) used, per runner name.
    pub shards: usize,
    /// One series per runner.
    pub series: Vec<Series>,
}

/// The closed-loop scaling run at one shard count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScalingPoint {
    /// Shards.
    pub shards: usize,
    /// Work rounds per message.
    pub work: u32,
    /// Rate of every repetition.
    pub msgs_per_sec: Vec<f64>,
    /// Handled per shard in the last repetition.
    pub per_shard_handled: Vec<u64>,
    /// Every repetition retired every token exactly once.
    pub exact: bool,
}

/// One latency configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatencyRow {
    /// Runner and configuration.
    pub name: String,
    /// `None`: back to back; `Some(us)`: one message every `us` µs.
    pub interval_us: Option<u64>,
    /// Shards of the bus (0 for the floors).
    #[serde(default)]
    pub shards: usize,
    /// RTT/2 of the median repetition (by p50).
    pub rtt_half: Percentiles,
    /// Publish → handler entry of the median repetition (shardbus only).
    pub one_way: Option<Percentiles>,
    /// CPU share of each shard thread during the median repetition (shardbus, Linux).
    #[serde(default)]
    pub shard_cpu: Vec<f64>,
    /// p50 of every repetition.
    pub p50s: Vec<u64>,
}

/// Everything the suite measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SuiteReport {
    /// Where and when.
    pub machine: Machine,
    /// Repetitions per runner.
    pub reps: usize,
    /// Throughput groups.
    pub groups: Vec<Group>,
    /// Closed-loop core scaling.
    pub scaling: Vec<ScalingPoint>,
    /// The host's own compute scaling, 2 threads over 1 ([`floor::cpu_scaling`]), per
    /// repetition: the ceiling of the closed-loop figure on this machine.
    #[serde(default)]
    pub cpu_scaling: Vec<f64>,
    /// Ping-pong latency.
    pub latency: Vec<LatencyRow>,
    /// One bus leg beside one leg of the bare atomic ping-pong, measured directly.
    #[serde(default)]
    pub legs: Vec<LegRow>,
    /// A parking shard beside a crossbeam-channel consumer at light load.
    #[serde(default)]
    pub light: Vec<LightRow>,
    /// The persistent bus beside its raw floors (absent from runs without a directory).
    #[serde(default)]
    pub persist: Option<PersistFloors>,
    /// Every target decided by this run ([`targets`]), with its verdict.
    #[serde(default)]
    pub targets: Vec<TargetRow>,
}

impl SuiteReport {
    /// Reads a report back from the JSON `shardbus bench --suite --json PATH` wrote.
    pub fn read(path: &Path) -> Result<Self, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ReportError::Json {
            path: path.to_owned(),
            source,
        })
    }

    /// Whether every run of every runner verified.
    pub fn all_exact(&self) -> bool {
        self.groups
            .iter()
            .flat_map(|g| &g.series)
            .all(Series::all_exact)
            && self.scaling.iter().all(|s| s.exact)
            && self
                .persist
                .iter()
                .flat_map(|p| &p.series)
                .all(Series::all_exact)
    }
}

fn shardbus_run(w: &Workload, o: &RunOpts) -> Result<RunResult, Error> {
    runner::run(w, o)
}

/// Runs `runners` on `w`, `reps` times, interleaved.
pub fn group(
    key: &str,
    title: &str,
    w: &Workload,
    runners: &[(&str, Runner, RunOpts)],
    reps: usize,
    progress: &mut dyn FnMut(&str),
) -> Group {
    let mut series: Vec<Series> = runners.iter().map(|(n, _, _)| Series::new(*n)).collect();
    for _ in 0..reps {
        for ((name, run, opts), s) in runners.iter().zip(&mut series) {
            progress(&format!("{key}: {name}"));
            if s.error.is_some() {
                continue;
            }
            match run(w, opts) {
                Ok(r) => s.runs.push(RunSummary::of(w, &r)),
                Err(e) => s.error = Some(e.to_string()),
            }
        }
    }
    Group {
        key: key.into(),
        title: title.into(),
        workload: WorkloadDesc::of(w),
        shards: runners.first().map_or(1, |(_, _, o)| o.shards),
        series,
    }
}

/// Steps the suite reports to `progress` (for a progress bar's length); `persist`: whether it
/// is given a directory for the persistence rows.
pub fn steps(reps: usize, persist: bool) -> u64 {
    (reps * (8 + 3 + 3 + 3 + 3 + 3 + 1 + 4 + 8) + floors::steps(reps, persist) + light::steps(reps))
        as u64
}

/// Runs the whole suite; with `persist_dir`, the persistence rows write under it (a fresh
/// directory per run, removed after it).
pub fn run(
    reps: usize,
    scale: f64,
    persist_dir: Option<&Path>,
    progress: &mut dyn FnMut(&str),
) -> SuiteReport {
    let n = |m: f64| (m * scale).max(10_000.0) as u64;
    let base = RunOpts::default();
    let spin = RunOpts {
        wait: WaitStrategy::BusySpin,
        ..base.clone()
    };
    let one = |o: &RunOpts| RunOpts {
        shards: 1,
        ..o.clone()
    };
    let two = |o: &RunOpts| RunOpts {
        shards: 2,
        ..o.clone()
    };
    let batch = RunOpts {
        batch: 64,
        ..one(&base)
    };
    let w1 = Workload {
        producers: 1,
        topics: 1,
        messages: n(4e6),
        payload: 16,
        distribution: Distribution::Uniform,
        seed: 1,
    };
    let mut groups = vec![group(
        "handoff",
        "Hand-off: 1 producer -> 1 shard, 1 topic, 16 B",
        &w1,
        &[
            ("shardbus (park)", shardbus_run, one(&base)),
            ("shardbus (spin)", shardbus_run, one(&spin)),
            ("shardbus batch 64 (park)", shardbus_run, batch.clone()),
            (
                "floor/crossbeam_bounded",
                floor::crossbeam_bounded,
                base.clone(),
            ),
            (
                "floor/std_sync_channel",
                floor::std_sync_channel,
                base.clone(),
            ),
            ("disruptor", disruptor::run, base.clone()),
            ("floor/array_queue", floor::array_queue, base.clone()),
            ("floor/ring", floor::ring, base.clone()),
        ],
        reps,
        progress,
    )];
    let routed = |producers, topics, distribution, messages| Workload {
        producers,
        topics,
        messages,
        distribution,
        ..w1.clone()
    };
    for (key, topics, m) in [("routing-64", 64, 2e6), ("routing-10000", 10_000, 5e5)] {
        let w = routed(1, topics, Distribution::Uniform, n(m));
        groups.push(group(
            key,
            &format!("Routing: 1 producer -> 1 shard, {topics} topics, uniform, 16 B"),
            &w,
            &[
                ("shardbus", shardbus_run, one(&base)),
                ("seed", seed::run, base.clone()),
                ("crossbeam_router", crossbeam_router::run, one(&base)),
            ],
            reps,
            progress,
        ));
    }
    for (key, dist) in [
        ("oversub-uniform", Distribution::Uniform),
        ("oversub-zipf", Distribution::Zipf(1.0)),
    ] {
        let w = routed(2, 64, dist, n(2e6));
        groups.push(group(
            key,
            &format!(
                "2 producers -> 2 shards (4 threads on 2 cores), 64 topics, {}, 16 B, default wait (park)",
                WorkloadDesc::of(&w).distribution
            ),
            &w,
            &[
                ("shardbus", shardbus_run, two(&base)),
                ("seed", seed::run, base.clone()),
                ("crossbeam_router", crossbeam_router::run, two(&base)),
            ],
            reps,
            progress,
        ));
    }
    let w = routed(2, 64, Distribution::Uniform, n(2e6));
    groups.push(group(
        "oversub-1shard",
        "2 producers -> 1 shard, 64 topics, uniform, 16 B, default wait (park)",
        &w,
        &[
            ("shardbus", shardbus_run, one(&base)),
            ("seed", seed::run, base.clone()),
            ("crossbeam_router", crossbeam_router::run, one(&base)),
        ],
        reps,
        progress,
    ));

    groups.extend(floors::checksum_groups(reps, &n, progress));

    let mut cpu_scaling = Vec::new();
    for _ in 0..reps {
        progress("host compute scaling");
        if let Ok(x) = floor::cpu_scaling(2, n(4e8), &base) {
            cpu_scaling.push(x);
        }
    }
    let mut scaling = Vec::new();
    for work in [0, 200] {
        for shards in [1, 2] {
            let cfg = ClosedLoop {
                shards,
                actors: 64,
                tokens: 256,
                hops: (n(4e6) / 256).max(10),
                work,
                seed: 5,
            };
            let mut point = ScalingPoint {
                shards,
                work,
                msgs_per_sec: Vec::new(),
                per_shard_handled: Vec::new(),
                exact: true,
            };
            for _ in 0..reps {
                progress(&format!("closed loop: {shards} shard(s), work {work}"));
                match runner::closed_loop(&cfg, &base) {
                    Ok(r) => {
                        point.msgs_per_sec.push(r.msgs_per_sec());
                        point.exact &= r.exact;
                        point.per_shard_handled = r.per_shard_handled;
                    }
                    Err(_) => point.exact = false,
                }
            }
            scaling.push(point);
        }
    }

    let rounds = n(2e5);
    let light = Some(Duration::from_micros(10));
    let mut latency = Vec::new();
    let bus_rows: [(&str, WaitStrategy, usize, Option<Duration>); 6] = [
        ("shardbus spin", WaitStrategy::BusySpin, 1, None),
        ("shardbus yield", WaitStrategy::Yield, 1, None),
        ("shardbus park", WaitStrategy::Park, 1, None),
        (
            "shardbus spin, 10 us pacing",
            WaitStrategy::BusySpin,
            1,
            light,
        ),
        (
            "shardbus yield, 10 us pacing",
            WaitStrategy::Yield,
            1,
            light,
        ),
        ("shardbus park, 10 us pacing", WaitStrategy::Park, 2, light),
    ];
    for (name, wait, shards, interval) in bus_rows {
        let o = RunOpts {
            wait,
            shards,
            ..base.clone()
        };
        let r = if interval.is_some() {
            rounds / 4
        } else {
            rounds
        };
        let mut runs: Vec<BusPingPong> = Vec::new();
        for _ in 0..reps {
            progress(&format!("latency: {name}"));
            if let Ok(p) = runner::ping_pong(r, interval, &o) {
                runs.push(p);
            }
        }
        runs.sort_by_key(|p| p.rtt_half.value_at_quantile(0.5));
        if let Some(mid) = runs.get(runs.len() / 2) {
            latency.push(LatencyRow {
                name: name.into(),
                interval_us: interval.map(|d| d.as_micros() as u64),
                shards,
                rtt_half: Percentiles::of(&mid.rtt_half),
                one_way: Some(Percentiles::of(&mid.one_way)),
                shard_cpu: mid.shard_cpu.clone(),
                p50s: runs
                    .iter()
                    .map(|p| p.rtt_half.value_at_quantile(0.5))
                    .collect(),
            });
        }
    }
    type Floor = fn(u64, &RunOpts) -> Result<PingPong, Error>;
    let floors: [(&str, Floor); 2] = [
        ("floor/atomic_ping_pong", floor::atomic_ping_pong),
        ("floor/array_queue_ping_pong", floor::array_queue_ping_pong),
    ];
    for (name, f) in floors {
        let mut runs: Vec<PingPong> = Vec::new();
        for _ in 0..reps {
            progress(&format!("latency: {name}"));
            if let Ok(p) = f(rounds, &base) {
                runs.push(p);
            }
        }
        runs.sort_by_key(|p| p.one_way.value_at_quantile(0.5));
        if let Some(mid) = runs.get(runs.len() / 2) {
            latency.push(LatencyRow {
                name: name.into(),
                interval_us: None,
                shards: 0,
                rtt_half: Percentiles::of(&mid.one_way),
                one_way: None,
                shard_cpu: Vec::new(),
                p50s: runs
                    .iter()
                    .map(|p| p.one_way.value_at_quantile(0.5))
                    .collect(),
            });
        }
    }
    let legs = floors::legs(reps, rounds, progress);
    let light = light::light(reps, scale, progress);
    let persist = persist_dir.map(|dir| floors::persistence(reps, n(1e6), dir, progress));
    let mut targets = floors::targets(&groups, &legs, persist.as_ref());
    targets.extend(light::targets(&light));
    SuiteReport {
        machine: Machine::detect(),
        reps,
        groups,
        scaling,
        cpu_scaling,
        latency,
        legs,
        light,
        persist,
        targets,
    }
}

/// The median of a scaling point's rates.
pub fn scaling_median(p: &ScalingPoint) -> f64 {
    median(&p.msgs_per_sec).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testing::{one_spinner_at_a_time, opts, small};
    use crate::Consume;

    /// Catches a runner whose consumer ignores [`RunOpts::consume`] (it would keep latency
    /// samples) or miscounts in checksum mode.
    #[test]
    fn every_runner_counts_and_sums_exactly_in_checksum_mode() {
        let _spinning = one_spinner_at_a_time();
        let checksum = RunOpts {
            consume: Consume::Checksum,
            shards: 1,
            ..opts()
        };
        let by_name = RunOpts {
            by_name: true,
            ..checksum.clone()
        };
        let batch = RunOpts {
            batch: 8,
            ..checksum.clone()
        };
        let runners: [(&str, Runner, &RunOpts); 13] = [
            ("shardbus", shardbus_run, &checksum),
            ("shardbus by name", shardbus_run, &by_name),
            ("shardbus batch", shardbus_run, &batch),
            ("disruptor", disruptor::run, &checksum),
            ("disruptor fenced", disruptor::run_fenced, &checksum),
            ("disruptor enveloped", disruptor::run_enveloped, &checksum),
            ("seed", seed::run, &checksum),
            ("crossbeam_router", crossbeam_router::run, &checksum),
            ("ring", floor::ring, &checksum),
            ("ring_batch", floor::ring_batch, &checksum),
            ("array_queue", floor::array_queue, &checksum),
            ("std_sync_channel", floor::std_sync_channel, &checksum),
            ("crossbeam_bounded", floor::crossbeam_bounded, &checksum),
        ];
        let w = small(1, Distribution::Zipf(1.0), 16);
        for (name, run, o) in runners {
            let r = run(&w, o).unwrap_or_else(|e| panic!("{name}: {e}"));
            let v = &r.verdict;
            assert_eq!(
                (
                    v.consume,
                    v.handled,
                    v.missing,
                    v.unexpected,
                    v.checksum_mismatches
                ),
                (Consume::Checksum, w.messages, 0, 0, 0),
                "{name}"
            );
            assert!(v.is_exact(w.messages), "{name}");
            assert_eq!(v.latency.len(), 0, "{name}: no latency samples");
            let summary = RunSummary::of(&w, &r);
            assert!(
                summary.exact && summary.consume == Consume::Checksum,
                "{name}"
            );
        }
    }
}
