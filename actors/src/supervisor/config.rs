//! The supervisor's knobs.

use std::time::Duration;

use super::leases::SensorLeases;
use super::policy::RestartPolicy;
use crate::matcher::MatcherIdentity;
use crate::outbox::{PublisherLease, UnroutablePolicy};

/// The service fills these from the `sensor` config section.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// When false, no sensor runs (system events still flow through the pipeline).
    pub sensors_enabled: bool,
    pub restart_on_error: bool,
    pub max_restart_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// After running this long without failing, a sensor's consecutive failures reset.
    pub healthy_after: Duration,
    /// How often to compare the database's sensors with the running ones; `None` only at
    /// start and on request.
    pub reconcile_interval: Option<Duration>,
    /// Most events (or enforcements) written in one transaction.
    pub max_batch: usize,
    /// Most payload and config bytes in one batch of events.
    pub max_batch_bytes: usize,
    /// Most events waiting to be stored; beyond, HTTP callers are refused and sensors wait.
    pub max_pending: usize,
    pub outbox_batch: u32,
    pub outbox_poll: Duration,
    /// Refusals after which an outbox row is parked.
    pub outbox_max_attempts: u32,
    /// What becomes of a message no queue takes.
    pub unroutable: UnroutablePolicy,
    /// How long a stopping sensor may take to release what it holds (a process sensor's
    /// SIGTERM grace period and then some); then it is aborted.
    pub stop_grace: Duration,
    /// How long to wait for one sensor actor to stop, beyond which it is killed.
    pub stop_timeout: Duration,
    /// Publish the outbox only while holding its lease (several instances on one
    /// database); `None` publishes always.
    pub publisher_lease: Option<PublisherLease>,
    /// Run leased sensors only under their lease (several instances on one database);
    /// `None` runs every enabled sensor here.
    pub sensor_leases: Option<SensorLeases>,
    /// Whose watermark the matcher keeps, and when another instance counts as dead (its
    /// unmatched events are then matched here).
    pub matching: MatcherIdentity,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            sensors_enabled: true,
            restart_on_error: true,
            max_restart_attempts: 3,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
            reconcile_interval: Some(Duration::from_secs(10)),
            max_batch: 1000,
            max_batch_bytes: 8 << 20,
            max_pending: 10_000,
            outbox_batch: 500,
            outbox_poll: Duration::from_secs(1),
            outbox_max_attempts: 10,
            unroutable: UnroutablePolicy::Park,
            stop_grace: Duration::from_secs(7),
            stop_timeout: Duration::from_secs(10),
            publisher_lease: None,
            sensor_leases: None,
            matching: MatcherIdentity::default(),
        }
    }
}

impl SupervisorConfig {
    pub fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy {
            restart_on_error: self.restart_on_error,
            max_restart_attempts: self.max_restart_attempts,
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max,
            healthy_after: self.healthy_after,
        }
    }
}
