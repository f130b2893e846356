//! Child bookkeeping: which actor is which, what the supervisor remembers of each
//! sensor, and the status snapshot it publishes after every change.

use chrono::{DateTime, Utc};
use ractor::{ActorCell, ActorId, ActorRef};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

use super::SupervisorState;
use super::messages::{PipelineKind, SupervisorMsg};
use crate::domain::Sensor;
use crate::sensor::{COMPLETED, SensorMsg};
use crate::status::{
    PipelineActorStatus, PipelineState, SensorLeaseStatus, SensorState, SensorStatus,
    SharedActivity, TreeSnapshot,
};

/// What a linked actor is to the supervisor.
pub(super) enum Child {
    Sensor(String),
    Pipeline(PipelineKind),
}

/// One tracked sensor.
pub(super) struct SensorEntry {
    /// Shared with the running actor and its driver's sink: one copy per sensor.
    pub sensor: Arc<Sensor>,
    pub actor: Option<ActorRef<SensorMsg>>,
    pub state: SensorState,
    pub failure_count: u32,
    pub restart_count: u32,
    pub last_error: Option<String>,
    pub next_restart_at: Option<DateTime<Utc>>,
    /// When the current run started, for the restart policy's healthy reset.
    pub started_at: Option<Instant>,
    pub activity: SharedActivity,
    /// Bumped whenever a pending timer must no longer act.
    pub generation: u64,
}

impl SensorEntry {
    pub fn new(sensor: Sensor) -> Self {
        Self {
            sensor: Arc::new(sensor),
            actor: None,
            state: SensorState::Stopped,
            failure_count: 0,
            restart_count: 0,
            last_error: None,
            next_restart_at: None,
            started_at: None,
            activity: SharedActivity::default(),
            generation: 0,
        }
    }

    fn status(&self, lease: Option<SensorLeaseStatus>) -> SensorStatus {
        SensorStatus {
            sensor_ref: self.sensor.r#ref.clone(),
            trigger_ref: self.sensor.trigger_ref.clone(),
            runtime_ref: self.sensor.runtime_ref.clone(),
            state: self.state,
            failure_count: self.failure_count,
            restart_count: self.restart_count,
            last_error: self.last_error.clone(),
            next_restart_at: self.next_restart_at,
            lease,
            activity: Default::default(),
        }
    }
}

/// One pipeline actor as the supervisor tracks it.
#[derive(Default)]
pub(super) struct PipelineEntry {
    /// `None` while it is down.
    pub cell: Option<ActorCell>,
    pub restart_count: u32,
    /// Written by the actor itself (a failed write it will retry) and by the supervisor
    /// (why it went down); shown in the status.
    pub last_error: Arc<Mutex<Option<String>>>,
}

impl PipelineEntry {
    pub fn status(&self, kind: PipelineKind) -> PipelineActorStatus {
        PipelineActorStatus {
            name: kind.name(),
            state: match self.cell {
                Some(_) => PipelineState::Running,
                None => PipelineState::Restarting,
            },
            restart_count: self.restart_count,
            last_error: None,
        }
    }
}

impl SupervisorState {
    /// A linked child exited: `Err` with its failure, `Ok` with its stop reason.
    pub(super) fn child_down(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: ActorId,
        outcome: Result<Option<String>, String>,
    ) {
        // Children the supervisor stopped on purpose were forgotten before they stopped.
        let Some(child) = self.children.remove(&id) else {
            return;
        };
        match (child, outcome) {
            (Child::Sensor(sensor_ref), Err(error)) => {
                self.sensor_failed(myself, &sensor_ref, error)
            }
            (Child::Sensor(sensor_ref), Ok(reason)) => {
                if let Some(entry) = self.sensors.get_mut(&sensor_ref) {
                    entry.actor = None;
                    entry.state = SensorState::Stopped;
                    entry.started_at = None;
                    if reason.as_deref() == Some(COMPLETED) {
                        tracing::info!(sensor = %sensor_ref, "sensor completed");
                    }
                }
            }
            (Child::Pipeline(kind), outcome) => {
                let error = outcome
                    .err()
                    .unwrap_or_else(|| "stopped unexpectedly".to_owned());
                self.pipeline_down(myself, kind, error);
            }
        }
    }

    /// Publishes the tree as it is now to every status reader.
    pub(super) fn publish_status(&self) {
        let snapshot = TreeSnapshot {
            sensors: self
                .sensors
                .iter()
                .map(|(sensor_ref, entry)| {
                    let lease = self.leases.as_ref().and_then(|b| b.status(sensor_ref));
                    (entry.status(lease), entry.activity.clone())
                })
                .collect(),
            pipeline: PipelineKind::ALL
                .iter()
                .filter_map(|kind| {
                    let entry = self.pipeline.get(kind)?;
                    Some((entry.status(*kind), entry.last_error.clone()))
                })
                .collect(),
            throttled: self.throttled.clone(),
        };
        self.status.send_replace(Arc::new(snapshot));
    }
}
