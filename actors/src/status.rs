//! What operators see of the running actor tree.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// Lifecycle of one sensor as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorState {
    Starting,
    Running,
    /// Failed and waiting for its restart delay.
    Backoff,
    /// Gave up after too many consecutive failures (or automatic restarts are off); stays
    /// down until an operator restarts it.
    Failed,
    /// Stopped by an operator, or finished (a one-shot sensor that has nothing left to do).
    Stopped,
}

impl SensorState {
    /// The state's name, as `/status` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SensorState::Starting => "starting",
            SensorState::Running => "running",
            SensorState::Backoff => "backoff",
            SensorState::Failed => "failed",
            SensorState::Stopped => "stopped",
        }
    }
}

/// Counters a running sensor updates itself; they survive its restarts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SensorActivity {
    pub last_poll: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub events_emitted: u64,
    /// Events not stored because they repeated an idempotency key or, under `dedup`,
    /// the content of an event stored within the window.
    pub duplicates: u64,
    /// Events the store refused because the lease they were emitted under had passed to
    /// another instance.
    pub fenced: u64,
    /// Output lines a sensor process wrote that were not valid protocol lines.
    pub bad_output_count: u64,
    /// The last lines a sensor process wrote to stderr, oldest first.
    pub stderr_tail: Vec<String>,
}

/// How many stderr lines a sensor's status keeps.
pub const STDERR_TAIL_LINES: usize = 20;

/// Shared between a sensor's actor (which writes) and the supervisor (which reads).
#[derive(Debug, Clone, Default)]
pub struct SharedActivity(Arc<Mutex<SensorActivity>>);

impl SharedActivity {
    pub fn lock(&self) -> MutexGuard<'_, SensorActivity> {
        crate::sync::lock(&self.0)
    }

    pub fn snapshot(&self) -> SensorActivity {
        self.lock().clone()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SensorStatus {
    pub sensor_ref: String,
    pub trigger_ref: String,
    pub runtime_ref: String,
    pub state: SensorState,
    /// Consecutive failures; reset after a healthy period or an operator restart.
    pub failure_count: u32,
    /// Restarts since the service started, automatic and operator ones.
    pub restart_count: u32,
    pub last_error: Option<String>,
    pub next_restart_at: Option<DateTime<Utc>>,
    /// The lease it runs under (several instances on one database): held by this
    /// instance, in this generation. `None` for a sensor that runs on every instance.
    pub lease: Option<SensorLeaseStatus>,
    #[serde(flatten)]
    pub activity: SensorActivity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SensorLeaseStatus {
    pub holder: String,
    pub generation: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineState {
    Running,
    Restarting,
}

#[derive(Debug, Clone, Serialize)]
pub struct PipelineActorStatus {
    pub name: &'static str,
    pub state: PipelineState,
    pub restart_count: u32,
    pub last_error: Option<String>,
}

/// The whole tree, as `Tree::status` renders it from the latest snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct TreeStatus {
    pub sensors: Vec<SensorStatus>,
    pub pipeline: Vec<PipelineActorStatus>,
    /// Matches each throttled rule suppressed or held since the service started.
    pub throttled: BTreeMap<String, u64>,
}

impl TreeStatus {
    pub fn sensor(&self, sensor_ref: &str) -> Option<&SensorStatus> {
        self.sensors.iter().find(|s| s.sensor_ref == sensor_ref)
    }
}

/// The tree as the supervisor last published it. Sensors' activity counters and the
/// pipeline actors' last errors are shared cells, read when the snapshot is rendered, so
/// they are current even though the supervisor publishes only when it changes something.
#[derive(Debug, Clone, Default)]
pub struct TreeSnapshot {
    /// Each sensor's status (its `activity` left empty) and its live activity.
    pub sensors: Vec<(SensorStatus, SharedActivity)>,
    /// Each pipeline actor's status (its `last_error` left empty) and its live last error.
    pub pipeline: Vec<(PipelineActorStatus, Arc<Mutex<Option<String>>>)>,
    pub throttled: Arc<ThrottleCounts>,
}

/// Matches each throttled rule suppressed or held, counted by the rule matcher (across
/// its restarts) and read by the status.
#[derive(Debug, Default)]
pub struct ThrottleCounts(Mutex<BTreeMap<String, u64>>);

impl ThrottleCounts {
    pub fn add(&self, rule_ref: &str) {
        *crate::sync::lock(&self.0)
            .entry(rule_ref.to_owned())
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        crate::sync::lock(&self.0).clone()
    }
}

impl TreeSnapshot {
    pub fn render(&self) -> TreeStatus {
        let sensors = self
            .sensors
            .iter()
            .map(|(status, activity)| SensorStatus {
                activity: activity.snapshot(),
                ..status.clone()
            })
            .collect();
        let pipeline = self
            .pipeline
            .iter()
            .map(|(status, last_error)| PipelineActorStatus {
                last_error: crate::sync::lock(last_error).clone(),
                ..status.clone()
            })
            .collect();
        TreeStatus {
            sensors,
            pipeline,
            throttled: self.throttled.snapshot(),
        }
    }
}

/// Reads the tree's status without asking the supervisor: a watch on the snapshots it
/// publishes, so a status request never waits in its mailbox behind a reconcile or a
/// stalled database.
#[derive(Clone)]
pub struct StatusFeed(watch::Receiver<Arc<TreeSnapshot>>);

impl StatusFeed {
    pub fn new(receiver: watch::Receiver<Arc<TreeSnapshot>>) -> Self {
        Self(receiver)
    }

    /// Waits for the supervisor's next snapshot; `false` once it has stopped publishing.
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }

    /// The latest status.
    pub fn current(&self) -> TreeStatus {
        let snapshot = self.0.borrow().clone();
        snapshot.render()
    }
}
