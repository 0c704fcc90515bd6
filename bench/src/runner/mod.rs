//! The shardbus runner: the same workloads through a shardbus [`Bus`], plus the two workloads only
//! an actor runtime has: the closed-loop core-scaling run and the publisher ↔ actor ping-pong.
//!
//! - [`run`]: throughput of a [`Workload`](crate::Workload), verified like every peer's;
//! - [`closed_loop`]: the closed-loop core-scaling workload;
//! - [`ping_pong`]: publisher ↔ actor latency;
//! - [`light_turns`]: light load, the bus's parking shard and two peers fed in turn.

mod closed_loop;
mod ping_pong;
mod throughput;
mod turns;

use shardbus::Bus;

use crate::harness::{Error, RunOpts};

pub use closed_loop::{closed_loop, ClosedLoop, ClosedLoopResult};
pub use ping_pong::{crossbeam_ping_pong, ping_pong, BusPingPong, ChannelPingPong};
pub use throughput::{run, run_with_stats};
pub use turns::{light_turns, LightTurns, TurnSide, SIDES};

/// A bus of `shards` shards with the capacity, pinning and wait strategy of `opts`.
pub(crate) fn build<T: Send + 'static>(opts: &RunOpts, shards: usize) -> Result<Bus<T>, Error> {
    Ok(Bus::builder()
        .shards(shards)
        .capacity(opts.capacity.next_power_of_two().max(2))
        .pin_threads(opts.pin)
        .wait_strategy(opts.wait)
        .fences(opts.fences)
        .build()?)
}
