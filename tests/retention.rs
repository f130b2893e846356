//! Retention under load, on both backends: a prune of 100,000 old events (and their
//! 100,000 outbox rows) runs in batches while the pipeline keeps storing and matching new
//! events, none of which is removed; then `attune-sensor prune --dry-run` and `prune` on
//! the command line.

mod support {
    pub mod postgres;
    pub mod service;
}

use std::time::{Duration, Instant};

use attune_actors::domain::NewEvent;
use attune_sensor::config::Settings;
use attune_sensor::retention::{RetentionPolicy, prune_all};
use attune_sensor::service::Service;
use serde_json::json;
use support::postgres::TestDatabase;
use support::service::{TempDatabase, fixture};

const OLD: usize = 100_000;

fn settings(database_url: &str) -> Settings {
    let yaml = json!({
        "database": {"url": database_url},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": [fixture("timer")]},
        "log": {"level": "warn"},
        "sensor": {"enabled": false, "reconcile_interval": 3600},
        "retention": {"interval": 3600},
        "shutdown": {"timeout": 3},
    });
    Settings::from_yaml(&yaml.to_string()).expect("settings")
}

async fn prune_while_the_pipeline_runs(database_url: &str) {
    let service = Service::start(&settings(database_url))
        .await
        .expect("service starts");
    let store = service.store.clone();
    let started = Instant::now();
    for chunk in 0..OLD / 1000 {
        let batch: Vec<NewEvent> = (0..1000)
            .map(|n| NewEvent {
                trigger: None,
                trigger_ref: "timer.manual".into(),
                config: json!({}),
                payload: json!({"old": chunk * 1000 + n}),
                source: None,
                source_ref: None,
                idempotency_key: None,
                dedup_key: None,
                traceparent: None,
                lease: None,
            })
            .collect();
        store.create_events(batch).await.expect("old events");
    }
    let last = store.last_event_id().await.expect("last id");
    store
        .set_matched_through(&service.identity.id, last)
        .await
        .expect("matched");
    // The in-process bus publishes them; wait until the outbox is empty.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while store.outbox_backlog().await.expect("backlog") > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "old rows never published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{OLD} old events stored and published in {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let age = Duration::from_secs(30 * 86_400);
    let policy = RetentionPolicy {
        outbox: Some(age),
        events: Some(age),
        keys: age,
        batch: 1000,
        interval: Duration::from_secs(3600),
        pause: Duration::from_millis(10),
    };
    let now = cut + chrono::Duration::from_std(age).expect("age");
    // The latency of an event with no prune running, to compare with.
    let mut idle = Vec::new();
    for n in 0..50 {
        let sent = Instant::now();
        service
            .tree
            .system_events
            .emit("timer.manual", json!({"level": "high", "idle": n}))
            .await
            .expect("stored");
        idle.push(sent.elapsed());
    }
    idle.sort_unstable();
    let pruning = {
        let store = store.clone();
        let policy = policy.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let removed = prune_all(store.as_ref(), &policy, now).await;
            (removed, began.elapsed())
        })
    };
    // Events keep flowing, each stored and matched, while the prune runs.
    let mut new_ids = Vec::new();
    let mut during = Vec::new();
    while !pruning.is_finished() || new_ids.len() < 10 {
        let sent = Instant::now();
        let outcome = service
            .tree
            .system_events
            .emit(
                "timer.manual",
                json!({"level": "high", "new": new_ids.len()}),
            )
            .await
            .expect("stored and matched during the prune");
        during.push(sent.elapsed());
        assert_eq!(outcome.enforcement_ids.len(), 1);
        new_ids.push(outcome.event_id);
    }
    let (removed, took) = pruning.await.expect("prune task");
    let removed = removed.expect("prune");
    during.sort_unstable();
    let slowest = during.last().copied().unwrap_or_default();
    println!(
        "pruned {removed:?} in {took:?}; {} events stored meanwhile: p50 {:?}, max {slowest:?} \
         (idle: p50 {:?}, max {:?})",
        new_ids.len(),
        during[during.len() / 2],
        idle[idle.len() / 2],
        idle[idle.len() - 1],
    );
    assert_eq!(removed.events, OLD as u64);
    assert_eq!(removed.outbox, OLD as u64);
    assert!(
        slowest < Duration::from_secs(2),
        "an event took {slowest:?} during the prune"
    );
    for id in &new_ids {
        assert!(
            store.get_event(*id).await.expect("read").is_some(),
            "event {id} stored during the prune was removed"
        );
    }
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_of_100000_rows_leaves_the_pipeline_running_on_sqlite() {
    let db = TempDatabase::new();
    prune_while_the_pipeline_runs(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_of_100000_rows_leaves_the_pipeline_running_on_postgres() {
    let db = TestDatabase::create().await;
    prune_while_the_pipeline_runs(&db.url).await;
}

#[tokio::test]
async fn the_prune_command_reports_what_it_would_remove_and_removes_it() {
    let db = TempDatabase::new();
    let service = Service::start(&settings(&db.url)).await.expect("starts");
    service
        .tree
        .system_events
        .emit("timer.manual", json!({"level": "high"}))
        .await
        .expect("event");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while service.store.outbox_backlog().await.expect("backlog") > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service.shutdown().await;
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_attune-sensor"))
            .args(args)
            .env("ATTUNE__DATABASE__URL", &db.url)
            .env("ATTUNE__PACKS__AUTOLOAD", "")
            // Every published row is past a one-second window by now.
            .env("ATTUNE__RETENTION__OUTBOX", "0.001")
            .env("ATTUNE__RETENTION__EVENTS", "0.001")
            .env("ATTUNE__DEDUP__WINDOW", "0.001")
            .output()
            .expect("run");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    std::thread::sleep(Duration::from_millis(50));
    let dry = run(&["prune", "--dry-run"]);
    assert!(dry.contains("outbox: would remove 2 rows"), "{dry}");
    assert!(dry.contains("event: would remove 1 rows"), "{dry}");
    assert!(dry.contains("enforcement: would remove 1 rows"), "{dry}");
    let done = run(&["prune"]);
    assert!(done.contains("outbox: removed 2 rows"), "{done}");
    assert!(done.contains("event: removed 1 rows"), "{done}");
    let again = run(&["prune", "--dry-run"]);
    assert!(again.contains("outbox: would remove 0 rows"), "{again}");
}
