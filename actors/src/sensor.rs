//! `SensorActor`: one per enabled sensor, the unit the supervisor restarts.
//!
//! The actor builds its sensor's driver in `pre_start` (so an unusable sensor is a start
//! failure) and runs it as a task it owns. When the driver fails, the actor fails with its
//! error and the supervisor applies the restart policy; when the actor stops, the task is
//! aborted, which drops the driver and whatever it holds.

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};

use crate::domain::{Event, NewEvent, Sensor, Trigger, config_snapshot};
use crate::pipeline::{EventAck, EventRequest, PipelineError, PipelineRefs};
use crate::ports::{SensorDriverFactory, SensorFailure, Store, StoreError};
use crate::status::{STDERR_TAIL_LINES, SharedActivity};

/// Everything a sensor driver may use: where detections go, the sensor's saved state,
/// its status counters, and the signal that it must stop.
#[derive(Clone)]
pub struct DetectionSink {
    sensor: Arc<Sensor>,
    trigger: Arc<Trigger>,
    refs: Arc<PipelineRefs>,
    store: Arc<dyn Store>,
    activity: SharedActivity,
    stop: watch::Receiver<bool>,
}

impl DetectionSink {
    pub fn new(
        sensor: Arc<Sensor>,
        trigger: Arc<Trigger>,
        refs: Arc<PipelineRefs>,
        store: Arc<dyn Store>,
        activity: SharedActivity,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            sensor,
            trigger,
            refs,
            store,
            activity,
            stop,
        }
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
    pub async fn emit(&self, payload: Value) -> Result<Event, PipelineError> {
        crate::pipeline::check_storable(&payload)?;
        let (reply, stored) = oneshot::channel();
        self.refs.submit(EventRequest {
            event: NewEvent {
                trigger: Some(self.trigger.id),
                trigger_ref: self.trigger.r#ref.clone(),
                config: config_snapshot(&self.trigger, Some(&self.sensor)),
                payload,
                source: Some(self.sensor.id),
                source_ref: Some(self.sensor.r#ref.clone()),
            },
            ack: EventAck::Stored(reply),
        })?;
        let event = stored.await.map_err(|_| PipelineError::NotRunning)?;
        let mut activity = self.activity.lock();
        activity.events_emitted += 1;
        activity.last_event_at = Some(event.created);
        Ok(event)
    }
}

pub enum SensorMsg {
    /// The driver task ended, with its result.
    DriverExited(Result<(), SensorFailure>),
}

pub struct SensorActor;

pub struct SensorArgs {
    pub sensor: Sensor,
    pub store: Arc<dyn Store>,
    pub factory: Arc<dyn SensorDriverFactory>,
    pub refs: Arc<PipelineRefs>,
    pub activity: SharedActivity,
    /// How long a stopping driver gets to release what it holds before it is aborted.
    pub stop_grace: Duration,
}

/// Aborts the driver task when the actor's state is dropped, which happens on stop and on
/// failure alike (ractor skips `post_stop` after a failure).
pub struct SensorState {
    driver_task: AbortHandle,
    monitor: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    stop_grace: Duration,
}

impl Drop for SensorState {
    fn drop(&mut self) {
        self.driver_task.abort();
    }
}

impl Actor for SensorActor {
    type Msg = SensorMsg;
    type State = SensorState;
    type Arguments = SensorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SensorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Bounded: the supervisor waits for this start and answers nobody meanwhile.
        let trigger = tokio::time::timeout(
            START_LOOKUP_TIMEOUT,
            args.store.trigger_by_ref(&args.sensor.trigger_ref),
        )
        .await
        .map_err(|_| {
            SensorFailure::new(format!(
                "the database did not return trigger '{}' within {} s",
                args.sensor.trigger_ref,
                START_LOOKUP_TIMEOUT.as_secs()
            ))
        })??
        .ok_or_else(|| {
            SensorFailure::new(format!(
                "sensor '{}' names unknown trigger '{}'",
                args.sensor.r#ref, args.sensor.trigger_ref
            ))
        })?;
        let mut driver = args.factory.create(&args.sensor)?;
        let stop_grace = if driver.stops_gracefully() {
            args.stop_grace
        } else {
            Duration::ZERO
        };
        let (stop, stop_signal) = watch::channel(false);
        let sink = DetectionSink::new(
            Arc::new(args.sensor),
            Arc::new(trigger),
            args.refs,
            args.store,
            args.activity,
            stop_signal,
        );
        let driver = tokio::spawn(async move { driver.run(sink).await });
        let driver_task = driver.abort_handle();
        // A second task reports how the driver ended, so a panic in sensor code reaches
        // the supervisor as a failure instead of vanishing with its task.
        let monitor = tokio::spawn(async move {
            let result = match driver.await {
                Ok(result) => result,
                Err(join_error) if join_error.is_panic() => Err(SensorFailure::new(format!(
                    "sensor panicked: {}",
                    panic_message(join_error.into_panic())
                ))),
                Err(_) => return,
            };
            // The actor may already be stopping; then nobody needs the result.
            let _ = myself.send_message(SensorMsg::DriverExited(result));
        });
        Ok(SensorState {
            driver_task,
            monitor: Some(monitor),
            stop,
            stop_grace,
        })
    }

    /// An orderly stop: signal the driver and give it the grace period to finish (a
    /// process sensor terminates its process group), then abort whatever is left.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = state.stop.send(true);
        if let Some(monitor) = state.monitor.take()
            && !state.stop_grace.is_zero()
        {
            let _ = tokio::time::timeout(state.stop_grace, monitor).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SensorMsg::DriverExited(Ok(())) => {
                myself.stop(Some(COMPLETED.to_owned()));
                Ok(())
            }
            SensorMsg::DriverExited(Err(failure)) => Err(failure.into()),
        }
    }
}

/// How long a starting sensor waits for its trigger's row.
const START_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Exit reason of a sensor whose driver finished its work.
pub const COMPLETED: &str = "completed";

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic".to_owned()
    }
}
