//! One bus per directory: a persistent bus holds an exclusive lock on its directory for
//! its lifetime, so a second bus (in this process or another) fails to build instead of
//! writing a second history into the same logs; the lock goes with the bus (shutdown,
//! drop, a failed build, a killed process).
//!
//! Unlike the rest of this binary, the first and last tests use the real filesystem
//! (`FsStorage`, which locks with `flock`); the last re-executes this test binary as a
//! child that holds the lock.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::common::persist::{builder, crash, persistence, seen, topic, wait_seen};
use crate::common::TestDir;
use shardbus::log::{FsStorage, SimStorage};
use shardbus::{Bus, Error, Persistence};

/// A persistent bus on the real filesystem, no checkpoint until a clean shutdown.
fn fs_persistence(dir: &Path) -> Persistence {
    Persistence::new(dir)
        .storage(Arc::new(FsStorage))
        .checkpoint_every(u64::MAX, Duration::from_secs(3600))
}

/// Asserts that `result` is the refusal of a directory in use, naming `dir`.
fn assert_locked<T: Send + 'static>(result: Result<Bus<T>, Error>, dir: &Path, who: &str) {
    match result {
        Err(Error::DirectoryLocked { path }) => assert_eq!(path, dir, "{who}"),
        Err(e) => panic!("{who}: not DirectoryLocked: {e}"),
        Ok(_) => panic!("{who}: a second bus opened a bus directory in use"),
    }
}

#[test]
fn a_second_bus_on_a_directory_in_use_fails_to_build() {
    let tmp = TestDir::new("lock-in-process");
    let dir = tmp.path().join("bus");
    let s = seen();
    let bus = builder(2, fs_persistence(&dir), &s).build().unwrap();
    bus.publish_durable(topic(0), "0".to_owned()).unwrap();

    assert_locked(
        builder(2, fs_persistence(&dir), &seen()).build(),
        &dir,
        "same shard count",
    );
    // Another shard count would reshard the directory under the running bus.
    assert_locked(
        builder(3, fs_persistence(&dir), &seen()).build(),
        &dir,
        "other shard count",
    );
    // The refused builds changed nothing: the first bus goes on.
    bus.publish_durable(topic(1), "1".to_owned()).unwrap();
    wait_seen(&s, 2);
    bus.shutdown();

    // Shut down: the directory is free, and its log is intact.
    let again = seen();
    let bus = builder(2, fs_persistence(&dir), &again).build().unwrap();
    bus.publish_durable(topic(2), "2".to_owned()).unwrap();
    wait_seen(&again, 1);
    // Dropped without `shutdown`: free again.
    drop(bus);
    builder(2, fs_persistence(&dir), &seen())
        .build()
        .unwrap()
        .shutdown();
}

#[test]
fn the_simulated_storage_locks_its_directories_too() {
    let sim = SimStorage::new();
    let s = seen();
    let bus = builder(1, persistence(&sim), &s).build().unwrap();
    assert_locked(
        builder(1, persistence(&sim), &seen()).build(),
        Path::new(crate::common::persist::DIR),
        "SimStorage",
    );
    // Another directory of the same storage is free.
    let other = Persistence::new("/other").storage(Arc::new(sim.clone()));
    builder(1, other, &seen()).build().unwrap().shutdown();
    bus.publish_durable(topic(0), "0".to_owned()).unwrap();
    wait_seen(&s, 1);
    // A crash (the process died) releases the lock with everything else.
    crash(bus, &sim, None);
    let again = seen();
    let bus = builder(1, persistence(&sim), &again).build().unwrap();
    wait_seen(&again, 1);
    bus.shutdown();
}

#[test]
fn a_failed_build_releases_the_directory() {
    let sim = SimStorage::new();
    // Fails before the shards start: another shard count, refused.
    builder(2, persistence(&sim), &seen())
        .build()
        .unwrap()
        .shutdown();
    let refuse = persistence(&sim).on_shard_count_change(shardbus::OnShardCountChange::Error);
    assert!(matches!(
        builder(3, refuse, &seen()).build(),
        Err(Error::ShardCountMismatch { .. })
    ));
    // Fails after the shards started: a record that does not decode stops the replay.
    let bytes = Bus::<Vec<u8>>::builder()
        .shards(2)
        .pin_threads(false)
        .persist(persistence(&sim))
        .build()
        .unwrap();
    bytes.publish_durable(topic(0), vec![0xff]).unwrap();
    std::mem::forget(bytes);
    sim.crash(None);
    for _ in 0..2 {
        // Both times the decode error, never the lock of the first failed build.
        match builder(2, persistence(&sim), &seen()).build() {
            Err(Error::Decode { .. }) => {}
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}

const CHILD_DIR: &str = "SHARDBUS_LOCK_CHILD_DIR";

/// The child's body; a no-op unless started by `another_process_holding_the_directory_blocks_the_build`.
/// Builds the bus, publishes one durable message, says `ready`, and holds the bus until
/// its standard input closes (or 60 s pass, if the parent died).
#[test]
fn lock_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let bus = match Bus::<String>::builder()
        .shards(2)
        .pin_threads(false)
        .persist(fs_persistence(Path::new(&dir)))
        .build()
    {
        Ok(bus) => bus,
        Err(e) => {
            println!("build failed: {e}");
            std::process::exit(2);
        }
    };
    bus.publish_durable(topic(0), "from the child".to_owned())
        .unwrap();
    println!("ready");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(60));
    std::mem::forget(bus); // as if killed: no checkpoint
    std::process::exit(0);
}

/// Kills the child if the test fails before it is done with it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a child process that holds a bus on `dir`; returns once it said `ready`.
fn start_child(dir: &Path) -> KillOnDrop {
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock::lock_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    // The child prints `ready` or exits (end of file): this read is bounded either way.
    // (libtest's "test lock::lock_child ... " comes first, on the same line.)
    let said: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .take_while(|l| !l.ends_with("ready"))
        .collect();
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the child exited before it was ready: {said:?}"
    );
    child
}

#[test]
fn another_process_holding_the_directory_blocks_the_build() {
    let tmp = TestDir::new("lock-process");
    let dir = tmp.path().join("bus");

    // A child that exits by itself: the parent builds once it has.
    let mut child = start_child(&dir);
    assert_locked(
        builder(2, fs_persistence(&dir), &seen()).build(),
        &dir,
        "child running",
    );
    drop(child.0.stdin.take()); // end of input: the child exits
    assert!(child.0.wait().unwrap().success());
    let s = seen();
    let bus = builder(2, fs_persistence(&dir), &s).build().unwrap();
    // Exactly the child's one message, replayed (it wrote no checkpoint).
    assert_eq!(
        *s.lock().unwrap(),
        [(topic(0), "from the child".to_owned(), true)]
    );
    bus.shutdown();

    // A child killed with SIGKILL leaves no stale lock: the kernel drops it with the
    // process.
    let mut child = start_child(&dir);
    assert_locked(
        builder(2, fs_persistence(&dir), &seen()).build(),
        &dir,
        "child running",
    );
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let s = seen();
    let bus = builder(2, fs_persistence(&dir), &s).build().unwrap();
    assert_eq!(
        *s.lock().unwrap(),
        [(topic(0), "from the child".to_owned(), true)]
    );
    bus.shutdown();
}
