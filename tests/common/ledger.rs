//! `Tracked`: a message that accounts for its own destruction, for the destructor
//! accounting of the shutdown tests (every message created is dropped exactly once).

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use shardbus::{Builder, Bus, Context};

use super::PATIENCE;

/// Every `Tracked` message made, handled and dropped, by id.
pub struct Ledger {
    created: AtomicU32,
    handled: Vec<AtomicU32>,
    drops: Vec<AtomicU32>,
    dropped_total: Mutex<u64>,
    dropped_more: Condvar,
}

/// A message that records its drop, by id, in its `Ledger`.
pub struct Tracked {
    pub id: u32,
    ledger: Arc<Ledger>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.ledger.drops[self.id as usize].fetch_add(1, Relaxed);
        *self.ledger.dropped_total.lock().unwrap() += 1;
        self.ledger.dropped_more.notify_all();
    }
}

impl Ledger {
    pub fn new(capacity: u32) -> Arc<Self> {
        Arc::new(Self {
            created: AtomicU32::new(0),
            handled: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            drops: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            dropped_total: Mutex::new(0),
            dropped_more: Condvar::new(),
        })
    }

    pub fn make(self: &Arc<Self>) -> Tracked {
        let id = self.created.fetch_add(1, Relaxed);
        assert!((id as usize) < self.drops.len(), "ledger too small");
        Tracked {
            id,
            ledger: self.clone(),
        }
    }

    /// Called by handlers.
    pub fn handle(&self, m: &Tracked) {
        self.handled[m.id as usize].fetch_add(1, Relaxed);
    }

    pub fn created(&self) -> u32 {
        self.created.load(Relaxed)
    }

    pub fn handled(&self, id: u32) -> u32 {
        self.handled[id as usize].load(Relaxed)
    }

    pub fn handled_total(&self) -> u64 {
        self.handled
            .iter()
            .map(|h| u64::from(h.load(Relaxed)))
            .sum()
    }

    /// Every message created was dropped exactly once (and nothing else was).
    pub fn assert_dropped_once(&self) {
        let created = self.created() as usize;
        let bad: Vec<(usize, u32)> = self
            .drops
            .iter()
            .map(|d| d.load(Relaxed))
            .enumerate()
            .filter(|&(id, n)| n != u32::from(id < created))
            .take(10)
            .collect();
        assert!(
            bad.is_empty(),
            "{created} created; ids dropped other than once (id, drops): {bad:?}"
        );
    }

    /// Waits until every message created has been dropped (by a detached shard).
    pub fn wait_all_dropped(&self) {
        let deadline = Instant::now() + PATIENCE;
        let mut total = self.dropped_total.lock().unwrap();
        while *total < u64::from(self.created()) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("{} of {} dropped", *total, self.created()));
            total = self.dropped_more.wait_timeout(total, left).unwrap().0;
        }
    }
}

/// A builder of unpinned shards whose `drop_timeout` is `PATIENCE`.
pub fn tracked_bus(shards: usize) -> Builder<Tracked> {
    Bus::<Tracked>::builder()
        .shards(shards)
        .pin_threads(false)
        .drop_timeout(PATIENCE)
}

/// Subscribes a handler to `topic` that counts each message in `ledger`.
pub fn subscribe_counting(bus: &Bus<Tracked>, topic: &str, ledger: &Arc<Ledger>) {
    let ledger = ledger.clone();
    bus.subscribe(topic, move |_: &mut Context<'_, Tracked>, m: &Tracked| {
        ledger.handle(m);
    })
    .unwrap();
}
