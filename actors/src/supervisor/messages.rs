//! What the supervisor hears, and what it answers.

use ractor::RpcReplyPort;
use serde::Serialize;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("unknown sensor '{0}'")]
    UnknownSensor(String),
    #[error("sensor '{0}' is disabled; enable it in its pack first")]
    Disabled(String),
    #[error("sensors are disabled in this service (sensor.enabled: false)")]
    SensorsDisabled,
    #[error(
        "sensor '{0}' runs on another instance; it acts on commands sent to any instance within a couple of seconds"
    )]
    HeldElsewhere(String),
    #[error("{0}")]
    Store(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub restarted: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShutdownReport {
    /// False when events or enforcements still waited for the database at the deadline.
    pub in_flight_written: bool,
    /// False when the outbox still held rows at the deadline; they are published on the
    /// next start.
    pub outbox_drained: bool,
}

pub type ControlReply = RpcReplyPort<Result<(), ControlError>>;

/// What the supervisor hears: operator commands (through the admin API), its own timers,
/// and shutdown. Status is not asked for here: it is published on every change (see
/// [`super::Tree::status`]).
pub enum SupervisorMsg {
    /// Compares the enabled sensors in the database with the tracked ones and starts,
    /// stops or restarts what differs; sent at start, every `reconcile_interval` and on
    /// `POST /reload` (with a reply port).
    Reconcile(Option<RpcReplyPort<Result<ReconcileReport, ControlError>>>),
    /// Restarts a sensor now and resets its consecutive failures.
    RestartSensor(String, ControlReply),
    /// Stops a sensor until an operator starts it (or a reconcile finds it changed).
    StopSensor(String, ControlReply),
    /// Starts a stopped or failed sensor, with its consecutive failures reset.
    StartSensor(String, ControlReply),
    /// Stops sensors, writes what is in flight and drains the outbox, all by this
    /// deadline, then stops the tree.
    Shutdown(Instant, RpcReplyPort<ShutdownReport>),
    /// A failed sensor's backoff is over; ignored unless `generation` is still current.
    RestartDue { sensor_ref: String, generation: u64 },
    /// A sensor has run for `healthy_after`; its failures in a row reset if the same
    /// start (`generation`) is still running.
    MarkHealthy { sensor_ref: String, generation: u64 },
    /// A pipeline actor went down (or failed to spawn): spawn it again.
    RespawnPipeline(PipelineKind),
    /// Renew the sensor leases held here, take free ones, give some back (see
    /// `leases.rs`); each tick schedules the next.
    Place,
    /// This instance asked every instance to reload (`POST /reload`), in this generation,
    /// and reconciles itself: its own tick need not reconcile again for it.
    SawReload(i64),
}

/// Which pipeline actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PipelineKind {
    Generator,
    Matcher,
    Outbox,
}

impl PipelineKind {
    /// In spawn order: each actor's downstream exists before it does.
    pub(super) const ALL: [Self; 3] = [Self::Outbox, Self::Matcher, Self::Generator];

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Generator => "event_generator",
            Self::Matcher => "rule_matcher",
            Self::Outbox => "outbox_publisher",
        }
    }
}
