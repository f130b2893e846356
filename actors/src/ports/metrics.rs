//! The metrics port: what the pipeline actors report as they work, for an adapter to count
//! (the service exports them in the Prometheus format). Every method has a no-op default,
//! so a recorder implements only what it keeps, and tests use [`NoMetrics`].

use std::time::Duration;

/// Receives the pipeline's measurements. Called on the actors' hot paths: keep it cheap.
pub trait PipelineMetrics: Send + Sync + 'static {
    /// A batch of events was committed: the trigger of each event stored (repeats of an
    /// idempotency key not included), how many repeats, and how long the write took.
    fn events_committed(&self, _stored_triggers: &[&str], _repeats: usize, _took: Duration) {}

    /// A batch of events was matched against its rules: how many, how long it took.
    fn events_matched(&self, _events: usize, _took: Duration) {}

    /// A batch of enforcements was committed: the rule of each, how long the write took.
    fn enforcements_committed(&self, _rules: &[&str], _took: Duration) {}

    /// Matches of throttled rules that created no enforcement now (suppressed, or held
    /// for a `once_after` window): the rule of each.
    fn enforcements_throttled(&self, _rules: &[&str]) {}

    /// The broker confirmed `count` messages of a batch published in `took`.
    fn messages_published(&self, _count: usize, _took: Duration) {}

    /// A publish failed for `count` messages (broker away, or a refusal).
    fn publish_failed(&self, _count: usize) {}

    /// Outbox rows were parked.
    fn rows_parked(&self, _count: usize) {}
}

/// Keeps nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMetrics;

impl PipelineMetrics for NoMetrics {}
