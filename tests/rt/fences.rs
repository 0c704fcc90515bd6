//! `Builder::fences`: each mode builds and delivers every message exactly once, in order
//! per publisher and topic, through the shared inbox and through private lanes, with
//! shards that park between bursts (the heavy fence) and lanes closed at shutdown (the
//! other heavy fence); `Bus::fence_mode` reports what was chosen. The environment
//! override is tested in `tests/rt_host.rs`, which owns its process.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use shardbus::{Bus, Context, Error, FenceMode, Fences};

use crate::common::{assert_quiescent_stats, name_on_shard, not_exactly_once};

const TOPICS_PER_SHARD: usize = 2;
const BURSTS: u32 = 20;
const PER_BURST: u32 = 50;

/// What `Fences::Membarrier` gives on this machine: the mode, or `None` where `build()`
/// refuses it (then with `MembarrierUnavailable`, checked here).
fn membarrier_here() -> Option<FenceMode> {
    match Bus::<u32>::builder()
        .shards(1)
        .pin_threads(false)
        .fences(Fences::Membarrier)
        .build()
    {
        Ok(bus) => {
            let mode = bus.fence_mode();
            drop(bus.shutdown());
            Some(mode)
        }
        Err(Error::MembarrierUnavailable { source }) => {
            assert!(!source.to_string().is_empty());
            None
        }
        Err(other) => panic!("expected Ok or MembarrierUnavailable, got {other:?}"),
    }
}

/// Publishes `BURSTS` bursts from two threads (one through `Bus::publish`, one through a
/// `Publisher`), waiting between bursts until every shard has handled everything (so the
/// shards go idle and park), and checks exact counts and order.
fn delivers_exactly_once(fences: Fences, want: FenceMode) {
    let shards = 2;
    let bus = Bus::<u32>::builder()
        .shards(shards)
        .pin_threads(false)
        .fences(fences)
        .build()
        .unwrap();
    assert_eq!(bus.fence_mode(), want, "{fences:?}");

    let topics: Vec<String> = (0..shards)
        .flat_map(|s| (0..TOPICS_PER_SHARD).map(move |k| (s, k)))
        .map(|(s, k)| name_on_shard(&bus, &format!("f{k}"), s))
        .collect();
    // Messages are `sender << 31 | topic << 24 | n`; a counter per message id and, per
    // (sender, topic), the sequence seen.
    let total = 2 * topics.len() as u32 * BURSTS * PER_BURST;
    let counters: Arc<Vec<AtomicU32>> = Arc::new((0..total).map(|_| AtomicU32::new(0)).collect());
    let seen: Arc<Mutex<Vec<Vec<u32>>>> = Arc::new(Mutex::new(vec![Vec::new(); 2 * topics.len()]));
    for topic in &topics {
        let (counters, seen, n_topics) = (counters.clone(), seen.clone(), topics.len() as u32);
        bus.subscribe(topic.as_str(), move |_: &mut Context<'_, u32>, m: &u32| {
            let (sender, topic, n) = (m >> 31, (m >> 24) & 0x7f, m & 0xff_ffff);
            let id = (sender * n_topics + topic) * BURSTS * PER_BURST + n;
            counters[id as usize].fetch_add(1, Relaxed);
            seen.lock().unwrap()[(sender * n_topics + topic) as usize].push(n);
        })
        .unwrap();
    }

    let mut publisher = bus.publisher();
    for burst in 0..BURSTS {
        std::thread::scope(|s| {
            s.spawn(|| {
                for (t, topic) in topics.iter().enumerate() {
                    for i in 0..PER_BURST {
                        let n = burst * PER_BURST + i;
                        bus.publish(topic.as_str(), (t as u32) << 24 | n).unwrap();
                    }
                }
            });
            for (t, topic) in topics.iter().enumerate() {
                for i in 0..PER_BURST {
                    let n = burst * PER_BURST + i;
                    publisher
                        .publish(topic.as_str(), 1 << 31 | (t as u32) << 24 | n)
                        .unwrap();
                }
            }
        });
        // Wait until all is handled, so the shards run dry and park before the next burst.
        let want = u64::from(2 * topics.len() as u32 * (burst + 1) * PER_BURST);
        let start = std::time::Instant::now();
        while bus.stats().handled() < want {
            assert!(
                start.elapsed() < crate::common::PATIENCE,
                "burst {burst} stuck"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    drop(publisher);
    let stats = bus.shutdown();
    assert_eq!(stats.handled(), u64::from(total), "{fences:?}");
    assert_quiescent_stats(&stats);
    assert_eq!(not_exactly_once(&counters), [], "{fences:?}");
    let want: Vec<u32> = (0..BURSTS * PER_BURST).collect();
    for (i, got) in seen.lock().unwrap().iter().enumerate() {
        assert_eq!(*got, want, "{fences:?}: sender/topic {i} out of order");
    }
}

#[test]
fn seqcst_fences_deliver_exactly_once() {
    delivers_exactly_once(Fences::SeqCst, FenceMode::SeqCst);
}

#[test]
fn membarrier_fences_deliver_exactly_once_where_offered() {
    // Where it is refused, `membarrier_here` has checked the typed error.
    if let Some(mode) = membarrier_here() {
        // Membarrier, unless `SHARDBUS_NO_MEMBARRIER` overrides it for this process.
        let overridden = std::env::var_os("SHARDBUS_NO_MEMBARRIER").is_some();
        let want = if overridden {
            FenceMode::SeqCst
        } else {
            FenceMode::Membarrier
        };
        assert_eq!(mode, want);
        delivers_exactly_once(Fences::Membarrier, want);
    }
}

#[test]
fn auto_falls_back_to_what_the_kernel_offers() {
    let want = membarrier_here().unwrap_or(FenceMode::SeqCst);
    delivers_exactly_once(Fences::Auto, want);
}

/// The default is `SeqCst`; two buses of one process may differ.
#[test]
fn default_is_seqcst_and_buses_differ() {
    let want = membarrier_here().unwrap_or(FenceMode::SeqCst);
    let default = Bus::<u32>::builder()
        .shards(1)
        .pin_threads(false)
        .build()
        .unwrap();
    let auto = Bus::<u32>::builder()
        .shards(1)
        .pin_threads(false)
        .fences(Fences::Auto)
        .build()
        .unwrap();
    assert_eq!(default.fence_mode(), FenceMode::SeqCst);
    assert_eq!(auto.fence_mode(), want);
    assert_eq!(FenceMode::Membarrier.to_string(), "membarrier");
    assert_eq!(FenceMode::SeqCst.as_str(), "seqcst-fence");
    drop((auto.shutdown(), default.shutdown()));
}
