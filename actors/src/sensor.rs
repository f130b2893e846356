//! `SensorActor`: one per enabled sensor, the unit the supervisor restarts.
//!
//! The actor builds its sensor's driver in `pre_start` (so an unusable sensor is a start
//! failure) and runs it as a task it owns. When the driver fails, the actor fails with its
//! error and the supervisor applies the restart policy; when the actor stops, the task is
//! aborted, which drops the driver and whatever it holds.

use futures_util::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use crate::domain::{LeaseClaim, Sensor, Trigger};
use crate::ports::{DetectionSink, EventIntake, SensorDriverFactory, SensorFailure, Store};
use crate::status::SharedActivity;

/// What a sensor actor hears. Operators and the supervisor stop it through ractor's own
/// stop and kill; the only message is news from its driver.
pub enum SensorMsg {
    /// The driver task ended: `Ok` when it had nothing more to do (the actor completes),
    /// `Err` when it failed (the actor fails, and the restart policy applies).
    DriverExited(Result<(), SensorFailure>),
}

pub struct SensorActor;

pub struct SensorArgs {
    /// Shared with the supervisor's entry, so a sensor is held once however it runs.
    pub sensor: Arc<Sensor>,
    /// Its trigger, looked up by the supervisor and shared by every sensor of that
    /// trigger.
    pub trigger: Arc<Trigger>,
    pub factory: Arc<dyn SensorDriverFactory>,
    pub store: Arc<dyn Store>,
    /// Where the sensor's events go.
    pub intake: Arc<dyn EventIntake>,
    pub activity: SharedActivity,
    /// How long a stopping driver gets to release what it holds before it is aborted.
    pub stop_grace: Duration,
    /// The lease this run holds (several instances on one database); its events carry it.
    pub lease: Option<LeaseClaim>,
}

/// The running driver of one sensor actor. Aborts the driver task when dropped, which
/// happens on stop and on failure alike (ractor skips `post_stop` after a failure).
pub struct RunningDriver {
    driver_task: AbortHandle,
    finished: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    stop_grace: Duration,
}

impl Drop for RunningDriver {
    fn drop(&mut self) {
        self.driver_task.abort();
    }
}

impl Actor for SensorActor {
    type Msg = SensorMsg;
    type State = RunningDriver;
    type Arguments = SensorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SensorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut driver = args.factory.create(&args.sensor)?;
        let stop_grace = if driver.stops_gracefully() {
            args.stop_grace
        } else {
            Duration::ZERO
        };
        let (stop, stop_signal) = watch::channel(false);
        let sink = DetectionSink::new(
            args.sensor,
            args.trigger,
            args.intake,
            args.store,
            args.activity,
            stop_signal,
        )
        .with_lease(args.lease);
        // The task that runs the driver also reports how it ended, so a panic in sensor
        // code reaches the supervisor as a failure instead of vanishing with its task;
        // one task per sensor, not two, because a host may run a hundred thousand.
        let driver = tokio::spawn(async move {
            let result = match AssertUnwindSafe(driver.run(sink)).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => Err(SensorFailure::new(format!(
                    "sensor panicked: {}",
                    panic_message(panic)
                ))),
            };
            // The actor may already be stopping; then nobody needs the result.
            let _ = myself.send_message(SensorMsg::DriverExited(result));
        });
        Ok(RunningDriver {
            driver_task: driver.abort_handle(),
            finished: Some(driver),
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
        if let Some(finished) = state.finished.take()
            && !state.stop_grace.is_zero()
        {
            let _ = tokio::time::timeout(state.stop_grace, finished).await;
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
