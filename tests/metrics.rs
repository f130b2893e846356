//! `GET /metrics`: scraped over HTTP from a running service, parsed with a Prometheus text
//! parser (`prometheus-parse`), and checked to move as events flow; the token rules and
//! `admin.metrics_public`.

mod support {
    pub mod service;
}

use prometheus_parse::{Scrape, Value};
use serde_json::json;
use std::time::Duration;
use support::service::{TestService, fixture};

async fn scrape(svc: &TestService, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("{}/metrics", svc.base_url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("scrape");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}

/// The value of the sample `name` whose labels include `labels` (0 when absent).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn counters_move_as_events_flow_and_gauges_describe_the_service() {
    let svc = TestService::builder()
        .autoload(fixture("timer"))
        .token("s3cret")
        .start()
        .await;
    let (status, _) = scrape(&svc, None).await;
    assert_eq!(status, 401, "the token protects /metrics by default");
    let (status, before) = scrape(&svc, Some("s3cret")).await;
    assert_eq!(status, 200);
    let before = parse(&before);
    assert_eq!(
        value(
            &before,
            "attune_sensor_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    let client = reqwest::Client::new();
    for n in 0..5 {
        let answer = client
            .post(format!("{}/events", svc.base_url()))
            .bearer_auth("s3cret")
            .json(&json!({"trigger_ref": "timer.manual", "payload": {"level": "high", "n": n}}))
            .send()
            .await
            .expect("post");
        assert_eq!(answer.status(), 201);
    }
    let refused = client
        .post(format!("{}/events", svc.base_url()))
        .bearer_auth("s3cret")
        .json(&json!({"trigger_ref": "timer.nope", "payload": {}}))
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 404);

    // The outbox publishes in the background; wait until the scrape shows it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let (_, text) = scrape(&svc, Some("s3cret")).await;
        let after = parse(&text);
        let published = value(&after, "attune_sensor_outbox_published_total", &[])
            - value(&before, "attune_sensor_outbox_published_total", &[]);
        if published >= 10.0 {
            break after;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "published {published}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(
        moved(
            "attune_sensor_events_stored_total",
            &[("trigger", "timer.manual")]
        ),
        5.0
    );
    assert_eq!(
        moved(
            "attune_sensor_enforcements_created_total",
            &[("rule", "timer.on_high")]
        ),
        5.0
    );
    assert_eq!(
        moved(
            "attune_sensor_events_refused_total",
            &[("reason", "unknown_trigger")]
        ),
        1.0
    );
    assert!(
        moved("attune_sensor_event_commit_seconds", &[]) >= 1.0,
        "commit latency observed"
    );
    assert!(moved("attune_sensor_enforcement_commit_seconds", &[]) >= 1.0);
    assert!(moved("attune_sensor_match_seconds_per_event", &[]) >= 1.0);
    assert!(moved("attune_sensor_publish_confirm_seconds", &[]) >= 1.0);
    assert!(moved("attune_sensor_event_batch_size", &[]) >= 1.0);
    assert_eq!(value(&after, "attune_sensor_database_up", &[]), 1.0);
    assert_eq!(value(&after, "attune_sensor_broker_up", &[]), 1.0);
    assert!(value(&after, "attune_sensor_sensors", &[("state", "running")]) >= 1.0);
    assert_eq!(value(&after, "attune_sensor_outbox_parked", &[]), 0.0);
    let names: Vec<&str> = after.samples.iter().map(|s| s.metric.as_str()).collect();
    for expected in [
        "attune_sensor_outbox_backlog",
        "attune_sensor_outbox_oldest_unpublished_age_seconds",
        "attune_sensor_sensor_restarts",
        "attune_sensor_database_pool_connections_in_use",
    ] {
        assert!(names.contains(&expected), "{expected} missing");
    }
    assert!(
        names.iter().all(|n| n.starts_with("attune_sensor_")),
        "{names:?}"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn metrics_public_lets_a_scraper_in_without_the_token_and_nothing_else() {
    let svc = TestService::builder()
        .token("s3cret")
        .metrics_public()
        .start()
        .await;
    let (status, text) = scrape(&svc, None).await;
    assert_eq!(status, 200);
    assert!(!parse(&text).samples.is_empty());
    let status = reqwest::get(format!("{}/status", svc.base_url()))
        .await
        .expect("status")
        .status();
    assert_eq!(status, 401, "only /metrics is public");
    svc.shutdown().await;
}
