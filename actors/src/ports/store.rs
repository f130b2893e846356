//! The storage port: everything the actor tree reads from and writes to the database.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::{
    Enforcement, Event, EventWrite, Id, InstanceRecord, LeaseRecord, NewEnforcement, NewEvent,
    OutboxMessage, PackDefinition, PackUpsertSummary, ParkedMessage, PruneCount, PruneCutoffs,
    Rule, Sensor, SensorCommand, ThrottleWindow, Trigger, Watermark,
};

/// One outbox row the broker refused, as [`Store::record_outbox_refusals`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRefusal {
    pub id: Id,
    pub error: String,
    /// Take it out of the publish order (parked), rather than retry it later.
    pub park: bool,
}

/// What [`Store::close_throttle_windows`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClosedWindows {
    /// The enforcements emitted for ended `once_after` windows.
    pub enforcements: Vec<Enforcement>,
    /// When the next stored window ends, if any is left.
    pub next_close: Option<DateTime<Utc>>,
}

/// A group's window, with whose it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredWindow {
    pub rule_ref: String,
    pub group: String,
    pub mode: &'static str,
    pub opened: DateTime<Utc>,
    pub closes: DateTime<Utc>,
    pub matched: u64,
    pub first_event: Id,
    pub last_event: Id,
}

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
    /// An event came from a sensor whose lease has since passed to another generation
    /// (its instance was paused or cut off past the lease's expiry): nothing was written.
    #[error("lease '{lease}' is no longer held in generation {generation}")]
    Fenced { lease: String, generation: i64 },
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
    /// is in the order of the input. An event whose idempotency key was stored within the
    /// key's window (or earlier in the same batch) is not stored: it comes back as
    /// [`EventWrite::Repeat`] of the first event, and its key is stored with the first.
    async fn create_events(&self, events: Vec<NewEvent>) -> Result<Vec<EventWrite>, StoreError>;

    /// Stores enforcements with their `EnforcementCreated` outbox rows in one transaction.
    /// Idempotent on `(rule, event)`: an existing pair is returned as stored, without a
    /// second outbox row. The result is in the order of the input.
    ///
    /// An enforcement with a [`throttle`](NewEnforcement::throttle) claim is decided in
    /// the same transaction against its group's stored window ([`decide`]): `None` when it
    /// was suppressed or held for its window (`once_after`); a held window's enforcement
    /// goes out from [`close_throttle_windows`](Self::close_throttle_windows).
    ///
    /// [`decide`]: crate::domain::decide
    async fn create_enforcements(
        &self,
        enforcements: Vec<NewEnforcement>,
    ) -> Result<Vec<Option<Enforcement>>, StoreError>;

    /// [`create_enforcements`](Self::create_enforcements), then advances `matched`'s
    /// instance to `matched.matched_through` as
    /// [`set_matched_through`](Self::set_matched_through) does; a database store does both
    /// in the one transaction, so a batch of matches costs one commit.
    async fn create_enforcements_through(
        &self,
        enforcements: Vec<NewEnforcement>,
        matched: &Watermark,
    ) -> Result<Vec<Option<Enforcement>>, StoreError> {
        let stored = self.create_enforcements(enforcements).await?;
        self.set_matched_through(&matched.instance, matched.matched_through)
            .await?;
        Ok(stored)
    }

    /// Emits the held enforcement of every `once_after` window that ended by `now` (at most
    /// `limit`), each with its outbox row, and forgets ended `once_within` windows. Safe
    /// to call from several instances at once: a window goes out once.
    async fn close_throttle_windows(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<ClosedWindows, StoreError>;

    /// The window a rule's group is in, if any (for `rule test --explain`).
    async fn throttle_window(
        &self,
        rule_ref: &str,
        group: &str,
    ) -> Result<Option<ThrottleWindow>, StoreError>;

    /// Every stored throttle window, soonest to close first (for `GET /throttles`).
    async fn throttle_windows(&self, limit: u32) -> Result<Vec<StoredWindow>, StoreError>;

    /// Registers this instance (or refreshes its row after a restart with the same id).
    async fn register_instance(&self, instance: &InstanceRecord) -> Result<(), StoreError>;

    /// Stamps the instance's heartbeat.
    async fn heartbeat_instance(&self, id: &str, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Removes the instance's row (it is stopping).
    async fn remove_instance(&self, id: &str) -> Result<(), StoreError>;

    /// Every registered instance, live or not, by id.
    async fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError>;

    /// Takes or renews lease `name` for `holder` until `expires`: granted when it is free,
    /// expired by `now`, or held by `holder` already. `Some(generation)` when granted (the
    /// generation grows when the holder changes), `None` when another holds it.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError>;

    /// Lets lease `name` go at once, if `holder` holds it, so another instance may take it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Every lease, by name.
    async fn leases(&self) -> Result<Vec<LeaseRecord>, StoreError>;

    /// Extends every unexpired lease `holder` holds whose name starts with `prefix` until
    /// `expires`, in one statement, and returns them; a lease it held that is missing from
    /// the answer has expired (and may be another's now).
    async fn renew_leases(
        &self,
        holder: &str,
        prefix: &str,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<Vec<LeaseRecord>, StoreError>;

    /// Lets every lease of `holder` whose name starts with `prefix` go at once.
    async fn release_leases(&self, holder: &str, prefix: &str) -> Result<(), StoreError>;

    /// Queues an operator command for whichever instance holds the sensor's lease.
    async fn send_sensor_command(&self, command: &SensorCommand) -> Result<(), StoreError>;

    /// Takes (removes and returns, oldest first) the queued commands of the sensors whose
    /// lease `holder` holds at `now`; also drops commands queued before `stale_before`,
    /// which no holder took (the sensor is not running anywhere).
    async fn take_sensor_commands(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<Vec<SensorCommand>, StoreError>;

    /// Asks every instance to reconcile (`POST /reload` on any of them); returns the new
    /// reload generation.
    async fn request_reload(&self) -> Result<i64, StoreError>;

    /// The reload generation: an instance that sees it grow reconciles.
    async fn reload_generation(&self) -> Result<i64, StoreError>;

    async fn get_event(&self, id: Id) -> Result<Option<Event>, StoreError>;

    /// Events `instance` stored with an id in `(after_id, up_to]`, lowest id first.
    async fn events_between(
        &self,
        instance: &str,
        after_id: Id,
        up_to: Id,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError>;

    /// The highest event id (0 when there is none).
    async fn last_event_id(&self) -> Result<Id, StoreError>;

    /// `instance`'s matcher watermark: every event it stored up to this id is matched.
    /// `None` when it has none: it never stored an event, or all it stored are matched and
    /// the watermark was forgotten. Each event row names the instance that stored it (the
    /// one the store was opened for), and the first batch an instance stores gives it a
    /// watermark just below that batch.
    async fn matched_through(&self, instance: &str) -> Result<Option<Id>, StoreError>;

    /// Advances `instance`'s watermark; it never moves back.
    async fn set_matched_through(&self, instance: &str, event_id: Id) -> Result<(), StoreError>;

    /// The watermarks of instances other than `me` with no heartbeat since `live_since`
    /// (stopped, killed or cut off): what they stored above them a live instance matches.
    async fn orphaned_watermarks(
        &self,
        me: &str,
        live_since: DateTime<Utc>,
    ) -> Result<Vec<Watermark>, StoreError>;

    /// Removes `instance`'s watermark once every event it stored is at or below it (after
    /// waiting for a transaction storing its events, if one is open), with its adoption
    /// lease; returns whether it did. An instance that stores again gets a new one.
    async fn forget_watermark(&self, instance: &str) -> Result<bool, StoreError>;

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

    /// Unpublished outbox rows that are not parked, with an id above `after` (`0`: all),
    /// lowest id first.
    async fn pending_outbox(&self, after: Id, limit: u32)
    -> Result<Vec<OutboxMessage>, StoreError>;

    async fn mark_published(&self, ids: &[Id]) -> Result<(), StoreError>;

    /// How many outbox rows wait to be published (parked rows not counted).
    async fn outbox_backlog(&self) -> Result<u64, StoreError>;

    /// Records that the broker refused these outbox rows, in one transaction: one more
    /// attempt each, with its error. A row with `park` also leaves the publish order until
    /// [`Store::retry_parked`].
    async fn record_outbox_refusals(&self, refusals: &[OutboxRefusal]) -> Result<(), StoreError>;

    /// Parked outbox rows, lowest id first.
    async fn parked_outbox(&self, limit: u32) -> Result<Vec<ParkedMessage>, StoreError>;

    /// How many outbox rows are parked.
    async fn parked_count(&self) -> Result<u64, StoreError>;

    /// When the oldest outbox row waiting to be published was written (`None`: none
    /// waits).
    async fn oldest_unpublished(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Removes one batch of what retention no longer keeps: at most `limit` rows of each
    /// kind past its cut-off. Never an unpublished outbox row, never an event the matcher
    /// has not matched yet; enforcements go with their events.
    async fn prune(&self, cutoffs: PruneCutoffs, limit: u32) -> Result<PruneCount, StoreError>;

    /// How many rows [`Store::prune`] would remove in all (idempotency keys not counted).
    async fn count_prunable(&self, cutoffs: PruneCutoffs) -> Result<PruneCount, StoreError>;

    /// Connections of the pool: `(open, idle)`, for metrics; `None` when not pooled.
    fn pool_usage(&self) -> Option<(u32, u32)> {
        None
    }

    /// Puts parked rows back into the publish order with their attempts reset: those
    /// listed, or every parked row when `ids` is `None`. Returns how many went back.
    async fn retry_parked(&self, ids: Option<&[Id]>) -> Result<u64, StoreError>;

    /// The state a sensor saved last (`None` if it never saved any).
    async fn sensor_state(&self, sensor_ref: &str) -> Result<Option<Value>, StoreError>;

    /// Replaces the state of a sensor.
    async fn save_sensor_state(&self, sensor_ref: &str, state: &Value) -> Result<(), StoreError>;

    /// Writes a whole pack in one transaction: all of it or nothing. Writing the same
    /// definition twice changes nothing (and leaves `updated` as it was).
    async fn upsert_pack(&self, pack: &PackDefinition) -> Result<PackUpsertSummary, StoreError>;
}
