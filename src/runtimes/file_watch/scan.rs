//! What the watched tree holds, as far as the watcher has reported it: the baseline that
//! a rescan compares with after notifications were lost (the bounded queue overflowed,
//! or the kernel's own queue did). Every function here touches the file system and must
//! run on a blocking thread (`spawn_blocking`), never on the async workers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::ChangeKind;

/// Enough of a file's metadata to tell that it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    dir: bool,
}

/// Every path under the root (the root itself excluded, unless it is a file) with its
/// stamp.
pub type Snapshot = HashMap<PathBuf, Stamp>;

/// The stamp of `path`, without following a symbolic link; `None` when it is gone.
pub fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = std::fs::symlink_metadata(path).ok()?;
    Some(Stamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        dir: metadata.is_dir(),
    })
}

/// The tree under `root`: its entries, and theirs too when `recursive` (symbolic links
/// are listed, not followed). Entries that cannot be read are left out. A root that is a
/// file is its own snapshot.
pub fn scan(root: &Path, recursive: bool) -> Snapshot {
    let mut snapshot = Snapshot::new();
    if let Some(stamp) = stamp(root).filter(|s| !s.dir) {
        snapshot.insert(root.to_path_buf(), stamp);
        return snapshot;
    }
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(stamp) = stamp(&path) else { continue };
            if stamp.dir && recursive {
                dirs.push(path.clone());
            }
            snapshot.insert(path, stamp);
        }
    }
    snapshot
}

/// What changed from `before` to `after`, by path: new paths were created, missing ones
/// removed, and files whose size or modification time moved were modified.
pub fn diff(before: &Snapshot, after: &Snapshot) -> Vec<(PathBuf, ChangeKind)> {
    let mut changes: Vec<(PathBuf, ChangeKind)> = Vec::new();
    for (path, stamp) in after {
        match before.get(path) {
            None => changes.push((path.clone(), ChangeKind::Created)),
            Some(old) if old != stamp && !stamp.dir => {
                changes.push((path.clone(), ChangeKind::Modified));
            }
            Some(_) => {}
        }
    }
    for path in before.keys().filter(|p| !after.contains_key(*p)) {
        changes.push((path.clone(), ChangeKind::Removed));
    }
    changes.sort();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rescan_reports_what_changed_since_the_baseline() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::write(root.join("kept"), "1").unwrap();
        std::fs::write(root.join("changed"), "1").unwrap();
        std::fs::write(root.join("gone"), "1").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/deep"), "1").unwrap();
        let before = scan(root, true);
        assert_eq!(before.len(), 5);
        assert_eq!(
            scan(root, false).len(),
            4,
            "not recursive: sub/deep is not listed"
        );

        std::fs::write(root.join("changed"), "longer").unwrap();
        std::fs::remove_file(root.join("gone")).unwrap();
        std::fs::write(root.join("new"), "1").unwrap();
        std::fs::write(root.join("sub/deeper"), "1").unwrap();
        let after = scan(root, true);
        let changes = diff(&before, &after);
        assert_eq!(
            changes,
            vec![
                (root.join("changed"), ChangeKind::Modified),
                (root.join("gone"), ChangeKind::Removed),
                (root.join("new"), ChangeKind::Created),
                (root.join("sub/deeper"), ChangeKind::Created),
            ]
        );
        assert!(diff(&after, &after).is_empty());
    }
}
