//! The tasks this instance runs, each with a signal that stops it: a cancel or delete that
//! reaches this instance stops its task at once instead of at the next lease renewal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

#[derive(Default, Clone)]
pub struct Cancels {
    running: Arc<Mutex<HashMap<String, watch::Sender<bool>>>>,
}

/// A running task's entry: its signal, removed from the table when dropped.
pub struct Entry {
    cancels: Cancels,
    id: String,
    pub signal: watch::Receiver<bool>,
}

impl Cancels {
    /// Registers a task this instance starts running.
    pub fn enter(&self, id: &str) -> Entry {
        let (tx, rx) = watch::channel(false);
        self.lock().insert(id.to_owned(), tx);
        Entry {
            cancels: self.clone(),
            id: id.to_owned(),
            signal: rx,
        }
    }

    /// Stops the task if it runs here.
    pub fn cancel(&self, id: &str) {
        if let Some(tx) = self.lock().get(id) {
            let _ = tx.send(true);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<bool>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.cancels.lock().remove(&self.id);
    }
}
