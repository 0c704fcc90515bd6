//! The read-only view of a bus directory: `log::inspect_bus` reports the layout and every
//! shard log of the current generation, and reads what a `Reader` reads.

use std::path::Path;
use std::sync::Arc;

use crate::common::persist::{builder, persistence, publish, seen, DIR};
use shardbus::log::{inspect_bus, LogError, Reader, Seq, SimStorage, Storage, META_FILE};

#[test]
fn inspect_bus_reports_every_shard_log_of_the_current_generation() {
    let sim = SimStorage::new();
    let dir = Path::new(DIR);
    // No bus built there yet: no `meta`, no report.
    sim.create_dir_all(dir).unwrap();
    assert!(inspect_bus(&sim, dir).unwrap().is_none());

    let bus = builder(3, persistence(&sim), &seen()).build().unwrap();
    publish(&bus, 0, 40);
    bus.shutdown();

    let report = inspect_bus(&sim, dir).unwrap().expect("a bus directory");
    assert_eq!((report.shards, report.logs.len()), (3, 3));
    assert!(report.is_clean(), "{report:?}");
    let records: u64 = report
        .logs
        .iter()
        .flat_map(|l| &l.segments)
        .map(|s| s.records)
        .sum();
    assert_eq!(records, 40);
    for (i, log) in report.logs.iter().enumerate() {
        let gen = format!("gen-{}", report.generation);
        assert!(log
            .dir
            .ends_with(Path::new(&gen).join(format!("shard-{i:03}"))));
        // A `Reader` on the reported directory reads the same number of records.
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let read = Reader::open(storage, &log.dir, Seq(0)).unwrap().count() as u64;
        assert_eq!(read, log.segments.iter().map(|s| s.records).sum::<u64>());
    }

    // A damaged `meta` file is an error, never "no bus".
    let path = dir.join(META_FILE);
    let mut f = sim.create(&path).unwrap();
    f.append(b"not a meta file").unwrap();
    drop(f);
    assert!(matches!(
        inspect_bus(&sim, dir),
        Err(LogError::BadMagic { .. }
            | LogError::Corrupt { .. }
            | LogError::TruncatedHeader { .. })
    ));
}
