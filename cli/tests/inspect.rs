//! `shardbus inspect` on a real bus directory: text, `--json`, and `--verify`'s exit
//! status before and after a byte of a segment is flipped.

use std::path::Path;
use std::process::Command;

use shardbus::log::{inspect_bus, FsStorage};
use shardbus::{Bus, Persistence};

fn inspect(dir: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shardbus"))
        .arg("inspect")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn inspect_reports_and_verifies() {
    let dir = std::env::temp_dir().join(format!("shardbus-cli-inspect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bus = Bus::<String>::builder()
        .shards(2)
        .pin_threads(false)
        .persist(Persistence::new(&dir))
        .build()
        .unwrap();
    for i in 0..50 {
        bus.publish_durable(format!("t{i}"), format!("message {i}"))
            .unwrap();
    }
    bus.shutdown();

    let (code, text) = inspect(&dir, &["--verify"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("2 shards, generation 0") && text.ends_with("clean\n"),
        "{text}"
    );

    let (code, json) = inspect(&dir, &["--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let logs = v["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 2);
    let records: u64 = logs.iter().map(|l| l["records"].as_u64().unwrap()).sum();
    assert_eq!(records, 50);
    assert_eq!(v["clean"], true);

    // Flip a byte inside the first record of shard 0: a CRC failure, not a torn tail
    // (more records follow).
    let bus = inspect_bus(&FsStorage, &dir)
        .unwrap()
        .expect("a bus directory");
    let seg = bus.logs[0].dir.join("00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[30] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let (code, text) = inspect(&dir, &["--verify"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("CRC failures") && text.contains("CORRUPT"),
        "{text}"
    );
    let (code, _) = inspect(&dir.join("nope"), &["--verify"]);
    assert_eq!(code, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
