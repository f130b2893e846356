#![allow(dead_code)]
//! Helpers for the built-in trigger tests: packs written on the fly (so dates can be in the
//! future and configs vary per test), services on a given database, and waiting for the
//! events of a trigger.

use std::path::{Path, PathBuf};
use std::time::Duration;

use attune_actors::domain::Event;
use attune_sensor::config::Settings;
use attune_sensor::service::Service;
use serde_json::{Value, json};

/// Writes a pack `name` with one trigger `hit`, the given sensor files (name, YAML) and
/// rule files under `root/name`, and returns its directory.
pub fn write_pack(
    root: &Path,
    name: &str,
    sensors: &[(&str, String)],
    rules: &[(&str, &str)],
) -> PathBuf {
    let dir = root.join(name);
    for sub in ["triggers", "sensors", "rules"] {
        std::fs::create_dir_all(dir.join(sub)).expect("create pack dirs");
    }
    std::fs::write(dir.join("pack.yaml"), format!("ref: {name}\n")).expect("write pack.yaml");
    std::fs::write(dir.join("triggers/hit.yaml"), "ref: hit\n").expect("write trigger");
    for (file, text) in sensors {
        std::fs::write(dir.join("sensors").join(format!("{file}.yaml")), text)
            .expect("write sensor");
    }
    for (file, text) in rules {
        std::fs::write(dir.join("rules").join(format!("{file}.yaml")), text).expect("write rule");
    }
    dir
}

/// Test settings: free ports, fast restarts, no automatic reconcile.
pub fn settings(database_url: &str, packs: &[PathBuf]) -> Settings {
    let yaml = json!({
        "database": {"url": database_url},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": packs},
        "log": {"level": "warn"},
        "sensor": {"reconcile_interval": 3600, "restart_backoff_initial": 0.1, "restart_backoff_max": 0.3, "max_restart_attempts": 2},
        "shutdown": {"timeout": 3},
    });
    Settings::from_yaml(&yaml.to_string()).expect("test settings are valid")
}

pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("attune.db").display())
}

pub async fn start(settings: &Settings) -> Service {
    Service::start(settings)
        .await
        .unwrap_or_else(|e| panic!("service did not start: {e}"))
}

pub async fn shutdown(service: Service) {
    tokio::time::timeout(Duration::from_secs(20), service.shutdown())
        .await
        .expect("service shut down within 20 s");
}

/// The events of a trigger, oldest first.
pub async fn events(service: &Service, trigger_ref: &str) -> Vec<Event> {
    let mut events = service
        .store
        .recent_events(Some(trigger_ref), 1000)
        .await
        .expect("read events");
    events.reverse();
    events
}

/// Waits until the trigger has at least `n` events; returns them oldest first.
pub async fn wait_events(
    service: &Service,
    trigger_ref: &str,
    n: usize,
    within: Duration,
) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let events = events(service, trigger_ref).await;
        if events.len() >= n {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {n} events of {trigger_ref}; have {}: {:?}",
            events.len(),
            events.iter().map(|e| &e.payload).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The admin API's status entry of a sensor.
pub async fn sensor_status(service: &Service, sensor_ref: &str) -> Value {
    let status: Value = reqwest::get(format!("http://{}/status", service.admin_addr))
        .await
        .expect("GET /status")
        .json()
        .await
        .expect("status is JSON");
    status["sensors"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["sensor_ref"] == sensor_ref).cloned())
        .unwrap_or_else(|| panic!("no status for {sensor_ref}: {status}"))
}

/// Waits until the sensor's status satisfies `check`; returns it.
pub async fn wait_status(
    service: &Service,
    sensor_ref: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let status = sensor_status(service, sensor_ref).await;
        if check(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?}; sensor status: {status}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Runs one async check `fn(database_url, root)` as two tests, on SQLite and on a fresh
/// PostgreSQL database: `on_both_backends!(check, sqlite_name, postgres_name);`.
#[macro_export]
macro_rules! on_both_backends {
    ($check:ident, $sqlite:ident, $postgres:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            let dir = tempfile::tempdir().expect("temp dir");
            $check(&sqlite_url(dir.path()), dir.path()).await;
        }

        #[tokio::test]
        async fn $postgres() {
            let db = support::postgres::TestDatabase::create().await;
            let dir = tempfile::tempdir().expect("temp dir");
            $check(&db.url, dir.path()).await;
        }
    };
}
