//! Sensor children: starting one, handling its failure under the restart policy, and
//! stopping several at once.

use chrono::Utc;
use ractor::{Actor, ActorRef, SpawnErr};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use super::SupervisorState;
use super::children::Child;
use super::messages::SupervisorMsg;
use super::policy::RestartDecision;
use crate::domain::{Sensor, Trigger};
use crate::ports::{EventIntake, SensorFailure};
use crate::sensor::{SensorActor, SensorArgs};
use crate::status::SensorState;

/// How long a starting sensor waits for its trigger's row.
const START_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

impl SupervisorState {
    pub(super) async fn spawn_sensor(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        sensor_ref: &str,
    ) {
        let Some(sensor) = self
            .sensors
            .get(sensor_ref)
            .map(|entry| entry.sensor.clone())
        else {
            return;
        };
        let trigger = match self.trigger_of(&sensor).await {
            Ok(trigger) => trigger,
            Err(failure) => {
                self.sensor_failed(myself, sensor_ref, format!("start failed: {failure}"));
                return;
            }
        };
        let Some(entry) = self.sensors.get_mut(sensor_ref) else {
            return;
        };
        entry.state = SensorState::Starting;
        entry.next_restart_at = None;
        entry.generation += 1;
        let intake: Arc<dyn EventIntake> = self.refs.clone();
        let args = SensorArgs {
            sensor,
            trigger,
            store: self.store.clone(),
            factory: self.factory.clone(),
            intake,
            activity: entry.activity.clone(),
            stop_grace: self.config.stop_grace,
            lease: self.leases.as_ref().and_then(|book| book.claim(sensor_ref)),
        };
        let started = Instant::now();
        match Actor::spawn_linked(None, SensorActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                entry.state = SensorState::Running;
                entry.started_at = Some(started);
                self.children
                    .insert(actor.get_id(), Child::Sensor(sensor_ref.to_owned()));
                entry.actor = Some(actor);
                // Only a count to reset needs a timer (the policy itself looks at how
                // long a failed run lasted): a hundred thousand healthy starts schedule
                // nothing, and nothing republishes the status for each of them later.
                if entry.failure_count > 0 {
                    let sensor_ref = sensor_ref.to_owned();
                    let generation = entry.generation;
                    myself.send_after(self.config.healthy_after, move || {
                        SupervisorMsg::MarkHealthy {
                            sensor_ref,
                            generation,
                        }
                    });
                }
            }
            Err(error) => {
                let message = match error {
                    SpawnErr::StartupFailed(inner) => format!("start failed: {inner}"),
                    other => format!("start failed: {other}"),
                };
                self.sensor_failed(myself, sensor_ref, message);
            }
        }
    }

    /// The trigger a starting sensor names, from the pipeline's cache or the database,
    /// bounded in time: the supervisor waits for it and answers nobody meanwhile.
    async fn trigger_of(&self, sensor: &Sensor) -> Result<Arc<Trigger>, SensorFailure> {
        let lookup = self
            .refs
            .known_trigger(self.store.as_ref(), &sensor.trigger_ref);
        let known = tokio::time::timeout(START_LOOKUP_TIMEOUT, lookup)
            .await
            .map_err(|_| {
                SensorFailure::new(format!(
                    "the database did not return trigger '{}' within {} s",
                    sensor.trigger_ref,
                    START_LOOKUP_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|error| SensorFailure::new(error.to_string()))?
            .ok_or_else(|| {
                SensorFailure::new(format!(
                    "sensor '{}' names unknown trigger '{}'",
                    sensor.r#ref, sensor.trigger_ref
                ))
            })?;
        Ok(known.trigger.clone())
    }

    /// Applies the restart policy to a sensor that failed (or could not start).
    pub(super) fn sensor_failed(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        sensor_ref: &str,
        error: String,
    ) {
        let policy = self.config.restart_policy();
        let Some(entry) = self.sensors.get_mut(sensor_ref) else {
            return;
        };
        let ran_for = entry
            .started_at
            .take()
            .map_or(Duration::ZERO, |started| started.elapsed());
        let after = policy.on_failure(entry.failure_count, ran_for);
        entry.actor = None;
        entry.failure_count = after.consecutive_failures;
        entry.generation += 1;
        entry.last_error = Some(error.clone());
        entry.next_restart_at = None;
        match after.decision {
            RestartDecision::Off => {
                entry.state = SensorState::Failed;
                tracing::error!(sensor = %sensor_ref, %error, "sensor failed; automatic restart is off");
            }
            RestartDecision::GiveUp => {
                entry.state = SensorState::Failed;
                tracing::error!(
                    sensor = %sensor_ref,
                    %error,
                    failures = entry.failure_count,
                    "sensor failed too many times in a row; it stays down until an operator restarts it"
                );
            }
            RestartDecision::RestartAfter(delay) => {
                entry.state = SensorState::Backoff;
                entry.next_restart_at = chrono::Duration::from_std(delay)
                    .ok()
                    .map(|d| Utc::now() + d);
                tracing::warn!(
                    sensor = %sensor_ref,
                    %error,
                    failures = entry.failure_count,
                    delay_ms = delay.as_millis() as u64,
                    "sensor failed; restarting after backoff"
                );
                let sensor_ref = sensor_ref.to_owned();
                let generation = entry.generation;
                myself.send_after(delay, move || SupervisorMsg::RestartDue {
                    sensor_ref,
                    generation,
                });
            }
        }
    }

    /// Handles `RestartDue`: the backoff is over, and no operator or reconcile acted since.
    pub(super) async fn restart_due(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        sensor_ref: &str,
        generation: u64,
    ) {
        let Some(entry) = self.sensors.get_mut(sensor_ref) else {
            return;
        };
        if entry.generation != generation || entry.state != SensorState::Backoff {
            return;
        }
        entry.restart_count += 1;
        self.spawn_sensor(myself, sensor_ref).await;
    }

    /// Handles `MarkHealthy`: whether it changed anything.
    pub(super) fn mark_healthy(&mut self, sensor_ref: &str, generation: u64) -> bool {
        match self.sensors.get_mut(sensor_ref) {
            Some(entry)
                if entry.generation == generation
                    && entry.state == SensorState::Running
                    && entry.failure_count > 0 =>
            {
                entry.failure_count = 0;
                true
            }
            _ => false,
        }
    }

    /// Stops several sensors at once (one slow sensor must not eat the others' time) and
    /// waits for them, each at most `stop_timeout` and never past `deadline`; one that is
    /// still running then is killed. Pending restarts are cancelled.
    pub(super) async fn stop_sensors(
        &mut self,
        refs: impl IntoIterator<Item = String>,
        deadline: Option<Instant>,
    ) {
        let wait = match deadline {
            Some(deadline) => self
                .config
                .stop_timeout
                .min(deadline.saturating_duration_since(Instant::now())),
            None => self.config.stop_timeout,
        };
        let mut stopping = tokio::task::JoinSet::new();
        for sensor_ref in refs {
            let Some(entry) = self.sensors.get_mut(&sensor_ref) else {
                continue;
            };
            entry.generation += 1;
            entry.state = SensorState::Stopped;
            entry.next_restart_at = None;
            entry.started_at = None;
            let Some(actor) = entry.actor.take() else {
                continue;
            };
            self.children.remove(&actor.get_id());
            stopping.spawn(async move {
                if actor
                    .stop_and_wait(Some("stopped".to_owned()), Some(wait))
                    .await
                    .is_err()
                {
                    tracing::warn!(sensor = %sensor_ref, "sensor did not stop in time; killing it");
                    actor.kill();
                }
            });
        }
        // Readers see the sensors as stopped while their stops are awaited.
        self.publish_status();
        while stopping.join_next().await.is_some() {}
    }
}
