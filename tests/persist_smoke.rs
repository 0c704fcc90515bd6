use std::sync::{Arc, Mutex};
use shardbus::log::{SimStorage, FsyncPolicy};
use shardbus::{Bus, Persistence, Context};

#[test]
fn smoke() {
    let sim = SimStorage::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mk = |seen: Arc<Mutex<Vec<(String, bool)>>>| {
        Bus::<String>::builder()
            .shards(2)
            .persist(Persistence::new("/bus").storage(Arc::new(sim.clone())).fsync(FsyncPolicy::Batch).checkpoint_every(1_000_000, std::time::Duration::from_secs(3600)))
            .subscribe("a", move |ctx: &mut Context<'_, String>, m: &String| seen.lock().unwrap().push((m.clone(), ctx.is_replay())))
            .build()
            .unwrap()
    };
    let bus = mk(seen.clone());
    for i in 0..10 { bus.publish_durable("a", format!("m{i}")).unwrap(); }
    let mut p = bus.publisher();
    for i in 10..20 { p.publish_durable("a", format!("m{i}")).unwrap(); }
    drop(p);
    // wait until handled
    while seen.lock().unwrap().len() < 20 { std::thread::sleep(std::time::Duration::from_millis(1)); }
    std::mem::forget(bus);
    sim.crash(None);
    let seen2 = Arc::new(Mutex::new(Vec::new()));
    let bus = mk(seen2.clone());
    let got = seen2.lock().unwrap().clone();
    assert_eq!(got.len(), 20, "{got:?}");
    assert!(got.iter().all(|(_, r)| *r));
    bus.shutdown();
    let seen3 = Arc::new(Mutex::new(Vec::new()));
    let bus = mk(seen3.clone());
    assert_eq!(seen3.lock().unwrap().len(), 0);
    bus.shutdown();
}
