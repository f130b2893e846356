#![allow(dead_code)]
//! In-memory adapters for actor tests: a store, a publisher and scriptable sensor drivers.

use async_trait::async_trait;
use attune_actors::domain::*;
use attune_actors::messages::Envelope;
use attune_actors::ports::*;
use chrono::Utc;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The instance this store stores events for (`MatcherIdentity::default()`'s).
pub const LOCAL: &str = "local";

#[derive(Default)]
struct Inner {
    next_id: Id,
    triggers: Vec<Trigger>,
    sensors: Vec<Sensor>,
    rules: Vec<Rule>,
    events: Vec<Event>,
    enforcements: Vec<Enforcement>,
    outbox: Vec<OutboxEntry>,
    states: HashMap<String, Value>,
    /// Matcher watermarks by instance; this store stores for [`LOCAL`].
    watermarks: HashMap<String, Id>,
    /// Who stored each event that another instance stored (seeded by tests).
    stored_by: HashMap<Id, String>,
    /// Operator commands queued for a sensor's holder (every lease is this store's).
    commands: Vec<SensorCommand>,
    reload_generation: i64,
    /// Idempotency keys: (scope, key) → (first event, when stored).
    keys: HashMap<(String, String), (Id, chrono::DateTime<Utc>)>,
}

struct OutboxEntry {
    row: OutboxMessage,
    published: bool,
    parked: Option<chrono::DateTime<Utc>>,
    last_error: Option<String>,
}

impl OutboxEntry {
    fn new(row: OutboxMessage) -> Self {
        Self {
            row,
            published: false,
            parked: None,
            last_error: None,
        }
    }

    fn waiting(&self) -> bool {
        !self.published && self.parked.is_none()
    }
}

impl Inner {
    fn id(&mut self) -> Id {
        self.next_id += 1;
        self.next_id
    }
}

#[derive(Default, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    /// While true, every write fails as if the database were down.
    pub down: Arc<AtomicBool>,
    /// The next batch of events is committed but answered with an error, as when the
    /// connection breaks after the commit (an uncertain commit).
    pub lose_next_commit_answer: Arc<AtomicBool>,
    /// How many times a trigger was looked up by ref.
    pub trigger_lookups: Arc<AtomicU32>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("store lock")
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("memory store is down".into()))
        } else {
            Ok(())
        }
    }

    pub fn add_trigger(&self, trigger_ref: &str) -> Id {
        let mut inner = self.lock();
        let id = inner.id();
        let now = Utc::now();
        inner.triggers.push(Trigger {
            id,
            r#ref: trigger_ref.into(),
            pack: None,
            pack_ref: None,
            label: trigger_ref.into(),
            description: None,
            enabled: true,
            param_schema: None,
            payload_schema: None,
            validate_payloads: true,
            dedup: None,
            created: now,
            updated: now,
        });
        id
    }

    /// Adds an enabled sensor whose driver behaviour is named by `entrypoint` (see
    /// [`ScriptedFactory`]).
    pub fn add_sensor(&self, sensor_ref: &str, trigger_ref: &str, entrypoint: &str) -> Id {
        let mut inner = self.lock();
        let id = inner.id();
        let trigger = inner
            .triggers
            .iter()
            .find(|t| t.r#ref == trigger_ref)
            .map(|t| t.id)
            .unwrap_or(0);
        let now = Utc::now();
        inner.sensors.push(Sensor {
            id,
            r#ref: sensor_ref.into(),
            pack: None,
            pack_ref: None,
            label: sensor_ref.into(),
            description: None,
            entrypoint: entrypoint.into(),
            runtime: None,
            runtime_ref: "test".into(),
            trigger,
            trigger_ref: trigger_ref.into(),
            enabled: true,
            poll_interval: None,
            param_schema: None,
            config: json!({}),
            pack_path: None,
            mode: None,
            pass_env: Vec::new(),
            code_digest: None,
            dedup: None,
            created: now,
            updated: now,
            placement: Default::default(),
        });
        id
    }

    pub fn update_sensor(&self, sensor_ref: &str, change: impl FnOnce(&mut Sensor)) {
        let mut inner = self.lock();
        if let Some(sensor) = inner.sensors.iter_mut().find(|s| s.r#ref == sensor_ref) {
            change(sensor);
            sensor.updated = Utc::now();
        }
    }

    pub fn add_rule(&self, rule_ref: &str, trigger_ref: &str, conditions: Value) -> Id {
        let mut inner = self.lock();
        let id = inner.id();
        let now = Utc::now();
        inner.rules.push(Rule {
            id,
            r#ref: rule_ref.into(),
            pack: None,
            pack_ref: None,
            label: rule_ref.into(),
            description: None,
            action: None,
            action_ref: "core.noop".into(),
            trigger: 0,
            trigger_ref: trigger_ref.into(),
            conditions,
            action_params: None,
            throttle: None,
            enabled: true,
            created: now,
            updated: now,
        });
        id
    }

    pub fn matched_through_now(&self) -> Id {
        self.lock().watermarks.get(LOCAL).copied().unwrap_or(0)
    }

    /// Stores an event as another instance that then died before matching it: its
    /// watermark stays just below the event.
    pub fn add_event_of_dead_instance(
        &self,
        instance: &str,
        trigger_ref: &str,
        payload: Value,
    ) -> Id {
        let mut inner = self.lock();
        let id = inner.id();
        let event = NewEvent {
            trigger: None,
            trigger_ref: trigger_ref.to_owned(),
            config: Value::Null,
            payload,
            source: None,
            source_ref: None,
            idempotency_key: None,
            dedup_key: None,
            traceparent: None,
            lease: None,
        }
        .stored(id, Utc::now());
        inner.events.push(event);
        inner.stored_by.insert(id, instance.to_owned());
        inner
            .watermarks
            .entry(instance.to_owned())
            .or_insert(id - 1);
        id
    }

    pub fn watermark_of(&self, instance: &str) -> Option<Id> {
        self.lock().watermarks.get(instance).copied()
    }

    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    pub fn enforcements(&self) -> Vec<Enforcement> {
        self.lock().enforcements.clone()
    }

    /// Every stored event's payload, in id order.
    pub fn payloads(&self) -> Vec<Value> {
        self.lock()
            .events
            .iter()
            .map(|e| e.payload.clone())
            .collect()
    }

    pub fn events_of(&self, sensor_ref: &str) -> usize {
        self.lock()
            .events
            .iter()
            .filter(|e| e.source_ref.as_deref() == Some(sensor_ref))
            .count()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()
    }
    async fn enabled_sensors(&self) -> Result<Vec<Sensor>, StoreError> {
        self.check()?;
        Ok(self
            .lock()
            .sensors
            .iter()
            .filter(|s| s.enabled)
            .cloned()
            .collect())
    }
    async fn sensor_by_ref(&self, sensor_ref: &str) -> Result<Option<Sensor>, StoreError> {
        Ok(self
            .lock()
            .sensors
            .iter()
            .find(|s| s.r#ref == sensor_ref)
            .cloned())
    }
    async fn trigger_by_ref(&self, trigger_ref: &str) -> Result<Option<Trigger>, StoreError> {
        self.trigger_lookups.fetch_add(1, Ordering::SeqCst);
        Ok(self
            .lock()
            .triggers
            .iter()
            .find(|t| t.r#ref == trigger_ref)
            .cloned())
    }
    async fn enabled_rules_for_trigger(&self, trigger_ref: &str) -> Result<Vec<Rule>, StoreError> {
        Ok(self
            .lock()
            .rules
            .iter()
            .filter(|r| r.enabled && r.trigger_ref == trigger_ref)
            .cloned()
            .collect())
    }
    async fn rule_by_ref(&self, rule_ref: &str) -> Result<Option<Rule>, StoreError> {
        Ok(self
            .lock()
            .rules
            .iter()
            .find(|r| r.r#ref == rule_ref)
            .cloned())
    }
    async fn create_events(&self, events: Vec<NewEvent>) -> Result<Vec<EventWrite>, StoreError> {
        self.check()?;
        // A batch with a payload marked `"poison": true` is refused whole, as a database
        // refuses a transaction with one row it cannot take.
        if events.iter().any(|e| e.payload["poison"] == true) {
            return Err(StoreError::Invalid("poisoned payload".into()));
        }
        let mut inner = self.lock();
        let mut stored = Vec::new();
        for mut new in events {
            let now = Utc::now();
            let key = new.idempotency_key.take();
            if let Some(key) = &key
                && let Some((first, at)) = inner.keys.get(&(key.scope.clone(), key.key.clone()))
                && now.signed_duration_since(*at).to_std().unwrap_or_default() < key.window
            {
                let first = *first;
                let event = inner.events.iter().find(|e| e.id == first).cloned();
                stored.push(EventWrite::Repeat(event.expect("a key's event exists")));
                continue;
            }
            let id = inner.id();
            let event = new.stored(id, now);
            if let Some(key) = key {
                inner.keys.insert((key.scope, key.key), (id, now));
            }
            let envelope = Envelope::event_created(&event);
            let outbox_id = inner.id();
            inner
                .outbox
                .push(OutboxEntry::new(outbox_row(outbox_id, &envelope)));
            inner.events.push(event.clone());
            inner.watermarks.entry(LOCAL.to_owned()).or_insert(id - 1);
            stored.push(EventWrite::Stored(event));
        }
        if self.lose_next_commit_answer.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "connection lost after commit".into(),
            ));
        }
        Ok(stored)
    }
    async fn create_enforcements(
        &self,
        list: Vec<NewEnforcement>,
    ) -> Result<Vec<Option<Enforcement>>, StoreError> {
        // Throttles are the SQL stores' (tests/throttle.rs); here every match enforces.
        self.check()?;
        let mut inner = self.lock();
        let mut stored = Vec::new();
        for new in list {
            if let Some(existing) = inner
                .enforcements
                .iter()
                .find(|e| e.rule == new.rule && e.event == new.event)
            {
                stored.push(Some(existing.clone()));
                continue;
            }
            let id = inner.id();
            let enforcement = new.stored(id, Utc::now());
            let envelope = Envelope::enforcement_created(&enforcement);
            let outbox_id = inner.id();
            inner
                .outbox
                .push(OutboxEntry::new(outbox_row(outbox_id, &envelope)));
            inner.enforcements.push(enforcement.clone());
            stored.push(Some(enforcement));
        }
        Ok(stored)
    }
    async fn close_throttle_windows(
        &self,
        _now: chrono::DateTime<Utc>,
        _limit: u32,
    ) -> Result<ClosedWindows, StoreError> {
        self.check()?;
        Ok(ClosedWindows::default())
    }
    async fn throttle_window(
        &self,
        _rule_ref: &str,
        _group: &str,
    ) -> Result<Option<ThrottleWindow>, StoreError> {
        Ok(None)
    }
    async fn throttle_windows(&self, _limit: u32) -> Result<Vec<StoredWindow>, StoreError> {
        Ok(Vec::new())
    }
    // One instance, holding every lease: the SQL stores' coordination is tested in
    // tests/cluster.rs.
    async fn register_instance(&self, _instance: &InstanceRecord) -> Result<(), StoreError> {
        self.check()
    }
    async fn heartbeat_instance(
        &self,
        _id: &str,
        _at: chrono::DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.check()
    }
    async fn remove_instance(&self, _id: &str) -> Result<(), StoreError> {
        self.check()
    }
    async fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        Ok(Vec::new())
    }
    async fn acquire_lease(
        &self,
        _name: &str,
        _holder: &str,
        _now: chrono::DateTime<Utc>,
        _expires: chrono::DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        self.check()?;
        Ok(Some(1))
    }
    async fn release_lease(&self, _name: &str, _holder: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn leases(&self) -> Result<Vec<LeaseRecord>, StoreError> {
        Ok(Vec::new())
    }
    async fn renew_leases(
        &self,
        _holder: &str,
        _prefix: &str,
        _now: chrono::DateTime<Utc>,
        _expires: chrono::DateTime<Utc>,
    ) -> Result<Vec<LeaseRecord>, StoreError> {
        self.check()?;
        Ok(Vec::new())
    }
    async fn release_leases(&self, _holder: &str, _prefix: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn events_between(
        &self,
        instance: &str,
        after_id: Id,
        up_to: Id,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        self.check()?;
        let inner = self.lock();
        let stored_by = |id: &Id| inner.stored_by.get(id).map_or(LOCAL, String::as_str);
        Ok(inner
            .events
            .iter()
            .filter(|e| e.id > after_id && e.id <= up_to && stored_by(&e.id) == instance)
            .take(limit as usize)
            .cloned()
            .collect())
    }
    async fn last_event_id(&self) -> Result<Id, StoreError> {
        self.check()?;
        Ok(self.lock().events.last().map_or(0, |e| e.id))
    }
    async fn matched_through(&self, instance: &str) -> Result<Option<Id>, StoreError> {
        self.check()?;
        Ok(self.lock().watermarks.get(instance).copied())
    }
    async fn set_matched_through(&self, instance: &str, event_id: Id) -> Result<(), StoreError> {
        self.check()?;
        let mut inner = self.lock();
        let watermark = inner.watermarks.entry(instance.to_owned()).or_insert(0);
        *watermark = (*watermark).max(event_id);
        Ok(())
    }
    /// No heartbeats here: every other instance's watermark is orphaned.
    async fn orphaned_watermarks(
        &self,
        me: &str,
        _live_since: chrono::DateTime<Utc>,
    ) -> Result<Vec<Watermark>, StoreError> {
        self.check()?;
        let mut orphans: Vec<Watermark> = self
            .lock()
            .watermarks
            .iter()
            .filter(|(instance, _)| instance.as_str() != me)
            .map(|(instance, through)| Watermark {
                instance: instance.clone(),
                matched_through: *through,
            })
            .collect();
        orphans.sort_by(|a, b| a.instance.cmp(&b.instance));
        Ok(orphans)
    }
    async fn forget_watermark(&self, instance: &str) -> Result<bool, StoreError> {
        self.check()?;
        let mut inner = self.lock();
        let Some(through) = inner.watermarks.get(instance).copied() else {
            return Ok(false);
        };
        let above = inner.events.iter().any(|e| {
            e.id > through && inner.stored_by.get(&e.id).map_or(LOCAL, String::as_str) == instance
        });
        if above {
            return Ok(false);
        }
        inner.watermarks.remove(instance);
        Ok(true)
    }
    async fn send_sensor_command(&self, command: &SensorCommand) -> Result<(), StoreError> {
        self.check()?;
        self.lock().commands.push(command.clone());
        Ok(())
    }
    async fn take_sensor_commands(
        &self,
        _holder: &str,
        _now: chrono::DateTime<Utc>,
        _stale_before: chrono::DateTime<Utc>,
    ) -> Result<Vec<SensorCommand>, StoreError> {
        self.check()?;
        Ok(std::mem::take(&mut self.lock().commands))
    }
    async fn request_reload(&self) -> Result<i64, StoreError> {
        self.check()?;
        let mut inner = self.lock();
        inner.reload_generation += 1;
        Ok(inner.reload_generation)
    }
    async fn reload_generation(&self) -> Result<i64, StoreError> {
        self.check()?;
        Ok(self.lock().reload_generation)
    }
    async fn get_event(&self, id: Id) -> Result<Option<Event>, StoreError> {
        Ok(self.lock().events.iter().find(|e| e.id == id).cloned())
    }
    async fn recent_events(
        &self,
        trigger_ref: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        Ok(self
            .lock()
            .events
            .iter()
            .rev()
            .filter(|e| trigger_ref.is_none_or(|t| e.trigger_ref == t))
            .take(limit as usize)
            .cloned()
            .collect())
    }
    async fn recent_enforcements(
        &self,
        rule_ref: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Enforcement>, StoreError> {
        Ok(self
            .lock()
            .enforcements
            .iter()
            .rev()
            .filter(|e| rule_ref.is_none_or(|r| e.rule_ref == r))
            .take(limit as usize)
            .cloned()
            .collect())
    }
    async fn pending_outbox(
        &self,
        after: Id,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        self.check()?;
        Ok(self
            .lock()
            .outbox
            .iter()
            .filter(|entry| entry.waiting() && entry.row.id > after)
            .take(limit as usize)
            .map(|entry| entry.row.clone())
            .collect())
    }
    async fn mark_published(&self, ids: &[Id]) -> Result<(), StoreError> {
        self.check()?;
        for entry in self.lock().outbox.iter_mut() {
            if ids.contains(&entry.row.id) {
                entry.published = true;
            }
        }
        Ok(())
    }
    async fn outbox_backlog(&self) -> Result<u64, StoreError> {
        Ok(self.lock().outbox.iter().filter(|e| e.waiting()).count() as u64)
    }
    async fn record_outbox_refusals(&self, refusals: &[OutboxRefusal]) -> Result<(), StoreError> {
        self.check()?;
        let mut state = self.lock();
        for refusal in refusals {
            for entry in state.outbox.iter_mut().filter(|e| e.row.id == refusal.id) {
                entry.row.attempts += 1;
                entry.last_error = Some(refusal.error.clone());
                if refusal.park {
                    entry.parked = Some(Utc::now());
                }
            }
        }
        Ok(())
    }
    async fn parked_outbox(&self, limit: u32) -> Result<Vec<ParkedMessage>, StoreError> {
        self.check()?;
        Ok(self
            .lock()
            .outbox
            .iter()
            .filter(|e| !e.published)
            .filter_map(|e| {
                e.parked.map(|parked_at| ParkedMessage {
                    id: e.row.id,
                    message_id: e.row.message_id,
                    message_type: e.row.message_type.clone(),
                    routing_key: e.row.routing_key.clone(),
                    attempts: e.row.attempts,
                    last_error: e.last_error.clone(),
                    created: parked_at,
                    parked_at,
                })
            })
            .take(limit as usize)
            .collect())
    }
    async fn parked_count(&self) -> Result<u64, StoreError> {
        let inner = self.lock();
        Ok(inner
            .outbox
            .iter()
            .filter(|e| e.parked.is_some() && !e.published)
            .count() as u64)
    }
    async fn prune(&self, _cutoffs: PruneCutoffs, _limit: u32) -> Result<PruneCount, StoreError> {
        Ok(PruneCount::default())
    }
    async fn count_prunable(&self, _cutoffs: PruneCutoffs) -> Result<PruneCount, StoreError> {
        Ok(PruneCount::default())
    }
    async fn oldest_unpublished(&self) -> Result<Option<chrono::DateTime<Utc>>, StoreError> {
        Ok(None)
    }
    async fn retry_parked(&self, ids: Option<&[Id]>) -> Result<u64, StoreError> {
        self.check()?;
        let mut count = 0;
        for entry in self.lock().outbox.iter_mut() {
            if entry.parked.is_some() && ids.is_none_or(|ids| ids.contains(&entry.row.id)) {
                entry.parked = None;
                entry.row.attempts = 0;
                count += 1;
            }
        }
        Ok(count)
    }
    async fn sensor_state(&self, sensor_ref: &str) -> Result<Option<Value>, StoreError> {
        Ok(self.lock().states.get(sensor_ref).cloned())
    }
    async fn save_sensor_state(&self, sensor_ref: &str, state: &Value) -> Result<(), StoreError> {
        self.check()?;
        self.lock()
            .states
            .insert(sensor_ref.to_owned(), state.clone());
        Ok(())
    }
    async fn upsert_pack(&self, _pack: &PackDefinition) -> Result<PackUpsertSummary, StoreError> {
        Err(StoreError::Other(
            "packs are not supported by the memory store".into(),
        ))
    }
}

fn outbox_row(id: Id, envelope: &Envelope) -> OutboxMessage {
    OutboxMessage {
        id,
        message_id: envelope.message_id,
        message_type: envelope.message_type.as_str().into(),
        routing_key: envelope.routing_key().into(),
        body: envelope.to_json(),
        attempts: 0,
    }
}

/// Records what it publishes; `down` makes it fail like an unreachable broker, and a
/// message whose routing key is in `refuse` is refused like that.
#[derive(Default, Clone)]
pub struct MemoryPublisher {
    pub published: Arc<Mutex<Vec<OutboxMessage>>>,
    pub down: Arc<AtomicBool>,
    pub refuse: Arc<Mutex<HashMap<String, RefusalKind>>>,
    /// `Some(n)`: the link breaks once after `n` more messages (the rest of that batch
    /// unsettled), then works again.
    pub break_after: Arc<Mutex<Option<usize>>>,
}

#[async_trait]
impl Publisher for MemoryPublisher {
    async fn publish(&self, batch: &[OutboxMessage]) -> PublishReport {
        if self.down.load(Ordering::SeqCst) {
            return PublishReport::failed(BusError::Unavailable("memory broker is down".into()));
        }
        let refuse = self.refuse.lock().expect("lock").clone();
        let mut breaks = self.break_after.lock().expect("lock");
        let settled = match *breaks {
            Some(left) if left < batch.len() => {
                *breaks = None;
                left
            }
            Some(left) => {
                *breaks = Some(left - batch.len());
                batch.len()
            }
            None => batch.len(),
        };
        drop(breaks);
        let mut report = PublishReport::confirmed(settled);
        if settled < batch.len() {
            report.error = Some(BusError::Unavailable("memory broker link broke".into()));
        }
        for (index, message) in batch.iter().enumerate().take(settled) {
            match refuse.get(&message.routing_key) {
                Some(kind) => report.refused.push(Refusal {
                    index,
                    kind: *kind,
                    reason: format!("memory broker refuses {}", message.routing_key),
                }),
                None => self.published.lock().expect("lock").push(message.clone()),
            }
        }
        report
    }
    fn is_connected(&self) -> bool {
        !self.down.load(Ordering::SeqCst)
    }
    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// Builds drivers by the sensor's entrypoint:
/// - `tick`: emits `{"n": k}` every 10 ms;
/// - `fail`: fails at once while `healthy` is false, else behaves like `tick`;
/// - `panic`: panics at once while `healthy` is false, else like `tick`;
/// - `refuse`: refused by the factory (a start failure) while `healthy` is false;
/// - `fail_later`: fails after 100 ms of running;
/// - `graceful`: idles until asked to stop, then takes 50 ms to clean up and counts it in
///   `clean_stops`;
/// - `stubborn`: asks for the stop grace period and ignores the stop (a process that
///   ignores SIGTERM); only aborting it ends it.
#[derive(Default, Clone)]
pub struct ScriptedFactory {
    pub healthy: Arc<AtomicBool>,
    pub created: Arc<Mutex<HashMap<String, u32>>>,
    pub clean_stops: Arc<AtomicU32>,
}

impl ScriptedFactory {
    pub fn created(&self, sensor_ref: &str) -> u32 {
        self.created
            .lock()
            .expect("lock")
            .get(sensor_ref)
            .copied()
            .unwrap_or(0)
    }
}

impl SensorDriverFactory for ScriptedFactory {
    fn create(&self, sensor: &Sensor) -> Result<Box<dyn SensorDriver>, SensorFailure> {
        *self
            .created
            .lock()
            .expect("lock")
            .entry(sensor.r#ref.clone())
            .or_default() += 1;
        let healthy = self.healthy.load(Ordering::SeqCst);
        if sensor.entrypoint == "refuse" && !healthy {
            return Err(SensorFailure::new("refused: bad config"));
        }
        Ok(Box::new(Scripted {
            behaviour: sensor.entrypoint.clone(),
            healthy,
            ticks: AtomicU32::new(0),
            clean_stops: self.clean_stops.clone(),
        }))
    }
}

struct Scripted {
    behaviour: String,
    healthy: bool,
    ticks: AtomicU32,
    clean_stops: Arc<AtomicU32>,
}

#[async_trait]
impl SensorDriver for Scripted {
    async fn run(&mut self, sink: DetectionSink) -> Result<(), SensorFailure> {
        match (self.behaviour.as_str(), self.healthy) {
            ("fail", false) => return Err(SensorFailure::new("boom")),
            ("panic", false) => panic!("sensor panicked"),
            ("graceful", _) => {
                sink.stopping().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.clean_stops.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            ("stubborn", _) => std::future::pending::<()>().await,
            ("fail_later", _) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(SensorFailure::new("failed after running a while"));
            }
            _ => {}
        }
        loop {
            sink.record_poll();
            let n = self.ticks.fetch_add(1, Ordering::SeqCst);
            sink.emit(json!({"n": n}))
                .await
                .map_err(|e| SensorFailure::new(e.to_string()))?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn stops_gracefully(&self) -> bool {
        matches!(self.behaviour.as_str(), "graceful" | "stubborn")
    }
}

/// Polls `check` until it holds or the deadline passes.
pub async fn wait_until<F: FnMut() -> bool>(what: &str, timeout: Duration, mut check: F) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
