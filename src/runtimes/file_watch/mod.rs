//! The built-in file watcher: `runtime: builtin`, `entrypoint: file_watch`, config
//! `{path, recursive, events: [created, modified, removed, renamed], pattern?, debounce_ms?,
//! max_queued?}`.
//!
//! Filesystem notifications (`notify`: inotify on Linux) are debounced per path: a burst
//! of changes to one file, each less than `debounce_ms` after the previous one, gives a
//! single event once the file has been quiet for that long. A path that does not exist
//! (or disappears while watched) is a sensor failure, under the restart policy.
//!
//! Notifications wait in a queue of `max_queued`; when the watcher falls behind (its
//! events wait for room in the pipeline) the queue fills, further notifications are
//! dropped, and the watcher then rescans the tree and reports what changed since what it
//! last reported (see [`scan`]). Memory stays bounded whatever the file system does.

mod config;
mod debounce;
mod scan;

pub use config::{ChangeKind, DEFAULT_DEBOUNCE_MS, DEFAULT_MAX_QUEUED, FileWatchConfig};
pub use debounce::{Change, Debouncer};

use async_trait::async_trait;
use attune_actors::ports::DetectionSink;
use attune_actors::ports::{IntakeError, SensorDriver, SensorFailure};
use notify::{RecursiveMode, Watcher};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tokio::time::Instant;

use scan::Snapshot;

pub const ENTRYPOINT: &str = "file_watch";

pub struct FileWatcher {
    config: FileWatchConfig,
    metrics: Arc<crate::metrics::Metrics>,
}

impl FileWatcher {
    pub fn new(config: FileWatchConfig, metrics: Arc<crate::metrics::Metrics>) -> Self {
        Self { config, metrics }
    }

    fn wanted(&self, change: &Change, root: &Path) -> bool {
        if !self.config.events.contains(&change.kind) {
            return false;
        }
        let Some(pattern) = &self.config.pattern else {
            return true;
        };
        let matches = |path: &Path| pattern.is_match(path.strip_prefix(root).unwrap_or(path));
        matches(&change.path) || change.from.as_deref().is_some_and(matches)
    }

    fn payload(change: &Change, sensor_ref: &str, rescan: bool) -> Value {
        let mut payload = json!({
            "path": change.path.display().to_string(),
            "kind": change.kind.name(),
            "occurred_at": change.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "sensor_ref": sensor_ref,
        });
        if rescan {
            payload["rescan"] = json!(true);
        }
        if let Some(from) = &change.from {
            payload["from"] = json!(from.display().to_string());
            payload["to"] = json!(change.path.display().to_string());
        }
        payload
    }
}

/// Notifications handled before the watcher looks at its debounce deadlines again.
const MAX_EVENTS_PER_TURN: usize = 1000;

/// Runs file-system work on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SensorFailure> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SensorFailure::new(format!("file-system call failed: {e}")))
}

/// What the watcher has reported, kept up to date as it reports (a rescan compares with
/// it), and the root it watches.
struct Reported {
    root: PathBuf,
    recursive: bool,
    known: Snapshot,
    /// Paths the last rescan reported: a notification of the same change may still come
    /// out of the queue after it, and must not report it twice.
    from_rescan: HashSet<PathBuf>,
}

impl Reported {
    /// Settles the quiet changes against the file system (one blocking call for the
    /// lot): a move of unknown direction becomes created or removed, and the baseline
    /// follows what is reported.
    async fn settle(&mut self, changes: Vec<Change>) -> Result<Vec<Change>, SensorFailure> {
        if changes.is_empty() {
            return Ok(changes);
        }
        let paths: Vec<PathBuf> = changes.iter().map(|c| c.path.clone()).collect();
        let stamps =
            blocking(move || paths.iter().map(|p| scan::stamp(p)).collect::<Vec<_>>()).await?;
        let mut settled = Vec::with_capacity(changes.len());
        for (mut change, stamp) in changes.into_iter().zip(stamps) {
            if change.uncertain && stamp.is_none() {
                change.kind = ChangeKind::Removed;
            }
            if self.from_rescan.remove(&change.path) {
                let already = match change.kind {
                    ChangeKind::Removed => {
                        stamp.is_none() && !self.known.contains_key(&change.path)
                    }
                    _ => stamp.is_some() && self.known.get(&change.path) == stamp.as_ref(),
                };
                if already {
                    continue;
                }
            }
            if let Some(from) = &change.from {
                self.known.remove(from);
            }
            match stamp {
                Some(stamp) if change.kind != ChangeKind::Removed => {
                    self.known.insert(change.path.clone(), stamp);
                }
                _ => {
                    self.known.remove(&change.path);
                }
            }
            settled.push(change);
        }
        Ok(settled)
    }

    /// Scans the tree again and returns the changes since the baseline, which it becomes.
    async fn rescan(&mut self) -> Result<Vec<Change>, SensorFailure> {
        let (root, recursive) = (self.root.clone(), self.recursive);
        let now = blocking(move || root.exists().then(|| scan::scan(&root, recursive)))
            .await?
            .ok_or_else(|| {
                SensorFailure::new(format!(
                    "watched path '{}' was removed",
                    self.root.display()
                ))
            })?;
        let changes = scan::diff(&self.known, &now);
        self.known = now;
        self.from_rescan = changes.iter().map(|(path, _)| path.clone()).collect();
        let at = chrono::Utc::now();
        Ok(changes
            .into_iter()
            .map(|(path, kind)| Change {
                kind,
                path,
                from: None,
                occurred_at: at,
                uncertain: false,
            })
            .collect())
    }
}

#[async_trait]
impl SensorDriver for FileWatcher {
    async fn run(&mut self, sink: DetectionSink) -> Result<(), SensorFailure> {
        let configured = self.config.path.clone();
        // Watch the canonical path so the paths in events (absolute, symlinks resolved)
        // relate to it for `pattern`.
        let root = tokio::fs::canonicalize(&configured).await.map_err(|e| {
            SensorFailure::new(format!(
                "config.path '{}' cannot be watched: {e}",
                configured.display()
            ))
        })?;
        let (tx, mut rx) = mpsc::channel(self.config.max_queued);
        let overflowed = Arc::new(AtomicBool::new(false));
        let dropping = overflowed.clone();
        // notify calls this from its own thread. A full queue drops the notification and
        // asks for a rescan; a closed one means we are gone.
        let mut watcher = notify::recommended_watcher(move |event| {
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(event) {
                dropping.store(true, Ordering::SeqCst);
            }
        })
        .map_err(|e| SensorFailure::new(format!("cannot start the file watcher: {e}")))?;
        let mode = if self.config.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        let watching = root.clone();
        let watcher = blocking(move || watcher.watch(&watching, mode).map(|_| watcher))
            .await?
            .map_err(|e| SensorFailure::new(format!("cannot watch '{}': {e}", root.display())))?;
        // The baseline is taken once the watch is on, so nothing falls between the two.
        let (scan_root, recursive) = (root.clone(), self.config.recursive);
        let known = blocking(move || scan::scan(&scan_root, recursive)).await?;
        let mut reported = Reported {
            root: root.clone(),
            recursive,
            known,
            from_rescan: HashSet::new(),
        };
        tracing::info!(sensor = %sink.sensor().r#ref, path = %root.display(), "watching");

        let mut debouncer = Debouncer::new(self.config.debounce);
        let mut kernel_lost_events = false;
        loop {
            let received = match debouncer.next_deadline() {
                Some(deadline) => tokio::select! {
                    event = rx.recv() => Some(event),
                    _ = tokio::time::sleep_until(deadline) => None,
                },
                None => Some(rx.recv().await),
            };
            if let Some(event) = received {
                let Some(event) = event else {
                    return Err(SensorFailure::new("the file watcher stopped"));
                };
                let mut next = Some(event);
                // Take what is already queued so the halves of a move meet, but only so
                // much at a time: under a flood the loop must still reach `take_quiet`
                // and give the runtime back its thread.
                let mut taken = 0usize;
                while let Some(event) = next {
                    let event = event.map_err(|e| {
                        SensorFailure::new(format!(
                            "file watcher error on '{}': {e}",
                            root.display()
                        ))
                    })?;
                    sink.record_poll();
                    self.metrics.file_notification(&sink.sensor().r#ref);
                    kernel_lost_events |= event.need_rescan();
                    debouncer.observe(&event, Instant::now());
                    taken += 1;
                    next = if taken < MAX_EVENTS_PER_TURN {
                        rx.try_recv().ok()
                    } else {
                        None
                    };
                }
                if taken >= MAX_EVENTS_PER_TURN {
                    tokio::task::yield_now().await;
                }
            }
            let lost = overflowed.swap(false, Ordering::SeqCst) || kernel_lost_events;
            let (changes, rescan) = if lost {
                kernel_lost_events = false;
                tracing::warn!(sensor = %sink.sensor().r#ref, path = %root.display(), max_queued = self.config.max_queued, "file notifications were dropped (the watcher fell behind); rescanning");
                // What was pending is part of what the rescan finds.
                debouncer.clear();
                (reported.rescan().await?, true)
            } else {
                let quiet = debouncer.take_quiet(Instant::now());
                (reported.settle(quiet).await?, false)
            };
            for change in changes {
                if change.path == root
                    && change.kind != ChangeKind::Modified
                    && !tokio::fs::try_exists(&root).await.unwrap_or(false)
                {
                    return Err(SensorFailure::new(format!(
                        "watched path '{}' was removed",
                        root.display()
                    )));
                }
                if !self.wanted(&change, &root) {
                    continue;
                }
                let payload = Self::payload(&change, &sink.sensor().r#ref, rescan);
                match sink.emit(payload).await {
                    Ok(_) => {}
                    Err(IntakeError::InvalidPayload(reason)) => {
                        tracing::error!(sensor = %sink.sensor().r#ref, path = %change.path.display(), %reason, "file event refused; not stored");
                    }
                    Err(e) => {
                        return Err(SensorFailure::new(format!(
                            "file watcher could not emit: {e}"
                        )));
                    }
                }
            }
            // Keeps the watch alive for as long as the loop runs.
            let _ = &watcher;
        }
    }
}
