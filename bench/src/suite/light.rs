//! Light load: a parking shard beside a crossbeam-channel consumer and a bare park/unpark
//! ponger, one message every 10 µs, 100 µs and 1 ms, the three fed in turn by one pinger in
//! blocks of about 50 ms ([`light_turns`]): a drift of the machine falls on all three alike.
//! What a frugal idle is judged by: the serving thread's CPU (its on-CPU time over the wall
//! time of its blocks) and the leg's p50 (publish → handler entry; send → `recv` returned);
//! the bare wake-up is the floor of both legs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::report::{median, paired, TargetRow};
use crate::runner::light_turns;
use crate::RunOpts;

/// The paces, µs between two messages.
pub const INTERVALS_US: [u64; 3] = [10, 100, 1_000];

/// Wall time of each side's blocks in one run at the documented scale; at 1 ms that is
/// 2,000 messages a side, and the CPU time is read in nanoseconds (the scheduler's count).
const SECONDS: f64 = 2.0;

/// One side of a light-load row, per repetition.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LightSide {
    /// The leg's p50, ns.
    pub leg_p50s: Vec<u64>,
    /// Round trip / 2, p50, ns.
    pub rtt_half_p50s: Vec<u64>,
    /// The serving thread's CPU time over the wall time (1.0: a whole core).
    pub cpu: Vec<f64>,
}

impl LightSide {
    /// Medians: leg p50, RTT/2 p50, CPU.
    pub fn medians(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        let ns = |v: &[u64]| median(&v.iter().map(|&x| x as f64).collect::<Vec<_>>());
        (
            ns(&self.leg_p50s),
            ns(&self.rtt_half_p50s),
            median(&self.cpu),
        )
    }
}

/// The bus (2 parking shards, the actor on one) and the channel consumer at one pace.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LightRow {
    /// µs between two messages.
    pub interval_us: u64,
    /// Messages asked of each side per run (recorded in whole blocks: at least this many).
    pub rounds: u64,
    /// The bus: the serving shard's CPU.
    pub bus: LightSide,
    /// The crossbeam-channel consumer.
    pub channel: LightSide,
    /// The bus's other shard, idle all along: its CPU per repetition.
    pub idle_cpu: Vec<f64>,
    /// The floor: one leg of a bare park/unpark ping-pong, p50 per repetition (ns): every
    /// leg a wake-up of a parked thread.
    #[serde(default)]
    pub wake_p50s: Vec<u64>,
    /// Messages per block of the turns the three sides were fed in; 0 in runs recorded
    /// before the suite fed them in turns (each side had a run of its own, one after the
    /// other).
    #[serde(default)]
    pub block: u64,
}

/// `reps` repetitions at each pace, each one run of the three sides in turns
/// ([`light_turns`]); `scale` scales the wall time of each side's blocks.
pub(super) fn light(reps: usize, scale: f64, progress: &mut dyn FnMut(&str)) -> Vec<LightRow> {
    let mut rows: Vec<LightRow> = INTERVALS_US
        .iter()
        .map(|&us| LightRow {
            interval_us: us,
            rounds: ((SECONDS * scale * 1e6 / us as f64) as u64).max(1_000),
            bus: LightSide::default(),
            channel: LightSide::default(),
            idle_cpu: Vec::new(),
            wake_p50s: Vec::new(),
            block: 0,
        })
        .collect();
    let opts = RunOpts {
        shards: 2,
        ..RunOpts::default()
    };
    for _ in 0..reps {
        for row in &mut rows {
            progress(&format!(
                "light load: shardbus park, crossbeam-channel consumer and bare park/unpark in turns, every {} us",
                row.interval_us
            ));
            let Ok(t) = light_turns(row.rounds, Duration::from_micros(row.interval_us), &opts)
            else {
                continue;
            };
            row.block = t.block;
            let [bus, channel, wake] = &t.sides;
            row.wake_p50s.push(wake.one_way.value_at_quantile(0.5));
            for (side, t) in [(&mut row.bus, bus), (&mut row.channel, channel)] {
                side.leg_p50s.push(t.one_way.value_at_quantile(0.5));
                side.rtt_half_p50s.push(t.rtt_half.value_at_quantile(0.5));
            }
            // CPU only where every thread's was read, so that the sides' repetitions line up.
            if let (Some(b), Some(c), Some(idle)) = (bus.cpu, channel.cpu, t.idle_cpu) {
                row.bus.cpu.push(b);
                row.channel.cpu.push(c);
                row.idle_cpu.push(idle);
            }
        }
    }
    rows
}

/// Steps of [`light`].
pub(super) fn steps(reps: usize) -> usize {
    reps * INTERVALS_US.len()
}

/// The targets at each pace: the serving shard's CPU at most 1.2× the channel consumer's,
/// the leg's p50 no worse than the channel's; reported beside, the round trip's p50 ratio
/// and each leg's p50 over the bare wake-up's.
pub fn targets(rows: &[LightRow]) -> Vec<TargetRow> {
    let ns = |v: &[u64]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
    let mut out = Vec::new();
    for row in rows {
        let (bus, ch) = (&row.bus, &row.channel);
        let at = pace(row.interval_us);
        out.push(TargetRow::ratio_at_most(
            format!("light load {at}: shardbus park shard CPU / crossbeam-channel consumer CPU"),
            paired(&bus.cpu, &ch.cpu),
            1.2,
        ));
        out.push(TargetRow::no_worse(
            format!("light load {at}: shardbus park leg p50 / crossbeam-channel consumer's"),
            paired(&ns(&bus.leg_p50s), &ns(&ch.leg_p50s)),
        ));
        out.push(TargetRow::fraction(
            format!("light load {at}: shardbus park RTT/2 p50 / crossbeam-channel consumer's"),
            paired(&ns(&bus.rtt_half_p50s), &ns(&ch.rtt_half_p50s)),
        ));
        for (name, side) in [("shardbus park", bus), ("crossbeam-channel consumer", ch)] {
            out.push(TargetRow::fraction(
                format!("light load {at}: {name} leg p50 / bare park-unpark leg p50"),
                paired(&ns(&side.leg_p50s), &ns(&row.wake_p50s)),
            ));
        }
    }
    out
}

/// `1 msg / 10 us`, `1 msg / 1 ms`.
pub fn pace(us: u64) -> String {
    if us >= 1_000 && us.is_multiple_of(1_000) {
        format!("1 msg / {} ms", us / 1_000)
    } else {
        format!("1 msg / {us} us")
    }
}
