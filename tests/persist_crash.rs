//! Crash test: the test binary re-executes itself as a child that runs a persistent bus
//! on the real filesystem, publishes numbered messages to many topics, waits for each
//! group to be durable and then prints the highest acknowledged number; its handlers
//! append every message they see to a file. The parent SIGKILLs the child at a random
//! instant (sometimes before its first acknowledgement, that is during recovery and
//! replay of the previous child's log), checks the log, and starts the next child on the
//! same directory. At the end it opens the bus itself (a last recovery and replay) and
//! checks:
//!
//! - every acknowledged message was handled, by some process, after it was published
//!   (at least once);
//! - within each process, every topic's messages were handled in increasing order (a
//!   replay brings older children's messages first, then the new ones follow);
//! - after every kill the log verifies: `inspect` finds nothing but, at most, a torn tail;
//!   and recovery keeps every record the killed process wrote (it ends where `inspect`
//!   saw the last valid record, a segment left under its temporary name by a roll included).
//!
//! Small segments and a small retention limit put segment rolls and retention inside the
//! killed window too.
//!
//! A killed process keeps its writes in the operating system's page cache, so this tests
//! a **process crash, not power loss**: it shows that the runtime's own protocol (append,
//! commit, confirm, handle, checkpoint, replay) loses nothing it acknowledged. Power loss
//! (unsynced bytes gone, the last write torn) is modelled with `SimStorage` in
//! `tests/persist/durable.rs` and `tests/persist/poison.rs`.
//!
//! It runs under the default `FsyncPolicy::Batch` and under `Never`, where a message is
//! acknowledged once its record is written to the operating system: a kill in the middle of
//! a segment roll (the new segment still under its temporary name while the I/O thread syncs
//! the full one) must lose none of those either.
//!
//! `SHARDBUS_CRASH_CYCLES` sets the number of kill/restart cycles of each (default 50).

mod common;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::TestDir;
use shardbus::log::{
    inspect, read_meta, recover, FsStorage, FsyncPolicy, RecoveryOptions, RetentionLimit,
};
use shardbus::{Builder, Bus, Context, Persistence};

const CHILD_DIR: &str = "SHARDBUS_CRASH_CHILD_DIR";
const CHILD_CYCLE: &str = "SHARDBUS_CRASH_CHILD_CYCLE";
/// `never` or `batch`: the child's fsync policy.
const CHILD_FSYNC: &str = "SHARDBUS_CRASH_CHILD_FSYNC";
const TOPICS: u64 = 16;
const SHARDS: usize = 4;
/// Message numbers of cycle `c` are `c * STRIDE + i`: later children's are larger.
const STRIDE: u64 = 1 << 32;

fn topic(n: u64) -> String {
    format!("topic-{:02}", n % TOPICS)
}

fn policy(name: &str) -> FsyncPolicy {
    match name {
        "never" => FsyncPolicy::Never,
        "batch" => FsyncPolicy::Batch,
        other => panic!("unknown fsync policy {other}"),
    }
}

/// A bus whose handlers append "topic number" lines to `handled` (one write each).
fn bus(
    dir: &Path,
    fsync: FsyncPolicy,
    handled: Arc<Mutex<File>>,
) -> Result<Bus<String>, shardbus::Error> {
    let mut b: Builder<String> = Bus::builder().shards(SHARDS).pin_threads(false).persist(
        Persistence::new(dir)
            .fsync(fsync)
            .segment_size(64 << 10)
            .retention(RetentionLimit {
                max_bytes: Some(256 << 10),
                max_age: None,
            })
            .checkpoint_every(200, Duration::from_millis(20)),
    );
    for t in 0..TOPICS {
        let out = handled.clone();
        b = b.subscribe(
            topic(t),
            move |ctx: &mut Context<'_, String>, msg: &String| {
                let line = format!("{} {msg}\n", ctx.topic());
                let mut f = out.lock().unwrap();
                f.write_all(line.as_bytes()).unwrap();
            },
        );
    }
    b.build()
}

/// The child's body; a no-op unless started by `crash_test`.
#[test]
fn crash_child() {
    let (Ok(dir), Ok(cycle), Ok(fsync)) = (
        std::env::var(CHILD_DIR),
        std::env::var(CHILD_CYCLE),
        std::env::var(CHILD_FSYNC),
    ) else {
        return;
    };
    let dir = Path::new(&dir);
    let cycle: u64 = cycle.parse().unwrap();
    let handled = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("handled-{cycle:04}.txt")))
        .unwrap();
    let bus = match bus(
        &dir.join("bus"),
        policy(&fsync),
        Arc::new(Mutex::new(handled)),
    ) {
        Ok(bus) => bus,
        Err(e) => {
            eprintln!("build failed: {e}");
            std::process::exit(2);
        }
    };
    let mut publisher = bus.publisher();
    let mut out = std::io::stdout().lock();
    writeln!(out, "started").unwrap();
    let mut rng = cycle.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut n = cycle * STRIDE;
    // Bounded even if the parent dies before killing us.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        for _ in 0..1 + rng % 48 {
            publisher.publish(topic(n), n.to_string()).unwrap();
            n += 1;
        }
        publisher.wait_durable().unwrap();
        writeln!(out, "ack {}", n - 1).unwrap();
        out.flush().unwrap();
    }
}

/// Checks the handled lines of one process: per-topic increasing order. Adds every
/// number to `seen`.
fn check_process(lines: impl Iterator<Item = String>, seen: &mut HashMap<u64, u32>, who: &str) {
    let mut last: HashMap<String, u64> = HashMap::new();
    for line in lines {
        let Some((t, n)) = line.split_once(' ') else {
            // A line cut by the kill is the last one; the message is replayed later.
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        assert_eq!(
            t,
            topic(n),
            "{who}: message {n} handled under the wrong topic"
        );
        if let Some(&prev) = last.get(t) {
            assert!(n > prev, "{who}: topic {t} handled {n} after {prev}");
        }
        last.insert(t.to_owned(), n);
        *seen.entry(n).or_default() += 1;
    }
}

/// Checks every shard log after a kill (see the module's documentation), recovering it as
/// the next process would; returns how many were caught in the middle of a roll.
fn verify_log(dir: &Path, cycle: u64) -> usize {
    let storage = FsStorage;
    let Some(meta) = read_meta(&storage, dir).unwrap() else {
        return 0; // killed before the bus directory was made
    };
    let mut rolling = 0;
    for shard_dir in meta.shard_dirs(dir) {
        if !shard_dir.exists() {
            continue;
        }
        let report = inspect(&storage, &shard_dir).unwrap();
        assert!(report.problems.is_empty(), "cycle {cycle}: {report:?}");
        for s in &report.segments {
            assert!(s.problems.is_empty(), "cycle {cycle}: {s:?}");
            assert_eq!(s.crc_failures, 0, "cycle {cycle}");
        }
        let Some(last) = report.segments.last() else {
            continue;
        };
        if last.path.extension().is_some_and(|e| e == "tmp") {
            rolling += 1;
        }
        let end = last.last_seq.map_or(last.first_seq, |s| s.next());
        let recovered = recover(Arc::new(FsStorage), &shard_dir, RecoveryOptions::default())
            .unwrap_or_else(|e| panic!("cycle {cycle}: recovery of {shard_dir:?}: {e}"));
        assert_eq!(
            recovered.next_seq(),
            end,
            "cycle {cycle}: recovery of {shard_dir:?} lost records: {:?}",
            recovered.report()
        );
    }
    rolling
}

#[test]
fn killed_bus_loses_no_acknowledged_message() {
    crash_test("batch");
}

#[test]
fn killed_bus_under_fsync_never_loses_no_acknowledged_message() {
    crash_test("never");
}

/// Kills and restarts children running a bus under `fsync`, then checks what they
/// acknowledged (see the module's documentation).
fn crash_test(fsync: &str) {
    let cycles: u64 = std::env::var("SHARDBUS_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let tmp = TestDir::new(&format!("crash-{fsync}"));
    let bus_dir = tmp.path().join("bus");
    let exe = std::env::current_exe().unwrap();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test ({fsync}): {cycles} cycles, seed {seed}");
    let mut rng = seed;
    let mut acked: Vec<u64> = Vec::new(); // highest acknowledged number of each cycle
    let start = Instant::now();
    let mut killed_before_ack = 0;
    let mut mid_roll = 0;
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, tmp.path())
            .env(CHILD_CYCLE, cycle.to_string())
            .env(CHILD_FSYNC, fsync)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let highest = Arc::new(AtomicU64::new(u64::MAX));
        let stdout = child.stdout.take().unwrap();
        let seen = highest.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("ack ") {
                    seen.store(n.parse().unwrap(), Ordering::SeqCst);
                }
            }
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // A random instant: one kill in four lands in the first 25 ms (start-up,
        // recovery, replay of the previous child's log), the rest up to 300 ms in.
        let delay = if rng.is_multiple_of(4) {
            rng % 25
        } else {
            25 + rng % 275
        };
        std::thread::sleep(Duration::from_millis(delay));
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("cycle {cycle}: child exited by itself ({status}): {err}");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let h = highest.load(Ordering::SeqCst);
        if h == u64::MAX {
            killed_before_ack += 1;
        } else {
            acked.push(h);
        }
        mid_roll += verify_log(&bus_dir, cycle);
    }

    // The last recovery: this process replays what the last child left unfinished.
    let last = tmp.path().join("handled-last.txt");
    let file = File::create(&last).unwrap();
    let bus = bus(&bus_dir, policy(fsync), Arc::new(Mutex::new(file))).unwrap();
    bus.shutdown();
    verify_log(&bus_dir, cycles);

    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut files: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    for f in &files {
        let lines = BufReader::new(File::open(f).unwrap())
            .lines()
            .map_while(Result::ok);
        check_process(lines, &mut seen, &f.display().to_string());
    }
    let mut total = 0;
    for h in &acked {
        let first = h / STRIDE * STRIDE;
        for n in first..=*h {
            assert!(
                seen.contains_key(&n),
                "acknowledged message {n} never handled"
            );
            total += 1;
        }
    }
    let again = seen.values().filter(|&&c| c > 1).count();
    eprintln!(
        "crash test ({fsync}): {cycles} cycles in {:.1?}; {killed_before_ack} kills before the first ack; \
         {mid_roll} shard logs caught in the middle of a roll; \
         {total} acknowledged messages all handled ({again} handled more than once)",
        start.elapsed()
    );
    assert!(
        cycles < 10 || acked.len() as u64 > cycles / 4,
        "too few cycles got an ack"
    );
}
