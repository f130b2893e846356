//! Operator commands that reached an instance other than the one that must act (several
//! instances on one database). A restart, stop or start of a sensor held elsewhere is
//! queued in the database by the instance that received it; its holder takes the queue on
//! its next placement tick (within a second or two) and runs the commands as if they had
//! been sent to it. `POST /reload` on any instance bumps a shared generation, and every
//! instance reconciles when it sees the generation grow.

use std::time::Duration;

use ractor::ActorRef;

use super::SupervisorState;
use super::messages::{ControlError, SupervisorMsg};
use crate::domain::{SensorAction, SensorCommand};

/// A command no holder took within this long is dropped (its sensor runs nowhere).
pub const COMMAND_STALE_AFTER: Duration = Duration::from_secs(60);

impl SupervisorState {
    /// On a placement tick: runs the commands queued for the sensors held here.
    pub(super) async fn run_forwarded_commands(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let Some(holder) = self.leases.as_ref().map(|book| book.holder().to_owned()) else {
            return;
        };
        let now = chrono::Utc::now();
        let stale_before = crate::domain::capped_before(now, COMMAND_STALE_AFTER);
        match self
            .store
            .take_sensor_commands(&holder, now, stale_before)
            .await
        {
            Ok(commands) => {
                for command in commands {
                    self.run_command(myself, &command).await;
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read forwarded operator commands yet"),
        }
    }

    /// On a placement tick: reconciles if another instance asked every instance to reload
    /// since the last tick (with sensors disabled too: the rules are reloaded).
    pub(super) async fn follow_reloads(&mut self, myself: &ActorRef<SupervisorMsg>) {
        match self.store.reload_generation().await {
            Ok(generation) => {
                let seen = self.reload_seen.replace(generation);
                if seen.is_some_and(|seen| generation > seen) {
                    tracing::info!(generation, "reloading: an operator asked every instance to");
                    if let Err(error) = self.reconcile(myself).await {
                        tracing::warn!(%error, "reload asked by another instance failed; the next reconcile retries");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the reload generation yet"),
        }
    }

    /// The reload of `generation` was asked here, and this instance reconciles for it.
    pub(super) fn saw_reload(&mut self, generation: i64) {
        self.reload_seen = Some(
            self.reload_seen
                .map_or(generation, |seen| seen.max(generation)),
        );
    }

    async fn run_command(&mut self, myself: &ActorRef<SupervisorMsg>, command: &SensorCommand) {
        let sensor_ref = command.sensor_ref.as_str();
        let result: Result<(), ControlError> = match command.action {
            SensorAction::Restart => self.operator_restart(myself, sensor_ref).await,
            SensorAction::Stop => self.operator_stop(sensor_ref).await,
            SensorAction::Start => self.operator_start(myself, sensor_ref).await,
        };
        match result {
            Ok(()) => tracing::info!(
                sensor = sensor_ref,
                action = command.action.as_str(),
                sent_to = %command.sent_by,
                "ran an operator command sent to another instance"
            ),
            Err(error) => tracing::warn!(
                sensor = sensor_ref,
                action = command.action.as_str(),
                sent_to = %command.sent_by,
                %error,
                "an operator command sent to another instance failed here"
            ),
        }
        self.publish_status();
    }
}
