//! The suite's rows against floors measured in the same run: the checksum-only hand-off and
//! routing groups (every runner's consumer only counts and sums, so each runtime's own cost
//! shows), one bus leg beside one leg of a bare atomic ping-pong, the persistent bus beside the
//! raw appends, and every target computed from them.

use std::path::Path;

use serde::{Deserialize, Serialize};
use shardbus::log::FsyncPolicy;
use shardbus::WaitStrategy;

use super::{group, shardbus_run, Group, Runner, WorkloadDesc};
use crate::persist::{self, PersistOpts, RawResult, RawWork, SHARD_BATCH};
use crate::report::{paired, Measured, Percentiles, RunSummary, Series, TargetRow};
use crate::{
    crossbeam_router, disruptor, floor, runner, seed, Consume, Distribution, RunOpts, Workload,
};

/// Group keys of the checksum-only runs.
pub const HANDOFF_CHECKSUM: &str = "handoff-checksum";
/// See [`HANDOFF_CHECKSUM`].
pub const ROUTING_CHECKSUM: &str = "routing-checksum";

/// Row names the targets read.
const BY_HANDLE: &str = "shardbus publish(Topic) (park)";
/// Busy-spinning like the disruptor's consumer, with membarrier fences: no fence per push.
const SPIN_MEMBARRIER: &str = "shardbus publish(Topic) (spin, membarrier)";
const BATCH: &str = "shardbus publish_batch 64 (park)";
const BY_NAME: &str = "shardbus publish(name) (park)";
/// The default wait with membarrier fences (no fence per push), by handle and by name.
const BY_HANDLE_MEMBARRIER: &str = "shardbus publish(Topic) (park, membarrier)";
const BY_NAME_MEMBARRIER: &str = "shardbus publish(name) (park, membarrier)";
const DISRUPTOR: &str = "disruptor";
/// The disruptor with the fence a consumer that parks needs after each publish, the fence
/// shardbus's default wait pays on every push (`disruptor::run_fenced`).
const DISRUPTOR_FENCED: &str = "disruptor, SeqCst fence per publish";
/// The disruptor with a topic index beside the message in each slot, as a lane's slot
/// (`disruptor::run_enveloped`).
const DISRUPTOR_ENVELOPED: &str = "disruptor, topic index in each slot";
const SYNC_CHANNEL: &str = "floor/std_sync_channel";
const RING: &str = "floor/ring";
const RING_BATCH: &str = "floor/ring_batch 64";
const BUS_LEG: &str = "shardbus spin: publish -> handler entry";
const ATOMIC_LEG: &str = "floor/atomic: store -> load on the other core";
const MEMORY: &str = "shardbus (memory)";
const NEVER: &str = "shardbus fsync never";
const FSYNC_BATCH: &str = "shardbus fsync batch";
const RAW_SYNC: &str = "raw append+sync";
const RAW_FRAMED: &str = "raw buffered append (framed)";
const RAW_BYTES: &str = "raw buffered append (bytes)";
/// Producer → our SPSC ring → a consumer that checks, frames and writes: the bus's `never`
/// pipeline with nothing of the bus.
const RING_FRAMED: &str = "floor/ring -> framed append (2 threads)";
/// The same work split the other way: the producer frames each record and hands it through
/// the ring with its message; the consumer checks, copies and writes.
const RING_PREFRAMED: &str = "floor/ring, producer frames -> append (2 threads)";
/// The three floors above with a thread that syncs the file behind the writer every 10,000
/// records, as the bus's sync thread syncs its log before each checkpoint under `never`.
const RING_FRAMED_SYNCED: &str = "floor/ring -> framed append, synced behind (3 threads)";
const RING_PREFRAMED_SYNCED: &str =
    "floor/ring, producer frames -> append, synced behind (3 threads)";
const RAW_FRAMED_SYNCED: &str = "raw buffered append (framed), synced behind";

/// One leg, measured directly (a clock read at each end), in the median repetition by p50.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LegRow {
    /// What carries the message.
    pub name: String,
    /// Publish (or store) → handler entry (or load) on the other core.
    pub one_way: Percentiles,
    /// Round trip / 2 of the same rounds.
    pub rtt_half: Percentiles,
    /// One-leg p50 of every repetition.
    pub p50s: Vec<u64>,
}

/// A raw append's repetitions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RawSeries {
    /// `raw append+sync`, `raw buffered append (framed)` or `raw buffered append (bytes)`.
    pub name: String,
    /// Records per second, per repetition.
    pub records_per_sec: Vec<f64>,
    /// MB (10^6 B) per second, per repetition.
    pub mb_per_sec: Vec<f64>,
    /// Why it did not run, if it did not.
    pub error: Option<String>,
}

/// The persistent bus beside its floors, all interleaved.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PersistFloors {
    /// The workload of every row.
    pub workload: WorkloadDesc,
    /// Records per `write_all` (and per `sync_data` of `raw append+sync`): a shard's batch.
    pub batch: usize,
    /// Memory-only, `fsync never` and `fsync batch` buses.
    pub series: Vec<Series>,
    /// The raw appends.
    pub raw: Vec<RawSeries>,
}

/// The checksum-only groups: the hand-off (every publish form beside every peer and floor) and
/// the routing case (by handle and by name beside the routers).
pub(super) fn checksum_groups(
    reps: usize,
    n: &dyn Fn(f64) -> u64,
    progress: &mut dyn FnMut(&str),
) -> Vec<Group> {
    let base = RunOpts {
        consume: Consume::Checksum,
        ..RunOpts::default()
    };
    let one = RunOpts {
        shards: 1,
        ..base.clone()
    };
    let spin = RunOpts {
        wait: WaitStrategy::BusySpin,
        ..one.clone()
    };
    let spin_membarrier = RunOpts {
        fences: shardbus::Fences::Membarrier,
        ..spin.clone()
    };
    let one_membarrier = RunOpts {
        fences: shardbus::Fences::Membarrier,
        ..one.clone()
    };
    let batch = RunOpts {
        batch: 64,
        ..one.clone()
    };
    let by_name = |o: &RunOpts| RunOpts {
        by_name: true,
        ..o.clone()
    };
    let w1 = Workload {
        producers: 1,
        topics: 1,
        messages: n(4e6),
        payload: 16,
        distribution: Distribution::Uniform,
        seed: 1,
    };
    let handoff: [(&str, Runner, RunOpts); 15] = [
        (BY_HANDLE, shardbus_run, one.clone()),
        ("shardbus publish(Topic) (spin)", shardbus_run, spin),
        (SPIN_MEMBARRIER, shardbus_run, spin_membarrier),
        (BATCH, shardbus_run, batch),
        (BY_NAME, shardbus_run, by_name(&one)),
        (BY_HANDLE_MEMBARRIER, shardbus_run, one_membarrier.clone()),
        (BY_NAME_MEMBARRIER, shardbus_run, by_name(&one_membarrier)),
        (DISRUPTOR, disruptor::run, base.clone()),
        (DISRUPTOR_FENCED, disruptor::run_fenced, base.clone()),
        (DISRUPTOR_ENVELOPED, disruptor::run_enveloped, base.clone()),
        (SYNC_CHANNEL, floor::std_sync_channel, base.clone()),
        (
            "floor/crossbeam_bounded",
            floor::crossbeam_bounded,
            base.clone(),
        ),
        ("floor/array_queue", floor::array_queue, base.clone()),
        (RING, floor::ring, base.clone()),
        (RING_BATCH, floor::ring_batch, base.clone()),
    ];
    let two = RunOpts {
        shards: 2,
        ..base.clone()
    };
    let routing: [(&str, Runner, RunOpts); 4] = [
        ("shardbus publish(Topic)", shardbus_run, two.clone()),
        ("shardbus publish(name)", shardbus_run, by_name(&two)),
        ("seed", seed::run, base.clone()),
        ("crossbeam_router", crossbeam_router::run, two),
    ];
    let w2 = Workload {
        producers: 2,
        topics: 64,
        messages: n(2e6),
        ..w1.clone()
    };
    vec![
        group(
            HANDOFF_CHECKSUM,
            "Hand-off, checksum-only consumers: 1 producer -> 1 shard, 1 topic, 16 B",
            &w1,
            &handoff,
            reps,
            progress,
        ),
        group(
            ROUTING_CHECKSUM,
            "Routing, checksum-only consumers: 2 producers -> 2 shards (4 threads on 2 cores), 64 topics, uniform, 16 B, default wait (park)",
            &w2,
            &routing,
            reps,
            progress,
        ),
    ]
}

/// Steps of [`checksum_groups`], [`legs`] and [`persistence`].
pub(super) fn steps(reps: usize, persist: bool) -> usize {
    reps * (15 + 4 + 2 + if persist { 6 } else { 0 })
}

/// One bus leg (busy-spin shard, publish → handler entry) and one leg of the bare atomic
/// ping-pong, `rounds` each, repetitions interleaved; the median repetition of each by p50.
pub(super) fn legs(reps: usize, rounds: u64, progress: &mut dyn FnMut(&str)) -> Vec<LegRow> {
    let spin = RunOpts {
        wait: WaitStrategy::BusySpin,
        shards: 1,
        ..RunOpts::default()
    };
    let mut bus = Vec::new();
    let mut atomic = Vec::new();
    for _ in 0..reps {
        progress("one leg: shardbus spin");
        let b = runner::ping_pong(rounds, None, &spin);
        progress("one leg: atomic");
        let a = floor::atomic_leg(rounds, &spin);
        // Both or neither, so that the two legs' repetitions line up (the target pairs them).
        if let (Ok(b), Ok(a)) = (b, a) {
            bus.push((Percentiles::of(&b.one_way), Percentiles::of(&b.rtt_half)));
            atomic.push((Percentiles::of(&a.one_way), Percentiles::of(&a.rtt_half)));
        }
    }
    [(BUS_LEG, bus), (ATOMIC_LEG, atomic)]
        .into_iter()
        .filter_map(|(name, mut runs)| {
            let p50s = runs.iter().map(|(o, _)| o.p50).collect();
            runs.sort_by_key(|(o, _)| o.p50);
            let (one_way, rtt_half) = runs.get(runs.len() / 2)?.clone();
            Some(LegRow {
                name: name.into(),
                one_way,
                rtt_half,
                p50s,
            })
        })
        .collect()
}

/// The persistence group's workload: 1 producer, 64 topics, 256 B, uniform, seed 1, of
/// `messages` messages (the `never_floors` probe runs the same).
pub fn persistence_workload(messages: u64) -> Workload {
    Workload {
        producers: 1,
        topics: 64,
        messages,
        payload: 256,
        distribution: Distribution::Uniform,
        seed: 1,
    }
}

/// The memory-only, `fsync never` and `fsync batch` buses beside the raw append+sync and the
/// raw buffered appends of the same records, under `dir`, repetitions interleaved.
pub(super) fn persistence(
    reps: usize,
    messages: u64,
    dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> PersistFloors {
    let w = persistence_workload(messages);
    let bus = |fsync: Option<FsyncPolicy>| RunOpts {
        shards: 1,
        persist: fsync.map(|fsync| PersistOpts {
            dir: dir.to_owned(),
            fsync,
        }),
        ..RunOpts::default()
    };
    let runners: [(&str, RunOpts); 3] = [
        (MEMORY, bus(None)),
        (NEVER, bus(Some(FsyncPolicy::Never))),
        (FSYNC_BATCH, bus(Some(FsyncPolicy::Batch))),
    ];
    let topics = w.topic_names();
    let record = topics
        .iter()
        .map(|t| persist::record_len(t, w.payload))
        .sum::<usize>()
        .div_ceil(w.topics);
    let mut series: Vec<Series> = runners.iter().map(|(name, _)| Series::new(*name)).collect();
    type Floor = fn(&Workload, &RunOpts, &Path) -> Result<crate::RunResult, crate::Error>;
    let floors: [(&str, Floor); 4] = [
        (RING_FRAMED, floor::ring_framed_append),
        (RING_PREFRAMED, floor::ring_preframed_append),
        (RING_FRAMED_SYNCED, floor::ring_framed_append_synced),
        (RING_PREFRAMED_SYNCED, floor::ring_preframed_append_synced),
    ];
    let mut floor_series: Vec<Series> = floors.iter().map(|(name, _)| Series::new(*name)).collect();
    let mut raw: Vec<RawSeries> = [RAW_SYNC, RAW_FRAMED, RAW_FRAMED_SYNCED, RAW_BYTES]
        .into_iter()
        .map(|name| RawSeries {
            name: name.into(),
            records_per_sec: Vec::new(),
            mb_per_sec: Vec::new(),
            error: None,
        })
        .collect();
    for _ in 0..reps {
        for ((name, o), s) in runners.iter().zip(&mut series) {
            progress(&format!("persistence: {name}"));
            if s.error.is_none() {
                match shardbus_run(&w, o) {
                    Ok(r) => s.runs.push(RunSummary::of(&w, &r)),
                    Err(e) => s.error = Some(e.to_string()),
                }
            }
        }
        for ((name, run), s) in floors.iter().zip(&mut floor_series) {
            progress(&format!("persistence: {name}"));
            if s.error.is_none() {
                match run(&w, &RunOpts::default(), dir) {
                    Ok(r) => s.runs.push(RunSummary::of(&w, &r)),
                    Err(e) => s.error = Some(e.to_string()),
                }
            }
        }
        for r in &mut raw {
            progress(&format!("persistence: {}", r.name));
            if r.error.is_some() {
                continue;
            }
            let run = match r.name.as_str() {
                RAW_SYNC => persist::raw_append(dir, record, SHARD_BATCH, messages),
                RAW_FRAMED => persist::raw_buffered_append(
                    dir,
                    &topics,
                    w.payload,
                    SHARD_BATCH,
                    messages,
                    RawWork::Frame,
                ),
                RAW_FRAMED_SYNCED => persist::raw_buffered_append_synced(
                    dir,
                    &topics,
                    w.payload,
                    SHARD_BATCH,
                    messages,
                    persist::CHECKPOINT_RECORDS,
                ),
                _ => persist::raw_buffered_append(
                    dir,
                    &topics,
                    w.payload,
                    SHARD_BATCH,
                    messages,
                    RawWork::Bytes,
                ),
            };
            match run {
                Ok(x) => {
                    r.records_per_sec.push(RawResult::records_per_sec(&x));
                    r.mb_per_sec.push(x.mb_per_sec());
                }
                Err(e) => r.error = Some(e.to_string()),
            }
        }
    }
    series.extend(floor_series);
    PersistFloors {
        workload: WorkloadDesc::of(&w),
        batch: SHARD_BATCH,
        series,
        raw,
    }
}

/// Every target the suite's floors and checksum groups decide, from the medians of this run.
pub fn targets(
    groups: &[Group],
    legs: &[LegRow],
    persist: Option<&PersistFloors>,
) -> Vec<TargetRow> {
    // Each rate of a hand-off row, in run order.
    let h = |name: &str| -> Vec<f64> {
        groups
            .iter()
            .find(|g| g.key == HANDOFF_CHECKSUM)
            .and_then(|g| g.series.iter().find(|s| s.name == name))
            .map_or_else(Vec::new, |s| {
                s.runs.iter().map(|r| r.msgs_per_sec).collect()
            })
    };
    // `(a, b, bound)`: a target `a / b >= bound`, or a ratio reported without one.
    let handoff: [(&str, &str, Option<f64>); 14] = [
        (BY_HANDLE, DISRUPTOR, Some(1.0)),
        (SPIN_MEMBARRIER, DISRUPTOR, None),
        (SPIN_MEMBARRIER, DISRUPTOR_ENVELOPED, None),
        (DISRUPTOR_ENVELOPED, DISRUPTOR, None),
        (BY_HANDLE, DISRUPTOR_FENCED, None),
        (DISRUPTOR_FENCED, DISRUPTOR, None),
        (BATCH, DISRUPTOR, Some(1.5)),
        (BY_NAME, BY_HANDLE, Some(0.8)),
        (BY_NAME, SYNC_CHANNEL, Some(1.5)),
        (BY_HANDLE, SYNC_CHANNEL, None),
        (BY_NAME_MEMBARRIER, SYNC_CHANNEL, None),
        (BY_NAME_MEMBARRIER, BY_HANDLE_MEMBARRIER, None),
        (BY_HANDLE, RING, None),
        (BATCH, RING_BATCH, None),
    ];
    let mut rows = ratio_rows("checksum hand-off", &handoff, h, |what, m, min| {
        TargetRow::ratio_at_least(what, m, min)
    });
    let leg = |name: &str| legs.iter().find(|l| l.name == name);
    let p50s = |l: Option<&LegRow>| -> Vec<f64> {
        l.map_or_else(Vec::new, |l| l.p50s.iter().map(|&x| x as f64).collect())
    };
    let (bus, atomic) = (leg(BUS_LEG), leg(ATOMIC_LEG));
    rows.push(TargetRow::ratio_at_most(
        "one leg p50: shardbus spin / bare atomic",
        paired(&p50s(bus), &p50s(atomic)),
        1.5,
    ));
    let bus = bus.map(|l| &l.one_way);
    rows.push(TargetRow::ns_at_most(
        "one leg p99.9: shardbus spin",
        bus.map(|b| b.p999 as f64),
        3000.0,
    ));
    if let Some(p) = persist {
        // Each repetition's records per second, in run order: a bus or ring row's, or a
        // raw append's.
        let rate = |name: &str| -> Vec<f64> {
            match p.series.iter().find(|s| s.name == name) {
                Some(s) => s.runs.iter().map(|r| r.msgs_per_sec).collect(),
                None => p
                    .raw
                    .iter()
                    .find(|r| r.name == name)
                    .map_or_else(Vec::new, |r| r.records_per_sec.clone()),
            }
        };
        // `(a, b, bound)`: a target `a / b >= bound` (a share), or a ratio without one.
        let persistence: [(&str, &str, Option<f64>); 10] = [
            (NEVER, RAW_FRAMED, Some(0.8)),
            (FSYNC_BATCH, RAW_SYNC, Some(0.7)),
            (NEVER, RAW_BYTES, None),
            (NEVER, RING_FRAMED, None),
            (RING_FRAMED, RAW_FRAMED, None),
            (RING_PREFRAMED, RAW_FRAMED, None),
            (NEVER, RING_FRAMED_SYNCED, None),
            (RING_FRAMED_SYNCED, RAW_FRAMED, None),
            (RING_PREFRAMED_SYNCED, RAW_FRAMED, None),
            (RAW_FRAMED_SYNCED, RAW_FRAMED, None),
        ];
        rows.extend(ratio_rows(
            "persistence 256 B",
            &persistence,
            rate,
            TargetRow::share_at_least,
        ));
    }
    rows
}

/// One row per `(a, b, bound)` of `table`, `a / b` paired per repetition from `rate`: a
/// target `>= bound` built by `bounded`, or, without a bound, a ratio reported as it is.
fn ratio_rows(
    prefix: &str,
    table: &[(&str, &str, Option<f64>)],
    rate: impl Fn(&str) -> Vec<f64>,
    bounded: impl Fn(String, Measured, f64) -> TargetRow,
) -> Vec<TargetRow> {
    table
        .iter()
        .map(|&(a, b, bound)| {
            let what = format!("{prefix}: {a} / {b}");
            let measured = paired(&rate(a), &rate(b));
            match bound {
                Some(min) => bounded(what, measured, min),
                None => TargetRow::fraction(what, measured),
            }
        })
        .collect()
}
