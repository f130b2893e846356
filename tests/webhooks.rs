//! Webhook sensors through the real listener: signatures and tokens, the size and rate
//! limits, JSON-only endpoints, unknown paths, path conflicts and missing secrets, and the
//! GitHub example pack end to end (push to main → enforcement) on SQLite and PostgreSQL.

mod support {
    pub mod postgres;
    pub mod rabbitmq;
    pub mod triggers;
}

use hmac::{KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;
use support::postgres::TestDatabase;
use support::triggers::*;

use attune_sensor::service::Service;

const DEADLINE: Duration = Duration::from_secs(15);
const SECRET: &str = "It's a Secret to Everybody";
const TOKEN: &str = "t0ken-for-hooks";

/// The variables the sensors read. Set once, before any service of this binary starts
/// (std serialises its own environment access).
fn set_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| unsafe {
        std::env::set_var("WEBHOOK_TEST_SECRET", SECRET);
        std::env::set_var("WEBHOOK_TEST_TOKEN", TOKEN);
        std::env::set_var("GITHUB_WEBHOOK_SECRET", SECRET);
    });
}

fn sign(body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn webhook(name: &str, config: &str) -> (&'static str, String) {
    let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    (
        name,
        format!(
            "ref: {name}\nruntime: builtin\nentrypoint: webhook\ntrigger: hooks.hit\nconfig:\n{config}"
        ),
    )
}

fn hooks_pack(root: &Path) -> PathBuf {
    write_pack(
        root,
        "hooks",
        &[
            webhook(
                "signed",
                "  path: signed\n  secret_env: WEBHOOK_TEST_SECRET\n  max_body_bytes: 64\n",
            ),
            webhook(
                "token",
                "  path: team/token\n  token_env: WEBHOOK_TEST_TOKEN\n",
            ),
            webhook("limited", "  path: limited\n  rate_limit_per_second: 2\n"),
            webhook("json", "  path: json\n  require_json: true\n"),
            webhook("open", "  path: open\n"),
            webhook("dup_a", "  path: dup\n"),
            webhook("dup_b", "  path: dup\n"),
            webhook(
                "unset",
                "  path: unset\n  secret_env: WEBHOOK_TEST_NOT_SET\n",
            ),
        ],
        &[],
    )
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(service: &Service) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("http://{}/webhooks", service.webhook_addr),
        }
    }

    async fn post(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(format!("{}/{path}", self.base))
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("answer body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Waits until a sensor serves `path` (anything but 404).
    async fn wait_served(&self, path: &str) -> (StatusCode, Value) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let answer = self.post(path, "{}", &[]).await;
            if answer.0 != StatusCode::NOT_FOUND {
                return answer;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} never served: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

async fn stored_payload(service: &Service, answer: &(StatusCode, Value)) -> Value {
    assert_eq!(answer.0, StatusCode::ACCEPTED, "{answer:?}");
    let id = answer.1["event_id"].as_i64().expect("event_id");
    service
        .store
        .get_event(id)
        .await
        .expect("read event")
        .expect("event stored before 202")
        .payload
}

#[tokio::test]
async fn webhooks_authenticate_limit_and_answer() {
    set_env();
    let dir = tempfile::tempdir().expect("temp dir");
    let service = start(&settings(
        &sqlite_url(dir.path()),
        &[hooks_pack(dir.path())],
    ))
    .await;
    let client = Client::new(&service);
    for path in ["signed", "team/token", "json", "open"] {
        client.wait_served(path).await;
    }
    let baseline = events(&service, "hooks.hit").await.len();

    // Signatures: GitHub's header and the generic one; the body and headers in the payload.
    let body = r#"{"ref":"refs/heads/main"}"#;
    let good = client
        .post(
            "signed?x=1&y=two",
            body,
            &[
                ("x-hub-signature-256", &sign(body.as_bytes())),
                ("content-type", "application/json"),
                ("X-Custom", "Yes"),
            ],
        )
        .await;
    let payload = stored_payload(&service, &good).await;
    assert_eq!(payload["body"], json!({"ref": "refs/heads/main"}));
    assert_eq!(payload["query"], json!({"x": "1", "y": "two"}));
    assert_eq!(payload["method"], "POST");
    assert_eq!(payload["source_ip"], "127.0.0.1");
    assert_eq!(payload["headers"]["x-custom"], "Yes");
    assert!(
        payload["headers"].get("x-hub-signature-256").is_none(),
        "{payload}"
    );
    assert!(payload["received_at"].is_string());
    let alt = client
        .post(
            "signed",
            body,
            &[("X-Webhook-Signature", &sign(body.as_bytes()))],
        )
        .await;
    stored_payload(&service, &alt).await;
    let tampered = client
        .post(
            "signed",
            r#"{"ref":"refs/heads/evil"}"#,
            &[("x-hub-signature-256", &sign(body.as_bytes()))],
        )
        .await;
    assert_eq!(tampered.0, StatusCode::UNAUTHORIZED, "{tampered:?}");
    assert_eq!(
        client.post("signed", body, &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        client
            .post("signed", body, &[("x-hub-signature-256", "sha256=nothex")])
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100));
    let too_large = client
        .post(
            "signed",
            &big,
            &[("x-hub-signature-256", &sign(big.as_bytes()))],
        )
        .await;
    assert_eq!(too_large.0, StatusCode::PAYLOAD_TOO_LARGE, "{too_large:?}");

    // Bearer tokens; the authorization header never reaches the payload.
    let bearer = format!("Bearer {TOKEN}");
    let with_token = client
        .post("team/token", "plain text", &[("authorization", &bearer)])
        .await;
    let payload = stored_payload(&service, &with_token).await;
    assert_eq!(payload["body"], "plain text");
    assert!(
        payload["headers"].get("authorization").is_none(),
        "{payload}"
    );
    assert!(!payload.to_string().contains(TOKEN));
    assert_eq!(
        client
            .post("team/token", "x", &[("authorization", "Bearer nope")])
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        client.post("team/token", "x", &[]).await.0,
        StatusCode::UNAUTHORIZED
    );

    // JSON-only endpoint; forms and text elsewhere.
    assert_eq!(
        client
            .post("json", "not json", &[("content-type", "application/json")])
            .await
            .0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    stored_payload(&service, &client.post("json", r#"[1,2]"#, &[]).await).await;
    let form = client
        .post(
            "open",
            "a=1&b=x+y",
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(
        stored_payload(&service, &form).await["body"],
        json!({"a": "1", "b": "x y"})
    );

    // Unknown path.
    let unknown = client.post("nobody/here", "{}", &[]).await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND, "{unknown:?}");

    // Only the accepted requests became events.
    let accepted = 5;
    assert_eq!(
        events(&service, "hooks.hit").await.len(),
        baseline + accepted
    );

    // Rate limit (2/s, bursts of 2): a quick series runs into 429.
    client.wait_served("limited").await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(client.post("limited", "{}", &[]).await.0);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count()
            <= 2,
        "{statuses:?}"
    );

    // Two sensors on one path: the second fails, naming the first.
    let failed = wait_any_error(&service, &["hooks.dup_a", "hooks.dup_b"]).await;
    assert!(
        failed.contains("webhook path 'dup' is already served by sensor 'hooks.dup_"),
        "{failed}"
    );
    // A secret variable that is not set is a clear sensor failure.
    let status = wait_status(&service, "hooks.unset", DEADLINE, |s| {
        s["last_error"].is_string()
    })
    .await;
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("config.secret_env: environment variable WEBHOOK_TEST_NOT_SET is not set"),
        "{error}"
    );

    // Secrets are in no stored row.
    let sensor = service
        .store
        .sensor_by_ref("hooks.signed")
        .await
        .expect("read")
        .expect("stored");
    assert!(!sensor.config.to_string().contains(SECRET));
    shutdown(service).await;
}

async fn wait_any_error(service: &Service, refs: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        for r in refs {
            if let Some(error) = sensor_status(service, r).await["last_error"].as_str() {
                return error.to_owned();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "neither of {refs:?} failed"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn github_pack() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/packs/github")
}

/// The GitHub example end to end; with `broker` (`(amqp_url, queue bound to the exchange)`)
/// the enforcement must also arrive on RabbitMQ.
async fn github_push_creates_an_enforcement(
    database_url: &str,
    broker: Option<(String, &mut support::rabbitmq::TestQueue, String)>,
) {
    set_env();
    let mut config = settings(database_url, &[github_pack()]);
    if let Some((amqp, _, exchange)) = &broker {
        config.mq.url = amqp.clone();
        config.mq.exchange = exchange.clone();
    }
    let service = start(&config).await;
    let client = Client::new(&service);
    let (probe, _) = client.wait_served("github").await;
    assert_eq!(
        probe,
        StatusCode::UNAUTHORIZED,
        "unsigned requests are refused"
    );

    let push = |branch: &str| {
        json!({"ref": format!("refs/heads/{branch}"), "repository": {"full_name": "acme/app"}, "commits": [{"id": "abc123"}]}).to_string()
    };
    let headers = |body: &str| {
        vec![
            ("x-github-event".to_owned(), "push".to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-hub-signature-256".to_owned(), sign(body.as_bytes())),
        ]
    };
    let send = |body: String| {
        let client = &client;
        async move {
            let headers = headers(&body);
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            client.post("github", &body, &headers).await
        }
    };
    let main = send(push("main")).await;
    let main_payload = stored_payload(&service, &main).await;
    assert_eq!(main_payload["headers"]["x-github-event"], "push");
    let main_id = main.1["event_id"].as_i64().expect("event id");
    let dev = send(push("dev")).await;
    let dev_id = dev.1["event_id"].as_i64().expect("event id");

    let deadline = tokio::time::Instant::now() + DEADLINE;
    let enforcement = loop {
        let enforcements = service
            .store
            .recent_enforcements(Some("github.deploy_on_push"), 10)
            .await
            .expect("read");
        if let Some(found) = enforcements.into_iter().find(|e| e.event == main_id) {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no enforcement for the push to main"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(enforcement.status, "created");
    // The dev push is matched (no enforcement) once the matcher is done with it.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let matched_through = service
            .store
            .matched_through(&service.identity.id)
            .await
            .expect("read");
        if matched_through.is_some_and(|through| through >= dev_id) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dev push never matched"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let enforcements = service
        .store
        .recent_enforcements(Some("github.deploy_on_push"), 10)
        .await
        .expect("read");
    assert!(
        enforcements.iter().all(|e| e.event != dev_id),
        "{enforcements:?}"
    );
    if let Some((_, queue, _)) = broker {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let arrived = queue.received_now().iter().any(|m| {
                serde_json::from_str::<Value>(&m.body)
                    .is_ok_and(|e| e["payload"]["enforcement_id"] == enforcement.id)
            });
            if arrived {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "EnforcementCreated never reached RabbitMQ"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    shutdown(service).await;
}

#[tokio::test]
async fn github_example_end_to_end_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    github_push_creates_an_enforcement(&sqlite_url(dir.path()), None).await;
}

#[tokio::test]
async fn github_example_end_to_end_on_postgres_and_rabbitmq() {
    let amqp = support::rabbitmq::require_rabbitmq().await;
    let db = TestDatabase::create().await;
    let exchange = support::rabbitmq::unique_exchange();
    let mut queue = support::rabbitmq::TestQueue::bind(&exchange, "enforcement.created").await;
    github_push_creates_an_enforcement(&db.url, Some((amqp, &mut queue, exchange))).await;
    queue.finish().await;
}

/// The framework's own refusals (a wrong method) are JSON like the listener's own.
#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    use tower::ServiceExt;
    let app = attune_sensor::webhook::router(std::sync::Arc::default());
    let request = axum::http::Request::get("/webhooks/anything")
        .body(axum::body::Body::empty())
        .expect("request");
    let response = app.oneshot(request).await.expect("answer");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let bytes = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .expect("body");
    let body: Value = serde_json::from_slice(&bytes).expect("JSON body");
    assert!(body["error"].is_string(), "{body}");
}

/// A webhook's `dedup_header`: a redelivery is answered with the first event and stored
/// once, on both backends' code path (SQLite here; the store suite covers PostgreSQL).
#[tokio::test]
async fn a_redelivery_named_by_the_dedup_header_is_stored_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pack = write_pack(
        dir.path(),
        "hooks",
        &[webhook(
            "deliveries",
            "  path: deliveries\n  dedup_header: X-Delivery\n",
        )],
        &[],
    );
    let service = start(&settings(&sqlite_url(dir.path()), &[pack])).await;
    let client = Client::new(&service);
    client.wait_served("deliveries").await;
    let baseline = events(&service, "hooks.hit").await.len();

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let first = client
        .post(
            "deliveries",
            r#"{"n":1}"#,
            &[("x-delivery", "d-1"), ("traceparent", traceparent)],
        )
        .await;
    assert_eq!(first.0, StatusCode::ACCEPTED, "{first:?}");
    let stored = service
        .store
        .get_event(first.1["event_id"].as_i64().expect("id"))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(
        stored.traceparent.as_deref(),
        Some(traceparent),
        "kept for the messages"
    );
    let again = client
        .post("deliveries", r#"{"n":1}"#, &[("X-Delivery", "d-1")])
        .await;
    assert_eq!(again.0, StatusCode::OK, "{again:?}");
    assert_eq!(again.1["event_id"], first.1["event_id"]);
    assert_eq!(again.1["repeat"], true);
    let other = client
        .post("deliveries", r#"{"n":2}"#, &[("x-delivery", "d-2")])
        .await;
    assert_eq!(other.0, StatusCode::ACCEPTED, "{other:?}");
    assert_ne!(other.1["event_id"], first.1["event_id"]);
    let unnamed = client.post("deliveries", r#"{"n":3}"#, &[]).await;
    assert_eq!(
        unnamed.0,
        StatusCode::ACCEPTED,
        "no header, no dedup: {unnamed:?}"
    );
    let bad = client
        .post("deliveries", "{}", &[("x-delivery", "two words")])
        .await;
    assert_eq!(bad.0, StatusCode::BAD_REQUEST, "{bad:?}");
    assert!(
        bad.1["error"]
            .as_str()
            .unwrap_or_default()
            .contains("x-delivery"),
        "{bad:?}"
    );
    assert_eq!(events(&service, "hooks.hit").await.len(), baseline + 3);
    let metrics = reqwest::get(format!("http://{}/metrics", service.admin_addr))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics");
    for (code, count) in [("202", 3), ("200", 1), ("400", 1)] {
        let line = format!(
            "attune_sensor_webhook_requests_total{{code=\"{code}\",sensor=\"hooks.deliveries\"}} "
        );
        let seen = metrics
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|n| n.trim().parse::<u64>().ok());
        // wait_served's probe counted one 202 more.
        let expected = if code == "202" { count + 1 } else { count };
        assert_eq!(seen, Some(expected), "{code}: {metrics}");
    }
    service.shutdown().await;
}
