//! Closed loop ([`closed_loop`]): tokens circulate between actors; each handled token is published
//! by its actor to a random actor (so to a random shard), a fixed number in flight, no producer
//! thread at all: the workload that lives inside the shards and measures how they scale.

use std::hint;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use shardbus::{Context, Handler, Topic};

use super::build;
use crate::harness::{Error, RunOpts};

/// The closed-loop core-scaling workload.
#[derive(Clone, Debug)]
pub struct ClosedLoop {
    /// Shards of the bus.
    pub shards: usize,
    /// Actors (topics `actor-{i}`), spread over the shards by shardbus's routing.
    pub actors: usize,
    /// Tokens in flight, all the time.
    pub tokens: usize,
    /// Hops each token makes before it retires; every token is handled `hops + 1` times.
    pub hops: u64,
    /// Simulated work per handled message: rounds of a 64-bit mix (about 1 ns each here).
    pub work: u32,
    /// Seed of the tokens' random walks.
    pub seed: u64,
}

/// What [`closed_loop`] measured.
#[derive(Clone, Debug)]
pub struct ClosedLoopResult {
    /// From injecting the first token to the last token retiring.
    pub elapsed: Duration,
    /// Messages handled (every hop of every token).
    pub handled: u64,
    /// Messages handled per shard.
    pub per_shard_handled: Vec<u64>,
    /// Every token retired exactly once and the handled count is `tokens × (hops + 1)`.
    pub exact: bool,
}

impl ClosedLoopResult {
    /// Handled messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.handled as f64 / self.elapsed.as_secs_f64()
    }
}

/// A token of the closed loop.
#[derive(Clone, Copy, Debug)]
struct Token {
    id: u32,
    hops_left: u64,
    rng: u64,
}

/// A closed-loop actor: forwards each token to a random actor until its hops run out.
struct Hopper {
    topics: Arc<[Topic]>,
    work: u32,
    handled: u64,
    retired: Vec<u32>,
    done: Arc<CachePadded<AtomicU64>>,
    back: mpsc::Sender<(u64, Vec<u32>)>,
}

impl Handler<Token> for Hopper {
    fn handle(&mut self, ctx: &mut Context<'_, Token>, token: &Token) {
        self.handled += 1;
        let mut x = token.rng;
        for _ in 0..self.work {
            x = mix(x);
        }
        let x = hint::black_box(x);
        if token.hops_left == 0 {
            self.retired.push(token.id);
            // Relaxed: a completion count the driver polls; no memory is read on its strength.
            self.done.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let rng = mix(x ^ token.rng.wrapping_add(0x9E37_79B9_7F4A_7C15));
        let next = ((u128::from(rng) * self.topics.len() as u128) >> 64) as usize;
        let next_token = Token {
            id: token.id,
            hops_left: token.hops_left - 1,
            rng,
        };
        // Fails only once the target shard stopped; the verdict then shows the token missing.
        let _ = ctx.publish(self.topics[next], next_token);
    }

    fn on_stop(&mut self, _ctx: &mut Context<'_, Token>) {
        let _ = self
            .back
            .send((self.handled, std::mem::take(&mut self.retired)));
    }
}

/// The SplitMix64 finalizer, as the per-message work and the tokens' random walk.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs the closed-loop workload (see the module docs). `opts.wait`, `opts.capacity` and
/// `opts.pin` apply; `opts.shards` does not (the workload names its own).
pub fn closed_loop(cfg: &ClosedLoop, opts: &RunOpts) -> Result<ClosedLoopResult, Error> {
    opts.validate()?;
    if cfg.actors == 0 || cfg.tokens == 0 || u32::try_from(cfg.tokens).is_err() {
        return Err(Error::Opts(
            "closed loop needs actors > 0 and 0 < tokens < 2^32",
        ));
    }
    let bus = build::<Token>(opts, cfg.shards)?;
    let topics: Arc<[Topic]> = (0..cfg.actors)
        .map(|i| bus.topic(&format!("actor-{i}")))
        .collect::<Result<Vec<_>, _>>()?
        .into();
    let done = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let (back, back_rx) = mpsc::channel();
    for topic in topics.iter() {
        bus.subscribe(
            topic,
            Hopper {
                topics: topics.clone(),
                work: cfg.work,
                handled: 0,
                retired: Vec::with_capacity(cfg.tokens),
                done: done.clone(),
                back: back.clone(),
            },
        )?;
    }
    drop(back);
    let mut publisher = bus.publisher();
    let start = Instant::now();
    for id in 0..cfg.tokens {
        let rng = mix(cfg.seed ^ mix(id as u64 + 1));
        let first = ((u128::from(rng) * topics.len() as u128) >> 64) as usize;
        let token = Token {
            // Cannot truncate: checked above.
            id: id as u32,
            hops_left: cfg.hops,
            rng,
        };
        publisher
            .publish(topics[first], token)
            .map_err(|_| Error::Opts("bus closed while injecting tokens"))?;
    }
    // Relaxed: see `Hopper::handle`.
    while done.load(Ordering::Relaxed) < cfg.tokens as u64 {
        thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed();
    drop(publisher);
    let stats = bus.shutdown();
    let mut seen = vec![0u32; cfg.tokens];
    let mut handled = 0;
    for (n, retired) in back_rx {
        handled += n;
        for id in retired {
            seen[id as usize] += 1;
        }
    }
    let exact = seen.iter().all(|&n| n == 1) && handled == cfg.tokens as u64 * (cfg.hops + 1);
    Ok(ClosedLoopResult {
        elapsed,
        handled,
        per_shard_handled: stats.shards.iter().map(|s| s.handled).collect(),
        exact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::testing::opts;

    #[test]
    fn closed_loop_retires_every_token_once() {
        for shards in [1, 2] {
            let cfg = ClosedLoop {
                shards,
                actors: 16,
                tokens: 32,
                hops: 500,
                work: 4,
                seed: 3,
            };
            let r = closed_loop(&cfg, &opts()).unwrap();
            assert!(r.exact, "{r:?}");
            assert_eq!(r.handled, 32 * 501);
            assert_eq!(r.per_shard_handled.iter().sum::<u64>(), 32 * 501);
        }
    }
}
