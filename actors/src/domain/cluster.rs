//! Several instances on one database: the rows they coordinate through. An instance
//! registers itself and heartbeats; a lease is held by one instance at a time until it
//! expires, and its generation grows at every change of holder, so whatever a holder does
//! can be tied to the generation it held.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::Id;

/// One instance of the service, as registered in the `instance` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceRecord {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub started: DateTime<Utc>,
    pub heartbeat: DateTime<Utc>,
}

/// A lease: who holds it, in which generation, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRecord {
    pub name: String,
    pub holder: String,
    pub generation: i64,
    pub expires: DateTime<Utc>,
}

/// The lease of the outbox publisher: one instance publishes at a time, so steady-state
/// operation sends each message once.
pub const OUTBOX_LEASE: &str = "outbox";

/// Where a sensor runs among the live instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    #[serde(default)]
    pub mode: PlacementMode,
    /// Only instances whose `cluster.labels` include all of these may run it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementMode {
    /// On exactly one live instance, under a lease (timers, process sensors, file watch).
    #[default]
    One,
    /// On every instance, without a lease (webhooks: passive, each instance serves them).
    All,
}

impl Placement {
    pub fn all() -> Self {
        Self {
            mode: PlacementMode::All,
            labels: BTreeMap::new(),
        }
    }

    /// Whether an instance with these labels may run the sensor.
    pub fn admits(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
    }

    pub fn is_leased(&self) -> bool {
        self.mode == PlacementMode::One
    }
}

/// Sensor leases are named `sensor:<ref>`.
pub const SENSOR_LEASE_PREFIX: &str = "sensor:";

pub fn sensor_lease(sensor_ref: &str) -> String {
    format!("{SENSOR_LEASE_PREFIX}{sensor_ref}")
}

/// The lease an event's sensor held when it emitted: the store refuses the event unless
/// this generation is still the lease's current one ([`crate::ports::StoreError::Fenced`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseClaim {
    pub name: String,
    pub generation: i64,
}

/// Prefix of the lease a live instance holds while it matches what a dead one left.
pub const ADOPTION_LEASE_PREFIX: &str = "matcher:";

/// The adoption lease of `instance`'s watermark.
pub fn adoption_lease(instance: &str) -> String {
    format!("{ADOPTION_LEASE_PREFIX}{instance}")
}

/// How far one instance's matcher got: every event that instance stored with an id up to
/// `matched_through` has its enforcements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Watermark {
    pub instance: String,
    pub matched_through: Id,
}

/// An operator command on one sensor (`POST /sensors/{ref}/{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorAction {
    Restart,
    Stop,
    Start,
}

impl SensorAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::Stop => "stop",
            Self::Start => "start",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "restart" => Some(Self::Restart),
            "stop" => Some(Self::Stop),
            "start" => Some(Self::Start),
            _ => None,
        }
    }
}

/// A command sent to an instance that does not hold the sensor, waiting for its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SensorCommand {
    pub sensor_ref: String,
    pub action: SensorAction,
    /// The instance that received it.
    pub sent_by: String,
    pub created: DateTime<Utc>,
}
