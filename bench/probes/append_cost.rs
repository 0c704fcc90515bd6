//! What it costs to get log records into the page cache of a fresh file, without shardbus:
//! the floor under the `fsync never` row of `shardbus bench --persist` (docs/benchmarks.md,
//! "Persistence").
//!
//! One thread appends `--records` records of 312 bytes (a 256 B payload's record) in writes of
//! `--batch` records into 64 MiB segment files in a fresh directory under DIR, the way a
//! persistent shard does, and prints nanoseconds per record. Modes:
//!
//! - `write`: `write(2)` on an `O_APPEND` file, as the log did before preallocation;
//! - `falloc`: the same after `fallocate(FALLOC_FL_KEEP_SIZE)` of the whole segment, as the
//!   log does now;
//! - `mmap`: the segment extended to 64 MiB, mapped, prefaulted writable with
//!   `madvise(MADV_POPULATE_WRITE)`, then the records copied in; the populate and the copy are
//!   timed apart (the design where another thread prefaults ahead of the writer).
//!
//! `--sync-every-ms N` adds a thread that `fdatasync`s the current segment every N ms, as the
//! log's checkpoints do under `fsync never` (one per 10,000 records, about every 2 ms here).
//!
//! ```text
//! cargo run --release -p shardbus-bench --example append_cost -- MODE [DIR] [--records N]
//!     [--batch N] [--sync-every-ms N]
//! cargo run --release -p shardbus-bench --example append_cost -- falloc target/bench-data
//! ```
//!
//! `DIR` defaults to `target/bench-data` (relative to the working directory); put it on the
//! disk you mean to measure, never on a tmpfs.

use std::fs::{self, File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use shardbus::log::{FsStorage, Storage, StorageFile};

const SEGMENT: usize = 64 << 20;
const RECORD: usize = 312;
const USAGE: &str = "usage: append_cost write|falloc|mmap [DIR] [--records N] [--batch N] \
                     [--sync-every-ms N]";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Write,
    Falloc,
    Mmap,
}

#[derive(Debug)]
struct Args {
    mode: Mode,
    /// A directory on the disk to measure; a fresh subdirectory is made and removed.
    dir: PathBuf,
    records: usize,
    /// Records per write (the shard's drained batch: 1,024 since `LOG_BATCH`).
    batch: usize,
    /// `fdatasync` the current segment from another thread this often; 0 = never.
    sync_every_ms: u64,
}

impl Args {
    /// `MODE [DIR] [--records N] [--batch N] [--sync-every-ms N]`; `DIR` defaults to
    /// `target/bench-data`.
    fn parse() -> Result<Self, String> {
        let mut args = std::env::args().skip(1);
        let mode = match args.next().as_deref() {
            Some("write") => Mode::Write,
            Some("falloc") => Mode::Falloc,
            Some("mmap") => Mode::Mmap,
            other => return Err(format!("unknown mode {:?}", other.unwrap_or(""))),
        };
        let mut parsed = Self {
            mode,
            dir: PathBuf::from("target/bench-data"),
            records: 2_000_000,
            batch: 1024,
            sync_every_ms: 0,
        };
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(format!("{name} needs a number"))
            };
            match arg.as_str() {
                "--records" => parsed.records = value("--records")? as usize,
                "--batch" => parsed.batch = value("--batch")? as usize,
                "--sync-every-ms" => parsed.sync_every_ms = value("--sync-every-ms")?,
                flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}")),
                dir => parsed.dir = PathBuf::from(dir),
            }
        }
        Ok(parsed)
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse().unwrap_or_else(|e| {
        eprintln!("append_cost: {e}\n{USAGE}");
        std::process::exit(2)
    });
    let dir = args.dir.join(format!("append-cost-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let batch = vec![0xA5u8; RECORD * args.batch.max(1)];
    // A second handle of each new segment, for the sync thread (as the log gives its I/O
    // thread one).
    let current: Arc<Mutex<Option<Box<dyn StorageFile>>>> = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let syncer = (args.sync_every_ms > 0).then(|| {
        let (current, stop) = (Arc::clone(&current), Arc::clone(&stop));
        let period = Duration::from_millis(args.sync_every_ms);
        thread::spawn(move || -> std::io::Result<u64> {
            let mut syncs = 0;
            let mut mine: Option<Box<dyn StorageFile>> = None;
            // Relaxed: a stop request only; nothing is read on its strength (the count comes
            // back through `join`, which orders it).
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(period);
                // The writer posts each new segment's handle; the lock is never held across a
                // sync, so the writer never waits for one.
                if let Some(file) = current
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                {
                    mine = Some(file);
                }
                if let Some(file) = mine.as_mut() {
                    file.sync_data()?;
                    syncs += 1;
                }
            }
            Ok(syncs)
        })
    });
    let post = |file: Box<dyn StorageFile>| {
        *current.lock().unwrap_or_else(PoisonError::into_inner) = Some(file);
    };
    let mut written = 0;
    let mut segment = 0;
    let (mut fill, mut copy) = (Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    while written < args.records {
        let path = dir.join(format!("{segment:020}.log"));
        segment += 1;
        let per_segment = (SEGMENT / batch.len()).max(1);
        let n = per_segment.min((args.records - written).div_ceil(args.batch.max(1)));
        match args.mode {
            Mode::Write | Mode::Falloc => {
                // The log's own file code: `FsStorage` opens with O_APPEND, and
                // `preallocate` is the `fallocate(FALLOC_FL_KEEP_SIZE)` the log makes.
                let mut file = FsStorage.create(&path)?;
                if args.mode == Mode::Falloc {
                    file.preallocate(SEGMENT as u64)?;
                }
                post(file.try_clone()?);
                for _ in 0..n {
                    file.append(&batch)?;
                }
            }
            Mode::Mmap => {
                let t = Instant::now();
                let (_file, map) = mapped(&path)?;
                fill += t.elapsed();
                // Any descriptor of the file syncs what the mapping dirtied.
                post(FsStorage.open_append(&path)?);
                let t = Instant::now();
                for i in 0..n {
                    let at = i * batch.len();
                    // this thread owns the mapping `map` (made by `mapped`, unmapped
                    // below, never shared), writable for SEGMENT bytes, and
                    // `at + batch.len() <= n * batch.len() <= SEGMENT`.
                    // SAFETY: by the ownership stated in the lines just above.
                    unsafe {
                        std::ptr::copy_nonoverlapping(batch.as_ptr(), map.add(at), batch.len())
                    };
                }
                copy += t.elapsed();
                // this thread owns the mapping `mapped` made and unmaps exactly it;
                // `map` is not used after.
                // SAFETY: by the ownership stated in the lines just above.
                unsafe { libc::munmap(map.cast(), SEGMENT) };
            }
        }
        written += n * args.batch.max(1);
    }
    let elapsed = start.elapsed();
    // Relaxed: see the sync thread's load.
    stop.store(true, Ordering::Relaxed);
    let syncs = syncer.map(|t| t.join().expect("sync thread")).transpose()?;
    let per = |d: Duration| d.as_nanos() as f64 / written as f64;
    print!(
        "{:?}: {written} records of {RECORD} B, {} per write: {:.1} ns/record, {:.3} M records/s",
        args.mode,
        args.batch,
        per(elapsed),
        written as f64 / elapsed.as_secs_f64() / 1e6
    );
    if args.mode == Mode::Mmap {
        print!(
            " (populate {:.1} ns/record, copy {:.1})",
            per(fill),
            per(copy)
        );
    }
    if let Some(syncs) = syncs {
        print!(", {syncs} fdatasync from the other thread");
    }
    println!();
    fs::remove_dir_all(&dir)
}

/// Creates `path` at SEGMENT bytes, maps it shared and writable, and prefaults every page
/// writable (`MADV_POPULATE_WRITE`, Linux 5.14).
fn mapped(path: &Path) -> std::io::Result<(File, *mut u8)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.set_len(SEGMENT as u64)?;
    // this function owns the new mapping (then its caller does): a fresh shared mapping
    // of a file it opened, at an address the kernel picks; no Rust reference aliases it, and it
    // is only written through raw pointers.
    // SAFETY: by the ownership stated in the lines just above.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SEGMENT,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: this function owns the mapping just made, and the range is exactly that mapping.
    if unsafe { libc::madvise(map, SEGMENT, libc::MADV_POPULATE_WRITE) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((file, map.cast()))
}
