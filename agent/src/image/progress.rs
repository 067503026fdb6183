//! Progress of an image write: counters shared by the download and the
//! writer, turned into the wire type [`ImageWriteProgress`] on demand and
//! logged at an interval.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironclad_versioning::agent_api::ImageWriteProgress;

/// What the writer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    /// Downloading, converting and writing.
    Downloading = 0,
    /// All bytes are in; comparing the checksum.
    Verifying = 1,
    /// Writing the first MiB and syncing.
    Finishing = 2,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Self::Downloading => "downloading",
            Self::Verifying => "verifying",
            Self::Finishing => "finishing",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Verifying,
            2 => Self::Finishing,
            _ => Self::Downloading,
        }
    }
}

/// Counters of one image write.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    received: AtomicU64,
    written: AtomicU64,
    total: AtomicU64,
    stage: AtomicU8,
}

const UNKNOWN: u64 = u64::MAX;

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// Fresh counters, started now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            received: AtomicU64::new(0),
            written: AtomicU64::new(0),
            total: AtomicU64::new(UNKNOWN),
            stage: AtomicU8::new(Stage::Downloading as u8),
        }
    }

    /// Records the download's total length.
    pub fn set_total(&self, total: Option<u64>) {
        self.total
            .store(total.unwrap_or(UNKNOWN), Ordering::Relaxed);
    }

    /// Adds received bytes.
    pub fn add_received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the guest bytes written so far.
    pub fn set_written(&self, n: u64) {
        self.written.store(n, Ordering::Relaxed);
    }

    /// Moves to `stage`.
    pub fn set_stage(&self, stage: Stage) {
        self.stage.store(stage as u8, Ordering::Relaxed);
    }

    /// The current figures.
    pub fn snapshot(&self) -> ImageWriteProgress {
        let received = self.received.load(Ordering::Relaxed);
        let total = match self.total.load(Ordering::Relaxed) {
            UNKNOWN => None,
            t => Some(t),
        };
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = (received as f64 / secs) as u64;
        let eta_s = match total {
            Some(t) if rate > 0 => Some(t.saturating_sub(received) / rate),
            _ => None,
        };
        ImageWriteProgress {
            stage: Stage::from_u8(self.stage.load(Ordering::Relaxed))
                .name()
                .to_owned(),
            bytes_received: received,
            bytes_written: self.written.load(Ordering::Relaxed),
            bytes_total: total,
            rate_bytes_per_s: rate,
            eta_s,
        }
    }

    /// Logs the figures every `every` until the returned guard is dropped.
    pub fn log_every(self: &Arc<Self>, label: String, every: Duration) -> LogGuard {
        let p = self.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let s = p.snapshot();
                let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
                tracing::info!(
                    "{label}: {:.0} MiB received{}, {:.0} MiB written, {:.1} MiB/s{}",
                    mib(s.bytes_received),
                    s.bytes_total
                        .map(|t| format!(" of {:.0} MiB", mib(t)))
                        .unwrap_or_default(),
                    mib(s.bytes_written),
                    mib(s.rate_bytes_per_s),
                    s.eta_s
                        .map(|e| format!(", about {e} s left"))
                        .unwrap_or_default()
                );
            }
        });
        LogGuard(task)
    }
}

/// Stops the progress log when dropped.
#[derive(Debug)]
pub struct LogGuard(tokio::task::JoinHandle<()>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_has_rate_and_eta() {
        let p = Progress::new();
        p.set_total(Some(1000));
        p.add_received(500);
        p.set_written(600);
        let s = p.snapshot();
        assert_eq!(s.stage, "downloading");
        assert_eq!(s.bytes_total, Some(1000));
        assert_eq!(s.bytes_written, 600);
        assert!(s.rate_bytes_per_s > 0);
        assert!(s.eta_s.is_some());
        p.set_total(None);
        p.set_stage(Stage::Verifying);
        let s = p.snapshot();
        assert_eq!(
            (s.bytes_total, s.eta_s, s.stage.as_str()),
            (None, None, "verifying")
        );
    }
}
