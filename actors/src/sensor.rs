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
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::domain::{Event, NewEvent, Sensor, Trigger, config_snapshot};
use crate::pipeline::{EventAck, EventRequest, PipelineError, PipelineRefs};
use crate::ports::{SensorDriverFactory, SensorFailure, Store};
use crate::status::SharedActivity;

/// Where a sensor driver hands what it detected.
#[derive(Clone)]
pub struct DetectionSink {
    sensor: Arc<Sensor>,
    trigger: Arc<Trigger>,
    refs: Arc<PipelineRefs>,
    activity: SharedActivity,
}

impl DetectionSink {
    pub fn new(
        sensor: Arc<Sensor>,
        trigger: Arc<Trigger>,
        refs: Arc<PipelineRefs>,
        activity: SharedActivity,
    ) -> Self {
        Self {
            sensor,
            trigger,
            refs,
            activity,
        }
    }

    pub fn sensor(&self) -> &Sensor {
        &self.sensor
    }

    /// Records that the sensor looked (a poll, a timer tick), whether or not it found
    /// anything.
    pub fn record_poll(&self) {
        self.activity.lock().last_poll = Some(Utc::now());
    }

    /// Turns a payload into an event of the sensor's trigger and waits until it is stored.
    pub async fn emit(&self, payload: Value) -> Result<Event, PipelineError> {
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
}

/// Aborts the driver task when the actor's state is dropped, which happens on stop and on
/// failure alike (ractor skips `post_stop` after a failure).
pub struct SensorState {
    driver_task: AbortHandle,
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
        let trigger = args
            .store
            .trigger_by_ref(&args.sensor.trigger_ref)
            .await?
            .ok_or_else(|| {
                SensorFailure::new(format!(
                    "sensor '{}' names unknown trigger '{}'",
                    args.sensor.r#ref, args.sensor.trigger_ref
                ))
            })?;
        let mut driver = args.factory.create(&args.sensor)?;
        let sink = DetectionSink::new(
            Arc::new(args.sensor),
            Arc::new(trigger),
            args.refs,
            args.activity,
        );
        let driver = tokio::spawn(async move { driver.run(sink).await });
        let driver_task = driver.abort_handle();
        // A second task reports how the driver ended, so a panic in sensor code reaches
        // the supervisor as a failure instead of vanishing with its task.
        tokio::spawn(async move {
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
        Ok(SensorState { driver_task })
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
