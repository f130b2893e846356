//! One behaviour suite for the `Store` port, run against every adapter.
//!
//! Each case in `cases` is written once against `&dyn Store`; the `suite!` macro turns it
//! into a test in `postgres::` (a fresh database per test) and in `sqlite::` (a fresh
//! temporary file per test). Run one backend with `cargo test --test store_suite sqlite::`.
//!
//! The throughput measurement is ignored by default:
//! `cargo test --release --test store_suite throughput -- --ignored --nocapture`.

mod support {
    pub mod postgres;
}

use std::sync::Arc;

use attune_actors::domain::{
    ContentDedup, Event, EventWrite, Id, IdempotencyKey, InstanceRecord, NewEnforcement, NewEvent,
    PackDefinition, PruneCutoffs, RuleDefinition, SensorDefinition, Throttle, ThrottleMode,
    TriggerDefinition, Watermark,
};
use attune_actors::messages::{Envelope, EventCreated};
use attune_actors::ports::{OutboxRefusal, Store, StoreError};
use serde_json::{Value, json};

/// The instance a store opened without options stores events for.
const LOCAL: &str = "local";

fn instance_record(id: &str, heartbeat: chrono::DateTime<chrono::Utc>) -> InstanceRecord {
    InstanceRecord {
        id: id.to_owned(),
        labels: Default::default(),
        host: "test".to_owned(),
        pid: 1,
        version: "test".to_owned(),
        started: heartbeat,
        heartbeat,
    }
}

/// `create_events` for the cases that send no idempotency key, where every write is a
/// stored event.
#[async_trait::async_trait]
trait PlainEvents {
    async fn create_plain(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError>;
}

#[async_trait::async_trait]
impl PlainEvents for dyn Store {
    async fn create_plain(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        let writes = self.create_events(events).await?;
        assert!(writes.iter().all(|w| !w.is_repeat()), "{writes:?}");
        Ok(writes.into_iter().map(EventWrite::into_event).collect())
    }
}

/// A store under test and whatever keeps its database alive. Fields drop in order, so the
/// store's connections go before the database does.
pub struct Harness {
    pub url: String,
    pub store: Arc<dyn Store>,
    _guard: Box<dyn std::any::Any>,
}

pub async fn postgres_harness() -> Harness {
    let db = support::postgres::TestDatabase::create().await;
    let store = attune_sensor::store::open(&db.url)
        .await
        .expect("open PostgreSQL store");
    Harness {
        url: db.url.clone(),
        store,
        _guard: Box::new(db),
    }
}

pub async fn sqlite_harness() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    // A missing parent directory is part of what `open` must handle.
    let path = dir.path().join("nested").join("attune.db");
    let url = format!("sqlite:{}", path.display());
    let store = attune_sensor::store::open(&url)
        .await
        .expect("open SQLite store");
    Harness {
        url,
        store,
        _guard: Box::new(dir),
    }
}

macro_rules! suite {
    (cases: [$($case:ident),* $(,)?], ignored: [$($slow:ident),* $(,)?]) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let harness = super::postgres_harness().await;
                    super::cases::$case(&harness).await;
                }
            )*
            $(
                #[tokio::test]
                #[ignore = "measurement, run with --ignored --nocapture"]
                async fn $slow() {
                    let harness = super::postgres_harness().await;
                    super::cases::$slow(&harness, "postgres").await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let harness = super::sqlite_harness().await;
                    super::cases::$case(&harness).await;
                }
            )*
            $(
                #[tokio::test]
                #[ignore = "measurement, run with --ignored --nocapture"]
                async fn $slow() {
                    let harness = super::sqlite_harness().await;
                    super::cases::$slow(&harness, "sqlite").await;
                }
            )*
        }
    };
}

suite!(
    cases: [
        migrations_are_idempotent,
        pack_upsert_twice_reports_unchanged,
        pack_upsert_updates_changes_and_disables_dropped_entities,
        unknown_trigger_ref_is_refused_and_nothing_is_written,
        entity_of_another_pack_is_refused,
        enabled_sensors_are_oldest_first,
        a_large_pack_is_written_whole_and_rewritten_unchanged,
        enabled_rules_for_trigger_are_ordered_and_exclude_disabled,
        create_events_keeps_input_order_with_outbox_rows,
        get_event_round_trips,
        recent_events_are_newest_first_and_limited,
        create_enforcements_is_idempotent,
        enforcement_for_unknown_rule_is_refused_atomically,
        enforcements_and_the_watermark_commit_together,
        outbox_publish_cycle,
        batch_of_1000_events,
        sensor_state_round_trips_and_is_replaced,
        matcher_watermark_and_events_between,
        watermarks_per_instance,
        a_repeated_idempotency_key_stores_nothing_and_answers_the_first_event,
        an_idempotency_key_is_forgotten_after_its_window,
        outbox_rows_are_parked_counted_and_retried,
        retention_removes_only_old_published_and_matched_rows,
        retention_keeps_events_the_matcher_has_not_matched,
    ],
    ignored: [throughput]
);

fn trigger(r: &str) -> TriggerDefinition {
    TriggerDefinition {
        r#ref: r.into(),
        label: format!("{r} label"),
        description: Some(format!("{r} description")),
        param_schema: Some(json!({"type": "object", "properties": {"n": {"type": "integer"}}})),
        payload_schema: None,
        validate_payloads: true,
        dedup: Some(ContentDedup {
            key: vec!["payload.id".into()],
            window_secs: 600,
        }),
    }
}

fn sensor(r: &str, trigger_ref: &str) -> SensorDefinition {
    SensorDefinition {
        r#ref: r.into(),
        label: format!("{r} label"),
        description: None,
        runtime_ref: "builtin".into(),
        entrypoint: "timer".into(),
        trigger_ref: trigger_ref.into(),
        enabled: true,
        poll_interval: Some(30),
        param_schema: None,
        config: json!({"interval": 5, "unit": "seconds", "ratio": 1.5}),
        pack_path: Some("/srv/packs/demo".into()),
        mode: Some("stream".into()),
        pass_env: vec!["DEMO_TOKEN".into(), "HTTPS_PROXY".into()],
        code_digest: Some("sha256:0123".into()),
        dedup: Some(ContentDedup {
            key: vec!["payload.alert".into(), "payload.host".into()],
            window_secs: 60,
        }),
        placement: Default::default(),
    }
}

fn rule(r: &str, trigger_ref: &str) -> RuleDefinition {
    RuleDefinition {
        r#ref: r.into(),
        label: format!("{r} label"),
        description: None,
        trigger_ref: trigger_ref.into(),
        action_ref: "core.echo".into(),
        conditions: json!({"all": [{"field": "payload.n", "op": "gt", "value": 1}]}),
        action_params: Some(json!({"n": "{{ payload.n }}"})),
        throttle: Some(Throttle {
            mode: ThrottleMode::OnceWithin,
            window_secs: 300,
            group_by: vec!["payload.host".into()],
        }),
        enabled: true,
    }
}

fn pack(r: &str) -> PackDefinition {
    PackDefinition {
        r#ref: r.into(),
        label: format!("{r} pack"),
        description: Some("a test pack".into()),
        version: "1.0.0".into(),
        ..Default::default()
    }
}

/// Pack `demo`: trigger `demo.tick`, sensors `demo.s1`, `demo.s2`, rule `demo.r1`.
fn demo_pack() -> PackDefinition {
    PackDefinition {
        triggers: vec![trigger("demo.tick")],
        sensors: vec![
            sensor("demo.s1", "demo.tick"),
            sensor("demo.s2", "demo.tick"),
        ],
        rules: vec![rule("demo.r1", "demo.tick")],
        ..pack("demo")
    }
}

fn new_event(trigger_id: Option<i64>, trigger_ref: &str, n: usize) -> NewEvent {
    NewEvent {
        trigger: trigger_id,
        trigger_ref: trigger_ref.into(),
        config: json!({"trigger": {"ref": trigger_ref}}),
        payload: json!({"n": n, "text": format!("event {n}")}),
        source: None,
        source_ref: None,
        idempotency_key: None,
        dedup_key: None,
        traceparent: None,
        lease: None,
    }
}

fn keyed_event(n: usize, scope: &str, key: &str, window: std::time::Duration) -> NewEvent {
    NewEvent {
        idempotency_key: Some(IdempotencyKey::new(scope, key, window).expect("valid key")),
        dedup_key: None,
        ..new_event(None, "demo.tick", n)
    }
}

fn new_enforcement(rule_id: i64, rule_ref: &str, event: i64) -> NewEnforcement {
    NewEnforcement {
        rule: rule_id,
        rule_ref: rule_ref.into(),
        trigger_ref: "demo.tick".into(),
        event,
        payload: json!({"event": event}),
        condition: "all".into(),
        conditions: json!([{"field": "payload.n", "op": "gt", "value": 1}]),
        correlation_id: Some(uuid::Uuid::from_u128(u128::from(event.unsigned_abs()))),
        traceparent: Some(format!("00-{:032x}-{:016x}-01", event + 1, event + 1)),
        action_ref: "core.echo".into(),
        action_params: Some(json!({"event": event})),
        error: (event % 2 == 0).then(|| "an odd error".to_owned()),
        throttle: None,
        summary: None,
    }
}

/// The enforcements of a write none of whose rules is throttled.
fn enforced(
    written: Vec<Option<attune_actors::domain::Enforcement>>,
) -> Vec<attune_actors::domain::Enforcement> {
    written
        .into_iter()
        .map(|e| e.expect("no throttle, so every enforcement is created"))
        .collect()
}

fn body(message: &attune_actors::domain::OutboxMessage) -> Value {
    serde_json::from_str(&message.body).expect("outbox body is JSON")
}

mod cases {
    use super::*;

    pub async fn migrations_are_idempotent(h: &Harness) {
        h.store.upsert_pack(&demo_pack()).await.expect("upsert");
        attune_sensor::store::migrate(&h.url)
            .await
            .expect("second migration");
        attune_sensor::store::migrate(&h.url)
            .await
            .expect("third migration");
        let reopened = attune_sensor::store::open(&h.url).await.expect("reopen");
        reopened.ping().await.expect("ping");
        assert!(
            reopened
                .trigger_by_ref("demo.tick")
                .await
                .unwrap()
                .is_some(),
            "migrating again must keep the data"
        );
    }

    pub async fn pack_upsert_twice_reports_unchanged(h: &Harness) {
        let first = h
            .store
            .upsert_pack(&demo_pack())
            .await
            .expect("first upsert");
        // pack + trigger + 2 sensors + rule
        assert_eq!((first.created, first.updated, first.unchanged), (5, 0, 0));
        assert!(first.changed());

        let trigger = h.store.trigger_by_ref("demo.tick").await.unwrap().unwrap();
        let s1 = h.store.sensor_by_ref("demo.s1").await.unwrap().unwrap();
        let r1 = h.store.rule_by_ref("demo.r1").await.unwrap().unwrap();
        assert_eq!(trigger.pack_ref.as_deref(), Some("demo"));
        assert_eq!(trigger.param_schema, demo_pack().triggers[0].param_schema);
        assert_eq!(s1.trigger, trigger.id);
        assert_eq!(s1.runtime_ref, "builtin");
        assert!(s1.runtime.is_some(), "runtime row is created on demand");
        assert_eq!(
            s1.config,
            json!({"interval": 5, "unit": "seconds", "ratio": 1.5})
        );
        assert_eq!(s1.pack_path.as_deref(), Some("/srv/packs/demo"));
        assert_eq!(s1.mode.as_deref(), Some("stream"));
        assert_eq!(
            s1.pass_env,
            vec!["DEMO_TOKEN".to_owned(), "HTTPS_PROXY".to_owned()]
        );
        assert_eq!(r1.trigger, trigger.id);
        assert_eq!(
            r1.action, None,
            "no action row exists, so only the ref is kept"
        );
        assert_eq!(r1.action_ref, "core.echo");

        let second = h
            .store
            .upsert_pack(&demo_pack())
            .await
            .expect("second upsert");
        assert_eq!(
            (second.created, second.updated, second.unchanged),
            (0, 0, 5)
        );
        assert!(!second.changed());
        assert_eq!(
            h.store.trigger_by_ref("demo.tick").await.unwrap().unwrap(),
            trigger
        );
        assert_eq!(h.store.sensor_by_ref("demo.s1").await.unwrap().unwrap(), s1);
        assert_eq!(h.store.rule_by_ref("demo.r1").await.unwrap().unwrap(), r1);
    }

    pub async fn pack_upsert_updates_changes_and_disables_dropped_entities(h: &Harness) {
        h.store
            .upsert_pack(&demo_pack())
            .await
            .expect("first upsert");
        let trigger = h.store.trigger_by_ref("demo.tick").await.unwrap().unwrap();
        let s1 = h.store.sensor_by_ref("demo.s1").await.unwrap().unwrap();
        let s2 = h.store.sensor_by_ref("demo.s2").await.unwrap().unwrap();

        let mut changed = demo_pack();
        changed.triggers[0].label = "renamed".into();
        changed.sensors.retain(|s| s.r#ref != "demo.s2");
        changed.rules.clear();
        let summary = h.store.upsert_pack(&changed).await.expect("second upsert");
        // trigger changed, s2 and r1 disabled; pack and s1 as they were
        assert_eq!(
            (summary.created, summary.updated, summary.unchanged),
            (0, 3, 2)
        );

        let renamed = h.store.trigger_by_ref("demo.tick").await.unwrap().unwrap();
        assert_eq!(renamed.label, "renamed");
        assert_eq!(renamed.created, trigger.created);
        assert!(
            renamed.updated > trigger.updated,
            "updated is bumped on change"
        );
        assert_eq!(h.store.sensor_by_ref("demo.s1").await.unwrap().unwrap(), s1);

        let dropped = h.store.sensor_by_ref("demo.s2").await.unwrap().unwrap();
        assert!(
            !dropped.enabled,
            "a sensor the pack no longer defines is disabled"
        );
        assert!(dropped.updated > s2.updated);
        let dropped_rule = h.store.rule_by_ref("demo.r1").await.unwrap().unwrap();
        assert!(!dropped_rule.enabled);
        let enabled: Vec<String> = h
            .store
            .enabled_sensors()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.r#ref)
            .collect();
        assert_eq!(enabled, ["demo.s1"]);

        let again = h.store.upsert_pack(&changed).await.expect("third upsert");
        assert!(
            !again.changed(),
            "disabled leftovers are not counted again: {again:?}"
        );
    }

    pub async fn unknown_trigger_ref_is_refused_and_nothing_is_written(h: &Harness) {
        let mut broken = demo_pack();
        broken.rules.push(rule("demo.r2", "elsewhere.missing"));
        let error = h
            .store
            .upsert_pack(&broken)
            .await
            .expect_err("must be refused");
        match &error {
            StoreError::Invalid(message) => {
                assert!(message.contains("elsewhere.missing"), "{message}")
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        assert!(h.store.trigger_by_ref("demo.tick").await.unwrap().is_none());
        assert!(h.store.sensor_by_ref("demo.s1").await.unwrap().is_none());
        assert!(h.store.rule_by_ref("demo.r1").await.unwrap().is_none());
        assert!(h.store.enabled_sensors().await.unwrap().is_empty());
        // The failed attempt left nothing behind that would block a correct load.
        let summary = h.store.upsert_pack(&demo_pack()).await.expect("valid pack");
        assert_eq!(summary.created, 5);
    }

    pub async fn entity_of_another_pack_is_refused(h: &Harness) {
        h.store.upsert_pack(&demo_pack()).await.expect("demo");
        let thief = PackDefinition {
            triggers: vec![trigger("demo.tick")],
            ..pack("thief")
        };
        let error = h.store.upsert_pack(&thief).await.expect_err("refused");
        assert!(
            matches!(error, StoreError::Invalid(ref m) if m.contains("demo.tick")),
            "{error:?}"
        );
        let stored = h.store.trigger_by_ref("demo.tick").await.unwrap().unwrap();
        assert_eq!(stored.pack_ref.as_deref(), Some("demo"));
    }

    pub async fn enabled_sensors_are_oldest_first(h: &Harness) {
        let mut first = demo_pack();
        first.sensors[1].enabled = false;
        first.sensors.push(sensor("demo.s3", "demo.tick"));
        h.store.upsert_pack(&first).await.expect("demo");
        // A second pack using the first pack's trigger, written later.
        let second = PackDefinition {
            sensors: vec![sensor("late.s1", "demo.tick")],
            ..pack("late")
        };
        h.store.upsert_pack(&second).await.expect("late");

        let sensors = h.store.enabled_sensors().await.unwrap();
        let refs: Vec<&str> = sensors.iter().map(|s| s.r#ref.as_str()).collect();
        assert_eq!(refs, ["demo.s1", "demo.s3", "late.s1"]);
        assert!(sensors.windows(2).all(|w| w[0].created <= w[1].created));
        assert!(sensors.iter().all(|s| s.enabled));
    }

    /// More sensors than one read (1,000 refs) or one insert (500 rows) takes, on a
    /// trigger of another pack.
    pub async fn a_large_pack_is_written_whole_and_rewritten_unchanged(h: &Harness) {
        h.store.upsert_pack(&demo_pack()).await.expect("demo");
        let tick = h.store.trigger_by_ref("demo.tick").await.unwrap().unwrap();
        let count = 1201;
        let mut big = PackDefinition {
            sensors: (0..count)
                .map(|n| {
                    let mut s = sensor(&format!("big.s{n:04}"), "demo.tick");
                    s.config = json!({"interval": n});
                    s
                })
                .collect(),
            ..pack("big")
        };
        let first = h.store.upsert_pack(&big).await.expect("first");
        assert_eq!(
            (first.created, first.updated, first.unchanged),
            (1 + count, 0, 0)
        );
        let sensors = h.store.enabled_sensors().await.unwrap();
        let stored: Vec<&attune_actors::domain::Sensor> = sensors
            .iter()
            .filter(|s| s.pack_ref.as_deref() == Some("big"))
            .collect();
        assert_eq!(stored.len() as u32, count);
        for (n, s) in stored.iter().enumerate() {
            assert_eq!(s.r#ref, format!("big.s{n:04}"));
            assert_eq!(s.config, json!({"interval": n}));
            assert_eq!(s.trigger, tick.id);
            assert_eq!(
                s.pass_env,
                vec!["DEMO_TOKEN".to_owned(), "HTTPS_PROXY".to_owned()]
            );
        }

        let second = h.store.upsert_pack(&big).await.expect("second");
        assert_eq!(
            (second.created, second.updated, second.unchanged),
            (0, 0, 1 + count)
        );

        // One changed past the first read's refs, one dropped, one added.
        big.sensors[1100].config = json!({"interval": "changed"});
        big.sensors.remove(5);
        big.sensors.push(sensor("big.new", "demo.tick"));
        let third = h.store.upsert_pack(&big).await.expect("third");
        assert_eq!(
            (third.created, third.updated, third.unchanged),
            (1, 2, count - 1)
        );
        let changed = h.store.sensor_by_ref("big.s1100").await.unwrap().unwrap();
        assert_eq!(changed.config, json!({"interval": "changed"}));
        let dropped = h.store.sensor_by_ref("big.s0005").await.unwrap().unwrap();
        assert!(!dropped.enabled);
        assert!(h.store.sensor_by_ref("big.new").await.unwrap().is_some());
    }

    pub async fn enabled_rules_for_trigger_are_ordered_and_exclude_disabled(h: &Harness) {
        let mut demo = demo_pack();
        demo.triggers.push(trigger("demo.other"));
        demo.rules.push(rule("demo.r2", "demo.tick"));
        demo.rules.push(RuleDefinition {
            enabled: false,
            ..rule("demo.r3", "demo.tick")
        });
        demo.rules.push(rule("demo.r4", "demo.other"));
        h.store.upsert_pack(&demo).await.expect("demo");
        let later = PackDefinition {
            rules: vec![rule("later.r1", "demo.tick")],
            ..pack("later")
        };
        h.store.upsert_pack(&later).await.expect("later");

        let rules = h
            .store
            .enabled_rules_for_trigger("demo.tick")
            .await
            .unwrap();
        let refs: Vec<&str> = rules.iter().map(|r| r.r#ref.as_str()).collect();
        assert_eq!(refs, ["demo.r1", "demo.r2", "later.r1"]);
        let other = h
            .store
            .enabled_rules_for_trigger("demo.other")
            .await
            .unwrap();
        assert_eq!(other.len(), 1);
        assert!(
            h.store
                .enabled_rules_for_trigger("nobody")
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn create_events_keeps_input_order_with_outbox_rows(h: &Harness) {
        h.store.upsert_pack(&demo_pack()).await.expect("demo");
        let trigger = h.store.trigger_by_ref("demo.tick").await.unwrap().unwrap();
        let sensor = h.store.sensor_by_ref("demo.s1").await.unwrap().unwrap();
        let input: Vec<NewEvent> = (0..5)
            .map(|n| NewEvent {
                source: Some(sensor.id),
                source_ref: Some(sensor.r#ref.clone()),
                ..new_event(Some(trigger.id), "demo.tick", n)
            })
            .collect();
        let events = h.store.create_plain(input.clone()).await.expect("create");
        assert_eq!(events.len(), 5);
        for (event, new) in events.iter().zip(&input) {
            assert_eq!(event.payload, new.payload);
            assert_eq!(event.source, new.source);
            assert_eq!(event.trigger, Some(trigger.id));
        }
        assert!(
            events.windows(2).all(|w| w[0].id < w[1].id),
            "ids follow input order"
        );

        let outbox = h.store.pending_outbox(0, 100).await.unwrap();
        assert_eq!(outbox.len(), 5);
        assert!(outbox.windows(2).all(|w| w[0].id < w[1].id));
        for (message, event) in outbox.iter().zip(&events) {
            assert_eq!(message.message_type, "EventCreated");
            assert_eq!(message.routing_key, "event.created");
            let body = body(message);
            assert_eq!(body["message_id"], json!(message.message_id));
            assert_eq!(body["payload"]["event_id"], json!(event.id));
            assert_eq!(body["payload"]["payload"], event.payload);
            assert_eq!(body["payload"]["sensor_ref"], json!("demo.s1"));
            // Kept as the service wrote it, so the broker gets that text on both backends
            // (PostgreSQL's jsonb printed the keys in an order of its own).
            let envelope: Envelope<EventCreated> =
                serde_json::from_str(&message.body).expect("an EventCreated envelope");
            assert_eq!(
                serde_json::to_string(&envelope).expect("serialize"),
                message.body,
                "the body is the service's own text"
            );
        }
        assert!(h.store.create_plain(Vec::new()).await.unwrap().is_empty());
    }

    pub async fn get_event_round_trips(h: &Harness) {
        // Events need not point at a stored trigger (system events).
        let traced = NewEvent {
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            ..new_event(None, "core.system", 1)
        };
        let created = h.store.create_plain(vec![traced]).await.expect("create");
        assert!(created[0].message_id.is_some());
        let fetched = h.store.get_event(created[0].id).await.unwrap();
        assert_eq!(
            fetched.as_ref(),
            Some(&created[0]),
            "message id and traceparent too"
        );
        let outbox = h.store.pending_outbox(0, 10).await.unwrap();
        assert_eq!(Some(outbox[0].message_id), created[0].message_id);
        assert_eq!(h.store.get_event(created[0].id + 1000).await.unwrap(), None);
    }

    pub async fn recent_events_are_newest_first_and_limited(h: &Harness) {
        let mut ids = Vec::new();
        for n in 0..5 {
            let trigger_ref = if n % 2 == 0 { "t.even" } else { "t.odd" };
            let created = h
                .store
                .create_plain(vec![new_event(None, trigger_ref, n)])
                .await
                .unwrap();
            ids.push(created[0].id);
        }
        let even = h.store.recent_events(Some("t.even"), 2).await.unwrap();
        assert_eq!(
            even.iter().map(|e| e.id).collect::<Vec<_>>(),
            [ids[4], ids[2]]
        );
        let all = h.store.recent_events(None, 10).await.unwrap();
        let mut expected = ids.clone();
        expected.reverse();
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), expected);
        assert_eq!(h.store.recent_events(None, 3).await.unwrap().len(), 3);
        assert!(
            h.store
                .recent_events(Some("t.none"), 3)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn create_enforcements_is_idempotent(h: &Harness) {
        h.store.upsert_pack(&demo_pack()).await.expect("demo");
        let rule = h.store.rule_by_ref("demo.r1").await.unwrap().unwrap();
        let events = h
            .store
            .create_plain((0..2).map(|n| new_event(None, "demo.tick", n)).collect())
            .await
            .unwrap();
        let first = h
            .store
            .create_enforcements(vec![new_enforcement(rule.id, &rule.r#ref, events[0].id)])
            .await
            .map(enforced)
            .expect("first");
        assert_eq!(first[0].status, "created");
        assert_eq!(first[0].condition, "all");

        let again = h
            .store
            .create_enforcements(vec![new_enforcement(rule.id, &rule.r#ref, events[0].id)])
            .await
            .map(enforced)
            .expect("again");
        assert_eq!(again, first, "an existing pair comes back as stored");

        // A batch mixing the stored pair, a new pair and that new pair again.
        let mixed = h
            .store
            .create_enforcements(vec![
                new_enforcement(rule.id, &rule.r#ref, events[1].id),
                new_enforcement(rule.id, &rule.r#ref, events[0].id),
                new_enforcement(rule.id, &rule.r#ref, events[1].id),
            ])
            .await
            .map(enforced)
            .expect("mixed");
        assert_eq!(mixed[1], first[0]);
        assert_eq!(mixed[0], mixed[2]);
        assert_ne!(mixed[0].id, first[0].id);
        assert_eq!(mixed[0].event, events[1].id);

        let announced: Vec<Value> = h
            .store
            .pending_outbox(0, 100)
            .await
            .unwrap()
            .iter()
            .filter(|m| m.message_type == "EnforcementCreated")
            .map(body)
            .collect();
        let announced_ids: Vec<&Value> = announced
            .iter()
            .map(|b| &b["payload"]["enforcement_id"])
            .collect();
        assert_eq!(announced_ids, [&json!(first[0].id), &json!(mixed[0].id)]);
        assert_eq!(
            announced[0]["headers"]["event_id"],
            json!(events[0].id.to_string())
        );

        let recent = h
            .store
            .recent_enforcements(Some("demo.r1"), 10)
            .await
            .unwrap();
        assert_eq!(recent, vec![mixed[0].clone(), first[0].clone()]);
        assert!(
            h.store
                .recent_enforcements(Some("x"), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(h.store.recent_enforcements(None, 1).await.unwrap().len(), 1);
    }

    pub async fn enforcement_for_unknown_rule_is_refused_atomically(h: &Harness) {
        h.store.upsert_pack(&demo_pack()).await.expect("demo");
        let rule = h.store.rule_by_ref("demo.r1").await.unwrap().unwrap();
        let event = h
            .store
            .create_plain(vec![new_event(None, "demo.tick", 0)])
            .await
            .unwrap()
            .remove(0);
        let backlog = h.store.outbox_backlog().await.unwrap();
        let error = h
            .store
            .create_enforcements(vec![
                new_enforcement(rule.id, &rule.r#ref, event.id),
                new_enforcement(rule.id + 1000, "demo.ghost", event.id),
            ])
            .await
            .expect_err("unknown rule");
        assert!(matches!(error, StoreError::Invalid(_)), "{error:?}");
        assert_eq!(h.store.outbox_backlog().await.unwrap(), backlog);
        assert!(
            h.store
                .recent_enforcements(None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// `create_enforcements_through`: the watermark moves with the enforcements, not
    /// without them, and never back.
    pub async fn enforcements_and_the_watermark_commit_together(h: &Harness) {
        h.store.upsert_pack(&demo_pack()).await.expect("demo");
        let rule = h.store.rule_by_ref("demo.r1").await.unwrap().unwrap();
        let events = h
            .store
            .create_plain((0..3).map(|n| new_event(None, "demo.tick", n)).collect())
            .await
            .unwrap();
        let through = |event: &Event| Watermark {
            instance: LOCAL.to_owned(),
            matched_through: event.id,
        };
        let watermark = || async { h.store.matched_through(LOCAL).await.expect("watermark") };

        let first = h
            .store
            .create_enforcements_through(
                vec![
                    new_enforcement(rule.id, &rule.r#ref, events[0].id),
                    new_enforcement(rule.id, &rule.r#ref, events[1].id),
                ],
                &through(&events[1]),
            )
            .await
            .map(enforced)
            .expect("stored");
        assert_eq!(first.len(), 2);
        assert_eq!(watermark().await, Some(events[1].id));

        let backlog = h.store.outbox_backlog().await.unwrap();
        let error = h
            .store
            .create_enforcements_through(
                vec![new_enforcement(rule.id + 1000, "demo.ghost", events[2].id)],
                &through(&events[2]),
            )
            .await
            .expect_err("unknown rule");
        assert!(matches!(error, StoreError::Invalid(_)), "{error:?}");
        assert_eq!(watermark().await, Some(events[1].id), "refused together");
        assert_eq!(h.store.outbox_backlog().await.unwrap(), backlog);

        let again = h
            .store
            .create_enforcements_through(
                vec![new_enforcement(rule.id, &rule.r#ref, events[0].id)],
                &through(&events[0]),
            )
            .await
            .map(enforced)
            .expect("an existing pair");
        assert_eq!(again[0], first[0]);
        assert_eq!(watermark().await, Some(events[1].id), "never back");

        let none = h
            .store
            .create_enforcements_through(Vec::new(), &through(&events[2]))
            .await
            .expect("nothing matched");
        assert!(none.is_empty());
        assert_eq!(watermark().await, Some(events[2].id));
    }

    pub async fn outbox_publish_cycle(h: &Harness) {
        assert_eq!(h.store.outbox_backlog().await.unwrap(), 0);
        h.store
            .create_plain((0..3).map(|n| new_event(None, "t", n)).collect())
            .await
            .unwrap();
        assert_eq!(h.store.outbox_backlog().await.unwrap(), 3);

        let first_two = h.store.pending_outbox(0, 2).await.unwrap();
        assert_eq!(first_two.len(), 2);
        let ids: Vec<i64> = first_two.iter().map(|m| m.id).collect();
        // Reading on from the last id read, as the publisher's read-ahead does.
        let after_first = h.store.pending_outbox(ids[0], 10).await.unwrap();
        let after: Vec<i64> = after_first.iter().map(|m| m.id).collect();
        assert_eq!(after.len(), 2);
        assert_eq!(after[0], ids[1]);
        h.store.mark_published(&ids).await.unwrap();
        assert_eq!(h.store.outbox_backlog().await.unwrap(), 1);

        let rest = h.store.pending_outbox(0, 10).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert!(rest[0].id > ids[1]);
        h.store
            .mark_published(&ids)
            .await
            .expect("marking twice is harmless");
        h.store.mark_published(&[]).await.expect("nothing to mark");
        h.store.mark_published(&[rest[0].id]).await.unwrap();
        assert_eq!(h.store.outbox_backlog().await.unwrap(), 0);
        assert!(h.store.pending_outbox(0, 10).await.unwrap().is_empty());
    }

    pub async fn a_repeated_idempotency_key_stores_nothing_and_answers_the_first_event(
        h: &Harness,
    ) {
        let hour = std::time::Duration::from_secs(3600);
        let first = h
            .store
            .create_events(vec![keyed_event(0, "api", "delivery-1", hour)])
            .await
            .expect("first");
        let EventWrite::Stored(original) = &first[0] else {
            panic!("the first use of a key is stored: {first:?}");
        };
        // A later batch with the same key, a repeat within the batch, another scope's
        // same key and an unkeyed event.
        let writes = h
            .store
            .create_events(vec![
                keyed_event(1, "api", "delivery-1", hour),
                keyed_event(2, "api", "delivery-2", hour),
                keyed_event(3, "api", "delivery-2", hour),
                keyed_event(4, "webhook:demo.hook", "delivery-1", hour),
                new_event(None, "demo.tick", 5),
            ])
            .await
            .expect("second batch");
        assert_eq!(writes[0], EventWrite::Repeat(original.clone()));
        let EventWrite::Stored(second) = &writes[1] else {
            panic!("a new key is stored: {writes:?}");
        };
        assert_eq!(writes[2], EventWrite::Repeat(second.clone()));
        assert!(!writes[3].is_repeat(), "scopes are apart: {writes:?}");
        assert!(!writes[4].is_repeat());
        assert_eq!(second.payload["n"], 2);
        let stored = h.store.recent_events(None, 100).await.unwrap();
        assert_eq!(stored.len(), 4, "{stored:?}");
        assert_eq!(
            h.store.outbox_backlog().await.unwrap(),
            4,
            "one EventCreated per stored event, none for repeats"
        );
    }

    pub async fn an_idempotency_key_is_forgotten_after_its_window(h: &Harness) {
        let short = std::time::Duration::from_millis(200);
        let first = h
            .store
            .create_events(vec![keyed_event(0, "api", "k", short)])
            .await
            .unwrap();
        let again = h
            .store
            .create_events(vec![keyed_event(1, "api", "k", short)])
            .await
            .unwrap();
        assert!(again[0].is_repeat());
        // Let the window pass (stamps are whole microseconds; 200 ms is far beyond).
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let later = h
                .store
                .create_events(vec![keyed_event(2, "api", "k", short)])
                .await
                .unwrap();
            if let EventWrite::Stored(event) = &later[0] {
                assert_ne!(event.id, first[0].event().id);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the key never expired"
            );
        }
        // The new event took the key over: a repeat now names it.
        let repeat = h
            .store
            .create_events(vec![keyed_event(3, "api", "k", short)])
            .await
            .unwrap();
        assert_eq!(repeat[0].event().payload["n"], 2);
    }

    pub async fn outbox_rows_are_parked_counted_and_retried(h: &Harness) {
        h.store
            .create_plain((0..3).map(|n| new_event(None, "t", n)).collect())
            .await
            .unwrap();
        let rows = h.store.pending_outbox(0, 10).await.unwrap();
        assert!(rows.iter().all(|r| r.attempts == 0));
        let refusal = |id, error: &str, park| OutboxRefusal {
            id,
            error: error.to_owned(),
            park,
        };
        h.store
            .record_outbox_refusals(&[refusal(rows[0].id, "nacked once", false)])
            .await
            .unwrap();
        h.store.record_outbox_refusals(&[]).await.unwrap();
        // Two in one call, one of them a row already refused once.
        h.store
            .record_outbox_refusals(&[
                refusal(rows[0].id, "nacked twice", true),
                refusal(rows[1].id, "no queue", true),
            ])
            .await
            .unwrap();
        assert_eq!(h.store.outbox_backlog().await.unwrap(), 1);
        assert_eq!(h.store.parked_count().await.unwrap(), 2);
        let pending = h.store.pending_outbox(0, 10).await.unwrap();
        assert_eq!(
            pending.iter().map(|r| r.id).collect::<Vec<_>>(),
            [rows[2].id]
        );
        let parked = h.store.parked_outbox(10).await.unwrap();
        assert_eq!(parked.len(), 2);
        assert_eq!(parked[0].id, rows[0].id);
        assert_eq!(parked[0].attempts, 2);
        assert_eq!(parked[0].last_error.as_deref(), Some("nacked twice"));
        assert_eq!(parked[0].message_id, rows[0].message_id);
        assert_eq!(parked[1].last_error.as_deref(), Some("no queue"));

        assert_eq!(
            h.store
                .retry_parked(Some(&[rows[1].id, 999_999]))
                .await
                .unwrap(),
            1
        );
        assert_eq!(h.store.parked_count().await.unwrap(), 1);
        assert_eq!(h.store.retry_parked(None).await.unwrap(), 1);
        assert_eq!(h.store.parked_count().await.unwrap(), 0);
        let pending = h.store.pending_outbox(0, 10).await.unwrap();
        assert_eq!(pending.len(), 3);
        assert!(pending.iter().all(|r| r.attempts == 0), "{pending:?}");
        assert_eq!(h.store.retry_parked(None).await.unwrap(), 0);
    }

    pub async fn retention_removes_only_old_published_and_matched_rows(h: &Harness) {
        use attune_actors::domain::PruneCount;
        use attune_sensor::retention::{RetentionPolicy, prune_all};
        h.store.upsert_pack(&demo_pack()).await.expect("demo");
        let rule = h.store.rule_by_ref("demo.r1").await.unwrap().unwrap();
        let store = h.store.as_ref();
        // Old: five events with an enforcement each; all but the last published, all but
        // the last two matched (the watermark stops at the third).
        let old = store
            .create_plain((0..5).map(|n| new_event(None, "demo.tick", n)).collect())
            .await
            .unwrap();
        let enforcements: Vec<_> = old
            .iter()
            .map(|e| new_enforcement(rule.id, &rule.r#ref, e.id))
            .collect();
        store.create_enforcements(enforcements).await.unwrap();
        store.set_matched_through(LOCAL, old[2].id).await.unwrap();
        let rows = store.pending_outbox(0, 100).await.unwrap();
        assert_eq!(rows.len(), 10);
        let unpublished = rows[9].id;
        let published: Vec<Id> = rows[..9].iter().map(|r| r.id).collect();
        store.mark_published(&published).await.unwrap();
        let old_key = keyed_event(9, "api", "old-key", std::time::Duration::from_secs(1));
        store.create_events(vec![old_key]).await.unwrap();

        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let cut = chrono::Utc::now();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;

        // New: stored, matched and published after the cut.
        let new = store
            .create_plain((10..12).map(|n| new_event(None, "demo.tick", n)).collect())
            .await
            .unwrap();
        store.set_matched_through(LOCAL, new[1].id).await.unwrap();
        let fresh: Vec<Id> = store
            .pending_outbox(0, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .filter(|id| *id != unpublished)
            .collect();
        // The new rows and the old keyed event's row are published after the cut. (The
        // watermark is past every event now; unmatched events have a case of their own.)
        store.mark_published(&fresh).await.unwrap();

        // A policy whose "now" puts the cut at `cut` for both ages.
        let age = std::time::Duration::from_secs(30 * 86_400);
        let policy = RetentionPolicy {
            outbox: Some(age),
            events: Some(age),
            keys: age,
            batch: 2,
            interval: std::time::Duration::from_secs(60),
            pause: std::time::Duration::from_millis(1),
        };
        let now = cut + chrono::Duration::from_std(age).unwrap();
        let counted = store.count_prunable(policy.cutoffs(now)).await.unwrap();
        let removed = prune_all(store, &policy, now).await.expect("prune");
        assert_eq!(
            PruneCount {
                idempotency_keys: 0,
                ..removed
            },
            counted,
            "a dry run counts what a prune removes"
        );
        // The rows written before the cut and published by now went: the old events' and
        // enforcements' messages but the unpublished one, and the old keyed event's
        // (published after the cut: retention goes by when a row was written); the old key
        // went with its short window.
        assert_eq!(removed.outbox, 10);
        assert_eq!(
            removed.events, 5,
            "the five old events; the old keyed one is newer than the unpublished row, so it stays"
        );
        assert_eq!(removed.enforcements, 5);
        assert_eq!(removed.idempotency_keys, 1);
        let left = store.pending_outbox(0, 100).await.unwrap();
        assert_eq!(left.iter().map(|r| r.id).collect::<Vec<_>>(), [unpublished]);
        for event in &new {
            assert!(
                store.get_event(event.id).await.unwrap().is_some(),
                "new rows stay"
            );
        }
        for event in &old {
            assert!(store.get_event(event.id).await.unwrap().is_none());
        }
        // Once the unpublished row goes out, what was held back behind it goes too.
        store.mark_published(&[unpublished]).await.unwrap();
        let later = prune_all(store, &policy, now).await.expect("prune");
        assert_eq!(later.events, 1, "the old keyed event");
        assert_eq!(prune_all(store, &policy, now).await.unwrap().total(), 0);
    }

    pub async fn retention_keeps_events_the_matcher_has_not_matched(h: &Harness) {
        use attune_sensor::retention::{RetentionPolicy, prune_all};
        let store = h.store.as_ref();
        let events = store
            .create_plain((0..4).map(|n| new_event(None, "demo.tick", n)).collect())
            .await
            .unwrap();
        store
            .set_matched_through(LOCAL, events[1].id)
            .await
            .unwrap();
        // Published, so only the watermark holds them back.
        let rows: Vec<Id> = store
            .pending_outbox(0, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        store.mark_published(&rows).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let age = std::time::Duration::from_secs(86_400);
        let policy = RetentionPolicy {
            outbox: None,
            events: Some(age),
            keys: age,
            batch: 1000,
            interval: std::time::Duration::from_secs(60),
            pause: std::time::Duration::from_millis(1),
        };
        let now = chrono::Utc::now() + chrono::Duration::from_std(age).unwrap();
        let removed = prune_all(store, &policy, now).await.unwrap();
        assert_eq!(removed.events, 2);
        assert_eq!(removed.outbox, 0, "outbox: 0 keeps every row");
        for (i, event) in events.iter().enumerate() {
            let kept = store.get_event(event.id).await.unwrap().is_some();
            assert_eq!(kept, i >= 2, "event {i}");
        }
    }

    pub async fn sensor_state_round_trips_and_is_replaced(h: &Harness) {
        assert_eq!(h.store.sensor_state("demo.s1").await.expect("read"), None);
        let first = json!({"cursor": 41, "seen": ["a", "b"], "note": "ünïcode"});
        h.store
            .save_sensor_state("demo.s1", &first)
            .await
            .expect("save");
        assert_eq!(
            h.store.sensor_state("demo.s1").await.expect("read"),
            Some(first)
        );
        let second = json!({"cursor": 42});
        h.store
            .save_sensor_state("demo.s1", &second)
            .await
            .expect("replace");
        assert_eq!(
            h.store.sensor_state("demo.s1").await.expect("read"),
            Some(second)
        );
        assert_eq!(h.store.sensor_state("demo.s2").await.expect("read"), None);
    }

    pub async fn matcher_watermark_and_events_between(h: &Harness) {
        assert_eq!(h.store.last_event_id().await.expect("last"), 0);
        assert_eq!(
            h.store.matched_through(LOCAL).await.expect("watermark"),
            None
        );
        let events = h
            .store
            .create_plain((0..5).map(|n| new_event(None, "demo.tick", n)).collect())
            .await
            .expect("events");
        let ids: Vec<Id> = events.iter().map(|e| e.id).collect();
        assert_eq!(h.store.last_event_id().await.expect("last"), ids[4]);
        assert_eq!(
            h.store.matched_through(LOCAL).await.expect("watermark"),
            Some(ids[0] - 1),
            "the first batch gives its instance a watermark just below it"
        );
        let between = |instance, after, up_to, limit| async move {
            h.store
                .events_between(instance, after, up_to, limit)
                .await
                .expect("between")
                .iter()
                .map(|e| e.id)
                .collect::<Vec<Id>>()
        };
        assert_eq!(between(LOCAL, 0, ids[4], 10).await, ids);
        assert_eq!(
            between(LOCAL, ids[0], ids[3], 10).await,
            ids[1..4].to_vec(),
            "bounds"
        );
        assert_eq!(
            between(LOCAL, ids[0], ids[4], 2).await,
            ids[1..3].to_vec(),
            "limit"
        );
        assert_eq!(between("other", 0, ids[4], 10).await, Vec::<Id>::new());
        h.store
            .set_matched_through(LOCAL, ids[2])
            .await
            .expect("advance");
        assert_eq!(
            h.store.matched_through(LOCAL).await.expect("watermark"),
            Some(ids[2])
        );
        h.store
            .set_matched_through(LOCAL, ids[1])
            .await
            .expect("never back");
        assert_eq!(
            h.store.matched_through(LOCAL).await.expect("watermark"),
            Some(ids[2])
        );
        assert!(
            !h.store.forget_watermark(LOCAL).await.expect("forget"),
            "events above the watermark keep it"
        );
        h.store
            .set_matched_through(LOCAL, ids[4])
            .await
            .expect("advance");
        assert!(h.store.forget_watermark(LOCAL).await.expect("forget"));
        assert_eq!(
            h.store.matched_through(LOCAL).await.expect("watermark"),
            None
        );
    }

    /// Two instances on one database: each event names who stored it, each instance has
    /// its own watermark, and a dead instance's is found (and adoptable) by a live one.
    pub async fn watermarks_per_instance(h: &Harness) {
        let other = attune_sensor::store::open_with(
            &h.url,
            attune_sensor::store::StoreOptions {
                instance: "other".into(),
                ..Default::default()
            },
        )
        .await
        .expect("second store");
        let mine = h
            .store
            .create_plain(vec![new_event(None, "demo.tick", 1)])
            .await
            .expect("mine");
        let theirs = other
            .create_plain((2..5).map(|n| new_event(None, "demo.tick", n)).collect())
            .await
            .expect("theirs");
        let last = theirs[2].id;
        let ids = |events: Vec<Event>| events.iter().map(|e| e.id).collect::<Vec<Id>>();
        assert_eq!(
            ids(h
                .store
                .events_between("other", 0, last, 10)
                .await
                .expect("read")),
            ids(theirs.clone())
        );
        assert_eq!(
            ids(h
                .store
                .events_between(LOCAL, 0, last, 10)
                .await
                .expect("read")),
            ids(mine.clone())
        );
        assert_eq!(
            other.matched_through("other").await.expect("read"),
            Some(theirs[0].id - 1)
        );
        // Neither instance is registered, so each sees the other's watermark as orphaned.
        let now = chrono::Utc::now();
        let orphans = h
            .store
            .orphaned_watermarks(LOCAL, now)
            .await
            .expect("orphans");
        assert_eq!(
            orphans,
            vec![Watermark {
                instance: "other".into(),
                matched_through: theirs[0].id - 1
            }]
        );
        // A live heartbeat makes it no orphan.
        other
            .register_instance(&instance_record("other", now))
            .await
            .expect("register");
        let live = h
            .store
            .orphaned_watermarks(LOCAL, now - chrono::Duration::seconds(5))
            .await
            .expect("orphans");
        assert_eq!(live, Vec::new());
        // A stale one does not.
        let stale = h
            .store
            .orphaned_watermarks(LOCAL, now + chrono::Duration::seconds(5))
            .await
            .expect("orphans");
        assert_eq!(stale.len(), 1);
        // Retention keeps the other instance's unmatched events.
        let cutoffs = PruneCutoffs {
            events_before: Some(chrono::Utc::now() + chrono::Duration::seconds(60)),
            outbox_before: None,
            keys_before: None,
        };
        let rows: Vec<Id> = h
            .store
            .pending_outbox(0, 100)
            .await
            .expect("outbox")
            .iter()
            .map(|r| r.id)
            .collect();
        h.store.mark_published(&rows).await.expect("published");
        h.store
            .set_matched_through(LOCAL, mine[0].id)
            .await
            .expect("mine matched");
        h.store
            .set_matched_through("other", theirs[0].id)
            .await
            .expect("one of theirs matched");
        let count = h.store.count_prunable(cutoffs).await.expect("count");
        assert_eq!(count.events, 2, "mine and their first: {count:?}");
        // Adopted: the rest matched, then the watermark goes.
        h.store
            .set_matched_through("other", last)
            .await
            .expect("adopted");
        assert!(h.store.forget_watermark("other").await.expect("forget"));
        assert_eq!(
            h.store
                .orphaned_watermarks(LOCAL, now)
                .await
                .expect("orphans"),
            Vec::new()
        );
        let count = h.store.count_prunable(cutoffs).await.expect("count");
        assert_eq!(count.events, 4, "{count:?}");
    }

    pub async fn batch_of_1000_events(h: &Harness) {
        let input: Vec<NewEvent> = (0..1000).map(|n| new_event(None, "bulk", n)).collect();
        let events = h.store.create_plain(input).await.expect("batch");
        assert_eq!(events.len(), 1000);
        for (n, event) in events.iter().enumerate() {
            assert_eq!(event.payload["n"], json!(n));
        }
        assert!(events.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(h.store.outbox_backlog().await.unwrap(), 1000);
        let outbox = h.store.pending_outbox(0, 1000).await.unwrap();
        let announced: Vec<Value> = outbox
            .iter()
            .map(|m| body(m)["payload"]["event_id"].clone())
            .collect();
        let expected: Vec<Value> = events.iter().map(|e| json!(e.id)).collect();
        assert_eq!(announced, expected);
        assert_eq!(
            h.store.get_event(events[999].id).await.unwrap().as_ref(),
            Some(&events[999])
        );
    }

    /// Prints how long batches of 1,000 events plus 1,000 enforcements take. Not an
    /// assertion: timings depend on the machine.
    pub async fn throughput(h: &Harness, backend: &str) {
        h.store.upsert_pack(&demo_pack()).await.expect("demo");
        let rule = h.store.rule_by_ref("demo.r1").await.unwrap().unwrap();
        let rounds = 10;
        let mut event_time = std::time::Duration::ZERO;
        let mut enforcement_time = std::time::Duration::ZERO;
        for round in 0..rounds {
            let input: Vec<NewEvent> = (0..1000)
                .map(|n| new_event(Some(rule.trigger), "demo.tick", round * 1000 + n))
                .collect();
            let started = std::time::Instant::now();
            let events = h.store.create_plain(input).await.expect("events");
            event_time += started.elapsed();
            let enforcements: Vec<NewEnforcement> = events
                .iter()
                .map(|e| new_enforcement(rule.id, &rule.r#ref, e.id))
                .collect();
            let started = std::time::Instant::now();
            h.store
                .create_enforcements(enforcements)
                .await
                .expect("enforcements");
            enforcement_time += started.elapsed();
        }
        let per_round = (event_time + enforcement_time) / rounds as u32;
        println!(
            "{backend}: per batch of 1000: events {:?}, enforcements {:?}, total {:?} \
             (~{:.0} events+enforcements/s)",
            event_time / rounds as u32,
            enforcement_time / rounds as u32,
            per_round,
            1000.0 / per_round.as_secs_f64()
        );
        assert_eq!(
            h.store.outbox_backlog().await.unwrap(),
            2 * 1000 * rounds as u64
        );
    }
}

/// Opening failures: classified, and never echoing a password.
mod open_errors {
    use super::*;

    #[tokio::test]
    async fn unreachable_postgres_is_unavailable_without_the_password() {
        // Port 9 (discard) is closed on test machines: the connection is refused.
        let url = "postgres://attune:s3cr3t-pw@127.0.0.1:9/attune";
        let error = attune_sensor::store::open(url)
            .await
            .err()
            .expect("nothing listens on port 9");
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        assert!(!error.to_string().contains("s3cr3t-pw"), "{error}");
    }

    #[tokio::test]
    async fn wrong_postgres_password_does_not_leak() {
        // Trust auth accepts any password, so use a database that does not exist: the
        // server refuses and the error mentions the database, not the password.
        let db = support::postgres::TestDatabase::create().await;
        let mut url = url::Url::parse(&db.url).unwrap();
        url.set_password(Some("s3cr3t-pw")).unwrap();
        url.set_path(&format!("{}_missing", db.name));
        let error = attune_sensor::store::open(url.as_str())
            .await
            .err()
            .expect("database does not exist");
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        assert!(!error.to_string().contains("s3cr3t-pw"), "{error}");
    }

    #[tokio::test]
    async fn unknown_scheme_is_invalid() {
        let error = attune_sensor::store::open("mysql://root:s3cr3t-pw@localhost/attune")
            .await
            .err()
            .expect("unsupported");
        assert!(matches!(error, StoreError::Invalid(_)), "{error:?}");
        assert!(!error.to_string().contains("s3cr3t-pw"), "{error}");
    }

    #[tokio::test]
    async fn sqlite_in_memory_works() {
        let store = attune_sensor::store::open("sqlite::memory:")
            .await
            .expect("open");
        store.upsert_pack(&demo_pack()).await.expect("upsert");
        let events = store
            .create_plain(vec![new_event(None, "demo.tick", 1)])
            .await
            .expect("events");
        assert_eq!(
            store.get_event(events[0].id).await.unwrap().as_ref(),
            Some(&events[0])
        );
    }

    #[tokio::test]
    async fn postgres_migration_history_lives_in_the_attune_schema() {
        let db = support::postgres::TestDatabase::create().await;
        attune_sensor::store::migrate(&db.url)
            .await
            .expect("migrate");
        let store = attune_sensor::store::PgStore::connect(&db.url)
            .await
            .expect("connect");
        let (in_attune, in_public): (bool, bool) = sqlx::query_as(
            "SELECT to_regclass('attune._sqlx_migrations') IS NOT NULL, \
                    to_regclass('public._sqlx_migrations') IS NOT NULL",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert!(
            in_attune && !in_public,
            "attune: {in_attune}, public: {in_public}"
        );
        store.close().await;
    }
}

/// How the PostgreSQL adapter's statements are planned.
mod postgres_plans {
    use super::*;

    /// A store on a fresh database through a pool of one connection, so the statements
    /// prepared on it are those the store ran.
    async fn one_connection_store() -> (
        support::postgres::TestDatabase,
        sqlx::PgPool,
        Arc<dyn Store>,
    ) {
        let db = support::postgres::TestDatabase::create().await;
        attune_sensor::store::migrate(&db.url)
            .await
            .expect("migrate");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&db.url)
            .await
            .expect("pool");
        let store: Arc<dyn Store> =
            Arc::new(attune_sensor::store::PgStore::from_pool(pool.clone()));
        (db, pool, store)
    }

    /// A prepared statement switches to a generic plan after a few runs, chosen for the
    /// table as it was then: while the outbox was small, a sequential scan, which every
    /// later mark kept paying for on a large outbox. The mark is planned for each batch.
    #[tokio::test]
    async fn postgres_marks_outbox_rows_without_a_generic_plan() {
        let (_db, pool, store) = one_connection_store().await;
        store
            .create_plain((0..300).map(|n| new_event(None, "t", n)).collect())
            .await
            .expect("events");
        let ids: Vec<Id> = store
            .pending_outbox(0, 1000)
            .await
            .expect("pending")
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids.len(), 300);
        for _ in 0..10 {
            store.mark_published(&ids).await.expect("mark");
        }
        assert_eq!(store.outbox_backlog().await.unwrap(), 0);
        let generic: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(generic_plans), 0)::bigint FROM pg_prepared_statements \
             WHERE statement LIKE 'DELETE FROM attune.outbox_pending%'",
        )
        .fetch_one(&pool)
        .await
        .expect("prepared statements");
        assert_eq!(generic, 0, "the mark ran on a generic plan");
        pool.close().await;
    }

    /// The rows a plan read and threw away, summed over its nodes.
    fn rows_removed_by_filter(plan: &Value) -> i64 {
        match plan {
            Value::Object(node) => node
                .iter()
                .map(|(key, value)| match (key.as_str(), value) {
                    ("Rows Removed by Filter", Value::Number(n)) => n.as_i64().unwrap_or(0),
                    _ => rows_removed_by_filter(value),
                })
                .sum(),
            Value::Array(items) => items.iter().map(rows_removed_by_filter).sum(),
            _ => 0,
        }
    }

    /// Whether a `Limit` node of the plan sits above a join: PostgreSQL then costs the
    /// join as if it stopped early, which a merge join over two primary keys does not do
    /// when the rows it wants come last.
    fn limit_over_join(plan: &Value) -> bool {
        fn joins(plan: &Value) -> bool {
            match plan {
                Value::Object(node) => {
                    node.get("Node Type")
                        .and_then(Value::as_str)
                        .is_some_and(|kind| kind.contains("Join") || kind == "Nested Loop")
                        || node.values().any(joins)
                }
                Value::Array(items) => items.iter().any(joins),
                _ => false,
            }
        }
        match plan {
            Value::Object(node) => {
                let limit = node.get("Node Type").and_then(Value::as_str) == Some("Limit");
                (limit && node.get("Plans").is_some_and(joins))
                    || node.values().any(limit_over_join)
            }
            Value::Array(items) => items.iter().any(limit_over_join),
            _ => false,
        }
    }

    /// Whether the plan reads the whole outbox: a sequential scan of it, or a hash join
    /// (which hashes one side whole).
    fn reads_whole_outbox(plan: &Value) -> bool {
        match plan {
            Value::Object(node) => {
                let kind = node.get("Node Type").and_then(Value::as_str);
                let relation = node.get("Relation Name").and_then(Value::as_str);
                kind == Some("Hash Join")
                    || (kind == Some("Seq Scan") && relation == Some("outbox"))
                    || node.values().any(reads_whole_outbox)
            }
            Value::Array(items) => items.iter().any(reads_whole_outbox),
            _ => false,
        }
    }

    /// The text of the statement backend `pid` ran last.
    async fn last_statement(admin: &mut sqlx::PgConnection, pid: i32) -> String {
        sqlx::query_scalar("SELECT query FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(admin)
            .await
            .expect("the backend's last statement")
    }

    /// The publisher reads the few rows still waiting behind many published ones. Joined
    /// to the outbox before being limited, the read was planned as a merge of both primary
    /// keys that stops early, and walked every published outbox row first (28 ms for
    /// 200,000 rows); so did the age of the oldest waiting row; joined after the limit, it
    /// hashed all 3,000 outbox rows here for 10 waiting ones. Both run unprepared: the
    /// generic plan a prepared read settled on while the tables were small scanned the
    /// whole outbox for every read once it had grown.
    #[tokio::test]
    async fn postgres_reads_the_backlog_without_walking_published_rows() {
        const ROWS: usize = 3000;
        const WAITING: usize = 10;
        let (db, pool, store) = one_connection_store().await;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .expect("the store's backend");
        // Small tables first, read more than the five times after which PostgreSQL may
        // keep a prepared statement's generic plan.
        store
            .create_plain((0..5).map(|n| new_event(None, "t", n)).collect())
            .await
            .expect("first events");
        for _ in 0..8 {
            store.pending_outbox(0, 1000).await.expect("pending");
            store.oldest_unpublished().await.expect("oldest");
        }
        store
            .create_plain((0..ROWS).map(|n| new_event(None, "t", n)).collect())
            .await
            .expect("events");
        let ids: Vec<Id> = store
            .pending_outbox(0, ROWS as u32 + 10)
            .await
            .expect("pending")
            .iter()
            .map(|m| m.id)
            .collect();
        store
            .mark_published(&ids[..ids.len() - WAITING])
            .await
            .expect("mark");

        use sqlx::{Connection as _, Executor as _};
        let mut admin = sqlx::PgConnection::connect(&db.url).await.expect("admin");
        assert_eq!(store.pending_outbox(0, 1000).await.unwrap().len(), WAITING);
        let read = last_statement(&mut admin, pid).await;
        assert!(store.oldest_unpublished().await.unwrap().is_some());
        let oldest = last_statement(&mut admin, pid).await;
        for (name, statement, arguments) in [("read", &read, "(0, 1000)"), ("oldest", &oldest, "")]
        {
            admin
                .execute(format!("PREPARE {name} AS {statement}").as_str())
                .await
                .unwrap_or_else(|e| panic!("prepare {statement}: {e}"));
            let plan: Value =
                sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) EXECUTE {name}{arguments}"))
                    .fetch_one(&mut admin)
                    .await
                    .expect("explain");
            assert!(
                !limit_over_join(&plan),
                "{statement}\nlimits a join: {plan:#}"
            );
            assert!(
                !reads_whole_outbox(&plan),
                "{statement}\nreads the whole outbox: {plan:#}"
            );
        }
        let prepared: Vec<String> = sqlx::query_scalar(
            "SELECT statement FROM pg_prepared_statements \
             WHERE statement LIKE 'SELECT o.id%' OR statement LIKE 'SELECT min(created)%'",
        )
        .fetch_all(&pool)
        .await
        .expect("prepared statements");
        assert!(
            prepared.is_empty(),
            "outbox reads keep a prepared plan: {prepared:?}"
        );
        admin.close().await.expect("close");
        pool.close().await;
    }

    /// With nothing old enough to remove, retention must not read the outbox or the
    /// events to find that out. On a table without statistics (this machine runs with
    /// autovacuum off; any table between two analyzes is alike) the prunes ordered by
    /// `id` were planned as a walk of the primary key filtering every row. Each prune
    /// statement is run again under `EXPLAIN ANALYZE` on the connection that prepared it.
    #[tokio::test]
    async fn postgres_prunes_by_index_when_nothing_is_old_enough() {
        const ROWS: usize = 3000;
        let (_db, pool, store) = one_connection_store().await;
        store
            .create_plain((0..ROWS).map(|n| new_event(None, "t", n)).collect())
            .await
            .expect("events");
        let ids: Vec<Id> = store
            .pending_outbox(0, ROWS as u32 + 1)
            .await
            .expect("pending")
            .iter()
            .map(|m| m.id)
            .collect();
        store.mark_published(&ids).await.expect("mark");
        let a_day_ago = chrono::Utc::now() - chrono::Duration::days(1);
        let cutoffs = PruneCutoffs {
            outbox_before: Some(a_day_ago),
            events_before: Some(a_day_ago),
            keys_before: None,
        };
        let pruned = store.prune(cutoffs, 1000).await.expect("prune");
        assert_eq!(pruned, Default::default(), "nothing was old enough");

        let mut connection = pool.acquire().await.expect("the pool's one connection");
        let prunes: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, statement FROM pg_prepared_statements \
             WHERE statement LIKE 'DELETE FROM attune.outbox WHERE%' \
                OR statement LIKE 'DELETE FROM attune.event%' \
                OR statement LIKE 'DELETE FROM attune.enforcement%'",
        )
        .fetch_all(&mut *connection)
        .await
        .expect("prepared statements");
        assert_eq!(
            prunes.len(),
            3,
            "outbox, enforcement and event prunes: {prunes:?}"
        );
        for (name, statement) in prunes {
            sqlx::query("BEGIN")
                .execute(&mut *connection)
                .await
                .expect("begin");
            let plan: Value = sqlx::query_scalar(&format!(
                "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}(now() - interval '1 day', 1000)"
            ))
            .fetch_one(&mut *connection)
            .await
            .expect("explain the prune");
            sqlx::query("ROLLBACK")
                .execute(&mut *connection)
                .await
                .expect("rollback");
            let removed = rows_removed_by_filter(&plan);
            assert!(
                removed < (ROWS / 10) as i64,
                "{statement}\nread and discarded {removed} rows of {ROWS}: {plan:#}"
            );
        }
        drop(connection);
        pool.close().await;
    }
}
