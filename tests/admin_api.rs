//! The admin API, request by request, against a real service on SQLite with the
//! in-process bus. Requests go through the router in process (`oneshot`).

mod support {
    pub mod service;
}

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use std::sync::Arc;

use attune_actors::domain::OutboxMessage;
use attune_actors::ports::{BusError, PublishReport, Publisher};
use attune_sensor::admin::{self, AdminState};
use attune_sensor::bus::redact_url;
use attune_sensor::packs;
use support::service::{TestService, fixture, wait_for};

const TIMER: &str = "timer.every_second";
const WAIT: Duration = Duration::from_secs(5);

/// One request; the answer's status and JSON body (`Null` when the body is empty).
async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Body::from(body.unwrap_or_default().to_owned()))
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("router answers");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{uri}: body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, value)
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    send(app, Method::GET, uri, None, None).await
}

async fn post(app: &Router, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
    send(app, Method::POST, uri, None, body).await
}

/// The `/status` entry of one sensor, if the supervisor tracks it.
async fn sensor_status(app: &Router, sensor_ref: &str) -> Option<Value> {
    let (code, status) = get(app, "/status").await;
    assert_eq!(code, StatusCode::OK, "{status}");
    status["sensors"]
        .as_array()
        .expect("sensors is an array")
        .iter()
        .find(|s| s["sensor_ref"] == sensor_ref)
        .cloned()
}

/// Waits until `sensor_ref`'s status satisfies `ok`, and returns it.
async fn wait_sensor(
    app: &Router,
    sensor_ref: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(&format!("{sensor_ref}: {what}"), WAIT, || async {
        sensor_status(app, sensor_ref).await.filter(|s| ok(s))
    })
    .await
}

async fn emit(app: &Router, trigger_ref: &str, payload: Value) -> (StatusCode, Value) {
    let body = json!({"trigger_ref": trigger_ref, "payload": payload}).to_string();
    post(app, "/events", Some(&body)).await
}

fn ids(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {list}"))
        .iter()
        .map(|item| item["id"].as_i64().expect("id"))
        .collect()
}

#[tokio::test]
async fn health_and_ready_answer_ok_with_sqlite_and_the_in_process_bus() {
    let svc = TestService::start().await;
    let app = svc.router();

    let (code, body) = get(&app, "/health").await;
    assert_eq!((code, body), (StatusCode::OK, json!({"status": "ok"})));

    let (code, body) = get(&app, "/ready").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"ready": true, "database": "ok", "broker": "ok"})
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn status_shows_sensors_pipeline_outbox_and_the_database() {
    let svc = TestService::builder()
        .autoload(fixture("timer"))
        .start()
        .await;
    let app = svc.router();

    let sensor = wait_sensor(&app, TIMER, "a first event", |s| {
        s["events_emitted"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(sensor["state"], "running", "{sensor}");
    assert_eq!(sensor["trigger_ref"], "timer.tick");
    assert_eq!(sensor["runtime_ref"], "builtin");
    assert_eq!(sensor["failure_count"], 0);
    assert_eq!(sensor["restart_count"], 0);
    assert_eq!(sensor["last_error"], Value::Null);
    for stamp in ["last_poll", "last_event_at"] {
        let text = sensor[stamp].as_str().unwrap_or_else(|| panic!("{stamp}"));
        chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{stamp}: {e}"));
    }

    let (code, status) = get(&app, "/status").await;
    assert_eq!(code, StatusCode::OK);
    let mut pipeline: Vec<(String, String)> = status["pipeline"]
        .as_array()
        .expect("pipeline")
        .iter()
        .map(|a| {
            assert_eq!(a["restart_count"], 0, "{a}");
            (a["name"].to_string(), a["state"].to_string())
        })
        .collect();
    pipeline.sort();
    assert_eq!(
        pipeline,
        [
            ("\"event_generator\"", "\"running\""),
            ("\"outbox_publisher\"", "\"running\""),
            ("\"rule_matcher\"", "\"running\""),
        ]
        .map(|(n, s)| (n.to_owned(), s.to_owned()))
    );
    let outbox = &status["outbox"];
    assert!(outbox["backlog"].is_u64(), "{outbox}");
    assert_eq!(outbox["bus"], "in-process");
    assert_eq!(outbox["connected"], true);
    assert_eq!(status["database"]["url"], svc.database.url.as_str());
    assert_eq!(status["mq"]["url"], "");
    svc.shutdown().await;
}

#[test]
fn status_urls_never_show_a_password() {
    let shown = redact_url("postgres://attune:s3cret@db.example:5432/attune?sslmode=disable");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        shown.contains("attune:***@db.example:5432/attune"),
        "{shown}"
    );
    let shown = redact_url("amqp://guest:p@ss@broker:5672/%2f");
    assert!(!shown.contains("p@ss") && !shown.contains("ss@"), "{shown}");
    assert!(shown.contains("broker:5672"), "{shown}");
    assert_eq!(redact_url("sqlite:data/attune.db"), "sqlite:data/attune.db");
}

#[tokio::test]
async fn sensors_can_be_stopped_started_and_restarted() {
    let svc = TestService::builder()
        .autoload(fixture("timer"))
        .start()
        .await;
    let app = svc.router();
    wait_sensor(&app, TIMER, "running", |s| s["state"] == "running").await;

    let (code, body) = post(&app, &format!("/sensors/{TIMER}/stop"), None).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"sensor_ref": TIMER, "action": "stop", "ok": true})
    );
    let stopped = sensor_status(&app, TIMER).await.expect("still tracked");
    assert_eq!(stopped["state"], "stopped", "{stopped}");

    let (code, body) = post(&app, &format!("/sensors/{TIMER}/start"), None).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let started = sensor_status(&app, TIMER).await.expect("tracked");
    assert_eq!(started["state"], "running", "{started}");
    assert_eq!(started["restart_count"], 0, "a start is not a restart");

    let (code, body) = post(&app, &format!("/sensors/{TIMER}/restart"), None).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let restarted = sensor_status(&app, TIMER).await.expect("tracked");
    assert_eq!(restarted["state"], "running", "{restarted}");
    assert_eq!(restarted["restart_count"], 1, "{restarted}");
    assert_eq!(restarted["failure_count"], 0, "{restarted}");

    // The restarted timer still produces events.
    let before = restarted["events_emitted"].as_u64().expect("count");
    wait_sensor(&app, TIMER, "an event after the restart", |s| {
        s["events_emitted"].as_u64() > Some(before)
    })
    .await;
    svc.shutdown().await;
}

#[tokio::test]
async fn unknown_sensors_and_actions_are_404() {
    let svc = TestService::builder()
        .autoload(fixture("timer"))
        .start()
        .await;
    let app = svc.router();
    for action in ["restart", "stop", "start"] {
        let (code, body) = post(&app, &format!("/sensors/timer.nope/{action}"), None).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{action}: {body}");
        let error = body["error"].as_str().expect("error message");
        assert!(error.contains("timer.nope"), "{error}");
    }
    let (code, body) = post(&app, &format!("/sensors/{TIMER}/pause"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    let error = body["error"].as_str().expect("error message");
    assert!(
        error.contains("pause") && error.contains("restart"),
        "{error}"
    );
    // Unknown endpoints answer JSON too, so clients can show why.
    let (code, body) = get(&app, "/nope").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string(), "{body}");
    svc.shutdown().await;
}

#[tokio::test]
async fn a_disabled_sensor_cannot_be_started_by_an_operator() {
    let svc = TestService::builder()
        .autoload(fixture("timer"))
        .start()
        .await;
    let app = svc.router();
    assert!(sensor_status(&app, "timer.dormant").await.is_none());
    for action in ["start", "restart"] {
        let (code, body) = post(&app, &format!("/sensors/timer.dormant/{action}"), None).await;
        assert_eq!(code, StatusCode::CONFLICT, "{action}: {body}");
        let error = body["error"].as_str().expect("error");
        assert!(error.contains("disabled"), "{error}");
    }
    assert!(sensor_status(&app, "timer.dormant").await.is_none());
    svc.shutdown().await;
}

/// A bus that never reaches its broker.
struct DownBus;

#[async_trait::async_trait]
impl Publisher for DownBus {
    async fn publish(&self, _batch: &[OutboxMessage]) -> PublishReport {
        PublishReport::failed(BusError::Unavailable("test bus is down".into()))
    }
    fn is_connected(&self) -> bool {
        false
    }
    fn kind(&self) -> &'static str {
        "down"
    }
}

#[tokio::test]
async fn ready_is_503_when_the_broker_is_down_while_health_stays_ok() {
    let svc = TestService::start().await;
    let service = svc.service();
    let app = admin::router(AdminState {
        tree: service.tree.clone(),
        store: service.store.clone(),
        publisher: Arc::new(DownBus),
        token: None,
        database_url: svc.database.url.clone(),
        mq_url: String::new(),
        last_backlog: Default::default(),
        answer_timeout: std::time::Duration::from_secs(10),
        dedup_window: std::time::Duration::from_secs(3600),
        metrics: Default::default(),
        metrics_public: false,
        retention: Default::default(),
        pack_watch: Default::default(),
        identity: service.identity.clone(),
    });
    let (code, body) = get(&app, "/ready").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["database"], "ok");
    let broker = body["broker"].as_str().expect("broker");
    assert!(broker.starts_with("down: "), "{broker}");
    let (code, _) = get(&app, "/health").await;
    assert_eq!(code, StatusCode::OK);
    let (_, status) = get(&app, "/status").await;
    assert_eq!(status["outbox"]["connected"], false, "{status}");
    assert_eq!(status["outbox"]["bus"], "down");
    svc.shutdown().await;
}

#[tokio::test]
async fn reload_starts_the_sensors_of_a_pack_loaded_after_start() {
    let svc = TestService::builder()
        .autoload(fixture("timer"))
        .start()
        .await;
    let app = svc.router();
    wait_sensor(&app, TIMER, "running", |s| s["state"] == "running").await;
    assert!(sensor_status(&app, "second.every_second").await.is_none());

    let summary = packs::install_pack(svc.service().store.as_ref(), &fixture("second"))
        .await
        .expect("second pack loads");
    assert!(summary.created > 0, "{summary:?}");

    let (code, report) = post(&app, "/reload", None).await;
    assert_eq!(code, StatusCode::OK, "{report}");
    assert_eq!(
        report,
        json!({"started": ["second.every_second"], "stopped": [], "restarted": []})
    );
    wait_sensor(&app, "second.every_second", "a first event", |s| {
        s["state"] == "running" && s["events_emitted"].as_u64() >= Some(1)
    })
    .await;

    // Nothing changed since: a second reload is a no-op.
    let (code, report) = post(&app, "/reload", None).await;
    assert_eq!(code, StatusCode::OK, "{report}");
    assert_eq!(
        report,
        json!({"started": [], "stopped": [], "restarted": []})
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn emitted_events_are_matched_against_rules() {
    let svc = TestService::builder()
        .autoload(fixture("timer"))
        .start()
        .await;
    let app = svc.router();

    let (code, high) = emit(&app, "timer.manual", json!({"level": "high"})).await;
    assert_eq!(code, StatusCode::CREATED, "{high}");
    let event_id = high["event_id"].as_i64().expect("event_id");
    let enforcement_ids: Vec<i64> = serde_json::from_value(high["enforcement_ids"].clone())
        .expect("enforcement_ids is a list of ids");
    assert_eq!(enforcement_ids.len(), 1, "{high}");

    let (code, low) = emit(&app, "timer.manual", json!({"level": "low"})).await;
    assert_eq!(code, StatusCode::CREATED, "{low}");
    assert_eq!(low["enforcement_ids"], json!([]), "no rule matches {low}");
    assert!(low["event_id"].as_i64() > Some(event_id));

    // What was stored is what the answer said.
    let (_, enforcements) = get(&app, "/enforcements?rule_ref=timer.on_high").await;
    assert_eq!(ids(&enforcements), enforcement_ids);
    assert_eq!(enforcements[0]["event"], event_id);
    assert_eq!(
        enforcements[0]["payload"]["level"], "high",
        "{enforcements}"
    );
    let event = svc
        .service()
        .store
        .get_event(event_id)
        .await
        .expect("store answers")
        .expect("event stored");
    assert_eq!(event.trigger_ref, "timer.manual");
    assert_eq!(event.payload, json!({"level": "high"}));
    assert_eq!(event.source, None, "a system event has no sensor");

    // A missing payload is an empty object.
    let (code, body) = post(&app, "/events", Some(r#"{"trigger_ref": "timer.manual"}"#)).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    svc.shutdown().await;
}

#[tokio::test]
async fn emitting_is_refused_for_unknown_triggers_and_bad_bodies() {
    let svc = TestService::builder()
        .autoload(fixture("timer"))
        .start()
        .await;
    let app = svc.router();

    let (code, body) = emit(&app, "timer.nope", json!({})).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("timer.nope")
    );

    for bad in [
        "{not json",
        "",
        r#"{"payload": {}}"#,
        r#"{"trigger_ref": "timer.manual", "extra": 1}"#,
        r#"["timer.manual"]"#,
    ] {
        let (code, body) = post(&app, "/events", Some(bad)).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert!(
            body["error"]
                .as_str()
                .expect("error")
                .contains("trigger_ref"),
            "{bad:?}: {body}"
        );
    }
    // PostgreSQL cannot store NUL in jsonb: refused up front on every backend, alone.
    let (code, body) = post(
        &app,
        "/events",
        Some(r#"{"trigger_ref": "timer.manual", "payload": {"a": ["ok", "x\u0000y"]}}"#),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"].as_str().expect("error").contains("/a/1"),
        "names where: {body}"
    );
    let (_, events) = get(&app, "/events?trigger_ref=timer.manual").await;
    assert_eq!(events, json!([]), "nothing stored by refused requests");
    svc.shutdown().await;
}

#[tokio::test]
async fn recent_events_and_enforcements_are_newest_first_and_limited() {
    let svc = TestService::builder()
        .autoload(fixture("timer"))
        .start()
        .await;
    let app = svc.router();

    let mut event_ids = Vec::new();
    let mut enforcement_ids = Vec::new();
    for n in 0..3 {
        let (code, outcome) = emit(&app, "timer.manual", json!({"level": "high", "n": n})).await;
        assert_eq!(code, StatusCode::CREATED, "{outcome}");
        event_ids.push(outcome["event_id"].as_i64().expect("event_id"));
        enforcement_ids.push(outcome["enforcement_ids"][0].as_i64().expect("one"));
    }
    event_ids.reverse();
    enforcement_ids.reverse();

    let (code, events) = get(&app, "/events?trigger_ref=timer.manual&limit=2").await;
    assert_eq!(code, StatusCode::OK, "{events}");
    assert_eq!(ids(&events), event_ids[..2]);
    let (_, events) = get(&app, "/events?trigger_ref=timer.manual").await;
    assert_eq!(ids(&events), event_ids);
    assert!(
        events
            .as_array()
            .expect("list")
            .iter()
            .all(|e| e["trigger_ref"] == "timer.manual")
    );
    let (_, events) = get(&app, "/events?trigger_ref=timer.tick&limit=1000").await;
    assert!(
        events
            .as_array()
            .expect("list")
            .iter()
            .all(|e| e["trigger_ref"] == "timer.tick"),
        "{events}"
    );

    let (code, enforcements) = get(&app, "/enforcements?rule_ref=timer.on_high&limit=2").await;
    assert_eq!(code, StatusCode::OK, "{enforcements}");
    assert_eq!(ids(&enforcements), enforcement_ids[..2]);
    let (_, enforcements) = get(&app, "/enforcements?rule_ref=timer.on_high&limit=1").await;
    assert_eq!(ids(&enforcements), enforcement_ids[..1]);
    assert_eq!(enforcements[0]["rule_ref"], "timer.on_high");

    // Without a filter: everything, still newest first.
    let (_, all) = get(&app, "/events?limit=1000").await;
    let all = ids(&all);
    assert!(all.windows(2).all(|w| w[0] > w[1]), "{all:?}");
    assert!(event_ids.iter().all(|id| all.contains(id)));

    for path in ["/events", "/enforcements"] {
        for limit in ["0", "1001", "-1", "many"] {
            let (code, body) = get(&app, &format!("{path}?limit={limit}")).await;
            assert_eq!(
                code,
                StatusCode::BAD_REQUEST,
                "{path} limit={limit}: {body}"
            );
        }
        let (code, body) = get(&app, &format!("{path}?limit=0")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(
            body["error"].as_str().expect("error").contains("1000"),
            "{body}"
        );
    }
    svc.shutdown().await;
}

#[tokio::test]
async fn every_endpoint_but_health_needs_the_token() {
    const TOKEN: &str = "s3cret-token";
    let svc = TestService::builder()
        .autoload(fixture("timer"))
        .token(TOKEN)
        .start()
        .await;
    let app = svc.router();
    wait_sensor_with_token(&app, TOKEN).await;

    let manual = json!({"trigger_ref": "timer.manual", "payload": {}}).to_string();
    let endpoints: [(Method, String, Option<&str>, StatusCode); 8] = [
        (Method::GET, "/ready".into(), None, StatusCode::OK),
        (Method::GET, "/status".into(), None, StatusCode::OK),
        (
            Method::POST,
            format!("/sensors/{TIMER}/restart"),
            None,
            StatusCode::OK,
        ),
        (Method::POST, "/reload".into(), None, StatusCode::OK),
        (
            Method::POST,
            "/events".into(),
            Some(&manual),
            StatusCode::CREATED,
        ),
        (Method::GET, "/events".into(), None, StatusCode::OK),
        (Method::GET, "/enforcements".into(), None, StatusCode::OK),
        // Authentication comes before routing of the action.
        (
            Method::POST,
            format!("/sensors/{TIMER}/pause"),
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, path, body, expected) in &endpoints {
        for wrong in [None, Some("wrong"), Some("s3cret-toke"), Some("")] {
            let (code, answer) = send(&app, method.clone(), path, wrong, *body).await;
            assert_eq!(
                code,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {wrong:?}: {answer}"
            );
            assert!(answer["error"].is_string(), "{answer}");
        }
        let (code, answer) = send(&app, method.clone(), path, Some(TOKEN), *body).await;
        assert_eq!(code, *expected, "{method} {path} with the token: {answer}");
    }

    // Only the Bearer scheme is accepted.
    let request = Request::get("/status")
        .header(header::AUTHORIZATION, format!("Basic {TOKEN}"))
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("answer");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let (code, _) = get(&app, "/health").await;
    assert_eq!(code, StatusCode::OK, "/health needs no token");
    let (code, _) = send(&app, Method::GET, "/health", Some("wrong"), None).await;
    assert_eq!(code, StatusCode::OK, "/health ignores a wrong token");
    svc.shutdown().await;
}

/// Waits for the timer to run, through the token-protected `/status`.
async fn wait_sensor_with_token(app: &Router, token: &str) {
    wait_for("the timer to run", WAIT, || async {
        let (code, status) = send(app, Method::GET, "/status", Some(token), None).await;
        assert_eq!(code, StatusCode::OK, "{status}");
        status["sensors"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["sensor_ref"] == TIMER && s["state"] == "running")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_service_listens_on_the_port_it_reports() {
    let svc = TestService::start().await;
    let addr = svc.service().admin_addr;
    assert_ne!(addr.port(), 0, "the real port, not the requested 0");
    let answer = reqwest::get(format!("{}/health", svc.base_url()))
        .await
        .expect("admin API answers over TCP");
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body, json!({"status": "ok"}));
    svc.shutdown().await;
}

/// The framework's own refusals are JSON like every other answer.
#[tokio::test]
async fn wrong_methods_and_oversized_bodies_answer_json_errors() {
    let svc = TestService::start().await;
    let app = svc.router();
    let (code, answer) = send(&app, Method::GET, "/reload", None, None).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED, "{answer}");
    assert!(answer["error"].is_string(), "{answer}");
    let (code, answer) = send(&app, Method::DELETE, "/events", None, None).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED, "{answer}");
    let huge = format!(
        "{{\"trigger_ref\": \"t\", \"payload\": \"{}\"}}",
        "x".repeat(3 << 20)
    );
    let (code, answer) = send(&app, Method::POST, "/events", None, Some(&huge)).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert!(answer["error"].is_string(), "{answer}");
    svc.shutdown().await;
}
