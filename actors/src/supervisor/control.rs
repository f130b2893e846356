//! Operator commands and reconciles: the supervisor's answers to `RestartSensor`,
//! `StopSensor`, `StartSensor` and `Reconcile`.

use ractor::ActorRef;
use std::sync::Arc;

use super::SupervisorState;
use super::children::SensorEntry;
use super::messages::{ControlError, ReconcileReport, SupervisorMsg};
use super::reconcile;
use crate::domain::Sensor;
use crate::matcher::MatcherMsg;
use crate::status::SensorState;

impl SupervisorState {
    pub(super) async fn operator_restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        sensor_ref: &str,
    ) -> Result<(), ControlError> {
        self.ensure_known(sensor_ref).await?;
        self.stop_sensors([sensor_ref.to_owned()], None).await;
        if let Some(entry) = self.sensors.get_mut(sensor_ref) {
            entry.failure_count = 0;
            entry.restart_count += 1;
        }
        self.spawn_sensor(myself, sensor_ref).await;
        Ok(())
    }

    pub(super) async fn operator_stop(&mut self, sensor_ref: &str) -> Result<(), ControlError> {
        if !self.sensors.contains_key(sensor_ref) {
            return Err(self.not_here(sensor_ref).await);
        }
        self.stop_sensors([sensor_ref.to_owned()], None).await;
        Ok(())
    }

    pub(super) async fn operator_start(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        sensor_ref: &str,
    ) -> Result<(), ControlError> {
        self.ensure_known(sensor_ref).await?;
        let Some(entry) = self.sensors.get_mut(sensor_ref) else {
            return Err(ControlError::UnknownSensor(sensor_ref.to_owned()));
        };
        if matches!(entry.state, SensorState::Running | SensorState::Starting) {
            return Ok(());
        }
        entry.failure_count = 0;
        self.spawn_sensor(myself, sensor_ref).await;
        Ok(())
    }

    /// Why an operator command cannot act on a sensor this supervisor does not track: its
    /// holder is another instance, or there is no such sensor here.
    async fn not_here(&self, sensor_ref: &str) -> ControlError {
        let Some(book) = self.leases.as_ref() else {
            return ControlError::UnknownSensor(sensor_ref.to_owned());
        };
        match self.store.sensor_by_ref(sensor_ref).await {
            Ok(Some(sensor)) if sensor.enabled && book.held_elsewhere(&sensor) => {
                ControlError::HeldElsewhere(sensor_ref.to_owned())
            }
            Ok(_) => ControlError::UnknownSensor(sensor_ref.to_owned()),
            Err(error) => ControlError::Store(error.to_string()),
        }
    }

    /// Makes sure the supervisor tracks `sensor_ref`, loading it when it is enabled in the
    /// database but not yet reconciled.
    async fn ensure_known(&mut self, sensor_ref: &str) -> Result<(), ControlError> {
        if !self.config.sensors_enabled {
            // A reconcile would stop it again at once.
            return Err(ControlError::SensorsDisabled);
        }
        if self.sensors.contains_key(sensor_ref) {
            return Ok(());
        }
        let sensor = self
            .store
            .sensor_by_ref(sensor_ref)
            .await
            .map_err(|e| ControlError::Store(e.to_string()))?
            .ok_or_else(|| ControlError::UnknownSensor(sensor_ref.to_owned()))?;
        if !sensor.enabled {
            return Err(ControlError::Disabled(sensor_ref.to_owned()));
        }
        if self
            .leases
            .as_ref()
            .is_some_and(|book| book.held_elsewhere(&sensor))
        {
            return Err(ControlError::HeldElsewhere(sensor_ref.to_owned()));
        }
        self.sensors
            .insert(sensor_ref.to_owned(), SensorEntry::new(sensor));
        Ok(())
    }

    pub(super) async fn reconcile(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<ReconcileReport, ControlError> {
        // Before any sensor starts, so the ones this reconcile starts see edited triggers.
        self.refs.forget_triggers();
        let enabled = self
            .store
            .enabled_sensors()
            .await
            .map_err(|e| ControlError::Store(e.to_string()))?;
        let report = match (&mut self.leases, self.config.sensors_enabled) {
            (_, false) => self.apply(myself, Vec::new()).await,
            (None, true) => self.apply(myself, enabled).await,
            (Some(book), true) => {
                book.set_enabled(enabled);
                self.place_now(myself).await
            }
        };
        self.refs.matcher.send(MatcherMsg::RefreshRules);
        if report != ReconcileReport::default() {
            tracing::info!(?report, "reconciled sensors");
        }
        Ok(report)
    }

    /// Starts, stops and restarts tracked sensors until they are `desired`.
    pub(super) async fn apply(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        desired: Vec<Sensor>,
    ) -> ReconcileReport {
        let plan = reconcile::plan(
            self.sensors
                .iter()
                .map(|(sensor_ref, entry)| (sensor_ref.as_str(), entry.sensor.as_ref())),
            desired,
        );
        // Stopped together: each may take its stop grace, and the supervisor answers
        // nobody meanwhile.
        let stopping: Vec<String> = plan.stopping().map(str::to_owned).collect();
        self.stop_sensors(stopping, None).await;

        let mut report = ReconcileReport::default();
        for sensor_ref in plan.stop {
            self.sensors.remove(&sensor_ref);
            report.stopped.push(sensor_ref);
        }
        for sensor in plan.start {
            let sensor_ref = sensor.r#ref.clone();
            self.sensors
                .insert(sensor_ref.clone(), SensorEntry::new(sensor));
            self.spawn_sensor(myself, &sensor_ref).await;
            report.started.push(sensor_ref);
        }
        for sensor in plan.restart {
            let sensor_ref = sensor.r#ref.clone();
            if let Some(entry) = self.sensors.get_mut(&sensor_ref) {
                entry.sensor = Arc::new(sensor);
                entry.failure_count = 0;
            }
            self.spawn_sensor(myself, &sensor_ref).await;
            report.restarted.push(sensor_ref);
        }
        report
    }
}
