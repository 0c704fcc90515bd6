//! The bus as a guest of its process: which cores its shard threads are pinned to, as the
//! kernel reports each thread's affinity (`Cpus_allowed_list` in
//! `/proc/self/task/*/status`), for two buses in one process and for a user's core set;
//! and the `SHARDBUS_NO_MEMBARRIER` override.
//!
//! A binary of its own: the cores a bus takes depend on the other buses alive in the
//! process, and the override is an environment variable, so no other test may build a
//! bus meanwhile. The tests here take [`ONE_AT_A_TIME`].
#![cfg(target_os = "linux")]

use std::sync::Mutex;

use shardbus::{Bus, Context, Error, FenceMode, Fences};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Parses `"0-3,6"`.
fn cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',') {
        match part.split_once('-') {
            Some((lo, hi)) => cpus.extend(lo.parse::<usize>().unwrap()..=hi.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// The `Cpus_allowed_list` of `status`.
fn allowed_in(status: &str) -> Vec<usize> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in status");
    cpu_list(line)
}

/// The process's affinity mask (its main thread's).
fn process_mask() -> Vec<usize> {
    allowed_in(&std::fs::read_to_string("/proc/self/status").unwrap())
}

/// The affinity of the one thread of this process named `name`.
fn thread_affinity(name: &str) -> Vec<usize> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path().join("status");
        let Ok(status) = std::fs::read_to_string(path) else {
            continue; // a thread that ended meanwhile
        };
        if status
            .lines()
            .any(|l| l.strip_prefix("Name:").map(str::trim) == Some(name))
        {
            found.push(allowed_in(&status));
        }
    }
    assert_eq!(found.len(), 1, "threads named {name}: {found:?}");
    found.pop().unwrap()
}

/// Subscribes to a topic on every shard: `subscribe` returns once the shard has served
/// it, so each shard thread has started and pinned itself.
fn touch_every_shard(bus: &Bus<u32>) {
    for shard in 0..bus.shards() {
        let topic = (0..)
            .map(|i| format!("t{i}"))
            .find(|t| bus.shard_of(t).unwrap().index() == shard)
            .unwrap();
        bus.subscribe(topic.as_str(), |_: &mut Context<'_, u32>, _: &u32| {})
            .unwrap();
    }
}

/// Each shard thread of `bus` (named `prefix-i`) has the affinity `plan` says: its one
/// core, or the whole process mask when unpinned; and `Stats` agrees.
fn assert_placed(bus: &Bus<u32>, prefix: &str, plan: &[Option<usize>]) {
    touch_every_shard(bus);
    let stats = bus.stats();
    assert_eq!(stats.shards.len(), plan.len());
    for (i, want) in plan.iter().enumerate() {
        let got = thread_affinity(&format!("{prefix}-{i}"));
        match want {
            Some(core) => assert_eq!(got, [*core], "{prefix}-{i}"),
            None => assert_eq!(got, process_mask(), "{prefix}-{i} unpinned"),
        }
        assert_eq!(stats.shards[i].core, *want, "{prefix}-{i} in Stats");
    }
}

/// Two buses with the default placement: the second takes the cores the first left
/// (exactly what the placement function says for this machine's mask and siblings), its
/// shards beyond them unpinned; both release their cores when they end.
#[test]
fn two_buses_do_not_share_cores() {
    let _one = one_at_a_time();
    assert_eq!(shardbus::__cores_in_use(), []);
    let plan_a = shardbus::__plan_cores(&[], 1);
    let a = Bus::<u32>::builder()
        .shards(1)
        .thread_name("hostA")
        .build()
        .unwrap();
    let held_a: Vec<usize> = plan_a.iter().flatten().copied().collect();
    let shards_b = process_mask().len() + 1; // more than the cores left
    let plan_b = shardbus::__plan_cores(&held_a, shards_b);
    let b = Bus::<u32>::builder()
        .shards(shards_b)
        .thread_name("hostB")
        .build()
        .unwrap();

    // The plan itself: one core each, none shared, the surplus unpinned.
    let mut all: Vec<usize> = plan_a.iter().chain(&plan_b).flatten().copied().collect();
    assert_eq!(
        all.len(),
        process_mask().len(),
        "every allowed core used once"
    );
    all.sort_unstable();
    assert_eq!(all, process_mask());
    assert_eq!(plan_b.last(), Some(&None));

    assert_placed(&a, "hostA", &plan_a);
    assert_placed(&b, "hostB", &plan_b);
    assert_eq!(shardbus::__cores_in_use(), all);

    drop(a.shutdown());
    let mut held_b: Vec<usize> = plan_b.iter().flatten().copied().collect();
    held_b.sort_unstable();
    assert_eq!(shardbus::__cores_in_use(), held_b);
    drop(b.shutdown());
    assert_eq!(shardbus::__cores_in_use(), []);
}

/// `Builder::cores`: shard `i` on the `i`-th core given, the rest unpinned; a core
/// outside the mask or listed twice is a typed error, and a refused build holds nothing.
#[test]
fn user_cores_are_used_and_validated() {
    let _one = one_at_a_time();
    let mask = process_mask();
    let last = *mask.last().unwrap();
    let bus = Bus::<u32>::builder()
        .shards(2)
        .cores([last])
        .thread_name("hostU")
        .build()
        .unwrap();
    assert_placed(&bus, "hostU", &[Some(last), None]);
    assert_eq!(shardbus::__cores_in_use(), [last]);
    drop(bus.shutdown());

    let outside = last + 1;
    match Bus::<u32>::builder().shards(1).cores([outside]).build() {
        Err(Error::CoreNotAllowed { core, allowed }) => {
            assert_eq!(core, outside);
            assert_eq!(allowed, mask);
        }
        other => panic!("expected CoreNotAllowed, got {other:?}"),
    }
    match Bus::<u32>::builder().shards(2).cores([last, last]).build() {
        Err(Error::DuplicateCore { core }) => assert_eq!(core, last),
        other => panic!("expected DuplicateCore, got {other:?}"),
    }
    // `pin_threads(false)` pins nothing and does not look at the set.
    let bus = Bus::<u32>::builder()
        .shards(1)
        .cores([outside])
        .pin_threads(false)
        .thread_name("hostN")
        .build()
        .unwrap();
    assert_placed(&bus, "hostN", &[None]);
    drop(bus.shutdown());
    assert_eq!(shardbus::__cores_in_use(), []);
}

/// `SHARDBUS_NO_MEMBARRIER`, set when a bus is built, gives it SeqCst fences whatever
/// it asked for (and `Fences::Membarrier` builds); unset, the option rules again.
#[test]
fn env_override_forces_seqcst_fences() {
    let _one = one_at_a_time();
    let build = |fences| {
        Bus::<u32>::builder()
            .shards(1)
            .pin_threads(false)
            .fences(fences)
            .build()
    };
    let before = build(Fences::Auto).unwrap();
    std::env::set_var("SHARDBUS_NO_MEMBARRIER", "1");
    let forced = [Fences::Auto, Fences::Membarrier, Fences::SeqCst].map(|f| build(f).unwrap());
    std::env::remove_var("SHARDBUS_NO_MEMBARRIER");
    let after = build(Fences::Auto).unwrap();
    for bus in &forced {
        assert_eq!(bus.fence_mode(), FenceMode::SeqCst);
    }
    // Each bus keeps the mode it was built with.
    assert_eq!(after.fence_mode(), before.fence_mode());
    for bus in forced.into_iter().chain([before, after]) {
        let topic = "x";
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let s = seen.clone();
        bus.subscribe(topic, move |_: &mut Context<'_, u32>, _: &u32| {
            s.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
        for i in 0..100 {
            bus.publisher().publish(topic, i).unwrap();
        }
        assert_eq!(bus.shutdown().handled(), 100);
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 100);
    }
}
