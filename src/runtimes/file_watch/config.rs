//! A file-watch sensor's configuration: `{path, recursive, events: [created, modified,
//! removed, renamed], pattern?, debounce_ms?, max_queued?}`.

use globset::{Glob, GlobMatcher};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::runtimes::SensorConfigError;
use crate::runtimes::schedule::refuse_unknown_keys;

use super::ENTRYPOINT;

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
    /// Notifications queued for the watcher at most; beyond, they are dropped and the
    /// watcher rescans the tree instead.
    pub max_queued: usize,
}

pub const DEFAULT_MAX_QUEUED: usize = 4096;

impl FileWatchConfig {
    pub fn parse(config: &Value) -> Result<Self, SensorConfigError> {
        refuse_unknown_keys(
            config,
            &[
                "path",
                "recursive",
                "events",
                "pattern",
                "debounce_ms",
                "max_queued",
            ],
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
        let max_queued = match config.get("max_queued") {
            None => DEFAULT_MAX_QUEUED,
            Some(value) => value
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| (16..=1_000_000).contains(n))
                .ok_or_else(|| {
                    SensorConfigError(format!(
                        "config.max_queued must be a whole number from 16 to 1000000, got {value}"
                    ))
                })?,
        };
        Ok(Self {
            path,
            recursive,
            events,
            pattern,
            debounce,
            max_queued,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert!(err(json!({"path": "/tmp", "max_queued": 2})).contains("config.max_queued"));
        let ok = FileWatchConfig::parse(&json!({"path": "/does/not/exist", "events": ["renamed"]}))
            .unwrap();
        assert_eq!(ok.events.len(), 1);
    }
}
