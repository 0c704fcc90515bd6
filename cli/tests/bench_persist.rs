//! `shardbus bench --persist`: every fsync policy, the raw baseline and recovery in one small
//! invocation; every run verified, every scratch directory removed.

use std::process::Command;

#[test]
fn bench_persist_runs_every_policy_and_cleans_up() {
    let dir =
        std::env::temp_dir().join(format!("shardbus-cli-bench-persist-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_shardbus"))
        .args(["bench", "--persist"])
        .arg(&dir)
        .args([
            "--fsync",
            "never,batch,interval,always",
            "--payload",
            "16,256",
            "--messages",
            "3000",
            "--always-messages",
            "50",
            "--reps",
            "1",
            "--recovery-gib",
            "0.001",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for row in [
        "shardbus (memory)",
        "shardbus fsync never",
        "shardbus fsync batch",
        "shardbus fsync interval(10ms)",
        "shardbus fsync always",
        "raw append+sync",
        "records of 72 B",
        "records of 312 B",
        "target: fsync batch >= 70% of raw append+sync",
        "raw buffered append (framed)",
        "raw buffered append (bytes)",
        "target: fsync never / raw buffered append (framed) >= 80%: ",
        "recovery: 1 shard(s)",
        "verified: every message exactly once",
    ] {
        assert!(stdout.contains(row), "missing {row:?} in\n{stdout}");
    }
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "scratch left in {dir:?}"
    );
    let _ = std::fs::remove_dir(&dir);
}
