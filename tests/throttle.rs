//! Rule throttling on both backends: `once_within` creates one enforcement per group and
//! window and counts the rest; `once_after` holds the group's first match and emits one
//! enforcement when the window ends, carrying the count and the first and last events;
//! a window that ends while the service is down goes out when it starts again. The
//! decisions themselves are table-tested with a controllable clock in
//! `actors/src/domain/throttle.rs` and `src/store/throttle.rs`.

mod support {
    pub mod postgres;
    pub mod triggers;
}

use std::path::Path;
use std::time::Duration;

use attune_actors::messages::{Envelope, MessagePayload};
use attune_sensor::service::Service;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use support::triggers::*;

const RULES: &[(&str, &str)] = &[
    (
        "once",
        r#"ref: once
trigger: thr.hit
action: core.page
conditions: {field: payload.kind, operator: equals, value: within}
throttle: {once_within: 2s, group_by: [payload.host]}
"#,
    ),
    (
        "after",
        r#"ref: after
trigger: thr.hit
action: core.digest
conditions: {field: payload.kind, operator: equals, value: after}
throttle: {once_after: 2s, group_by: [payload.host]}
action_params: {host: "{{ payload.host }}"}
"#,
    ),
];

fn pack(root: &Path) -> std::path::PathBuf {
    write_pack(root, "thr", &[], RULES)
}

async fn emit(service: &Service, kind: &str, host: &str) -> (i64, Vec<i64>) {
    let outcome = service
        .tree
        .system_events
        .emit("thr.hit", json!({"kind": kind, "host": host}))
        .await
        .expect("stored and matched");
    (outcome.event_id, outcome.enforcement_ids)
}

async fn get(service: &Service, path: &str) -> Value {
    reqwest::get(format!("http://{}{path}", service.admin_addr))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {path} is not JSON: {e}"))
}

async fn metrics(service: &Service) -> String {
    reqwest::get(format!("http://{}/metrics", service.admin_addr))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Waits until `moment` has passed (a window's end as the service reported it).
async fn wait_past(moment: DateTime<Utc>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while Utc::now() <= moment {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{moment} did not pass"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn closes(window: &Value) -> DateTime<Utc> {
    window["closes"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("a window with an end: {window}"))
}

async fn once_within_enforces_once_per_group_and_window(database_url: &str, root: &Path) {
    let service = start(&settings(database_url, &[pack(root)])).await;
    let (_, first) = emit(&service, "within", "web-1").await;
    let (_, again) = emit(&service, "within", "web-1").await;
    let (_, other) = emit(&service, "within", "web-2").await;
    let (_, third) = emit(&service, "within", "web-1").await;
    assert_eq!(first.len(), 1, "the first match of a group enforces");
    assert!(
        again.is_empty() && third.is_empty(),
        "later matches in the window are suppressed"
    );
    assert_eq!(other.len(), 1, "another group has its own window");

    let status = get(&service, "/status").await;
    assert_eq!(status["throttled"]["thr.once"], 2, "{status}");
    let metrics = metrics(&service).await;
    assert!(
        metrics.contains(r#"attune_sensor_enforcements_throttled_total{rule="thr.once"} 2"#),
        "{metrics}"
    );
    let windows = get(&service, "/throttles").await;
    let web1 = windows
        .as_array()
        .and_then(|w| w.iter().find(|w| w["group"] == r#"["web-1"]"#).cloned())
        .unwrap_or_else(|| panic!("a window for web-1: {windows}"));
    assert_eq!(web1["matched"], 3);
    assert_eq!(web1["mode"], "once_within");

    // `rule test` on the stored rule sees the open window.
    let rule = attune_sensor::rule_test::rule_from_store(service.store.as_ref(), "thr.once")
        .await
        .expect("stored rule");
    let payload = json!({"kind": "within", "host": "web-1"});
    let group = attune_sensor::rule_test::group_of(&rule, &payload)
        .expect("valid")
        .expect("throttled");
    let window = service
        .store
        .throttle_window("thr.once", &group)
        .await
        .expect("window read");
    let verdict =
        attune_sensor::rule_test::evaluate(&rule, payload, Some(window), true, false).expect("ran");
    assert!(
        verdict
            .output
            .contains("with 3 match(es): the match is suppressed"),
        "{}",
        verdict.output
    );

    wait_past(closes(&web1)).await;
    let (_, after_window) = emit(&service, "within", "web-1").await;
    assert_eq!(
        after_window.len(),
        1,
        "a match after the window enforces again"
    );
    let stored = service
        .store
        .recent_enforcements(Some("thr.once"), 10)
        .await
        .expect("enforcements");
    assert_eq!(stored.len(), 3, "two groups, then web-1 again: {stored:?}");
    shutdown(service).await;
}

async fn once_after_sums_up_each_window(database_url: &str, root: &Path) {
    let service = start(&settings(database_url, &[pack(root)])).await;
    let mut messages = service
        .in_process_bus
        .as_ref()
        .expect("in-process bus")
        .subscribe("enforcement.#");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (event, enforcements) = emit(&service, "after", "db-1").await;
        assert!(enforcements.is_empty(), "once_after holds its matches");
        ids.push(event);
    }
    let (lone, _) = emit(&service, "after", "db-2").await;

    let mut summaries = Vec::new();
    while summaries.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.recv())
            .await
            .expect("an EnforcementCreated within 10 s")
            .expect("bus open");
        let envelope: Envelope = serde_json::from_str(&message.body).expect("envelope");
        let MessagePayload::EnforcementCreated(created) = envelope.payload else {
            continue;
        };
        summaries.push(created);
    }
    let db1 = summaries
        .iter()
        .find(|s| s.event_id == ids[0])
        .unwrap_or_else(|| panic!("db-1's window, first event {}: {summaries:?}", ids[0]));
    let summary = db1.throttle.as_ref().expect("a summary");
    assert_eq!(summary.matched, 3);
    assert_eq!((summary.first_event, summary.last_event), (ids[0], ids[2]));
    assert_eq!(summary.group, json!(["db-1"]));
    assert_eq!(db1.action_params, json!({"host": "db-1"}));
    let db2 = summaries
        .iter()
        .find(|s| s.event_id == lone)
        .expect("db-2's window");
    assert_eq!(db2.throttle.as_ref().map(|s| s.matched), Some(1));

    let stored = service
        .store
        .recent_enforcements(Some("thr.after"), 10)
        .await
        .expect("enforcements");
    assert_eq!(stored.len(), 2, "one per window: {stored:?}");
    assert!(
        get(&service, "/throttles")
            .await
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    shutdown(service).await;
}

async fn a_window_that_ends_while_down_goes_out_at_start(database_url: &str, root: &Path) {
    let pack = pack(root);
    let service = start(&settings(database_url, std::slice::from_ref(&pack))).await;
    let (first, _) = emit(&service, "after", "cache-1").await;
    let (last, _) = emit(&service, "after", "cache-1").await;
    let windows = get(&service, "/throttles").await;
    let end = closes(&windows[0]);
    shutdown(service).await;

    wait_past(end).await;
    let service = start(&settings(database_url, &[pack])).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let emitted = loop {
        let stored = service
            .store
            .recent_enforcements(Some("thr.after"), 10)
            .await
            .expect("enforcements");
        if let Some(found) = stored.into_iter().next() {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ended window did not go out after the restart"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let summary = emitted.throttle.expect("a summary");
    assert_eq!(
        (summary.matched, summary.first_event, summary.last_event),
        (2, first, last)
    );
    assert_eq!(emitted.event, first);
    shutdown(service).await;
}

on_both_backends!(
    once_within_enforces_once_per_group_and_window,
    sqlite_once_within,
    postgres_once_within
);

on_both_backends!(
    once_after_sums_up_each_window,
    sqlite_once_after,
    postgres_once_after
);

on_both_backends!(
    a_window_that_ends_while_down_goes_out_at_start,
    sqlite_restart_in_a_once_after_window,
    postgres_restart_in_a_once_after_window
);

#[test]
fn a_bad_throttle_refuses_the_pack_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pack = write_pack(
        dir.path(),
        "bad",
        &[],
        &[(
            "noisy",
            "ref: noisy\ntrigger: bad.hit\naction: core.x\nthrottle: {once_within: 5m, once_after: 1m}\n",
        )],
    );
    let error = attune_sensor::packs::read_pack(&pack)
        .expect_err("both modes")
        .to_string();
    assert!(error.contains("rules/noisy.yaml"), "{error}");
    assert!(error.contains("throttle"), "{error}");
}
