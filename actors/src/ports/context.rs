//! The sensor's context: what a running driver is handed to report detections, keep its
//! state and learn that it must stop.

use chrono::Utc;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::{Semaphore, oneshot, watch};

use crate::domain::{
    Event, EventOrigin, EventWrite, LeaseClaim, NewEvent, Sensor, Trigger, config_snapshot,
};
use crate::grouping::DedupKey;
use crate::ports::{
    EventAck, EventIntake, EventRequest, IntakeError, Permit, Store, StoreError, check_storable,
};
use crate::status::{STDERR_TAIL_LINES, SharedActivity};

/// How many sensors load their saved state at the same time, process-wide.
static STATE_LOADS: Semaphore = Semaphore::const_new(32);

/// Everything a sensor driver may use: where detections go, the sensor's saved state,
/// its status counters, and the signal that it must stop.
#[derive(Clone)]
pub struct DetectionSink {
    sensor: Arc<Sensor>,
    trigger: Arc<Trigger>,
    intake: Arc<dyn EventIntake>,
    store: Arc<dyn Store>,
    activity: SharedActivity,
    stop: watch::Receiver<bool>,
    /// The sensor's `dedup` (or its trigger's), compiled.
    dedup: Option<Arc<DedupKey>>,
    /// The lease this run of the sensor holds, carried by every event it emits.
    lease: Option<LeaseClaim>,
}

impl DetectionSink {
    pub fn new(
        sensor: Arc<Sensor>,
        trigger: Arc<Trigger>,
        intake: Arc<dyn EventIntake>,
        store: Arc<dyn Store>,
        activity: SharedActivity,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let dedup = DedupKey::of_source(&trigger, Some(&sensor)).map(Arc::new);
        Self {
            sensor,
            trigger,
            intake,
            store,
            activity,
            stop,
            dedup,
            lease: None,
        }
    }

    /// Ties the sensor's events to the lease generation it runs under: the store refuses
    /// them once another instance holds the lease.
    pub fn with_lease(mut self, lease: Option<LeaseClaim>) -> Self {
        self.lease = lease;
        self
    }

    pub fn sensor(&self) -> &Sensor {
        &self.sensor
    }

    pub fn trigger(&self) -> &Trigger {
        &self.trigger
    }

    /// Resolves once the sensor is asked to stop (operator stop, restart, reconcile,
    /// shutdown). A driver that holds resources (processes, listeners) selects on this to
    /// release them in an orderly way; one that does not is simply dropped.
    pub async fn stopping(&self) {
        let mut stop = self.stop.clone();
        // An error means the actor is gone: stopping as well.
        let _ = stop.wait_for(|stop| *stop).await;
    }

    /// The state this sensor saved last, across polls and restarts.
    pub async fn load_state(&self) -> Result<Option<Value>, StoreError> {
        // Every sensor loads its state as it starts; a start of 100,000 timers would
        // otherwise hold 100,000 queries in flight at once, and the memory they take
        // stays with the process after they are answered. The permit is never closed.
        let _permit = STATE_LOADS.acquire().await;
        self.store.sensor_state(&self.sensor.r#ref).await
    }

    /// Saves the sensor's state. Callers save only after the events that came before it
    /// are stored, so a restart never skips an event the state claims was seen.
    pub async fn save_state(&self, state: &Value) -> Result<(), StoreError> {
        self.store
            .save_sensor_state(&self.sensor.r#ref, state)
            .await
    }

    /// Counts an output line that was not a valid protocol line.
    pub fn record_bad_output(&self) {
        self.activity.lock().bad_output_count += 1;
    }

    /// Keeps a line the sensor wrote to stderr for the status (the last few only).
    pub fn record_stderr(&self, line: &str) {
        let mut activity = self.activity.lock();
        if activity.stderr_tail.len() >= STDERR_TAIL_LINES {
            activity.stderr_tail.remove(0);
        }
        activity.stderr_tail.push(line.to_owned());
    }

    /// Records that the sensor looked (a poll, a timer tick), whether or not it found
    /// anything.
    pub fn record_poll(&self) {
        self.activity.lock().last_poll = Some(Utc::now());
    }

    /// Turns a payload into an event of the sensor's trigger and waits until it is stored.
    /// While `pipeline.max_pending` events already wait, it first waits for room: a
    /// sensor that detects faster than the database stores is slowed, not buffered.
    pub async fn emit(&self, payload: Value) -> Result<Event, IntakeError> {
        Ok(self
            .emit_with(payload, EventOrigin::default())
            .await?
            .into_event())
    }

    /// Like [`emit`](Self::emit), with what the request adds: an idempotency key makes a
    /// repeat within its window store nothing and answer [`EventWrite::Repeat`] (a timer
    /// keys each scheduled instant, so an instant fired again after a move is stored once).
    pub async fn emit_with(
        &self,
        payload: Value,
        origin: EventOrigin,
    ) -> Result<EventWrite, IntakeError> {
        self.check(&payload)?;
        let permit = self.intake.admission().admit().await?;
        self.submit(payload, origin, permit).await
    }

    /// Like [`emit`](Self::emit) for a caller that can tell its client to come back (a
    /// webhook): refused at once with [`IntakeError::Overloaded`] when there is no room.
    /// With an idempotency key in `origin`, a repeat of it within its window stores
    /// nothing and answers [`EventWrite::Repeat`] with the first event.
    pub async fn try_emit(
        &self,
        payload: Value,
        origin: EventOrigin,
    ) -> Result<EventWrite, IntakeError> {
        self.check(&payload)?;
        let permit = self.intake.admission().try_admit()?;
        self.submit(payload, origin, permit).await
    }

    /// What is refused before an event waits for room: a payload no database can store,
    /// or one its trigger's schema refuses.
    fn check(&self, payload: &Value) -> Result<(), IntakeError> {
        check_storable(payload)?;
        self.intake.check_payload(&self.trigger, payload)
    }

    async fn submit(
        &self,
        payload: Value,
        origin: EventOrigin,
        permit: Permit,
    ) -> Result<EventWrite, IntakeError> {
        let (reply, stored) = oneshot::channel();
        let dedup_key = self.dedup.as_ref().and_then(|dedup| {
            dedup.key_for(&payload, &self.trigger.r#ref, Some(&self.sensor.r#ref))
        });
        self.intake.submit(EventRequest {
            event: NewEvent {
                trigger: Some(self.trigger.id),
                trigger_ref: self.trigger.r#ref.clone(),
                config: config_snapshot(&self.trigger, Some(&self.sensor)),
                payload,
                source: Some(self.sensor.id),
                source_ref: Some(self.sensor.r#ref.clone()),
                idempotency_key: origin.idempotency_key,
                dedup_key,
                traceparent: origin.traceparent,
                lease: self.lease.clone(),
            },
            ack: EventAck::Stored(reply),
            permit,
        })?;
        let write = match stored.await.map_err(|_| IntakeError::NotRunning)? {
            Ok(write) => write,
            Err(fenced @ IntakeError::Fenced { .. }) => {
                self.activity.lock().fenced += 1;
                return Err(fenced);
            }
            Err(other) => return Err(other),
        };
        let mut activity = self.activity.lock();
        match &write {
            EventWrite::Stored(event) => {
                activity.events_emitted += 1;
                activity.last_event_at = Some(event.created);
            }
            EventWrite::Repeat(_) => activity.duplicates += 1,
        }
        drop(activity);
        Ok(write)
    }
}
