//! Content dedup (`dedup: {key, window}` on a trigger or a sensor) on both backends: an
//! event whose key values match an event stored within the window is not stored and is
//! answered with the first; after the window it is stored again; a process sensor's
//! duplicate line is taken like a stored one (its state after it is saved).

mod support {
    pub mod postgres;
    pub mod triggers;
}

use std::path::Path;
use std::time::Duration;

use attune_actors::domain::{EventWrite, IdempotencyKey, NewEvent};
use attune_sensor::service::Service;
use serde_json::{Value, json};
use support::triggers::*;

/// A pack whose trigger deduplicates on `payload.alert_id` within `window`.
fn pack(root: &Path, window: &str) -> std::path::PathBuf {
    let dir = write_pack(
        root,
        "dd",
        &[],
        &[("any", "ref: any\ntrigger: dd.hit\naction: core.page\n")],
    );
    std::fs::write(
        dir.join("triggers/hit.yaml"),
        format!("ref: hit\ndedup: {{key: [payload.alert_id], window: {window}}}\n"),
    )
    .expect("write trigger");
    dir
}

async fn emit(service: &Service, payload: Value) -> attune_actors::ports::MatchOutcome {
    service
        .tree
        .system_events
        .emit("dd.hit", payload)
        .await
        .expect("answered")
}

async fn trigger_dedup_within_the_window(database_url: &str, root: &Path) {
    let service = start(&settings(database_url, &[pack(root, "10m")])).await;
    let first = emit(&service, json!({"alert_id": "a-1", "seen": 1})).await;
    let duplicate = emit(&service, json!({"alert_id": "a-1", "seen": 2})).await;
    let other = emit(&service, json!({"alert_id": "a-2"})).await;
    let keyless = [
        emit(&service, json!({"note": "no alert id"})).await,
        emit(&service, json!({"note": "no alert id"})).await,
    ];
    assert!(!first.repeat && first.enforcement_ids.len() == 1);
    assert!(duplicate.repeat, "the same alert again is a duplicate");
    assert_eq!(
        duplicate.event_id, first.event_id,
        "answered with the first event"
    );
    assert_eq!(
        duplicate.enforcement_ids, first.enforcement_ids,
        "and its enforcements; none new"
    );
    assert!(!other.repeat && other.event_id != first.event_id);
    assert!(
        keyless.iter().all(|o| !o.repeat) && keyless[0].event_id != keyless[1].event_id,
        "an event without the key field is always stored"
    );
    let stored = events(&service, "dd.hit").await;
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert_eq!(stored[0].payload["seen"], 1, "the first is kept as it came");
    let enforcements = service
        .store
        .recent_enforcements(None, 10)
        .await
        .expect("enforcements");
    assert_eq!(enforcements.len(), 4, "one per stored event");
    shutdown(service).await;
}

on_both_backends!(
    trigger_dedup_within_the_window,
    sqlite_trigger_dedup,
    postgres_trigger_dedup
);

/// Straight on the store: a content key repeats within its window and is free again once
/// the window has passed (a window of 50 ms, waited out against the stored time).
async fn content_keys_expire_with_their_window(database_url: &str, root: &Path) {
    let service = start(&settings(database_url, &[pack(root, "1s")])).await;
    let store = service.store.clone();
    let event = |alert: &str, window: Duration| NewEvent {
        trigger: None,
        trigger_ref: "dd.hit".into(),
        config: json!({}),
        payload: json!({"alert_id": alert}),
        source: None,
        source_ref: None,
        idempotency_key: None,
        dedup_key: Some(
            IdempotencyKey::new("dedup:trigger:dd.hit", &format!("key-{alert}"), window)
                .expect("key"),
        ),
        traceparent: None,
        lease: None,
    };
    let short = Duration::from_millis(50);
    let written = store
        .create_events(vec![
            event("x", short),
            event("x", short),
            event("y", short),
        ])
        .await
        .expect("stored");
    assert!(matches!(written[0], EventWrite::Stored(_)));
    assert!(
        matches!(&written[1], EventWrite::Repeat(first) if first.id == written[0].event().id),
        "a duplicate in the same batch: {written:?}"
    );
    assert!(matches!(written[2], EventWrite::Stored(_)));
    let again = store
        .create_events(vec![event("x", Duration::from_secs(600))])
        .await
        .expect("stored");
    assert!(again[0].is_repeat(), "within the window");

    let first_at = written[0].event().created;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while chrono::Utc::now() < first_at + chrono::Duration::milliseconds(60) {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let later = store
        .create_events(vec![event("x", short)])
        .await
        .expect("stored");
    assert!(
        matches!(later[0], EventWrite::Stored(_)),
        "after the window the same content is stored again: {later:?}"
    );
    shutdown(service).await;
}

on_both_backends!(
    content_keys_expire_with_their_window,
    sqlite_content_keys_expire,
    postgres_content_keys_expire
);

/// A stream sensor prints the same alert twice, another one, then its state: one event
/// per alert is stored, the duplicate is counted, and the state after it is saved (the
/// duplicate was taken like a stored line, so the sensor need not send it again).
#[tokio::test]
async fn a_process_sensors_duplicate_line_is_taken_and_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sensor =
        "ref: alerts\nruntime: shell\nentrypoint: alerts.sh\ntrigger: dd.hit\nmode: stream\n\
                  dedup: {key: [payload.alert_id], window: 10m}\n"
            .to_owned();
    let pack = write_pack(dir.path(), "dd", &[("alerts", sensor)], &[]);
    std::fs::write(
        pack.join("sensors/alerts.sh"),
        "read -r start\n\
         echo '{\"payload\": {\"alert_id\": 1}}'\n\
         echo '{\"payload\": {\"alert_id\": 1}}'\n\
         echo '{\"payload\": {\"alert_id\": 2}}'\n\
         echo '{\"state\": {\"through\": 2}}'\n\
         exec sleep 300\n",
    )
    .expect("write sensor code");
    let service = start(&settings(&sqlite_url(dir.path()), &[pack])).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let state = service
            .store
            .sensor_state("dd.alerts")
            .await
            .expect("read state");
        if state == Some(json!({"through": 2})) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the state after the duplicate was not saved: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let stored = events(&service, "dd.hit").await;
    let alerts: Vec<&Value> = stored.iter().map(|e| &e.payload["alert_id"]).collect();
    assert_eq!(alerts, [&json!(1), &json!(2)]);
    let status = sensor_status(&service, "dd.alerts").await;
    assert_eq!(status["duplicates"], 1, "{status}");
    assert_eq!(status["events_emitted"], 2, "{status}");
    assert_eq!(status["bad_output_count"], 0, "{status}");
    shutdown(service).await;
}

#[test]
fn a_bad_dedup_refuses_the_pack_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pack = write_pack(dir.path(), "dd", &[], &[]);
    std::fs::write(
        pack.join("triggers/hit.yaml"),
        "ref: hit\ndedup: {key: [alert_id], window: 10m}\n",
    )
    .expect("write trigger");
    let error = attune_sensor::packs::read_pack(&pack)
        .expect_err("a key outside the context")
        .to_string();
    assert!(error.contains("triggers/hit.yaml"), "{error}");
    assert!(error.contains("dedup.key[0] 'alert_id'"), "{error}");
}
