//! The built-in file watcher: `runtime: builtin`, `entrypoint: file_watch`, config
//! `{path, recursive, events: [created, modified, removed, renamed], pattern?, debounce_ms?}`.
//!
//! Filesystem notifications (`notify`: inotify on Linux) are debounced per path: a burst
//! of changes to one file, each less than `debounce_ms` after the previous one, gives a
//! single event once the file has been quiet for that long. A path that does not exist
//! (or disappears while watched) is a sensor failure, under the restart policy.

use async_trait::async_trait;
use attune_actors::ports::DetectionSink;
use attune_actors::ports::{SensorDriver, SensorFailure};
use chrono::{DateTime, Utc};
use globset::{Glob, GlobMatcher};
use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::SensorConfigError;
use super::schedule::refuse_unknown_keys;

pub const ENTRYPOINT: &str = "file_watch";

pub const DEFAULT_DEBOUNCE_MS: u64 = 200;

/// The kinds of change a file-watch sensor reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    Created,
    Modified,
    Removed,
    Renamed,
}

impl ChangeKind {
    const ALL: [(&'static str, ChangeKind); 4] = [
        ("created", ChangeKind::Created),
        ("modified", ChangeKind::Modified),
        ("removed", ChangeKind::Removed),
        ("renamed", ChangeKind::Renamed),
    ];

    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Modified => "modified",
            ChangeKind::Removed => "removed",
            ChangeKind::Renamed => "renamed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FileWatchConfig {
    pub path: PathBuf,
    pub recursive: bool,
    pub events: BTreeSet<ChangeKind>,
    /// Matched against the path relative to the watched one (`*` crosses `/`).
    pub pattern: Option<GlobMatcher>,
    pub debounce: Duration,
}

impl FileWatchConfig {
    pub fn parse(config: &Value) -> Result<Self, SensorConfigError> {
        refuse_unknown_keys(
            config,
            &["path", "recursive", "events", "pattern", "debounce_ms"],
            ENTRYPOINT,
        )?;
        let path = match config.get("path") {
            Some(Value::String(p)) if !p.is_empty() => PathBuf::from(p),
            Some(other) => {
                return Err(SensorConfigError(format!(
                    "config.path must be a non-empty string, got {other}"
                )));
            }
            None => return Err(SensorConfigError("config.path is required".into())),
        };
        let recursive = match config.get("recursive") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(SensorConfigError(format!(
                    "config.recursive must be true or false, got {other}"
                )));
            }
        };
        let names = || {
            ChangeKind::ALL
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let events = match config.get("events") {
            None => ChangeKind::ALL.iter().map(|(_, k)| *k).collect(),
            Some(Value::Array(items)) if !items.is_empty() => {
                let mut events = BTreeSet::new();
                for item in items {
                    let kind = item
                        .as_str()
                        .and_then(|s| ChangeKind::ALL.iter().find(|(n, _)| *n == s))
                        .map(|(_, k)| *k)
                        .ok_or_else(|| {
                            SensorConfigError(format!(
                                "config.events: unknown event {item} (known: {})",
                                names()
                            ))
                        })?;
                    events.insert(kind);
                }
                events
            }
            Some(other) => {
                return Err(SensorConfigError(format!(
                    "config.events must be a non-empty list of {}, got {other}",
                    names()
                )));
            }
        };
        let pattern = match config.get("pattern") {
            None | Some(Value::Null) => None,
            Some(Value::String(glob)) => Some(
                Glob::new(glob)
                    .map_err(|e| {
                        SensorConfigError(format!(
                            "config.pattern '{glob}' is not a valid glob: {e}"
                        ))
                    })?
                    .compile_matcher(),
            ),
            Some(other) => {
                return Err(SensorConfigError(format!(
                    "config.pattern must be a glob string, got {other}"
                )));
            }
        };
        let debounce = match config.get("debounce_ms") {
            None => Duration::from_millis(DEFAULT_DEBOUNCE_MS),
            Some(value) => Duration::from_millis(value.as_u64().ok_or_else(|| {
                SensorConfigError(format!(
                    "config.debounce_ms must be a whole number of milliseconds, got {value}"
                ))
            })?),
        };
        Ok(Self {
            path,
            recursive,
            events,
            pattern,
            debounce,
        })
    }
}

/// A change waiting out its debounce window. Moves are kept as halves until the pair
/// (notify's `Both`) arrives: an unpaired half moved a file into or out of the watched
/// tree, and is reported as created or removed.
#[derive(Debug, Clone, PartialEq)]
enum Pending {
    Change(ChangeKind),
    MovedOut,
    MovedIn,
    Renamed { from: PathBuf },
}

struct Entry {
    pending: Pending,
    occurred_at: DateTime<Utc>,
    quiet_at: Instant,
}

/// Per-path debouncing of raw notifications.
pub struct Debouncer {
    window: Duration,
    entries: HashMap<PathBuf, Entry>,
}

/// A change ready to report.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: ChangeKind,
    pub path: PathBuf,
    pub from: Option<PathBuf>,
    pub occurred_at: DateTime<Utc>,
}

impl Debouncer {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            entries: HashMap::new(),
        }
    }

    fn put(&mut self, path: PathBuf, pending: Pending, now: Instant) {
        let merged = match (self.entries.get(&path).map(|e| &e.pending), pending) {
            // Writes right after a creation or a rename are part of it.
            (
                Some(
                    first @ (Pending::Change(ChangeKind::Created)
                    | Pending::MovedIn
                    | Pending::Renamed { .. }),
                ),
                Pending::Change(ChangeKind::Modified),
            ) => first.clone(),
            (_, pending) => pending,
        };
        self.entries.insert(
            path,
            Entry {
                pending: merged,
                occurred_at: Utc::now(),
                quiet_at: now + self.window,
            },
        );
    }

    /// Takes in one raw notification.
    pub fn observe(&mut self, event: &notify::Event, now: Instant) {
        let first = event.paths.first().cloned();
        let Some(path) = first else {
            return;
        };
        match &event.kind {
            EventKind::Create(_) => self.put(path, Pending::Change(ChangeKind::Created), now),
            EventKind::Remove(_) => self.put(path, Pending::Change(ChangeKind::Removed), now),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                self.put(path, Pending::MovedOut, now)
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                self.put(path, Pending::MovedIn, now)
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                let Some(to) = event.paths.get(1).cloned() else {
                    return;
                };
                if self
                    .entries
                    .get(&path)
                    .is_some_and(|e| e.pending == Pending::MovedOut)
                {
                    self.entries.remove(&path);
                }
                self.put(to, Pending::Renamed { from: path }, now);
            }
            // Other platforms report renames without halves: judge by what is there now.
            EventKind::Modify(ModifyKind::Name(_)) => {
                let pending = if path.exists() {
                    Pending::MovedIn
                } else {
                    Pending::MovedOut
                };
                self.put(path, pending, now)
            }
            EventKind::Modify(_) => self.put(path, Pending::Change(ChangeKind::Modified), now),
            EventKind::Access(_) | EventKind::Any | EventKind::Other => {}
        }
    }

    /// When the next entry falls quiet.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.quiet_at).min()
    }

    /// The changes quiet since `now - window`, oldest first.
    pub fn take_quiet(&mut self, now: Instant) -> Vec<Change> {
        let quiet: Vec<PathBuf> = self
            .entries
            .iter()
            .filter(|(_, e)| e.quiet_at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        let mut changes: Vec<Change> = quiet
            .into_iter()
            .filter_map(|path| {
                let entry = self.entries.remove(&path)?;
                let (kind, from) = match entry.pending {
                    Pending::Change(kind) => (kind, None),
                    Pending::MovedOut => (ChangeKind::Removed, None),
                    Pending::MovedIn => (ChangeKind::Created, None),
                    Pending::Renamed { from } => (ChangeKind::Renamed, Some(from)),
                };
                Some(Change {
                    kind,
                    path,
                    from,
                    occurred_at: entry.occurred_at,
                })
            })
            .collect();
        changes.sort_by_key(|c| c.occurred_at);
        changes
    }
}

pub struct FileWatcher {
    config: FileWatchConfig,
}

impl FileWatcher {
    pub fn new(config: FileWatchConfig) -> Self {
        Self { config }
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

    fn payload(change: &Change, sensor_ref: &str) -> Value {
        let mut payload = json!({
            "path": change.path.display().to_string(),
            "kind": change.kind.name(),
            "occurred_at": change.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "sensor_ref": sensor_ref,
        });
        if let Some(from) = &change.from {
            payload["from"] = json!(from.display().to_string());
            payload["to"] = json!(change.path.display().to_string());
        }
        payload
    }
}

/// Notifications handled before the watcher looks at its debounce deadlines again.
const MAX_EVENTS_PER_TURN: usize = 1000;

#[async_trait]
impl SensorDriver for FileWatcher {
    async fn run(&mut self, sink: DetectionSink) -> Result<(), SensorFailure> {
        let configured = &self.config.path;
        // Watch the canonical path so the paths in events (absolute, symlinks resolved)
        // relate to it for `pattern`.
        let root = std::fs::canonicalize(configured).map_err(|e| {
            SensorFailure::new(format!(
                "config.path '{}' cannot be watched: {e}",
                configured.display()
            ))
        })?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        // notify calls this from its own thread; a closed channel means we are gone.
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .map_err(|e| SensorFailure::new(format!("cannot start the file watcher: {e}")))?;
        let mode = if self.config.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        watcher
            .watch(&root, mode)
            .map_err(|e| SensorFailure::new(format!("cannot watch '{}': {e}", root.display())))?;
        tracing::info!(sensor = %sink.sensor().r#ref, path = %root.display(), "watching");

        let mut debouncer = Debouncer::new(self.config.debounce);
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
            for change in debouncer.take_quiet(Instant::now()) {
                if change.path == root && change.kind != ChangeKind::Modified && !root.exists() {
                    return Err(SensorFailure::new(format!(
                        "watched path '{}' was removed",
                        root.display()
                    )));
                }
                if !self.wanted(&change, &root) {
                    continue;
                }
                let payload = Self::payload(&change, &sink.sensor().r#ref);
                sink.emit(payload)
                    .await
                    .map_err(|e| SensorFailure::new(format!("file watcher could not emit: {e}")))?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut event = notify::Event::new(kind);
        for p in paths {
            event = event.add_path(PathBuf::from(p));
        }
        event
    }

    #[test]
    fn bursts_merge_and_move_halves_pair_up() {
        let mut d = Debouncer::new(Duration::from_millis(100));
        let t0 = Instant::now();
        d.observe(&event(EventKind::Create(CreateKind::File), &["/w/a"]), t0);
        for i in 0..5 {
            d.observe(
                &event(
                    EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                    &["/w/a"],
                ),
                t0 + Duration::from_millis(i * 50),
            );
        }
        assert!(d.take_quiet(t0 + Duration::from_millis(250)).is_empty());
        let changes = d.take_quiet(t0 + Duration::from_millis(300));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, ChangeKind::Created);

        d.observe(
            &event(
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                &["/w/b"],
            ),
            t0,
        );
        d.observe(
            &event(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                &["/w/c"],
            ),
            t0,
        );
        d.observe(
            &event(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/w/b", "/w/c"],
            ),
            t0,
        );
        let changes = d.take_quiet(t0 + Duration::from_secs(1));
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].kind, ChangeKind::Renamed);
        assert_eq!(changes[0].from.as_deref(), Some(Path::new("/w/b")));
        assert_eq!(changes[0].path, PathBuf::from("/w/c"));

        d.observe(
            &event(
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                &["/w/gone"],
            ),
            t0,
        );
        let changes = d.take_quiet(t0 + Duration::from_secs(1));
        assert_eq!(changes[0].kind, ChangeKind::Removed);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |v: Value| FileWatchConfig::parse(&v).unwrap_err().0;
        assert!(err(json!({})).contains("config.path is required"));
        assert!(
            err(json!({"path": "/tmp", "events": ["created", "touched"]}))
                .contains("config.events: unknown event \"touched\"")
        );
        assert!(err(json!({"path": "/tmp", "events": []})).contains("config.events"));
        assert!(err(json!({"path": "/tmp", "pattern": "[a"})).contains("config.pattern"));
        assert!(err(json!({"path": "/tmp", "debounce_ms": -1})).contains("config.debounce_ms"));
        assert!(err(json!({"path": "/tmp", "recursive": "yes"})).contains("config.recursive"));
        let ok = FileWatchConfig::parse(&json!({"path": "/does/not/exist", "events": ["renamed"]}))
            .unwrap();
        assert_eq!(ok.events.len(), 1);
    }
}
