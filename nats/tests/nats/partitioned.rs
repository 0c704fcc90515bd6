//! Partitioned scale-out across real processes: the server maps `orders.<key>` onto
//! `orders.<p>.<key>`; three child processes (this test binary, re-executed) each import
//! one partition and append every message they handle to their own file, one line each.
//! One child is SIGKILLed mid-stream and restarted; the files then show every published
//! message handled at least once, per-key order within each incarnation, each key in one
//! partition, and how many messages were handled twice (the crashed child's handled but
//! unacknowledged ones, redelivered to its successor). A process kill keeps the page
//! cache: this tests a process crash, not a power loss.

use crate::common::*;
use shardbus::{Bus, Context};
use shardbus_nats::server::ServerConfig;
use shardbus_nats::{Bridge, BridgeOptions};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 3;
/// The child's role: the partition it imports.
const ROLE: &str = "SHARDBUS_NATS_PARTITION_ROLE";
/// Keys, and messages per key.
const KEYS: usize = 12;
const PER_KEY: u64 = 40;

/// A child: imports partition `$ROLE` into a bus whose `orders` subscriber appends
/// `<key> <seq>\n` to `$PARTITION_FILE` for every message it handles, prints `ready`,
/// and runs until a line on stdin (or 90 s), then stops its import (acknowledging what
/// it handled) and prints its counters. A no-op unless the parent set the role.
#[test]
fn partition_child() {
    let Ok(partition) = std::env::var(ROLE) else {
        return;
    };
    let partition: u32 = partition.parse().unwrap();
    let url = std::env::var("PARTITION_URL").unwrap();
    let file = std::env::var("PARTITION_FILE").unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .unwrap();
    let bus = Bus::<Order>::builder().shards(2).build().unwrap();
    bus.subscribe("orders", move |_: &mut Context<'_, Order>, o: &Order| {
        // One unbuffered write per line: each line reaches the file before the next
        // message (and before the import acknowledges it); a kill can leave at most
        // the last line torn.
        out.write_all(format!("{} {}\n", o.key, o.seq).as_bytes())
            .unwrap();
        // Slow enough that the parent's kill lands while the partition is being handled.
        std::thread::sleep(Duration::from_millis(2));
    })
    .unwrap();
    let bus = Arc::new(bus);
    let (bridge, links) = runtime.block_on(async {
        let bridge = Bridge::connect(&url, bus, BridgeOptions::default().ack_batch(16))
            .await
            .unwrap();
        let links = bridge
            .import_partitions("ORDERS", "orders", [partition], "orders", |s| {
                s.ack_wait(Duration::from_secs(2)).max_ack_pending(64)
            })
            .await
            .unwrap();
        (bridge, links)
    });
    println!("PCHILD ready");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(90));
    runtime.block_on(async {
        for link in links {
            link.stop().await;
        }
    });
    let s = bridge.stats();
    println!(
        "PCHILD stats imported={} acked={} redelivered={} rewinds={}",
        s.imported, s.import_acked, s.import_redelivered, s.import_rewinds
    );
}

/// One incarnation of a child: its process and its stdout lines.
struct Proc {
    partition: u32,
    child: Child,
    lines: mpsc::Receiver<String>,
}

/// The children; every one still here is killed and reaped on drop (a failing test
/// leaves no process behind).
#[derive(Default)]
struct Procs(Vec<Proc>);

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.0 {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

fn spawn(partition: u32, url: &str, file: PathBuf) -> Proc {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "partitioned::partition_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, partition.to_string())
        .env("PARTITION_URL", url)
        .env("PARTITION_FILE", &file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Proc {
        partition,
        child,
        lines,
    }
}

fn expect_line(p: &Proc, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match p.lines.recv_timeout(left) {
            // libtest may print the test's name on the same line first.
            Ok(line) if line.contains(prefix) => return line,
            Ok(_) => continue,
            Err(e) => panic!("partition {}: no {prefix:?} line: {e}", p.partition),
        }
    }
    panic!("partition {}: no {prefix:?} line within 30 s", p.partition);
}

/// The messages a file records, in order, and whether its last line was torn (ignored).
fn read(file: &Path) -> (Vec<Order>, bool) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut parts: Vec<&str> = text.split('\n').collect();
    // After the last '\n': empty, or a line the kill tore.
    let torn = !parts.pop().unwrap_or_default().is_empty();
    let seen = parts
        .iter()
        .map(|line| {
            let (key, seq) = line.split_once(' ').expect("a whole line is `key seq`");
            Order::new(key, seq.parse().expect("a whole line has a number"))
        })
        .collect();
    (seen, torn)
}

/// Polls `cond` every 20 ms until it holds or `secs` pass.
fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

#[test]
fn three_partitioned_processes_survive_a_sigkill_with_per_key_order() {
    if std::env::var(ROLE).is_ok() {
        return; // inside a child
    }
    let config = ServerConfig::default().partition("orders", PARTITIONS);
    let Some(server) = server_with(config) else {
        return;
    };
    let url = server.url();
    let dir = server.dir().join("partitioned");
    std::fs::create_dir_all(&dir).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let setup = runtime.block_on(async {
        let setup = Bridge::connect(&url, plain_bus(), BridgeOptions::default())
            .await
            .unwrap();
        setup
            .ensure_stream("ORDERS", &["orders.*.*"])
            .await
            .unwrap();
        setup
    });
    // Publishers outside the bridge publish `orders.<key>` with acknowledgements; the
    // server partitions.
    let js = setup.jetstream().clone();
    let publish = |batch: &[Order]| {
        runtime.block_on(async {
            for o in batch {
                let mut buf = Vec::new();
                shardbus::Codec::encode(o, &mut buf).unwrap();
                let ack = tokio::time::timeout(
                    Duration::from_secs(10),
                    js.publish(format!("orders.{}", o.key), buf.into()),
                )
                .await
                .expect("publish within 10 s")
                .unwrap();
                ack.await.unwrap();
            }
        })
    };
    let all = orders(KEYS, PER_KEY);
    let file = |p: u32, incarnation: u32| dir.join(format!("p{p}-{incarnation}.log"));

    let mut procs = Procs::default();
    for p in 0..PARTITIONS {
        procs.0.push(spawn(p, &url, file(p, 0)));
    }
    for p in &procs.0 {
        expect_line(p, "PCHILD ready");
    }
    let half = all.len() / 2;
    publish(&all[..half]);
    // SIGKILL partition 1's process (by its pid) once it has handled part of its share.
    let victim = file(1, 0);
    assert!(
        wait_for(20, || read(&victim).0.len() >= 20),
        "partition 1 handled nothing"
    );
    let mut crashed = procs.0.remove(1);
    let pid = crashed.child.id();
    crashed.child.kill().unwrap(); // SIGKILL
    let status = crashed.child.wait().unwrap();
    let at_kill = read(&victim).0.len();
    eprintln!("partitioned: killed pid {pid} ({status}) after {at_kill} messages");
    publish(&all[half..]);
    procs.0.insert(1, spawn(1, &url, file(1, 1)));
    expect_line(&procs.0[1], "PCHILD ready");

    // The incarnations: (partition, file).
    let incarnations = [
        (0, file(0, 0)),
        (1, file(1, 0)),
        (1, file(1, 1)),
        (2, file(2, 0)),
    ];
    let distinct = || {
        incarnations
            .iter()
            .flat_map(|(_, f)| read(f).0)
            .collect::<HashSet<_>>()
            .len()
    };
    assert!(
        wait_for(60, || distinct() >= all.len()),
        "handled {} of {}",
        distinct(),
        all.len()
    );
    // Stop the three live processes: each acknowledges what it handled and reports.
    for p in &mut procs.0 {
        writeln!(p.child.stdin.as_mut().unwrap(), "stop").unwrap();
    }
    let mut reports = Vec::new();
    for p in &mut procs.0 {
        reports.push((p.partition, expect_line(p, "PCHILD stats")));
        assert!(p.child.wait().unwrap().success());
    }
    procs.0.clear();
    drop(crashed);

    // The files: per-key order within each incarnation, each key in one partition,
    // every message at least once; a torn line only where the kill was.
    let mut owner: HashMap<String, u32> = HashMap::new();
    let mut handled = 0;
    let mut counts: HashMap<Order, usize> = HashMap::new();
    for (i, (partition, f)) in incarnations.iter().enumerate() {
        let (seen, torn) = read(f);
        assert!(
            !torn || i == 1,
            "{} has a torn line without a kill",
            f.display()
        );
        assert_per_key_order(&seen);
        handled += seen.len();
        for o in &seen {
            *counts.entry(o.clone()).or_default() += 1;
            assert_eq!(
                *owner.entry(o.key.clone()).or_insert(*partition),
                *partition,
                "key {} in two partitions",
                o.key
            );
        }
        if *partition != 1 {
            assert!(
                seen.iter().collect::<HashSet<_>>().len() == seen.len(),
                "a surviving process handled a message twice"
            );
        }
    }
    let expected: HashSet<Order> = all.iter().cloned().collect();
    assert_eq!(counts.keys().cloned().collect::<HashSet<_>>(), expected);
    assert_eq!(
        owner.values().collect::<HashSet<_>>().len(),
        PARTITIONS as usize,
        "every partition used"
    );
    // The kill was mid-stream: the successor handled part of partition 1.
    assert!(!read(&file(1, 1)).0.is_empty());
    let duplicates = handled - all.len();
    let twice = counts.values().filter(|&&n| n > 1).count();
    eprintln!(
        "partitioned: {handled} handled for {} published, {duplicates} duplicates \
         ({twice} messages more than once); {reports:?}",
        all.len()
    );
    drop(setup);
    drop(server);
}
