//! `shardbus bench --nats URL` against a nats-server of its own (loopback, a free port,
//! JetStream in a temporary store, stopped by pid when the test ends): both tables come
//! out, a row per payload and subject count, and every run receives what it sent.
//! Without a nats-server binary the test skips loudly, except under `CI=true`.

use shardbus_nats::server::NatsServer;
use std::process::Command;

#[test]
fn bench_nats_prints_both_tables_and_verifies() {
    let server = match NatsServer::start() {
        Ok(server) => server,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && std::env::var("CI").as_deref() != Ok("true") =>
        {
            eprintln!("\n!!!!!!!! SKIPPED: no nats-server binary ({e}) !!!!!!!!\n");
            return;
        }
        Err(e) => panic!("cannot start nats-server: {e}"),
    };
    let out = Command::new(env!("CARGO_BIN_EXE_shardbus"))
        .args([
            "bench",
            "--nats",
            &server.url(),
            "--payload",
            "16",
            "--reps",
            "1",
            "--nats-messages",
            "5000",
            "--nats-latency-messages",
            "500",
            "--nats-subjects",
            "1,4",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    // On a failure, the server's side too (a slow consumer, a closed connection).
    let log = std::fs::read_to_string(server.dir().join("server.log")).unwrap_or_default();
    let log = log.get(log.len().saturating_sub(4000)..).unwrap_or(&log);
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\nnats-server log (tail):\n{log}"
    );
    let first = stdout.lines().next().unwrap_or_default();
    assert!(first.contains(" cores, "), "machine line: {first}");
    // Two core rows and one JetStream row, each exact.
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| 16 B |"))
        .collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert!(rows[0].starts_with("| 16 B | 1 |"), "{stdout}");
    assert!(rows[1].starts_with("| 16 B | 4 |"), "{stdout}");
    assert!(rows.iter().all(|r| r.ends_with("| yes |")), "{stdout}");
    assert!(!stderr.contains("received"), "{stderr}");
}
