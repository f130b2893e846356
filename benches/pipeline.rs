//! Pipeline throughput: system events through the whole service (event row + outbox,
//! rule matching, enforcement row + outbox, publish with confirms), each event matching
//! one rule.
//!
//! `cargo bench --bench pipeline` runs it on PostgreSQL + RabbitMQ (local servers, a
//! fresh database and exchange) and on SQLite + the in-process bus. Knobs:
//! `ATTUNE_BENCH_EVENTS` (default 20000), `ATTUNE_BENCH_CONCURRENCY` (default 512),
//! `ATTUNE_BENCH_BACKENDS` (`postgres,sqlite`).

use attune_sensor::config::Settings;
use attune_sensor::service::Service;
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN_DB: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn settings(database_url: &str, mq_url: &str, exchange: &str) -> Settings {
    let pack = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/e2e_pack");
    let yaml = json!({
        "database": {"url": database_url},
        "mq": {"url": mq_url, "exchange": exchange},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": [pack]},
        "log": {"level": "warn"},
        "sensor": {"enabled": false, "reconcile_interval": 3600},
    });
    match Settings::from_yaml(&yaml.to_string()) {
        Ok(settings) => settings,
        Err(error) => panic!("bench settings: {error}"),
    }
}

async fn run(name: &str, settings: Settings, events: usize, concurrency: usize) {
    let service = match Service::start(&settings).await {
        Ok(service) => Arc::new(service),
        Err(error) => panic!("{name}: service did not start: {error}"),
    };
    // Warm up: first events pay for rule compilation and connection setup.
    for i in 0..50 {
        let _ = service
            .tree
            .system_events
            .emit("e2e.manual", json!({"branch": "main", "n": i}))
            .await;
    }
    let started = Instant::now();
    let per_task = events / concurrency;
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            let mut enforcements = 0;
            for i in 0..per_task {
                let payload = json!({"branch": "main", "task": task, "n": i});
                match service.tree.system_events.emit("e2e.manual", payload).await {
                    Ok(outcome) => enforcements += outcome.enforcement_ids.len(),
                    Err(error) => panic!("emit failed: {error}"),
                }
            }
            enforcements
        }));
    }
    let mut enforcements = 0;
    for task in tasks {
        enforcements += task.await.unwrap_or(0);
    }
    let stored = started.elapsed();
    let total = per_task * concurrency;
    loop {
        match service.store.outbox_backlog().await {
            Ok(0) => break,
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(error) => panic!("backlog: {error}"),
        }
    }
    let published = started.elapsed();
    println!(
        "{name}: {total} events, {enforcements} enforcements; stored and matched in {:.2} s = {:.0} events/s; \
         all {} messages published after {:.2} s = {:.0} events/s end to end",
        stored.as_secs_f64(),
        total as f64 / stored.as_secs_f64(),
        total + enforcements,
        published.as_secs_f64(),
        total as f64 / published.as_secs_f64(),
    );
    if let Ok(service) = Arc::try_unwrap(service) {
        service.shutdown().await;
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing useful.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let events = env_usize("ATTUNE_BENCH_EVENTS", 20_000);
    let concurrency = env_usize("ATTUNE_BENCH_CONCURRENCY", 512).max(1);
    let backends =
        std::env::var("ATTUNE_BENCH_BACKENDS").unwrap_or_else(|_| "postgres,sqlite".into());
    if backends.contains("postgres") {
        let name = format!("attune_bench_{}", uuid::Uuid::new_v4().simple());
        let mut admin = match PgConnection::connect(ADMIN_DB).await {
            Ok(admin) => admin,
            Err(error) => panic!("PostgreSQL at {ADMIN_DB} is needed for this benchmark: {error}"),
        };
        if let Err(error) = admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
        {
            panic!("create database: {error}");
        }
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let exchange = format!("attune.bench.{}", uuid::Uuid::new_v4().simple());
        run(
            "postgres+rabbitmq",
            settings(&url, AMQP, &exchange),
            events,
            concurrency,
        )
        .await;
        let _ = admin
            .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
            .await;
    }
    if backends.contains("sqlite") {
        let dir =
            std::env::temp_dir().join(format!("attune-bench-{}", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        run(
            "sqlite+in-process",
            settings(&url, "", "attune.events"),
            events,
            concurrency,
        )
        .await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
