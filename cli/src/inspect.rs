//! `shardbus inspect DIR [--verify] [--json]`: what a persistent bus directory holds,
//! shard by shard, without changing anything.
//!
//! `DIR` is a bus directory (with a `meta` file: every shard of its current generation
//! is shown) or a single shard log directory. Per shard: its segments with record counts,
//! first and last sequence numbers, the checkpoint, torn tails, CRC failures and every
//! other problem with its file and byte offset. `--verify` exits with status 1 on any
//! corruption (a torn tail, which recovery cuts, does not count); 2 means the directory
//! could not be read at all.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use shardbus::log::{inspect, inspect_bus, FsStorage, LogError, ShardReport};

/// Arguments of `shardbus inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// A bus directory (holding `meta`) or one shard's log directory.
    dir: PathBuf,
    /// Exit non-zero if any shard has corruption.
    #[arg(long)]
    verify: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct BusJson {
    dir: String,
    shards: Option<u32>,
    generation: Option<u64>,
    clean: bool,
    logs: Vec<ShardJson>,
}

#[derive(Serialize)]
struct ShardJson {
    dir: String,
    checkpoint: Option<u64>,
    records: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    torn_tail_bytes: u64,
    crc_failures: u64,
    corrupt: bool,
    segments: Vec<SegmentJson>,
    problems: Vec<String>,
}

#[derive(Serialize)]
struct SegmentJson {
    path: String,
    first_seq: u64,
    last_seq: Option<u64>,
    records: u64,
    bytes: u64,
    torn_tail_bytes: u64,
    crc_failures: u64,
    problems: Vec<String>,
}

/// Whether a report shows corruption (anything recovery would not simply cut).
fn corrupt(r: &ShardReport) -> bool {
    !r.problems.is_empty() || r.segments.iter().any(|s| !s.problems.is_empty())
}

fn shard_json(r: &ShardReport) -> ShardJson {
    ShardJson {
        dir: r.dir.display().to_string(),
        checkpoint: r.checkpoint.map(|s| s.get()),
        records: r.segments.iter().map(|s| s.records).sum(),
        first_seq: r
            .segments
            .iter()
            .find(|s| s.records > 0)
            .map(|s| s.first_seq.get()),
        last_seq: r
            .segments
            .iter()
            .rev()
            .find_map(|s| s.last_seq.map(|q| q.get())),
        torn_tail_bytes: r.segments.iter().map(|s| s.torn_tail_bytes).sum(),
        crc_failures: r.segments.iter().map(|s| s.crc_failures).sum(),
        corrupt: corrupt(r),
        segments: r
            .segments
            .iter()
            .map(|s| SegmentJson {
                path: s.path.display().to_string(),
                first_seq: s.first_seq.get(),
                last_seq: s.last_seq.map(|q| q.get()),
                records: s.records,
                bytes: s.bytes,
                torn_tail_bytes: s.torn_tail_bytes,
                crc_failures: s.crc_failures,
                problems: s.problems.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        problems: r.problems.iter().map(ToString::to_string).collect(),
    }
}

fn collect(dir: &Path) -> Result<BusJson, LogError> {
    let (layout, reports) = match inspect_bus(&FsStorage, dir)? {
        Some(bus) => (Some((bus.shards, bus.generation)), bus.logs),
        None => (None, vec![inspect(&FsStorage, dir)?]),
    };
    let logs: Vec<ShardJson> = reports.iter().map(shard_json).collect();
    Ok(BusJson {
        dir: dir.display().to_string(),
        shards: layout.map(|(shards, _)| shards),
        generation: layout.map(|(_, generation)| generation),
        clean: logs.iter().all(|l| !l.corrupt),
        logs,
    })
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn print_text(bus: &BusJson) {
    match (bus.shards, bus.generation) {
        (Some(s), Some(g)) => println!("{}: {s} shards, generation {g}", bus.dir),
        _ => println!("{}: one shard log", bus.dir),
    }
    for (i, l) in bus.logs.iter().enumerate() {
        println!(
            "shard {i} ({}): {} records, seq {}..={}, checkpoint {}, torn tail {} B, \
             {} CRC failures{}",
            l.dir,
            l.records,
            opt(l.first_seq),
            opt(l.last_seq),
            opt(l.checkpoint),
            l.torn_tail_bytes,
            l.crc_failures,
            if l.corrupt { ", CORRUPT" } else { "" }
        );
        for s in &l.segments {
            println!(
                "  {}: {} records, seq {}..={}, {} B{}{}",
                s.path,
                s.records,
                s.first_seq,
                opt(s.last_seq),
                s.bytes,
                if s.torn_tail_bytes > 0 {
                    format!(", torn tail {} B", s.torn_tail_bytes)
                } else {
                    String::new()
                },
                if s.crc_failures > 0 {
                    format!(", {} CRC failures", s.crc_failures)
                } else {
                    String::new()
                }
            );
            for p in &s.problems {
                println!("    problem: {p}");
            }
        }
        for p in &l.problems {
            println!("  problem: {p}");
        }
    }
    println!("{}", if bus.clean { "clean" } else { "CORRUPT" });
}

pub fn run(args: Args) -> ExitCode {
    let bus = match collect(&args.dir) {
        Ok(bus) => bus,
        Err(e) => {
            eprintln!("shardbus inspect: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&bus) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("shardbus inspect: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print_text(&bus);
    }
    if args.verify && !bus.clean {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
