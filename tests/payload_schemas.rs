//! Triggers' `payload_schema` (JSON Schema 2020-12) enforced where events enter:
//! `POST /events` and webhooks answer 422 naming the failing JSON pointer, a process
//! sensor's non-matching line is bad output, `validate_payloads: false` turns it off, and
//! a pack with an invalid schema is refused at load, naming the file.

mod support {
    pub mod triggers;
}

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use support::triggers::*;

const SCHEMA: &str = r#"
payload_schema:
  type: object
  required: [level]
  properties:
    level: {enum: [low, high]}
"#;

fn schema_pack(root: &Path) -> std::path::PathBuf {
    let dir = root.join("checked");
    for sub in ["triggers", "sensors"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    std::fs::write(dir.join("pack.yaml"), "ref: checked\n").expect("pack");
    std::fs::write(
        dir.join("triggers/alert.yaml"),
        format!("ref: alert\n{SCHEMA}"),
    )
    .expect("trigger");
    std::fs::write(
        dir.join("triggers/loose.yaml"),
        format!("ref: loose\nvalidate_payloads: false\n{SCHEMA}"),
    )
    .expect("trigger");
    std::fs::write(
        dir.join("triggers/hook.yaml"),
        "ref: hook\npayload_schema:\n  type: object\n  properties:\n    body:\n      type: object\n      required: [action]\n",
    )
    .expect("trigger");
    std::fs::write(
        dir.join("sensors/hook.yaml"),
        "ref: hook\nruntime: builtin\nentrypoint: webhook\ntrigger: checked.hook\nconfig:\n  path: checked\n",
    )
    .expect("sensor");
    std::fs::write(
        dir.join("sensors/lines.yaml"),
        "ref: lines\nruntime: shell\nentrypoint: lines.sh\ntrigger: checked.alert\nmode: poll\npoll_interval: 3600\n",
    )
    .expect("sensor");
    std::fs::write(
        dir.join("sensors/lines.sh"),
        "read -r start\necho '{\"payload\": {\"level\": 5}}'\necho '{\"payload\": {\"level\": \"high\", \"from\": \"shell\"}}'\n",
    )
    .expect("script");
    dir
}

async fn post(
    service: &attune_sensor::service::Service,
    trigger: &str,
    payload: Value,
) -> (u16, Value) {
    let answer = reqwest::Client::new()
        .post(format!("http://{}/events", service.admin_addr))
        .json(&json!({"trigger_ref": trigger, "payload": payload}))
        .send()
        .await
        .expect("answer");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn payloads_are_checked_where_events_enter() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pack = schema_pack(dir.path());
    let service = start(&settings(&sqlite_url(dir.path()), &[pack])).await;

    let (status, body) = post(&service, "checked.alert", json!({"level": "urgent"})).await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("'/level'") && error.contains("checked.alert"),
        "{error}"
    );
    let (status, body) = post(&service, "checked.alert", json!({})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("level"),
        "{body}"
    );
    let (status, _) = post(&service, "checked.alert", json!({"level": "high"})).await;
    assert_eq!(status, 201);
    let (status, _) = post(&service, "checked.loose", json!({"level": 42})).await;
    assert_eq!(status, 201, "validate_payloads: false");

    // A webhook's payload is the request: its schema describes `body`.
    let hook = format!("http://{}/webhooks/checked", service.webhook_addr);
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let refused = loop {
        let answer = client
            .post(&hook)
            .header("content-type", "application/json")
            .body(r#"{"ref": "main"}"#)
            .send()
            .await
            .expect("answer");
        if answer.status() != 404 {
            break answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "webhook never served"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("'/body'"),
        "{body}"
    );
    let accepted = client
        .post(&hook)
        .header("content-type", "application/json")
        .body(r#"{"action": "opened"}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(accepted.status(), 202);

    // The process sensor's first line fails the schema: bad output; the second is stored.
    wait_status(&service, "checked.lines", Duration::from_secs(15), |s| {
        s["bad_output_count"] == 1
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let from_shell = events(&service, "checked.alert")
            .await
            .into_iter()
            .filter(|e| e.payload["from"] == "shell")
            .count();
        if from_shell == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the good line was not stored"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    service.shutdown().await;
}

#[test]
fn a_pack_with_an_invalid_schema_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pack = schema_pack(dir.path());
    std::fs::write(
        pack.join("triggers/broken.yaml"),
        "ref: broken\npayload_schema:\n  type: 12\n",
    )
    .expect("trigger");
    let error = attune_sensor::packs::read_pack(&pack)
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("broken.yaml") && error.contains("payload_schema"),
        "{error}"
    );
}
