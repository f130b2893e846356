//! A rule's `action_params`: templates over the event rendered (minijinja) when the
//! enforcement is created, stored on it and sent in `EnforcementCreated`; a template that
//! fails at render time gives a `failed` enforcement with the error, never a lost match;
//! one that does not parse refuses the pack, naming the file.

mod support {
    pub mod triggers;
}

use serde_json::{Value, json};
use std::time::Duration;
use support::triggers::*;

const RULES: &[(&str, &str)] = &[(
    "deploy",
    r#"ref: deploy
trigger: params.hit
action: core.deploy
action_params:
  branch: "{{ payload.branch }}"
  who: "{{ payload.user | default('someone') }}"
  commits: "{{ payload.commits | tojson }}"
  source: "{{ trigger.ref }}"
  retries: 3
  strict: "{{ payload.required_field }}"
"#,
)];

#[tokio::test]
async fn parameters_are_rendered_stored_and_sent_and_failures_are_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pack = write_pack(dir.path(), "params", &[], RULES);
    let service = start(&settings(&sqlite_url(dir.path()), &[pack])).await;
    let mut messages = service
        .in_process_bus
        .as_ref()
        .expect("in-process bus")
        .subscribe("enforcement.#");

    let ok = service
        .tree
        .system_events
        .emit(
            "params.hit",
            json!({"branch": "main", "commits": [{"id": "abc"}], "required_field": "x"}),
        )
        .await
        .expect("matched");
    let failing = service
        .tree
        .system_events
        .emit("params.hit", json!({"branch": "dev"}))
        .await
        .expect("still matched");
    assert_eq!(ok.enforcement_ids.len(), 1);
    assert_eq!(
        failing.enforcement_ids.len(),
        1,
        "a render failure is not a lost match"
    );

    let stored = service
        .store
        .recent_enforcements(Some("params.deploy"), 10)
        .await
        .expect("enforcements");
    let rendered = stored
        .iter()
        .find(|e| e.event == ok.event_id)
        .expect("the good one");
    assert_eq!(rendered.status, "created");
    assert_eq!(rendered.action_ref, "core.deploy");
    let params = rendered.action_params.clone().expect("params");
    assert_eq!(params["branch"], "main");
    assert_eq!(params["who"], "someone");
    assert_eq!(params["commits"], r#"[{"id": "abc"}]"#);
    assert_eq!(params["source"], "params.hit");
    assert_eq!(params["retries"], 3);
    let failed = stored
        .iter()
        .find(|e| e.event == failing.event_id)
        .expect("the failed one");
    assert_eq!(failed.status, "failed");
    assert!(failed.action_params.is_none());
    let error = failed.error.as_deref().unwrap_or_default();
    assert!(error.contains("'/strict'"), "{error}");

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.recv())
            .await
            .expect("EnforcementCreated in time")
            .expect("bus open");
        seen.push(serde_json::from_str::<Value>(&message.body).expect("envelope"));
    }
    let sent = seen
        .iter()
        .find(|m| m["payload"]["event_id"] == ok.event_id)
        .expect("sent");
    assert_eq!(sent["payload"]["action_ref"], "core.deploy");
    assert_eq!(sent["payload"]["action_params"]["branch"], "main");
    assert_eq!(sent["payload"]["status"], "created");
    let sent_failed = seen
        .iter()
        .find(|m| m["payload"]["event_id"] == failing.event_id)
        .expect("sent");
    assert_eq!(sent_failed["payload"]["status"], "failed");
    assert!(sent_failed["payload"]["error"].is_string());
    service.shutdown().await;
}

#[test]
fn a_template_that_does_not_parse_refuses_the_pack() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pack = write_pack(
        dir.path(),
        "params",
        &[],
        &[(
            "broken",
            "ref: broken\ntrigger: params.hit\naction: core.x\naction_params:\n  a: \"{{ payload.branch\"\n",
        )],
    );
    let error = attune_sensor::packs::read_pack(&pack)
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("broken.yaml") && error.contains("action_params") && error.contains("'/a'"),
        "{error}"
    );
}
