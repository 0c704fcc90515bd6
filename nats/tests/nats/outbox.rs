//! The outbox: a persistent bus's log as a JetStream export's outbox. A child process (this
//! test binary, re-executed) commits messages while the server is down, so none is
//! acknowledged, and is SIGKILLed; the server comes back, and a second child reopens the
//! bus, whose replay exports them. (A process kill keeps the page cache: this tests a process crash, not power loss.)

use crate::common::*;
use shardbus::{Bus, Persistence};
use shardbus_nats::{BridgeOptions, Outbox};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ROLE: &str = "SHARDBUS_NATS_OUTBOX_ROLE";
const MESSAGES: u64 = 50;

fn outbox_options() -> BridgeOptions<Order> {
    BridgeOptions::default()
        .prefix("ob")
        .ack_timeout(Duration::from_millis(500))
        .export_timeout(Duration::from_secs(60))
}

/// The child's side; a no-op unless the parent set the role.
#[test]
fn outbox_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let url = std::env::var("OUTBOX_URL").unwrap();
    let dir = std::env::var("OUTBOX_DIR").unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let outbox = runtime
        .block_on(Outbox::<Order>::connect(&url, outbox_options()))
        .unwrap();
    let bus = Bus::<Order>::builder()
        .shards(1)
        // A checkpoint after every record: were the handler to return before the
        // acknowledgement, the checkpoint would pass the message and no replay would
        // export it again.
        .persist(Persistence::new(&dir).checkpoint_every(1, Duration::from_millis(1)))
        .subscribe("orders", outbox.handler())
        .build()
        .unwrap();
    if role == "publish" {
        println!("connected");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap(); // "go": the server is frozen now
        let mut batch = orders(5, MESSAGES / 5);
        bus.publisher().publish_batch("orders", &mut batch).unwrap();
        println!("published");
        std::thread::sleep(Duration::from_secs(60)); // killed long before
    } else {
        // The replay at build() hands the unacknowledged records to the outbox again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while outbox.stats().exported < MESSAGES && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let s = outbox.stats();
        println!("resumed exported={} failed={}", s.exported, s.export_failed);
        bus.shutdown();
    }
}

/// A child process, killed by its pid and reaped on drop: a test that fails midway leaves
/// none behind. (After a `wait`, the drop's kill is a no-op: the pid is not signalled
/// again.)
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn child(role: &str, url: &str, dir: &std::path::Path) -> Reaped {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "outbox::outbox_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .env("OUTBOX_URL", url)
        .env("OUTBOX_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    Reaped(child)
}

/// The child's stdout lines, over a channel (so reads are bounded by `recv_timeout`).
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

fn expect_line(rx: &mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(prefix) => return line,
            Ok(_) => continue,
            Err(e) => panic!("child: no {prefix:?} line: {e}"),
        }
    }
    panic!("child: no {prefix:?} line within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_exports_after_a_crash_what_was_committed_and_not_acknowledged() {
    if std::env::var(ROLE).is_ok() {
        return; // inside a child
    }
    let Some(server) = server() else { return };
    let dir = server.dir().join("bus");
    let url = server.url();
    bounded(120, async {
        let setup = Outbox::<Order>::connect(&url, outbox_options())
            .await
            .unwrap();
        setup
            .jetstream()
            .create_stream(async_nats::jetstream::stream::Config {
                name: "OB".into(),
                subjects: vec!["ob.>".into()],
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .unwrap();
        let (url2, dir2) = (url.clone(), dir.clone());
        let (server, line) = tokio::task::spawn_blocking(move || {
            let mut server = server;
            let mut first = child("publish", &url2, &dir2);
            let rx = lines(&mut first.0);
            expect_line(&rx, "connected");
            // Down: the child commits, its outbox handler waits for acknowledgements that
            // do not come (what the client buffers dies with the child); then it is killed.
            server.kill().unwrap();
            writeln!(first.0.stdin.as_mut().unwrap(), "go").unwrap();
            expect_line(&rx, "published");
            std::thread::sleep(Duration::from_millis(500));
            first.0.kill().unwrap();
            first.0.wait().unwrap();
            server.restart().unwrap();
            let mut second = child("resume", &url2, &dir2);
            let rx = lines(&mut second.0);
            let line = expect_line(&rx, "resumed");
            second.0.wait().unwrap();
            eprintln!("outbox: {line}");
            (server, line)
        })
        .await
        .unwrap();
        // The replay exported every committed message again, and all are in the stream.
        assert!(
            line.ends_with(&format!("resumed exported={MESSAGES} failed=0")),
            "{line}"
        );
        let (bus, seen) = collecting_bus("check");
        let bridge = shardbus_nats::Bridge::connect(&server.url(), bus, BridgeOptions::default())
            .await
            .unwrap();
        let _import = bridge
            .import_jetstream(shardbus_nats::JetStreamImport::new(
                "OB", "check", "ob.>", "check",
            ))
            .await
            .unwrap();
        let distinct = || {
            seen.lock()
                .unwrap()
                .iter()
                .cloned()
                .collect::<HashSet<_>>()
                .len()
        };
        assert!(
            wait_until(Duration::from_secs(30), || distinct() >= MESSAGES as usize).await,
            "{} of {MESSAGES}",
            distinct()
        );
        let expected: HashSet<_> = orders(5, MESSAGES / 5).into_iter().collect();
        assert_eq!(
            seen.lock().unwrap().iter().cloned().collect::<HashSet<_>>(),
            expected
        );
        eprintln!(
            "outbox: {} in the stream for {MESSAGES} messages",
            seen.lock().unwrap().len()
        );
        drop(server);
    })
    .await;
}
