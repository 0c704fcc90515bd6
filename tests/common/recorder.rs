//! `Log<T>`: what handlers saw, recorded so that the test thread can wait for it.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::PATIENCE;

/// A log other threads can wait on.
pub struct Log<T> {
    items: Mutex<Vec<T>>,
    grew: Condvar,
}

impl<T: Clone> Log<T> {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            items: Mutex::new(Vec::new()),
            grew: Condvar::new(),
        })
    }

    pub fn push(&self, item: T) {
        self.items.lock().unwrap().push(item);
        self.grew.notify_all();
    }

    pub fn snapshot(&self) -> Vec<T> {
        self.items.lock().unwrap().clone()
    }

    /// Waits until the log holds at least `n` items.
    pub fn wait_len(&self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        let mut items = self.items.lock().unwrap();
        while items.len() < n {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("waited for {n} items, have {}", items.len()));
            items = self.grew.wait_timeout(items, left).unwrap().0;
        }
    }
}

/// A dead letter's reason as the panic tests record it: "no subscriber", "panicked: TEXT",
/// or its `Debug` form.
pub fn reason_text(reason: shardbus::DeadLetterReason<'_>) -> String {
    match reason {
        shardbus::DeadLetterReason::NoSubscriber => "no subscriber".to_owned(),
        shardbus::DeadLetterReason::Panicked { panic, .. } => format!("panicked: {panic}"),
        other => format!("{other:?}"),
    }
}
