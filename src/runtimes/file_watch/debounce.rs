//! Per-path debouncing of raw notifications: a burst of changes to one path becomes one
//! change once the path has been quiet for the window.

use chrono::{DateTime, Utc};
use notify::EventKind;
use notify::event::{ModifyKind, RenameMode};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

use super::ChangeKind;

/// A change waiting out its debounce window. Moves are kept as halves until the pair
/// (notify's `Both`) arrives: an unpaired half moved a file into or out of the watched
/// tree, and is reported as created or removed.
#[derive(Debug, Clone, PartialEq)]
enum Pending {
    Change(ChangeKind),
    MovedOut,
    MovedIn,
    Renamed {
        from: PathBuf,
    },
    /// A move reported without saying which half (not inotify): whether the path exists
    /// when it falls quiet decides (see [`Change::uncertain`]).
    Moved,
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
    /// A move of unknown direction: `kind` says `Created`, and the watcher reports it as
    /// removed instead if the path no longer exists.
    pub uncertain: bool,
}

impl Debouncer {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            entries: HashMap::new(),
        }
    }

    fn put(&mut self, path: PathBuf, pending: Pending, now: Instant) {
        let previous = self.entries.get(&path).map(|e| &e.pending);
        let merged = match (previous, pending) {
            // Writes right after a creation or a rename are part of it.
            (
                Some(
                    first @ (Pending::Change(ChangeKind::Created)
                    | Pending::MovedIn
                    | Pending::Renamed { .. }),
                ),
                Pending::Change(ChangeKind::Modified),
            ) => first.clone(),
            // Created and gone within one window: neither is reported, never a lone
            // removal of a path nobody heard of.
            (
                Some(Pending::Change(ChangeKind::Created) | Pending::MovedIn),
                Pending::Change(ChangeKind::Removed) | Pending::MovedOut,
            ) => {
                self.entries.remove(&path);
                return;
            }
            // Renamed, then the new name removed: what is gone is the old name.
            (
                Some(Pending::Renamed { from }),
                Pending::Change(ChangeKind::Removed) | Pending::MovedOut,
            ) => {
                let from = from.clone();
                self.entries.remove(&path);
                self.put(from, Pending::Change(ChangeKind::Removed), now);
                return;
            }
            // Removed and back within one window: the file was replaced.
            (
                Some(Pending::Change(ChangeKind::Removed) | Pending::MovedOut),
                Pending::Change(ChangeKind::Created) | Pending::MovedIn,
            ) => Pending::Change(ChangeKind::Modified),
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

    /// Forgets every pending change (a rescan reports the net result instead).
    pub fn clear(&mut self) {
        self.entries.clear();
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
            // Other platforms report renames without halves: judged when it falls quiet,
            // by what is there then (a file-system call, made off the async threads).
            EventKind::Modify(ModifyKind::Name(_)) => self.put(path, Pending::Moved, now),
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
                let uncertain = entry.pending == Pending::Moved;
                let (kind, from) = match entry.pending {
                    Pending::Change(kind) => (kind, None),
                    Pending::MovedOut => (ChangeKind::Removed, None),
                    Pending::MovedIn | Pending::Moved => (ChangeKind::Created, None),
                    Pending::Renamed { from } => (ChangeKind::Renamed, Some(from)),
                };
                Some(Change {
                    kind,
                    path,
                    from,
                    occurred_at: entry.occurred_at,
                    uncertain,
                })
            })
            .collect();
        changes.sort_by_key(|c| c.occurred_at);
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RemoveKind};
    use std::path::Path;

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
    fn created_and_removed_in_one_window_is_neither_and_replaced_is_modified() {
        let mut d = Debouncer::new(Duration::from_millis(100));
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        d.observe(&event(EventKind::Create(CreateKind::File), &["/w/tmp"]), t0);
        d.observe(
            &event(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                &["/w/tmp"],
            ),
            t0,
        );
        d.observe(&event(EventKind::Remove(RemoveKind::File), &["/w/tmp"]), t0);
        assert!(d.take_quiet(later).is_empty(), "no lone removal");

        d.observe(&event(EventKind::Remove(RemoveKind::File), &["/w/old"]), t0);
        d.observe(&event(EventKind::Create(CreateKind::File), &["/w/old"]), t0);
        let changes = d.take_quiet(later);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, ChangeKind::Modified);

        d.observe(
            &event(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/w/a", "/w/b"],
            ),
            t0,
        );
        d.observe(&event(EventKind::Remove(RemoveKind::File), &["/w/b"]), t0);
        let changes = d.take_quiet(later);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].kind, ChangeKind::Removed);
        assert_eq!(changes[0].path, PathBuf::from("/w/a"));

        d.observe(
            &event(
                EventKind::Modify(ModifyKind::Name(RenameMode::Any)),
                &["/w/c"],
            ),
            t0,
        );
        let changes = d.take_quiet(later);
        assert!(changes[0].uncertain);
    }
}
