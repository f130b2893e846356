//! `packs.watch`: reloads an autoloaded pack shortly after its files change.
//!
//! One `notify` watcher covers every autoloaded pack directory. A change marks its pack;
//! once a pack has been quiet for `packs.watch_debounce` (so an editor's save or a `git
//! checkout` of many files is one reload), it is loaded again exactly as at start: read
//! and validated first, then upserted in one transaction. A pack that no longer loads is
//! logged with its error and changes nothing, so the definitions in force stay. A load
//! that changed something is followed by a reconcile, which restarts the sensors whose
//! definitions (YAML or code digest) changed and refreshes the rules.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use attune_actors::SupervisorMsg;
use attune_actors::ports::Store;
use ractor::ActorRef;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::packs;

/// What `/status` shows of the pack watch (`packs`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WatchReport {
    pub watching: bool,
    /// Loads after a change that changed definitions.
    pub reloads: u64,
    /// Loads after a change that the pack refused; its definitions stayed.
    pub refused: u64,
    /// The last refusal, naming the pack and the file.
    pub last_error: Option<String>,
    pub last_reload_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Shared between the watch task (which writes) and `/status` (which reads).
#[derive(Debug, Default)]
pub struct WatchStats(std::sync::Mutex<WatchReport>);

impl WatchStats {
    pub fn snapshot(&self) -> WatchReport {
        attune_actors::sync::lock(&self.0).clone()
    }

    fn update(&self, change: impl FnOnce(&mut WatchReport)) {
        change(&mut attune_actors::sync::lock(&self.0));
    }
}

/// Packs with changes not yet reloaded, and when each last changed.
#[derive(Debug, Default)]
pub struct Pending {
    changed: HashMap<usize, Instant>,
}

impl Pending {
    pub fn touch(&mut self, pack: usize, at: Instant) {
        self.changed.insert(pack, at);
    }

    /// The packs quiet for `quiet` by `now`, removed from the pending set, in index order.
    pub fn due(&mut self, now: Instant, quiet: Duration) -> Vec<usize> {
        let mut due: Vec<usize> = self
            .changed
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) >= quiet)
            .map(|(pack, _)| *pack)
            .collect();
        due.sort_unstable();
        for pack in &due {
            self.changed.remove(pack);
        }
        due
    }

    /// When the next pending pack becomes due, if any is pending.
    pub fn next_due(&self, quiet: Duration) -> Option<Instant> {
        self.changed.values().min().map(|at| *at + quiet)
    }
}

/// The index of the pack directory a changed path is in.
fn pack_of(dirs: &[PathBuf], path: &Path) -> Option<usize> {
    dirs.iter().position(|dir| path.starts_with(dir))
}

/// Starts watching `dirs` (made absolute); `None` when there is nothing to watch or the
/// watcher cannot start (logged: the service runs on without reloading).
pub fn spawn(
    store: Arc<dyn Store>,
    supervisor: ActorRef<SupervisorMsg>,
    dirs: &[PathBuf],
    quiet: Duration,
    stats: Arc<WatchStats>,
) -> Option<JoinHandle<()>> {
    use notify::Watcher;
    let dirs: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|dir| match std::fs::canonicalize(dir) {
            Ok(dir) => Some(dir),
            Err(error) => {
                tracing::error!(pack = %dir.display(), %error, "packs.watch: cannot watch this pack directory");
                None
            }
        })
        .collect();
    if dirs.is_empty() {
        return None;
    }
    let (tx, mut changes) = mpsc::unbounded_channel::<PathBuf>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !matches!(event.kind, notify::EventKind::Access(_))
        {
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::error!(%error, "packs.watch: cannot start the file watcher; packs are not reloaded on change");
            return None;
        }
    };
    for dir in &dirs {
        if let Err(error) = watcher.watch(dir, notify::RecursiveMode::Recursive) {
            tracing::error!(pack = %dir.display(), %error, "packs.watch: cannot watch this pack directory");
        }
    }
    tracing::info!(packs = dirs.len(), "watching pack directories for changes");
    stats.update(|report| report.watching = true);
    Some(tokio::spawn(async move {
        // Owned by the task: dropping it (task aborted at shutdown) stops the watch.
        let _watcher = watcher;
        let mut pending = Pending::default();
        loop {
            let wake = pending.next_due(quiet);
            tokio::select! {
                changed = changes.recv() => match changed {
                    Some(path) => {
                        if let Some(pack) = pack_of(&dirs, &path) {
                            pending.touch(pack, Instant::now());
                        }
                    }
                    None => return,
                },
                () = sleep_until(wake) => {
                    for pack in pending.due(Instant::now(), quiet) {
                        reload(store.as_ref(), &supervisor, &dirs[pack], &stats).await;
                    }
                }
            }
        }
    }))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn reload(
    store: &dyn Store,
    supervisor: &ActorRef<SupervisorMsg>,
    dir: &Path,
    stats: &WatchStats,
) {
    match packs::install_pack(store, dir).await {
        Ok(summary) if summary.changed() => {
            tracing::info!(pack = %dir.display(), ?summary, "pack reloaded after a change");
            stats.update(|report| {
                report.reloads += 1;
                report.last_reload_at = Some(chrono::Utc::now());
            });
            if let Err(error) = supervisor.send_message(SupervisorMsg::Reconcile(None)) {
                tracing::warn!(%error, "reloaded pack not applied: the supervisor is not running");
            }
        }
        Ok(_) => {
            tracing::debug!(pack = %dir.display(), "pack files changed; definitions unchanged")
        }
        Err(error) => {
            tracing::error!(
                pack = %dir.display(),
                %error,
                "pack changed but no longer loads; the definitions loaded before stay in force"
            );
            stats.update(|report| {
                report.refused += 1;
                report.last_error = Some(error.to_string());
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_is_due_once_it_has_been_quiet() {
        let start = Instant::now();
        let quiet = Duration::from_millis(500);
        let mut pending = Pending::default();
        pending.touch(1, start);
        pending.touch(0, start + Duration::from_millis(300));
        assert_eq!(pending.next_due(quiet), Some(start + quiet));
        assert!(
            pending
                .due(start + Duration::from_millis(499), quiet)
                .is_empty()
        );
        // Another change restarts the pack's quiet period.
        pending.touch(1, start + Duration::from_millis(450));
        assert!(
            pending
                .due(start + Duration::from_millis(600), quiet)
                .is_empty()
        );
        assert_eq!(
            pending.due(start + Duration::from_millis(950), quiet),
            [0, 1]
        );
        assert_eq!(pending.next_due(quiet), None);
    }

    #[test]
    fn a_path_belongs_to_the_pack_it_is_under() {
        let dirs = [PathBuf::from("/srv/packs/a"), PathBuf::from("/srv/packs/b")];
        assert_eq!(
            pack_of(&dirs, Path::new("/srv/packs/b/rules/x.yaml")),
            Some(1)
        );
        assert_eq!(
            pack_of(&dirs, Path::new("/srv/packs/ab/rules/x.yaml")),
            None
        );
    }
}
