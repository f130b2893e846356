//! The domain model shared by every part of the service.
//!
//! These types mirror the rows of the `attune` schema. They carry no database or broker
//! types, so the actor tree and the adapters can agree on them without depending on each
//! other.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod cluster;
mod dedup;
mod retention;
mod throttle;

pub use cluster::{
    ADOPTION_LEASE_PREFIX, InstanceRecord, LeaseClaim, LeaseRecord, OUTBOX_LEASE, Placement,
    PlacementMode, SENSOR_LEASE_PREFIX, SensorAction, SensorCommand, Watermark, adoption_lease,
    sensor_lease,
};
pub use dedup::{CONTENT_KEY_SCOPE, ContentDedup, IdempotencyKey, MAX_IDEMPOTENCY_KEY_BYTES};
pub use retention::{PruneCount, PruneCutoffs};
pub use throttle::{
    Throttle, ThrottleClaim, ThrottleMode, ThrottleStep, ThrottleSummary, ThrottleWindow, decide,
};

/// Primary key of every table.
pub type Id = i64;

/// The latest moment stored anywhere (9999-12-31T23:59:59Z): "never" for windows and
/// expiries, within what every database and the fixed-width SQLite text can hold.
pub fn far_future() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `span` after `at`, but never past [`far_future`] (which is also the answer when the
/// sum overflows): the end of a window or a lease, fit to store.
pub fn capped_after(at: DateTime<Utc>, span: chrono::Duration) -> DateTime<Utc> {
    at.checked_add_signed(span)
        .map_or(far_future(), |later| later.min(far_future()))
}

/// A configured `std` duration as a chrono span, the longest one when it does not fit.
pub fn chrono_span(duration: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// `span` before `at`, or the earliest time there is when that underflows.
pub fn capped_before(at: DateTime<Utc>, span: std::time::Duration) -> DateTime<Utc> {
    at.checked_sub_signed(chrono_span(span))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The runtime ref of built-in sensors (timers, webhooks, file watches).
pub const BUILTIN_RUNTIME: &str = "builtin";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub id: Id,
    pub r#ref: String,
    pub pack: Option<Id>,
    pub pack_ref: Option<String>,
    pub label: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub param_schema: Option<Value>,
    pub payload_schema: Option<Value>,
    /// Whether `payload_schema` is enforced where events enter.
    #[serde(default = "enforced")]
    pub validate_payloads: bool,
    /// Content dedup for every event of the trigger (a sensor's own `dedup` wins).
    #[serde(default)]
    pub dedup: Option<ContentDedup>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

fn enforced() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sensor {
    pub id: Id,
    pub r#ref: String,
    pub pack: Option<Id>,
    pub pack_ref: Option<String>,
    pub label: String,
    pub description: Option<String>,
    pub entrypoint: String,
    pub runtime: Option<Id>,
    pub runtime_ref: String,
    pub trigger: Id,
    pub trigger_ref: String,
    pub enabled: bool,
    /// Seconds between polls; `None` means the service default (`sensor.poll_interval`).
    pub poll_interval: Option<i64>,
    pub param_schema: Option<Value>,
    pub config: Value,
    /// The pack's directory as it was loaded; custom sensor code runs from there.
    pub pack_path: Option<String>,
    /// `poll` or `stream` for process sensors; `None` for built-ins (and the default).
    pub mode: Option<String>,
    /// Environment variables a sensor process may see besides the fixed ones.
    pub pass_env: Vec<String>,
    /// For process sensors: a digest of the code, so that a change to the code alone is a
    /// changed definition (and the sensor restarts at the next reconcile).
    #[serde(default)]
    pub code_digest: Option<String>,
    /// Content dedup for the events of this sensor.
    #[serde(default)]
    pub dedup: Option<ContentDedup>,
    /// Where it runs when several instances share the database.
    #[serde(default)]
    pub placement: Placement,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: Id,
    pub r#ref: String,
    pub pack: Option<Id>,
    pub pack_ref: Option<String>,
    pub label: String,
    pub description: Option<String>,
    pub action: Option<Id>,
    pub action_ref: String,
    pub trigger: Id,
    pub trigger_ref: String,
    pub conditions: Value,
    /// Parameters for the action, string values being templates over the event.
    #[serde(default)]
    pub action_params: Option<Value>,
    /// At most one enforcement per group and window.
    #[serde(default)]
    pub throttle: Option<Throttle>,
    pub enabled: bool,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: Id,
    pub trigger: Option<Id>,
    pub trigger_ref: String,
    /// Snapshot of the trigger (and sensor) configuration at the time of the event.
    pub config: Value,
    pub payload: Value,
    /// The sensor that produced the event; `None` for system events.
    pub source: Option<Id>,
    pub source_ref: Option<String>,
    pub created: DateTime<Utc>,
    /// The id of its `EventCreated` message (`None` for rows older than the column),
    /// which its enforcements carry as their `correlation_id`.
    #[serde(default)]
    pub message_id: Option<uuid::Uuid>,
    /// The W3C `traceparent` the request that caused it carried, passed on to its
    /// messages.
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// An event not yet stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub trigger: Option<Id>,
    pub trigger_ref: String,
    pub config: Value,
    pub payload: Value,
    pub source: Option<Id>,
    pub source_ref: Option<String>,
    /// The caller's name for this event: a repeat of the key within its window stores
    /// nothing and answers with the first event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
    /// The key of its content (`dedup` of its sensor or trigger): a duplicate within the
    /// window is not stored, like a repeated idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<IdempotencyKey>,
    /// The W3C `traceparent` of the request that caused it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The lease its sensor held when it emitted (several instances on one database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseClaim>,
}

/// What the request behind an event adds to it besides the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventOrigin {
    pub idempotency_key: Option<IdempotencyKey>,
    /// A W3C `traceparent`, passed on to the event's messages.
    pub traceparent: Option<String>,
}

/// What storing one new event did.
#[derive(Debug, Clone, PartialEq)]
pub enum EventWrite {
    /// Stored now, with its outbox row.
    Stored(Event),
    /// Its idempotency key was seen within the window: nothing stored; this is the event
    /// the key's first request stored.
    Repeat(Event),
}

impl EventWrite {
    pub fn event(&self) -> &Event {
        match self {
            EventWrite::Stored(event) | EventWrite::Repeat(event) => event,
        }
    }

    pub fn into_event(self) -> Event {
        match self {
            EventWrite::Stored(event) | EventWrite::Repeat(event) => event,
        }
    }

    pub fn is_repeat(&self) -> bool {
        matches!(self, EventWrite::Repeat(_))
    }
}

impl NewEvent {
    /// The event as stored under `id` at `created`: the one place a new event becomes a
    /// stored one, for every store.
    pub fn stored(self, id: Id, created: DateTime<Utc>) -> Event {
        self.stored_as(id, created, uuid::Uuid::new_v4())
    }

    /// Like [`stored`](Self::stored), with its `EventCreated` message id chosen already
    /// (a store that inserts before it knows the ids writes it with the row).
    pub fn stored_as(self, id: Id, created: DateTime<Utc>, message_id: uuid::Uuid) -> Event {
        Event {
            id,
            trigger: self.trigger,
            trigger_ref: self.trigger_ref,
            config: self.config,
            payload: self.payload,
            source: self.source,
            source_ref: self.source_ref,
            created,
            message_id: Some(message_id),
            traceparent: self.traceparent,
        }
    }
}

/// The status of an enforcement when the sensor service creates it; the executor moves it
/// on from there.
pub const ENFORCEMENT_CREATED: &str = "created";

/// The status of an enforcement whose action parameters could not be rendered.
pub const ENFORCEMENT_FAILED: &str = "failed";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enforcement {
    pub id: Id,
    pub rule: Id,
    pub rule_ref: String,
    pub trigger_ref: String,
    pub event: Id,
    pub status: String,
    pub payload: Value,
    /// `all` or `any`: the top-level combinator of the rule's conditions.
    pub condition: String,
    pub conditions: Value,
    pub created: DateTime<Utc>,
    /// The `EventCreated` message id of its event, as the `correlation_id` of its
    /// `EnforcementCreated`.
    #[serde(default)]
    pub correlation_id: Option<uuid::Uuid>,
    /// Its event's `traceparent`.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// The action the rule asks for.
    #[serde(default)]
    pub action_ref: String,
    /// The rule's `action_params`, rendered for this event.
    #[serde(default)]
    pub action_params: Option<Value>,
    /// Why the parameters could not be rendered (the status is then `failed`).
    #[serde(default)]
    pub error: Option<String>,
    /// For a `once_after` rule: the window this enforcement sums up.
    #[serde(default)]
    pub throttle: Option<ThrottleSummary>,
}

/// An enforcement not yet stored. Storing is idempotent on `(rule, event)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEnforcement {
    pub rule: Id,
    pub rule_ref: String,
    pub trigger_ref: String,
    pub event: Id,
    pub payload: Value,
    pub condition: String,
    pub conditions: Value,
    #[serde(default)]
    pub correlation_id: Option<uuid::Uuid>,
    #[serde(default)]
    pub traceparent: Option<String>,
    pub action_ref: String,
    pub action_params: Option<Value>,
    /// Set when the parameters could not be rendered: the enforcement is stored `failed`.
    pub error: Option<String>,
    /// Its rule's throttle and the event's group: the store decides, in the same
    /// transaction, whether it is created now, held for its window or suppressed.
    #[serde(default)]
    pub throttle: Option<ThrottleClaim>,
    /// The window it sums up, once a held (`once_after`) enforcement goes out.
    #[serde(default)]
    pub summary: Option<ThrottleSummary>,
}

impl NewEnforcement {
    /// The enforcement as stored under `id` at `created`, for every store.
    pub fn stored(&self, id: Id, created: DateTime<Utc>) -> Enforcement {
        self.clone().into_stored(id, created)
    }

    /// The status it is stored with: failed when its action parameters could not be
    /// rendered.
    pub fn status(&self) -> &'static str {
        match self.error {
            Some(_) => ENFORCEMENT_FAILED,
            None => ENFORCEMENT_CREATED,
        }
    }

    /// Like [`stored`](Self::stored), moving the documents instead of copying them.
    pub fn into_stored(self, id: Id, created: DateTime<Utc>) -> Enforcement {
        let status = self.status();
        Enforcement {
            id,
            rule: self.rule,
            rule_ref: self.rule_ref,
            trigger_ref: self.trigger_ref,
            event: self.event,
            status: status.to_owned(),
            payload: self.payload,
            condition: self.condition,
            conditions: self.conditions,
            created,
            correlation_id: self.correlation_id,
            traceparent: self.traceparent,
            action_ref: self.action_ref,
            action_params: self.action_params,
            error: self.error,
            throttle: self.summary,
        }
    }
}

/// A message waiting in the transactional outbox, in the order it must be published.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub id: Id,
    pub message_id: uuid::Uuid,
    pub message_type: String,
    pub routing_key: String,
    /// The serialized [`crate::messages::Envelope`].
    pub body: String,
    /// Publishes the broker refused so far (a row is parked once it reaches
    /// `outbox.max_attempts`).
    pub attempts: u32,
}

/// An outbox row taken out of the publish order after the broker kept refusing it (or
/// no queue took it); it waits for an operator's `outbox retry`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParkedMessage {
    pub id: Id,
    pub message_id: uuid::Uuid,
    pub message_type: String,
    pub routing_key: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created: DateTime<Utc>,
    pub parked_at: DateTime<Utc>,
}

/// Everything a pack directory defines, validated and ready to be written in one
/// transaction. Refs are full refs (`<pack>.<name>`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PackDefinition {
    pub r#ref: String,
    pub label: String,
    pub description: Option<String>,
    pub version: String,
    pub triggers: Vec<TriggerDefinition>,
    pub sensors: Vec<SensorDefinition>,
    pub rules: Vec<RuleDefinition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TriggerDefinition {
    pub r#ref: String,
    pub label: String,
    pub description: Option<String>,
    pub param_schema: Option<Value>,
    pub payload_schema: Option<Value>,
    /// `false` turns the enforcement of `payload_schema` off.
    pub validate_payloads: bool,
    pub dedup: Option<ContentDedup>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SensorDefinition {
    pub r#ref: String,
    pub label: String,
    pub description: Option<String>,
    pub runtime_ref: String,
    pub entrypoint: String,
    /// Full ref of the trigger; it must be defined by this pack or already stored.
    pub trigger_ref: String,
    pub enabled: bool,
    pub poll_interval: Option<i64>,
    pub param_schema: Option<Value>,
    pub config: Value,
    pub pack_path: Option<String>,
    pub mode: Option<String>,
    pub pass_env: Vec<String>,
    /// A digest of a process sensor's code (see [`Sensor::code_digest`]).
    pub code_digest: Option<String>,
    pub dedup: Option<ContentDedup>,
    pub placement: Placement,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleDefinition {
    pub r#ref: String,
    pub label: String,
    pub description: Option<String>,
    pub trigger_ref: String,
    /// Full ref of the action. Actions belong to the executor; an unknown one is recorded
    /// by ref only.
    pub action_ref: String,
    pub conditions: Value,
    /// Parameters for the action; string values are templates over the event.
    pub action_params: Option<Value>,
    pub throttle: Option<Throttle>,
    pub enabled: bool,
}

/// What an upsert changed; loading the same pack twice reports zero changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PackUpsertSummary {
    pub created: u32,
    pub updated: u32,
    pub unchanged: u32,
}

impl PackUpsertSummary {
    pub fn changed(&self) -> bool {
        self.created > 0 || self.updated > 0
    }
}

/// The configuration snapshot stored with an event: what the trigger and the sensor looked
/// like when the event happened, so later edits do not rewrite history.
pub fn config_snapshot(trigger: &Trigger, sensor: Option<&Sensor>) -> Value {
    serde_json::json!({
        "trigger": {
            "id": trigger.id,
            "ref": trigger.r#ref,
            "label": trigger.label,
            "param_schema": trigger.param_schema,
            "payload_schema": trigger.payload_schema,
        },
        "sensor": sensor.map(|s| serde_json::json!({
            "id": s.id,
            "ref": s.r#ref,
            "runtime_ref": s.runtime_ref,
            "entrypoint": s.entrypoint,
            "poll_interval": s.poll_interval,
            "config": s.config,
        })),
    })
}
