//! Unit tests of `SimStorage`.

use super::*;
use crate::log::storage::names;

#[test]
fn sim_keeps_only_synced_bytes_and_names() {
    let sim = SimStorage::new();
    let dir = Path::new("/d");
    sim.create_dir_all(dir).unwrap();
    let a = dir.join("a");
    let mut f = sim.create(&a).unwrap();
    f.append(b"hello").unwrap();
    f.sync_data().unwrap();
    f.append(b" world").unwrap();
    assert_eq!(sim.unsynced_len(&a), Some(6));
    // The name was never synced: a crash loses the whole file.
    sim.crash(Some(100));
    assert!(sim.list_dir(dir).unwrap().is_empty());

    let mut f = sim.create(&a).unwrap();
    f.append(b"hello").unwrap();
    f.sync_data().unwrap();
    sim.sync_dir(dir).unwrap();
    f.append(b" world").unwrap();
    sim.crash(Some(3));
    assert_eq!(sim.read(&a).unwrap(), b"hello wo");
    sim.crash(None);
    assert_eq!(sim.read(&a).unwrap(), b"hello wo");
    // Old handles are dead after a crash.
    assert!(f.append(b"x").is_err());
}

#[test]
fn sim_unsynced_truncate_and_rename_are_undone() {
    let sim = SimStorage::new();
    let dir = Path::new("/d");
    sim.create_dir_all(dir).unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    let mut f = sim.create(&a).unwrap();
    f.append(b"0123456789").unwrap();
    f.sync_data().unwrap();
    sim.sync_dir(dir).unwrap();
    f.truncate(4).unwrap();
    sim.rename(&a, &b).unwrap();
    assert_eq!(names(&sim, dir), ["b"]);
    sim.crash(None);
    assert_eq!(names(&sim, dir), ["a"]);
    assert_eq!(sim.read(&a).unwrap(), b"0123456789");

    let mut f = sim.open_append(&a).unwrap();
    f.truncate(4).unwrap();
    f.sync_data().unwrap();
    f.append(b"xy").unwrap();
    sim.crash(Some(1));
    assert_eq!(sim.read(&a).unwrap(), b"0123x");
}

#[test]
fn sim_faults_fire_once() {
    let sim = SimStorage::new();
    let dir = Path::new("/d");
    sim.create_dir_all(dir).unwrap();
    let a = dir.join("a");
    let mut f = sim.create(&a).unwrap();
    sim.fail_next_append(io::Error::from_raw_os_error(28), 2);
    assert_eq!(f.append(b"abcd").unwrap_err().raw_os_error(), Some(28));
    assert_eq!(sim.contents(&a).unwrap(), b"ab");
    sim.fail_next_sync(io::Error::from_raw_os_error(5));
    assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(5));
    assert_eq!(sim.unsynced_len(&a), Some(2));
    f.sync_data().unwrap();
    assert_eq!(sim.unsynced_len(&a), Some(0));
}

#[test]
fn sim_rejects_files_as_directories() {
    let sim = SimStorage::new();
    sim.create_dir_all(Path::new("/d")).unwrap();
    sim.create(Path::new("/d/file")).unwrap();
    assert!(sim.create_dir_all(Path::new("/d/file/sub")).is_err());
    assert!(sim.list_dir(Path::new("/d/file")).is_err());
    assert_eq!(
        sim.list_dir(Path::new("/nope")).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert!(sim.create(Path::new("/nope/x")).is_err());
}

#[test]
fn sim_directory_locks_exclude_until_dropped_or_crashed() {
    let sim = SimStorage::new();
    let (a, b) = (Path::new("/a"), Path::new("/b"));
    assert_eq!(sim.lock_dir(a).unwrap_err().kind(), io::ErrorKind::NotFound);
    sim.create_dir_all(a).unwrap();
    sim.create_dir_all(b).unwrap();
    let held = sim.lock_dir(a).unwrap();
    assert!(held.is_locked());
    // Through a clone too: they share the state, as two buses on one disk do.
    let other = sim.clone();
    assert_eq!(
        other.lock_dir(a).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    let held_b = other.lock_dir(b).unwrap(); // another directory is free
    drop(held);
    let again = other.lock_dir(a).unwrap();
    // A crash releases every lock; the holders from before it release nothing later.
    sim.crash(None);
    let after = sim.lock_dir(a).unwrap();
    drop(again);
    drop(held_b);
    assert_eq!(
        sim.lock_dir(a).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    drop(after);
    drop(sim.lock_dir(a).unwrap());
    drop(sim.lock_dir(b).unwrap());
}
