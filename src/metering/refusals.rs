//! Requests refused before a caller was authenticated: no key, a wrong one, or a request the
//! gateway will not serve anyone. They get no usage row (there is nobody to bill, and a client
//! sending wrong keys in a loop would otherwise grow the usage table as fast as it can send);
//! they are counted in `tollgate_auth_failures_total{reason}` and logged at most once a second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The `reason` label's values, all exported from 0.
pub const REASONS: [&str; 6] = [
    "missing_key",
    "invalid_key",
    "forbidden",
    "unsupported_media_type",
    "unavailable",
    "other",
];

/// The reason of a refusal, from its status and error type (`GatewayError::error_type`).
pub fn reason(status: u16, error_type: Option<&str>) -> &'static str {
    match (status, error_type) {
        (401, Some("invalid_api_key")) => "invalid_key",
        (401, _) => "missing_key",
        (403, _) => "forbidden",
        (415, _) => "unsupported_media_type",
        // The keys could not be checked (the database is unreachable).
        (503, _) => "unavailable",
        _ => "other",
    }
}

/// Writes one warning line for the first refusal, then at most one a second summing up the
/// refusals since the previous line, until a second passes without any.
#[derive(Default)]
pub struct RefusalLog {
    /// Refusals not yet in a line, per reason (in `REASONS` order).
    pending: [AtomicU64; REASONS.len()],
    /// Set while a task writes the lines: refusals meanwhile only add to `pending`.
    writing: AtomicBool,
}

impl RefusalLog {
    /// Counts a refusal for the next line. True when no task is writing lines: the caller
    /// then starts `write_lines`.
    pub fn count(&self, reason: &'static str) -> bool {
        let i = REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REASONS.len() - 1);
        self.pending[i].fetch_add(1, Ordering::Relaxed);
        !self.writing.swap(true, Ordering::AcqRel)
    }

    /// Writes a line now and then one a second while refusals keep coming.
    pub async fn write_lines(&self) {
        loop {
            if !self.write_line() {
                // A quiet second: stop, unless a refusal came as the flag went down (it saw
                // the flag up and left its line to this task) and no other task took over.
                self.writing.store(false, Ordering::Release);
                if !self.has_pending() || self.writing.swap(true, Ordering::AcqRel) {
                    return;
                }
                continue;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn has_pending(&self) -> bool {
        self.pending.iter().any(|n| n.load(Ordering::Relaxed) > 0)
    }

    /// Logs and clears the pending counts; false when there were none.
    fn write_line(&self) -> bool {
        let mut summary = String::new();
        let mut total = 0;
        for (reason, n) in REASONS.iter().zip(&self.pending) {
            let n = n.swap(0, Ordering::Relaxed);
            if n > 0 {
                total += n;
                summary.push_str(&format!(" {reason}={n}"));
            }
        }
        if total > 0 {
            tracing::warn!(
                refused = total,
                "requests refused before authentication (at most one such line a second):{summary}"
            );
        }
        total > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Log output kept for the test to read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A flood gives one line at once and then at most one a second, each with the counts
    /// since the previous line; after a quiet second the next refusal is told at once.
    #[tokio::test]
    async fn refusals_are_logged_at_most_once_a_second() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let log = Arc::new(RefusalLog::default());
        let refuse = |reason, n| {
            for _ in 0..n {
                if log.count(reason) {
                    let log = log.clone();
                    tokio::spawn(async move { log.write_lines().await });
                }
            }
        };
        let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
        // Lines at 0 s and 1 s; the task sees a quiet second at 2 s and stops.
        refuse("invalid_key", 200);
        pause(500).await;
        refuse("invalid_key", 5);
        refuse("missing_key", 3);
        pause(2600).await;
        refuse("forbidden", 1);
        pause(100).await;

        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].ends_with(": invalid_key=200 refused=200"),
            "{text}"
        );
        assert!(
            lines[1].ends_with(": missing_key=3 invalid_key=5 refused=8"),
            "{text}"
        );
        assert!(lines[2].ends_with(": forbidden=1 refused=1"), "{text}");
    }

    #[test]
    fn reasons_come_from_status_and_error_type() {
        assert_eq!(reason(401, Some("invalid_api_key")), "invalid_key");
        assert_eq!(reason(401, Some("invalid_request_error")), "missing_key");
        assert_eq!(reason(403, None), "forbidden");
        assert_eq!(
            reason(415, Some("invalid_request_error")),
            "unsupported_media_type"
        );
        assert_eq!(reason(503, Some("service_unavailable")), "unavailable");
        assert_eq!(reason(400, None), "other");
        assert!(REASONS.contains(&"other"));
    }
}
