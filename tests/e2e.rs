//! End to end: a pack is loaded, the service runs in-process, the interval timer fires,
//! event and enforcement rows exist, and `EventCreated` / `EnforcementCreated` arrive on
//! the bus; on the embedded default (SQLite + in-process bus) and on PostgreSQL +
//! RabbitMQ, including a broker outage in the middle.

mod support {
    pub mod postgres;
    pub mod proxy;
    pub mod rabbitmq;
}

use attune_sensor::config::Settings;
use attune_sensor::service::Service;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use support::postgres::TestDatabase;
use support::proxy::TcpProxy;
use support::rabbitmq::{TestQueue, amqp_addr, amqp_url_via, require_rabbitmq, unique_exchange};

const DEADLINE: Duration = Duration::from_secs(20);

fn pack_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/e2e_pack")
}

fn settings(database_url: &str, mq_url: &str, exchange: &str) -> Settings {
    let yaml = json!({
        "database": {"url": database_url},
        "mq": {"url": mq_url, "exchange": exchange},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": [pack_dir()]},
        "sensor": {"reconcile_interval": 3600, "restart_backoff_initial": 0.05},
        "shutdown": {"timeout": 5},
    });
    Settings::from_yaml(&yaml.to_string()).expect("test settings are valid")
}

fn body(message: &str) -> Value {
    serde_json::from_str(message).expect("message bodies are JSON envelopes")
}

/// Checks an `EventCreated` envelope from the timer and returns its event id.
fn check_timer_event(envelope: &Value) -> i64 {
    assert_eq!(envelope["message_type"], "EventCreated", "{envelope}");
    assert!(
        envelope["message_id"]
            .as_str()
            .is_some_and(|id| id.len() == 36),
        "{envelope}"
    );
    assert!(envelope["timestamp"].is_string(), "{envelope}");
    assert_eq!(envelope["version"], "1.0");
    let payload = &envelope["payload"];
    assert_eq!(payload["trigger_ref"], "e2e.tick");
    assert!(payload["trigger_id"].is_i64());
    assert_eq!(payload["sensor_ref"], "e2e.every_second");
    assert!(payload["sensor_id"].is_i64());
    assert_eq!(payload["payload"]["type"], "interval");
    assert_eq!(payload["payload"]["interval_seconds"], 1);
    assert_eq!(payload["payload"]["sensor_ref"], "e2e.every_second");
    assert!(
        payload["payload"]["execution_count"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    );
    assert_eq!(payload["config"]["trigger"]["ref"], "e2e.tick");
    assert_eq!(payload["config"]["sensor"]["config"]["interval"], 1);
    payload["event_id"].as_i64().expect("event_id")
}

fn check_enforcement(envelope: &Value, event_id: i64) {
    assert_eq!(envelope["message_type"], "EnforcementCreated", "{envelope}");
    let payload = &envelope["payload"];
    assert_eq!(payload["event_id"], event_id);
    assert_eq!(payload["rule_ref"], "e2e.on_tick");
    assert!(payload["rule_id"].is_i64());
    assert!(payload["enforcement_id"].is_i64());
    assert_eq!(payload["trigger_ref"], "e2e.tick");
    assert_eq!(payload["payload"]["type"], "interval");
}

/// The rows behind the first timer event: the event with its snapshot, and its
/// enforcement with the matched conditions.
async fn check_rows(service: &Service, event_id: i64) {
    let event = service
        .store
        .get_event(event_id)
        .await
        .expect("read event")
        .expect("event row exists");
    assert_eq!(event.source_ref.as_deref(), Some("e2e.every_second"));
    assert_eq!(event.config["sensor"]["ref"], "e2e.every_second");
    let enforcements = service
        .store
        .recent_enforcements(Some("e2e.on_tick"), 100)
        .await
        .expect("read enforcements");
    let enforcement = enforcements
        .iter()
        .find(|e| e.event == event_id)
        .expect("an enforcement row for the event");
    assert_eq!(enforcement.status, "created");
    assert_eq!(enforcement.condition, "all");
    assert_eq!(enforcement.conditions[0]["field"], "payload.type");
}

#[tokio::test]
async fn timer_drives_the_pipeline_on_the_embedded_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("data/attune.db").display());
    let service = Service::start(&settings(&url, "", "attune.events"))
        .await
        .expect("service starts");
    let bus = service
        .in_process_bus
        .clone()
        .expect("embedded default uses the in-process bus");
    let mut events = bus.subscribe("event.created");
    let mut enforcements = bus.subscribe("enforcement.#");

    let event = tokio::time::timeout(DEADLINE, events.recv())
        .await
        .expect("the timer fires within the deadline")
        .expect("bus open");
    assert_eq!(event.routing_key, "event.created");
    assert_eq!(event.message_type, "EventCreated");
    let envelope = body(&event.body);
    assert_eq!(envelope["message_id"], event.message_id.to_string());
    let event_id = check_timer_event(&envelope);

    let enforcement = tokio::time::timeout(DEADLINE, enforcements.recv())
        .await
        .expect("an enforcement follows")
        .expect("bus open");
    assert_eq!(enforcement.routing_key, "enforcement.created");
    check_enforcement(&body(&enforcement.body), event_id);
    check_rows(&service, event_id).await;

    let report = service.shutdown().await;
    assert!(report.outbox_drained);
}

#[tokio::test]
async fn timer_drives_the_pipeline_on_postgres_and_rabbitmq() {
    let amqp = require_rabbitmq().await;
    let db = TestDatabase::create().await;
    let exchange = unique_exchange();
    let mut queue = TestQueue::bind(&exchange, "#").await;
    let service = Service::start(&settings(&db.url, &amqp, &exchange))
        .await
        .expect("service starts");

    let received = queue.wait_for(2, DEADLINE).await.to_vec();
    let event = received
        .iter()
        .find(|m| m.routing_key == "event.created")
        .expect("an EventCreated message");
    assert_eq!(event.message_type.as_deref(), Some("EventCreated"));
    assert_eq!(event.delivery_mode, Some(2), "persistent delivery");
    let event_id = check_timer_event(&body(&event.body));
    let received = queue.wait_for(2, DEADLINE).await.to_vec();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let enforcement = loop {
        let found = queue
            .received_now()
            .iter()
            .find(|m| {
                m.routing_key == "enforcement.created"
                    && body(&m.body)["payload"]["event_id"] == event_id
            })
            .cloned();
        if let Some(found) = found {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no enforcement for event {event_id}: {received:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        enforcement.message_type.as_deref(),
        Some("EnforcementCreated")
    );
    check_enforcement(&body(&enforcement.body), event_id);
    check_rows(&service, event_id).await;

    let report = service.shutdown().await;
    assert!(report.outbox_drained);
    queue.finish().await;
}

/// Waits until every id in `event_ids` has arrived as an `EventCreated` and every id in
/// `enforcement_ids` as an `EnforcementCreated` (duplicates allowed: at-least-once).
async fn wait_for_all(queue: &mut TestQueue, event_ids: &[i64], enforcement_ids: &[i64]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut events = HashSet::new();
        let mut enforcements = HashSet::new();
        for message in queue.received_now() {
            let envelope = body(&message.body);
            match message.routing_key.as_str() {
                "event.created" => events.insert(envelope["payload"]["event_id"].as_i64()),
                "enforcement.created" => {
                    enforcements.insert(envelope["payload"]["enforcement_id"].as_i64())
                }
                _ => false,
            };
        }
        let missing_events = event_ids
            .iter()
            .filter(|id| !events.contains(&Some(**id)))
            .count();
        let missing_enforcements = enforcement_ids
            .iter()
            .filter(|id| !enforcements.contains(&Some(**id)))
            .count();
        if missing_events == 0 && missing_enforcements == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing_events} EventCreated and {missing_enforcements} EnforcementCreated never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn emit_batch(service: &Service, from: usize, count: usize) -> (Vec<i64>, Vec<i64>) {
    let mut event_ids = Vec::new();
    let mut enforcement_ids = Vec::new();
    for i in from..from + count {
        let outcome = service
            .tree
            .system_events
            .emit("e2e.manual", json!({"branch": "main", "n": i}))
            .await
            .expect("events are stored while the broker is away");
        assert_eq!(outcome.enforcement_ids.len(), 1);
        event_ids.push(outcome.event_id);
        enforcement_ids.extend(outcome.enforcement_ids);
    }
    (event_ids, enforcement_ids)
}

async fn wait_until_ready(service: &Service, ready: bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while service.publisher.is_connected() != ready {
        assert!(
            tokio::time::Instant::now() < deadline,
            "broker connected never became {ready}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn broker_outage_loses_nothing() {
    require_rabbitmq().await;
    let db = TestDatabase::create().await;
    let exchange = unique_exchange();
    let mut queue = TestQueue::bind(&exchange, "#").await;
    let proxy = TcpProxy::start(amqp_addr()).await;
    let mut config = settings(&db.url, &amqp_url_via(proxy.addr()), &exchange);
    config.sensor.enabled = false;
    let service = Service::start(&config).await.expect("service starts");
    wait_until_ready(&service, true).await;

    let (mut event_ids, mut enforcement_ids) = emit_batch(&service, 0, 10).await;
    wait_for_all(&mut queue, &event_ids, &enforcement_ids).await;

    proxy.cut().await;
    let (more_events, more_enforcements) = emit_batch(&service, 10, 25).await;
    wait_until_ready(&service, false).await;
    assert!(
        service.store.outbox_backlog().await.expect("backlog") > 0,
        "messages wait in the outbox while the broker is away"
    );
    event_ids.extend(more_events);
    enforcement_ids.extend(more_enforcements);

    proxy.restore();
    wait_for_all(&mut queue, &event_ids, &enforcement_ids).await;
    wait_until_ready(&service, true).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while service.store.outbox_backlog().await.expect("backlog") > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox never emptied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(service.shutdown().await.outbox_drained);
    queue.finish().await;
}

#[tokio::test]
async fn service_starts_while_the_broker_is_down() {
    require_rabbitmq().await;
    let db = TestDatabase::create().await;
    let exchange = unique_exchange();
    let mut queue = TestQueue::bind(&exchange, "#").await;
    let proxy = TcpProxy::start(amqp_addr()).await;
    proxy.cut().await;
    let mut config = settings(&db.url, &amqp_url_via(proxy.addr()), &exchange);
    config.sensor.enabled = false;
    let service = Service::start(&config)
        .await
        .expect("service starts without the broker");
    assert!(!service.publisher.is_connected());
    let (event_ids, enforcement_ids) = emit_batch(&service, 0, 3).await;

    proxy.restore();
    wait_for_all(&mut queue, &event_ids, &enforcement_ids).await;
    assert!(service.shutdown().await.outbox_drained);
    queue.finish().await;
}

/// One detection can be followed through the platform: the `EnforcementCreated` carries
/// the `EventCreated` message id as its `correlation_id`, and a `traceparent` sent with
/// `POST /events` is on both messages.
#[tokio::test]
async fn enforcements_carry_their_event_message_id_and_the_traceparent() {
    let amqp = require_rabbitmq().await;
    let db = TestDatabase::create().await;
    let exchange = unique_exchange();
    let mut queue = TestQueue::bind(&exchange, "#").await;
    let service = Service::start(&settings(&db.url, &amqp, &exchange))
        .await
        .expect("service starts");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let answer = reqwest::Client::new()
        .post(format!("http://{}/events", service.admin_addr))
        .header("traceparent", traceparent)
        .json(&json!({"trigger_ref": "e2e.manual", "payload": {"branch": "main"}}))
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 201);
    let outcome: Value = answer.json().await.expect("json");
    let event_id = outcome["event_id"].as_i64().expect("event id");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let (event, enforcement) = loop {
        let received = queue.received_now().to_vec();
        let find = |key: &str| {
            received
                .iter()
                .map(|m| body(&m.body))
                .find(|e| e["message_type"] == key && e["payload"]["event_id"] == event_id)
        };
        if let (Some(event), Some(enforcement)) = (find("EventCreated"), find("EnforcementCreated"))
        {
            break (event, enforcement);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "messages never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(event["correlation_id"], Value::Null);
    assert_eq!(enforcement["correlation_id"], event["message_id"]);
    assert_eq!(event["headers"]["traceparent"], traceparent);
    assert_eq!(enforcement["headers"]["traceparent"], traceparent);
    let stored = service
        .store
        .get_event(event_id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(
        stored.message_id.map(|id| id.to_string()),
        event["message_id"].as_str().map(str::to_owned)
    );
    service.shutdown().await;
    queue.finish().await;
}

/// `mq.routes`: `EnforcementCreated` goes to an exchange of its own (declared by the
/// service), with a routing key of its own; `EventCreated` stays on `mq.exchange`.
#[tokio::test]
async fn a_routed_message_type_arrives_on_its_own_exchange() {
    let amqp = require_rabbitmq().await;
    let db = TestDatabase::create().await;
    let exchange = unique_exchange();
    let executions = unique_exchange();
    let mut events = TestQueue::bind(&exchange, "#").await;
    let mut routed = TestQueue::bind(&executions, "#").await;
    let mut config = settings(&db.url, &amqp, &exchange);
    config.mq.routes.insert(
        "EnforcementCreated".into(),
        attune_sensor::config::RouteSetting::Full {
            exchange: executions.clone(),
            routing_key: Some("execution.request".into()),
        },
    );
    let service = Service::start(&config).await.expect("service starts");
    let outcome = service
        .tree
        .system_events
        .emit("e2e.manual", json!({"branch": "main"}))
        .await
        .expect("emitted");
    let enforcement = routed.wait_for(1, DEADLINE).await[0].clone();
    assert_eq!(enforcement.routing_key, "execution.request");
    assert_eq!(
        enforcement.message_type.as_deref(),
        Some("EnforcementCreated")
    );
    assert_eq!(
        body(&enforcement.body)["payload"]["event_id"],
        outcome.event_id
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let received = events.received_now().to_vec();
        if received
            .iter()
            .any(|m| body(&m.body)["payload"]["event_id"] == outcome.event_id)
        {
            assert!(
                received
                    .iter()
                    .all(|m| m.routing_key != "enforcement.created"),
                "no enforcement on the default exchange: {received:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "EventCreated never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service.shutdown().await;
    routed.finish().await;
    events.finish().await;
}
