//! Thread names as the OS shows them (`/proc/self/task/*/comm`, as `top -H` and `ps -L`
//! read them): Linux keeps 15 bytes of a name, and every shard's must survive whole and
//! say which shard it serves: `sb-shard-N`, and `sb-io-N` for a persistent shard's I/O
//! thread. A prefix whose names would not fit is refused by `build()`.
//!
//! Its own binary, and one test: it lists every thread of the process, so no other test
//! may run buses beside it.
#![cfg(target_os = "linux")]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardbus::log::SimStorage;
use shardbus::{Bus, Error, Persistence};

/// Bounds the wait for threads to name themselves (a thread sets its name as it starts).
const PATIENCE: Duration = Duration::from_secs(30);

/// The names of this process's threads that start with one of `prefixes`.
fn thread_names(prefixes: &[&str]) -> BTreeSet<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim_end_matches('\n').to_owned())
        .filter(|name| prefixes.iter().any(|p| name.starts_with(p)))
        .collect()
}

/// Waits until the named threads are exactly `expected` (or the patience runs out), and
/// checks that they are.
fn assert_threads(prefixes: &[&str], expected: &[&str]) {
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    let deadline = Instant::now() + PATIENCE;
    let mut names = thread_names(prefixes);
    while names != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        names = thread_names(prefixes);
    }
    assert_eq!(names, expected);
}

#[test]
fn shard_and_io_threads_are_named_for_their_shard_and_bad_prefixes_are_refused() {
    // The default prefix.
    let bus = Bus::<u32>::builder()
        .shards(3)
        .pin_threads(false)
        .build()
        .unwrap();
    assert_threads(
        &["sb-", "shardbus"],
        &["sb-shard-0", "sb-shard-1", "sb-shard-2"],
    );
    bus.shutdown();
    assert_threads(&["sb-", "shardbus"], &[]);

    // A persistent bus: an I/O thread per shard too.
    let sim = SimStorage::new();
    let bus = Bus::<String>::builder()
        .shards(2)
        .pin_threads(false)
        .persist(Persistence::new("/bus").storage(Arc::new(sim)))
        .build()
        .unwrap();
    assert_threads(
        &["sb-", "shardbus"],
        &["sb-io-0", "sb-io-1", "sb-shard-0", "sb-shard-1"],
    );
    bus.shutdown();
    assert_threads(&["sb-", "shardbus"], &[]);

    // A prefix of the user's: 11 shards, the last name of exactly 15 bytes.
    let bus = Bus::<u32>::builder()
        .shards(11)
        .pin_threads(false)
        .thread_name("worker-pools")
        .build()
        .unwrap();
    let expected: Vec<String> = (0..11).map(|i| format!("worker-pools-{i}")).collect();
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    assert_threads(&["worker-pools"], &expected);
    bus.shutdown();

    // Names that would not fit, or hold a NUL: refused before any thread starts.
    for (prefix, shards, longest) in [
        ("worker-pools", 101, "worker-pools-100"),
        ("worker-pools-xy", 1, "worker-pools-xy-0"),
        ("a\0b", 1, "a\0b-0"),
    ] {
        let longest = longest.to_owned();
        match Bus::<u32>::builder()
            .shards(shards)
            .pin_threads(false)
            .thread_name(prefix)
            .build()
        {
            Err(Error::InvalidThreadName { name, max: 15 }) if name == longest => {}
            other => panic!("{prefix:?} x {shards}: {other:?}"),
        }
    }
    assert_threads(&["worker-pools", "a\0b"], &[]);
}
