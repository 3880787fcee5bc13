//! The usage pipeline: a bounded queue in front of one batch writer.
//!
//! The request path calls `UsageSink::record`, which never waits: the record goes into the
//! queue, or, when the queue is full, straight to the spool file. The writer gathers records
//! until it has a full batch or the oldest has waited `flush_interval`, writes them in one
//! transaction (few large transactions cost the database far less per row than many small
//! ones: each commit rewrites the table's and indexes' touched pages). When the database
//! cannot be reached it appends the batch to the spool file, which it replays once the
//! database answers again. When the database refuses rows (a value or a constraint it would
//! refuse again), the batch is written in halves down to single rows, so the rest lands and
//! only the refused rows go to the rejected file beside the spool, never replayed. A record
//! is lost only if those files cannot be written, and that is counted.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{refuses_rows, Db};
use crate::metering::{Metrics, UsageRecord};

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
    /// Rows the database refused, one JSON record a line as in the spool: after fixing the
    /// cause, an operator can append them to the spool to have them replayed.
    rejected: Spool,
    metrics: Arc<Metrics>,
    batch_size: usize,
    flush_interval: Duration,
}

/// What became of a batch.
#[derive(Default)]
struct Outcome {
    written: usize,
    /// The database could not be reached: what was not written went to the spool.
    unreachable: bool,
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

    /// Moves the spool aside for replaying, so new records start a fresh file. A file left
    /// from a replay that was cut short (a crash) is replayed first.
    fn take(&self) -> std::io::Result<Option<PathBuf>> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let replay = self.path.with_extension("replay");
        if replay.exists() {
            return Ok(Some(replay));
        }
        match std::fs::rename(&self.path, &replay) {
            Ok(()) => Ok(Some(replay)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn is_empty(&self) -> bool {
        let empty = |p: &std::path::Path| std::fs::metadata(p).map_or(true, |m| m.len() == 0);
        empty(&self.path) && empty(&self.path.with_extension("replay"))
    }
}

/// Creates the sink the request path uses and the writer task that drains it.
pub fn usage_pipeline(
    db: Db,
    metrics: Arc<Metrics>,
    capacity: usize,
    batch_size: usize,
    flush_interval: Duration,
    spool_path: PathBuf,
) -> (UsageSink, UsageWriter) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let rejected = Spool {
        path: spool_path.with_extension("rejected.jsonl"),
        lock: Mutex::new(()),
    };
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
            rejected,
            metrics,
            batch_size: batch_size.max(1),
            flush_interval,
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

    /// A request refused before it had a caller: counted and logged, no row (see `refusals`).
    pub fn refused(&self, status: u16, error_type: Option<&str>) {
        self.metrics.refused(status, error_type);
    }
}

impl UsageWriter {
    /// Runs until `stop` fires (or every sink is gone), then writes what is still queued.
    pub async fn run(mut self, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut replay = tokio::time::interval(Duration::from_secs(5));
        replay.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        while !stopping {
            tokio::select! {
                n = self.rx.recv_many(&mut batch, self.batch_size) => {
                    if n == 0 {
                        break;
                    }
                    stopping = self.fill(&mut batch, &mut stop).await;
                    self.write_batch(&mut batch).await;
                }
                _ = replay.tick() => self.replay_spool().await,
                _ = &mut stop => stopping = true,
            }
        }
        // Late records go to the spool from now on; take what is queued.
        self.rx.close();
        while self.rx.recv_many(&mut batch, self.batch_size).await > 0 {
            self.write_batch(&mut batch).await;
        }
        self.replay_spool().await;
    }

    /// Adds records to a started batch until it is full or `flush_interval` has passed since
    /// its first record. Returns true when `stop` fired meanwhile.
    async fn fill(
        &mut self,
        batch: &mut Vec<UsageRecord>,
        stop: &mut tokio::sync::oneshot::Receiver<()>,
    ) -> bool {
        // One timer for the whole batch: the loop wakes for every record under load, and a
        // timer made per wake-up was registered and cancelled each time.
        let deadline = tokio::time::sleep(self.flush_interval);
        tokio::pin!(deadline);
        while batch.len() < self.batch_size {
            let room = self.batch_size - batch.len();
            tokio::select! {
                n = self.rx.recv_many(batch, room) => if n == 0 { return false },
                _ = &mut deadline => return false,
                _ = &mut *stop => return true,
            }
        }
        false
    }

    async fn write_batch(&self, batch: &mut Vec<UsageRecord>) {
        self.metrics.usage_log_queue_depth.sub(batch.len() as i64);
        let full = std::mem::replace(batch, Vec::with_capacity(self.batch_size));
        self.write_or_spool(full.into()).await;
    }

    async fn write_or_spool(&self, batch: Arc<[UsageRecord]>) -> Outcome {
        match self.db.insert_usage(batch.clone()).await {
            Ok(()) => {
                self.count_written(batch.len());
                Outcome {
                    written: batch.len(),
                    unreachable: false,
                }
            }
            Err(e) if refuses_rows(&e) => self.isolate(&batch, e).await,
            Err(e) => {
                tracing::warn!(error = %e, records = batch.len(), "usage write failed, spooling to disk");
                self.spool_batch(&batch);
                Outcome {
                    written: 0,
                    unreachable: true,
                }
            }
        }
    }

    /// Writes a batch the database refused in halves, down to single rows, so that every row
    /// it accepts is written and only the rows it refuses are set aside. Each part is one
    /// transaction, rows and roll-up together, so no row is counted twice.
    async fn isolate(&self, batch: &[UsageRecord], error: anyhow::Error) -> Outcome {
        let mut outcome = Outcome::default();
        let mut untried: Vec<&[UsageRecord]> = Vec::new();
        let mut refused = Some((batch, error));
        loop {
            if let Some((part, error)) = refused.take() {
                match part {
                    [row] => self.reject(row, &error),
                    _ => {
                        let (first, second) = part.split_at(part.len() / 2);
                        untried.extend([second, first]);
                    }
                }
            }
            let Some(part) = untried.pop() else {
                return outcome;
            };
            match self.db.insert_usage(part.into()).await {
                Ok(()) => {
                    self.count_written(part.len());
                    outcome.written += part.len();
                }
                Err(e) if refuses_rows(&e) => refused = Some((part, e)),
                Err(e) => {
                    let rest: Vec<UsageRecord> = std::iter::once(part)
                        .chain(untried.into_iter().rev())
                        .flatten()
                        .cloned()
                        .collect();
                    tracing::warn!(error = %e, records = rest.len(), "usage write failed, spooling to disk");
                    self.spool_batch(&rest);
                    outcome.unreachable = true;
                    return outcome;
                }
            }
        }
    }

    fn count_written(&self, rows: usize) {
        self.metrics.usage_log_written_total.inc_by(rows as u64);
    }

    fn spool_batch(&self, batch: &[UsageRecord]) {
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

    /// Sets a row the database refused aside, logged once: it is never replayed, since the
    /// database would refuse it again.
    fn reject(&self, row: &UsageRecord, error: &anyhow::Error) {
        match self.rejected.append(std::slice::from_ref(row), true) {
            Ok(()) => {
                self.metrics.usage_log_rejected_total.inc();
                tracing::error!(request_id = %row.request_id, error = %error, file = %self.rejected.path.display(), "usage record refused by the database, set aside");
            }
            Err(e) => {
                self.metrics.usage_log_dropped_total.inc();
                tracing::error!(request_id = %row.request_id, error = %e, "usage record lost: refused by the database and the rejected file is not writable");
            }
        }
    }

    /// Writes the spooled records a batch at a time (memory stays bounded however long the
    /// database was away). Once the database cannot be reached, the rest goes back to the
    /// spool untried, for the next replay.
    async fn replay_spool(&self) {
        if self.spool.is_empty() {
            return;
        }
        let path = match self.spool.take() {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot move the usage spool aside for replay");
                return;
            }
        };
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the usage spool");
                return;
            }
        };
        let mut lines = std::io::BufReader::new(file).lines();
        let mut replayed = Outcome::default();
        loop {
            let mut batch = Vec::with_capacity(self.batch_size);
            for line in lines.by_ref().take(self.batch_size) {
                match line.map(|l| serde_json::from_str::<UsageRecord>(&l)) {
                    Ok(Ok(r)) => batch.push(r),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "unreadable line in usage spool, skipped")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "usage spool read failed; the rest stays for the next replay");
                        return;
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            if replayed.unreachable {
                self.spool_batch(&batch);
                continue;
            }
            let outcome = self.write_or_spool(batch.into()).await;
            replayed.written += outcome.written;
            replayed.unreachable = outcome.unreachable;
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::error!(error = %e, "cannot remove the replayed usage spool");
        }
        if replayed.written > 0 {
            tracing::info!(records = replayed.written, "replayed spooled usage records");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32) -> UsageRecord {
        UsageRecord {
            request_id: format!("req-{n}"),
            ..crate::metering::sample_record()
        }
    }

    async fn rows(db: &Db) -> i64 {
        let r = db
            .fetch_all("SELECT COUNT(*) AS n FROM llm_usage_logs", &[])
            .await
            .unwrap();
        r[0].int("n").unwrap()
    }

    /// Waits up to 5 s for the table to hold `n` rows.
    async fn wait_for_rows(db: &Db, n: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while rows(db).await < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A running writer over a fresh SQLite database. Its flush interval is long enough that
    /// only a full batch or a stop writes.
    struct Running {
        _dir: tempfile::TempDir,
        db: Db,
        metrics: Arc<Metrics>,
        spool: PathBuf,
        sink: UsageSink,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(connections: u32, batch_size: usize) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("u.db").display());
        let db = Db::connect(&url, connections).await.unwrap();
        db.migrate().await.unwrap();
        let metrics = Arc::new(Metrics::new());
        let spool = dir.path().join("spool");
        let (sink, writer) = usage_pipeline(
            db.clone(),
            metrics.clone(),
            100,
            batch_size,
            Duration::from_secs(30),
            spool.clone(),
        );
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(writer.run(stop_rx));
        Running {
            _dir: dir,
            db,
            metrics,
            spool,
            sink,
            stop,
            task,
        }
    }

    /// A batch waits for company up to the flush interval, a full batch is written at once,
    /// and stopping writes whatever is still waiting.
    #[tokio::test]
    async fn batches_fill_up_before_they_are_written() {
        let w = start(2, 3).await;
        w.sink.record(record(1));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(rows(&w.db).await, 0, "one record waits for its batch");

        w.sink.record(record(2));
        w.sink.record(record(3));
        wait_for_rows(&w.db, 3).await;
        assert_eq!(
            rows(&w.db).await,
            3,
            "a full batch is written without waiting"
        );

        w.sink.record(record(4));
        w.stop.send(()).unwrap();
        w.task.await.unwrap();
        assert_eq!(rows(&w.db).await, 4, "stopping writes what waited");
    }

    /// A row SQLite refuses (here a foreign key to no model) is set aside in the rejected
    /// file, not spooled, and the connection it was tried on goes back to the pool fit for the
    /// next batch.
    #[tokio::test]
    async fn a_refused_sqlite_row_is_set_aside_and_the_next_one_written() {
        // One connection: the good batch must use the one the refused batch used.
        let w = start(1, 1).await;
        w.sink.record(UsageRecord {
            llm_model_id: Some("no-such-model".into()),
            ..record(1)
        });
        w.sink.record(record(2));
        wait_for_rows(&w.db, 1).await;
        w.stop.send(()).unwrap();
        w.task.await.unwrap();

        let kept =
            w.db.fetch_all("SELECT request_id FROM llm_usage_logs", &[])
                .await
                .unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].text("request_id").unwrap(), "req-2");
        let rejected = std::fs::read_to_string(w.spool.with_extension("rejected.jsonl")).unwrap();
        assert_eq!(rejected.lines().count(), 1, "{rejected}");
        assert!(rejected.contains("\"req-1\""), "{rejected}");
        assert!(!w.spool.exists());
        assert_eq!(w.metrics.usage_log_rejected_total.get(), 1);
        assert_eq!(w.metrics.usage_log_spooled_total.get(), 0);
        assert_eq!(w.metrics.usage_log_dropped_total.get(), 0);
    }
}
