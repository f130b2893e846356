//! Ports: the traits through which the actor tree reaches the outside world.
//!
//! Adapters in the `attune-sensor` binary crate implement them (PostgreSQL, SQLite,
//! RabbitMQ, the in-process bus, sensor runtimes); tests implement them in memory.

use async_trait::async_trait;
use serde_json::Value;

use crate::domain::{
    Enforcement, Event, Id, NewEnforcement, NewEvent, OutboxMessage, PackDefinition,
    PackUpsertSummary, Rule, Sensor, Trigger,
};
use crate::sensor::DetectionSink;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or the connection broke; worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A pack or row was refused (constraint, unknown reference, bad data).
    #[error("{0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Other(String),
}

/// Persistence of everything the sensor service reads and writes.
///
/// Writes that produce messages (`create_events`, `create_enforcements`) also write the
/// matching outbox rows in the same transaction, so a stored row is never left without
/// its message and a message never announces a row that was rolled back.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Succeeds when the database answers a trivial query.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Enabled sensors, oldest first.
    async fn enabled_sensors(&self) -> Result<Vec<Sensor>, StoreError>;

    async fn sensor_by_ref(&self, sensor_ref: &str) -> Result<Option<Sensor>, StoreError>;

    async fn trigger_by_ref(&self, trigger_ref: &str) -> Result<Option<Trigger>, StoreError>;

    /// Enabled rules of a trigger, oldest first.
    async fn enabled_rules_for_trigger(&self, trigger_ref: &str) -> Result<Vec<Rule>, StoreError>;

    async fn rule_by_ref(&self, rule_ref: &str) -> Result<Option<Rule>, StoreError>;

    /// Stores events with their `EventCreated` outbox rows in one transaction. The result
    /// is in the order of the input.
    async fn create_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError>;

    /// Stores enforcements with their `EnforcementCreated` outbox rows in one transaction.
    /// Idempotent on `(rule, event)`: an existing pair is returned as stored, without a
    /// second outbox row. The result is in the order of the input.
    async fn create_enforcements(
        &self,
        enforcements: Vec<NewEnforcement>,
    ) -> Result<Vec<Enforcement>, StoreError>;

    async fn get_event(&self, id: Id) -> Result<Option<Event>, StoreError>;

    /// Events with an id in `(after_id, up_to]`, lowest id first.
    async fn events_between(
        &self,
        after_id: Id,
        up_to: Id,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError>;

    /// The highest event id (0 when there is none).
    async fn last_event_id(&self) -> Result<Id, StoreError>;

    /// The rule matcher's watermark: every event up to this id is matched (0 at first).
    async fn matched_through(&self) -> Result<Id, StoreError>;

    /// Advances the watermark; it never moves back.
    async fn set_matched_through(&self, event_id: Id) -> Result<(), StoreError>;

    /// Newest first; all triggers when `trigger_ref` is `None`.
    async fn recent_events(
        &self,
        trigger_ref: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError>;

    /// Newest first; all rules when `rule_ref` is `None`.
    async fn recent_enforcements(
        &self,
        rule_ref: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Enforcement>, StoreError>;

    /// Unpublished outbox rows, lowest id first.
    async fn pending_outbox(&self, limit: u32) -> Result<Vec<OutboxMessage>, StoreError>;

    async fn mark_published(&self, ids: &[Id]) -> Result<(), StoreError>;

    /// How many outbox rows wait to be published.
    async fn outbox_backlog(&self) -> Result<u64, StoreError>;

    /// The state a sensor saved last (`None` if it never saved any).
    async fn sensor_state(&self, sensor_ref: &str) -> Result<Option<Value>, StoreError>;

    /// Replaces the state of a sensor.
    async fn save_sensor_state(&self, sensor_ref: &str, state: &Value) -> Result<(), StoreError>;

    /// Writes a whole pack in one transaction: all of it or nothing. Writing the same
    /// definition twice changes nothing (and leaves `updated` as it was).
    async fn upsert_pack(&self, pack: &PackDefinition) -> Result<PackUpsertSummary, StoreError>;
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    #[error("broker refused message {message_id}: {reason}")]
    Nacked {
        message_id: uuid::Uuid,
        reason: String,
    },
}

/// What a publish achieved: the first `confirmed` messages of the batch were confirmed by
/// the broker; `error` says why the rest were not.
#[derive(Debug, Default)]
pub struct PublishReport {
    pub confirmed: usize,
    pub error: Option<BusError>,
}

/// The message bus, seen from the outbox publisher.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes the batch in order, keeping the messages in flight together, and waits
    /// for the broker's confirms.
    async fn publish(&self, batch: &[OutboxMessage]) -> PublishReport;

    /// Whether the last attempt to reach the broker succeeded (for readiness).
    fn is_connected(&self) -> bool;

    /// Connects now if not connected. The outbox publisher calls this when it has nothing
    /// to publish, so readiness and reconnection do not wait for the next message.
    async fn connect(&self) -> Result<(), BusError> {
        Ok(())
    }

    /// Closes the connection after the last publish, on shutdown.
    async fn close(&self) {}

    /// A short name for status output (`rabbitmq`, `in-process`).
    fn kind(&self) -> &'static str;
}

/// Why a sensor failed. The text ends up in the sensor's status as `last_error`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SensorFailure(pub String);

impl SensorFailure {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The code of one running sensor: a timer, a webhook listener, a supervised process.
#[async_trait]
pub trait SensorDriver: Send + 'static {
    /// Runs until the sensor fails (an `Err`) or has nothing more to do (`Ok`, e.g. a
    /// one-shot date timer). The future is dropped to stop the sensor, so a driver must
    /// release what it holds (processes, listeners) on drop.
    async fn run(&mut self, sink: DetectionSink) -> Result<(), SensorFailure>;

    /// True for drivers that watch [`DetectionSink::stopping`] and release what they hold
    /// (a process group, a listener) before returning. Those get the stop grace period;
    /// the others are dropped at once.
    fn stops_gracefully(&self) -> bool {
        false
    }
}

/// Builds the driver of a sensor from its stored definition.
pub trait SensorDriverFactory: Send + Sync + 'static {
    /// Refuses a sensor whose runtime or config is unusable; that refusal is a start
    /// failure under the restart policy.
    fn create(&self, sensor: &Sensor) -> Result<Box<dyn SensorDriver>, SensorFailure>;
}
