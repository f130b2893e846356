//! What the benchmarks share: where the services are, the settings of a service under
//! test, and the durable queue bound to its exchange, as the executor's queue is.

#![allow(dead_code)] // Each benchmark uses part of it.

pub mod cpu;

use std::path::PathBuf;

use attune_sensor::config::Settings;
use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::json;

pub const ADMIN_DB: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Runs a benchmark as the service's own `main` runs the service: glibc's malloc arenas
/// capped before any thread starts, then a multi-threaded runtime.
pub fn run(bench: impl std::future::Future<Output = ()>) {
    attune_sensor::malloc_arenas::limit_malloc_arenas();
    let runtime = tokio::runtime::Runtime::new().expect("the async runtime");
    runtime.block_on(bench);
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A service on `database_url` and the broker at `mq_url` (empty: the in-process bus),
/// with the end-to-end test pack, sensors off and quiet logs.
pub fn settings(database_url: &str, mq_url: &str, exchange: &str) -> Settings {
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

/// The durable queue bound to the bench exchange, as the executor's queue is.
pub struct BoundQueue {
    pub channel: Channel,
    pub name: String,
    _connection: Connection,
}

impl BoundQueue {
    /// Declares `name` (durable) bound to `exchange` for `pattern` (`#`: everything).
    pub async fn declare(exchange: &str, name: &str, pattern: &str) -> Self {
        let connection = Connection::connect(AMQP, ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ at {AMQP} is needed for this benchmark: {e}"));
        let channel = connection.create_channel().await.expect("channel");
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare exchange");
        channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare queue");
        channel
            .queue_bind(
                name.into(),
                exchange.into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind queue");
        Self {
            channel,
            name: name.to_owned(),
            _connection: connection,
        }
    }

    /// Messages in the queue now.
    pub async fn count(&self) -> u32 {
        self.channel
            .queue_declare(
                self.name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare")
            .message_count()
    }

    pub async fn purge(&self) {
        self.channel
            .queue_purge(self.name.as_str().into(), QueuePurgeOptions::default())
            .await
            .expect("purge");
    }

    pub async fn delete(&self) {
        let _ = self
            .channel
            .queue_delete(self.name.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}

/// The service's commit histograms, read from `GET /metrics`: `(sum, count)` of each.
#[derive(Default, Clone, Copy)]
pub struct Commits {
    events: (f64, f64),
    event_batches: (f64, f64),
    enforcements: (f64, f64),
}

impl Commits {
    pub async fn scrape(service_url: &str) -> Self {
        let text = match reqwest::get(format!("{service_url}/metrics")).await {
            Ok(answer) => answer.text().await.unwrap_or_default(),
            Err(error) => panic!("GET /metrics: {error}"),
        };
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(0.0)
        };
        let pair = |histogram: &str| {
            (
                value(&format!("{histogram}_sum")),
                value(&format!("{histogram}_count")),
            )
        };
        Self {
            events: pair("attune_sensor_event_commit_seconds"),
            event_batches: pair("attune_sensor_event_batch_size"),
            enforcements: pair("attune_sensor_enforcement_commit_seconds"),
        }
    }

    /// What happened between `before` and `self`, as one line.
    pub fn since(&self, before: &Self) -> String {
        let mean = |now: (f64, f64), then: (f64, f64)| {
            let n = now.1 - then.1;
            ((now.0 - then.0) / n.max(1.0), n)
        };
        let (event_commit, batches) = mean(self.events, before.events);
        let (batch_size, _) = mean(self.event_batches, before.event_batches);
        let (enforcement_commit, enforcement_batches) =
            mean(self.enforcements, before.enforcements);
        format!(
            "{batches:.0} event batches (mean {batch_size:.1} events, commit mean {:.1} ms), \
             {enforcement_batches:.0} enforcement batches (commit mean {:.1} ms)",
            event_commit * 1000.0,
            enforcement_commit * 1000.0,
        )
    }
}
