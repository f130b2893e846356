//! Messages RabbitMQ will not take, on PostgreSQL and a real broker: a message no queue
//! is bound for is returned and parked (not confirmed and forgotten), a message a queue
//! refuses (nack) is retried and then parked, the rows behind either flow on, and
//! `attune-sensor outbox parked|retry` shows them and puts them back.

mod support {
    pub mod postgres;
    pub mod rabbitmq;
}

use attune_sensor::config::Settings;
use attune_sensor::service::Service;
use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use support::postgres::TestDatabase;
use support::rabbitmq::{TestQueue, amqp_url, require_rabbitmq, unique_exchange};

const DEADLINE: Duration = Duration::from_secs(30);
const BIN: &str = env!("CARGO_BIN_EXE_attune-sensor");

fn settings(database_url: &str, mq_url: &str, exchange: &str, extra: Value) -> Settings {
    let mut yaml = json!({
        "database": {"url": database_url},
        "mq": {"url": mq_url, "exchange": exchange},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": [PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/e2e_pack")]},
        "sensor": {"enabled": false, "reconcile_interval": 3600},
        "shutdown": {"timeout": 5},
    });
    if let (Some(base), Value::Object(extra)) = (yaml.as_object_mut(), extra) {
        for (key, value) in extra {
            match (base.get_mut(&key), value) {
                (Some(Value::Object(section)), Value::Object(more)) => section.extend(more),
                (_, value) => {
                    base.insert(key, value);
                }
            }
        }
    }
    Settings::from_yaml(&yaml.to_string()).expect("test settings are valid")
}

async fn emit(service: &Service, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let outcome = service
            .tree
            .system_events
            .emit("e2e.manual", json!({"branch": "main", "n": i}))
            .await
            .expect("stored");
        ids.push(outcome.event_id);
    }
    ids
}

async fn wait_parked(service: &Service, n: u64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let parked = service.store.parked_count().await.expect("count");
        if parked >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {parked} of {n} rows parked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn event_ids_in(queue: &mut TestQueue) -> Vec<i64> {
    queue
        .received_now()
        .iter()
        .filter(|m| m.routing_key == "event.created")
        .filter_map(|m| serde_json::from_str::<Value>(&m.body).ok())
        .filter_map(|envelope| envelope["payload"]["event_id"].as_i64())
        .collect()
}

/// Runs the binary against the test database and returns its standard output.
fn cli(database_url: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(BIN)
        .args(args)
        .env("ATTUNE__DATABASE__URL", database_url)
        .env("ATTUNE__PACKS__AUTOLOAD", "")
        .output()
        .expect("run attune-sensor");
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn an_unroutable_message_is_parked_and_retried_once_a_queue_exists() {
    let amqp = require_rabbitmq().await;
    let db = TestDatabase::create().await;
    let exchange = unique_exchange();
    // The executor's queue exists; nobody has bound one for events yet.
    let mut enforcements = TestQueue::bind(&exchange, "enforcement.#").await;
    let service = Service::start(&settings(&db.url, &amqp, &exchange, json!({})))
        .await
        .expect("service starts");
    let event_ids = emit(&service, 3).await;
    enforcements.wait_for(3, DEADLINE).await;
    wait_parked(&service, 3).await;
    // The enforcements' rows are marked published once confirmed, just after they arrive.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while service.store.outbox_backlog().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "backlog never emptied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let listed = cli(&db.url, &["outbox", "parked"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(listed.contains("EventCreated"), "{listed}");
    assert!(
        listed.contains("no queue is bound") && listed.contains("event.created"),
        "{listed}"
    );
    let status =
        attune_sensor::client::AdminClient::new(&format!("http://{}", service.admin_addr), None)
            .get("/status")
            .await
            .expect("status");
    assert_eq!(status["outbox"]["parked"], 3, "{status}");

    let mut events = TestQueue::bind(&exchange, "event.#").await;
    let said = cli(&db.url, &["outbox", "retry", "--all"]);
    assert!(said.contains("3 parked rows put back"), "{said}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while event_ids_in(&mut events).len() < 3 {
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "retried rows never arrived: {:?} arrived, {} parked again ({}), backlog {}, publisher error {:?}",
                event_ids_in(&mut events),
                service.store.parked_count().await.unwrap(),
                cli(&db.url, &["outbox", "parked"]),
                service.store.outbox_backlog().await.unwrap(),
                service.tree.outbox_health.last_error()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut delivered = event_ids_in(&mut events);
    delivered.sort_unstable();
    assert_eq!(delivered, event_ids);
    assert_eq!(service.store.parked_count().await.unwrap(), 0);
    assert_eq!(
        cli(&db.url, &["outbox", "parked"]),
        "no parked outbox rows\n"
    );

    service.shutdown().await;
    events.finish().await;
    enforcements.finish().await;
}

#[tokio::test]
async fn a_message_the_broker_nacks_is_retried_then_parked_while_later_rows_flow() {
    let amqp = require_rabbitmq().await;
    let db = TestDatabase::create().await;
    let exchange = unique_exchange();
    let mut enforcements = TestQueue::bind(&exchange, "enforcement.#").await;
    // A full queue that rejects publishes makes the broker nack what is routed to it.
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let full = format!("{exchange}.full");
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(0));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    channel
        .queue_declare(
            full.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .expect("declare the full queue");
    channel
        .queue_bind(
            full.as_str().into(),
            exchange.as_str().into(),
            "event.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the full queue");

    let extra = json!({"outbox": {"max_attempts": 3}});
    let service = Service::start(&settings(&db.url, &amqp, &exchange, extra))
        .await
        .expect("service starts");
    let event_ids = emit(&service, 2).await;
    enforcements.wait_for(2, DEADLINE).await;
    wait_parked(&service, 2).await;
    let parked = service.store.parked_outbox(10).await.unwrap();
    assert_eq!(parked.len(), 2);
    for row in &parked {
        assert_eq!(row.attempts, 3, "{row:?}");
        let error = row.last_error.as_deref().unwrap_or_default();
        assert!(error.contains("negative acknowledgement"), "{error}");
    }
    // Later rows are not held up by the parked ones (and the new event's row is refused
    // and parked in turn).
    emit(&service, 1).await;
    enforcements.wait_for(3, DEADLINE).await;
    wait_parked(&service, 3).await;

    channel
        .queue_delete(full.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete the full queue");
    let mut events = TestQueue::bind(&exchange, "event.#").await;
    let first = parked[0].id.to_string();
    let said = cli(&db.url, &["outbox", "retry", &first]);
    assert!(said.contains("1 parked row put back"), "{said}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !event_ids_in(&mut events).contains(&event_ids[0]) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retried row never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(service.store.parked_count().await.unwrap(), 2);

    service.shutdown().await;
    events.finish().await;
    enforcements.finish().await;
}
