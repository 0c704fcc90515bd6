//! Process-crash test: re-executes this test binary as a child that appends and commits in a
//! loop on the real filesystem, kills it (SIGKILL) at a pseudo-random instant, reopens the log
//! and checks that every committed record is there, intact and in order, three times over the
//! same directory.
//!
//! A killed process leaves its writes in the page cache, so this tests *process* crash, not
//! power loss: the unsynced tail survives here. Power loss is covered by `SimStorage` in
//! `log_power_loss.rs`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{config, TestDir};
use shardbus::log::{FsStorage, FsyncPolicy, RecordRef, Seq, ShardLog};

const CHILD_ENV: &str = "SHARDBUS_LOG_CRASH_CHILD_DIR";

/// The child's body; a no-op unless started by `killed_writer_keeps_every_committed_record`.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mut log, _) = ShardLog::open(
        Arc::new(FsStorage),
        dir,
        config(64 * 1024, FsyncPolicy::Batch),
    )
    .unwrap();
    let mut out = std::io::stdout().lock();
    let mut n: u64 = 0;
    // Bounded even if the parent dies before killing us.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        // Batches of 1..=40 records whose payload is their own sequence number.
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let size = 1 + (n >> 58) % 40;
        let first = log.next_seq().get();
        let payloads: Vec<[u8; 8]> = (first..first + size).map(u64::to_le_bytes).collect();
        let batch: Vec<RecordRef<'_>> = payloads
            .iter()
            .map(|p| RecordRef::new("crash", p))
            .collect();
        log.append(&batch).unwrap();
        log.commit().unwrap();
        writeln!(out, "committed {}", log.next_seq().get()).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn killed_writer_keeps_every_committed_record() {
    let tmp = TestDir::new("proc-crash");
    let dir = tmp.path().join("shard-000");
    let exe = std::env::current_exe().unwrap();
    for round in 0..3 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let committed = Arc::new(AtomicU64::new(0));
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::clone(&committed);
        let lines = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("committed ") {
                    seen.store(n.parse().unwrap(), Ordering::Relaxed);
                }
            }
        });
        // Wait for the first commit, then a pseudo-random 10..160 ms more.
        let deadline = Instant::now() + Duration::from_secs(30);
        while committed.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let jitter = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 150;
        std::thread::sleep(Duration::from_millis(10 + u64::from(jitter)));
        child.kill().unwrap();
        child.wait().unwrap();
        lines.join().unwrap();
        let committed = committed.load(Ordering::Relaxed);
        assert!(committed > 0, "round {round}: the child never committed");

        let (log, r) = ShardLog::open(
            Arc::new(FsStorage),
            &dir,
            config(64 * 1024, FsyncPolicy::Batch),
        )
        .unwrap();
        assert!(
            r.next_seq().get() >= committed,
            "round {round}: recovered {} < committed {committed}",
            r.next_seq()
        );
        let mut expected = 0;
        for rec in log.reader(Seq(0)).unwrap() {
            let rec = rec.unwrap();
            assert_eq!(rec.seq, Seq(expected));
            assert_eq!(rec.payload, expected.to_le_bytes());
            expected += 1;
        }
        assert_eq!(Seq(expected), r.next_seq());
        eprintln!(
            "round {round}: committed {committed}, recovered {expected}, torn bytes {}",
            r.report().torn_bytes
        );
    }
}
