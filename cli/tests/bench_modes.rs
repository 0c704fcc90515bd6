//! `shardbus bench --consume checksum --floors --by-name`: every runner's consumer only counts
//! and sums, every floor runs beside shardbus, and the run verifies.

use std::process::Command;

#[test]
fn bench_checksum_mode_runs_every_floor_and_verifies() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardbus"))
        .args([
            "bench",
            "--consume",
            "checksum",
            "--floors",
            "--by-name",
            "--topics",
            "4",
            "--messages",
            "20000",
            "--reps",
            "1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(", by name, checksum-only consumers,"),
        "{stdout}"
    );
    let rows = [
        "shardbus ",
        "disruptor ",
        "floor/std_sync_channel ",
        "floor/crossbeam_bounded ",
        "floor/array_queue ",
        "floor/ring ",
        "floor/ring_batch 64 ",
    ];
    for row in rows {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("missing {row:?} in\n{stdout}"));
        assert!(line.contains("sum ok -/0/-/0"), "{line}");
        assert!(line.ends_with("[20000]"), "{line}");
    }
    assert!(stdout.contains("shardbus / floor/ring: "), "{stdout}");
    assert!(
        stdout.contains("verified: every message exactly once"),
        "{stdout}"
    );
}

#[test]
fn bench_floors_with_two_producers_run_the_disruptor_only() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardbus"))
        .args([
            "bench",
            "--floors",
            "--producers",
            "2",
            "--shards",
            "2",
            "--messages",
            "20000",
            "--reps",
            "1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("shardbus / disruptor: "), "{stdout}");
    assert!(!stdout.lines().any(|l| l.starts_with("floor/")), "{stdout}");
}

/// `--capacity` sizes every ring: a 16-slot lane keeps the publisher waiting for room most
/// of the run, and the run still verifies; the header says so. Zero is refused by name.
#[test]
fn bench_capacity_sizes_the_rings_and_zero_is_refused() {
    let run = |capacity: &str| {
        Command::new(env!("CARGO_BIN_EXE_shardbus"))
            .args([
                "bench",
                "--capacity",
                capacity,
                "--floors",
                "--messages",
                "20000",
                "--reps",
                "1",
            ])
            .output()
            .unwrap()
    };
    let out = run("10");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(", rings of 16 slots, 20000 msgs x 1 runs"),
        "{stdout}"
    );
    assert!(stdout.contains("shardbus / disruptor: "), "{stdout}");
    let out = run("0");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(stderr.contains("--capacity"), "{stderr}");
}
