//! `POST /events` with an `Idempotency-Key` on PostgreSQL behind a proxy the test
//! stalls: a request whose client gave up during the hang is stored later, once; its
//! retry is answered `200` with the first event's id, also after a restart; while the
//! database hangs, requests are answered `503` within `pipeline.answer_timeout`.

mod support {
    pub mod postgres;
    pub mod proxy;
    pub mod service;
}

use std::time::{Duration, Instant};

use attune_sensor::config::Settings;
use attune_sensor::service::Service;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::postgres::TestDatabase;
use support::proxy::TcpProxy;
use support::service::fixture;

fn settings(database_url: &str) -> Settings {
    let yaml = json!({
        "database": {"url": database_url, "statement_timeout": 2},
        "admin": {"bind": "127.0.0.1:0"},
        "webhook": {"bind": "127.0.0.1:0"},
        "packs": {"autoload": [fixture("timer")]},
        "sensor": {"enabled": false, "reconcile_interval": 3600},
        "pipeline": {"answer_timeout": 1},
        "shutdown": {"timeout": 3},
    });
    Settings::from_yaml(&yaml.to_string()).expect("settings")
}

async fn post(
    client: &reqwest::Client,
    service: &Service,
    key: Option<&str>,
    n: u32,
) -> reqwest::Result<(StatusCode, Value)> {
    let mut request = client
        .post(format!("http://{}/events", service.admin_addr))
        .json(&json!({"trigger_ref": "timer.manual", "payload": {"level": "high", "n": n}}));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await?;
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

async fn stored_with(service: &Service, n: u32) -> Vec<i64> {
    let events = service
        .store
        .recent_events(Some("timer.manual"), 1000)
        .await
        .expect("events");
    events
        .iter()
        .filter(|e| e.payload["n"] == n)
        .map(|e| e.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_timeout_is_answered_with_the_first_event_and_stored_once() {
    let db = TestDatabase::create().await;
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().expect("address")).await;
    let service = Service::start(&settings(&db.url_via(proxy.addr())))
        .await
        .expect("service starts");
    let client = reqwest::Client::new();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let (status, _) = post(&client, &service, None, 0).await.expect("answer");
    assert_eq!(status, StatusCode::CREATED, "stored before the hang");

    proxy.stall();
    // The client gives up; the service keeps the request and stores it later.
    let gave_up = post(&impatient, &service, Some("order-1"), 1).await;
    assert!(gave_up.is_err(), "the client timed out: {gave_up:?}");
    // A patient client is answered 503 within pipeline.answer_timeout (1 s).
    let asked = Instant::now();
    let (status, body) = post(&client, &service, Some("order-1"), 1)
        .await
        .expect("answer");
    let took = asked.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(took < Duration::from_millis(1900), "503 after {took:?}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("pipeline.answer_timeout"), "{error}");

    proxy.cut().await;
    proxy.restore();
    // The retry after the hang: the first request's event, not a new one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (status, body) = loop {
        let answer = post(&client, &service, Some("order-1"), 1)
            .await
            .expect("answer");
        if answer.0 != StatusCode::SERVICE_UNAVAILABLE {
            break answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never stored: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["repeat"], true, "{body}");
    let stored = stored_with(&service, 1).await;
    assert_eq!(stored.len(), 1, "three requests, one event: {stored:?}");
    assert_eq!(body["event_id"], stored[0]);

    // Another key is a new event; a bad key is refused, naming the header.
    let (status, _) = post(&client, &service, Some("order-2"), 2)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = post(&client, &service, Some("two words"), 3)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Idempotency-Key")
    );
    service.shutdown().await;

    // Keys live in the database: a new process still knows them.
    let service = Service::start(&settings(&db.url))
        .await
        .expect("service restarts");
    let (status, body) = post(&client, &service, Some("order-1"), 1)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["event_id"], stored[0]);
    assert_eq!(stored_with(&service, 1).await.len(), 1);
    service.shutdown().await;
}
