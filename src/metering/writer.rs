//! The usage pipeline: a bounded queue in front of one batch writer.
//!
//! The request path calls `UsageSink::record`, which never waits: the record goes into the
//! queue, or, when the queue is full, straight to the spool file. The writer takes whatever
//! is queued (up to a batch), writes it in one transaction, and on a database error appends
//! the batch to the spool file, which it replays once the database answers again. A record
//! is lost only if the spool file itself cannot be written, and that is counted.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Metrics, UsageRecord};
use crate::store::Db;

#[derive(Clone)]
pub struct UsageSink {
    tx: mpsc::Sender<UsageRecord>,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
}

pub struct UsageWriter {
    rx: mpsc::Receiver<UsageRecord>,
    db: Db,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    batch_size: usize,
}

struct Spool {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Spool {
    /// Appends records; `durable` waits for the disk (a whole batch the database refused),
    /// otherwise the page cache is trusted (one record at a time from a full queue, where an
    /// fsync per request would stall the request path).
    fn append(&self, records: &[UsageRecord], durable: bool) -> std::io::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        f.write_all(&buf)?;
        if durable {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Takes the spooled records out of the file (the caller puts them back on failure).
    fn take(&self) -> std::io::Result<Vec<UsageRecord>> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for line in std::io::BufReader::new(f).lines() {
            let line = line?;
            match serde_json::from_str(&line) {
                Ok(r) => out.push(r),
                Err(e) => tracing::error!(error = %e, "unreadable line in usage spool, skipped"),
            }
        }
        std::fs::remove_file(&self.path)?;
        Ok(out)
    }

    fn is_empty(&self) -> bool {
        std::fs::metadata(&self.path).map_or(true, |m| m.len() == 0)
    }
}

/// Creates the sink the request path uses and the writer task that drains it.
pub fn usage_pipeline(
    db: Db,
    metrics: Arc<Metrics>,
    capacity: usize,
    batch_size: usize,
    spool_path: PathBuf,
) -> (UsageSink, UsageWriter) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let spool = Arc::new(Spool {
        path: spool_path,
        lock: Mutex::new(()),
    });
    (
        UsageSink {
            tx,
            spool: spool.clone(),
            metrics: metrics.clone(),
        },
        UsageWriter {
            rx,
            db,
            spool,
            metrics,
            batch_size: batch_size.max(1),
        },
    )
}

impl UsageSink {
    pub fn record(&self, rec: UsageRecord) {
        self.metrics.observe(&rec);
        match self.tx.try_send(rec) {
            Ok(()) => self.metrics.usage_log_queue_depth.inc(),
            Err(mpsc::error::TrySendError::Full(rec) | mpsc::error::TrySendError::Closed(rec)) => {
                match self.spool.append(std::slice::from_ref(&rec), false) {
                    Ok(()) => self.metrics.usage_log_spooled_total.inc(),
                    Err(e) => {
                        self.metrics.usage_log_dropped_total.inc();
                        tracing::error!(error = %e, request_id = %rec.request_id, "usage record lost: queue full and spool not writable");
                    }
                }
            }
        }
    }
}

impl UsageWriter {
    /// Runs until `stop` fires (or every sink is gone), then writes what is still queued.
    pub async fn run(mut self, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut replay = tokio::time::interval(Duration::from_secs(5));
        replay.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut batch, self.batch_size) => {
                    if n == 0 {
                        break;
                    }
                    self.write_batch(&mut batch).await;
                }
                _ = replay.tick() => self.replay_spool().await,
                _ = &mut stop => {
                    // Late records go to the spool from now on; take what is queued.
                    self.rx.close();
                    while self.rx.recv_many(&mut batch, self.batch_size).await > 0 {
                        self.write_batch(&mut batch).await;
                    }
                    break;
                }
            }
        }
        self.replay_spool().await;
    }

    async fn write_batch(&self, batch: &mut Vec<UsageRecord>) {
        self.metrics.usage_log_queue_depth.sub(batch.len() as i64);
        self.write_or_spool(batch).await;
        batch.clear();
    }

    async fn write_or_spool(&self, batch: &[UsageRecord]) {
        match self.db.insert_usage(batch).await {
            Ok(()) => self
                .metrics
                .usage_log_written_total
                .inc_by(batch.len() as u64),
            Err(e) => {
                tracing::warn!(error = %e, records = batch.len(), "usage write failed, spooling to disk");
                match self.spool.append(batch, true) {
                    Ok(()) => self
                        .metrics
                        .usage_log_spooled_total
                        .inc_by(batch.len() as u64),
                    Err(e) => {
                        self.metrics
                            .usage_log_dropped_total
                            .inc_by(batch.len() as u64);
                        tracing::error!(error = %e, records = batch.len(), "usage records lost: spool not writable");
                    }
                }
            }
        }
    }

    async fn replay_spool(&self) {
        if self.spool.is_empty() {
            return;
        }
        let records = match self.spool.take() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read usage spool");
                return;
            }
        };
        tracing::info!(records = records.len(), "replaying spooled usage records");
        for chunk in records.chunks(self.batch_size) {
            self.write_or_spool(chunk).await;
        }
    }
}
