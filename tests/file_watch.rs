//! File-watch sensors on a real temporary directory: create, a burst of writes (one event
//! after the debounce), rename and remove; a pattern and an event filter; a path that does
//! not exist is a sensor failure with a clear error.

mod support {
    pub mod postgres;
    pub mod triggers;
}

use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use support::triggers::*;

const DEADLINE: Duration = Duration::from_secs(15);

fn watcher(name: &str, path: &Path, extra: &str) -> (&'static str, String) {
    let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let path = serde_json::to_string(&path.display().to_string()).expect("path as JSON");
    (
        name,
        format!(
            "ref: {name}\nruntime: builtin\nentrypoint: file_watch\ntrigger: files.hit\nconfig:\n  path: {path}\n  debounce_ms: 300\n{extra}"
        ),
    )
}

/// The events of one sensor, oldest first.
async fn sensor_events(
    service: &attune_sensor::service::Service,
    sensor: &str,
    n: usize,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let found: Vec<Value> = events(service, "files.hit")
            .await
            .into_iter()
            .map(|e| e.payload)
            .filter(|p| p["sensor_ref"] == sensor)
            .collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {n} events of {sensor}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test]
async fn file_changes_become_debounced_events_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = sqlite_url(dir.path());
    file_changes_become_debounced_events(dir.path(), &url).await;
}

#[tokio::test]
async fn file_changes_become_debounced_events_on_postgres() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = support::postgres::TestDatabase::create().await;
    file_changes_become_debounced_events(dir.path(), &db.url).await;
}

async fn file_changes_become_debounced_events(root: &Path, database_url: &str) {
    let dir = tempfile::tempdir_in(root).expect("temp dir");
    let watched = dir.path().join("watched");
    std::fs::create_dir(&watched).expect("create watched dir");
    let watched = std::fs::canonicalize(&watched).expect("canonical");
    let packs = dir.path().join("packs");
    let pack = write_pack(
        &packs,
        "files",
        &[
            watcher(
                "all",
                &watched,
                "  recursive: true\n  events: [created, modified, removed, renamed]\n",
            ),
            watcher(
                "csv",
                &watched,
                "  events: [created]\n  pattern: \"*.csv\"\n",
            ),
            watcher("missing", &dir.path().join("does-not-exist"), ""),
        ],
        &[],
    );
    let service = start(&settings(database_url, &[pack])).await;
    wait_status(&service, "files.all", DEADLINE, |s| s["state"] == "running").await;
    wait_status(&service, "files.csv", DEADLINE, |s| s["state"] == "running").await;
    // The watch is set up by the running driver; a probe file shows when it is.
    let probe = watched.join("probe.csv");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        std::fs::write(&probe, "p").expect("write probe");
        if tokio::time::timeout(
            Duration::from_millis(500),
            sensor_events(&service, "files.csv", 1),
        )
        .await
        .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher never saw the probe"
        );
    }
    std::fs::remove_file(&probe).expect("remove probe");
    let before = sensor_events(&service, "files.all", 2).await;
    let probe_events = before.len();
    assert!(
        before
            .iter()
            .any(|e| e["kind"] == "removed" && e["path"] == text(&probe)),
        "{before:?}"
    );

    let a = watched.join("a.txt");
    std::fs::write(&a, "1").expect("create");
    let got = sensor_events(&service, "files.all", probe_events + 1).await;
    assert_eq!(got[probe_events]["kind"], "created", "{got:?}");
    assert_eq!(got[probe_events]["path"], text(&a));
    assert!(got[probe_events]["occurred_at"].is_string());

    // Ten writes 10 ms apart, within the 300 ms window: one event.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&a)
        .expect("open");
    for i in 0..10 {
        writeln!(file, "line {i}").expect("write");
        file.flush().expect("flush");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(file);
    let got = sensor_events(&service, "files.all", probe_events + 2).await;
    assert_eq!(got[probe_events + 1]["kind"], "modified", "{got:?}");

    let b = watched.join("b.txt");
    std::fs::rename(&a, &b).expect("rename");
    let got = sensor_events(&service, "files.all", probe_events + 3).await;
    let renamed = &got[probe_events + 2];
    assert_eq!(renamed["kind"], "renamed", "{got:?}");
    assert_eq!(renamed["from"], text(&a));
    assert_eq!(renamed["to"], text(&b));
    assert_eq!(renamed["path"], text(&b));

    std::fs::remove_file(&b).expect("remove");
    let got = sensor_events(&service, "files.all", probe_events + 4).await;
    assert_eq!(got[probe_events + 3]["kind"], "removed", "{got:?}");
    assert_eq!(got[probe_events + 3]["path"], text(&b));
    // The burst gave exactly one modified event: nothing else came in between.
    assert_eq!(got.len(), probe_events + 4, "{got:?}");

    // The csv sensor saw only created *.csv files (the probes), not a.txt.
    let csv = sensor_events(&service, "files.csv", 1).await;
    assert!(
        csv.iter()
            .all(|e| e["kind"] == "created"
                && e["path"].as_str().is_some_and(|p| p.ends_with(".csv"))),
        "{csv:?}"
    );

    let status = wait_status(&service, "files.missing", DEADLINE, |s| {
        s["last_error"].is_string()
    })
    .await;
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("config.path")
            && error.contains("does-not-exist")
            && error.contains("cannot be watched"),
        "{error}"
    );
    shutdown(service).await;
}

/// A flood of files with a tiny notification queue: notifications are dropped, the
/// watcher rescans, and still every file is reported created exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_the_queue_is_rescanned_and_each_file_reported_once() {
    const FILES: usize = 300;
    let dir = tempfile::tempdir().expect("temp dir");
    let watched = dir.path().join("watched");
    std::fs::create_dir(&watched).expect("create watched dir");
    let watched = std::fs::canonicalize(&watched).expect("canonical");
    let pack = write_pack(
        &dir.path().join("packs"),
        "files",
        &[watcher(
            "flood",
            &watched,
            "  events: [created]\n  max_queued: 16\n",
        )],
        &[],
    );
    let service = start(&settings(&sqlite_url(dir.path()), &[pack])).await;
    wait_status(&service, "files.flood", DEADLINE, |s| {
        s["state"] == "running"
    })
    .await;
    // A new probe file each time: the watch is on once one is reported created.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    for attempt in 0.. {
        std::fs::write(watched.join(format!("probe{attempt}")), "p").expect("write probe");
        if tokio::time::timeout(
            Duration::from_millis(500),
            sensor_events(&service, "files.flood", 1),
        )
        .await
        .is_ok()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never watching");
    }

    // Paced so that the watcher is busy storing events while notifications pile up.
    let writer = {
        let watched = watched.clone();
        std::thread::spawn(move || {
            for i in 0..FILES {
                let mut file =
                    std::fs::File::create(watched.join(format!("f{i:03}"))).expect("create");
                file.write_all(b"x").expect("write");
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        })
    };
    writer.join().expect("writer");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = sensor_events(&service, "files.flood", 1).await;
        let files = found
            .iter()
            .filter(|e| e["path"].as_str().is_some_and(|p| !p.contains("/probe")))
            .count();
        if files >= FILES {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{files} of {FILES} files reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A duplicate would come within a debounce window or two; give it ten.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let found = sensor_events(&service, "files.flood", 1).await;
    let mut paths: Vec<&str> = found
        .iter()
        .filter_map(|e| e["path"].as_str())
        .filter(|p| !p.contains("/probe"))
        .collect();
    let reported = paths.len();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), FILES, "every file once");
    assert_eq!(reported, FILES, "no file twice");
    assert!(
        found.iter().any(|e| e["rescan"] == true),
        "the queue of 16 overflowed and a rescan reported files"
    );
    service.shutdown().await;
}
